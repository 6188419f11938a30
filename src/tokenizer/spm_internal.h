/* spm_internal.h - internal: the sentencepiece-style BPE vocabulary shared by
 * spm_tokenizer.c (vocabulary, encode/decode, the llama2.c and GGUF loaders) and
 * spm_proto.c (the tokenizer.model protobuf reader).
 *
 * Invariants of a finished spm_model: pieces[0..n) are NUL-terminated and owned by the
 * model, non-empty and NUL-free unless lenient (GGUF); the special and user-defined lists
 * hold only non-empty pieces; every id stored anywhere (unk/bos/eos/pad, byte_ids, the piece map,
 * the special lists) is -1 or in [0, n); byte_ids[b] names a piece of type SPM_BYTE whose
 * text is exactly "<0xHH>" (upper-case hex). */
#ifndef LT_SPM_INTERNAL_H
#define LT_SPM_INTERNAL_H

#include "tokenizer_impl.h"

/* Piece types, numbered as sentencepiece's ModelProto.SentencePiece.Type and GGUF's
 * tokenizer.ggml.token_type. */
enum {
    SPM_NORMAL = 1,
    SPM_UNKNOWN = 2,
    SPM_CONTROL = 3,
    SPM_USER_DEFINED = 4,
    SPM_UNUSED = 5,
    SPM_BYTE = 6,
};

typedef struct {
    char *text;   /* NUL-terminated (pieces never contain NUL: rejected at load) */
    uint32_t len; /* bytes */
    float score;  /* merge priority: higher merges first */
    uint8_t type; /* SPM_* */
} spm_piece;

typedef struct {
    spm_piece *pieces; /* [n] */
    int32_t n, cap;
    /* piece text -> id over all pieces (open addressing, linear probing, id -1 empty);
     * each slot keeps the text's hash next to the id so a probe rarely touches the text */
    struct spm_slot {
        int32_t id;
        uint32_t hash;
    } * slots;
    uint32_t mask;
    int32_t byte_ids[256];                  /* id of "<0xNN>", -1 if absent */
    int32_t unk_id, bos_id, eos_id, pad_id; /* -1 if none */
    int byte_fallback;                      /* unknown text -> byte pieces instead of unk */
    int add_dummy_prefix;                   /* prepend U+2581 to each text fragment */
    int remove_extra_ws;                    /* drop leading/trailing spaces, collapse runs */
    int escape_ws;                          /* ' ' -> U+2581 */
    int add_bos, add_eos;                   /* what add_special adds */
    int has_unused;                         /* some piece is SPM_UNUSED (enables re-segmentation) */
    char *unk_surface; /* decode text for unk (sentencepiece default " \u2047 ") */
    size_t unk_surface_len;
    int32_t *user_defined; /* ids of USER_DEFINED pieces, longest first */
    int32_t n_user;
    int32_t *specials; /* CONTROL and UNKNOWN ids for parse_special, longest first */
    int32_t n_specials;
    uint8_t user_first[256];    /* 1 if some user-defined piece starts with this byte */
    uint8_t special_first[256]; /* same for the specials */
    int lenient;                /* GGUF: allow empty pieces and NUL bytes in pieces */
    const char *kind;           /* "spm", "llama2c" or "gguf-spm" */
    char *src;                  /* file name for messages (owned) */
} spm_model;

/* Vocabulary building. spm_model_init sets the defaults of a sentencepiece model (ids -1,
 * dummy prefix and whitespace escaping on, no extra-whitespace removal). */
void spm_model_init(spm_model *m, const char *src, const char *kind);
void spm_model_clear(spm_model *m); /* frees everything; safe on an initialised model */
/* Appends a piece (text copied). Rejects empty text and NUL bytes unless m->lenient. */
lt_status spm_model_add(spm_model *m, const char *text, size_t len, float score, int type);
/* Builds the lookup tables and checks the ids. strict_dupes: a repeated piece text is an
 * error (sentencepiece's rule); otherwise the later id wins (llama.cpp's rule for GGUF). */
lt_status spm_model_finish(spm_model *m, int strict_dupes);
int32_t spm_model_lookup(const spm_model *m, const char *s, size_t len); /* -1 if absent */
/* Wraps a finished model (taken, also on error) into a tokenizer handle. */
lt_status spm_model_wrap(spm_model *m, lt_tokenizer **out);

/* spm_proto.c: parses a serialized sentencepiece ModelProto (buf, size) into m (already
 * initialised; pieces appended, options set). Only BPE models are accepted. */
lt_status spm_proto_parse(spm_model *m, const uint8_t *buf, size_t size);

#endif
