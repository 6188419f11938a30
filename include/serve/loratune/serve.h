/* serve.h - `loratune serve`: an HTTP server (libmicrohttpd) with a REST API over the library:
 * datasets (streamed upload, validation with line-level errors), a persistent queue of train
 * jobs run one at a time on a worker thread, Server-Sent Events of a job's run events, runs and
 * metrics from the tracking store, adapter downloads, and its own OpenAPI 3.1 document
 * (GET /openapi.json). docs/SERVER.md documents the API and the security model.
 *
 * Work folder (opts.workdir, locked with lt_dir_lock while the server runs):
 *   datasets/<id>/data.jsonl|data.json + meta.json   uploaded datasets (ids chosen here)
 *   uploads/<id>.part                                 uploads in progress (removed at start)
 *   jobs/<id>/job.json + events.jsonl + out/          the queue; a job's events and run OUT
 *   store/                                            the tracking store (track.h)
 * No path given by a client ever reaches the file system: datasets and jobs are named by ids
 * this server made (checked against ^(ds|job)_[0-9a-f]{16}$), models by the names of the
 * entries of opts.models_dir, downloads by a fixed list of file names.
 *
 * Safety: the server refuses to start on a non-loopback address without a token; with a token
 * every /api/ request but /api/health needs "Authorization: Bearer TOKEN" (compared in
 * constant time); without one, the Host header must name a loopback host (DNS rebinding) and a
 * cross-origin Origin header is refused (CSRF). Bodies are limited (JSON: max_body_bytes;
 * uploads: max_upload_bytes and the total quota_bytes of stored datasets): 413 beyond.
 * Idle connections are closed after timeout_s.
 *
 * Inference (opts.model): the base model is loaded on a thread of its own after the server
 * listens (GET /ready answers 503 until it is loaded, then 200); /v1/models, /v1/completions,
 * /v1/chat/completions (OpenAI-compatible, streaming or not) and /v1/adapters (load / unload
 * adapters at run time); GET /metrics in the Prometheus text format. docs/SERVING.md.
 *
 * Threads: libmicrohttpd serves each connection on its own thread; one worker thread runs the
 * jobs. lt_serve_start returns once listening; lt_serve_stop (from any one thread) stops the
 * running job (it checkpoints and is marked interrupted), ends event streams, and frees. */
#ifndef LORATUNE_SERVE_H
#define LORATUNE_SERVE_H

#include <stdint.h>

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

struct lt_backend; /* loratune/backend.h */

typedef struct {
    const char *host;         /* numeric IPv4 / IPv6 address or "localhost"; NULL: 127.0.0.1 */
    int port;                 /* 0: any free port (lt_serve_port tells which) */
    const char *workdir;      /* NULL: "loratune-work" */
    const char *token;        /* NULL or "": none (allowed on loopback addresses only) */
    const char *models_dir;   /* models jobs may name; NULL: WORKDIR/models */
    int64_t max_body_bytes;   /* JSON request bodies; 0: 1 MiB */
    int64_t max_upload_bytes; /* one dataset upload; 0: 10 GiB */
    int64_t quota_bytes;      /* all stored datasets together; 0: 50 GiB */
    int timeout_s;            /* idle connection timeout; 0: 60 */
    int max_connections;      /* 0: 512 */
    int job_threads;          /* threads of a job's run when its options don't say; 0: as the
                                 environment says */
    int64_t memory_budget_bytes; /* jobs run at once while their planned peaks fit in it
                                    together (a job larger than it runs alone); 0: 80% of the
                                    physical RAM */
    int resume_interrupted;   /* 1: at start, jobs interrupted by the previous server's end
                                 (killed, or stopped while they ran) are queued again and
                                 continue from their newest checkpoint; 0: they wait for
                                 POST /api/jobs/{id}/resume */
    const char *tls_cert;     /* PEM certificate (chain) file: serve HTTPS (libmicrohttpd with
                                 GnuTLS); NULL: plain HTTP. Needs tls_key too */
    const char *tls_key;      /* its PEM private key file (unencrypted) */
    /* Inference (the OpenAI-compatible /v1 API, docs/SERVING.md); all optional. */
    const char *model;        /* the base model served (HF folder / .gguf); NULL: no /v1 */
    const char *model_name;   /* its id in /v1 ("model" of requests); NULL: the file name */
    const char *const *adapters; /* "NAME=PATH" each, loaded after the base; borrowed */
    int n_adapters;
    int slots;                /* requests holding a KV cache at once; 0: 4 */
    int ctx;                  /* context of each slot (prompt + completion); 0: min(model, 2048) */
    int kv_f32;               /* 1: the slots' KV caches in fp32 (exact); 0: fp16 (LT_KV_F16) */
    int bf16;                 /* 1: the base weights' products in bf16, fp32 sums (as generate
                                 --compute-dtype bf16: lt_kv_cache_set_bf16); 0: fp32 */
    int max_queue;            /* requests waiting for a slot before 503; 0: 64 */
    int threads;              /* OpenMP / OpenBLAS threads of a generation; 0: as the environment
                                 says (set in every generating thread: OpenMP's count is per
                                 thread) */
    int quality_every_s;      /* deployed versions scored on their held-out sets every S seconds
                                 (docs/SERVING.md "Monitoring"); 0: 3600, < 0: never */
    const struct lt_backend *device; /* where /v1's generation runs: NULL the host (the CPU
                                 path); a device backend (lt_backend_cuda_create's; borrowed,
                                 outlives the server): the weights copied there once
                                 (lt_model_dev), every slot's KV cache, every adapter's delta
                                 and the batched step there */
} lt_serve_opts;

typedef struct lt_server lt_server;

/* Opens (creating) the work folder, locks it (LT_ERR_BUSY when another server holds it), loads
 * the job queue (a job that was running is marked interrupted), starts the worker and listens.
 * LT_ERR_ARG for a bad host, or a non-loopback host without a token. Strings in o are copied.
 * *out is new (lt_serve_stop). */
lt_status lt_serve_start(const lt_serve_opts *o, lt_server **out);
int lt_serve_port(const lt_server *s);            /* the port listened on */
const char *lt_serve_workdir(const lt_server *s); /* borrowed */
/* Stops listening and the worker, closes the work folder, frees s. Safe on NULL. */
void lt_serve_stop(lt_server *s);
/* Whether host is a loopback address (127.0.0.0/8, ::1, "localhost"). */
int lt_serve_host_is_loopback(const char *host);

#ifdef __cplusplus
}
#endif
#endif
