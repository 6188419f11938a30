/* fuzz_yaml_config.c - a run config file (lt_run_opts_load_yaml: libyaml events, one
 * mapping of option names to scalars, duplicate keys, each value through the option table's
 * parser) and the cross-option checks (lt_run_opts_validate). Property: the options read
 * are written back (lt_run_opts_to_yaml) as a file that reads back to the same text. Seeds:
 * run configs as `loratune train` writes them (run_config.yaml) and as docs/ show. */
#include "fuzz_util.h"
#include "loratune/run.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("config.yaml", data, size);
    lt_run_opts o;
    lt_run_opts_default(&o);
    lt_status s = lt_run_opts_load_yaml(&o, path);
    if (s) {
        fz_refused(s, "lt_run_opts_load_yaml");
        return 0;
    }
    if ((s = lt_run_opts_validate(&o, 1)) != LT_OK) fz_refused(s, "lt_run_opts_validate");
    char *y1 = NULL, *y2 = NULL;
    FZ_CHECK(lt_run_opts_to_yaml(&o, &y1) == LT_OK, "options read are written");
    const char *p2 = fz_write("again.yaml", (const uint8_t *)y1, strlen(y1));
    lt_run_opts o2;
    lt_run_opts_default(&o2);
    if ((s = lt_run_opts_load_yaml(&o2, p2)) != LT_OK) {
        fprintf(stderr, "fuzz: written options do not read back: %s\n--- written:\n%s\n",
                lt_errmsg(), y1);
        abort();
    }
    FZ_CHECK(lt_run_opts_to_yaml(&o2, &y2) == LT_OK, "options read back are written");
    if (strcmp(y1, y2)) {
        fprintf(stderr, "fuzz: options change on a round trip:\n--- first:\n%s\n--- then:\n%s\n",
                y1, y2);
        abort();
    }
    free(y1);
    free(y2);
    return 0;
}
