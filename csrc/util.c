/* util.c — error messages, checked allocation, interrupt flag, thread count, RNG. */
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "blas.h"
#include "backend.h" /* gz_precision_unsupported */

static _Thread_local char g_error[GZ_MAX_ERROR];
static atomic_int g_interrupt;

const char *gz_last_error(void) { return g_error; }

gz_status gz_fail(gz_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    return code;
}

gz_status gz_fail_context(gz_status code, const char *fmt, ...) {
    char prefix[GZ_MAX_ERROR / 2], old[GZ_MAX_ERROR];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_error, sizeof old);
    snprintf(g_error, sizeof g_error, "%s: %s", prefix, old);
    return code;
}

gz_status gz_calloc(void **out, size_t count, size_t size, const char *what) {
    *out = NULL;
    if (count == 0 || size == 0) count = size = 1; /* a valid, freeable pointer */
    if (count > SIZE_MAX / size)
        return gz_fail(GZ_ERR_NOMEM, "allocating %s: %zu x %zu bytes overflows", what, count, size);
    void *p = calloc(count, size);
    if (!p) return gz_fail(GZ_ERR_NOMEM, "out of memory allocating %s (%zu bytes)", what, count * size);
    *out = p;
    return GZ_OK;
}

void gz_request_interrupt(void) { atomic_store(&g_interrupt, 1); }
void gz_clear_interrupt(void) { atomic_store(&g_interrupt, 0); }
int gz_interrupt_requested(void) { return atomic_load(&g_interrupt); }

static int g_threads = 0;
/* Set in a child made by fork(): libgomp's thread pool (and an OpenMP OpenBLAS's) belongs to the parent and
 * its threads do not exist in the child, so a parallel region with more than one thread waits forever.
 * A region of one thread never touches the pool, so the child runs every loop on its one thread. */
static atomic_int g_forked;

static void apply_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    /* BLAS's pthread pool gets the same count: BLAS calls run only between OpenMP regions (or, inside one,
     * single-threaded: see gz_blas_serial_begin), so the two pools never run at once and never exceed n. */
    gz_blas_set_num_threads(n);
}

static void after_fork_in_child(void) {
    atomic_store(&g_forked, 1);
    apply_threads(1);
}

__attribute__((constructor)) static void register_fork_handler(void) {
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

static int forked(void) { return atomic_load(&g_forked); }

void gz_set_num_threads(int n) {
    if (n <= 0) return;
    g_threads = n;
    apply_threads(forked() ? 1 : n);
}
int gz_get_num_threads(void) {
    if (forked()) return 1;
    if (g_threads > 0) return g_threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- RNG: splitmix64 to seed xoshiro256** */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
void gz_rng_seed(gz_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
uint64_t gz_rng_next(gz_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return result;
}
float gz_rng_uniform(gz_rng *r) { return (float)(gz_rng_next(r) >> 40) * (1.0f / 16777216.0f); }
float gz_rng_normal(gz_rng *r) {
    double u1 = ((gz_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
    double u2 = (gz_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

gz_status gz_precision_unsupported(const char *backend, gz_precision p, unsigned runs) {
    char list[GZ_PRECISION_LIST];
    return gz_fail(GZ_ERR_BACKEND, "precision '%s' is not supported by the %s backend: it runs %s",
                   gz_precision_name(p), backend, gz_precision_list(list, sizeof list, runs));
}
