/* spm_proto.c - a small protobuf wire-format reader and the sentencepiece ModelProto
 * fields loratune needs (tokenizer.model).
 *
 * Wire format: each field is a varint key (field number << 3 | wire type) followed by a
 * varint (type 0), 8 bytes (1), a varint length + that many bytes (2) or 4 bytes (5).
 * Groups (3, 4) are not used by sentencepiece and are rejected. Every read is checked
 * against the end of its enclosing message; a varint has at most 10 bytes and the 10th
 * may only carry the top bit; unknown fields are skipped. Nothing is allocated from a
 * count in the file: pieces grow one by one, each taking at least 2 file bytes.
 *
 * Fields read (proto2 defaults apply when absent):
 *   ModelProto: 1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
 *   SentencePiece: 1 piece (string), 2 score (float), 3 type (enum, default NORMAL)
 *   TrainerSpec: 3 model_type (UNIGRAM=1 default, BPE=2, WORD=3, CHAR=4),
 *     24 treat_whitespace_as_suffix, 35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id,
 *     43 pad_id, 44 unk_surface
 *   NormalizerSpec: 1 name, 2 precompiled_charsmap, 3 add_dummy_prefix (true),
 *     4 remove_extra_whitespaces (true), 5 escape_whitespaces (true) */
#include <stdlib.h>
#include <string.h>

#include "spm_internal.h"

typedef struct {
    const uint8_t *base; /* start of the whole file, for offsets in messages */
    const uint8_t *p, *end;
    const char *src;  /* file name */
    const char *what; /* message being read, for messages */
} pb_reader;

typedef struct {
    uint32_t field;
    int wire;
    uint64_t v;          /* wire 0, 1 (raw bits), 5 (raw bits) */
    const uint8_t *data; /* wire 2 */
    size_t len;          /* wire 2 */
} pb_field;

static size_t pb_off(const pb_reader *r) {
    return (size_t)(r->p - r->base);
}

static lt_status pb_varint(pb_reader *r, uint64_t *out) {
    uint64_t v = 0;
    size_t start = pb_off(r);
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end)
            return lt_error(LT_ERR_FORMAT,
                            "%s: protobuf: %s: varint at offset %zu is cut off by the end of "
                            "the message",
                            r->src, r->what, start);
        uint8_t b = *r->p++;
        if (i == 9 && b > 1)
            return lt_error(LT_ERR_FORMAT,
                            "%s: protobuf: %s: varint at offset %zu overflows 64 bits", r->src,
                            r->what, start);
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return LT_OK;
        }
    }
    return lt_error(LT_ERR_FORMAT, "%s: protobuf: %s: varint at offset %zu is longer than 10 bytes",
                    r->src, r->what, start);
}

/* Reads the next field; returns LT_OK with f filled. Caller checks r->p < r->end first. */
static lt_status pb_next(pb_reader *r, pb_field *f) {
    size_t start = pb_off(r);
    uint64_t key;
    lt_status st = pb_varint(r, &key);
    if (st != LT_OK) return st;
    if ((key >> 3) == 0 || (key >> 3) > 0x1fffffff)
        return lt_error(LT_ERR_FORMAT, "%s: protobuf: %s: invalid field number %llu at offset %zu",
                        r->src, r->what, (unsigned long long)(key >> 3), start);
    f->field = (uint32_t)(key >> 3);
    f->wire = (int)(key & 7);
    f->data = NULL;
    f->len = 0;
    f->v = 0;
    size_t left = (size_t)(r->end - r->p);
    switch (f->wire) {
    case 0:
        return pb_varint(r, &f->v);
    case 1:
    case 5: {
        size_t k = f->wire == 1 ? 8 : 4;
        if (left < k)
            return lt_error(LT_ERR_FORMAT,
                            "%s: protobuf: %s: field %u at offset %zu needs %zu bytes, %zu left",
                            r->src, r->what, f->field, start, k, left);
        uint64_t v = 0;
        for (size_t i = 0; i < k; i++)
            v |= (uint64_t)r->p[i] << (8 * i);
        r->p += k;
        f->v = v;
        return LT_OK;
    }
    case 2: {
        uint64_t len;
        st = pb_varint(r, &len);
        if (st != LT_OK) return st;
        left = (size_t)(r->end - r->p);
        if (len > left)
            return lt_error(LT_ERR_FORMAT,
                            "%s: protobuf: %s: field %u at offset %zu has length %llu but only "
                            "%zu bytes are left",
                            r->src, r->what, f->field, start, (unsigned long long)len, left);
        f->data = r->p;
        f->len = (size_t)len;
        r->p += len;
        return LT_OK;
    }
    default:
        return lt_error(LT_ERR_FORMAT,
                        "%s: protobuf: %s: field %u at offset %zu has wire type %d (expected "
                        "0, 1, 2 or 5)",
                        r->src, r->what, f->field, start, f->wire);
    }
}

static lt_status pb_want(const pb_reader *r, const pb_field *f, int wire, const char *name) {
    if (f->wire == wire) return LT_OK;
    return lt_error(LT_ERR_FORMAT, "%s: protobuf: %s.%s (field %u): wire type %d, expected %d",
                    r->src, r->what, name, f->field, f->wire, wire);
}

static pb_reader pb_sub(const pb_reader *r, const pb_field *f, const char *what) {
    pb_reader s = {r->base, f->data, f->data + f->len, r->src, what};
    return s;
}

/* proto int32: the varint is the 64-bit two's complement value, truncated. */
static int32_t pb_i32(uint64_t v) {
    return (int32_t)(uint32_t)v;
}

static lt_status parse_piece(spm_model *m, const pb_reader *parent, const pb_field *pf) {
    pb_reader r = pb_sub(parent, pf, "ModelProto.pieces");
    const uint8_t *text = NULL;
    size_t len = 0;
    int have_text = 0;
    float score = 0.0f;
    int type = SPM_NORMAL;
    while (r.p < r.end) {
        pb_field f;
        lt_status st = pb_next(&r, &f);
        if (st != LT_OK) return st;
        if (f.field == 1) {
            if ((st = pb_want(&r, &f, 2, "piece")) != LT_OK) return st;
            text = f.data;
            len = f.len;
            have_text = 1;
        } else if (f.field == 2) {
            if ((st = pb_want(&r, &f, 5, "score")) != LT_OK) return st;
            uint32_t bits = (uint32_t)f.v;
            memcpy(&score, &bits, 4);
        } else if (f.field == 3) {
            if ((st = pb_want(&r, &f, 0, "type")) != LT_OK) return st;
            if (f.v < SPM_NORMAL || f.v > SPM_BYTE)
                return lt_error(LT_ERR_FORMAT,
                                "%s: piece %d: type %llu (expected 1..6: NORMAL, UNKNOWN, "
                                "CONTROL, USER_DEFINED, UNUSED, BYTE)",
                                m->src, m->n, (unsigned long long)f.v);
            type = (int)f.v;
        }
    }
    if (!have_text)
        return lt_error(LT_ERR_FORMAT, "%s: piece %d: no piece text (field 1)", m->src, m->n);
    return spm_model_add(m, (const char *)text, len, score, type);
}

typedef struct {
    uint64_t model_type;
    int ws_suffix;
    int32_t unk_id, bos_id, eos_id, pad_id;
    const uint8_t *unk_surface;
    size_t unk_surface_len;
    int has_unk_surface;
    const uint8_t *norm_name;
    size_t norm_name_len;
    size_t charsmap_len;
} proto_opts;

static lt_status parse_trainer(spm_model *m, proto_opts *o, const pb_reader *parent,
                               const pb_field *pf) {
    pb_reader r = pb_sub(parent, pf, "TrainerSpec");
    while (r.p < r.end) {
        pb_field f;
        lt_status st = pb_next(&r, &f);
        if (st != LT_OK) return st;
        switch (f.field) {
        case 3:
            if ((st = pb_want(&r, &f, 0, "model_type")) != LT_OK) return st;
            o->model_type = f.v;
            break;
        case 24:
            if ((st = pb_want(&r, &f, 0, "treat_whitespace_as_suffix")) != LT_OK) return st;
            o->ws_suffix = f.v != 0;
            break;
        case 35:
            if ((st = pb_want(&r, &f, 0, "byte_fallback")) != LT_OK) return st;
            m->byte_fallback = f.v != 0;
            break;
        case 40:
        case 41:
        case 42:
        case 43: {
            static const char *names[] = {"unk_id", "bos_id", "eos_id", "pad_id"};
            if ((st = pb_want(&r, &f, 0, names[f.field - 40])) != LT_OK) return st;
            int32_t v = pb_i32(f.v);
            if (f.field == 40) o->unk_id = v;
            if (f.field == 41) o->bos_id = v;
            if (f.field == 42) o->eos_id = v;
            if (f.field == 43) o->pad_id = v;
            break;
        }
        case 44:
            if ((st = pb_want(&r, &f, 2, "unk_surface")) != LT_OK) return st;
            o->unk_surface = f.data;
            o->unk_surface_len = f.len;
            o->has_unk_surface = 1;
            break;
        default:
            break;
        }
    }
    return LT_OK;
}

static lt_status parse_normalizer(spm_model *m, proto_opts *o, const pb_reader *parent,
                                  const pb_field *pf) {
    pb_reader r = pb_sub(parent, pf, "NormalizerSpec");
    while (r.p < r.end) {
        pb_field f;
        lt_status st = pb_next(&r, &f);
        if (st != LT_OK) return st;
        switch (f.field) {
        case 1:
            if ((st = pb_want(&r, &f, 2, "name")) != LT_OK) return st;
            o->norm_name = f.data;
            o->norm_name_len = f.len;
            break;
        case 2:
            if ((st = pb_want(&r, &f, 2, "precompiled_charsmap")) != LT_OK) return st;
            o->charsmap_len = f.len;
            break;
        case 3:
            if ((st = pb_want(&r, &f, 0, "add_dummy_prefix")) != LT_OK) return st;
            m->add_dummy_prefix = f.v != 0;
            break;
        case 4:
            if ((st = pb_want(&r, &f, 0, "remove_extra_whitespaces")) != LT_OK) return st;
            m->remove_extra_ws = f.v != 0;
            break;
        case 5:
            if ((st = pb_want(&r, &f, 0, "escape_whitespaces")) != LT_OK) return st;
            m->escape_ws = f.v != 0;
            break;
        default:
            break;
        }
    }
    return LT_OK;
}

static lt_status check_id(const spm_model *m, const char *name, int32_t id, int32_t *dst) {
    if (id < 0) {
        *dst = -1;
        return LT_OK;
    }
    if (id >= m->n)
        return lt_error(LT_ERR_FORMAT, "%s: TrainerSpec.%s = %d is outside the %d pieces", m->src,
                        name, id, m->n);
    *dst = id;
    return LT_OK;
}

lt_status spm_proto_parse(spm_model *m, const uint8_t *buf, size_t size) {
    static const uint8_t none[1] = {0};
    if (!buf) buf = none; /* an empty file may come as NULL: no NULL + 0 below */
    pb_reader r = {buf, buf, buf + size, m->src, "ModelProto"};
    proto_opts o;
    memset(&o, 0, sizeof o);
    o.model_type = 1; /* proto2 defaults */
    o.unk_id = 0;
    o.bos_id = 1;
    o.eos_id = 2;
    o.pad_id = -1;
    /* NormalizerSpec defaults (also when the message is absent) */
    m->add_dummy_prefix = 1;
    m->remove_extra_ws = 1;
    m->escape_ws = 1;
    m->byte_fallback = 0;
    int have_trainer = 0;
    if (size == 0)
        return lt_error(LT_ERR_FORMAT, "%s: empty file (expected a sentencepiece ModelProto)",
                        m->src);
    while (r.p < r.end) {
        pb_field f;
        lt_status st = pb_next(&r, &f);
        if (st != LT_OK) return st;
        if (f.field == 1) {
            if ((st = pb_want(&r, &f, 2, "pieces")) != LT_OK) return st;
            if ((st = parse_piece(m, &r, &f)) != LT_OK) return st;
        } else if (f.field == 2) {
            if ((st = pb_want(&r, &f, 2, "trainer_spec")) != LT_OK) return st;
            if ((st = parse_trainer(m, &o, &r, &f)) != LT_OK) return st;
            have_trainer = 1;
        } else if (f.field == 3) {
            if ((st = pb_want(&r, &f, 2, "normalizer_spec")) != LT_OK) return st;
            if ((st = parse_normalizer(m, &o, &r, &f)) != LT_OK) return st;
        }
    }
    if (m->n == 0) return lt_error(LT_ERR_FORMAT, "%s: ModelProto has no pieces (field 1)", m->src);
    if (!have_trainer)
        return lt_error(LT_ERR_FORMAT,
                        "%s: ModelProto has no trainer_spec (field 2), so the model type is "
                        "unknown",
                        m->src);
    if (o.model_type != 2) {
        const char *names[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: sentencepiece model_type %s (%llu): only BPE models (Llama 2, "
                        "Mistral, TinyLlama) are supported",
                        m->src, o.model_type <= 4 ? names[o.model_type] : "unknown",
                        (unsigned long long)o.model_type);
    }
    if (o.ws_suffix)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: TrainerSpec.treat_whitespace_as_suffix is not supported", m->src);
    if (o.charsmap_len > 0) {
        int n = o.norm_name_len > 64 ? 64 : (int)o.norm_name_len;
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: NormalizerSpec '%.*s' has a precompiled_charsmap (%zu bytes); only "
                        "the identity normalization is supported",
                        m->src, n, o.norm_name ? (const char *)o.norm_name : "", o.charsmap_len);
    }
    lt_status st;
    int32_t unk;
    if ((st = check_id(m, "unk_id", o.unk_id, &unk)) != LT_OK) return st;
    if ((st = check_id(m, "bos_id", o.bos_id, &m->bos_id)) != LT_OK) return st;
    if ((st = check_id(m, "eos_id", o.eos_id, &m->eos_id)) != LT_OK) return st;
    if ((st = check_id(m, "pad_id", o.pad_id, &m->pad_id)) != LT_OK) return st;
    (void)unk; /* the UNKNOWN piece type decides, as in sentencepiece */
    if (o.has_unk_surface) {
        free(m->unk_surface);
        m->unk_surface = lt_malloc(o.unk_surface_len + 1);
        if (!m->unk_surface) return lt_error(LT_ERR_NOMEM, "out of memory");
        memcpy(m->unk_surface, o.unk_surface, o.unk_surface_len);
        m->unk_surface[o.unk_surface_len] = 0;
        m->unk_surface_len = o.unk_surface_len;
    }
    return LT_OK;
}
