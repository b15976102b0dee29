/* backend_select.c — which backends this build has. */
#include "backend.h"

#ifdef GOZARU_WITH_CUDA
int gz_cuda_device_available(void); /* csrc/cuda/backend_cuda.cu */
#else
const gz_backend *gz_backend_cuda(void) { return NULL; }
#endif

int gz_backend_available(gz_backend_kind kind) {
    switch (kind) {
    case GZ_BACKEND_CPU: return 1;
#ifdef GOZARU_WITH_CUDA
    case GZ_BACKEND_CUDA: return gz_backend_cuda() != NULL && gz_cuda_device_available();
#endif
    default: return 0;
    }
}
