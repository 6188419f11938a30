/* plan.c - POST /api/plan: the memory a train job would plan before it is queued (the web
 * interface's estimate next to its Start button). The options are read and checked as a job's
 * are (lt_run_opts_set / lt_run_opts_validate), turned into the trainer configuration the run
 * would build (lt_run_opts_train_config), and planned over the model loaded lazily as the run
 * loads it (lt_train_plan_model; a full fine-tune from its config, lt_train_plan: the same
 * numbers as `loratune plan`). Automatic sizes are
 * planned as the run fits them (lt_train_plan_fit_model: the largest batch <= 64 and length <=
 * the model's context whose peak fits the budget); the run also caps the length at the
 * dataset's longest example, which this estimate does not read, and says so in "notes". */
#include <stdio.h>
#include <string.h>

#include "loratune/hwinfo.h"
#include "loratune/model.h"
#include "loratune/train.h"
#include "serve_internal.h"
#include "web.h"

/* The plan of a run with options o (checked), as the run fits it: the model loaded lazily; a
 * full fine-tune planned from its config; automatic batch / length fitted within
 * o->memory_budget or 80% of the RAM available now (*budget: that budget, 0 when no size was
 * automatic). Errors start "model: " (it would not load) or "plan: " (the options). */
lt_status lt_plan_run_opts(const lt_run_opts *o, lt_train_config *tc, lt_train_plan_t *p,
                           int64_t *budget, const char **why) {
    /* lazily, as the run loads it for adapters (a full fine-tune loads it whole as fp32: its
     * plan needs only the config, as `loratune plan`'s, and a request never loads a model
     * whole) */
    lt_model_load_opts lo = {.lazy = 1};
    const int full = o->method == LT_METHOD_FULL;
    lt_model *m = NULL;
    *budget = 0;
    lt_status st = lt_model_load(o->model, &lo, &m);
    if (st) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", lt_errmsg());
        return lt_error(st, "model: %s", msg);
    }
    int auto_b = o->batch_size <= 0, auto_t = o->max_seq_len <= 0;
    st = lt_run_opts_train_config(o, &m->config, tc, why);
    if (!st && (auto_b || auto_t)) {
        *budget = o->memory_budget;
        lt_hwinfo hw;
        if (*budget <= 0 && !lt_hwinfo_detect(&hw) && hw.ram_available_bytes > 0)
            *budget = (int64_t)(0.8 * (double)hw.ram_available_bytes);
        if (*budget <= 0) {
            st = lt_error(LT_ERR_UNSUPPORTED, "memory-budget: cannot read the available RAM");
        } else {
            if (auto_b) tc->batch_size = 0;
            if (auto_t) tc->seq_len = 0;
            int B = 0, T = 0, max_seq = m->config.max_seq_len > 16 ? m->config.max_seq_len : 16;
            st = full ? lt_train_plan_fit(&m->config, tc, *budget, 64, max_seq, &B, &T, p)
                      : lt_train_plan_fit_model(m, tc, *budget, 64, max_seq, &B, &T, p);
            tc->batch_size = B;
            tc->seq_len = T;
        }
    } else if (!st) {
        st = full ? lt_train_plan(&m->config, tc, p) : lt_train_plan_model(m, tc, p);
    }
    lt_model_free(m);
    if (st) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", lt_errmsg());
        return lt_error(st, "plan: %s", msg);
    }
    return LT_OK;
}

enum MHD_Result lt_plan_estimate(lt_server *s, struct MHD_Connection *c, const json_t *body) {
    if (!body) return lt_reply_error(c, 400, "bad_json", "request body: expected {model, options}");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        if (strcmp(key, "model") && strcmp(key, "options"))
            return lt_reply_error(c, 400, "bad_request",
                                  "unknown key '%s' (expected model, options)", key);
    }
    json_t *model = json_object_get(body, "model"), *opts = json_object_get(body, "options");
    if (!json_is_string(model))
        return lt_reply_error(c, 400, "bad_request",
                              "model: expected a model name from GET /api/models (a string)");
    if (opts && !json_is_object(opts))
        return lt_reply_error(c, 400, "bad_request",
                              "options: expected an object of run options (\"lora-rank\": 8, ...)");
    lt_run_opts o;
    lt_run_opts_default(&o);
    lt_status st = lt_model_path(s, json_string_value(model), o.model, sizeof o.model);
    if (st)
        return lt_reply_error(c, st == LT_ERR_NOTFOUND ? 404 : 400,
                              st == LT_ERR_NOTFOUND ? "not_found" : "bad_request", "model: %s",
                              lt_errmsg());
    json_object_foreach(opts, key, v) {
        char buf[64];
        const lt_run_opt_info *in = lt_run_opt_get(lt_run_opt_find(key));
        if (!in) {
            lt_run_opts_set(&o, key, "");
            return lt_reply_error(c, 400, "bad_option", "options: %s", lt_errmsg());
        }
        if (in->type == LT_OPT_STRING || !strcmp(in->name, "json"))
            return lt_reply_error(c, 400, "bad_option", "options: '%s' is set by the server",
                                  in->name);
        const char *t = lt_serve_opt_text(v, buf, sizeof buf);
        if (!t)
            return lt_reply_error(c, 400, "bad_option",
                                  "options: %s: expected a string, number or boolean", in->name);
        if (lt_run_opts_set(&o, in->name, t))
            return lt_reply_error(c, 400, "bad_option", "options: %s", lt_errmsg());
    }
    snprintf(o.data, sizeof o.data, "%s/datasets/(plan)", s->work);
    snprintf(o.out, sizeof o.out, "%s/jobs/(plan)/out", s->work);
    if (lt_run_opts_validate(&o, 1))
        return lt_reply_error(c, 400, "bad_option", "options: %s", lt_errmsg());

    lt_train_config tc;
    const char *why = "";
    lt_train_plan_t p;
    int auto_b = o.batch_size <= 0, auto_t = o.max_seq_len <= 0;
    int64_t budget = 0;
    st = lt_plan_run_opts(&o, &tc, &p, &budget, &why);
    if (st) { /* "model: ..." (the model would not load) or "plan: ..." (the options) */
        char *msg = lt_serve_scrub(s, lt_errmsg());
        const char *t = msg ? msg : "plan: out of memory";
        enum MHD_Result r = lt_reply_error(c, 400, strncmp(t, "model:", 6) ? "bad_option" : "bad_request",
                                           "%s", t);
        lt_free(msg);
        return r;
    }
    json_t *by = json_object(), *notes = json_array();
    for (int k = 0; k < LT_MEM_COUNT; k++)
        json_object_set_new(by, lt_mem_category_name((lt_mem_category)k), json_integer(p.bytes[k]));
    if (auto_t)
        json_array_append_new(
            notes, json_string("max-seq-len auto: planned at the longest length that fits, up to "
                               "the model's context; the job also caps it at the dataset's "
                               "longest example, so it may plan less"));
    if (auto_b || auto_t)
        json_array_append_new(
            notes, json_string("automatic sizes fit 80% of the RAM available now (or "
                               "memory-budget); the job fits again when it starts, counting "
                               "what the server then holds"));
    json_t *out =
        json_pack("{s:O,s:s,s:i,s:i,s:b,s:b,s:I,s:I,s:I,s:I,s:I,s:s,s:s,s:o,s:o}", "model", model,
                  "method", lt_train_method_name(tc.method), "batch_size", tc.batch_size, "seq_len",
                  tc.seq_len, "auto_batch_size", auto_b, "auto_max_seq_len", auto_t, "peak_bytes",
                  (json_int_t)p.peak_bytes, "steady_bytes", (json_int_t)p.steady_bytes,
                  "mapped_bytes", (json_int_t)p.mapped_bytes, "n_params", (json_int_t)p.n_params,
                  "n_trainable", (json_int_t)p.n_trainable, "compute_dtype",
                  tc.compute_dtype == LT_DTYPE_BF16 ? "bf16" : "f32", "compute_dtype_reason", why,
                  "bytes", by, "notes", notes);
    if (out && budget > 0) json_object_set_new(out, "budget_bytes", json_integer(budget));
    return lt_reply_json(c, 200, out);
}
