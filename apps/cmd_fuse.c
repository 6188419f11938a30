/* cmd_fuse.c - `loratune fuse`: merges an adapter (optional) into a model and writes the result
 * as a Hugging Face folder or a llama.cpp GGUF (lt_adapter_merge, lt_model_save_hf,
 * lt_model_save_gguf). The format follows --format, else the --out suffix (.gguf: GGUF, else
 * a folder); dtype defaults to f32 (HF) / f16 (GGUF). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "loratune/adapter.h"
#include "loratune/export.h"
#include "loratune/model.h"

static void usage(FILE *f) {
    fprintf(f, "usage: loratune fuse --model MODEL [--adapter PATH] --out PATH [--format hf|gguf]\n"
               "                     [--dtype f32|bf16|f16|q8_0]\n\n"
               "Merges the adapter into the model's weights (W + scale B A; DoRA rescaled per\n"
               "output row, as PEFT's merge_and_unload) and writes the merged model with its\n"
               "tokenizer and chat template. Without --adapter the model is converted as it is.\n\n"
               "  --model MODEL      a Hugging Face folder, a .gguf or a llama2.c .bin\n"
               "  --adapter PATH     a PEFT or mlx-lm adapter folder (or its .safetensors file),\n"
               "                     or a llama.cpp adapter .gguf\n"
               "  --out PATH         output folder (hf) or file (gguf); refused while another\n"
               "                     loratune process writes there (its lock: .loratune.lock)\n"
               "  --format hf|gguf   default: gguf when PATH ends in .gguf, else hf\n"
               "  --dtype T          hf: f32 (default), bf16, f16; gguf: f16 (default), f32, q8_0\n"
               "                     (1-D tensors stay f32 in a GGUF; q8_0 rows not a multiple of\n"
               "                     32 are written f16)\n");
}

static int fail(const char *what) {
    fprintf(stderr, "loratune fuse: %s%s%s\n", what ? what : "", what ? ": " : "", lt_errmsg());
    return 1;
}

int cmd_fuse(int argc, char **argv) {
    const char *model = NULL, *adapter = NULL, *out = NULL, *format = NULL, *dtype_s = NULL;
    if (lt_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = !strcmp(a, "--model")     ? &model
                           : !strcmp(a, "--adapter") ? &adapter
                           : !strcmp(a, "--out")     ? &out
                           : !strcmp(a, "--format")  ? &format
                           : !strcmp(a, "--dtype")   ? &dtype_s
                                                     : NULL;
        if (!dst) {
            fprintf(stderr, "loratune fuse: unknown option '%s' (see loratune fuse --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "loratune fuse: %s needs a value\n", a);
            return 2;
        }
        *dst = argv[++i];
    }
    if (!model || !out) {
        fprintf(stderr,
                "loratune fuse: --model and --out are required (see loratune fuse --help)\n");
        return 2;
    }
    size_t ol = strlen(out);
    int gguf = ol >= 5 && !strcmp(out + ol - 5, ".gguf");
    if (format) {
        if (!strcmp(format, "gguf"))
            gguf = 1;
        else if (!strcmp(format, "hf"))
            gguf = 0;
        else {
            fprintf(stderr, "loratune fuse: --format '%s': expected hf or gguf\n", format);
            return 2;
        }
    }
    lt_dtype dt = gguf ? LT_DTYPE_F16 : LT_DTYPE_F32;
    if (dtype_s) {
        if (!strcmp(dtype_s, "f32"))
            dt = LT_DTYPE_F32;
        else if (!strcmp(dtype_s, "f16"))
            dt = LT_DTYPE_F16;
        else if (!strcmp(dtype_s, "bf16") && !gguf)
            dt = LT_DTYPE_BF16;
        else if (!strcmp(dtype_s, "q8_0") && gguf)
            dt = LT_DTYPE_Q8_0;
        else {
            fprintf(stderr, "loratune fuse: --dtype '%s': expected %s for --format %s\n", dtype_s,
                    gguf ? "f32, f16 or q8_0" : "f32, bf16 or f16", gguf ? "gguf" : "hf");
            return 2;
        }
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    lt_model *m = NULL;
    lt_adapter *ad = NULL;
    lt_dir_lock *lock = NULL; /* taken before the slow part: a busy --out fails at once */
    int rc = 0;
    if (lt_export_lock(out, gguf, &lock)) return fail(NULL);
    if (lt_model_load(model, NULL, &m)) {
        rc = fail(NULL);
        goto done;
    }
    lt_cli_model_warn(m, "fuse");
    if (adapter) {
        if (lt_adapter_load(adapter, &m->config, &ad) || lt_adapter_merge(m, ad)) {
            rc = fail(NULL);
            goto done;
        }
    }
    lt_status st =
        gguf ? lt_model_save_gguf(m, model, out, dt) : lt_model_save_hf(m, model, out, dt);
    if (st) {
        rc = fail(NULL);
        goto done;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "loratune fuse: wrote %s (%s, %s%s%s) in %.1f s\n", out, gguf ? "gguf" : "hf",
            lt_dtype_name(dt), adapter ? ", adapter merged from " : "", adapter ? adapter : "",
            (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
done:
    lt_adapter_free(ad);
    lt_model_free(m);
    lt_dir_lock_close(lock);
    return rc;
}
