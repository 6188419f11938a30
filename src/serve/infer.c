/* infer.c - the inference engine of `loratune serve` (serve_internal.h, docs/SERVING.md): the
 * served base model (loaded lazily, as stored, on a thread of its own after the server
 * listens), its tokenizer and chat template, the adapters (a registry of reference-counted
 * entries, loaded and unloaded at run time), the KV-cache slots, and the decode engine: one
 * thread that runs every request with continuous batching.
 *
 * The engine. Requests are submitted to a FIFO queue (lt_infer_spawn / lt_infer_run); between
 * two decode steps the engine admits queued requests into free slots (each its own KV cache),
 * runs each newcomer's prompt through its slot (lt_model_forward, the prefill), then one decode
 * step runs the next token of every running request together (lt_model_forward_batch: one
 * product per linear for all of them, the adapters' low-rank parts grouped by adapter: the rows
 * are sorted by adapter). A request leaves between steps when it is finished (a stop id or
 * string, max_tokens, the context), cancelled (its client went away) or the server stops. Its
 * text is made by lt_generation (the loop of lt_generate), so a greedy answer is
 * `loratune generate`'s, batched or not (the batched step gives each row the logits it gets
 * alone: tests/model/test_forward_batch.c).
 *
 * Invariants. The model, tokenizer and template are written only by the loading thread, before
 * `state` becomes READY (under mu), and read-only afterwards. Slots, their caches and the
 * per-request decoding state belong to the engine thread alone; the queue and the counters are
 * under mu; a request's output (text, finish, done) under its g->mu. An entry in the registry
 * has refs = 1 (the registry) + the requests holding it; unloading drops the registry's
 * reference, so an adapter is freed by whoever drops the last one, never under a request. The
 * engine holds a reference to every request from its submission to its end. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loratune/adapter.h"
#include "loratune/backend.h"
#include "loratune/chat.h"
#include "loratune/model.h"
#include "loratune/sampler.h"
#include "loratune/tokenizer.h"
#include "serve_internal.h"

enum { ST_OFF = 0, ST_LOADING, ST_READY, ST_FAILED };

struct lt_served {
    char name[65];
    char source[1024]; /* where it was loaded from (scrubbed when shown) */
    lt_adapter *ad;    /* NULL: the base */
    lt_model_delta *delta;
    lt_model_delta *ddelta; /* delta's copy on the device (lt_serve_opts.device), else NULL */
    int refs;
    double created;
    lt_served *next;
};

typedef struct gen_ctx gen_ctx;

typedef struct {
    lt_kv_cache *kv;
    int busy;
    /* the request in the slot (engine thread only) */
    lt_gen *g;
    lt_generation *gen;
    lt_sampler *smp;
    gen_ctx *x;
    int32_t next; /* the token to run next, at pos */
    int pos, more, max_new;
    int prefill;  /* prompt tokens run so far (g->n_ids: the prompt is done, decoding) */
    int chunk;    /* prompt tokens this step runs (0: a decode row or nothing) */
    uint64_t seq; /* admission order: prompts are prefilled first come, first served */
} slot;

/* Tokens (rows) of one engine step at most: decode rows first, then prompt chunks; also each
 * slot cache's max_batch (the step's activations live in slot 0's cache). */
#define STEP_TOKENS 256

struct lt_infer {
    lt_server *s;
    pthread_mutex_t mu; /* everything below but the model itself */
    pthread_cond_t cv;  /* slots freed, state changed, cancel_all */
    int state;
    int enabled; /* a model is served (set at init, constant afterwards) */
    char err[1024];
    int stopping;
    char *model_path;
    char base_name[65];
    char **adapter_args; /* "NAME=PATH" from the command line, loaded after the base */
    int n_adapter_args;
    int n_slots, ctx, max_queue, threads;
    lt_kv_type kv_type; /* the slots' caches' */
    int bf16;           /* the slots' caches run bf16 products (lt_kv_cache_set_bf16) */
    pthread_t loader;
    int loader_started;

    lt_model *m;
    const lt_backend *dev_be; /* lt_serve_opts.device: NULL, the host */
    lt_model_dev *dev;        /* the weights on dev_be (made by the loader) */
    lt_tokenizer *tok;
    lt_chat_template *tmpl; /* NULL: the model has none (chat answers 400) */
    int32_t eot[8];         /* end-of-turn ids of chat templates */
    int n_eot;
    slot *slots;
    lt_served *served; /* the base first, then the adapters */
    int running, queued;
    lt_gen *q_head, *q_tail; /* the queue (FIFO through g->q_next), under mu */

    pthread_t engine;
    int engine_started;
    float *logits;             /* (n_slots, V) engine thread only */
    uint64_t admitted;         /* requests admitted into slots (engine thread) */
    lt_batch_row *rows;        /* (n_slots) */
    int *row_slot;             /* (n_slots) */
    uint64_t steps, step_rows; /* decode steps run, rows they ran (under mu) */
    int64_t kv_positions;      /* KV positions written by the requests in slots (under mu) */

    lt_metrics *metrics;
};

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- registry ---------------------------------------------------------------------------- */
static void served_free(lt_served *e) {
    if (!e) return;
    lt_model_delta_backend_free(e->ddelta);
    lt_adapter_delta_free(e->delta); /* before the adapter it borrows from */
    lt_adapter_free(e->ad);
    lt_free(e);
}

static lt_served *find_locked(lt_infer *in, const char *name) {
    for (lt_served *e = in->served; e; e = e->next)
        if (!strcmp(e->name, name)) return e;
    return NULL;
}

lt_served *lt_infer_lookup(lt_server *s, const char *name) {
    lt_infer *in = s->infer;
    if (!in || !name) return NULL;
    pthread_mutex_lock(&in->mu);
    lt_served *e = in->state == ST_READY ? find_locked(in, name) : NULL;
    if (e) e->refs++;
    pthread_mutex_unlock(&in->mu);
    return e;
}

void lt_served_release(lt_server *s, lt_served *e) {
    if (!e) return;
    lt_infer *in = s->infer;
    pthread_mutex_lock(&in->mu);
    int last = --e->refs == 0;
    pthread_mutex_unlock(&in->mu);
    if (last) served_free(e);
}

const char *lt_served_name(const lt_served *e) {
    return e->name;
}

/* Adapter names are labels of metrics and path segments: [A-Za-z0-9._-], 1..64, not "." / "..". */
static int name_ok(const char *n) {
    size_t l = strlen(n);
    if (l < 1 || l > 64 || !strcmp(n, ".") || !strcmp(n, "..")) return 0;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

lt_status lt_infer_adapter_load(lt_server *s, const char *name, const char *path, char *msg,
                                size_t n) {
    lt_infer *in = s->infer;
    msg[0] = 0;
    if (!name_ok(name)) {
        snprintf(msg, n, "name: expected 1 to 64 characters of [A-Za-z0-9._-], got '%.80s'", name);
        return LT_ERR_ARG;
    }
    pthread_mutex_lock(&in->mu);
    int ready = in->state == ST_READY, taken = find_locked(in, name) != NULL;
    pthread_mutex_unlock(&in->mu);
    if (!ready) {
        snprintf(msg, n, "the base model is not loaded (GET /ready)");
        return LT_ERR_BUSY;
    }
    if (taken) {
        snprintf(msg, n, "a model named '%s' is already served (unload it first)", name);
        return LT_ERR_BUSY;
    }
    lt_served *e = lt_calloc(1, sizeof *e);
    if (!e) {
        snprintf(msg, n, "out of memory");
        return LT_ERR_NOMEM;
    }
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->source, sizeof e->source, "%s", path);
    e->created = lt_serve_now();
    e->refs = 1;
    lt_status st = lt_adapter_load(path, &in->m->config, &e->ad);
    if (!st) st = lt_adapter_delta_create(e->ad, in->m, &e->delta);
    if (!st && in->dev) st = lt_model_delta_to_backend(in->m, e->delta, in->dev_be, &e->ddelta);
    if (st) {
        snprintf(msg, n, "adapter '%s': %s", name, lt_errmsg());
        served_free(e);
        lt_metrics_adapter_error(s);
        return st;
    }
    pthread_mutex_lock(&in->mu);
    if (find_locked(in, name)) { /* loaded meanwhile by another request */
        pthread_mutex_unlock(&in->mu);
        served_free(e);
        snprintf(msg, n, "a model named '%s' is already served (unload it first)", name);
        return LT_ERR_BUSY;
    }
    lt_served **tail = &in->served;
    while (*tail)
        tail = &(*tail)->next;
    *tail = e;
    pthread_mutex_unlock(&in->mu);
    return LT_OK;
}

lt_status lt_infer_adapter_unload(lt_server *s, const char *name, int *in_flight) {
    lt_infer *in = s->infer;
    *in_flight = 0;
    pthread_mutex_lock(&in->mu);
    lt_served **pp = &in->served;
    while (*pp && (strcmp((*pp)->name, name) || !(*pp)->ad))
        pp = &(*pp)->next;
    lt_served *e = *pp;
    if (!e) {
        pthread_mutex_unlock(&in->mu);
        return LT_ERR_NOTFOUND;
    }
    *pp = e->next;
    e->next = NULL;
    *in_flight = e->refs - 1;
    int last = --e->refs == 0;
    pthread_mutex_unlock(&in->mu);
    if (last) served_free(e);
    return LT_OK;
}

json_t *lt_infer_models_json(lt_server *s) {
    lt_infer *in = s->infer;
    json_t *a = json_array();
    pthread_mutex_lock(&in->mu);
    for (lt_served *e = in->state == ST_READY ? in->served : NULL; e; e = e->next) {
        json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", e->name, "object", "model", "created",
                              (json_int_t)e->created, "owned_by", "loratune", "root",
                              e->ad ? e->name : in->base_name);
        if (o && e->ad) json_object_set_new(o, "parent", json_string(in->base_name));
        if (o && !e->ad) json_object_set_new(o, "parent", json_null());
        if (o) json_object_set_new(o, "max_model_len", json_integer(in->ctx));
        json_array_append_new(a, o);
    }
    pthread_mutex_unlock(&in->mu);
    return a;
}

json_t *lt_infer_adapters_json(lt_server *s) {
    lt_infer *in = s->infer;
    json_t *a = json_array();
    pthread_mutex_lock(&in->mu);
    for (lt_served *e = in->served; e; e = e->next) {
        if (!e->ad) continue;
        char *src = lt_serve_scrub(s, e->source);
        json_array_append_new(
            a, json_pack("{s:s,s:s,s:s,s:i,s:f,s:i}", "name", e->name, "source", src ? src : "",
                         "method", lt_train_method_name(e->ad->method), "r", e->ad->r, "scale",
                         (double)lt_adapter_scale(e->ad), "in_flight", e->refs - 1));
        lt_free(src);
    }
    pthread_mutex_unlock(&in->mu);
    return a;
}

/* ---- loading ------------------------------------------------------------------------------ */
static void fail_load(lt_infer *in, const char *what) {
    pthread_mutex_lock(&in->mu);
    snprintf(in->err, sizeof in->err, "%s: %s", what, lt_errmsg());
    in->state = ST_FAILED;
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
    fprintf(stderr, "loratune serve: %s\n", in->err);
}

static void *engine_main(void *arg);

static void *loader_main(void *arg) {
    lt_infer *in = arg;
    lt_model_load_opts lo = {.lazy = 1};
    if (lt_model_load(in->model_path, &lo, &in->m)) return fail_load(in, in->model_path), NULL;
    if (lt_tokenizer_load(in->model_path, &in->tok)) return fail_load(in, "tokenizer"), NULL;
    if (lt_tokenizer_vocab_size(in->tok) > in->m->config.vocab_size) {
        lt_error(LT_ERR_FORMAT, "the tokenizer has %d tokens, the model only %d",
                 lt_tokenizer_vocab_size(in->tok), in->m->config.vocab_size);
        return fail_load(in, in->model_path), NULL;
    }
    lt_status st = lt_model_chat_template(in->model_path, in->tok, &in->tmpl);
    if (st && st != LT_ERR_NOTFOUND) return fail_load(in, "chat template"), NULL;
    static const char *eot[] = {"<|im_end|>",    "<|eot_id|>", "<|end_of_text|>",
                                "<|endoftext|>", "<|end|>",    "</s>"};
    for (size_t i = 0; i < sizeof eot / sizeof eot[0] && in->n_eot < 8; i++) {
        int32_t id = lt_tokenizer_find(in->tok, eot[i]);
        if (id >= 0) in->eot[in->n_eot++] = id;
    }
    if (in->ctx <= 0) in->ctx = in->m->config.max_seq_len < 2048 ? in->m->config.max_seq_len : 2048;
    if (in->ctx > in->m->config.max_seq_len) in->ctx = in->m->config.max_seq_len;
    if (in->dev_be && lt_model_dev_create(in->m, in->dev_be, &in->dev))
        return fail_load(in, "device weights"), NULL;
    in->slots = lt_calloc((size_t)in->n_slots, sizeof *in->slots);
    if (!in->slots) return lt_error(LT_ERR_NOMEM, "out of memory"), fail_load(in, "slots"), NULL;
    /* the memory plan: every slot's k / v (ctx positions, fp16 unless --kv-cache f32), and one
     * step's activations (STEP_TOKENS rows) in slot 0's cache, the workspace of every step: the
     * other slots' caches are made for one row (their activation buffers are never used). The
     * caches are address space: a page of one costs memory from the step that first writes it
     * until its request ends (slot_end gives it back: lt_kv_cache_release). On a device the
     * caches are the device's memory, whole from the start (no pages) */
    for (int i = 0; i < in->n_slots; i++) {
        if (lt_kv_cache_create_dev(in->m, in->dev, in->ctx, i ? 1 : STEP_TOKENS, in->kv_type,
                                   &in->slots[i].kv))
            return fail_load(in, "KV cache"), NULL;
        lt_kv_cache_set_qact(in->slots[i].kv, 1); /* as `loratune generate` (without --exact) */
        lt_kv_cache_set_bf16(in->slots[i].kv, in->bf16);
    }
    const int V = in->m->config.vocab_size;
    in->logits = lt_malloc(sizeof(float) * (size_t)in->n_slots * (size_t)V);
    in->rows = lt_calloc((size_t)in->n_slots, sizeof *in->rows);
    in->row_slot = lt_calloc((size_t)in->n_slots, sizeof *in->row_slot);
    if (!in->logits || !in->rows || !in->row_slot)
        return lt_error(LT_ERR_NOMEM, "out of memory"), fail_load(in, "slots"), NULL;
    if (pthread_create(&in->engine, NULL, engine_main, in))
        return lt_error(LT_ERR_INTERNAL, "could not start the decode engine's thread"),
               fail_load(in, "engine"), NULL;
    pthread_mutex_lock(&in->mu);
    in->engine_started = 1;
    pthread_mutex_unlock(&in->mu);
    lt_served *base = lt_calloc(1, sizeof *base);
    if (!base) return lt_error(LT_ERR_NOMEM, "out of memory"), fail_load(in, "base"), NULL;
    snprintf(base->name, sizeof base->name, "%s", in->base_name);
    snprintf(base->source, sizeof base->source, "%s", in->model_path);
    base->created = lt_serve_now();
    base->refs = 1;
    pthread_mutex_lock(&in->mu);
    in->served = base;
    in->state = ST_READY;
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
    for (int i = 0; i < in->n_adapter_args; i++) { /* a bad one is reported; the rest serve */
        char *eq = strchr(in->adapter_args[i], '=');
        *eq = 0;
        char msg[1200];
        if (lt_infer_adapter_load(in->s, in->adapter_args[i], eq + 1, msg, sizeof msg))
            fprintf(stderr, "loratune serve: --adapter %s=%s not loaded: %s\n", in->adapter_args[i],
                    eq + 1, msg);
        *eq = '=';
    }
    return NULL;
}

/* The base's id: the file or folder name, without ".gguf". */
static void base_name_of(const char *path, char *out, size_t n) {
    size_t l = strlen(path);
    while (l > 1 && path[l - 1] == '/')
        l--;
    size_t b = l;
    while (b > 0 && path[b - 1] != '/')
        b--;
    size_t k = l - b;
    if (k > 5 && !strncmp(path + l - 5, ".gguf", 5)) k -= 5;
    if (k >= n) k = n - 1;
    memcpy(out, path + b, k);
    out[k] = 0;
    for (char *p = out; *p; p++) /* a label and a name clients type: keep it plain */
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            *p = '_';
}

lt_status lt_infer_init(lt_server *s, const lt_serve_opts *o) {
    lt_infer *in = lt_calloc(1, sizeof *in);
    if (!in) return lt_error(LT_ERR_NOMEM, "out of memory");
    in->s = s;
    s->infer = in;
    pthread_mutex_init(&in->mu, NULL);
    pthread_cond_init(&in->cv, NULL);
    if (!(in->metrics = lt_metrics_new())) return lt_error(LT_ERR_NOMEM, "out of memory");
    if (!o->model || !*o->model) return LT_OK; /* no /v1 */
    if (o->slots < 0 || o->slots > 256) return lt_error(LT_ERR_ARG, "--slots: expected 1..256");
    if (o->ctx < 0) return lt_error(LT_ERR_ARG, "--ctx: expected a number of tokens > 0");
    in->n_slots = o->slots ? o->slots : 4;
    in->ctx = o->ctx;
    in->kv_type = o->kv_f32 ? LT_KV_F32 : LT_KV_F16;
    in->bf16 = o->bf16;
    in->dev_be = o->device;
    in->max_queue = o->max_queue > 0 ? o->max_queue : 64;
    in->threads = o->threads > 0 ? o->threads : 0;
    if (o->model_name && *o->model_name) {
        if (!name_ok(o->model_name))
            return lt_error(LT_ERR_ARG,
                            "--model-name: expected 1 to 64 characters of [A-Za-z0-9._-], got "
                            "'%s'",
                            o->model_name);
        snprintf(in->base_name, sizeof in->base_name, "%s", o->model_name);
    } else {
        base_name_of(o->model, in->base_name, sizeof in->base_name);
    }
    if (!(in->model_path = lt_strdup(o->model))) return lt_error(LT_ERR_NOMEM, "out of memory");
    if (o->n_adapters > 0) {
        in->adapter_args = lt_calloc((size_t)o->n_adapters, sizeof(char *));
        if (!in->adapter_args) return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < o->n_adapters; i++) {
        const char *a = o->adapters[i], *eq = strchr(a, '=');
        if (!eq || eq == a || !eq[1])
            return lt_error(LT_ERR_ARG, "--adapter: expected NAME=PATH, got '%s'", a);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(eq - a), a);
        if (!name_ok(name) || !strcmp(name, in->base_name))
            return lt_error(LT_ERR_ARG,
                            "--adapter %s: NAME must be 1 to 64 characters of [A-Za-z0-9._-] "
                            "and differ from the base model's id '%s'",
                            a, in->base_name);
        for (int j = 0; j < i; j++)
            if (!strncmp(o->adapters[j], a, (size_t)(eq - a) + 1))
                return lt_error(LT_ERR_ARG, "--adapter: the name '%s' is given twice", name);
        if (!(in->adapter_args[i] = lt_strdup(a))) return lt_error(LT_ERR_NOMEM, "out of memory");
        in->n_adapter_args++;
    }
    in->state = ST_LOADING;
    in->enabled = 1;
    return LT_OK;
}

/* Called once the server listens. */
lt_status lt_infer_start(lt_server *s) {
    lt_infer *in = s->infer;
    if (!in || !in->enabled) return LT_OK;
    if (pthread_create(&in->loader, NULL, loader_main, in))
        return lt_error(LT_ERR_INTERNAL, "could not start the model loading thread");
    in->loader_started = 1;
    return LT_OK;
}

void lt_infer_cancel_all(lt_server *s) {
    lt_infer *in = s->infer;
    if (!in) return;
    pthread_mutex_lock(&in->mu);
    in->stopping = 1;
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
}

void lt_infer_free(lt_server *s) {
    lt_infer *in = s ? s->infer : NULL;
    if (!in) return;
    lt_infer_cancel_all(s);
    if (in->loader_started) pthread_join(in->loader, NULL);
    if (in->engine_started) pthread_join(in->engine, NULL); /* it ends every request first */
    lt_free(in->logits);
    lt_free(in->rows);
    lt_free(in->row_slot);
    while (in->served) {
        lt_served *e = in->served;
        in->served = e->next;
        served_free(e); /* no request holds one any more */
    }
    for (int i = 0; in->slots && i < in->n_slots; i++)
        lt_kv_cache_free(in->slots[i].kv);
    lt_free(in->slots);
    lt_model_dev_free(in->dev); /* after the caches and deltas that use it */
    lt_chat_template_free(in->tmpl);
    lt_tokenizer_free(in->tok);
    lt_model_free(in->m);
    for (int i = 0; i < in->n_adapter_args; i++)
        lt_free(in->adapter_args[i]);
    lt_free(in->adapter_args);
    lt_free(in->model_path);
    lt_metrics_free(in->metrics);
    pthread_cond_destroy(&in->cv);
    pthread_mutex_destroy(&in->mu);
    lt_free(in);
    s->infer = NULL;
}

int lt_infer_enabled(const lt_server *s) {
    return s->infer && s->infer->enabled;
}

int lt_infer_state(lt_server *s, char *msg, size_t n) {
    lt_infer *in = s->infer;
    pthread_mutex_lock(&in->mu);
    int st = in->state;
    if (msg && n) snprintf(msg, n, "%s", st == ST_FAILED ? in->err : "");
    pthread_mutex_unlock(&in->mu);
    return st == ST_READY ? 1 : st == ST_FAILED ? -1 : 0;
}

const char *lt_infer_base_name(const lt_server *s) {
    return s->infer->base_name;
}
int lt_infer_bf16(const lt_server *s) {
    return s->infer->bf16;
}
int lt_infer_kv_f32(const lt_server *s) {
    return s->infer->kv_type == LT_KV_F32;
}
const char *lt_infer_device(const lt_server *s) {
    return s->infer->dev_be ? s->infer->dev_be->name : "cpu";
}
int lt_infer_ctx(const lt_server *s) {
    return s->infer->ctx;
}
const lt_tokenizer *lt_infer_tokenizer(const lt_server *s) {
    return s->infer->tok;
}
const lt_chat_template *lt_infer_template(const lt_server *s) {
    return s->infer->tmpl;
}
const lt_model *lt_infer_model(const lt_server *s, int *threads) {
    if (threads) *threads = s->infer->threads;
    return s->infer->m;
}
int lt_infer_vocab(const lt_server *s) {
    return s->infer->m->config.vocab_size;
}

lt_metrics *lt_infer_metrics(lt_server *s) {
    return s->infer ? s->infer->metrics : NULL;
}

void lt_infer_gauges(lt_server *s, int *running, int *queued, int *slots, int *adapters,
                     int *ready) {
    lt_infer *in = s->infer;
    pthread_mutex_lock(&in->mu);
    *running = in->running;
    *queued = in->queued;
    *slots = in->state == ST_READY ? in->n_slots : 0;
    *adapters = 0;
    for (lt_served *e = in->served; e; e = e->next)
        *adapters += e->ad != NULL;
    *ready = in->state == ST_READY;
    pthread_mutex_unlock(&in->mu);
}

/* ---- one generation ----------------------------------------------------------------------- */
lt_gen *lt_gen_new(void) {
    lt_gen *g = lt_calloc(1, sizeof *g);
    if (!g) return NULL;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->refs = 1;
    g->t_start = mono_now();
    return g;
}

void lt_gen_unref(lt_server *s, lt_gen *g) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g->mu);
    if (!last) return;
    lt_served_release(s, g->target);
    lt_free(g->ids);
    for (int i = 0; i < g->n_stop; i++)
        lt_free(g->stop[i]);
    lt_free(g->text);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    lt_free(g);
}

struct gen_ctx {
    lt_infer *in;
    lt_gen *g;
    int stopped; /* by a stop string, the client or the server */
};

/* After text grew to len: cut at the first stop string (returns 1), else set safe. Under g->mu. */
static int apply_stops(lt_gen *g, size_t old_len) {
    size_t cut = (size_t)-1;
    for (int i = 0; i < g->n_stop; i++) {
        size_t sl = strlen(g->stop[i]);
        size_t from = old_len >= sl ? old_len - sl + 1 : 0;
        if (g->len < sl) continue;
        for (size_t p = from; p + sl <= g->len && p < cut; p++)
            if (!memcmp(g->text + p, g->stop[i], sl)) {
                cut = p;
                break;
            }
    }
    if (cut != (size_t)-1) {
        g->len = cut; /* safe <= cut: text that could start a stop string is held back */
        g->text[cut] = 0;
        g->safe = cut;
        return 1;
    }
    size_t held = 0; /* the longest tail of text that begins some stop string */
    for (int i = 0; i < g->n_stop; i++) {
        size_t sl = strlen(g->stop[i]);
        for (size_t k = sl - 1; k > held; k--)
            if (k <= g->len && !memcmp(g->text + g->len - k, g->stop[i], k)) {
                held = k;
                break;
            }
    }
    size_t safe = g->len - held;
    if (safe > g->safe) g->safe = safe;
    return 0;
}

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    gen_ctx *x = user;
    lt_gen *g = x->g;
    lt_infer *in = x->in;
    if (x->stopped) return 1; /* the flush after a stop */
    pthread_mutex_lock(&g->mu);
    if (id >= 0) {
        g->n_gen++;
        if (g->t_first == 0) g->t_first = mono_now();
    }
    int stop = 0;
    if (len) {
        if (g->len + len + 1 > g->cap) {
            size_t cap = (g->len + len + 1) * 2;
            char *t = lt_realloc(g->text, cap);
            if (!t) {
                pthread_mutex_unlock(&g->mu);
                x->stopped = 1;
                return 1;
            }
            g->text = t;
            g->cap = cap;
        }
        size_t old = g->len;
        memcpy(g->text + g->len, text, len);
        g->len += len;
        g->text[g->len] = 0;
        stop = apply_stops(g, old);
        if (stop) g->finish = "stop";
    }
    int cancel = g->cancel;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_mutex_lock(&in->mu);
    cancel |= in->stopping;
    pthread_mutex_unlock(&in->mu);
    if (stop || cancel) {
        x->stopped = 1;
        return 1;
    }
    return 0;
}

/* ---- the engine ---------------------------------------------------------------------------- */
/* g's end: its status and counts, done, the engine's reference dropped. Engine thread. */
static void finish_gen(lt_infer *in, lt_gen *g, lt_status st, const char *err, int n_gen,
                       int max_new) {
    pthread_mutex_lock(&g->mu);
    g->st = st;
    if (st) snprintf(g->err, sizeof g->err, "%s", err ? err : lt_errmsg());
    if (n_gen >= 0) {
        g->n_gen = n_gen; /* the end-of-turn / EOS token too (on_token does not see it) */
        if (!g->finish) g->finish = n_gen < max_new ? "stop" : "length";
    }
    g->safe = g->len; /* no more text comes: a held-back start of a stop string is text */
    if (g->cancel && !st) {
        g->st = LT_ERR_CANCELLED;
        snprintf(g->err, sizeof g->err, "the client went away");
    }
    g->t_end = mono_now();
    g->done = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    lt_gen_unref(in->s, g);
}

/* Positions whose keys / values slot sl's request has written: the prompt tokens run so far
 * while prefilling; then every position before the next token's (sl->pos: the prompt and the
 * generated tokens already fed back); 0 for a free slot. Engine thread. */
static int64_t slot_positions(const slot *sl) {
    if (!sl->g) return 0;
    /* pos < prefill: the prompt's last chunk just ran, its first token not sampled yet */
    return sl->prefill < sl->g->n_ids || sl->pos < sl->prefill ? sl->prefill : sl->pos;
}

/* in->kv_positions from the slots (the /metrics gauge loratune_kv_cache_bytes); mu held. */
static void kv_account(lt_infer *in) {
    int64_t n = 0;
    for (int i = 0; i < in->n_slots; i++)
        n += slot_positions(&in->slots[i]);
    in->kv_positions = n;
}

/* The request in slot si ends (st: its error, if any): text flushed, slot freed. */
static void slot_end(lt_infer *in, int si, lt_status st) {
    slot *sl = &in->slots[si];
    int32_t *ids = NULL;
    int n = lt_generation_count(sl->gen);
    if (!st) st = lt_generation_finish(sl->gen, NULL, NULL);
    char err[1024];
    snprintf(err, sizeof err, "%s", st ? lt_errmsg() : "");
    lt_generation_free(sl->gen);
    lt_sampler_free(sl->smp);
    lt_free(sl->x);
    lt_gen *g = sl->g;
    int max_new = sl->max_new;
    sl->g = NULL, sl->gen = NULL, sl->smp = NULL, sl->x = NULL, sl->more = 0;
    sl->prefill = sl->chunk = sl->pos = 0;
    lt_kv_cache_release(sl->kv, 0); /* its pages back to the system */
    pthread_mutex_lock(&in->mu);
    sl->busy = 0;
    in->running--;
    kv_account(in);
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
    free(ids);
    finish_gen(in, g, st, err, n, max_new);
}

/* g into slot si: sampler and generation state; its prompt runs in the next steps (the
 * prefill, in chunks next to the running requests' decode rows), then its first token is
 * sampled. Engine thread. */
static void slot_start(lt_infer *in, int si, lt_gen *g) {
    slot *sl = &in->slots[si];
    sl->g = g;
    sl->prefill = sl->chunk = sl->pos = 0;
    sl->seq = in->admitted++;
    sl->max_new = g->max_tokens;
    if (sl->max_new > in->ctx - g->n_ids) sl->max_new = in->ctx - g->n_ids;
    lt_sampler_params sp = {
        .temperature = g->temperature, .top_k = g->top_k, .top_p = g->top_p, .seed = g->seed};
    lt_status st = lt_sampler_create(&sp, in->m->config.vocab_size, &sl->smp);
    if (!st && !(sl->x = lt_calloc(1, sizeof *sl->x))) st = lt_error(LT_ERR_NOMEM, "out of memory");
    if (!st) {
        sl->x->in = in;
        sl->x->g = g;
        lt_generate_opts go = {.max_tokens = sl->max_new,
                               .stop_ids = g->chat ? in->eot : NULL,
                               .n_stop_ids = g->chat ? in->n_eot : 0,
                               .stop_at_eos = 1,
                               .on_token = on_token,
                               .user = sl->x};
        st = lt_generation_create(in->m, in->tok, in->ctx, g->ids, g->n_ids, &go, &sl->gen);
    }
    if (st) slot_end(in, si, st);
}

static int g_cancelled(lt_gen *g) {
    pthread_mutex_lock(&g->mu);
    int c = g->cancel;
    pthread_mutex_unlock(&g->mu);
    return c;
}

/* the delta the forward reads: its device copy when generation runs on a device */
static const lt_model_delta *fwd_delta(const lt_served *e) {
    return e->ddelta ? e->ddelta : e->delta;
}

/* Rows sorted by adapter (the target entry) so that each adapter's rows are one run. */
static int row_cmp(const void *a, const void *b) {
    const lt_batch_row *x = a, *y = b;
    uintptr_t p = (uintptr_t)x->delta, q = (uintptr_t)y->delta;
    return p < q ? -1 : p > q;
}

static void *engine_main(void *arg) {
    lt_infer *in = arg;
    /* omp_set_num_threads sets the calling thread's count only */
    if (in->threads > 0) lt_set_num_threads(in->threads);
    const int V = in->m->config.vocab_size;
    lt_gen *admit[256];
    int admit_slot[256];
    for (;;) {
        /* between steps: drop cancelled waiters, admit waiters into free slots */
        int n_admit = 0, stopping, active = 0;
        lt_gen *dropped = NULL;
        pthread_mutex_lock(&in->mu);
        stopping = in->stopping;
        for (lt_gen **pp = &in->q_head; *pp;) {
            lt_gen *g = *pp;
            if (stopping || g_cancelled(g)) {
                *pp = g->q_next;
                g->q_next = dropped;
                dropped = g;
                in->queued--;
            } else {
                pp = &g->q_next;
            }
        }
        in->q_tail = NULL;
        for (lt_gen *g = in->q_head; g; g = g->q_next)
            in->q_tail = g;
        for (int i = 0; i < in->n_slots && in->q_head; i++) {
            if (in->slots[i].busy) continue;
            lt_gen *g = in->q_head;
            in->q_head = g->q_next;
            if (!in->q_head) in->q_tail = NULL;
            in->queued--;
            in->slots[i].busy = 1;
            in->running++;
            admit[n_admit] = g;
            admit_slot[n_admit++] = i;
        }
        for (int i = 0; i < in->n_slots; i++)
            active += in->slots[i].busy;
        if (!active && !dropped && !stopping) { /* idle: wait for work */
            pthread_cond_wait(&in->cv, &in->mu);
            pthread_mutex_unlock(&in->mu);
            continue;
        }
        if (dropped) pthread_cond_broadcast(&in->cv);
        pthread_mutex_unlock(&in->mu);
        while (dropped) {
            lt_gen *g = dropped;
            dropped = g->q_next;
            finish_gen(in, g, LT_ERR_CANCELLED,
                       stopping ? "the server is stopping" : "cancelled before it started", -1, 0);
        }
        for (int k = 0; k < n_admit; k++) {
            lt_gen *g = admit[k];
            pthread_mutex_lock(&g->mu);
            g->running = 1;
            pthread_mutex_unlock(&g->mu);
            slot_start(in, admit_slot[k], g);
        }
        /* requests that end here: cancelled by their client, or the server stops */
        for (int i = 0; i < in->n_slots; i++) {
            slot *sl = &in->slots[i];
            if (sl->g && (stopping || g_cancelled(sl->g))) slot_end(in, i, LT_OK);
        }
        if (stopping) break;
        /* the step: every decoding request's next token, then chunks of the prompts being
         * prefilled (oldest admission first) in the tokens left of STEP_TOKENS */
        int n = 0, T = 0, n_dec = 0;
        for (int i = 0; i < in->n_slots; i++) {
            slot *sl = &in->slots[i];
            sl->chunk = 0;
            if (!sl->g || sl->prefill < sl->g->n_ids || !sl->more) continue;
            in->rows[n] = (lt_batch_row){
                .kv = sl->kv, .delta = fwd_delta(sl->g->target), .token = sl->next, .pos = sl->pos};
            in->row_slot[n++] = i;
            T++;
        }
        n_dec = n;
        for (;;) {
            int best = -1;
            for (int i = 0; i < in->n_slots; i++) {
                slot *sl = &in->slots[i];
                if (sl->g && sl->prefill < sl->g->n_ids && !sl->chunk &&
                    (best < 0 || sl->seq < in->slots[best].seq))
                    best = i;
            }
            if (best < 0 || T >= STEP_TOKENS) break;
            slot *sl = &in->slots[best];
            const lt_gen *g = sl->g;
            int c = g->n_ids - sl->prefill;
            if (c > STEP_TOKENS - T) c = STEP_TOKENS - T;
            sl->chunk = c;
            in->rows[n] = (lt_batch_row){.kv = sl->kv,
                                         .delta = fwd_delta(g->target),
                                         .token = g->ids[sl->prefill],
                                         .pos = sl->prefill,
                                         .n = c,
                                         .tokens = g->ids + sl->prefill,
                                         .no_logits = sl->prefill + c < g->n_ids};
            in->row_slot[n++] = best;
            T += c;
        }
        if (!n) continue;
        /* sort entries by adapter, carrying the slot index along (n is small: insertion) */
        for (int a = 1; a < n; a++)
            for (int b = a; b > 0 && row_cmp(&in->rows[b - 1], &in->rows[b]) > 0; b--) {
                lt_batch_row t = in->rows[b];
                in->rows[b] = in->rows[b - 1];
                in->rows[b - 1] = t;
                int u = in->row_slot[b];
                in->row_slot[b] = in->row_slot[b - 1];
                in->row_slot[b - 1] = u;
            }
        lt_status st = lt_model_forward_batch(in->m, in->slots[0].kv, in->rows, n, in->logits);
        pthread_mutex_lock(&in->mu);
        if (n_dec) {
            in->steps++;
            in->step_rows += (uint64_t)n_dec;
        }
        pthread_mutex_unlock(&in->mu);
        for (int r = 0, k = 0; r < n; r++) {
            int si = in->row_slot[r];
            slot *sl = &in->slots[si];
            lt_status s2 = st;
            if (sl->chunk) { /* a chunk of its prompt: the last one gives the first token */
                sl->prefill += sl->chunk;
                if (in->rows[r].no_logits) {
                    if (s2) slot_end(in, si, s2);
                    continue;
                }
            }
            if (!s2)
                s2 = lt_generation_step(sl->gen, sl->smp, in->logits + (int64_t)k * V, &sl->next,
                                        &sl->pos, &sl->more);
            k++;
            if (s2 || !sl->more) slot_end(in, si, s2);
        }
        pthread_mutex_lock(&in->mu);
        kv_account(in);
        pthread_mutex_unlock(&in->mu);
    }
    return NULL;
}

/* g into the queue, with the engine's reference; 0, or -1 (g done: queue full or stopping). */
static int submit(lt_infer *in, lt_gen *g) {
    pthread_mutex_lock(&in->mu);
    if (in->stopping || in->queued >= in->max_queue) {
        int q = in->queued, stopping = in->stopping;
        pthread_mutex_unlock(&in->mu);
        pthread_mutex_lock(&g->mu);
        g->st = stopping ? LT_ERR_CANCELLED : LT_ERR_BUSY;
        if (stopping)
            snprintf(g->err, sizeof g->err, "the server is stopping");
        else
            snprintf(g->err, sizeof g->err,
                     "the queue is full: %d requests already wait for a slot (--max-queue); try "
                     "again",
                     q);
        g->t_end = mono_now();
        g->done = 1;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        return -1;
    }
    pthread_mutex_lock(&g->mu);
    g->refs++; /* the engine's */
    pthread_mutex_unlock(&g->mu);
    g->q_next = NULL;
    if (in->q_tail)
        in->q_tail->q_next = g;
    else
        in->q_head = g;
    in->q_tail = g;
    in->queued++;
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
    return 0;
}

void lt_infer_run(lt_server *s, lt_gen *g) {
    if (submit(s->infer, g)) return;
    pthread_mutex_lock(&g->mu);
    while (!g->done)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

lt_status lt_infer_spawn(lt_server *s, lt_gen *g) {
    submit(s->infer, g); /* a full queue: g is done with its error, the stream reports it */
    return LT_OK;
}

int lt_infer_queue_full(lt_server *s) {
    lt_infer *in = s->infer;
    pthread_mutex_lock(&in->mu);
    int full = in->queued >= in->max_queue;
    pthread_mutex_unlock(&in->mu);
    return full;
}

/* A cancelled request notices at once: the engine looks at the queue again. */
void lt_infer_wake(lt_server *s) {
    lt_infer *in = s->infer;
    pthread_mutex_lock(&in->mu);
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
}

int64_t lt_infer_kv_bytes(lt_server *s) {
    lt_infer *in = s->infer;
    pthread_mutex_lock(&in->mu);
    int64_t b =
        in->state == ST_READY ? in->kv_positions * lt_kv_cache_bytes(in->m, 1, in->kv_type) : 0;
    pthread_mutex_unlock(&in->mu);
    return b;
}

void lt_infer_batch_stats(lt_server *s, uint64_t *steps, uint64_t *rows) {
    lt_infer *in = s->infer;
    pthread_mutex_lock(&in->mu);
    *steps = in->steps;
    *rows = in->step_rows;
    pthread_mutex_unlock(&in->mu);
}
