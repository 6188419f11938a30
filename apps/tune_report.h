/* tune_report.h - what `loratune tune` and `loratune compare` write besides their runs
 * (docs/TUNE.md, "Reports"): compare's Pareto fronts and recommendation under the user's
 * constraints, its Markdown table, and the self-contained HTML reports (no script, no outside
 * resource) whose charts are inline SVG, each also written as a standalone .svg file.
 *
 * Every plotted point carries its value (data-value, data-x) and every chart's axes group its
 * mapping (data-xlo/xhi/xlog/pxlo/pxhi and the same for y), so a reader (the tests) can map the
 * drawn coordinates back to the numbers they stand for. */
#ifndef LT_APPS_TUNE_REPORT_H
#define LT_APPS_TUNE_REPORT_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "loratune/core.h"

/* compare's constraints; 0 (memory, time) or NAN (loss): not given. */
typedef struct {
    int64_t max_memory_bytes; /* --max-memory: the best trial's planned peak at most this */
    double max_time_s;        /* --max-time: the best trial's training wall time at most this */
    double max_val_loss;      /* --min-quality: the best validation loss at most this */
} compare_limits;

/* Adds "constraints", "pareto" {"loss_vs_memory", "loss_vs_time": [method, ...]} and
 * "recommendation" {"method" | null, "reasons": [...], "excluded": [...]} to cmp (compare.json's
 * tree: "methods" rows with best_val_loss, peak_bytes, time_s), replacing earlier ones. */
void report_compare_analyze(json_t *cmp, const compare_limits *lim);

/* compare.json as a Markdown document (the table, the fronts, the recommendation). The caller
 * frees the text; NULL when out of memory. */
char *report_compare_markdown(const json_t *cmp);

/* The fronts and the recommendation as lines for the terminal. */
void report_compare_print(const json_t *cmp, FILE *f);

/* compare's HTML report in outdir (created): index.html, loss_curves.svg (each method's best
 * trial: training and validation loss by step, from its trial.json), pareto_memory.svg,
 * pareto_time.svg. */
lt_status report_compare_html(const json_t *cmp, const char *outdir);

/* A study's HTML report in outdir (created), read from study_dir (study.json and
 * trials/NNNN/trial.json): index.html, history.svg (each trial's value and the best so far),
 * slice_<param>.svg (value against each parameter). */
lt_status report_study_html(const char *study_dir, const char *outdir);

/* On: every chart written from now on is also rendered to a PNG next to its SVG (NAME.png,
 * librsvg + cairo, one pixel per SVG unit). Off by default. */
void report_set_png(int on);

#endif
