/* train_track.h - what `loratune train` needs to record itself in the tracking store
 * (apps/train_track.c): its own options, taken out of argv before the run options are parsed,
 * and the recorder started after the run is created and finished after it ends. */
#ifndef LT_APPS_TRAIN_TRACK_H
#define LT_APPS_TRAIN_TRACK_H

#include <stdint.h>

#include "loratune/recorder.h"
#include "loratune/run.h"

/* Removes --store DIR, --experiment NAME, --run-name NAME, --mlflow URI and --no-track (also
 * "--opt=value") from argv, remembering them and the full command line; returns the new argc. */
int train_track_take_args(int argc, char **argv);
/* Starts recording (NULL when tracking is off or the store can't be opened: a warning on
 * stderr, training goes on). */
lt_recorder *train_track_start(const lt_run_opts *o);
/* Ends the run record from the command's exit code (0 finished, 130 killed, else failed);
 * prints where the run was recorded and any warning. NULL rec: nothing. */
void train_track_finish(lt_recorder *rec, int exit_code, int json_output);
/* For `runs reproduce`: the run being reproduced (tag "reproduces"). */
void train_track_set_reproduces(int64_t run_id);
/* The help lines of the tracking options. */
extern const char *const train_track_help;

#endif
