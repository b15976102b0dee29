/* backend_select.c — which backends this build has, and creating / freeing instances. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "backend.h"

#ifdef GOZARU_WITH_CUDA
int gz_cuda_device_available(void); /* csrc/cuda/backend_cuda.cu */
#else
static const char NO_CUDA[] = "this build has no CUDA backend (build with GOZARU_CUDA=1)";
gz_status gz_backend_cuda_create(gz_backend **out) {
    *out = NULL;
    return gz_fail(GZ_ERR_BACKEND, "%s", NO_CUDA);
}
gz_status gz_cuda_supports(gz_precision p) {
    (void)p;
    return gz_fail(GZ_ERR_BACKEND, "%s", NO_CUDA);
}
#endif

int gz_backend_available(gz_backend_kind kind) {
    switch (kind) {
    case GZ_BACKEND_CPU: return 1;
#ifdef GOZARU_WITH_CUDA
    case GZ_BACKEND_CUDA: return gz_cuda_device_available();
#endif
    default: return 0;
    }
}

gz_status gz_backend_create(gz_backend_kind kind, gz_backend **out) {
    *out = NULL;
    if (!gz_backend_available(kind))
        return gz_fail(GZ_ERR_BACKEND, kind == GZ_BACKEND_CUDA ? "the CUDA backend is not available (build with "
                                                                 "GOZARU_CUDA=1 on a machine with a CUDA GPU)"
                                                               : "unknown backend %d", (int)kind);
    GZ_TRY(kind == GZ_BACKEND_CPU ? gz_backend_cpu_create(out) : gz_backend_cuda_create(out));
    /* Every member from destroy on is a function pointer: a backend that misses an operation added to
     * backend.h fails here, by name of position, instead of crashing on the first call. */
    typedef void (*any_fn)(void);
    for (size_t off = offsetof(gz_backend, destroy); off < sizeof(gz_backend); off += sizeof(any_fn)) {
        any_fn f;
        memcpy(&f, (const char *)*out + off, sizeof f);
        if (!f) {
            const char *name = (*out)->name;
            gz_backend_free(*out);
            *out = NULL;
            return gz_fail(GZ_ERR_BACKEND, "the %s backend does not implement operation %d of backend.h", name,
                           (int)((off - offsetof(gz_backend, destroy)) / sizeof(any_fn)));
        }
    }
    return GZ_OK;
}

void gz_backend_free(gz_backend *be) {
    if (!be) return;
    if (be->destroy) be->destroy(be->ctx);
    free(be);
}

gz_status gz_backend_supports(gz_backend_kind kind, gz_precision p) {
    if (!gz_precision_name(p)) return gz_fail(GZ_ERR_VALUE, "precision %d is not one of csrc/precision.h's", (int)p);
    switch (kind) {
    case GZ_BACKEND_CPU: return gz_cpu_supports(p);
    case GZ_BACKEND_CUDA: return gz_cuda_supports(p);
    default: return gz_fail(GZ_ERR_BACKEND, "unknown backend %d", (int)kind);
    }
}
