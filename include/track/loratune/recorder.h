/* recorder.h - records a training run into the tracking store (and an MLflow mirror) from the
 * run's JSON events (run.h), and versions its data.
 *
 * Flow (what `loratune train` does; any other driver does the same):
 *   lt_recorder_opts ro = {...};  lt_recorder *rec;
 *   lt_recorder_start(&ro, &rec);          opens the store, versions the data, begins the run
 *   lt_run_add_sink(run, lt_recorder_sink, rec);
 *   lt_run_train(...);
 *   lt_recorder_finish(rec, status, warn, sizeof warn);
 *
 * Data version: the DVC md5 of the training data (file or folder). When a "<data>.dvc" file
 * records that md5 and the DVC repository's cache holds it, the data is already versioned
 * (tag data.versioned_by = dvc); otherwise its content is copied into the store's cache
 * (STORE/cache, the DVC cache layout; tag data.versioned_by = loratune), so `loratune runs
 * reproduce` can restore it even after the file changed.
 *
 * Events to records: start -> params (the resolved options), tags (steps, examples, trainable
 * params); step -> metrics train_loss, lr, grad_norm, tokens_per_sec, peak_rss_bytes (step =
 * optimizer step); eval -> val_loss, val_ppl; saved -> artifact (kind "adapter" for peft /
 * mlx / gguf, "merged" for hf); done -> tag outcome, metric final_val_loss.
 *
 * Never fails training: store or MLflow problems after lt_recorder_start are counted and
 * reported by lt_recorder_finish (warn), not returned to the run. */
#ifndef LORATUNE_RECORDER_H
#define LORATUNE_RECORDER_H

#include <stddef.h>
#include <stdint.h>

#include "loratune/track.h"

#ifdef __cplusplus
extern "C" {
#endif

struct json_t;

typedef struct {
    const char *store_dir;   /* NULL: LT_STORE_DEFAULT_DIR */
    const char *mlflow_uri;  /* NULL or "": no mirror */
    const char *mlflow_token, *mlflow_username, *mlflow_password; /* lt_mlflow_server: NULL none */
    const char *experiment;  /* NULL: "default" */
    const char *name;        /* optional run name */
    const char *kind;        /* NULL: "train" */
    const char *command;     /* the command line */
    const char *config_json; /* resolved options (JSON object) */
    const char *data_path;   /* training data; NULL: none */
    const char *model;       /* base model path (param "model" is taken from config anyway) */
    int has_seed;
    uint64_t seed;
    double mlflow_flush_s; /* how long lt_recorder_finish waits for MLflow (0: 10 s) */
} lt_recorder_opts;

typedef struct lt_recorder lt_recorder;

/* Opens the store, hashes and (when untracked) caches the data, begins the run. Errors are
 * the store's (the caller may train without recording). */
lt_status lt_recorder_start(const lt_recorder_opts *o, lt_recorder **out);
/* An lt_run_sink: ctx is the lt_recorder. */
void lt_recorder_sink(void *ctx, const struct json_t *event);
int64_t lt_recorder_run_id(const lt_recorder *r);
const char *lt_recorder_data_md5(const lt_recorder *r);
lt_store *lt_recorder_store(lt_recorder *r); /* borrowed */
/* Ends the run with status, flushes the MLflow mirror (up to mlflow_flush_s), records its
 * run id as tag mlflow.run_id, closes everything and frees r. Returns the number of problems;
 * when > 0, warn (n bytes) says what (e.g. MLflow unreachable: how to push later). */
int lt_recorder_finish(lt_recorder *r, lt_track_status status, char *warn, size_t n);

#ifdef __cplusplus
}
#endif
#endif
