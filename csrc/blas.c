/* blas.c — BLAS thread control and identity queries, for either build of blas.h (prefixed or system). */
#include "blas.h"

#include <stddef.h>
#ifdef _OPENMP
#include <omp.h>
#endif

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
typedef void (*gz_dojob_fn)(int thread_num, void *jobdata, int dojob_data);
typedef void (*gz_threads_fn)(int sync, gz_dojob_fn dojob, int numjobs, size_t jobdata_elsize, void *jobdata,
                              int dojob_data);
void GZ_BLAS_NAME(openblas_set_threads_callback_function)(gz_threads_fn callback);
#endif

static int g_callback_jobs = 0; /* parallel BLAS calls run through gz_blas_threads (for build_info) */

#if defined(GZ_BLAS_PREFIX) && defined(_OPENMP)
/* OpenBLAS (>= 0.3.27) hands its parallel jobs to this callback instead of its own pthread pool, so a
 * threaded GEMM runs on gozaru's OpenMP threads: one pool for BLAS and gozaru's loops, no second set of
 * threads busy-waiting beside them. OpenBLAS's level-3 jobs wait on each other, so all numjobs must run at
 * once: numjobs <= the BLAS thread count = gozaru's OpenMP thread count, BLAS is single-threaded inside
 * gozaru's own parallel regions (gz_blas_serial_begin), dynamic team sizing is switched off at init, and
 * nested regions may have their own team. */
static void gz_blas_threads(int sync, gz_dojob_fn dojob, int numjobs, size_t elsize, void *jobdata, int data) {
    (void)sync;
    __atomic_add_fetch(&g_callback_jobs, 1, __ATOMIC_RELAXED);
#pragma omp parallel num_threads(numjobs)
    {
        int nt = omp_get_num_threads();
        for (int i = omp_get_thread_num(); i < numjobs; i += nt) dojob(i, (char *)jobdata + (size_t)i * elsize, data);
    }
}
#endif

void gz_blas_init(void) {
#if defined(GZ_BLAS_PREFIX) && defined(_OPENMP)
    omp_set_dynamic(0);
    /* safety net: a threaded BLAS call inside a parallel region (none today) then gets its own team instead of
     * one thread running jobs that wait on each other */
    if (omp_get_max_active_levels() < 2) omp_set_max_active_levels(2);
    GZ_BLAS_NAME(openblas_set_threads_callback_function)(gz_blas_threads);
#endif
}

int gz_blas_callback_calls(void) { return __atomic_load_n(&g_callback_jobs, __ATOMIC_RELAXED); }

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
