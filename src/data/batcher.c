/* batcher.c - one split cut into lt_batch micro-batches.
 *
 * An example of n tokens fills L = min(n - 1, seq_len) positions of a row: inputs
 * tokens[0..L), targets[t] = tokens[t + 1] where mask[t + 1], else LT_IGNORE_INDEX (its last
 * token is only ever a target, as in mlx-lm's batch[:, :-1] / batch[:, 1:]).
 *
 * Each epoch has an order of the examples: the file order, or (shuffle) a permutation that is a
 * pure function of (seed, epoch). Rows are then made in that order -- one example per row, or,
 * packed, as many consecutive examples as fit in seq_len (a new row starts when the next one
 * does not fit). A micro-batch is batch_size consecutive rows (the epoch's last may have fewer),
 * padded to its longest row with token 0 and target LT_IGNORE_INDEX. Packed rows carry pos[]
 * (0, 1, ... restarting at every example) and seq[] (0, 1, ... per example in the row; padding
 * gets its own id), so no token attends to or predicts across examples. Every example with
 * n >= 2 appears in exactly one row per epoch.
 *
 * State = (epoch, batches taken in it); set_state rebuilds the epoch's rows, so a resumed run
 * sees the same batches. */
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void lt_data_permute(int64_t *perm, int64_t n, uint64_t seed, uint64_t stream) {
    uint64_t st = seed;
    uint64_t mix = stream;
    st ^= splitmix64(&mix);
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(splitmix64(&st) % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

struct lt_batcher {
    const lt_data *d;
    lt_split split;
    lt_batcher_opts o;
    int64_t n_ex;
    int64_t *order;     /* [n_ex] example indices of the current epoch, in row order */
    int64_t *row_start; /* [n_ex + 1] row r holds order[row_start[r] .. row_start[r + 1]) */
    int64_t n_rows;     /* rows of the current epoch (examples with n >= 2 only) */
    int64_t epoch, index;
    int32_t *tokens, *targets, *pos, *seq; /* [batch_size * seq_len] */
};

static int ex_len(const lt_batcher *b, int64_t i) {
    const lt_example *e = lt_data_example(b->d, b->split, i);
    int L = e->n - 1;
    return L < b->o.seq_len ? L : b->o.seq_len;
}

/* The order and rows of epoch `epoch`. */
static void build_epoch(lt_batcher *b, int64_t epoch) {
    if (b->o.shuffle)
        lt_data_permute(b->order, b->n_ex, b->o.seed, 0xe90c0000ull + (uint64_t)epoch);
    else
        for (int64_t i = 0; i < b->n_ex; i++)
            b->order[i] = i;
    /* drop examples that fill no position (n < 2) */
    int64_t m = 0;
    for (int64_t i = 0; i < b->n_ex; i++)
        if (ex_len(b, b->order[i]) >= 1) b->order[m++] = b->order[i];
    int64_t r = 0, fill = 0;
    for (int64_t i = 0; i < m; i++) {
        int L = ex_len(b, b->order[i]);
        if (i == 0 || !b->o.pack || fill + L > b->o.seq_len) {
            b->row_start[r++] = i;
            fill = 0;
        }
        fill += L;
    }
    b->row_start[r] = m;
    b->n_rows = r;
    b->epoch = epoch;
    b->index = 0;
}

lt_status lt_batcher_create(const lt_data *d, lt_split s, const lt_batcher_opts *o,
                            lt_batcher **out) {
    *out = NULL;
    if (!d || !o) return lt_error(LT_ERR_ARG, "batcher: NULL data or options");
    if ((unsigned)s >= LT_SPLIT_COUNT) return lt_error(LT_ERR_ARG, "batcher: bad split %d", (int)s);
    if (o->batch_size < 1)
        return lt_error(LT_ERR_ARG, "batcher: batch_size: expected >= 1, got %d", o->batch_size);
    if (o->seq_len < 1)
        return lt_error(LT_ERR_ARG, "batcher: seq_len: expected >= 1, got %d", o->seq_len);
    int64_t n = lt_data_count(d, s);
    if (n == 0)
        return lt_error(LT_ERR_NOTFOUND, "batcher: the %s split has no examples", lt_split_name(s));
    if (!lt_data_example(d, s, 0))
        return lt_error(LT_ERR_ARG, "batcher: the data was opened without a tokenizer");
    lt_batcher *b = lt_calloc(1, sizeof *b);
    if (!b) return lt_error(LT_ERR_NOMEM, "out of memory");
    b->d = d;
    b->split = s;
    b->o = *o;
    b->n_ex = n;
    size_t bt = (size_t)o->batch_size * (size_t)o->seq_len;
    b->order = lt_malloc((size_t)n * sizeof *b->order);
    b->row_start = lt_malloc((size_t)(n + 1) * sizeof *b->row_start);
    b->tokens = lt_malloc(bt * sizeof(int32_t));
    b->targets = lt_malloc(bt * sizeof(int32_t));
    b->pos = lt_malloc(bt * sizeof(int32_t));
    b->seq = lt_malloc(bt * sizeof(int32_t));
    if (!b->order || !b->row_start || !b->tokens || !b->targets || !b->pos || !b->seq) {
        lt_batcher_free(b);
        return lt_error(LT_ERR_NOMEM, "out of memory for the batcher");
    }
    build_epoch(b, 0);
    if (b->n_rows == 0) {
        lt_batcher_free(b);
        return lt_error(LT_ERR_FORMAT, "batcher: no example of the %s split has 2 tokens or more",
                        lt_split_name(s));
    }
    *out = b;
    return LT_OK;
}

void lt_batcher_free(lt_batcher *b) {
    if (!b) return;
    free(b->order);
    free(b->row_start);
    free(b->tokens);
    free(b->targets);
    free(b->pos);
    free(b->seq);
    free(b);
}

int64_t lt_batcher_epoch_batches(const lt_batcher *b) {
    if (!b) return 0;
    return (b->n_rows + b->o.batch_size - 1) / b->o.batch_size;
}

int64_t lt_batch_count(const lt_batch *b) {
    int64_t n = 0;
    for (int64_t i = 0; i < (int64_t)b->B * b->T; i++)
        n += b->targets[i] != LT_IGNORE_INDEX;
    return n;
}

lt_status lt_batcher_next(lt_batcher *bt, lt_batch *out) {
    if (!bt || !out) return lt_error(LT_ERR_ARG, "batcher: NULL argument");
    if (bt->index >= lt_batcher_epoch_batches(bt)) build_epoch(bt, bt->epoch + 1);
    int64_t r0 = bt->index * bt->o.batch_size;
    int64_t r1 = r0 + bt->o.batch_size;
    if (r1 > bt->n_rows) r1 = bt->n_rows;
    int B = (int)(r1 - r0), T = 1;
    for (int64_t r = r0; r < r1; r++) {
        int fill = 0;
        for (int64_t i = bt->row_start[r]; i < bt->row_start[r + 1]; i++)
            fill += ex_len(bt, bt->order[i]);
        if (fill > T) T = fill;
    }
    for (int64_t r = r0; r < r1; r++) {
        size_t base = (size_t)(r - r0) * (size_t)T;
        int t = 0, sid = 0;
        for (int64_t i = bt->row_start[r]; i < bt->row_start[r + 1]; i++, sid++) {
            const lt_example *e = lt_data_example(bt->d, bt->split, bt->order[i]);
            int L = ex_len(bt, bt->order[i]);
            for (int j = 0; j < L; j++, t++) {
                bt->tokens[base + t] = e->tokens[j];
                bt->targets[base + t] = e->mask[j + 1] ? e->tokens[j + 1] : LT_IGNORE_INDEX;
                bt->pos[base + t] = j;
                bt->seq[base + t] = sid;
            }
        }
        for (int j = 0; t < T; t++, j++) {
            bt->tokens[base + t] = 0;
            bt->targets[base + t] = LT_IGNORE_INDEX;
            bt->pos[base + t] = j;
            bt->seq[base + t] = sid;
        }
    }
    out->B = B;
    out->T = T;
    out->tokens = bt->tokens;
    out->targets = bt->targets;
    out->pos = bt->o.pack ? bt->pos : NULL;
    out->seq = bt->o.pack ? bt->seq : NULL;
    bt->index++;
    return LT_OK;
}

void lt_batcher_get_state(const lt_batcher *b, int64_t *epoch, int64_t *index) {
    if (epoch) *epoch = b ? b->epoch : 0;
    if (index) *index = b ? b->index : 0;
}

lt_status lt_batcher_set_state(lt_batcher *b, int64_t epoch, int64_t index) {
    if (!b) return lt_error(LT_ERR_ARG, "batcher: NULL");
    if (epoch < 0) return lt_error(LT_ERR_ARG, "batcher state: epoch %lld < 0", (long long)epoch);
    build_epoch(b, epoch);
    if (index < 0 || index > lt_batcher_epoch_batches(b))
        return lt_error(LT_ERR_ARG, "batcher state: index %lld: expected [0, %lld] in epoch %lld",
                        (long long)index, (long long)lt_batcher_epoch_batches(b), (long long)epoch);
    b->index = index;
    return LT_OK;
}
