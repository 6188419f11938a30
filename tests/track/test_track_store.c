/* test_store.c - the tracking store through its C API: schema creation and version, runs with
 * params / metric series / tags / artifacts, JSON read-back and summaries, run references,
 * the model registry, delete, and the faults the issue names: two processes writing at once
 * (no "database is locked"), a writer killed mid-write (integrity_check ok, run shown as
 * killed), a newer-schema store and a file that is not a database (clear errors).
 * Hash values are the published FIPS 180-2 / RFC 1321 test vectors of "abc". */
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loratune/track.h"
#include "lt_test.h"

static json_t *run_json(lt_store *s, int64_t id, int hist) {
    char *t = NULL;
    lt_status st = lt_store_run_to_json(s, id, hist, &t);
    CHECK(st == LT_OK, "run_to_json: %s", lt_errmsg());
    json_t *j = t ? json_loads(t, 0, NULL) : NULL;
    free(t);
    return j;
}

static int64_t sql_count(const char *db, const char *sql) {
    sqlite3 *h;
    int64_t n = -1;
    if (sqlite3_open(db, &h) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(h);
    return n;
}

/* child: one run, n metric points + params, its own handle; exit code = failures */
static int writer(const char *dir, int n, const char *name) {
    lt_store *s;
    if (lt_store_open(dir, &s) != LT_OK) {
        fprintf(stderr, "writer open: %s\n", lt_errmsg());
        return 1;
    }
    lt_track_run_desc d = {.experiment = "conc", .name = name};
    int64_t id;
    int bad = 0;
    if (lt_store_run_begin(s, &d, &id) != LT_OK) {
        fprintf(stderr, "writer begin: %s\n", lt_errmsg());
        bad++;
    }
    for (int i = 0; i < n && !bad; i++) {
        if (lt_store_log_metric(s, id, "train_loss", i, 1.0 / (i + 1)) != LT_OK ||
            (i % 50 == 0 && lt_store_log_param(s, id, "p", name) != LT_OK)) {
            fprintf(stderr, "writer %s step %d: %s\n", name, i, lt_errmsg());
            bad++;
        }
    }
    if (!bad && lt_store_run_end(s, id, LT_TRACK_FINISHED) != LT_OK) bad++;
    lt_store_close(s);
    return bad;
}

int main(void) {
    const char *tmp = lt_tmpdir();
    char dir[600], db[700];
    snprintf(dir, sizeof dir, "%s/st/.loratune", tmp);
    lt_store *s;
    CHECK_OK(lt_store_open(dir, &s));
    snprintf(db, sizeof db, "%s/store.db", dir);
    CHECK(lt_path_exists(db), "store.db created");
    CHECK(sql_count(db, "PRAGMA user_version") == LT_STORE_SCHEMA_VERSION, "user_version");
    CHECK(sql_count(db, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode='wal'") == 1,
          "WAL journal");

    /* a run with everything */
    char art[700];
    snprintf(art, sizeof art, "%s/adapter.bin", tmp);
    FILE *f = fopen(art, "wb");
    fputs("abc", f);
    fclose(f);
    char md5[33], sha[65];
    int64_t size;
    CHECK_OK(lt_file_md5(art, md5, &size));
    CHECK(!strcmp(md5, "900150983cd24fb0d6963f7d28e17f72") && size == 3, "md5 abc %s", md5);
    CHECK_OK(lt_file_sha256(art, sha, NULL));
    CHECK(!strcmp(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
          "sha256");

    lt_track_run_desc d = {.experiment = "exp1",
                           .name = "first",
                           .command = "loratune train -c x",
                           .config_json = "{\"lr\": 0.001, \"lora\": {\"r\": 8}}",
                           .has_seed = 1,
                           .seed = 7,
                           .data_path = "data.jsonl",
                           .data_md5 = md5,
                           .record_hardware = 1};
    int64_t r1, r2;
    CHECK_OK(lt_store_run_begin(s, &d, &r1));
    CHECK_OK(lt_store_log_params_json(
        s, r1,
        "{\"model\": \"base.gguf\", \"lora\": {\"r\": 8, \"alpha\": 16.5}, \"pack\": true}"));
    CHECK_OK(lt_store_log_param(s, r1, "lr", "0.001"));
    CHECK_OK(lt_store_set_tag(s, r1, "purpose", "test"));
    double losses[] = {2.5, 2.0, 1.25, 1.5, 1.75};
    for (int i = 0; i < 5; i++)
        CHECK_OK(lt_store_log_metric(s, r1, "train_loss", i + 1, losses[i]));
    const char *keys[] = {"val_loss", "val_loss"};
    int64_t steps[] = {2, 4};
    double vals[] = {2.2, 1.9};
    CHECK_OK(lt_store_log_metrics(s, r1, 2, keys, steps, vals));
    CHECK_OK(lt_store_log_metric(s, r1, "val_loss", 4, 1.8)); /* replaces step 4 */
    CHECK_OK(lt_store_log_artifact(s, r1, art, "adapter"));
    CHECK_OK(lt_store_run_end(s, r1, LT_TRACK_FINISHED));
    CHECK_ERR(lt_store_log_metric(s, 9999, "x", 0, 1), LT_ERR_NOTFOUND, "no run #9999");
    CHECK_ERR(lt_store_log_params_json(s, r1, "[1]"), LT_ERR_ARG, "JSON object");

    json_t *j = run_json(s, r1, 1);
    CHECK(j && !strcmp(json_string_value(json_object_get(j, "status")), "finished"), "status");
    CHECK(j && !strcmp(json_string_value(json_object_get(j, "experiment")), "exp1"), "experiment");
    CHECK(json_integer_value(json_object_get(j, "seed")) == 7, "seed");
    CHECK(json_number_value(json_object_get(json_object_get(j, "config"), "lr")) == 0.001,
          "config");
    json_t *p = json_object_get(j, "params");
    CHECK(!strcmp(json_string_value(json_object_get(p, "lora.r")), "8"), "nested param");
    CHECK(!strcmp(json_string_value(json_object_get(p, "lora.alpha")), "16.5"), "real param");
    CHECK(!strcmp(json_string_value(json_object_get(p, "pack")), "true"), "bool param");
    CHECK(!strcmp(json_string_value(json_object_get(p, "model")), "base.gguf"), "string param");
    json_t *tl = json_object_get(json_object_get(j, "metrics"), "train_loss");
    CHECK(json_number_value(json_object_get(tl, "last")) == 1.75 &&
              json_integer_value(json_object_get(tl, "last_step")) == 5,
          "last");
    CHECK(json_number_value(json_object_get(tl, "min")) == 1.25 &&
              json_integer_value(json_object_get(tl, "min_step")) == 3,
          "min");
    CHECK(json_number_value(json_object_get(tl, "max")) == 2.5 &&
              json_integer_value(json_object_get(tl, "max_step")) == 1,
          "max");
    CHECK(json_integer_value(json_object_get(tl, "count")) == 5, "count");
    json_t *vl = json_object_get(json_object_get(j, "metrics"), "val_loss");
    CHECK(json_number_value(json_object_get(vl, "last")) == 1.8 &&
              json_integer_value(json_object_get(vl, "count")) == 2,
          "replaced point");
    json_t *h = json_object_get(json_object_get(j, "metric_history"), "train_loss");
    CHECK(json_array_size(h) == 5 &&
              json_number_value(json_array_get(json_array_get(h, 2), 1)) == 1.25,
          "history");
    json_t *a0 = json_array_get(json_object_get(j, "artifacts"), 0);
    CHECK(a0 && !strcmp(json_string_value(json_object_get(a0, "sha256")), sha) &&
              json_integer_value(json_object_get(a0, "size")) == 3,
          "artifact");
    json_t *hw = json_object_get(j, "hardware");
    CHECK(json_is_object(json_object_get(hw, "cpu")), "hardware recorded");
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(j, "data"), "md5")), md5),
          "data md5");
    const char *uuid = json_string_value(json_object_get(j, "uuid"));
    char prefix[9];
    snprintf(prefix, sizeof prefix, "%.8s", uuid ? uuid : "");
    json_decref(j);

    lt_track_run_desc d2 = {.experiment = "exp2", .name = "second"};
    CHECK_OK(lt_store_run_begin(s, &d2, &r2));
    int64_t got;
    CHECK_OK(lt_store_run_resolve(s, "last", &got));
    CHECK(got == r2, "last");
    CHECK_OK(lt_store_run_resolve(s, "#1", &got));
    CHECK(got == r1, "#1");
    CHECK_OK(lt_store_run_resolve(s, prefix, &got));
    CHECK(got == r1, "uuid prefix %s", prefix);
    CHECK_OK(lt_store_run_resolve(s, "first", &got));
    CHECK(got == r1, "by name");
    CHECK_ERR(lt_store_run_resolve(s, "nope", &got), LT_ERR_NOTFOUND, "no run 'nope'");

    char *t;
    CHECK_OK(lt_store_runs_json(s, "exp1", 0, &t));
    j = json_loads(t, 0, NULL);
    free(t);
    CHECK(json_array_size(j) == 1, "list filtered by experiment");
    json_decref(j);
    CHECK_OK(lt_store_runs_json(s, NULL, 0, &t));
    j = json_loads(t, 0, NULL);
    free(t);
    CHECK(json_array_size(j) == 2 &&
              json_integer_value(json_object_get(json_array_get(j, 0), "id")) == r2,
          "newest first");
    json_decref(j);

    /* registry */
    int v1, v2;
    lt_registry_desc md = {.name = "tiny"};
    CHECK_OK(lt_registry_register(s, r1, &md, &v1));
    CHECK_OK(lt_registry_register(s, r2, &md, &v2));
    CHECK(v1 == 1 && v2 == 2, "versions %d %d", v1, v2);
    CHECK_OK(lt_registry_promote(s, "tiny", 1, LT_STAGE_PRODUCTION, 1));
    CHECK_OK(lt_registry_promote(s, "tiny", 2, LT_STAGE_PRODUCTION, 1));
    CHECK_OK(lt_registry_model_json(s, "tiny", 0, &t));
    j = json_loads(t, 0, NULL);
    free(t);
    json_t *vs = json_object_get(j, "versions");
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(vs, 0), "stage")), "archived"),
          "old production archived");
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(vs, 1), "stage")), "production"),
          "new production");
    json_t *v0 = json_array_get(vs, 0);
    CHECK(!strcmp(json_string_value(json_object_get(v0, "adapter_path")), art),
          "adapter from artifacts");
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(v0, "base"), "name")),
                  "base.gguf"),
          "base from params");
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(v0, "data"), "md5")), md5),
          "data version");
    CHECK(json_is_object(json_object_get(v0, "hardware")), "hardware copied");
    json_decref(j);
    CHECK_ERR(lt_registry_promote(s, "tiny", 9, LT_STAGE_STAGING, 1), LT_ERR_NOTFOUND, "version 9");
    lt_stage stg;
    CHECK_ERR(lt_stage_parse("prod", &stg), LT_ERR_ARG, "expected none, staging");
    CHECK_OK(lt_registry_list_json(s, &t));
    j = json_loads(t, 0, NULL);
    free(t);
    CHECK(json_integer_value(
              json_object_get(json_object_get(json_array_get(j, 0), "stages"), "production")) == 2,
          "list stages");
    json_decref(j);

    /* delete */
    CHECK_ERR(lt_store_run_delete(s, r1), LT_ERR_ARG, "registered as model 'tiny'");
    int64_t r3;
    CHECK_OK(lt_store_run_begin(s, &d2, &r3));
    CHECK_OK(lt_store_log_metric(s, r3, "m", 1, 1.0));
    CHECK_OK(lt_store_run_delete(s, r3));
    CHECK(sql_count(db, "SELECT count(*) FROM metrics WHERE run_id=3") == 0, "metrics cascade");
    CHECK_OK(lt_store_check(s));
    lt_store_close(s);

    /* two writers at once on a fresh store (both also create it) */
    char cdir[600];
    snprintf(cdir, sizeof cdir, "%s/conc", tmp);
    pid_t pa = fork();
    if (pa == 0) _exit(writer(cdir, 400, "a"));
    pid_t pb = fork();
    if (pb == 0) _exit(writer(cdir, 400, "b"));
    int sa, sb;
    waitpid(pa, &sa, 0);
    waitpid(pb, &sb, 0);
    CHECK(WIFEXITED(sa) && WEXITSTATUS(sa) == 0, "writer a failed");
    CHECK(WIFEXITED(sb) && WEXITSTATUS(sb) == 0, "writer b failed");
    char cdb[700];
    snprintf(cdb, sizeof cdb, "%s/store.db", cdir);
    CHECK(sql_count(cdb, "SELECT count(*) FROM metrics") == 800, "both series complete");

    /* a writer killed mid-write */
    pid_t pk = fork();
    if (pk == 0) {
        lt_store *ks;
        if (lt_store_open(cdir, &ks) != LT_OK) _exit(1);
        lt_track_run_desc kd = {.name = "victim"};
        int64_t kid;
        if (lt_store_run_begin(ks, &kd, &kid) != LT_OK) _exit(1);
        for (int64_t i = 0;; i++) {
            lt_store_log_metric(ks, kid, "train_loss", i, 1.0);
            if (i % 7 == 0) lt_store_log_artifact(ks, kid, art, "checkpoint");
        }
    }
    usleep(300 * 1000);
    kill(pk, SIGKILL);
    waitpid(pk, NULL, 0);
    CHECK_OK(lt_store_open(cdir, &s));
    if (s) {
        CHECK_OK(lt_store_check(s));
        CHECK_OK(lt_store_run_resolve(s, "victim", &got));
        j = run_json(s, got, 0);
        CHECK(j && !strcmp(json_string_value(json_object_get(j, "status")), "killed"),
              "killed run reported as killed");
        CHECK(json_integer_value(json_object_get(
                  json_object_get(json_object_get(j, "metrics"), "train_loss"), "count")) > 10,
              "points before the kill kept");
        json_decref(j);
        lt_store_close(s);
    }

    /* damaged pages (valid header): every read names the file and says it is damaged.
     * The b-tree page-type byte of every page but page 1 is overwritten: SQLite checks that
     * byte whenever it loads a page, whereas garbage in a cell pointer array is masked to the
     * page size and caught or not depending on the bytes it lands on. */
    {
        char wal2[720];
        snprintf(wal2, sizeof wal2, "%s-wal", cdb);
        unlink(wal2);
        FILE *cf = fopen(cdb, "r+b");
        fseek(cf, 0, SEEK_END);
        long sz = ftell(cf);
        for (long off = 4096; off + 4096 <= sz; off += 4096) {
            fseek(cf, off, SEEK_SET);
            fputc(0xff, cf);
        }
        fclose(cf);
        lt_store *ds = NULL;
        lt_status dst = lt_store_open(cdir, &ds);
        char *dt = NULL;
        if (dst == LT_OK) dst = lt_store_runs_json(ds, NULL, 0, &dt);
        CHECK(dst == LT_ERR_FORMAT && strstr(lt_errmsg(), "damaged") && strstr(lt_errmsg(), cdb),
              "damaged pages: %s: %s", lt_status_name(dst), lt_errmsg());
        free(dt);
        lt_store_close(ds);
    }

    /* a store from a newer loratune */
    char ndir[600], ndb[700];
    snprintf(ndir, sizeof ndir, "%s/newer", tmp);
    CHECK_OK(lt_store_open(ndir, &s));
    lt_store_close(s);
    snprintf(ndb, sizeof ndb, "%s/store.db", ndir);
    sqlite3 *hh;
    sqlite3_open(ndb, &hh);
    sqlite3_exec(hh, "PRAGMA user_version=99", NULL, NULL, NULL);
    sqlite3_close(hh);
    s = NULL;
    CHECK_ERR(lt_store_open(ndir, &s), LT_ERR_UNSUPPORTED,
              "schema version 99 was written by a newer loratune");
    CHECK(s == NULL, "no handle");
    CHECK(strstr(lt_errmsg(), ndb) != NULL, "message names the file: %s", lt_errmsg());

    /* not a database */
    char bdir[600], bdb[700];
    snprintf(bdir, sizeof bdir, "%s/bad", tmp);
    CHECK_OK(lt_store_open(bdir, &s));
    lt_store_close(s);
    snprintf(bdb, sizeof bdb, "%s/store.db", bdir);
    char wal[720];
    snprintf(wal, sizeof wal, "%s-wal", bdb);
    unlink(wal);
    f = fopen(bdb, "r+b");
    for (int i = 0; i < 4096; i++)
        fputc(0x5a, f);
    fclose(f);
    CHECK_ERR(lt_store_open(bdir, &s), LT_ERR_FORMAT, "damaged or not a loratune store");
    CHECK(strstr(lt_errmsg(), bdb) != NULL, "message names the file: %s", lt_errmsg());

    /* a store path that is a file */
    char fdir[600];
    snprintf(fdir, sizeof fdir, "%s/afile", tmp);
    f = fopen(fdir, "w");
    fclose(f);
    CHECK_ERR(lt_store_open(fdir, &s), LT_ERR_IO, "not a folder");

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    LT_TEST_END();
}
