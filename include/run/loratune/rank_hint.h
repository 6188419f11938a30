/* rank_hint.h - the LoRA rank suggested from the data, with its reason (docs/TUNE.md, "A rank
 * from the data"): printed by `loratune tune` / `compare` (and kept in tune.json), by
 * `loratune data check --model M` and given by the server's dataset preview.
 *
 * The rule: an adapter can store about 2 bits per trainable parameter (Allen-Zhu & Li 2024's
 * knowledge-capacity estimate, the one "LoRA Without Regret" reasons with), and supervised data
 * carries at most about 1 bit per completion (loss) token once the base model predicts most of
 * it (an upper estimate: the base model's loss per token is often well below 1 bit on
 * in-domain text). The suggestion is the smallest power-of-two rank r >= 4 (up to the cap:
 * 64, or the smallest side of the model's linears) whose adapter on every linear (q, k, v, o,
 * gate, up, down of every layer) has 2 r P >= T bits, P its parameters per unit of rank and T
 * the train split's loss tokens; beyond what the data fills, rank adds capacity and cost, not
 * quality. When even the cap falls short, the reason says so (full fine-tuning, or more
 * data per parameter, is the alternative). */
#ifndef LORATUNE_RANK_HINT_H
#define LORATUNE_RANK_HINT_H

#include <stdint.h>

#include "loratune/model.h"

typedef struct {
    int rank;                /* the suggestion */
    int cap;                 /* the largest rank searched (64 or the smallest linear side) */
    int64_t params_per_rank; /* trainable parameters per unit of rank, every linear */
    int64_t loss_tokens;     /* the train split's */
    int64_t examples;
    int short_of_data; /* 1: even the cap holds fewer bits than the data may carry */
    char reason[800];
} lt_rank_hint;

/* Fills *h (the caller's) for a model of config mc (borrowed) and the train split's loss
 * tokens and examples. */
void lt_rank_hint_compute(const lt_model_config *mc, int64_t loss_tokens, int64_t examples,
                          lt_rank_hint *h);

#endif
