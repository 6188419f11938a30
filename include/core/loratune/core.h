/* core.h - status codes, error messages, the allocator, dtypes, tensor views, file mapping,
 * and the fault injection tests use on allocations and output I/O.
 *
 * Every library call returns an lt_status (LT_OK = 0, errors negative). On error the
 * human-readable message (naming the file, field or line and what was expected) is
 * available from lt_errmsg() on the same thread until the next failing call.
 * Only apps/ prints or exits. */
#ifndef LORATUNE_CORE_H
#define LORATUNE_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LT_OK = 0,
    LT_ERR_IO = -1,          /* open/read/write/mmap failed */
    LT_ERR_FORMAT = -2,      /* malformed file or data */
    LT_ERR_NOMEM = -3,       /* allocation failed */
    LT_ERR_ARG = -4,         /* bad argument / config value */
    LT_ERR_UNSUPPORTED = -5, /* valid but not supported (yet) */
    LT_ERR_NOTFOUND = -6,    /* missing key, tensor, file */
    LT_ERR_INTERNAL = -7,    /* broken invariant */
    LT_ERR_BUSY = -8,        /* in use by another writer (lt_dir_lock) */
    LT_ERR_CANCELLED = -9,   /* stopped on request (a progress callback, lt_run_request_stop) */
} lt_status;

/* Message of the last failing call on this thread (never NULL; "" if none). */
const char *lt_errmsg(void);
/* Sets the thread's message (printf-style) and returns code, so callers can
 * `return lt_error(LT_ERR_FORMAT, "%s: header: expected ...", path);` */
lt_status lt_error(lt_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prepends "prefix: " to the current message (for adding context on the way up). */
lt_status lt_error_wrap(lt_status code, const char *prefix);
const char *lt_status_name(lt_status s);

/* ---- memory ---------------------------------------------------------------------------
 * Every heap allocation of the library goes through these, so that a test can make the N-th
 * one fail (lt_alloc_fail_after). They behave exactly as malloc / calloc / realloc / strdup /
 * strndup / aligned_alloc / free; lt_free is free. What the library hands out as "malloc'd"
 * comes from them and may be released with free() or lt_free(). A library call that gets NULL
 * from one of them returns LT_ERR_NOMEM (or the status of what it was doing) with a message,
 * and leaves nothing allocated behind. */
void *lt_malloc(size_t n);
void *lt_calloc(size_t count, size_t size);
void *lt_realloc(void *p, size_t n); /* on NULL, p is untouched (still owned by the caller) */
char *lt_strdup(const char *s);
char *lt_strndup(const char *s, size_t n);
void *lt_aligned_alloc(size_t align, size_t n); /* n a multiple of align, as C11 asks */
void lt_free(void *p);                          /* safe on NULL */

/* ---- fault injection (tests only) ------------------------------------------------------
 * As SQLite's test_malloc.c / test_vfs.c: a test makes the N-th allocation, or the N-th
 * output I/O call, fail, and walks N = 1, 2, ... over an operation, checking that every
 * failure comes back as a clean error status (no crash, no leak, no partial file).
 *
 * Scope: the state is per thread. Only calls made by the thread that armed the injector are
 * counted and failed; other threads (OpenMP workers, the MLflow sender, another request of a
 * server) never see it. Nothing in the library or the environment arms it: only a caller of
 * these functions does. While no thread has it armed, the cost is one relaxed atomic load per
 * allocation / I/O call.
 *
 * Allocations (lt_malloc & co, and the model's page-mapped parameter block, which counts as
 * one; the libraries loratune uses (jansson, PCRE2, SQLite, ...) allocate on their own and are
 * not counted):
 *   n >= 1: the n-th call from now fails (returns NULL); with repeat, every later one too.
 *   n == 0: counts only, nothing fails.   n < 0: off (counting stops).
 * lt_alloc_count() is the number of calls counted, and lt_alloc_failures() the number failed,
 * on this thread since it was last armed; failures of "benign" allocations (of code that copes
 * by doing without, e.g. an optional cache) are not in lt_alloc_failures(). A walk: for
 * N = 1, 2, ...: lt_alloc_fail_after(N, 0), run the operation, expect LT_ERR_NOMEM when
 * lt_alloc_failures() > 0 (success otherwise), and stop once lt_alloc_count() < N (the
 * operation no longer reaches call N); tests/lt_fault.h does this. */
void lt_alloc_fail_after(long n, int repeat);
long lt_alloc_count(void);
long lt_alloc_failures(void);

/* Output I/O: the primitives every file writer uses (temp file, writes, fsync, close,
 * rename; folder creation). ops is a mask of the calls counted; a failed call does nothing
 * (LT_IO_CLOSE still closes the descriptor) and sets errno to err (EIO, ENOSPC, ...).
 * Reads, the best-effort fsync of a folder after a rename, and removing a temp file after a
 * failure are not counted. Same n / repeat / per-thread rules as lt_alloc_fail_after (no I/O
 * call is benign). */
enum {
    LT_IO_OPEN = 1,   /* creating the (temp) file: open, mkstemp, fopen */
    LT_IO_WRITE = 2,  /* write, fwrite, fflush */
    LT_IO_FSYNC = 4,  /* fsync of the file */
    LT_IO_CLOSE = 8,  /* close, fclose */
    LT_IO_RENAME = 16,
    LT_IO_MKDIR = 32,
    LT_IO_ALL = 63
};
void lt_io_fail_after(long n, unsigned ops, int err, int repeat);
long lt_io_count(void);
long lt_io_failures(void);

/* ---- dtypes -------------------------------------------------------------------------- */
typedef enum {
    LT_DTYPE_F32 = 0,
    LT_DTYPE_F16,
    LT_DTYPE_BF16,
    LT_DTYPE_F64,
    LT_DTYPE_I8,
    LT_DTYPE_U8,
    LT_DTYPE_I16,
    LT_DTYPE_I32,
    LT_DTYPE_I64,
    LT_DTYPE_BOOL,
    /* ggml block-quantized types (GGUF) */
    LT_DTYPE_Q4_0,
    LT_DTYPE_Q4_1,
    LT_DTYPE_Q5_0,
    LT_DTYPE_Q5_1,
    LT_DTYPE_Q8_0,
    LT_DTYPE_Q2_K,
    LT_DTYPE_Q3_K,
    LT_DTYPE_Q4_K,
    LT_DTYPE_Q5_K,
    LT_DTYPE_Q6_K,
    LT_DTYPE_Q8_K,
    LT_DTYPE_COUNT
} lt_dtype;

const char *lt_dtype_name(lt_dtype t);          /* "F32", "Q4_K", ... */
int lt_dtype_from_name(const char *name, lt_dtype *out); /* safetensors names; 0 ok, -1 unknown */
int64_t lt_dtype_block_elems(lt_dtype t);       /* 1 for scalar types, 32 or 256 for quants */
int64_t lt_dtype_block_bytes(lt_dtype t);       /* bytes per block */
/* Bytes for n elements (n must be a multiple of the block size); -1 on overflow or misfit. */
int64_t lt_dtype_nbytes(lt_dtype t, int64_t n);

float lt_f16_to_f32(uint16_t h);
uint16_t lt_f32_to_f16(float f);   /* round to nearest even, like numpy/torch */
/* bf16 <-> fp32: inline, so the array loops over them (the bf16 compute path) vectorise */
static inline float lt_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}
static inline uint16_t lt_f32_to_bf16(float f) { /* nearest even, NaN kept NaN, like torch */
    union { float f; uint32_t u; } v = {f};
    uint32_t x = v.u;
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* A target id that no loss counts (PyTorch's ignore_index): the data layer writes it into
 * micro-batches (data.h), the cross-entropy ops skip it (ops.h). */
#define LT_IGNORE_INDEX (-100)

/* ---- tensor views -------------------------------------------------------------------- */
#define LT_MAX_DIMS 4
/* A borrowed view of a tensor stored in a file or buffer. shape is outermost-first
 * (row-major, as in safetensors / PyTorch): a [out][in] matrix has shape {out, in}. */
typedef struct {
    const char *name;  /* NUL-terminated, owned by the container */
    lt_dtype dtype;
    int ndim;
    int64_t shape[LT_MAX_DIMS];
    const void *data;  /* owned by the container (often mmap'd) */
    size_t nbytes;
} lt_tensor_view;

int64_t lt_tensor_numel(const lt_tensor_view *t);

/* ---- files --------------------------------------------------------------------------- */
/* A read-only memory map of a whole file. */
typedef struct {
    const uint8_t *data;
    size_t size;
} lt_mapped_file;

lt_status lt_file_map(const char *path, lt_mapped_file *out);
void lt_file_unmap(lt_mapped_file *m); /* safe on zeroed struct */
/* Reads a whole (small) file into a NUL-terminated malloc'd buffer; caller frees. */
lt_status lt_file_read_all(const char *path, char **out, size_t *len);
/* Writes buf to path atomically: temp file in the same folder, fsync, rename, fsync dir. */
lt_status lt_file_write_atomic(const char *path, const void *buf, size_t len);
int lt_path_is_dir(const char *path);
int lt_path_exists(const char *path);

/* ---- multi-file outputs: the "incomplete" marker ------------------------------------- */
/* A multi-file output (a Hugging Face folder from fuse / a full fine-tune, a run's PEFT adapter
 * with its mlx-lm and GGUF siblings) is written in place, one atomic file at a time, between
 * lt_output_begin and lt_output_end: begin writes DIR/.loratune.incomplete (atomically, before
 * anything else of the output), end removes it after the last file. A folder holding the
 * marker is an output whose writer stopped (disk full, killed) before it finished: the model
 * and adapter readers refuse it (lt_output_check). */
#define LT_INCOMPLETE_NAME ".loratune.incomplete"
lt_status lt_output_begin(const char *dir, const char *what);
lt_status lt_output_end(const char *dir);
/* LT_ERR_FORMAT when the folder (path, or the folder holding path when it is a file) holds the
 * marker: "DIR: an incomplete output (WHAT; DIR/.loratune.incomplete: its writer stopped
 * before it finished): write it again". */
lt_status lt_output_check(const char *path);
/* Removes dir/NAME.tmp.* for each NAME of names (NULL-terminated): the temp files that a killed
 * atomic write of NAME leaves (lt_file_write_atomic: NAME.tmp.PID; the safetensors writer:
 * NAME.tmp.XXXXXX). Only for a folder whose lock (lt_dir_lock_open) the caller has just taken,
 * so that no live writer owns them; every other file, a user's "notes.tmp.1" included, is left
 * alone. Best effort: a missing folder or a file that cannot be removed is no error. */
void lt_dir_remove_temps(const char *dir, const char *const *names);

/* ---- folder locks -------------------------------------------------------------------- */
/* An advisory, exclusive lock on a folder that one writer owns (a training run's output
 * folder, an export's folder), so that a second writer fails at once instead of mixing its
 * files in: an open-file-description lock (fcntl F_OFD_SETLK, F_WRLCK, whole file) on
 * DIR/.loratune.lock, a file holding the holder's pid. It lasts until lt_dir_lock_close or
 * until the holder ends in any way (the kernel releases it, SIGKILL included; a lock file left
 * behind is taken over). Two handles conflict even within one process. Other tools see it
 * with POSIX record locks (lockf, fcntl F_SETLK / F_GETLK), not with flock(2). */
#define LT_DIR_LOCK_NAME ".loratune.lock"
typedef struct lt_dir_lock lt_dir_lock;
enum {
    /* Lock only a folder that has a lock file (a loratune writer's, alive or dead); otherwise
     * *out = NULL and LT_OK, and the folder is neither created nor changed. */
    LT_DIR_LOCK_EXISTING = 1u,
    /* A lock held by this same process is no conflict: *out = NULL and LT_OK (an export into
     * a folder its caller holds, e.g. a training run saving its full fine-tune). */
    LT_DIR_LOCK_REENTER = 2u,
};
/* Creates dir (and its parents) when missing, unless LT_DIR_LOCK_EXISTING, and locks it.
 * LT_ERR_BUSY when it is held: "DIR: in use by another loratune process (pid N), which holds
 * the lock DIR/.loratune.lock; wait for it to finish or write somewhere else". *out is the
 * caller's (NULL when there was nothing to lock: see the flags). */
lt_status lt_dir_lock_open(const char *dir, unsigned flags, lt_dir_lock **out);
/* Removes the lock file and releases the lock; removes dir too when lt_dir_lock_open created it
 * and it is still empty (a writer that failed before writing leaves nothing). Safe on NULL. */
void lt_dir_lock_close(lt_dir_lock *l);

#ifdef __cplusplus
}
#endif
#endif
