/* test_trainer_golden.c - the trainer against transformers + PEFT goldens.
 *
 * Every case in tests/data/train/<case>/manifest.json (written by tools/gen_train_goldens.py,
 * format in docs/TRAINING.md) is run twice, with gradient checkpointing off and on (a bf16
 * LoRA / DoRA base then has its fp32 model weights released, the default; a third run keeps
 * them, release_base_fp32 = 0):
 *   - micro-batch 0 alone: loss, logits [B][T][V], every trainable gradient;
 *   - `steps` optimizer steps of `grad_accum` micro-batches each, the loss normalised by the
 *     step's total counted tokens: per-step loss, pre-clip grad norm, and every tensor in
 *     `after`.
 * Error measure per tensor: max |ours - ref| / max |ref| (relative to the tensor's max-abs).
 * Tolerances (fp32 and bf16 alike: the bf16 case rounds the base weights, compute is fp32 on
 * both sides): loss 1e-5 relative, logits 1e-5, grads 2e-5 (why: at TOL_GRAD), grad norm 1e-5,
 * after-step params
 * 1e-5 of max-abs plus 0.1 lr (why: at TOL_AFTER_LR).
 * bf16 compute (every case but DoRA): two more passes with compute_dtype BF16, checked against
 * the same goldens at tolerances set by PyTorch's bf16 autocast (TOL_BF16_X, TOL_BF16_SCALAR).
 * The worst error of each kind is printed per case. */
#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/model.h"
#include "loratune/ops.h"
#include "loratune/train.h"
#include "lt_test.h"
#include "lt_trainer_test.h"

#define TOL_LOSS 1e-5
#define TOL_LOGITS 1e-5
/* Gradients: the goldens themselves carry up to 5.5e-6 fp32 error against fp64 (manifest
 * extra.fp64_rel_err, stories q/k grads); ours measured up to 7.7e-6 against them (single
 * thread). 2e-5 leaves room for another BLAS kernel's rounding on another CPU. */
#define TOL_GRAD 2e-5
#define TOL_AFTER 1e-5
#define TOL_NORM 1e-5
/* After-step params: |ours - ref| <= TOL_AFTER * max|ref| + TOL_AFTER_LR * lr. The lr term is
 * measured, not slack: AdamW divides each element's moment by its own sqrt(v), so elements
 * whose gradient is ~1e-5 of the tensor's max (e.g. lm_head rows of unseen tokens) turn the
 * ~1e-6-of-max fp32 gradient noise into a few % of one lr-sized update (worst seen: 4.7e-5 =
 * 0.047 lr on qwen2_full_l1_noemb lm_head). */
#define TOL_AFTER_LR 0.1
/* bf16 compute (compute_dtype BF16) against the same fp32 goldens, next to PyTorch's bf16
 * autocast measured the same way (bf16_autocast.json): logits, gradients and after-step
 * tensors within TOL_BF16_X of autocast's worst error of that kind (measured: 0.3-1.17x; ours
 * keeps the products' outputs, attention and the loss in fp32), the loss, step losses and
 * grad norm within one bf16 step (measured up to 2.2e-3; autocast's up to 4.4e-3). */
#define TOL_BF16_X 1.25
#define TOL_BF16_SCALAR 0.00390625

static float *read_f32(const char *dir, const char *file, int64_t n) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    char *buf = NULL;
    size_t len = 0;
    if (lt_file_read_all(path, &buf, &len) != LT_OK) return NULL;
    if ((int64_t)len != n * 4) {
        fprintf(stderr, "%s: %zu bytes, expected %lld\n", path, len, (long long)n * 4);
        free(buf);
        return NULL;
    }
    return (float *)buf;
}

static int64_t shape_numel(json_t *shape) {
    int64_t n = 1;
    for (size_t i = 0; i < json_array_size(shape); i++)
        n *= json_integer_value(json_array_get(shape, i));
    return n;
}

/* max |a-b| / max |b|; *maxabs (may be NULL) gets max |b| */
static double rel_err2(const float *a, const float *b, int64_t n, double *maxabs) {
    double md = 0, mb = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md || d != d) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    if (maxabs) *maxabs = mb;
    return md / (mb > 0 ? mb : 1.0);
}
static double rel_err(const float *a, const float *b, int64_t n) {
    return rel_err2(a, b, n, NULL);
}

typedef struct {
    int B, T;
    int32_t *tok, *tgt, *pos, *seq;
} mb_t;

static int32_t *ints(json_t *a) {
    size_t n = json_array_size(a);
    int32_t *v = malloc(sizeof(int32_t) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return v;
}

static void run_case(const char *dir, const char *cname) {
    char mpath[2048];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", dir);
    json_error_t jerr;
    json_t *m = json_load_file(mpath, JSON_REJECT_DUPLICATES, &jerr);
    CHECK(m != NULL, "%s: %s", mpath, jerr.text);
    if (!m) return;
    const char *model = json_string_value(json_object_get(m, "model"));
    const char *method = json_string_value(json_object_get(m, "method"));
    const char *bdt = json_string_value(json_object_get(m, "base_dtype"));
    char model_path[1024];
    if (!strncmp(model, "fixture:", 8))
        snprintf(model_path, sizeof model_path, "%s", lt_fixture(model + 8));
    else
        snprintf(model_path, sizeof model_path, "%s", lt_srcpath(model + 5));

    lt_train_config c;
    lt_train_config_default(&c);
    CHECK_OK(lt_train_method_parse(method, &c.method));
    c.base_dtype = !strcmp(bdt, "bf16") ? LT_DTYPE_BF16 : LT_DTYPE_F32;
    json_t *lo = json_object_get(m, "lora"), *fu = json_object_get(m, "full");
    json_t *layers = NULL;
    if (lo) {
        c.lora.r = (int)json_integer_value(json_object_get(lo, "r"));
        c.lora.alpha = (float)json_number_value(json_object_get(lo, "alpha"));
        c.lora.rslora = json_is_true(json_object_get(lo, "rslora"));
        c.lora.dropout = (float)json_number_value(json_object_get(lo, "dropout"));
        c.lora.targets = 0;
        json_t *ts = json_object_get(lo, "targets");
        for (size_t i = 0; i < json_array_size(ts); i++) {
            unsigned bit = 0;
            CHECK_OK(lt_target_mask_parse(json_string_value(json_array_get(ts, i)), &bit));
            c.lora.targets |= bit;
        }
        layers = json_object_get(lo, "layers");
    } else {
        c.full.freeze_embeddings = json_is_true(json_object_get(fu, "freeze_embeddings"));
        layers = json_object_get(fu, "layers");
    }
    int lb = (int)json_integer_value(json_array_get(layers, 0));
    int le = (int)json_integer_value(json_array_get(layers, json_array_size(layers) - 1)) + 1;
    CHECK((size_t)(le - lb) == json_array_size(layers), "%s: layers must be contiguous", cname);
    if (lo) {
        c.lora.layer_begin = lb;
        c.lora.layer_end = le;
    } else {
        c.full.layer_begin = lb;
        c.full.layer_end = le;
    }
    json_t *op = json_object_get(m, "optim");
    c.lr = (float)json_number_value(json_object_get(op, "lr"));
    c.beta1 = (float)json_number_value(json_array_get(json_object_get(op, "betas"), 0));
    c.beta2 = (float)json_number_value(json_array_get(json_object_get(op, "betas"), 1));
    c.eps = (float)json_number_value(json_object_get(op, "eps"));
    c.weight_decay = (float)json_number_value(json_object_get(op, "weight_decay"));
    c.grad_clip = (float)json_number_value(json_object_get(op, "grad_clip"));
    c.grad_accum = (int)json_integer_value(json_object_get(op, "grad_accum"));
    int steps = (int)json_integer_value(json_object_get(op, "steps"));

    json_t *mbs = json_object_get(m, "micro_batches");
    int nmb = (int)json_array_size(mbs);
    mb_t *mb = calloc((size_t)nmb, sizeof(mb_t));
    c.batch_size = c.seq_len = 1;
    for (int i = 0; i < nmb; i++) {
        json_t *b = json_array_get(mbs, (size_t)i);
        mb[i].B = (int)json_integer_value(json_object_get(b, "B"));
        mb[i].T = (int)json_integer_value(json_object_get(b, "T"));
        mb[i].tok = ints(json_object_get(b, "tokens"));
        mb[i].tgt = ints(json_object_get(b, "targets"));
        mb[i].pos = ints(json_object_get(b, "pos"));
        mb[i].seq = ints(json_object_get(b, "seq"));
        if (mb[i].B > c.batch_size) c.batch_size = mb[i].B;
        if (mb[i].T > c.seq_len) c.seq_len = mb[i].T;
    }
    CHECK(nmb == steps * c.grad_accum, "%s: %d micro-batches", cname, nmb);
    c.keep_logits = 1;
    c.ce_chunk_rows = 7; /* several chunks, a ragged last one: exercises the chunked head */

    json_t *names = json_object_get(m, "names"), *init = json_object_get(m, "init");
    json_t *first = json_object_get(m, "first"), *after = json_object_get(m, "after");
    json_t *extra = json_object_get(m, "extra");
    json_t *gnorms = json_object_get(extra, "grad_norms_preclip");
    json_t *losses = json_object_get(m, "losses");

    /* a 16-bit base runs a third pass with the model's fp32 weights kept (passes 0, 1 release
     * them for LoRA / DoRA: the default) */
    int npass = c.base_dtype != LT_DTYPE_F32 ? 3 : 2, nfp32 = npass;
    /* bf16 compute (not DoRA): two more passes (checkpointing off, on), held to PyTorch's bf16
     * autocast -- bf16_autocast.json, tools/gen_bf16_autocast_refs.py: each error of ours is at
     * most autocast's own against the fp32 run */
    json_t *ac = NULL;
    if (c.method != LT_METHOD_DORA) {
        char apath[2048];
        snprintf(apath, sizeof apath, "%s/bf16_autocast.json", dir);
        ac = json_load_file(apath, 0, &jerr);
        CHECK(ac != NULL, "%s: %s (every non-DoRA case has one)", apath, jerr.text);
        if (ac) npass += 2;
    }
    const lt_dtype base_in = c.base_dtype;
    for (int pass = 0; pass < npass; pass++) {
        int ck = pass & 1, bf16 = pass >= nfp32;
        c.grad_checkpoint = ck;
        c.release_base_fp32 = pass < 2 || bf16;
        c.compute_dtype = bf16 ? LT_DTYPE_BF16 : LT_DTYPE_F32;
        c.base_dtype = base_in;
        lt_model *mdl = NULL;
        CHECK_OK(lt_model_load(model_path, NULL, &mdl));
        if (!mdl) break;
        lt_trainer *tr = NULL;
        CHECK_OK(lt_trainer_create(mdl, &c, &tr));
        if (!tr) {
            lt_model_free(mdl);
            break;
        }
        int rel = lt_train_releases_base(&c);
        CHECK(mdl->weights_released == rel && (mdl->params == NULL) == rel,
              "%s: model weights released %d, expected %d", cname, mdl->weights_released, rel);
        CHECK(lt_trainer_n_tensors(tr) == (int)json_array_size(names),
              "%s: %d trainable tensors, golden has %zu", cname, lt_trainer_n_tensors(tr),
              json_array_size(names));
        const char *key;
        json_t *val;
        json_object_foreach(init, key, val) {
            int64_t n = shape_numel(json_object_get(val, "shape"));
            float *x = read_f32(dir, json_string_value(json_object_get(val, "file")), n);
            CHECK(x != NULL, "%s: init %s", cname, key);
            if (x) CHECK_OK(lt_trainer_set(tr, key, x, n));
            free(x);
        }
        /* ---- micro-batch 0 ---- */
        double w_loss = 0, w_logit = 0, w_grad = 0, w_after = 0, w_norm = 0, w_sloss = 0;
        const char *w_grad_name = "", *w_after_name = "";
        lt_batch b0 = {mb[0].B, mb[0].T, mb[0].tok, mb[0].tgt, mb[0].pos, mb[0].seq};
        lt_loss_stats ls;
        CHECK_OK(lt_trainer_accumulate(tr, &b0, 0.0f, &ls));
        double ref_loss = json_number_value(json_object_get(first, "loss"));
        w_loss = fabs(ls.loss - ref_loss) / fabs(ref_loss);
        CHECK(ls.count == json_integer_value(json_object_get(first, "count")), "%s: count %lld",
              cname, (long long)ls.count);
        json_t *lg = json_object_get(first, "logits");
        int64_t nl = shape_numel(json_object_get(lg, "shape"));
        float *rl = read_f32(dir, json_string_value(json_object_get(lg, "file")), nl);
        if (rl && lt_trainer_logits(tr)) w_logit = rel_err(lt_trainer_logits(tr), rl, nl);
        free(rl);
        json_object_foreach(json_object_get(first, "grads"), key, val) {
            lt_train_tensor t;
            lt_status st = lt_trainer_find(tr, key, &t);
            CHECK(st == LT_OK, "%s: %s", cname, lt_errmsg());
            if (st) continue;
            int64_t n = shape_numel(json_object_get(val, "shape"));
            CHECK(n == t.numel, "%s: %s numel %lld vs %lld", cname, key, (long long)t.numel,
                  (long long)n);
            float *g = read_f32(dir, json_string_value(json_object_get(val, "file")), n);
            if (g && n == t.numel) {
                float *tg = lt_tt_get(tr, t.index, LT_TENSOR_GRAD);
                double e = rel_err(tg, g, n);
                free(tg);
                if (e > w_grad || e != e) {
                    w_grad = e;
                    w_grad_name = key;
                }
            }
            free(g);
        }
        lt_trainer_zero_grad(tr);
        /* ---- optimizer steps ---- */
        for (int s = 0; s < steps; s++) {
            int64_t total = 0;
            for (int a = 0; a < c.grad_accum; a++) {
                mb_t *q = &mb[s * c.grad_accum + a];
                lt_batch bb = {q->B, q->T, q->tok, q->tgt, q->pos, q->seq};
                total += lt_batch_count(&bb);
            }
            double sum = 0;
            for (int a = 0; a < c.grad_accum; a++) {
                mb_t *q = &mb[s * c.grad_accum + a];
                lt_batch bb = {q->B, q->T, q->tok, q->tgt, q->pos, q->seq};
                CHECK_OK(lt_trainer_accumulate(tr, &bb, 1.0f / (float)total, &ls));
                sum += ls.loss_sum;
            }
            double rloss = json_number_value(json_array_get(losses, (size_t)s));
            double e = fabs(sum / (double)total - rloss) / fabs(rloss);
            if (e > w_sloss) w_sloss = e;
            float gn = 0;
            CHECK_OK(lt_trainer_step(tr, -1.0f, &gn));
            double rn = json_number_value(json_array_get(gnorms, (size_t)s));
            e = fabs(gn - rn) / fabs(rn);
            if (e > w_norm) w_norm = e;
        }
        json_object_foreach(after, key, val) {
            lt_train_tensor t;
            lt_status st = lt_trainer_find(tr, key, &t);
            CHECK(st == LT_OK, "%s: %s", cname, lt_errmsg());
            if (st) continue;
            int64_t n = shape_numel(json_object_get(val, "shape"));
            float *g = read_f32(dir, json_string_value(json_object_get(val, "file")), n);
            if (g && n == t.numel) {
                /* measured in units of the allowed error (see TOL_AFTER_LR) */
                float *tv = lt_tt_get(tr, t.index, LT_TENSOR_VALUE);
                double mb = 0, e = rel_err2(tv, g, n, &mb);
                free(tv);
                if (!bf16) e = e * mb / (TOL_AFTER * mb + TOL_AFTER_LR * c.lr);
                if (e > w_after || e != e) {
                    w_after = e;
                    w_after_name = key;
                }
            }
            free(g);
        }
        if (bf16) {
            /* autocast's worst of each kind (grads / after: over the tensors) */
            double a_grad = 0, a_after = 0;
            json_object_foreach(json_object_get(ac, "grads"), key, val) {
                if (json_number_value(val) > a_grad) a_grad = json_number_value(val);
            }
            json_object_foreach(json_object_get(ac, "after"), key, val) {
                if (json_number_value(val) > a_after) a_after = json_number_value(val);
            }
            const double a_loss = json_number_value(json_object_get(ac, "loss0")),
                         a_logit = json_number_value(json_object_get(ac, "logits")),
                         a_sloss = json_number_value(json_object_get(ac, "losses")),
                         a_norm = json_number_value(json_object_get(ac, "grad_norms_preclip"));
            printf("%-26s ckpt=%d bf16  loss %.2e (autocast %.2e)  logits %.2e (%.2e)  grads "
                   "%.2e (%.2e, %s)  step-loss %.2e (%.2e)  gnorm %.2e (%.2e)  after %.2e (%.2e, "
                   "%s)\n",
                   cname, ck, w_loss, a_loss, w_logit, a_logit, w_grad, a_grad, w_grad_name,
                   w_sloss, a_sloss, w_norm, a_norm, w_after, a_after, w_after_name);
            /* tensors: within 1.25x autocast's worst; scalars (sums of thousands of rounded
             * terms, where one run may be lucky): within one bf16 step, 2^-8 */
            CHECK(w_logit <= TOL_BF16_X * a_logit && w_grad <= TOL_BF16_X * a_grad &&
                      w_after <= TOL_BF16_X * a_after,
                  "%s ckpt=%d bf16: a tensor's error over %.2fx PyTorch bf16 autocast's (line "
                  "above)", cname, ck, TOL_BF16_X);
            CHECK(w_loss <= TOL_BF16_SCALAR && w_sloss <= TOL_BF16_SCALAR &&
                      w_norm <= TOL_BF16_SCALAR,
                  "%s ckpt=%d bf16: loss / grad norm error over %.2g (line above)", cname, ck,
                  TOL_BF16_SCALAR);
            lt_trainer_free(tr);
            lt_model_free(mdl);
            continue;
        }
        printf("%-26s ckpt=%d%s  loss %.2e  logits %.2e  grads %.2e (%s)  step-loss %.2e  "
               "gnorm %.2e  after %.2f of allowed (%s)\n",
               cname, ck, rel ? " released" : "", w_loss, w_logit, w_grad, w_grad_name, w_sloss,
               w_norm, w_after, w_after_name);
        CHECK(w_loss <= TOL_LOSS, "%s ckpt=%d: loss rel err %.3g", cname, ck, w_loss);
        CHECK(w_logit <= TOL_LOGITS, "%s ckpt=%d: logits rel err %.3g", cname, ck, w_logit);
        CHECK(w_grad <= TOL_GRAD, "%s ckpt=%d: grad rel err %.3g (%s)", cname, ck, w_grad,
              w_grad_name);
        CHECK(w_sloss <= TOL_LOSS, "%s ckpt=%d: step loss rel err %.3g", cname, ck, w_sloss);
        CHECK(w_norm <= TOL_NORM, "%s ckpt=%d: grad norm rel err %.3g", cname, ck, w_norm);
        CHECK(w_after <= 1.0, "%s ckpt=%d: after-step err %.3g of the allowed (%s)", cname, ck,
              w_after, w_after_name);
        lt_trainer_free(tr);
        lt_model_free(mdl);
    }
    for (int i = 0; i < nmb; i++) {
        free(mb[i].tok);
        free(mb[i].tgt);
        free(mb[i].pos);
        free(mb[i].seq);
    }
    free(mb);
    json_decref(ac);
    json_decref(m);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    lt_set_num_threads(1); /* tiny matrices: threads only add contention on CI */
    char root[1024];       /* lt_srcpath's buffers rotate: keep a copy */
    snprintf(root, sizeof root, "%s", lt_srcpath("tests/data/train"));
    char *cases[64];
    int nc = 0;
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot open %s", root);
    if (!d) LT_TEST_END();
    struct dirent *e;
    while ((e = readdir(d)) && nc < 64) {
        char p[1536];
        snprintf(p, sizeof p, "%s/%s/manifest.json", root, e->d_name);
        if (e->d_name[0] != '.' && lt_path_exists(p)) cases[nc++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(cases, (size_t)nc, sizeof(char *), cmp_str);
    CHECK(nc >= 9, "expected at least 9 golden cases, found %d", nc);
    for (int i = 0; i < nc; i++) {
        if (argc > 1 && !strstr(cases[i], argv[1])) {
            free(cases[i]);
            continue;
        }
        char dir[1536];
        snprintf(dir, sizeof dir, "%s/%s", root, cases[i]);
        run_case(dir, cases[i]);
        free(cases[i]);
    }
    LT_TEST_END();
}
