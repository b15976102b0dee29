/* blas.c — BLAS thread control and identity queries, for either build of blas.h (prefixed or system). */
#include "blas.h"

#ifdef GZ_BLAS_PREFIX
#define GZ_HAVE_OPENBLAS_API 1 /* scipy-openblas32 is always OpenBLAS */
#elif defined(GZ_BLAS_SYSTEM_OPENBLAS)
#define GZ_HAVE_OPENBLAS_API 1 /* setup.py saw an OpenBLAS (pkg-config or library name) */
#endif

#ifdef GZ_HAVE_OPENBLAS_API
/* Declared here rather than trusting the found cblas.h to declare them (older or foreign headers do not). */
void GZ_BLAS_NAME(openblas_set_num_threads)(int);
int GZ_BLAS_NAME(openblas_get_num_threads)(void);
char *GZ_BLAS_NAME(openblas_get_config)(void);
char *GZ_BLAS_NAME(openblas_get_corename)(void);
#endif

void gz_blas_set_num_threads(int n) {
#ifdef GZ_HAVE_OPENBLAS_API
    if (n > 0) GZ_BLAS_NAME(openblas_set_num_threads)(n);
#else
    (void)n;
#endif
}

int gz_blas_get_num_threads(void) {
#ifdef GZ_HAVE_OPENBLAS_API
    return GZ_BLAS_NAME(openblas_get_num_threads)();
#else
    return 0;
#endif
}

const char *gz_blas_config(void) {
#ifdef GZ_HAVE_OPENBLAS_API
    const char *s = GZ_BLAS_NAME(openblas_get_config)();
    return s ? s : "";
#else
    return "";
#endif
}

const char *gz_blas_corename(void) {
#ifdef GZ_HAVE_OPENBLAS_API
    const char *s = GZ_BLAS_NAME(openblas_get_corename)();
    return s ? s : "";
#else
    return "";
#endif
}

const char *gz_blas_vendor(void) {
#ifdef GZ_BLAS_PREFIX
    return "scipy-openblas32";
#else
    return "system";
#endif
}

int gz_blas_serial_begin(void) {
    int saved = gz_blas_get_num_threads();
    if (saved > 1) gz_blas_set_num_threads(1);
    return saved;
}

void gz_blas_serial_end(int saved) {
    if (saved > 1) gz_blas_set_num_threads(saved);
}
