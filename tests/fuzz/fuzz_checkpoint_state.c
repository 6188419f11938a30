/* fuzz_checkpoint_state.c - a checkpoint's state (the "loratune.state" JSON a resume trusts)
 * and its validation: lt_checkpoint_verify (format, counters, ranges, consistency, checksums,
 * finite tensors) and lt_checkpoint_load_opts (the recorded options through the option
 * table). The input is the state text; the harness puts it in a checkpoint file with three
 * small fixed tensors (w, optimizer.m.w, optimizer.v.w, as a checkpoint holds them) and
 * reseals it (loratune.state.sha256 = the input's SHA-256), so that the field checks are
 * what is fuzzed, as with a state edited and resealed by hand. Seeds: states of real
 * checkpoints with their "sha256" sums redone for these tensors (tools/gen_fuzz_seeds.py). */
#include <jansson.h>
#include <openssl/sha.h>

#include "fuzz_util.h"
#include "loratune/run.h"

static const float tw[2] = {1.0f, -1.0f}, tm[2] = {0.125f, -0.125f}, tv[2] = {0.0625f, 0.25f};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned char d[SHA256_DIGEST_LENGTH];
    char hex[65];
    SHA256(data, size, d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    json_t *state = json_stringn((const char *)data, size);
    if (!state) return 0; /* not UTF-8: a safetensors header cannot hold it */
    json_t *h = json_pack("{s:{s:o,s:s,s:s}}", "__metadata__", "loratune.state", state,
                          "loratune.state.sha256", hex, "format", "pt");
    const char *names[3] = {"w", "optimizer.m.w", "optimizer.v.w"};
    for (int i = 0; i < 3; i++)
        json_object_set_new(h, names[i],
                            json_pack("{s:s,s:[i],s:[i,i]}", "dtype", "F32", "shape", 2,
                                      "data_offsets", 8 * i, 8 * i + 8));
    char *hdr = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    FZ_CHECK(hdr != NULL, "the header");
    size_t hl = strlen(hdr), n = 8 + hl + 24;
    uint8_t *file = malloc(n);
    FZ_CHECK(file != NULL, "memory");
    uint64_t le = hl;
    for (int i = 0; i < 8; i++)
        file[i] = (uint8_t)(le >> (8 * i));
    memcpy(file + 8, hdr, hl);
    memcpy(file + 8 + hl, tw, 8);
    memcpy(file + 16 + hl, tm, 8);
    memcpy(file + 24 + hl, tv, 8);
    free(hdr);
    const char *path = fz_write("step-00000002.safetensors", file, n);
    free(file);

    lt_status s = lt_checkpoint_verify(path);
    if (s) fz_refused(s, "lt_checkpoint_verify");
    lt_run_opts o;
    lt_run_opts_default(&o);
    if ((s = lt_checkpoint_load_opts(path, &o)) != LT_OK) fz_refused(s, "lt_checkpoint_load_opts");
    return 0;
}
