/* nccl_stub.c - nccl.h in a build without NCCL (no CUDA, or CMake found no nccl.h): every call
 * says so. The real one is src/backend/cuda/nccl.cu. */
#include "loratune/nccl.h"

#if !LT_NCCL
#define NOT_BUILT                                                                                 \
    lt_error(LT_ERR_UNSUPPORTED, "nccl: loratune was built without NCCL (it needs the CUDA "      \
                                 "build and nccl.h: tools/setup.sh installs the nvidia-nccl "     \
                                 "wheel in .venv where nvcc is found; -DLT_NCCL=ON)")
int lt_nccl_compiled(void) {
    return 0;
}
lt_status lt_nccl_open(const char *dir, int *version) {
    (void)dir;
    if (version) *version = 0;
    return NOT_BUILT;
}
lt_status lt_nccl_unique_id(unsigned char id[LT_NCCL_ID_BYTES]) {
    (void)id;
    return NOT_BUILT;
}
lt_status lt_nccl_create(int device, const unsigned char id[LT_NCCL_ID_BYTES], int rank, int size,
                         int bf16, lt_nccl **out) {
    (void)device, (void)id, (void)rank, (void)size, (void)bf16;
    *out = NULL;
    return NOT_BUILT;
}
void lt_nccl_free(lt_nccl *c, int abort) {
    (void)c, (void)abort;
}
lt_status lt_nccl_allreduce(lt_nccl *c, float *buf, int64_t n) {
    (void)c, (void)buf, (void)n;
    return NOT_BUILT;
}
lt_status lt_nccl_allreduce_async(lt_nccl *c, float *buf, int64_t n) {
    (void)c, (void)buf, (void)n;
    return NOT_BUILT;
}
lt_status lt_nccl_join(lt_nccl *c) {
    (void)c;
    return NOT_BUILT;
}
lt_status lt_nccl_reduce_scatter(lt_nccl *c, float *buf, int64_t n) {
    (void)c, (void)buf, (void)n;
    return NOT_BUILT;
}
lt_status lt_nccl_allgather_dev(lt_nccl *c, float *buf, int64_t n) {
    (void)c, (void)buf, (void)n;
    return NOT_BUILT;
}
lt_status lt_nccl_allgather(lt_nccl *c, const void *send, void *recv, size_t bytes) {
    (void)c, (void)send, (void)recv, (void)bytes;
    return NOT_BUILT;
}
void lt_nccl_set_timeout(lt_nccl *c, double seconds) {
    (void)c, (void)seconds;
}
int lt_nccl_rank(const lt_nccl *c) {
    (void)c;
    return 0;
}
int lt_nccl_size(const lt_nccl *c) {
    (void)c;
    return 0;
}
#endif
