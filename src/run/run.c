/* run.c - the training loop as a library (see run.h): prepares in stages (loading_model,
 * tokenizing, planning, creating_trainer, resuming: stage events, the stop flag checked in
 * between and per record while tokenizing) the model, tokenizer, data and trainer from
 * lt_run_opts, or borrows the model, tokenizer and data of an lt_run_shared; then per optimizer
 * step copies grad_accum micro-batches out of the batcher, accumulates them with transformers'
 * normalisation (1 / tokens of the whole step), checks loss and gradients for NaN/inf (skip, or
 * stop after max_nonfinite in a row), steps AdamW with the scheduled learning rate, and evaluates /
 * saves / stops early on schedule. Everything it reports goes out as JSON events to the sinks;
 * nothing here prints. With a communicator (lt_run_set_comm: data parallelism, run.h) each rank
 * computes its rows of the step row by row, and the ranks' row gradients are summed in the
 * global batch's order on every rank (dp_accumulate), so any number of ranks gives the same
 * bits; only rank 0 writes OUT.
 *
 * Invariants: a step is either applied whole or not at all: a stop request between
 * micro-batches rewinds the batcher and the trainer's counters to the step's start and zeroes
 * the gradients, so the checkpoint written then equals the state after the previous step.
 * Evaluation never changes training state (own batchers, no dropout, no counters). A run never
 * writes what it borrows from an lt_run_shared (the lazy model is only read; re-tokenized data
 * is the run's own), and keeps no process-global state: its OpenMP thread count is set for
 * the calling thread only and restored (threads_enter / threads_leave). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "loratune/export.h"
#include "loratune/hwinfo.h"
#include "core/io.h"
#include "run_internal.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int64_t current_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long long pages = 0, rss = 0;
    if (!f) return 0;
    if (fscanf(f, "%lld %lld", &pages, &rss) != 2) rss = 0;
    fclose(f);
    return (int64_t)rss * (int64_t)sysconf(_SC_PAGESIZE);
}

static int64_t peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (int64_t)ru.ru_maxrss * 1024; /* Linux: KiB */
}

const char *lt_run_outcome_name(lt_run_outcome o) {
    switch (o) {
    case LT_RUN_DONE:
        return "done";
    case LT_RUN_EARLY_STOP:
        return "early_stop";
    case LT_RUN_INTERRUPTED:
        return "interrupted";
    case LT_RUN_NONFINITE:
        return "nonfinite";
    }
    return "?";
}

void lt_run_emit_(lt_run *r, json_t *ev) {
    if (!ev) return;
    for (int i = 0; i < r->n_sinks; i++)
        r->sinks[i].fn(r->sinks[i].ctx, ev);
    json_decref(ev);
}

lt_status lt_run_add_sink(lt_run *r, lt_run_sink fn, void *ctx) {
    if (!fn) return lt_error(LT_ERR_ARG, "run: sink function is NULL");
    if (r->n_sinks >= LT_RUN_MAX_SINKS)
        return lt_error(LT_ERR_ARG, "run: at most %d sinks", LT_RUN_MAX_SINKS);
    r->sinks[r->n_sinks].fn = fn;
    r->sinks[r->n_sinks].ctx = ctx;
    r->n_sinks++;
    return LT_OK;
}

void lt_run_request_stop(lt_run *r) {
    if (r) atomic_store(&r->stop, 1);
}

lt_trainer *lt_run_trainer(lt_run *r) {
    return r->tr;
}
const lt_data *lt_run_data(const lt_run *r) {
    return r->data;
}
const lt_run_opts *lt_run_options(const lt_run *r) {
    return &r->o;
}
int64_t lt_run_total_steps(const lt_run *r) {
    return r->total_steps;
}
int64_t lt_run_step(const lt_run *r) {
    return r->step;
}

/* Frees what the run owns; the parts of a shared object (lt_run_create_from) are borrowed. */
void lt_run_free(lt_run *r) {
    if (!r) return;
    for (int s = 0; s < LT_SPLIT_COUNT; s++)
        lt_batcher_free(r->eval_b[s]);
    lt_batcher_free(r->train_b);
    lt_trainer_free(r->tr);
    lt_backend_cuda_free(r->cuda);
    lt_data_free(r->own_data);
    if (!r->shared) {
        lt_chat_template_free(r->tpl);
        lt_tokenizer_free(r->tok);
        lt_model_free(r->model);
    }
    json_decref(r->resumed_config);
    json_decref(r->resume_skipped);
    free(r->mb_buf);
    free(r->mbs);
    free(r->own_ckpts);
    free(r->dp_send);
    free(r->dp_recv);
    free(r->dp_sum);
    free(r->dp_pieces);
    lt_dir_lock_close(r->out_lock); /* last: OUT is written until here */
    free(r);
}

/* The data the run reads from now on (owned by the run; a shared object's data is not freed). */
static void set_own_data(lt_run *r, lt_data *d) {
    lt_data_free(r->own_data);
    r->own_data = d;
    r->data = d;
}

static lt_status parse_faults(lt_run *r) {
    const char *e = r->o.fault_nan_steps;
    if (!*e) return LT_OK;
    const char *p = e;
    while (*p) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 1 || (*end && *end != ','))
            return lt_error(LT_ERR_ARG,
                            "fault_nan_steps: expected comma-separated steps >= 1, got '%s'", e);
        if (r->n_fault_steps < LT_RUN_MAX_FAULTS) r->fault_steps[r->n_fault_steps++] = v;
        p = *end ? end + 1 : end;
    }
    return LT_OK;
}

lt_dtype lt_run_pick_compute_dtype(int want, lt_train_method m, const char **why) {
    if (want == LT_DTYPE_F32 || want == LT_DTYPE_BF16) {
        *why = "asked";
        return (lt_dtype)want;
    }
    if (m == LT_METHOD_DORA) {
        *why = "auto: DoRA computes in fp32";
        return LT_DTYPE_F32;
    }
    const uint32_t f = lt_cpu_features();
    const int native = (f & (LT_CPU_AVX512_BF16 | LT_CPU_AMX_BF16)) != 0;
    if (!native) {
        *why = "auto: this CPU has no bf16 instructions (avx512_bf16, amx_bf16)";
        return LT_DTYPE_F32;
    }
    if (lt_cpu_level_active() < LT_CPU_LEVEL_AVX512) {
        *why = "auto: the kernels are capped below avx512 (LORATUNE_CPU)";
        return LT_DTYPE_F32;
    }
    *why = f & LT_CPU_AMX_BF16 ? "auto: the CPU has amx_bf16" : "auto: the CPU has avx512_bf16";
    return LT_DTYPE_BF16;
}

lt_dtype lt_run_pick_base_dtype(int want, lt_train_method m, lt_dtype compute,
                                const lt_model_config *mc) {
    if (want >= 0) return (lt_dtype)want;
    const int bf16_file = mc && mc->dtype_stated && mc->dtype == LT_DTYPE_BF16;
    return m == LT_METHOD_LORA && compute == LT_DTYPE_BF16 && bf16_file ? LT_DTYPE_BF16
                                                                       : LT_DTYPE_F32;
}

lt_status lt_run_opts_train_config(const lt_run_opts *o, const lt_model_config *mc,
                                   lt_train_config *c, const char **why) {
    lt_train_config_default(c);
    int L = mc->n_layers;
    c->method = o->method;
    c->lora.r = o->lora_rank;
    c->lora.alpha = (float)o->lora_alpha;
    c->lora.dropout = (float)o->lora_dropout;
    c->lora.rslora = o->rslora;
    c->lora.targets = o->lora_targets;
    if (o->lora_last_layers > 0) {
        if (o->lora_last_layers > L)
            return lt_error(LT_ERR_ARG, "lora-layers: %d layers asked for, the model has %d",
                            o->lora_last_layers, L);
        c->lora.layer_begin = L - o->lora_last_layers;
        c->lora.layer_end = L;
    } else if (o->lora_layer_end > 0) {
        if (o->lora_layer_end > L)
            return lt_error(LT_ERR_ARG, "lora-layers: %d:%d is outside the model's %d layers",
                            o->lora_layer_begin, o->lora_layer_end, L);
        c->lora.layer_begin = o->lora_layer_begin;
        c->lora.layer_end = o->lora_layer_end;
    }
    c->batch_size = o->batch_size > 0 ? o->batch_size : 1; /* auto: resolve_sizes sets it */
    c->seq_len = o->max_seq_len;
    c->grad_checkpoint = o->grad_checkpoint;
    const char *w = "";
    c->compute_dtype = lt_run_pick_compute_dtype(o->compute_dtype, c->method, &w);
    c->base_dtype = lt_run_pick_base_dtype(o->base_dtype, c->method, c->compute_dtype, mc);
    if (why) *why = w;
    c->lr = (float)o->lr;
    c->weight_decay = (float)o->weight_decay;
    c->grad_clip = (float)o->grad_clip;
    c->grad_accum = o->grad_accum;
    c->seed = o->seed;
    c->keep_blas_threads = o->keep_blas_threads;
    return LT_OK;
}

static lt_status build_train_config(lt_run *r, const lt_adapter *a) {
    const lt_run_opts *o = &r->o;
    lt_train_config *c = &r->tc;
    lt_status s = lt_run_opts_train_config(o, &r->model->config, c, &r->compute_reason);
    if (s) return s;
    /* the plan counts each rank's exchange buffers (0: no communicator, or the batched
     * reduction, which has none) */
    c->ranks = r->comm.allreduce ? 0 : r->comm.size;
    /* ZeRO-1: this rank's shard of AdamW's state (the plan counts 1/size of it) */
    c->zero_ranks = r->comm.zero ? r->comm.size : 0;
    c->zero_rank = r->comm.zero ? r->comm.rank : 0;
    if (a) { /* the adapter decides its own shape */
        c->method = a->method;
        c->lora.r = a->r;
        c->lora.alpha = a->alpha;
        c->lora.rslora = a->rslora;
        c->lora.targets = a->targets;
        c->lora.layer_begin = a->layer_begin;
        c->lora.layer_end = a->layer_end;
        c->compute_dtype =
            lt_run_pick_compute_dtype(o->compute_dtype, c->method, &r->compute_reason);
        c->base_dtype = lt_run_pick_base_dtype(o->base_dtype, c->method, c->compute_dtype,
                                               &r->model->config);
    }
    s = lt_train_config_validate(&r->model->config, c);
    return s ? lt_error_wrap(s, "training configuration") : LT_OK;
}

/* ---- threads ------------------------------------------------------------------------------ */

/* opts.threads for the OpenMP regions the calling thread starts while the run works (prepare,
 * train, evaluate). omp_set_num_threads sets the nthreads-var ICV of the calling thread only
 * (OpenMP 4.5 §2.3: a data-environment ICV; libgomp gives each thread its own copy on the first
 * write), so other threads, and runs on them, keep theirs; the previous value is restored when
 * the call returns. OpenBLAS's thread count is process-wide and not touched here (the trainer
 * keeps OpenBLAS single-threaded during steps: lt_train_config.keep_blas_threads). */
static int threads_enter(const lt_run *r) {
#ifdef _OPENMP
    int prev = omp_get_max_threads();
    if (r->o.threads > 0) omp_set_num_threads(r->o.threads);
    return prev;
#else
    (void)r;
    return 0;
#endif
}

static void threads_leave(const lt_run *r, int prev) {
#ifdef _OPENMP
    if (r->o.threads > 0) omp_set_num_threads(prev);
#else
    (void)r;
    (void)prev;
#endif
}

/* ---- preparation: stages ------------------------------------------------------------------ */

/* {"event":"stage","stage":name,"elapsed_s":...} plus the fields of extra (a new reference, may
 * be NULL). */
static void emit_stage(lt_run *r, const char *name, json_t *extra) {
    json_t *ev = json_pack("{s:s, s:s, s:f}", "event", "stage", "stage", name, "elapsed_s",
                           now_s() - r->t_prepare);
    if (ev && extra) json_object_update(ev, extra);
    json_decref(extra);
    lt_run_emit_(r, ev);
}

/* LT_ERR_CANCELLED when a stop was requested; checked between the stages. */
static lt_status check_stop(lt_run *r, const char *before) {
    if (!atomic_load(&r->stop)) return LT_OK;
    return lt_error(LT_ERR_CANCELLED, "run: stopped on request before %s", before);
}

/* lt_data_opts.progress while tokenizing: the stop flag on every record, an event at most
 * every 0.5 s. */
static int on_tokenized(void *ctx, int64_t records) {
    lt_run *r = ctx;
    if (atomic_load(&r->stop)) return 1;
    double t = now_s();
    if (t - r->progress_t >= 0.5) {
        r->progress_t = t;
        emit_stage(r, "tokenizing",
                   json_pack("{s:s, s:I, s:b}", "data", r->o.data, "examples", (json_int_t)records,
                             "done", 0));
    }
    return 0;
}

static int64_t data_examples(const lt_data *d) {
    int64_t n = 0;
    for (int s = 0; s < LT_SPLIT_COUNT; s++)
        n += lt_data_count(d, (lt_split)s);
    return n;
}

/* The longest example (before truncation) of every split. */
static int data_longest(const lt_data *d) {
    int longest = 0;
    for (int s = 0; s < LT_SPLIT_COUNT; s++) {
        lt_data_summary sum;
        if (lt_data_count(d, (lt_split)s) > 0 && !lt_data_summary_get(d, (lt_split)s, &sum) &&
            sum.max_len > longest)
            longest = sum.max_len;
    }
    return longest;
}

/* Tokenizes the run's data to max_seq_len into a data object the run owns (stage events with
 * the examples read so far; the stop flag checked on every record). */
static lt_status tokenize(lt_run *r, int max_seq_len) {
    lt_data_opts dop;
    lt_data_opts_default(&dop);
    dop.format = r->o.data_format;
    dop.max_seq_len = max_seq_len;
    dop.train_on_prompt = r->o.train_on_prompt;
    dop.valid_fraction = r->o.valid_fraction;
    dop.seed = r->o.seed;
    dop.progress = on_tokenized;
    dop.progress_ctx = r;
    r->progress_t = now_s();
    emit_stage(r, "tokenizing",
               json_pack("{s:s, s:I, s:b, s:i}", "data", r->o.data, "examples", (json_int_t)0,
                         "done", 0, "max_seq_len", max_seq_len));
    lt_data *d = NULL;
    lt_status s = lt_data_open(r->o.data, r->tok, r->tpl, &dop, &d);
    if (s == LT_ERR_CANCELLED)
        return lt_error(LT_ERR_CANCELLED, "run: stopped on request while tokenizing (%s)",
                        lt_errmsg());
    if (s) return s;
    set_own_data(r, d);
    emit_stage(r, "tokenizing",
               json_pack("{s:s, s:I, s:b}", "data", r->o.data, "examples",
                         (json_int_t)data_examples(d), "done", 1));
    return LT_OK;
}

/* Stage loading_model: model (lazy unless full FT), tokenizer, chat template. */
static lt_status load_model(lt_run *r) {
    int lazy = r->o.method != LT_METHOD_FULL;
    emit_stage(r, "loading_model",
               json_pack("{s:s, s:b, s:b}", "model", r->o.model, "lazy", lazy, "shared",
                         r->shared != NULL));
    if (r->shared) return LT_OK; /* borrowed from the shared object (run_new) */
    /* adapters train over a lazy model: the frozen base stays in the (mapped) file and the
       trainer copies / quantizes it tensor by tensor or uses it in place; full FT needs it
       whole */
    lt_model_load_opts lo = {.lazy = lazy};
    lt_status s = lt_model_load(r->o.model, &lo, &r->model);
    if (s) return s;
    if (r->model->warnings[0]) /* what loading ignored: the program shows it */
        lt_run_emit_(r, json_pack("{s:s, s:s, s:s}", "event", "warning", "what", "model",
                                  "message", r->model->warnings));
    const char *tokp = r->o.tokenizer[0] ? r->o.tokenizer : r->o.model;
    if ((s = lt_tokenizer_load(tokp, &r->tok))) return s;
    s = lt_model_chat_template(lt_path_is_dir(tokp) ? tokp : r->o.model, r->tok, &r->tpl);
    if (s == LT_ERR_NOTFOUND) {
        r->tpl = NULL; /* plain text data still works; chat data says what is missing */
        s = LT_OK;
    }
    return s;
}

/* The length the data is tokenized to: max_seq_len, or with auto the model's context (the
 * fit, resolve_sizes, may then cut it). */
static int tokenize_len(const lt_run_opts *o, const lt_model *m) {
    if (o->max_seq_len > 0) return o->max_seq_len;
    return m->config.max_seq_len > 1 ? m->config.max_seq_len : 2048;
}

/* Stage tokenizing: the shared object's data when it is what this run would tokenize (same
 * examples: tokenized to the same length, or no example longer than either length), else the
 * run's own. */
static lt_status load_data(lt_run *r) {
    int len = tokenize_len(&r->o, r->model);
    const lt_run_shared *sh = r->shared;
    if (sh) {
        int longest = data_longest(sh->data);
        if (sh->max_seq_len == len || (longest <= len && longest <= sh->max_seq_len)) {
            r->data = sh->data;
            emit_stage(r, "tokenizing",
                       json_pack("{s:s, s:I, s:b, s:b}", "data", r->o.data, "examples",
                                 (json_int_t)data_examples(sh->data), "done", 1, "shared", 1));
            return LT_OK;
        }
    }
    return tokenize(r, len);
}

/* Automatic batch size / sequence length: the largest the memory plan fits in the budget
 * (default 80% of the RAM available now plus what this process already holds, which the plan
 * counts: the loaded model). The sequence length is also capped at the longest example
 * (before truncation) of the train / valid splits; if memory forces it below that, the data is
 * read again truncated to it. Batch is capped at 64 and at the training examples. On a GPU
 * the budget is device memory: --memory-budget or what the device has free now
 * (lt_backend_ops.mem_info), less what the backend needs beside the trainer
 * (lt_train_plan_fit_device); sizes given are checked too, so that a run that cannot fit stops
 * here with the plan's numbers rather than at an allocation. */
static lt_status resolve_sizes(lt_run *r) {
    const lt_backend *dev = r->cuda; /* a GPU: its memory, and given sizes are checked too */
    /* data parallelism: sizes are given (lt_run_set_comm), and a given budget is checked
     * against this rank's plan, its exchange buffers included */
    r->budget_checked = dev || r->auto_batch || r->auto_seq ||
                        (r->comm.size >= 1 && r->o.memory_budget > 0);
    if (!r->budget_checked) return LT_OK;
    int64_t budget = r->o.memory_budget, total = 0;
    if (budget <= 0 && dev) {
        if (!dev->op->mem_info || dev->op->mem_info(dev, &budget, &total) || budget <= 0)
            return lt_error(LT_ERR_UNSUPPORTED,
                            "memory-budget: cannot read the free memory of %s; give "
                            "--memory-budget (bytes of device memory)",
                            dev->desc ? dev->desc : dev->name);
    } else if (budget <= 0) {
        lt_hwinfo hw;
        if (lt_hwinfo_detect(&hw) || hw.ram_available_bytes <= 0)
            return lt_error(LT_ERR_UNSUPPORTED,
                            "memory-budget: cannot read the available RAM; give --memory-budget "
                            "or --batch-size and --max-seq-len");
        budget = (int64_t)(0.8 * (double)(hw.ram_available_bytes + current_rss_bytes()));
    }
    int longest = 2;
    for (int sp = LT_SPLIT_TRAIN; sp <= LT_SPLIT_VALID; sp++) {
        lt_data_summary sum;
        if (lt_data_count(r->data, (lt_split)sp) > 0 &&
            !lt_data_summary_get(r->data, (lt_split)sp, &sum) && sum.max_len > longest)
            longest = sum.max_len;
    }
    int max_seq = r->auto_seq ? (longest < r->o.max_seq_len ? longest : r->o.max_seq_len)
                              : r->o.max_seq_len;
    int64_t ntrain = lt_data_count(r->data, LT_SPLIT_TRAIN);
    int max_batch = ntrain > 0 && ntrain < 64 ? (int)ntrain : 64;
    lt_train_config c = r->tc;
    if (r->auto_batch) c.batch_size = 0;
    if (r->auto_seq) c.seq_len = 0;
    lt_train_plan_t plan;
    int B = 0, T = 0;
    int64_t reserve = 0; /* what this process holds / will allocate besides the plan */
    lt_status s = dev ? lt_train_plan_fit_device(r->model, &c, dev, budget, max_batch, max_seq, &B,
                                                 &T, &plan, &reserve)
                      : lt_train_plan_fit_run(r->model, &c, budget, current_rss_bytes(),
                                              max_batch, max_seq, &B, &T, &plan, &reserve);
    if (s) {
        char pre[256];
        snprintf(pre, sizeof pre, "%s%s%s",
                 r->auto_batch || r->auto_seq ? "automatic batch size / sequence length"
                                              : "the memory plan",
                 dev ? " on " : "", dev ? (dev->desc ? dev->desc : dev->name) : "");
        return lt_error_wrap(s, pre);
    }
    if (r->auto_seq && T < longest) { /* memory, not the data, decided: truncate to T */
        if ((s = tokenize(r, T))) return s;
    }
    r->o.batch_size = B;
    r->o.max_seq_len = T;
    r->tc.batch_size = B;
    r->tc.seq_len = T;
    r->memory_budget = budget;
    r->planned_peak = (dev ? plan.device_bytes : plan.peak_bytes) + reserve;
    r->reserved_bytes = reserve;
    return LT_OK;
}

/* Stage creating_trainer: the trainer (with the adapter's values), the training batcher, the
 * step count and the micro-batch buffers. */
/* The backend --device asks for: cuda (an error naming why when there is none), cpu, or auto
 * (CUDA when built with it and a GPU is present). */
static lt_status pick_backend(lt_run *r, const lt_backend **be) {
    *be = lt_backend_cpu();
    if (r->o.device == LT_DEVICE_CPU || r->cuda) {
        if (r->cuda) *be = r->cuda;
        return LT_OK;
    }
    if (r->o.device == LT_DEVICE_AUTO && !lt_backend_cuda_compiled()) return LT_OK;
    lt_status s = lt_backend_cuda_create(r->comm.size ? r->comm.device : 0, &r->cuda);
    if (s && r->o.device == LT_DEVICE_AUTO) return LT_OK; /* no GPU: the CPU */
    if (s) return lt_error_wrap(s, "--device cuda");
    *be = r->cuda;
    return LT_OK;
}

/* ---- data parallelism (lt_run_set_comm, docs/SCALE_OUT.md) -------------------------------- */

lt_status lt_run_set_comm(lt_run *r, const lt_run_comm *c) {
    if (!r || !c) return lt_error(LT_ERR_ARG, "run: lt_run_set_comm: NULL");
    if (r->prepared || r->prepare_failed)
        return lt_error(LT_ERR_ARG, "run: lt_run_set_comm comes before lt_run_prepare");
    if (c->size < 1 || c->rank < 0 || c->rank >= c->size || !c->allgather)
        return lt_error(LT_ERR_ARG,
                        "run: communicator: rank %d of %d (expected 0 <= rank < size and an "
                        "allgather function)",
                        c->rank, c->size);
    if (c->size > 1 && (r->o.batch_size <= 0 || r->o.max_seq_len <= 0))
        return lt_error(LT_ERR_ARG,
                        "batch-size, max-seq-len: give both (not auto) for %d ranks: the automatic "
                        "sizes follow each process's view of the free memory, which the ranks "
                        "would not share",
                        c->size);
    if (c->zero != 0 && c->zero != 1)
        return lt_error(LT_ERR_ARG, "zero: expected 0 (off) or 1 (ZeRO-1: AdamW's state sharded "
                        "over the ranks), got %d", c->zero);
    if (c->zero && (!c->allreduce || !c->reduce_scatter || !c->allgather_dev))
        return lt_error(LT_ERR_ARG,
                        "zero 1: ZeRO-1 needs the batched reduction's communicator (allreduce, "
                        "reduce_scatter and allgather_dev: multi-GPU over NCCL); this one has "
                        "%s%s%s",
                        c->allreduce ? "" : "no allreduce ",
                        c->reduce_scatter ? "" : "no reduce_scatter ",
                        c->allgather_dev ? "" : "no allgather_dev");
    r->comm = *c;
    return LT_OK;
}

/* The exchange buffers (lt_train_exchange_size, which the memory plan counts too):
 * grad_accum * ceil(batch_size / size) row slots on this rank, size times that received, and
 * the sum. */
static lt_status dp_create(lt_run *r) {
    if (r->comm.allreduce) { /* the batched reduction: the stop flags' and losses' exchange */
        const int max = lt_trainer_n_tensors(r->tr) + 2;
        r->dp_recv = lt_malloc((size_t)r->comm.size * 2 * sizeof(double));
        r->dp_pieces = lt_malloc((size_t)max * sizeof *r->dp_pieces);
        if (!r->dp_recv || !r->dp_pieces)
            return lt_error(LT_ERR_NOMEM, "data parallel: out of memory");
        r->dp_npieces = lt_trainer_grad_pieces(r->tr, r->dp_pieces, max);
        return LT_OK;
    }
    int64_t P = 0;
    for (int i = 0; i < lt_trainer_n_tensors(r->tr); i++) {
        lt_train_tensor t;
        if (!lt_trainer_tensor(r->tr, i, &t)) P += t.numel;
    }
    const int N = r->comm.size;
    lt_train_exchange ex;
    lt_status s = lt_train_exchange_size(P, r->o.batch_size, r->o.grad_accum, N, &ex);
    if (s) return s;
    r->dp_params = P;
    r->dp_rows = ex.rows;
    r->dp_slot = ex.slot_bytes;
    r->dp_send = lt_malloc(ex.send_bytes);
    r->dp_recv = lt_malloc(ex.recv_bytes);
    r->dp_sum = lt_malloc(ex.sum_bytes);
    if (!r->dp_send || !r->dp_recv || !r->dp_sum)
        return lt_error(LT_ERR_NOMEM,
                        "data parallel: out of memory for %d x %d row gradients of %lld floats "
                        "(%d ranks)",
                        r->o.grad_accum, r->dp_rows, (long long)P, N);
    r->dp_bytes = ex.total_bytes; /* what was allocated */
    return LT_OK;
}

/* 1 in *any when some rank was asked to stop. Collective: every rank calls it at the start of
 * every step, so all of them stop at the same step boundary. */
static lt_status dp_stop_any(lt_run *r, int *any) {
    int32_t mine = atomic_load(&r->stop) ? 1 : 0;
    *any = 0;
    if (r->comm.allgather(r->comm.ctx, &mine, r->dp_recv, sizeof mine))
        return lt_error(LT_ERR_IO, "data parallel: rank %d of %d: exchanging the stop flags failed",
                        r->comm.rank, r->comm.size);
    for (int q = 0; q < r->comm.size; q++) {
        int32_t v;
        memcpy(&v, r->dp_recv + (size_t)q * sizeof v, sizeof v);
        if (v) *any = 1;
    }
    return LT_OK;
}

/* The rank that holds row b of a B-row micro-batch: rows [q*B/N, (q+1)*B/N) are rank q's. */
static int dp_first_row(int q, int B, int N) {
    return (int)((int64_t)q * B / N);
}

/* One step's gradient over the ranks. This rank's rows of each micro-batch, one row at a time:
 * its gradient (scaled by 1 / count, the loss tokens of the whole global batch) and its loss
 * into the row's slot; then every rank's slots (allgather), summed in the global batch's order
 * (micro-batch, row) on every rank -- an order that does not depend on the number of ranks --
 * and written as the trainer's gradient. Each row's dropout stream is keyed by (micro-batch,
 * row); after the step the counters read as a single process's (micro0 + grad_accum). */
static lt_status dp_accumulate(lt_run *r, int64_t count, int64_t tstep0, uint64_t micro0,
                               double *loss_sum, int64_t *counted) {
    const int N = r->comm.size, me = r->comm.rank, R = r->dp_rows, G = r->o.grad_accum;
    const int nt = lt_trainer_n_tensors(r->tr);
    const size_t per_rank = (size_t)G * (size_t)R * r->dp_slot;
    const int64_t P = r->dp_params;
    lt_status s;
    memset(r->dp_send, 0, per_rank);
    for (int k = 0; k < G; k++) {
        const lt_batch *mb = &r->mbs[k];
        int b0 = dp_first_row(me, mb->B, N), b1 = dp_first_row(me + 1, mb->B, N);
        for (int b = b0; b < b1; b++) {
            unsigned char *slot = r->dp_send + ((size_t)k * R + (size_t)(b - b0)) * r->dp_slot;
            size_t off = (size_t)b * (size_t)mb->T;
            lt_batch row = {.B = 1,
                            .T = mb->T,
                            .tokens = mb->tokens + off,
                            .targets = mb->targets + off,
                            .pos = mb->pos ? mb->pos + off : NULL,
                            .seq = mb->seq ? mb->seq + off : NULL};
            if (lt_batch_count(&row) == 0) continue; /* nothing to learn: the slot stays 0 */
            lt_trainer_zero_grad(r->tr);
            lt_trainer_set_counters(r->tr, tstep0, ((micro0 + (uint64_t)k) << 20) ^ (uint64_t)b);
            lt_loss_stats ls;
            if ((s = lt_trainer_accumulate(r->tr, &row, 1.0f / (float)count, &ls))) return s;
            double head[2] = {ls.loss_sum, (double)ls.count};
            memcpy(slot, head, sizeof head);
            float *g = (float *)(void *)(slot + sizeof head);
            for (int i = 0; i < nt; i++) {
                lt_train_tensor t;
                if (lt_trainer_tensor(r->tr, i, &t)) continue;
                if ((s = lt_trainer_read(r->tr, i, LT_TENSOR_GRAD, 0, g, t.numel))) return s;
                g += t.numel;
            }
        }
    }
    lt_trainer_zero_grad(r->tr);
    lt_trainer_set_counters(r->tr, tstep0, micro0 + (uint64_t)G);
    if (r->comm.allgather(r->comm.ctx, r->dp_send, r->dp_recv, per_rank))
        return lt_error(LT_ERR_IO, "data parallel: rank %d of %d: exchanging the gradients failed",
                        me, N);
    float *sum = r->dp_sum;
    int first = 1;
    for (int k = 0; k < G; k++) {
        const int B = r->mbs[k].B;
        for (int b = 0, q = 0; b < B; b++) {
            while (dp_first_row(q + 1, B, N) <= b)
                q++;
            const unsigned char *slot = r->dp_recv + (size_t)q * per_rank +
                                        ((size_t)k * R + (size_t)(b - dp_first_row(q, B, N))) *
                                            r->dp_slot;
            double head[2];
            memcpy(head, slot, sizeof head);
            if (head[1] == 0) continue; /* a row without loss tokens (skipped by its rank) */
            const float *g = (const float *)(const void *)(slot + sizeof head);
            if (first)
                memcpy(sum, g, (size_t)P * sizeof(float));
            else
                for (int64_t i = 0; i < P; i++)
                    sum[i] += g[i];
            first = 0;
            *loss_sum += head[0];
            *counted += (int64_t)head[1];
        }
    }
    if (first) return LT_OK; /* no row had loss tokens: the gradient stays zero */
    for (int i = 0; i < nt; i++) {
        lt_train_tensor t;
        if (lt_trainer_tensor(r->tr, i, &t)) continue;
        if ((s = lt_trainer_write(r->tr, i, LT_TENSOR_GRAD, 0, sum, t.numel))) return s;
        sum += t.numel;
    }
    return LT_OK;
}

/* A collective that failed (the communicator set lt_errmsg): the rank and what it was doing */
static lt_status dp_failed(const lt_run *r, const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", lt_errmsg());
    return lt_error(LT_ERR_IO, "data parallel: rank %d of %d: %s: %s", r->comm.rank, r->comm.size,
                    what, msg);
}

/* sum[0 .. k) = the ranks' mine[0 .. k), added in rank order (the same bits on every rank);
 * k <= 2 (dp_recv holds 2 doubles a rank) */
static lt_status dp_sum_doubles(lt_run *r, const double *mine, int k, double *sum,
                                const char *what) {
    if (r->comm.allgather(r->comm.ctx, mine, r->dp_recv, (size_t)k * sizeof(double)))
        return dp_failed(r, what);
    for (int i = 0; i < k; i++)
        sum[i] = 0;
    for (int q = 0; q < r->comm.size; q++)
        for (int i = 0; i < k; i++) {
            double v;
            memcpy(&v, (const char *)r->dp_recv + ((size_t)q * k + i) * sizeof v, sizeof v);
            sum[i] += v;
        }
    return LT_OK;
}

/* this rank's rows of micro-batch k (B 0 when it has none) */
static lt_batch dp_part(const lt_run *r, int k, int *b0) {
    const lt_batch *mb = &r->mbs[k];
    const int N = r->comm.size, me = r->comm.rank;
    int b1 = dp_first_row(me + 1, mb->B, N);
    *b0 = dp_first_row(me, mb->B, N);
    size_t off = (size_t)*b0 * (size_t)mb->T;
    lt_batch part = {.B = b1 - *b0,
                     .T = mb->T,
                     .tokens = mb->tokens + off,
                     .targets = mb->targets + off,
                     .pos = mb->pos ? mb->pos + off : NULL,
                     .seq = mb->seq ? mb->seq + off : NULL};
    return part;
}

/* the trainer's gradient hook (lt_trainer_set_grad_hook): one piece to the communicator */
static int dp_piece(void *ctx, float *buf, int64_t n) {
    lt_run *r = ctx;
    r->dp_emitted++;
    return r->comm.allreduce(r->comm.ctx, buf, (size_t)n);
}

/* dp_accumulate's batched twin (lt_run_comm.allreduce): this rank's rows of each micro-batch
 * as one batch, the gradients summed over the ranks in place (one allreduce of the trainer's
 * gradient span; with allreduce_wait, its pieces, each as soon as the backward of the rank's
 * last micro-batch has finished it), the losses and loss tokens through allgather, added in
 * rank order. Dropout: the rows starting a micro-batch draw as one process's micro-batch does;
 * another rank's draw from a stream keyed by (micro-batch, first row), so the ranks' masks are
 * not the same draws. */
static lt_status dp_reduce(lt_run *r, int64_t tstep0, uint64_t micro0, int64_t count,
                           double *loss_sum, int64_t *counted) {
    const int N = r->comm.size, G = r->o.grad_accum;
    /* reduce while the backward runs (ZeRO-1: one reduce-scatter after it) */
    const int pieces = r->comm.allreduce_wait != NULL && !r->comm.zero;
    double mine[2] = {0, 0};
    lt_status s;
    int last = -1; /* this rank's last micro-batch with loss tokens: its backward reduces */
    for (int k = 0, b0; k < G; k++) {
        lt_batch part = dp_part(r, k, &b0);
        if (part.B >= 1 && lt_batch_count(&part) > 0) last = k;
    }
    float *g = NULL;
    int64_t n = 0;
    lt_trainer_grad_span(r->tr, &g, &n);
    r->dp_emitted = 0;
    for (int k = 0, b0; k <= last; k++) {
        lt_batch part = dp_part(r, k, &b0);
        if (part.B < 1 || lt_batch_count(&part) == 0) continue;
        uint64_t key = b0 == 0 ? micro0 + (uint64_t)k
                               : ((micro0 + (uint64_t)k) << 20) ^ (uint64_t)b0;
        lt_trainer_set_counters(r->tr, tstep0, key);
        if (pieces && k == last)
            lt_trainer_set_grad_hook(r->tr, r->dp_pieces, r->dp_npieces, dp_piece, r);
        lt_loss_stats ls;
        s = lt_trainer_accumulate(r->tr, &part, 1.0f / (float)count, &ls);
        lt_trainer_set_grad_hook(r->tr, NULL, 0, NULL, NULL);
        if (s) return s;
        mine[0] += ls.loss_sum;
        mine[1] += (double)ls.count;
    }
    lt_trainer_set_counters(r->tr, tstep0, micro0 + (uint64_t)G);
    /* every rank reduces the same pieces in the same order: those the backward did not (a
     * rank without rows in this step: all of them) go now */
    int failed = 0;
    if (pieces) {
        for (int i = r->dp_emitted; i < r->dp_npieces && !failed; i++)
            failed = r->comm.allreduce(r->comm.ctx, g + r->dp_pieces[i].offset,
                                       (size_t)r->dp_pieces[i].n);
        if (!failed) failed = r->comm.allreduce_wait(r->comm.ctx);
    } else if (n > 0 && r->comm.zero) { /* each rank gets the sum of its shard */
        failed = r->comm.reduce_scatter(r->comm.ctx, g, (size_t)(n / N));
    } else if (n > 0) {
        failed = r->comm.allreduce(r->comm.ctx, g, (size_t)n);
    }
    if (failed) return dp_failed(r, "reducing the gradients");
    double sum[2] = {0, 0};
    if ((s = dp_sum_doubles(r, mine, 2, sum, "exchanging the losses"))) return s;
    *loss_sum += sum[0];
    *counted += (int64_t)sum[1];
    return LT_OK;
}

/* ZeRO-1 (after dp_reduce's reduce-scatter): the global sum of the gradients' squares, every
 * rank's shard's added in rank order (the same bits on every rank) */
static lt_status zero_sumsq(lt_run *r, double *ss) {
    double mine = lt_trainer_shard_sumsq(r->tr);
    return dp_sum_doubles(r, &mine, 1, ss, "exchanging the gradient norm");
}

/* ZeRO-1's optimizer step: AdamW on this rank's shard, then the updated shards all-gathered
 * so that every rank holds every weight (lt_trainer_step_shard, train.h) */
static lt_status zero_step(lt_run *r, float lr, double norm) {
    lt_status s = lt_trainer_step_shard(r->tr, lr, norm);
    if (s) return s;
    float *g = NULL;
    int64_t n = 0;
    lt_trainer_grad_span(r->tr, &g, &n);
    if (n > 0 && r->comm.allgather_dev(r->comm.ctx, g, (size_t)(n / r->comm.size)))
        return dp_failed(r, "gathering the weights");
    return lt_trainer_load_span(r->tr);
}

float *lt_run_zero_gather_(lt_run *r, lt_status *st) {
    *st = LT_OK;
    float *g = NULL;
    int64_t n = 0;
    lt_trainer_grad_span(r->tr, &g, &n);
    const int writer = lt_run_writer_(r), nt = lt_trainer_n_tensors(r->tr);
    float *full = writer ? lt_calloc((size_t)(2 * n + 1), sizeof(float)) : NULL;
    /* every rank takes part in both gathers, even one that could not allocate (the others
     * would wait for it); its failure is reported after */
    int nomem = writer && !full;
    for (int k = 0; k < 2 && !*st && n > 0; k++) {
        *st = lt_trainer_shard_to_span(r->tr, k ? LT_TENSOR_ADAM_V : LT_TENSOR_ADAM_M);
        if (*st) break;
        if (r->comm.allgather_dev(r->comm.ctx, g, (size_t)(n / r->comm.size))) {
            *st = dp_failed(r, "gathering the optimizer state for the checkpoint");
            break;
        }
        for (int i = 0; i < nt && full && !*st; i++) {
            lt_train_tensor t;
            if (!(*st = lt_trainer_tensor(r->tr, i, &t)))
                *st = lt_trainer_read(r->tr, i, LT_TENSOR_GRAD, 0, full + k * n + t.span_offset,
                                      t.numel);
        }
    }
    lt_trainer_zero_grad(r->tr);
    if (!*st && nomem)
        *st = lt_error(LT_ERR_NOMEM, "checkpoint: out of memory for the gathered optimizer state "
                       "(%lld floats)", (long long)(2 * n));
    if (*st) {
        free(full);
        return NULL;
    }
    return full;
}

static lt_status create_trainer(lt_run *r, const lt_adapter *a) {
    const lt_backend *be = NULL;
    lt_status s = pick_backend(r, &be);
    if (s) return s;
    /* auto on a GPU: bf16 products with fp32 accumulation where the GPU has them (as PyTorch's
     * autocast), whatever the host CPU has; on the CPU the pick above (its bf16 instructions).
     * A backend without bf16 products computes in fp32; asked for, the trainer refuses it with
     * the reason. DoRA stays fp32 (the pick). */
    if (r->o.compute_dtype < 0 && be && be->device && r->tc.method != LT_METHOD_DORA) {
        const int has = lt_backend_supports(be, LT_OP_GEMM_BF16, LT_DTYPE_F32);
        r->tc.compute_dtype = has ? LT_DTYPE_BF16 : LT_DTYPE_F32;
        r->compute_reason = has ? "auto: the GPU has bf16 products (cuBLAS, fp32 accumulation)"
                                : "auto: this GPU has no bf16 products (compute capability < 8.0)";
    } else if (r->o.compute_dtype < 0 && r->tc.compute_dtype == LT_DTYPE_BF16 &&
               !lt_backend_supports(be, LT_OP_GEMM_BF16, LT_DTYPE_F32)) {
        r->tc.compute_dtype = LT_DTYPE_F32;
        r->compute_reason = "auto: this backend has no bf16 products";
    }
    emit_stage(r, "creating_trainer",
               json_pack("{s:s, s:i, s:i, s:s, s:s, s:s, s:s, s:s}", "method",
                         lt_train_method_name(r->tc.method), "batch_size", r->o.batch_size,
                         "max_seq_len", r->o.max_seq_len, "base_dtype",
                         r->tc.base_dtype == LT_DTYPE_BF16  ? "bf16"
                         : r->tc.base_dtype == LT_DTYPE_F16 ? "f16"
                                                            : "f32",
                         "compute_dtype", r->tc.compute_dtype == LT_DTYPE_BF16 ? "bf16" : "f32",
                         "compute_dtype_reason", r->compute_reason ? r->compute_reason : "",
                         "device", be->name, "device_name", be->desc ? be->desc : be->name));
    s = lt_trainer_create_on(r->model, &r->tc, be, &r->tr);
    if (s) return s;
    if (a && (s = lt_adapter_to_trainer(a, r->tr))) return s;
    if (lt_data_count(r->data, LT_SPLIT_TRAIN) > 0) {
        lt_batcher_opts bo = {.batch_size = r->o.batch_size,
                              .seq_len = r->o.max_seq_len,
                              .pack = r->o.pack,
                              .shuffle = 1,
                              .seed = r->o.seed};
        if ((s = lt_batcher_create(r->data, LT_SPLIT_TRAIN, &bo, &r->train_b))) return s;
        r->epoch_batches = lt_batcher_epoch_batches(r->train_b);
    }
    if (r->o.iters > 0)
        r->total_steps = r->o.iters;
    else if (r->epoch_batches > 0)
        r->total_steps = (int64_t)ceil(r->o.epochs * (double)r->epoch_batches / r->o.grad_accum);
    if (r->total_steps < 1) r->total_steps = 1;
    r->warmup_steps = r->o.warmup > 0 && r->o.warmup < 1
                          ? (int64_t)ceil(r->o.warmup * (double)r->total_steps)
                          : (int64_t)r->o.warmup;

    size_t cell = (size_t)r->o.batch_size * (size_t)r->o.max_seq_len;
    r->mb_buf = lt_malloc((size_t)r->o.grad_accum * 4 * cell * sizeof(int32_t));
    r->mbs = lt_calloc((size_t)r->o.grad_accum, sizeof *r->mbs);
    if (!r->mb_buf || !r->mbs)
        return lt_error(LT_ERR_NOMEM, "run: out of memory for %d micro-batches", r->o.grad_accum);
    return r->comm.size ? dp_create(r) : LT_OK;
}

static lt_status prepare(lt_run *r) {
    lt_status s;
    lt_adapter *a = NULL;
    if (r->o.out[0]) { /* first, so that a second run into OUT fails before loading anything */
        snprintf(r->ckpt_dir, sizeof r->ckpt_dir, "%s/checkpoints", r->o.out);
        if (lt_run_writer_(r) && (s = lt_run_take_out_(r))) return s;
    }
    /* the device first: --device cuda without a GPU fails before anything is loaded */
    const lt_backend *be = NULL;
    if ((s = pick_backend(r, &be))) return s;
    if ((s = check_stop(r, "loading the model")) || (s = load_model(r))) return s;

    r->auto_batch = r->o.batch_size <= 0;
    r->auto_seq = r->o.max_seq_len <= 0;
    if ((s = check_stop(r, "tokenizing")) || (s = load_data(r))) return s;
    if (r->auto_seq) r->o.max_seq_len = tokenize_len(&r->o, r->model); /* resolve_sizes fits it */

    if ((s = check_stop(r, "planning"))) return s;
    emit_stage(r, "planning",
               json_pack("{s:b, s:b, s:I}", "auto_batch_size", r->auto_batch, "auto_max_seq_len",
                         r->auto_seq, "memory_budget_bytes", (json_int_t)r->o.memory_budget));
    if (r->o.adapter[0] && (s = lt_adapter_load(r->o.adapter, &r->model->config, &a))) goto done;
    if ((s = build_train_config(r, a))) goto done;
    if ((s = resolve_sizes(r))) goto done;

    if ((s = check_stop(r, "creating the trainer")) || (s = create_trainer(r, a))) goto done;
    if (r->o.resume[0]) {
        char file[LT_RUN_PATH_MAX + 64];
        if ((s = check_stop(r, "resuming"))) goto done;
        json_t *skipped = NULL;
        if ((s = lt_checkpoint_pick(r->o.resume, file, sizeof file, &skipped))) goto done;
        json_t *extra = json_pack("{s:s}", "checkpoint", file);
        if (skipped) {
            json_object_set(extra, "skipped", skipped);
            r->resume_skipped = skipped;
        }
        emit_stage(r, "resuming", extra);
        if (!r->train_b) {
            s = lt_error(LT_ERR_ARG, "resume: %s has no training split", r->o.data);
            goto done;
        }
        if ((s = lt_run_load_checkpoint_(r, file))) goto done;
    }
    if ((s = check_stop(r, "training"))) goto done;
    emit_stage(r, "ready",
               json_pack("{s:I, s:I, s:I, s:i, s:i}", "steps", (json_int_t)r->total_steps,
                         "train_examples", (json_int_t)lt_data_count(r->data, LT_SPLIT_TRAIN),
                         "valid_examples", (json_int_t)lt_data_count(r->data, LT_SPLIT_VALID),
                         "batch_size", r->o.batch_size, "max_seq_len", r->o.max_seq_len));
done:
    lt_adapter_free(a);
    return s;
}

lt_status lt_run_prepare(lt_run *r) {
    if (!r) return lt_error(LT_ERR_ARG, "run: NULL");
    if (r->prepared || r->prepare_failed)
        return lt_error(LT_ERR_ARG, "run: lt_run_prepare is called once per run");
    r->t_prepare = now_s();
    int prev = threads_enter(r);
    lt_status s = prepare(r);
    threads_leave(r, prev);
    r->prepared = s == LT_OK;
    r->prepare_failed = s != LT_OK;
    return s;
}

static lt_status run_new(const lt_run_shared *sh, const lt_run_opts *opts, lt_run **out) {
    *out = NULL;
    lt_status s = lt_run_opts_validate(opts, 0);
    if (s) return s;
    if (sh && (s = lt_run_shared_check_(sh, opts))) return s;
    lt_run *r = lt_calloc(1, sizeof *r);
    if (!r) return lt_error(LT_ERR_NOMEM, "run: out of memory");
    r->o = *opts;
    atomic_init(&r->stop, 0);
    r->best_val = INFINITY;
    r->resumed_from = -1;
    r->last_ckpt_step = -1;
    r->last_eval_step = -1;
    r->last_val_loss = NAN;
    r->last_train_loss = NAN;
    if (sh) { /* borrowed: the shared object outlives the run */
        r->shared = sh;
        r->model = sh->model;
        r->tok = sh->tok;
        r->tpl = sh->tpl;
    }
    if ((s = parse_faults(r))) {
        lt_run_free(r);
        return s;
    }
    *out = r;
    return LT_OK;
}

lt_status lt_run_new(const lt_run_opts *opts, lt_run **out) {
    return run_new(NULL, opts, out);
}

lt_status lt_run_new_from(const lt_run_shared *shared, const lt_run_opts *opts, lt_run **out) {
    if (!shared) {
        *out = NULL;
        return lt_error(LT_ERR_ARG, "run: shared object is NULL");
    }
    return run_new(shared, opts, out);
}

static lt_status create(const lt_run_shared *sh, const lt_run_opts *opts, lt_run **out) {
    lt_run *r = NULL;
    lt_status s = run_new(sh, opts, &r);
    if (!s) s = lt_run_prepare(r);
    if (s) {
        lt_run_free(r);
        *out = NULL;
        return s;
    }
    *out = r;
    return LT_OK;
}

lt_status lt_run_create(const lt_run_opts *opts, lt_run **out) {
    return create(NULL, opts, out);
}

lt_status lt_run_create_from(const lt_run_shared *shared, const lt_run_opts *opts, lt_run **out) {
    if (!shared) {
        *out = NULL;
        return lt_error(LT_ERR_ARG, "run: shared object is NULL");
    }
    return create(shared, opts, out);
}

/* ---- shared model, tokenizer and data ----------------------------------------------------- */

lt_status lt_run_shared_load(const lt_run_opts *opts, lt_run_sink fn, void *ctx,
                             lt_run_shared **out) {
    *out = NULL;
    if (opts->method == LT_METHOD_FULL)
        return lt_error(LT_ERR_ARG,
                        "method: full fine-tuning trains the model in place, so runs cannot share "
                        "it (lt_run_shared is for lora, dora and qlora runs)");
    lt_run_opts o = *opts; /* a run that only loads: no output folder, nothing to resume */
    o.out[0] = o.resume[0] = o.adapter[0] = 0;
    lt_run *r = NULL;
    lt_status s = lt_run_new(&o, &r);
    if (s) return s;
    if (fn) lt_run_add_sink(r, fn, ctx);
    r->t_prepare = now_s();
    lt_run_shared *sh = lt_calloc(1, sizeof *sh);
    if (!sh) s = lt_error(LT_ERR_NOMEM, "run: out of memory");
    if (!s) s = load_model(r);
    if (!s) {
        sh->max_seq_len = tokenize_len(&r->o, r->model);
        s = tokenize(r, sh->max_seq_len);
    }
    if (s) {
        free(sh);
        lt_run_free(r);
        return s;
    }
    sh->o = o;
    sh->model = r->model;
    sh->tok = r->tok;
    sh->tpl = r->tpl;
    sh->data = r->own_data;
    r->model = NULL; /* moved to sh */
    r->tok = NULL;
    r->tpl = NULL;
    r->own_data = r->data = NULL;
    lt_run_free(r);
    *out = sh;
    return LT_OK;
}

void lt_run_shared_free(lt_run_shared *sh) {
    if (!sh) return;
    lt_data_free(sh->data);
    lt_chat_template_free(sh->tpl);
    lt_tokenizer_free(sh->tok);
    lt_model_free(sh->model);
    free(sh);
}

const lt_data *lt_run_shared_data(const lt_run_shared *sh) {
    return sh ? sh->data : NULL;
}

const lt_model_config *lt_run_shared_model_config(const lt_run_shared *sh) {
    return sh ? &sh->model->config : NULL;
}

/* What a run from sh must have in common with it: the model and tokenizer it loaded, and the
 * data options its examples were tokenized with (the length may differ: load_data). */
lt_status lt_run_shared_check_(const lt_run_shared *sh, const lt_run_opts *o) {
    const lt_run_opts *so = &sh->o;
    const char *differs = NULL;
    if (o->method == LT_METHOD_FULL)
        return lt_error(LT_ERR_ARG,
                        "method: full fine-tuning trains the model in place; a run from a shared "
                        "model must be lora, dora or qlora");
    if (strcmp(o->model, so->model))
        differs = "model";
    else if (strcmp(o->tokenizer, so->tokenizer))
        differs = "tokenizer";
    else if (strcmp(o->data, so->data))
        differs = "data";
    else if (o->data_format != so->data_format)
        differs = "data-format";
    else if (o->train_on_prompt != so->train_on_prompt)
        differs = "train-on-prompt";
    else if (!lt_path_is_dir(o->data) && o->valid_fraction != so->valid_fraction)
        differs = "valid-fraction";
    else if (!lt_path_is_dir(o->data) && o->seed != so->seed) /* the single-file split */
        differs = "seed";
    if (differs)
        return lt_error(LT_ERR_ARG,
                        "%s: the run's value differs from the shared object's (lt_run_shared_load "
                        "loaded the model, tokenizer and data with its own options)",
                        differs);
    return LT_OK;
}

lt_status lt_run_plan(const lt_run_shared *sh, const lt_run_opts *o, lt_train_plan_t *plan) {
    memset(plan, 0, sizeof *plan);
    if (!sh) return lt_error(LT_ERR_ARG, "run plan: shared object is NULL");
    if (o->batch_size <= 0)
        return lt_error(LT_ERR_ARG, "run plan: batch-size must be given (auto is sized by the "
                                    "run itself)");
    lt_run r; /* only what build_train_config reads */
    memset(&r, 0, sizeof r);
    r.o = *o;
    if (o->max_seq_len <= 0) { /* auto: the longest example, as far as the shared data holds */
        int longest = data_longest(sh->data);
        r.o.max_seq_len = longest < sh->max_seq_len ? longest : sh->max_seq_len;
        if (r.o.max_seq_len < 2) r.o.max_seq_len = 2;
    }
    r.model = sh->model;
    lt_status s = build_train_config(&r, NULL);
    if (s) return s;
    if (o->method == LT_METHOD_FULL) /* trains a loaded fp32 model in place */
        return lt_train_plan(&sh->model->config, &r.tc, plan);
    return lt_train_plan_model(sh->model, &r.tc, plan);
}

/* ---- evaluation ------------------------------------------------------------------------- */

/* Evaluation over the ranks: batch i is rank (i mod size)'s; every rank gets every batch's
 * {loss_sum, tokens} and adds them in batch order, as one process does (so the same bits).
 * Not cut short by a stop request (the ranks would part ways): the next step boundary stops. */
static lt_status dp_evaluate(lt_run *r, lt_batcher *b, int64_t nb, lt_eval_result *out) {
    const int N = r->comm.size;
    double *mine = lt_calloc((size_t)(nb ? nb : 1) * 2, sizeof(double));
    double *all = lt_malloc((size_t)(nb ? nb : 1) * 2 * (size_t)N * sizeof(double));
    lt_status s = LT_OK;
    if (!mine || !all) {
        s = lt_error(LT_ERR_NOMEM, "evaluate: out of memory for %lld batches", (long long)nb);
        goto done;
    }
    for (int64_t i = 0; i < nb; i++) {
        lt_batch bt;
        lt_loss_stats ls;
        if ((s = lt_batcher_next(b, &bt))) goto done;
        if (i % N != r->comm.rank) continue;
        if ((s = lt_trainer_eval(r->tr, &bt, &ls))) goto done;
        mine[2 * i] = ls.loss_sum;
        mine[2 * i + 1] = (double)ls.count;
    }
    if (r->comm.allgather(r->comm.ctx, mine, all, (size_t)(nb ? nb : 1) * 2 * sizeof(double))) {
        s = lt_error(LT_ERR_IO, "data parallel: rank %d of %d: exchanging the evaluation failed",
                     r->comm.rank, N);
        goto done;
    }
    for (int64_t i = 0; i < nb; i++) {
        const double *v = all + (size_t)(i % N) * (size_t)(nb ? nb : 1) * 2 + 2 * i;
        out->loss_sum += v[0];
        out->tokens += (int64_t)v[1];
        out->batches++;
    }
    out->loss = out->tokens ? out->loss_sum / (double)out->tokens : NAN;
    out->ppl = exp(out->loss);
done:
    free(mine);
    free(all);
    return s;
}

/* *aborted = 1 when a stop request cut it short (then *out is partial). */
static lt_status evaluate(lt_run *r, lt_split sp, int64_t max_batches, lt_eval_result *out,
                          int *aborted) {
    memset(out, 0, sizeof *out);
    if (aborted) *aborted = 0;
    if (sp < 0 || sp >= LT_SPLIT_COUNT) return lt_error(LT_ERR_ARG, "evaluate: bad split");
    if (lt_data_count(r->data, sp) == 0)
        return lt_error(LT_ERR_NOTFOUND, "%s: no %s split", r->o.data, lt_split_name(sp));
    lt_status s;
    if (!r->eval_b[sp]) {
        lt_batcher_opts bo = {.batch_size = r->o.batch_size,
                              .seq_len = r->o.max_seq_len,
                              .pack = r->o.pack,
                              .shuffle = 0,
                              .seed = r->o.seed};
        if ((s = lt_batcher_create(r->data, sp, &bo, &r->eval_b[sp]))) return s;
    }
    lt_batcher *b = r->eval_b[sp];
    if ((s = lt_batcher_set_state(b, 0, 0))) return s;
    int64_t nb = lt_batcher_epoch_batches(b);
    if (max_batches > 0 && max_batches < nb) nb = max_batches;
    if (r->comm.size) return dp_evaluate(r, b, nb, out);
    for (int64_t i = 0; i < nb; i++) {
        if (aborted && atomic_load(&r->stop)) {
            *aborted = 1;
            break;
        }
        lt_batch bt;
        lt_loss_stats ls;
        if ((s = lt_batcher_next(b, &bt))) return s;
        if ((s = lt_trainer_eval(r->tr, &bt, &ls))) return s;
        out->loss_sum += ls.loss_sum;
        out->tokens += ls.count;
        out->batches++;
    }
    out->loss = out->tokens ? out->loss_sum / (double)out->tokens : NAN;
    out->ppl = exp(out->loss);
    return LT_OK;
}

lt_status lt_run_evaluate(lt_run *r, lt_split s, int64_t max_batches, lt_eval_result *out) {
    if (!r || !r->prepared) {
        if (out) memset(out, 0, sizeof *out);
        return lt_error(LT_ERR_ARG, "run: not prepared (lt_run_prepare)");
    }
    int prev = threads_enter(r);
    lt_status st = evaluate(r, s, max_batches, out, NULL);
    threads_leave(r, prev);
    return st;
}

/* An evaluation's result: event, early-stop bookkeeping. reused: the step-0 result given by
 * lt_run_set_step0_eval (the event says so). */
static void record_eval(lt_run *r, double t0, const lt_eval_result *ev, int reused) {
    int improved = ev->loss < r->best_val;
    if (r->step > 0 || r->resumed_from >= 0) { /* the step-0 baseline is not a "failed" eval */
        if (improved)
            r->evals_no_improve = 0;
        else
            r->evals_no_improve++;
    }
    if (improved) r->best_val = ev->loss;
    r->last_eval_step = r->step;
    r->last_val_loss = ev->loss;
    json_t *e =
        json_pack("{s:s, s:I, s:f, s:f, s:I, s:I, s:f, s:b, s:f}", "event", "eval", "step",
                  (json_int_t)r->step, "val_loss", ev->loss, "val_ppl", ev->ppl, "val_tokens",
                  (json_int_t)ev->tokens, "val_batches", (json_int_t)ev->batches, "best_val_loss",
                  r->best_val, "improved", improved, "elapsed_s", now_s() - t0);
    if (e && reused) json_object_set_new(e, "reused", json_true());
    lt_run_emit_(r, e);
}

/* Validation inside the loop: event, early-stop bookkeeping. *aborted on a stop request. */
static lt_status run_eval(lt_run *r, double t0, int *aborted) {
    lt_eval_result ev;
    lt_status s = evaluate(r, LT_SPLIT_VALID, r->o.eval_batches, &ev, aborted);
    if (s || *aborted) return s;
    if (r->step == 0 && r->resumed_from < 0) {
        r->step0 = ev;
        r->step0_known = 1;
    }
    record_eval(r, t0, &ev, 0);
    return LT_OK;
}

lt_status lt_run_set_step0_eval(lt_run *r, const lt_eval_result *ev) {
    if (!r || !ev) return lt_error(LT_ERR_ARG, "lt_run_set_step0_eval: NULL argument");
    if (r->finished || r->step > 0)
        return lt_error(LT_ERR_ARG, "lt_run_set_step0_eval: the run has trained already");
    if (!isfinite(ev->loss) || ev->tokens <= 0)
        return lt_error(LT_ERR_ARG,
                        "lt_run_set_step0_eval: loss %g over %lld tokens: expected "
                        "a finite loss over at least one token",
                        ev->loss, (long long)ev->tokens);
    r->step0 = *ev;
    r->step0_given = 1;
    r->step0_known = 1;
    return LT_OK;
}

int lt_run_get_step0_eval(const lt_run *r, lt_eval_result *out) {
    if (!r || !r->step0_known) return 0;
    if (out) *out = r->step0;
    return 1;
}

/* ---- outputs ---------------------------------------------------------------------------- */

lt_status lt_run_save_outputs_(lt_run *r) {
    const char *out = r->o.out;
    char path[LT_RUN_PATH_MAX + 64];
    lt_status s;
    if (!lt_run_writer_(r)) return LT_OK; /* rank 0 exports */
    if (r->o.method == LT_METHOD_FULL) {
        if ((s = lt_trainer_sync_model(r->tr))) return s; /* device copies -> the model */
        if ((s = lt_model_save_hf(r->model, r->o.model, out, LT_DTYPE_F32))) return s;
        snprintf(r->saved[LT_SAVED_HF], sizeof r->saved[0], "%s", out);
        lt_run_emit_(r, json_pack("{s:s, s:s, s:s}", "event", "saved", "what", "hf", "path", out));
        return LT_OK;
    }
    /* the PEFT adapter, its mlx-lm and GGUF siblings: whole or marked (lt_output_begin), OUT
     * and OUT/mlx-lm each, until the last of them is written */
    lt_adapter *a = NULL;
    if ((s = lt_adapter_from_trainer(r->tr, r->o.model, &a))) return s;
    snprintf(path, sizeof path, "%s/mlx-lm", out);
    if ((s = lt_output_begin(out, "a training run's adapter exports"))) goto done;
    if ((s = lt_mkdir_p(path, 0755, NULL))) goto done;
    if ((s = lt_output_begin(path, "a training run's mlx-lm adapter"))) goto done;
    if ((s = lt_adapter_save_peft(a, out))) goto done;
    snprintf(r->saved[LT_SAVED_PEFT], sizeof r->saved[0], "%s", out);
    lt_run_emit_(r, json_pack("{s:s, s:s, s:s}", "event", "saved", "what", "peft", "path", out));
    snprintf(path, sizeof path, "%s/mlx-lm", out);
    if ((s = lt_adapter_save_mlx(a, &r->model->config, path))) goto done;
    snprintf(r->saved[LT_SAVED_MLX], sizeof r->saved[0], "%s", path);
    lt_run_emit_(r, json_pack("{s:s, s:s, s:s}", "event", "saved", "what", "mlx", "path", path));
    snprintf(path, sizeof path, "%s/adapter.gguf", out);
    if (a->method == LT_METHOD_LORA) {
        if ((s = lt_adapter_save_gguf(a, &r->model->config, LT_DTYPE_F32, path))) goto done;
        snprintf(r->saved[LT_SAVED_GGUF], sizeof r->saved[0], "%s", path);
        lt_run_emit_(r,
                     json_pack("{s:s, s:s, s:s}", "event", "saved", "what", "gguf", "path", path));
    } else { /* llama.cpp has no DoRA adapters: say so rather than leave the file missing */
        lt_run_emit_(r, json_pack("{s:s, s:s, s:s, s:s}", "event", "skipped", "what", "gguf",
                                  "path", path, "reason",
                                  "llama.cpp has no DoRA adapters; for llama.cpp, merge the "
                                  "adapter into the model with loratune fuse"));
    }
    snprintf(path, sizeof path, "%s/mlx-lm", out);
    if ((s = lt_output_end(path)) || (s = lt_output_end(out))) goto done;
done:
    lt_adapter_free(a);
    return s;
}

static lt_status write_run_config(lt_run *r) {
    if (!lt_run_writer_(r)) return LT_OK;
    lt_status s = lt_mkdir_p(r->o.out, 0755, NULL);
    if (s) return s;
    char *y = NULL;
    if ((s = lt_run_opts_to_yaml(&r->o, &y))) return s;
    char path[LT_RUN_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/run_config.yaml", r->o.out);
    s = lt_file_write_atomic(path, y, strlen(y));
    free(y);
    return s;
}

/* ---- the loop --------------------------------------------------------------------------- */

/* Copies the batcher's next micro-batch into slot k (the batcher's arrays live only until its
 * next call, and a step needs all of its micro-batches' token counts before the first
 * accumulate). */
static lt_status fetch(lt_run *r, int k) {
    lt_batch b;
    lt_status s = lt_batcher_next(r->train_b, &b);
    if (s) return s;
    size_t cell = (size_t)r->o.batch_size * (size_t)r->o.max_seq_len;
    if (b.B > r->o.batch_size || b.T > r->o.max_seq_len || b.B < 1 || b.T < 1)
        return lt_error(LT_ERR_INTERNAL, "batcher gave a %dx%d batch for %dx%d buffers", b.B, b.T,
                        r->o.batch_size, r->o.max_seq_len);
    int32_t *base = r->mb_buf + (size_t)k * 4 * cell;
    size_t n = (size_t)b.B * (size_t)b.T;
    lt_batch *d = &r->mbs[k];
    *d = b;
    memcpy(base, b.tokens, n * sizeof(int32_t));
    memcpy(base + cell, b.targets, n * sizeof(int32_t));
    d->tokens = base;
    d->targets = base + cell;
    d->pos = NULL;
    d->seq = NULL;
    if (b.pos) {
        memcpy(base + 2 * cell, b.pos, n * sizeof(int32_t));
        d->pos = base + 2 * cell;
    }
    if (b.seq) {
        memcpy(base + 3 * cell, b.seq, n * sizeof(int32_t));
        d->seq = base + 3 * cell;
    }
    return LT_OK;
}

static int is_fault_step(const lt_run *r, int64_t step) {
    for (int i = 0; i < r->n_fault_steps; i++)
        if (r->fault_steps[i] == step) return 1;
    return 0;
}

static lt_status train(lt_run *r, lt_run_outcome *outcome) {
    lt_run_outcome oc = LT_RUN_DONE;
    if (outcome) *outcome = oc;
    if (!r->o.out[0]) return lt_error(LT_ERR_ARG, "out: required (an output folder)");
    if (!r->train_b) return lt_error(LT_ERR_NOTFOUND, "%s: no training examples", r->o.data);
    lt_status s = write_run_config(r);
    if (s) return s;
    int has_valid = lt_data_count(r->data, LT_SPLIT_VALID) > 0;
    double t0 = now_s();
    int64_t n_trainable = 0;
    for (int i = 0; i < lt_trainer_n_tensors(r->tr); i++) {
        lt_train_tensor t;
        if (!lt_trainer_tensor(r->tr, i, &t)) n_trainable += t.numel;
    }
    json_t *start =
        json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:o}", "event", "start", "steps",
                  (json_int_t)r->total_steps, "warmup_steps", (json_int_t)r->warmup_steps,
                  "epoch_batches", (json_int_t)r->epoch_batches, "train_examples",
                  (json_int_t)lt_data_count(r->data, LT_SPLIT_TRAIN), "valid_examples",
                  (json_int_t)lt_data_count(r->data, LT_SPLIT_VALID), "trainable_params",
                  (json_int_t)n_trainable, "resumed_from", (json_int_t)r->resumed_from, "out",
                  r->o.out, "config", lt_run_opts_to_json(&r->o));
    if (start && r->budget_checked) {
        /* the plan's numbers: host RAM, or on a GPU its memory (memory_budget_device) */
        json_object_set_new(start, "memory_budget_device", json_boolean(r->cuda != NULL));
        json_object_set_new(start, "auto_batch_size", json_boolean(r->auto_batch));
        json_object_set_new(start, "auto_max_seq_len", json_boolean(r->auto_seq));
        json_object_set_new(start, "memory_budget_bytes", json_integer(r->memory_budget));
        json_object_set_new(start, "planned_peak_bytes", json_integer(r->planned_peak));
        json_object_set_new(start, "reserved_bytes", json_integer(r->reserved_bytes));
    }
    if (start && r->comm.size) {
        json_object_set_new(start, "ranks", json_integer(r->comm.size));
        /* what each rank allocated for the exchange (dp_create; the plan's "data-parallel
         * exchange" line) */
        json_object_set_new(start, "exchange_bytes", json_integer((json_int_t)r->dp_bytes));
        /* rows: the row-exact allgather; allreduce: the batched in-place sum (run.h) */
        json_object_set_new(start, "reduce", json_string(r->comm.allreduce ? "allreduce" : "rows"));
        /* ZeRO-1: AdamW's state of this rank's shard, what it allocated (the plan's optimizer) */
        json_object_set_new(start, "zero", json_integer(r->comm.zero));
        int64_t mem[LT_MEM_COUNT];
        lt_trainer_mem(r->tr, mem, NULL);
        json_object_set_new(start, "optimizer_bytes", json_integer(mem[LT_MEM_OPTIMIZER]));
    }
    if (start && r->resumed_from >= 0) {
        json_object_set_new(start, "resumed_checkpoint", json_string(r->last_ckpt));
        if (r->resume_skipped) json_object_set(start, "skipped_checkpoints", r->resume_skipped);
    }
    if (start && r->resumed_config) { /* options that differ from the checkpoint's */
        json_t *now = json_object_get(start, "config"), *changed = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(r->resumed_config, k, v) {
            json_t *w = json_object_get(now, k);
            if (!w || !json_equal(v, w)) json_array_append_new(changed, json_string(k));
        }
        json_object_set_new(start, "changed_options", changed);
    }
    lt_run_emit_(r, start);

    int aborted = 0;
    if (has_valid && r->resumed_from < 0 && r->step == 0) {
        if (r->step0_given)
            record_eval(r, t0, &r->step0, 1);
        else if ((s = run_eval(r, t0, &aborted)))
            return s;
    }
    double train_time = 0;
    int64_t steps_this_session = 0;
    while (!aborted && r->step < r->total_steps) {
        /* With ranks, only the exchanged flags decide: a signal that lands on one rank after
         * the exchange must not stop that rank alone (its partner would wait in the step's
         * collective for ever); it stops every rank at the next boundary instead. */
        int stop_now;
        if (r->comm.size) { /* all ranks stop at the same step boundary */
            if ((s = dp_stop_any(r, &stop_now))) return s;
            if (stop_now) atomic_store(&r->stop, 1);
        } else {
            stop_now = atomic_load(&r->stop);
        }
        if (stop_now) {
            aborted = 1;
            break;
        }
        double ts = now_s();
        int64_t be, bi, tstep0;
        uint64_t micro0;
        lt_batcher_get_state(r->train_b, &be, &bi);
        lt_trainer_get_counters(r->tr, &tstep0, &micro0);
        int64_t count = 0;
        for (int k = 0; k < r->o.grad_accum; k++) {
            if ((s = fetch(r, k))) return s;
            count += lt_batch_count(&r->mbs[k]);
        }
        double loss_sum = 0;
        int64_t counted = 0;
        if (count > 0 && r->comm.allreduce) {
            if ((s = dp_reduce(r, tstep0, micro0, count, &loss_sum, &counted))) return s;
        } else if (count > 0 && r->comm.size) {
            if ((s = dp_accumulate(r, count, tstep0, micro0, &loss_sum, &counted))) return s;
        } else if (count > 0) {
            for (int k = 0; k < r->o.grad_accum; k++) {
                if (atomic_load(&r->stop)) { /* abandon the step: back to its start */
                    lt_trainer_zero_grad(r->tr);
                    lt_trainer_set_counters(r->tr, tstep0, micro0);
                    if ((s = lt_batcher_set_state(r->train_b, be, bi))) return s;
                    aborted = 1;
                    break;
                }
                lt_loss_stats ls;
                if ((s = lt_trainer_accumulate(r->tr, &r->mbs[k], 1.0f / (float)count, &ls)))
                    return s;
                loss_sum += ls.loss_sum;
                counted += ls.count;
            }
            if (aborted) break;
        }
        int64_t this_step = r->step + 1;
        double loss = counted ? loss_sum / (double)counted : NAN;
        if (count > 0 && is_fault_step(r, this_step)) {
            lt_train_tensor t;
            const float nan = NAN;
            if (!lt_trainer_tensor(r->tr, 0, &t) && t.numel > 0)
                lt_trainer_write(r->tr, 0, LT_TENSOR_GRAD, 0, &nan, 1);
        }
        /* ZeRO-1: each rank holds its shard's sums only; the squares' sum of all of them
         * (exchanged whenever there was a reduce-scatter: count is every rank's) is finite
         * iff every gradient is */
        double zss = 0;
        if (count > 0 && r->comm.zero && (s = zero_sumsq(r, &zss))) return s;
        const char *bad = count == 0             ? "no_loss_tokens"
                          : !isfinite(loss)      ? "nonfinite_loss"
                          : r->comm.zero ? (isfinite(zss) ? NULL : "nonfinite_grad")
                          : !lt_trainer_grads_finite(r->tr) ? "nonfinite_grad"
                                                 : NULL;
        double lr =
            r->o.lr * lt_lr_lambda(r->o.lr_schedule, r->step, r->warmup_steps, r->total_steps);
        if (bad) {
            lt_trainer_zero_grad(r->tr);
            r->step = this_step;
            if (count > 0) r->consecutive_nonfinite++;
            json_t *ev = json_pack("{s:s, s:I, s:s, s:i, s:f}", "event", "skip", "step",
                                   (json_int_t)this_step, "reason", bad, "consecutive",
                                   r->consecutive_nonfinite, "lr", lr);
            json_object_set_new(ev, "loss", isfinite(loss) ? json_real(loss) : json_null());
            lt_run_emit_(r, ev);
            if (r->consecutive_nonfinite >= r->o.max_nonfinite) {
                oc = LT_RUN_NONFINITE;
                if (outcome) *outcome = oc;
                char last[sizeof r->last_ckpt + 64];
                if (r->last_ckpt_step >= 0)
                    snprintf(last, sizeof last, "%s (step %lld)", r->last_ckpt,
                             (long long)r->last_ckpt_step);
                else
                    snprintf(last, sizeof last, "none saved yet");
                lt_error(LT_ERR_ARG,
                         "stopped: %d consecutive steps (%lld-%lld) had NaN/inf loss or "
                         "gradients and were skipped; the weights were not updated by them. "
                         "Last good checkpoint: %s. Try a lower --lr or --grad-clip.",
                         r->consecutive_nonfinite,
                         (long long)(this_step - r->consecutive_nonfinite + 1),
                         (long long)this_step, last);
                lt_run_emit_(r, json_pack("{s:s, s:I, s:s, s:f, s:s}", "event", "done", "step",
                                          (json_int_t)r->step, "outcome", "nonfinite", "elapsed_s",
                                          now_s() - t0, "message", lt_errmsg()));
                return LT_OK;
            }
        } else {
            float gn = 0;
            if (r->comm.zero) {
                gn = (float)sqrt(zss);
                if ((s = zero_step(r, (float)lr, sqrt(zss)))) return s;
            } else if ((s = lt_trainer_step(r->tr, (float)lr, &gn))) {
                return s;
            }
            r->consecutive_nonfinite = 0;
            r->step = this_step;
            r->tokens_total += counted;
            double dt = now_s() - ts;
            train_time += dt;
            r->last_train_loss = loss;
            r->session_train_s = train_time;
            r->session_tokens += counted;
            steps_this_session++;
            double per = train_time / (double)steps_this_session;
            lt_run_emit_(
                r, json_pack("{s:s, s:I, s:f, s:f, s:f, s:f, s:I, s:f, s:I, s:f, s:f}", "event",
                             "step", "step", (json_int_t)r->step, "epoch",
                             (double)be +
                                 (double)bi / (double)(r->epoch_batches ? r->epoch_batches : 1),
                             "loss", loss, "lr", lr, "grad_norm", (double)gn, "tokens",
                             (json_int_t)counted, "tokens_per_sec", dt > 0 ? counted / dt : 0.0,
                             "peak_rss_bytes", (json_int_t)peak_rss_bytes(), "elapsed_s",
                             now_s() - t0, "eta_s", per * (double)(r->total_steps - r->step)));
        }
        if (has_valid && r->o.eval_every > 0 && r->step % r->o.eval_every == 0 &&
            r->step < r->total_steps) {
            if ((s = run_eval(r, t0, &aborted))) return s;
            if (aborted) break;
            if (r->o.early_stop > 0 && r->evals_no_improve >= r->o.early_stop) {
                oc = LT_RUN_EARLY_STOP;
                lt_run_emit_(r, json_pack("{s:s, s:I, s:f, s:i}", "event", "early_stop", "step",
                                          (json_int_t)r->step, "best_val_loss", r->best_val,
                                          "evals_without_improvement", r->evals_no_improve));
                break;
            }
        }
        if (r->o.save_every > 0 && r->step % r->o.save_every == 0 && r->step < r->total_steps) {
            if ((s = lt_run_save_checkpoint_(r))) return s;
        }
    }
    /* the final evaluation; a stop request during it stops the run like one during training
     * (checkpoint, `interrupted`, no exports: a resume evaluates and exports), rather than
     * skipping the evaluation and exporting as if it had run (the kill soak's finding) */
    if (!aborted && has_valid && r->last_eval_step != r->step) {
        if ((s = run_eval(r, t0, &aborted))) return s;
    }
    if (aborted) {
        oc = LT_RUN_INTERRUPTED;
        if (r->last_ckpt_step != r->step && (s = lt_run_save_checkpoint_(r))) return s;
        lt_run_emit_(r, json_pack("{s:s, s:I, s:s}", "event", "interrupted", "step",
                                  (json_int_t)r->step, "checkpoint", r->last_ckpt));
    } else {
        if (r->last_ckpt_step != r->step && (s = lt_run_save_checkpoint_(r))) return s;
        if ((s = lt_run_save_outputs_(r))) return s;
    }
    json_t *done = json_pack("{s:s, s:I, s:s, s:f}", "event", "done", "step", (json_int_t)r->step,
                             "outcome", lt_run_outcome_name(oc), "elapsed_s", now_s() - t0);
    if (done && r->last_eval_step == r->step && isfinite(r->last_val_loss))
        json_object_set_new(done, "final_val_loss", json_real(r->last_val_loss));
    lt_run_emit_(r, done);
    if (outcome) *outcome = oc;
    return LT_OK;
}

lt_status lt_run_train(lt_run *r, lt_run_outcome *outcome) {
    if (outcome) *outcome = LT_RUN_DONE;
    if (!r || !r->prepared) return lt_error(LT_ERR_ARG, "run: not prepared (lt_run_prepare)");
    double t0 = now_s();
    int prev = threads_enter(r);
    lt_run_outcome oc = LT_RUN_DONE;
    lt_status s = train(r, &oc);
    threads_leave(r, prev);
    r->finished = 1;
    r->train_status = s;
    r->outcome = oc;
    r->train_elapsed_s = now_s() - t0;
    if (s || oc == LT_RUN_NONFINITE) /* the message lt_errmsg() also holds now */
        snprintf(r->result_msg, sizeof r->result_msg, "%s", lt_errmsg());
    else if (oc == LT_RUN_EARLY_STOP)
        snprintf(r->result_msg, sizeof r->result_msg,
                 "early stop at step %lld: %d evaluations without improvement (best val_loss %g)",
                 (long long)r->step, r->evals_no_improve, r->best_val);
    else if (oc == LT_RUN_INTERRUPTED)
        snprintf(r->result_msg, sizeof r->result_msg,
                 "stopped on request after step %lld (checkpoint %s)", (long long)r->step,
                 r->last_ckpt);
    else
        r->result_msg[0] = 0;
    if (outcome) *outcome = oc;
    return s;
}

void lt_run_get_result(const lt_run *r, lt_run_result *out) {
    memset(out, 0, sizeof *out);
    if (!r) return;
    out->finished = r->finished;
    out->status = r->train_status;
    out->outcome = r->outcome;
    out->message = r->result_msg;
    out->steps = r->step;
    out->total_steps = r->total_steps;
    out->tokens = r->tokens_total;
    out->train_loss = r->last_train_loss;
    out->last_val_loss = r->last_eval_step >= 0 ? r->last_val_loss : NAN;
    out->last_val_step = r->last_eval_step;
    out->best_val_loss = isfinite(r->best_val) ? r->best_val : NAN;
    out->tokens_per_sec =
        r->session_train_s > 0 ? (double)r->session_tokens / r->session_train_s : 0.0;
    out->train_s = r->session_train_s;
    out->elapsed_s = r->train_elapsed_s;
    out->peak_rss_bytes = peak_rss_bytes();
    out->out = r->o.out;
    out->checkpoint = r->last_ckpt;
    out->peft = r->saved[LT_SAVED_PEFT];
    out->mlx = r->saved[LT_SAVED_MLX];
    out->gguf = r->saved[LT_SAVED_GGUF];
    out->hf = r->saved[LT_SAVED_HF];
}
