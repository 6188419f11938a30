/* cmd_serve.c - `loratune serve`: the REST API server (src/serve/, docs/SERVER.md) in the
 * foreground until SIGINT / SIGTERM. The token comes from --token or $LORATUNE_TOKEN (read here:
 * the library reads no environment). Prints "listening on http://HOST:PORT" once it listens
 * (with --port 0, the port the system chose). Exit codes: 0 stopped by a signal, 1 could not
 * start, 2 bad usage. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "loratune/backend.h"
#include "loratune/run.h"
#include "loratune/serve.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: loratune serve [--host 127.0.0.1] [--port 8080] [--workdir DIR] [--token T]\n"
            "                      [--models DIR] [--max-body BYTES] [--max-upload BYTES]\n"
            "                      [--quota BYTES] [--timeout S] [--job-threads N]\n"
            "                      [--memory-budget BYTES] [--resume-interrupted]\n"
            "                      [--tls-cert FILE --tls-key FILE]\n"
            "                      [--model M [--model-name ID] [--adapter NAME=PATH ...]\n"
            "                       [--slots N] [--ctx N] [--kv-cache f16|f32] [--max-queue N]\n"
            "                       [--threads N] [--compute-dtype f32|bf16|auto]\n"
            "                       [--device cpu|cuda|auto] [--quality-every S]]\n\n"
            "Serves the REST API (OpenAPI 3.1 at /openapi.json; docs/SERVER.md): dataset upload\n"
            "and validation, a persistent queue of train jobs with live events (SSE), runs and\n"
            "metrics, adapter downloads. With --model, also an OpenAI-compatible API (/v1/models,\n"
            "/v1/completions, /v1/chat/completions, /v1/adapters), /health, /ready and /metrics\n"
            "(Prometheus): docs/SERVING.md.\n\n"
            "  --host ADDR        address to listen on (default 127.0.0.1); any non-loopback\n"
            "                     address needs a token\n"
            "  --port N           port (default 8080; 0: any free port)\n"
            "  --workdir DIR      datasets, jobs, outputs and the tracking store (default\n"
            "                     loratune-work)\n"
            "  --token T          require 'Authorization: Bearer T' (default $LORATUNE_TOKEN)\n"
            "  --models DIR       the models jobs may name (default WORKDIR/models)\n"
            "  --max-body BYTES   largest JSON request body (default 1048576)\n"
            "  --max-upload BYTES largest dataset upload (default 10 GiB)\n"
            "  --quota BYTES      all stored datasets together (default 50 GiB)\n"
            "  --timeout S        close connections idle for S seconds (default 60)\n"
            "  --job-threads N    threads of a job whose options don't set threads (default:\n"
            "                     as the environment says)\n"
            "  --memory-budget BYTES  jobs run at once while their planned peaks (the memory\n"
            "                     plan) fit in BYTES together (default: 80%% of physical RAM);\n"
            "                     a job larger than the budget runs alone\n"
            "  --resume-interrupted  at start, queue again the jobs the previous server left\n"
            "                     interrupted (killed or stopped mid-run): they continue from\n"
            "                     their newest checkpoint (default: they wait for a resume)\n"
            "  --tls-cert FILE    serve HTTPS with this PEM certificate (chain) ...\n"
            "  --tls-key FILE     ... and its unencrypted PEM private key (both or neither)\n"
            "  --model M          serve this model (HF folder or .gguf) on /v1; loaded after the\n"
            "                     server listens (GET /ready is 503 until then)\n"
            "  --model-name ID    its id in /v1 requests (default: the file name without .gguf)\n"
            "  --adapter NAME=PATH  also serve this LoRA / DoRA adapter as model NAME (repeat);\n"
            "                     a bad one is reported and the others serve\n"
            "  --slots N          requests generated at once, each with its own KV cache\n"
            "                     (default 4; the others wait in a queue)\n"
            "  --ctx N            context of each slot: prompt + completion tokens (default: the\n"
            "                     model's, at most 2048)\n"
            "  --kv-cache f16|f32 what the slots' KV caches store keys and values as (default\n"
            "                     f16: half the memory; f32: exact)\n"
            "  --max-queue N      requests waiting for a slot before 503 (default 64)\n"
            "  --compute-dtype D  f32 (default): fp32 products; bf16: the base weights' products\n"
            "                     in bf16 with fp32 sums, as `generate --compute-dtype bf16`;\n"
            "                     auto: bf16 on a CPU with AVX512-BF16 / AMX\n"
            "  --threads N        OpenMP / OpenBLAS threads of generation (default: as the\n"
            "                     environment says)\n"
            "  --device D         where generation runs: cpu (default), cuda (the first GPU: the\n"
            "                     weights copied there once, the slots' KV caches, the adapters\n"
            "                     and the batched step there), auto (a GPU when there is one);\n"
            "                     cpu-as-device: the device code path on the CPU (for checking)\n"
            "  --quality-every S  score each deployed version on its held-out set every S\n"
            "                     seconds (default 3600; 0: never)\n");
}

static int parse_size(const char *opt, const char *v, int64_t *out) {
    char *end;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || x <= 0) {
        fprintf(stderr, "loratune serve: %s: expected a number of bytes > 0, got '%s'\n", opt, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* adapters: room for argc "NAME=PATH" arguments (borrowed from argv) */
static int serve_main(int argc, char **argv, const char **adapters) {
    lt_serve_opts o = {.host = "127.0.0.1", .port = 8080};
    o.adapters = adapters;
    long threads = 0;
    int kv_set = 0;
    const char *device = NULL;
    const char *env_token = getenv("LORATUNE_TOKEN");
    o.token = env_token && *env_token ? env_token : NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--resume-interrupted")) { /* the one flag without a value */
            o.resume_interrupted = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "loratune serve: %s: unknown option or missing value\n\n", a);
            usage(stderr);
            return 2;
        }
        i++;
        long lv;
        if (!strcmp(a, "--host"))
            o.host = v;
        else if (!strcmp(a, "--port")) {
            if (lt_cli_parse_int("serve", a, v, &lv)) return 2;
            if (lv < 0 || lv > 65535) {
                fprintf(stderr, "loratune serve: --port: expected 0..65535, got %ld\n", lv);
                return 2;
            }
            o.port = (int)lv;
        } else if (!strcmp(a, "--workdir"))
            o.workdir = v;
        else if (!strcmp(a, "--token"))
            o.token = v;
        else if (!strcmp(a, "--tls-cert"))
            o.tls_cert = v;
        else if (!strcmp(a, "--tls-key"))
            o.tls_key = v;
        else if (!strcmp(a, "--models"))
            o.models_dir = v;
        else if (!strcmp(a, "--max-body")) {
            if (parse_size(a, v, &o.max_body_bytes)) return 2;
        } else if (!strcmp(a, "--max-upload")) {
            if (parse_size(a, v, &o.max_upload_bytes)) return 2;
        } else if (!strcmp(a, "--memory-budget")) {
            if (parse_size(a, v, &o.memory_budget_bytes)) return 2;
        } else if (!strcmp(a, "--quota")) {
            if (parse_size(a, v, &o.quota_bytes)) return 2;
        } else if (!strcmp(a, "--timeout")) {
            if (lt_cli_parse_int("serve", a, v, &lv)) return 2;
            if (lv < 1 || lv > 86400) {
                fprintf(stderr, "loratune serve: --timeout: expected 1..86400 seconds\n");
                return 2;
            }
            o.timeout_s = (int)lv;
        } else if (!strcmp(a, "--job-threads")) {
            if (lt_cli_parse_int("serve", a, v, &lv)) return 2;
            if (lv < 0 || lv > 4096) {
                fprintf(stderr, "loratune serve: --job-threads: expected 0..4096\n");
                return 2;
            }
            o.job_threads = (int)lv;
        } else if (!strcmp(a, "--quality-every")) {
            if (lt_cli_parse_int("serve", a, v, &lv)) return 2;
            if (lv < 0 || lv > 30L * 86400) {
                fprintf(stderr, "loratune serve: --quality-every: expected 0..2592000 seconds\n");
                return 2;
            }
            o.quality_every_s = lv ? (int)lv : -1;
        } else if (!strcmp(a, "--model"))
            o.model = v;
        else if (!strcmp(a, "--model-name"))
            o.model_name = v;
        else if (!strcmp(a, "--adapter"))
            adapters[o.n_adapters++] = v;
        else if (!strcmp(a, "--kv-cache")) {
            if (strcmp(v, "f16") && strcmp(v, "f32")) {
                fprintf(stderr, "loratune serve: --kv-cache: expected f16 or f32, got '%s'\n", v);
                return 2;
            }
            o.kv_f32 = !strcmp(v, "f32");
            kv_set = 1;
        } else if (!strcmp(a, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto") &&
                strcmp(v, "cpu-as-device")) {
                fprintf(stderr,
                        "loratune serve: --device: expected cpu, cuda, auto or cpu-as-device, "
                        "got '%s'\n",
                        v);
                return 2;
            }
            device = v;
            kv_set = 1;
        } else if (!strcmp(a, "--compute-dtype")) {
            const char *why = NULL;
            if (!strcmp(v, "bf16"))
                o.bf16 = 1;
            else if (!strcmp(v, "auto"))
                o.bf16 = lt_run_pick_compute_dtype(-1, LT_METHOD_LORA, &why) == LT_DTYPE_BF16;
            else if (strcmp(v, "f32")) {
                fprintf(stderr,
                        "loratune serve: --compute-dtype: expected f32, bf16 or auto, got '%s'\n",
                        v);
                return 2;
            }
            kv_set = 1;
        }
        else if (!strcmp(a, "--slots") || !strcmp(a, "--ctx") || !strcmp(a, "--max-queue") ||
                 !strcmp(a, "--threads")) {
            if (lt_cli_parse_int("serve", a, v, &lv)) return 2;
            long lo = 1, hi = !strcmp(a, "--slots") ? 256 : 1 << 24;
            if (lv < lo || lv > hi) {
                fprintf(stderr, "loratune serve: %s: expected %ld..%ld, got %ld\n", a, lo, hi, lv);
                return 2;
            }
            if (!strcmp(a, "--slots")) o.slots = (int)lv;
            else if (!strcmp(a, "--ctx")) o.ctx = (int)lv;
            else if (!strcmp(a, "--max-queue")) o.max_queue = (int)lv;
            else threads = lv;
        } else {
            fprintf(stderr, "loratune serve: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o.token && !*o.token) o.token = NULL;
    if (!o.tls_cert != !o.tls_key) {
        fprintf(stderr, "loratune serve: --tls-cert and --tls-key go together (a PEM certificate "
                        "and its private key)\n");
        return 2;
    }
    if ((o.n_adapters || o.slots || o.ctx || o.max_queue || o.model_name || kv_set) && !o.model) {
        fprintf(stderr, "loratune serve: --adapter, --model-name, --slots, --ctx, --kv-cache, "
                        "--compute-dtype, --device and --max-queue need --model\n");
        return 2;
    }
    if (threads) lt_set_num_threads((int)threads);
    o.threads = (int)threads;
    if (!o.token && !lt_serve_host_is_loopback(o.host)) {
        fprintf(stderr,
                "loratune serve: refusing to listen on %s without a token: anyone who can reach "
                "it could train, read and download. Give --token T (or LORATUNE_TOKEN), or keep "
                "the default --host 127.0.0.1.\n",
                o.host);
        return 2;
    }

    /* signals are waited for here, not handled: every thread blocks them */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* the device: a GPU (or, to check the device path, the CPU's ops marked as one) */
    static lt_backend hostdev;
    lt_backend *cuda = NULL;
    if (device && !strcmp(device, "cpu-as-device")) {
        hostdev = *lt_backend_cpu();
        hostdev.name = "cpu-as-device";
        hostdev.device = 1;
        o.device = &hostdev;
    } else if (device && strcmp(device, "cpu")) {
        if (lt_cli_open_gpu("serve", !strcmp(device, "cuda"), &cuda)) return 1;
        o.device = cuda;
        fprintf(stderr, "[device %s]\n", cuda ? (cuda->desc ? cuda->desc : cuda->name)
                                               : "auto: no GPU, the CPU");
    }

    lt_server *s = NULL;
    if (lt_serve_start(&o, &s)) {
        fprintf(stderr, "loratune serve: %s\n", lt_errmsg());
        lt_backend_cuda_free(cuda);
        return 1;
    }
    const char *h = o.host;
    int v6 = strchr(h, ':') != NULL;
    printf("listening on %s://%s%s%s:%d (work folder %s%s)\n", o.tls_cert ? "https" : "http",
           v6 ? "[" : "", h, v6 ? "]" : "", lt_serve_port(s), lt_serve_workdir(s),
           o.token ? "; token required" : "");
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    printf("stopping (%s): the running job, if any, checkpoints and is marked interrupted\n",
           sig == SIGINT ? "SIGINT" : "SIGTERM");
    fflush(stdout);
    lt_serve_stop(s);
    lt_backend_cuda_free(cuda); /* after the server: its device weights and caches use it */
    return 0;
}

int cmd_serve(int argc, char **argv) {
    if (lt_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char **adapters = calloc((size_t)argc, sizeof(char *));
    if (!adapters) return 1;
    int rc = serve_main(argc, argv, adapters);
    free(adapters);
    return rc;
}
