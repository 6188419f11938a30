/* test_faults_study.c - fault-injection walks (tests/lt_fault.h) over a study's open + ask +
 * tell + close: every allocation, and every output I/O call (temp file, write, fsync, close,
 * rename), made to fail in turn. Each failure must come back as a clean status, and the study
 * on disk must be whole afterwards: it opens (every field and trial validated), holds the 12
 * trials it had, or those plus the new one (running or complete), and no temp file or lock is
 * left. The study starts with 12 complete trials, so the ask runs the GP (fit, candidates,
 * refinement). */
#include <dirent.h>
#include <math.h>

#include "loratune/tune.h"
#include "lt_fault.h"
#include "lt_test.h"

typedef struct {
    char dir[720];
    char *base; /* study.json with 12 trials */
    size_t base_len;
} ctx_t;

static const char *k_space =
    "{\"lr\": {\"type\": \"float\", \"low\": 1e-5, \"high\": 1e-2, \"log\": true},"
    " \"rank\": {\"type\": \"int\", \"low\": 2, \"high\": 64, \"log\": true},"
    " \"targets\": {\"type\": \"categorical\", \"choices\": [\"attention\", \"mlp\", \"all\"]}}";

static lt_status setup(void *p) {
    ctx_t *c = p;
    char path[700];
    snprintf(path, sizeof path, "%.600s/study.json", c->dir);
    FILE *f = fopen(path, "wb");
    if (!f) return lt_error(LT_ERR_IO, "%s: cannot write", path);
    fwrite(c->base, 1, c->base_len, f);
    fclose(f);
    return LT_OK;
}

static lt_status op(void *p) {
    ctx_t *c = p;
    lt_study *s;
    lt_status st = lt_study_open(c->dir, &s);
    if (st) return st;
    int t;
    st = lt_study_ask(s, &t);
    if (!st) st = lt_study_tell(s, t, LT_TRIAL_COMPLETE, 0.5);
    lt_study_close(s);
    return st;
}

/* the tuner's calls: report (and the same step again), the pruner, restart, tell_error */
static lt_status op_tune(void *p) {
    ctx_t *c = p;
    lt_study *s;
    lt_status st = lt_study_open(c->dir, &s);
    if (st) return st;
    int t, prune = 0;
    lt_prune_opts po = {.min_resource = 5, .reduction_factor = 3};
    st = lt_study_ask(s, &t);
    if (!st) st = lt_study_report(s, t, 10, 0.7);
    if (!st) st = lt_study_should_prune(s, t, &po, &prune, NULL);
    if (!st) st = lt_study_restart(s, t);
    if (!st) st = lt_study_report(s, t, 10, 0.6);
    if (!st) st = lt_study_report(s, t, 10, 0.5);
    if (!st) st = lt_study_tell_error(s, t, "diverged");
    lt_study_close(s);
    return st;
}

static int check_tune(void *p, lt_status st, long n) {
    ctx_t *c = p;
    lt_study *s;
    if (lt_study_open(c->dir, &s) != LT_OK) {
        fprintf(stderr, "N=%ld: the study does not open: %s\n", n, lt_errmsg());
        return 0;
    }
    int nt = lt_study_n_trials(s), ok;
    lt_trial_state ts = LT_TRIAL_RUNNING;
    if (nt == 13) lt_study_trial_state(s, 12, &ts, NULL);
    if (st == LT_OK) ok = nt == 13 && ts == LT_TRIAL_FAILED;
    else ok = nt == 12 || (nt == 13 && (ts == LT_TRIAL_RUNNING || ts == LT_TRIAL_FAILED));
    if (!ok) fprintf(stderr, "N=%ld: %d trials on disk after %s\n", n, nt, lt_status_name(st));
    lt_study_close(s);
    return ok;
}

static int check(void *p, lt_status st, long n) {
    ctx_t *c = p;
    int ok = 1;
    lt_study *s;
    if (lt_study_open(c->dir, &s) != LT_OK) {
        fprintf(stderr, "N=%ld: the study does not open: %s\n", n, lt_errmsg());
        return 0;
    }
    int nt = lt_study_n_trials(s);
    lt_trial_state ts = LT_TRIAL_RUNNING;
    double v = NAN;
    if (nt == 13) lt_study_trial_state(s, 12, &ts, &v);
    if (st == LT_OK) ok = nt == 13 && ts == LT_TRIAL_COMPLETE && v == 0.5;
    else ok = nt == 12 || (nt == 13 && (ts == LT_TRIAL_RUNNING || (ts == LT_TRIAL_COMPLETE && v == 0.5)));
    if (!ok) fprintf(stderr, "N=%ld: %d trials on disk after %s\n", n, nt, lt_status_name(st));
    lt_study_close(s);
    DIR *d = opendir(c->dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp") || !strcmp(e->d_name, LT_DIR_LOCK_NAME)) {
            fprintf(stderr, "N=%ld: %s left behind\n", n, e->d_name);
            ok = 0;
        }
    if (d) closedir(d);
    return ok;
}

int main(void) {
    ctx_t c;
    snprintf(c.dir, sizeof c.dir, "%s/lt-faults-study-XXXXXX", lt_tmpdir());
    CHECK(mkdtemp(c.dir) != NULL, "mkdtemp");
    char sdir[700];
    snprintf(sdir, sizeof sdir, "%.600s/s", c.dir);
    lt_study *s;
    lt_study_options o = {.seed = 3, .n_startup = 6};
    CHECK_OK(lt_study_create(sdir, k_space, &o, &s));
    for (int i = 0; i < 12; i++) {
        int t;
        double lr;
        CHECK_OK(lt_study_ask(s, &t));
        CHECK_OK(lt_study_param_number(s, t, "lr", &lr));
        CHECK_OK(lt_study_tell(s, t, LT_TRIAL_COMPLETE, (log10(lr) + 3) * (log10(lr) + 3)));
    }
    lt_study_close(s);
    snprintf(c.dir, sizeof c.dir, "%.700s", sdir);
    char path[700];
    snprintf(path, sizeof path, "%.600s/study.json", c.dir);
    CHECK_OK(lt_file_read_all(path, &c.base, &c.base_len));
    { /* read-only: no lock taken (a writer may hold it), every change refused */
        lt_study *w, *r;
        int t;
        CHECK_OK(lt_study_open(c.dir, &w));
        CHECK_OK(lt_study_open_readonly(c.dir, &r));
        if (r) {
            CHECK(lt_study_n_trials(r) == 12, "read-only view: %d trials", lt_study_n_trials(r));
            CHECK_ERR(lt_study_ask(r, &t), LT_ERR_ARG, "read-only");
        }
        lt_study_close(r);
        lt_study_close(w);
    }

    lt_fault_plan alloc = {LT_FAULT_ALLOC, 0, 0, 0, 400, 700};
    lt_fault_ops ops = {setup, op, check, NULL};
    lt_fault_walk("study ask + tell, allocations", &alloc, &ops, &c);
    lt_fault_plan io = {LT_FAULT_IO, LT_IO_ALL, ENOSPC, 0, 100, 100};
    lt_fault_walk("study ask + tell, output I/O (ENOSPC)", &io, &ops, &c);
    lt_fault_plan io_r = {LT_FAULT_IO, LT_IO_ALL, EIO, 1, 100, 100};
    lt_fault_walk("study ask + tell, output I/O (EIO, persistent)", &io_r, &ops, &c);
    lt_fault_ops tune_ops = {setup, op_tune, check_tune, NULL};
    lt_fault_plan alloc_t = {LT_FAULT_ALLOC, 0, 0, 0, 400, 700};
    lt_fault_walk("tuner calls, allocations", &alloc_t, &tune_ops, &c);
    lt_fault_plan io_t = {LT_FAULT_IO, LT_IO_ALL, ENOSPC, 0, 100, 100};
    lt_fault_walk("tuner calls, output I/O (ENOSPC)", &io_t, &tune_ops, &c);
    free(c.base);
    char *parent = strrchr(c.dir, '/');
    *parent = 0;
    lt_fault_rmtree(c.dir);
    LT_TEST_END();
}
