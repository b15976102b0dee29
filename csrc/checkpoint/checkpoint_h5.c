/* checkpoint_h5.c — checked HDF5 helpers for checkpoints: lock, error text, closing, attributes,
 * fp32 tensors with checksums, byte blobs (reader checks and listings: checkpoint_check.c). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include "checkpoint_internal.h"

/* The system libhdf5 may be built without thread safety, and _core releases the GIL around
 * checkpoint calls, so all HDF5 use goes through this lock. */
static pthread_mutex_t g_hdf5_lock = PTHREAD_MUTEX_INITIALIZER;

static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;

/* fork() waits for a checkpoint call in another thread to finish: a child must not inherit the lock held
 * (it would wait forever) nor libhdf5 in the middle of writing a file. */
static void fork_prepare(void) { pthread_mutex_lock(&g_hdf5_lock); }
static void fork_release(void) { pthread_mutex_unlock(&g_hdf5_lock); }

/* No H5close at exit: a file whose close failed stays half-open (see ckpt_close_file), and the
 * library's shutdown would crash on it. Every file gozaru opens is closed before its call returns. */
static void init_hdf5(void) {
    H5dont_atexit();
    pthread_atfork(fork_prepare, fork_release, fork_release);
}

__attribute__((constructor)) static void init_at_load(void) { pthread_once(&g_init_once, init_hdf5); }

void ckpt_lock(void) {
    pthread_once(&g_init_once, init_hdf5);
    pthread_mutex_lock(&g_hdf5_lock);
    /* Per-thread in thread-safe HDF5 builds, so done on every entry. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void ckpt_unlock(void) { pthread_mutex_unlock(&g_hdf5_lock); }

static char g_detail[256];
static int g_errno;

/* HDF5's low-level write/read errors are multi-line texts with times and pointer values; what a person
 * needs is the system error they carry ("errno = 28, ..."), so that is kept when present. */
static herr_t take_detail(unsigned n, const H5E_error2_t *err, void *data) {
    (void)data;
    if (!err || !err->desc) return 0;
    const char *e = strstr(err->desc, "errno = ");
    if (e && !g_errno) g_errno = atoi(e + 8);
    if (n == 0) {
        size_t len = strcspn(err->desc, "\n");
        if (len >= sizeof g_detail) len = sizeof g_detail - 1;
        memcpy(g_detail, err->desc, len);
        g_detail[len] = '\0';
    }
    return 0;
}

const char *ckpt_h5_detail(void) {
    int saved_errno = errno;
    snprintf(g_detail, sizeof g_detail, "no detail");
    g_errno = 0;
    /* Upward: the innermost (most specific) error comes first. */
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_detail, NULL);
    H5Eclear2(H5E_DEFAULT);
    if (g_errno > 0)
        snprintf(g_detail, sizeof g_detail, "%s", strerror(g_errno));
    else if (!strcmp(g_detail, "no detail") && (saved_errno == ENOSPC || saved_errno == EFBIG ||
                                                saved_errno == EDQUOT || saved_errno == EIO))
        snprintf(g_detail, sizeof g_detail, "%s", strerror(saved_errno));
    return g_detail;
}

void ckpt_close(hid_t id) {
    if (id <= 0) return;
    switch (H5Iget_type(id)) {
    case H5I_FILE: ckpt_close_file(id); break;
    case H5I_GROUP: H5Gclose(id); break;
    case H5I_DATASET: H5Dclose(id); break;
    case H5I_ATTR: H5Aclose(id); break;
    case H5I_DATASPACE: H5Sclose(id); break;
    case H5I_DATATYPE: H5Tclose(id); break;
    case H5I_GENPROP_LST: H5Pclose(id); break;
    default: break;
    }
}

int ckpt_close_file(hid_t f) {
    if (f <= 0) return 0;
    int *fd = NULL;
    unsigned intent = 0;
    if (H5Fget_intent(f, &intent) < 0 || H5Fget_vfd_handle(f, H5P_DEFAULT, (void **)&fd) < 0) fd = NULL;
    H5Eclear2(H5E_DEFAULT);
    if (H5Fclose(f) >= 0) return 0;
    /* A close whose final flush failed (full disk, file size limit) leaves the file id open, and
     * libhdf5 1.10 crashes when that id is closed again, by us or by its own shutdown at exit (which
     * ckpt_lock turns off). So the id is left alone; truncating the (already unlinked or soon
     * unlinked) temporary file gives its disk space back at once. */
    if (fd && (intent & H5F_ACC_RDWR) && H5Iis_valid(f) > 0 && ftruncate(*fd, 0) != 0) {
        /* best effort: the space comes back when the process exits */
    }
    return -1;
}

hid_t ckpt_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    if (H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) < 0 ||
        H5Pset_file_locking(fapl, 0, 1) < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

hid_t ckpt_compact_plist(hid_t cls) {
    hid_t pl = H5Pcreate(cls);
    if (pl < 0) return -1;
    if (H5Pset_link_phase_change(pl, 65535, 65534) < 0 || H5Pset_attr_phase_change(pl, 65535, 65534) < 0) {
        H5Pclose(pl);
        return -1;
    }
    return pl;
}

/* ------------------------------------------------------------------ attributes */

static gz_status write_attr(const char *file, hid_t obj, const char *objname, const char *attr, hid_t file_type,
                            hid_t mem_type, hid_t space, const void *buf) {
    gz_status st = GZ_OK;
    hid_t a = H5Acreate2(obj, attr, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, mem_type, buf) < 0)
        st = gz_fail(GZ_ERR_IO, "%s: writing attribute %s of %s failed (HDF5: %s)", file, attr, objname,
                     ckpt_h5_detail());
    ckpt_close(a);
    return st;
}

gz_status ckpt_write_attr_str(const char *file, hid_t obj, const char *objname, const char *attr, const char *s) {
    /* Fixed-length strings live inside the checksummed object header (variable-length ones
     * would sit in the unchecksummed global heap). */
    size_t len = strlen(s);
    hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR);
    gz_status st;
    if (type < 0 || space < 0 || H5Tset_size(type, len ? len : 1) < 0 || H5Tset_strpad(type, H5T_STR_NULLPAD) < 0 ||
        H5Tset_cset(type, H5T_CSET_UTF8) < 0)
        st = gz_fail(GZ_ERR_IO, "%s: preparing attribute %s of %s failed (HDF5: %s)", file, attr, objname,
                     ckpt_h5_detail());
    else
        st = write_attr(file, obj, objname, attr, type, type, space, len ? s : "");
    ckpt_close(type);
    ckpt_close(space);
    return st;
}

gz_status ckpt_write_attr_i64(const char *file, hid_t obj, const char *objname, const char *attr, int64_t v) {
    hid_t space = H5Screate(H5S_SCALAR);
    if (space < 0)
        return gz_fail(GZ_ERR_IO, "%s: creating a dataspace failed (HDF5: %s)", file, ckpt_h5_detail());
    gz_status st = write_attr(file, obj, objname, attr, H5T_STD_I64LE, H5T_NATIVE_INT64, space, &v);
    ckpt_close(space);
    return st;
}

gz_status ckpt_write_attr_f32(const char *file, hid_t obj, const char *objname, const char *attr,
                              const float *v, int n) {
    hsize_t dims[1] = {(hsize_t)n};
    hid_t space = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    if (space < 0)
        return gz_fail(GZ_ERR_IO, "%s: creating a dataspace failed (HDF5: %s)", file, ckpt_h5_detail());
    gz_status st = write_attr(file, obj, objname, attr, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, space, v);
    ckpt_close(space);
    return st;
}

/* Opens attr and checks its type class and element count. */
static gz_status open_attr(const char *file, hid_t obj, const char *objname, const char *attr, H5T_class_t cls,
                           hssize_t count, hid_t *out) {
    *out = -1;
    htri_t exists = H5Aexists(obj, attr);
    if (exists < 0)
        return gz_fail(GZ_ERR_FORMAT, "%s: reading attributes of %s failed (HDF5: %s)", file, objname,
                       ckpt_h5_detail());
    if (exists == 0) return gz_fail(GZ_ERR_FORMAT, "%s: %s has no attribute '%s'", file, objname, attr);
    hid_t a = H5Aopen(obj, attr, H5P_DEFAULT);
    if (a < 0)
        return gz_fail(GZ_ERR_FORMAT, "%s: opening attribute %s of %s failed (HDF5: %s)", file, attr, objname,
                       ckpt_h5_detail());
    hid_t type = H5Aget_type(a), space = H5Aget_space(a);
    H5T_class_t got = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
    hssize_t n = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    ckpt_close(type);
    ckpt_close(space);
    if (got != cls || n != count) {
        ckpt_close(a);
        H5Eclear2(H5E_DEFAULT);
        return gz_fail(GZ_ERR_FORMAT, "%s: attribute %s of %s has the wrong type or size", file, attr, objname);
    }
    *out = a;
    return GZ_OK;
}

static gz_status read_failed(const char *file, const char *attr, const char *objname) {
    return gz_fail(GZ_ERR_FORMAT, "%s: reading attribute %s of %s failed (HDF5: %s)", file, attr, objname,
                   ckpt_h5_detail());
}

gz_status ckpt_read_attr_str(const char *file, hid_t obj, const char *objname, const char *attr, char **out) {
    *out = NULL;
    hid_t a;
    GZ_TRY(open_attr(file, obj, objname, attr, H5T_STRING, 1, &a));
    gz_status st = GZ_OK;
    hid_t type = H5Aget_type(a), mem = -1;
    htri_t vlen = type < 0 ? -1 : H5Tis_variable_str(type);
    if (vlen < 0) {
        st = gz_fail(GZ_ERR_FORMAT, "%s: attribute %s of %s is unreadable (HDF5: %s)", file, attr, objname,
                     ckpt_h5_detail());
    } else if (vlen) { /* written by other tools, e.g. h5py */
        char *s = NULL;
        mem = H5Tcopy(H5T_C_S1);
        if (mem < 0 || H5Tset_size(mem, H5T_VARIABLE) < 0 || H5Tset_cset(mem, H5Tget_cset(type)) < 0 ||
            H5Aread(a, mem, &s) < 0 || !s) {
            st = read_failed(file, attr, objname);
        } else {
            size_t len = strlen(s);
            st = gz_calloc((void **)out, len + 1, 1, "a checkpoint string attribute");
            if (st == GZ_OK) memcpy(*out, s, len);
        }
        if (s) H5free_memory(s);
    } else {
        size_t size = H5Tget_size(type);
        char *buf = NULL;
        /* Attribute values live in object headers; a declared size beyond this is a corrupt type. */
        st = size == 0 || size > (1u << 26)
                 ? gz_fail(GZ_ERR_FORMAT, "%s: attribute %s of %s is unreadable", file, attr, objname)
                       : gz_calloc((void **)&buf, size + 1, 1, "a checkpoint string attribute");
        if (st == GZ_OK) {
            /* The stored type itself as memory type: same size, padding and character set. */
            mem = H5Tcopy(type);
            if (mem < 0 || H5Aread(a, mem, buf) < 0) {
                st = read_failed(file, attr, objname);
                free(buf);
            } else {
                *out = buf;
            }
        }
    }
    ckpt_close(mem);
    ckpt_close(type);
    ckpt_close(a);
    return st;
}

/* n values of type class cls, read as mem_type into out. */
static gz_status read_numeric_attr(const char *file, hid_t obj, const char *objname, const char *attr,
                                   H5T_class_t cls, hid_t mem_type, int n, void *out) {
    hid_t a;
    GZ_TRY(open_attr(file, obj, objname, attr, cls, n, &a));
    gz_status st = H5Aread(a, mem_type, out) < 0 ? read_failed(file, attr, objname) : GZ_OK;
    ckpt_close(a);
    return st;
}

gz_status ckpt_read_attr_i64(const char *file, hid_t obj, const char *objname, const char *attr, int64_t *out) {
    return read_numeric_attr(file, obj, objname, attr, H5T_INTEGER, H5T_NATIVE_INT64, 1, out);
}

gz_status ckpt_read_attr_f32(const char *file, hid_t obj, const char *objname, const char *attr, float *out,
                             int n) {
    return read_numeric_attr(file, obj, objname, attr, H5T_FLOAT, H5T_NATIVE_FLOAT, n, out);
}

/* ------------------------------------------------------------------ datasets */

/* About 4 MiB per chunk: large enough for streaming speed, each with its own checksum. */
#define CHUNK_ELEMS (1u << 20)

static hid_t checksummed_dcpl(int ndim, const hsize_t *dims, size_t elem_size) {
    hsize_t chunk[2] = {dims[0], ndim == 2 ? dims[1] : 1};
    size_t target = CHUNK_ELEMS * sizeof(float) / elem_size;
    if (ndim == 1) {
        if (chunk[0] > target) chunk[0] = target;
    } else {
        hsize_t rows = chunk[1] >= target ? 1 : target / chunk[1];
        if (chunk[0] > rows) chunk[0] = rows;
    }
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dcpl < 0) return -1;
    if (H5Pset_chunk(dcpl, ndim, chunk) < 0 || H5Pset_fletcher32(dcpl) < 0) {
        H5Pclose(dcpl);
        return -1;
    }
    return dcpl;
}

gz_status ckpt_write_f32(const char *file, hid_t group, const char *groupname, const char *name, int ndim,
                         const int64_t *shape, const float *data, hid_t *out_dataset) {
    *out_dataset = -1;
    hsize_t dims[2] = {(hsize_t)shape[0], ndim == 2 ? (hsize_t)shape[1] : 1};
    hid_t space = H5Screate_simple(ndim, dims, NULL);
    hid_t dcpl = checksummed_dcpl(ndim, dims, sizeof(float));
    hid_t ds = space < 0 || dcpl < 0 ? -1
               : H5Dcreate2(group, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    gz_status st = GZ_OK;
    if (ds < 0 || H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        st = gz_fail(GZ_ERR_IO, "%s: writing tensor %s/%s failed (HDF5: %s)", file, groupname, name,
                     ckpt_h5_detail());
        ckpt_close(ds);
    } else {
        *out_dataset = ds;
    }
    ckpt_close(dcpl);
    ckpt_close(space);
    return st;
}

static void format_shape(char *buf, size_t size, int ndim, const hsize_t *dims) {
    int n = snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n > 0 && (size_t)n < size; i++)
        n += snprintf(buf + n, size - n, i ? ", %llu" : "%llu", (unsigned long long)dims[i]);
    if (n > 0 && (size_t)n < size) snprintf(buf + n, size - n, "]");
}

gz_status ckpt_read_f32(const char *file, hid_t group, const char *groupname, const char *name, int ndim,
                        const int64_t *shape, float *data, hid_t *out_dataset) {
    *out_dataset = -1;
    hid_t ds;
    GZ_TRY(ckpt_open_dataset(file, group, groupname, name, &ds));
    gz_status st = GZ_OK;
    hid_t type = H5Dget_type(ds), space = H5Dget_space(ds);
    H5T_class_t cls = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
    size_t size = type < 0 ? 0 : H5Tget_size(type);
    int got_ndim = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    hsize_t dims[H5S_MAX_RANK];
    hsize_t want[2] = {(hsize_t)shape[0], ndim == 2 ? (hsize_t)shape[1] : 0};
    if (type < 0 || space < 0 || got_ndim < 0) {
        st = gz_fail(GZ_ERR_FORMAT, "%s: tensor %s/%s is unreadable (HDF5: %s)", file, groupname, name,
                     ckpt_h5_detail());
    } else if (cls != H5T_FLOAT || size != sizeof(float)) {
        st = gz_fail(GZ_ERR_FORMAT, "%s: tensor %s/%s is not float32 (HDF5 type class %d, %zu bytes)", file,
                     groupname, name, (int)cls, size);
    } else if (H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        st = gz_fail(GZ_ERR_FORMAT, "%s: tensor %s/%s has an unreadable shape (HDF5: %s)", file, groupname,
                     name, ckpt_h5_detail());
    } else if (got_ndim != ndim || dims[0] != want[0] || (ndim == 2 && dims[1] != want[1])) {
        char got_s[GZ_SHAPE_TEXT], want_s[GZ_SHAPE_TEXT];
        format_shape(got_s, sizeof got_s, got_ndim > 2 ? 2 : got_ndim, dims);
        format_shape(want_s, sizeof want_s, ndim, want);
        st = gz_fail(GZ_ERR_FORMAT, "%s: tensor %s/%s has shape %s%s, the model expects %s", file, groupname,
                     name, got_s, got_ndim > 2 ? " (and more dims)" : "", want_s);
    } else if ((st = ckpt_check_storage(file, ds, groupname, name, dims[0] * (ndim == 2 ? dims[1] : 1), sizeof(float)))
               != GZ_OK) {
    } else if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        st = gz_fail(GZ_ERR_FORMAT, "%s: reading tensor %s/%s failed, the file is corrupt (HDF5: %s)", file,
                     groupname, name, ckpt_h5_detail());
    }
    ckpt_close(type);
    ckpt_close(space);
    if (st == GZ_OK)
        *out_dataset = ds;
    else
        ckpt_close(ds);
    return st;
}

gz_status ckpt_write_bytes(const char *file, hid_t loc, const char *name, const void *data, size_t len) {
    hsize_t dims[1] = {(hsize_t)len};
    hid_t space = H5Screate_simple(1, dims, NULL);
    /* Chunks need a non-zero size, so an empty blob is a plain empty dataset. */
    hid_t dcpl = len ? checksummed_dcpl(1, dims, 1) : H5Pcreate(H5P_DATASET_CREATE);
    hid_t ds = space < 0 || dcpl < 0 ? -1 : H5Dcreate2(loc, name, H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    gz_status st = GZ_OK;
    if (ds < 0 || (len && H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
        st = gz_fail(GZ_ERR_IO, "%s: writing /%s failed (HDF5: %s)", file, name, ckpt_h5_detail());
    ckpt_close(ds);
    ckpt_close(dcpl);
    ckpt_close(space);
    return st;
}

gz_status ckpt_read_bytes(const char *file, hid_t loc, const char *name, void **out, size_t *len) {
    *out = NULL;
    *len = 0;
    hid_t ds;
    GZ_TRY(ckpt_open_dataset(file, loc, "", name, &ds));
    hid_t type = H5Dget_type(ds), space = H5Dget_space(ds);
    int ndim = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    hsize_t dims[1] = {0};
    gz_status st = GZ_OK;
    if (type < 0 || ndim != 1 || H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != 1 ||
        H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        H5Eclear2(H5E_DEFAULT);
        st = gz_fail(GZ_ERR_FORMAT, "%s: /%s is not a 1-D uint8 dataset", file, name);
    } else if ((st = ckpt_check_storage(file, ds, "", name, dims[0], 1)) != GZ_OK) {
    } else {
        st = gz_calloc(out, (size_t)dims[0], 1, name);
        if (st == GZ_OK && dims[0] && H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0) {
            st = gz_fail(GZ_ERR_FORMAT, "%s: reading /%s failed, the file is corrupt (HDF5: %s)", file, name,
                         ckpt_h5_detail());
            free(*out);
            *out = NULL;
        }
        if (st == GZ_OK) *len = (size_t)dims[0];
    }
    ckpt_close(type);
    ckpt_close(space);
    ckpt_close(ds);
    return st;
}
