/* test_faults_model.c - allocation fault injection over model loading (tests/lt_fault.h):
 * for N = 1, 2, ... the N-th allocation of the load fails, and the load must return
 * LT_ERR_NOMEM with a message, crash nowhere and leak nothing (LeakSanitizer in the ASan
 * build), until N is past the load's last allocation and it succeeds.
 *
 * What is loaded (stories260K, the three forms of tests/fixtures): the GGUF (whole and lazy)
 * with its embedded vocabulary, the Hugging Face folder (whole and lazy) with its
 * tokenizer.model, and the llama2.c .bin with tok512.bin; then the byte-level BPE
 * tokenizer.json of GPT-2 (merges as pairs) and of SmolLM (merges as strings, added tokens),
 * each cut here to its first 256 merges (the full files cost ~50,000 allocations a load), and
 * the llama sentencepiece vocabulary of a GGUF (32,000 tokens).
 *
 * Budget (Release ~10 s, ASan ~60 s): the stories260K loads and the cut tokenizers walk every N
 * (500-900 allocations each); the llama-spm GGUF every N to 200, then a stride (300 runs in
 * all). Then the persistent variant (every allocation from N on fails, which exercises the
 * clean-up code's own allocations) of the stories260K loads, every N. */
#include <stdio.h>
#include <string.h>

#include "loratune/chat.h"
#include "loratune/model.h"
#include "loratune/tokenizer.h"
#include "lt_fault.h"
#include "lt_test.h"

typedef struct {
    const char *name;
    char model[1024];     /* model path, or "": only the tokenizer */
    char tokenizer[1024]; /* tokenizer path */
    int lazy;
    long full, max_runs; /* walk plan (lt_fault.h) */
} load_case;

static lt_status load(void *ctx) {
    const load_case *c = ctx;
    lt_model_load_opts o = {0};
    o.lazy = c->lazy;
    lt_model *m = NULL;
    lt_tokenizer *t = NULL;
    lt_status st = c->model[0] ? lt_model_load(c->model, &o, &m) : LT_OK;
    if (!st) st = lt_tokenizer_load(c->tokenizer, &t);
    if (!st && m && m->config.vocab_size != lt_tokenizer_vocab_size(t))
        st = lt_error(LT_ERR_INTERNAL, "vocab sizes differ");
    lt_tokenizer_free(t);
    lt_model_free(m);
    return st;
}

static load_case mk(const char *name, const char *model, const char *tok, int lazy, long full,
                    long max_runs) {
    load_case c = {name, "", "", lazy, full, max_runs};
    if (model) snprintf(c.model, sizeof c.model, "%s", lt_fixture(model));
    snprintf(c.tokenizer, sizeof c.tokenizer, "%s", tok[0] == '/' ? tok : lt_fixture(tok));
    return c;
}

int main(void) {
    const char *tmp = lt_fault_tmpdir();
    char gpt2[1024], smollm[1024];
    snprintf(gpt2, sizeof gpt2, "%s/gpt2-cut.json", tmp);
    snprintf(smollm, sizeof smollm, "%s/smollm-cut.json", tmp);
    lt_fault_cut_tokenizer(lt_fixture("tokenizers/gpt2/tokenizer.json"), gpt2, 256);
    lt_fault_cut_tokenizer(lt_fixture("tokenizers/smollm/tokenizer.json"), smollm, 256);
    const long all = 1000000; /* every N */
    load_case cases[] = {
        mk("gguf", "stories260K/stories260K.gguf", "stories260K/stories260K.gguf", 0, all, all),
        mk("gguf lazy", "stories260K/stories260K.gguf", "stories260K/stories260K.gguf", 1, all,
           all),
        mk("hf folder", "stories260K-hf", "stories260K-hf", 0, all, all),
        mk("hf folder lazy", "stories260K-hf", "stories260K-hf", 1, all, all),
        mk("llama2.c bin", "stories260K/stories260K.bin", "stories260K/tok512.bin", 0, all, all),
        mk("tokenizer gpt2 (cut)", NULL, gpt2, 0, all, all),
        mk("tokenizer smollm (cut)", NULL, smollm, 0, all, all),
        mk("tokenizer llama-spm gguf", NULL, "tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf", 0,
           200, 300),
    };
    for (int persistent = 0; persistent <= 1; persistent++) {
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            lt_fault_plan p = {LT_FAULT_ALLOC, 0, 0, persistent, cases[i].full, cases[i].max_runs};
            if (persistent && !cases[i].model[0]) continue;
            char name[96];
            snprintf(name, sizeof name, "load %s%s", cases[i].name,
                     persistent ? " (persistent)" : "");
            lt_fault_ops ops = {NULL, load, NULL, NULL};
            lt_fault_walk(name, &p, &ops, &cases[i]);
        }
    }
    lt_fault_rmtree(tmp);
    LT_TEST_END();
}
