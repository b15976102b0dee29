/* build_info.c — _core.build_info(): what this process runs on (BLAS and its kernel, threads, OpenMP runtime,
 * CPU features, backends), so a benchmark or a bug report states the facts that decide speed and rounding. */
#include "pycore.h"

#include <cpuid.h>
#include <dlfcn.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../blas.h"
#include "../cpu/cpu_ops.h"

/* cpuid leaf 7 bits (Intel SDM vol. 2A, CPUID): what the CPU implements. AVX2 and AVX-512F go through
 * __builtin_cpu_supports, which also checks that the OS saves the wide registers; BF16 and AMX are read
 * from cpuid directly (GCC 12's builtin does not know them), so they say what the silicon has. */
static void cpu_features(PyObject *d) {
    unsigned a = 0, b = 0, c = 0, e = 0, a1 = 0, b1 = 0, c1 = 0, e1 = 0;
    int have7 = __get_cpuid_count(7, 0, &a, &b, &c, &e);
    int have71 = have7 && a >= 1 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &e1);
    __builtin_cpu_init();
    struct { const char *name; int on; } f[] = {
        {"avx2", __builtin_cpu_supports("avx2")},
        {"fma", __builtin_cpu_supports("fma")},
        {"avx512f", __builtin_cpu_supports("avx512f")},
        {"avx512_bf16", have71 && (a1 & (1u << 5))},
        {"amx_bf16", have7 && (e & (1u << 22))},
        {"amx_tile", have7 && (e & (1u << 24))},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        PyDict_SetItemString(d, f[i].name, f[i].on ? Py_True : Py_False);
}

/* The file a symbol was loaded from ("" when unknown): names which libgomp (system's, torch's...) is in use. */
static const char *library_of(const void *symbol) {
    Dl_info info;
    if (symbol && dladdr(symbol, &info) && info.dli_fname) return info.dli_fname;
    return "";
}

static int set_str(PyObject *d, const char *key, const char *value) {
    PyObject *v = PyUnicode_DecodeUTF8(value, (Py_ssize_t)strlen(value), "replace");
    if (!v) return -1;
    int rc = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return rc;
}

static int set_int(PyObject *d, const char *key, long value) {
    PyObject *v = PyLong_FromLong(value);
    if (!v) return -1;
    int rc = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return rc;
}

/* The names of the precisions backend `kind` runs on this machine and build (gz_backend_supports). */
static PyObject *supported_precisions(gz_backend_kind kind) {
    PyObject *list = PyList_New(0);
    for (int p = 0; list && p < GZ_PRECISION_COUNT; p++) {
        if (gz_backend_supports(kind, (gz_precision)p) != GZ_OK) continue;
        PyObject *name = PyUnicode_FromString(gz_precision_name((gz_precision)p));
        if (!name || PyList_Append(list, name) < 0) Py_CLEAR(list);
        Py_XDECREF(name);
    }
    return list;
}

PyObject *gzpy_build_info(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    PyObject *d = PyDict_New(), *features = PyDict_New(), *backends = NULL, *per_backend = NULL;
    if (!d || !features) goto fail;
    if (set_str(d, "blas", gz_blas_vendor()) < 0 || set_str(d, "blas_config", gz_blas_config()) < 0 ||
        set_str(d, "blas_corename", gz_blas_corename()) < 0 ||
        set_str(d, "blas_library", library_of((const void *)&cblas_sgemm)) < 0 ||
        set_int(d, "blas_threads", gz_blas_get_num_threads()) < 0 ||
        set_int(d, "blas_parallel_calls_on_openmp", gz_blas_callback_calls()) < 0 || set_int(d, "threads", gz_get_num_threads()) < 0)
        goto fail;
#ifdef _OPENMP
    if (set_int(d, "openmp_spec", _OPENMP) < 0 || set_int(d, "omp_max_threads", omp_get_max_threads()) < 0 ||
        set_str(d, "openmp_library", library_of((const void *)&omp_get_max_threads)) < 0)
        goto fail;
#endif
    if (set_str(d, "compiler", __VERSION__) < 0) goto fail;
    cpu_features(features);
    if (PyDict_SetItemString(d, "cpu_features", features) < 0) goto fail;
    backends = Py_BuildValue("[s]", "cpu");
    if (!backends) goto fail;
#ifdef GOZARU_WITH_CUDA
    { /* compiled in */
        PyObject *cuda = PyUnicode_FromString("cuda");
        int rc = cuda ? PyList_Append(backends, cuda) : -1;
        Py_XDECREF(cuda);
        if (rc < 0) goto fail;
    }
#endif
    if (PyDict_SetItemString(d, "backends_built", backends) < 0 ||
        PyDict_SetItemString(d, "cuda_usable", gz_backend_available(GZ_BACKEND_CUDA) ? Py_True : Py_False) < 0)
        goto fail;
    /* what each built backend runs here (csrc/precision.h's names); "precisions" is the CPU's */
    if (!(per_backend = PyDict_New())) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(backends); i++) {
        const char *name = PyUnicode_AsUTF8(PyList_GET_ITEM(backends, i));
        PyObject *prec = name ? supported_precisions(strcmp(name, "cuda") ? GZ_BACKEND_CPU : GZ_BACKEND_CUDA) : NULL;
        if (!prec || PyDict_SetItemString(per_backend, name, prec) < 0) {
            Py_XDECREF(prec);
            goto fail;
        }
        Py_DECREF(prec);
    }
    if (PyDict_SetItemString(d, "backend_precisions", per_backend) < 0 ||
        PyDict_SetItemString(d, "precisions", PyDict_GetItemString(per_backend, "cpu")) < 0)
        goto fail;
    int hw = gz_cpu_bf16_instructions(), usable = hw && *gz_cpu_bf16_library();
    PyObject *bf16 = Py_BuildValue("{s:s,s:O,s:O,s:O,s:O}", "library", gz_cpu_bf16_library(), "built",
                                   *gz_cpu_bf16_library() ? Py_True : Py_False, "avx512_bf16",
                                   (hw & GZ_CPU_AVX512_BF16) ? Py_True : Py_False, "amx_bf16",
                                   (hw & GZ_CPU_AMX_BF16) ? Py_True : Py_False, "usable", usable ? Py_True : Py_False);
    if (!bf16 || PyDict_SetItemString(d, "bf16", bf16) < 0) {
        Py_XDECREF(bf16);
        goto fail;
    }
    Py_DECREF(bf16);
    Py_DECREF(features);
    Py_DECREF(backends);
    Py_DECREF(per_backend);
    return d;
fail:
    Py_XDECREF(d);
    Py_XDECREF(features);
    Py_XDECREF(backends);
    Py_XDECREF(per_backend);
    return NULL;
}
