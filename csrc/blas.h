/* blas.h — the one place the C core names BLAS symbols.
 *
 * The default build links scipy-openblas32 (the OpenBLAS that NumPy and SciPy ship on PyPI, built with
 * DYNAMIC_ARCH so it picks its kernels for the CPU it runs on). That library exports every symbol with a
 * `scipy_` prefix (scipy_cblas_sgemm, scipy_openblas_set_num_threads, ...) and its own cblas.h declares the
 * prefixed names; setup.py then defines GZ_BLAS_PREFIX=scipy_. A system BLAS (GOZARU_BLAS=system: Debian's
 * OpenBLAS, an own build, MKL's CBLAS) has unprefixed names and no GZ_BLAS_PREFIX.
 *
 * Code includes this header instead of <cblas.h> and writes the plain CBLAS names; the macros below map
 * them to the linked library's names, so no call site knows which BLAS it runs on. */
#ifndef GOZARU_BLAS_H
#define GOZARU_BLAS_H

#include <cblas.h>

#define GZ_BLAS_CAT_(a, b) a##b
#define GZ_BLAS_CAT(a, b) GZ_BLAS_CAT_(a, b)
#ifdef GZ_BLAS_PREFIX
#define GZ_BLAS_NAME(name) GZ_BLAS_CAT(GZ_BLAS_PREFIX, name)
/* every CBLAS routine the core calls (add a line when a new one is used) */
#define cblas_sgemm GZ_BLAS_NAME(cblas_sgemm)
#else
#define GZ_BLAS_NAME(name) name
#endif

/* ---- thread control and identity (blas.c); safe on any BLAS: OpenBLAS-only queries answer "" / 0 */

/* Once, before any BLAS call: routes a scipy-openblas32 OpenBLAS's parallel jobs onto gozaru's OpenMP threads. */
void gz_blas_init(void);
/* How many parallel BLAS calls ran through that route so far (0 with other BLAS builds). */
int gz_blas_callback_calls(void);
/* Sets the BLAS library's own thread count (its pthread pool; no effect on other BLAS builds). */
void gz_blas_set_num_threads(int n);
/* The BLAS library's thread count (0 when unknown). */
int gz_blas_get_num_threads(void);
/* OpenBLAS's build string ("OpenBLAS 0.3.x DYNAMIC_ARCH ... Haswell MAX_THREADS=64") or "". */
const char *gz_blas_config(void);
/* The kernel set OpenBLAS picked at load time ("Haswell", "SkylakeX", "Prescott", ...) or "". */
const char *gz_blas_corename(void);
/* "scipy-openblas32" or "system" (as built). */
const char *gz_blas_vendor(void);

/* BLAS calls made inside an OpenMP parallel region must run on one thread each: otherwise every OpenMP thread
 * would open a nested team for its GEMM (cores x cores threads; measured 2.6x slower on 2 cores) and the calls
 * would serialise on OpenBLAS's level-3 lock. Bracket such a region with these two calls, made from the thread that opens the region:
 *     int saved = gz_blas_serial_begin();  #pragma omp parallel ... { cblas_sgemm(...) }  gz_blas_serial_end(saved); */
int gz_blas_serial_begin(void);
void gz_blas_serial_end(int saved);

#endif
