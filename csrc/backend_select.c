/* backend_select.c — which backends this build has, and creating / freeing instances. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "backend.h"

#ifdef GOZARU_WITH_CUDA
int gz_cuda_device_available(void); /* csrc/cuda/backend_cuda.cu */
#else
gz_status gz_backend_cuda_create(gz_backend **out) {
    *out = NULL;
    return gz_fail(GZ_ERR_BACKEND, "this build has no CUDA backend (build with GOZARU_CUDA=1)");
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
        /* set_precision is optional (backend.h: NULL keeps the mode the instance was created with) */
        if (!f && off != offsetof(gz_backend, set_precision)) {
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
