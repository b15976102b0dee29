/* checkpoint_check.c — the reader's view of a file's structure: group listings, and what it accepts: objects
 * reached by hard links only, datasets stored inside the file the way the writer stores them, declared
 * extents backed by stored bytes. A checkpoint is untrusted input; none of it may make the reader open
 * another file or allocate more than the file holds. */
#include <stdlib.h>
#include "checkpoint_internal.h"

gz_status ckpt_check_link(const char *file, hid_t loc, const char *locname, const char *name) {
    H5L_info_t info;
    if (H5Lget_info(loc, name, &info, H5P_DEFAULT) < 0)
        return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: %s/%s is missing or unreadable (HDF5: %s)", file, locname,
                       name, ckpt_h5_detail());
    if (info.type != H5L_TYPE_HARD)
        return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: %s/%s is a%s link, not stored in the file itself; "
                       "gozaru checkpoints hold only their own data", file, locname, name,
                       info.type == H5L_TYPE_SOFT ? " soft" : info.type == H5L_TYPE_EXTERNAL ? "n external"
                                                                                             : " user-defined");
    return GZ_OK;
}

/* The dataset must be stored the way the writer stores it: inside this file (no external raw data, no
 * virtual mapping onto other datasets or files), no filter but Fletcher-32, which every non-empty one
 * has, and at least as many stored bytes as its declared extent (checked before anything that size is
 * allocated). */
gz_status ckpt_check_storage(const char *file, hid_t ds, const char *locname, const char *name, hsize_t numel,
                             size_t elem_size) {
    hid_t dcpl = H5Dget_create_plist(ds);
    if (dcpl < 0)
        return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: %s/%s is unreadable (HDF5: %s)", file, locname, name,
                       ckpt_h5_detail());
    H5D_layout_t layout = H5Pget_layout(dcpl);
    int external = H5Pget_external_count(dcpl), nfilters = H5Pget_nfilters(dcpl), fletcher = 0;
    H5Z_filter_t other = H5Z_FILTER_NONE;
    for (int i = 0; i < nfilters; i++) {
        unsigned flags = 0, config = 0;
        size_t nvals = 0;
        char fname[1];
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nvals, NULL, sizeof fname, fname, &config);
        if (id == H5Z_FILTER_FLETCHER32) fletcher = 1;
        else other = id;
    }
    ckpt_close(dcpl);
    H5Eclear2(H5E_DEFAULT);
    if (external != 0)
        return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: %s/%s keeps its data in another file (external storage); "
                       "gozaru checkpoints hold only their own data", file, locname, name);
    if (layout == H5D_VIRTUAL)
        return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: %s/%s is a virtual dataset (data mapped from elsewhere); "
                       "gozaru checkpoints hold only their own data", file, locname, name);
    if (layout != H5D_CONTIGUOUS && layout != H5D_CHUNKED && layout != H5D_COMPACT)
        return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: %s/%s has an unknown storage layout", file, locname, name);
    if (nfilters < 0 || other != H5Z_FILTER_NONE)
        return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: %s/%s uses HDF5 filter %d; gozaru checkpoints use only the "
                       "Fletcher-32 checksum", file, locname, name, (int)other);
    if (numel > 0 && !fletcher)
        return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: %s/%s has no Fletcher-32 checksum (gozaru writes every "
                       "non-empty dataset with one)", file, locname, name);
    hsize_t stored = H5Dget_storage_size(ds);
    H5Eclear2(H5E_DEFAULT);
    if (numel > 0 && (numel > ((hsize_t)-1) / elem_size || stored < numel * elem_size))
        return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: %s/%s declares %llu elements but stores only %llu bytes; "
                       "the file is truncated or crafted", file, locname, name, (unsigned long long)numel,
                       (unsigned long long)stored);
    return GZ_OK;
}

gz_status ckpt_open_dataset(const char *file, hid_t loc, const char *locname, const char *name, hid_t *out) {
    *out = -1;
    GZ_TRY(ckpt_check_link(file, loc, locname, name));
    *out = H5Dopen2(loc, name, H5P_DEFAULT);
    if (*out < 0)
        return gz_fail(GZ_ERR_FORMAT, "%s: opening %s/%s failed (HDF5: %s)", file, locname, name,
                       ckpt_h5_detail());
    return GZ_OK;
}

/* ------------------------------------------------------------------ listings */

int ckpt_exists(hid_t loc, const char *name) {
    htri_t e = H5Lexists(loc, name, H5P_DEFAULT);
    return e < 0 ? -1 : e > 0;
}

void ckpt_free_names(char **names, int count) {
    if (!names) return;
    for (int i = 0; i < count; i++) free(names[i]);
    free(names);
}

gz_status ckpt_list_group(const char *file, hid_t group, const char *groupname, char ***names, int *count) {
    *names = NULL;
    *count = 0;
    H5G_info_t info;
    if (H5Gget_info(group, &info) < 0)
        return gz_fail(GZ_ERR_FORMAT, "%s: listing %s failed (HDF5: %s)", file, groupname, ckpt_h5_detail());
    if (info.nlinks > (1u << 24))
        return gz_fail(GZ_ERR_FORMAT, "%s: %s claims %llu entries; the file is corrupt", file, groupname,
                       (unsigned long long)info.nlinks);
    char **list = NULL;
    int n = (int)info.nlinks;
    GZ_TRY(gz_calloc((void **)&list, n, sizeof *list, "a checkpoint group listing"));
    for (int i = 0; i < n; i++) {
        ssize_t len = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)i, NULL, 0, H5P_DEFAULT);
        gz_status st = len < 0 ? gz_fail(GZ_ERR_FORMAT, "%s: listing %s failed (HDF5: %s)", file, groupname,
                                         ckpt_h5_detail())
                               : gz_calloc((void **)&list[i], (size_t)len + 1, 1, "a tensor name");
        if (st == GZ_OK &&
            H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)i, list[i], (size_t)len + 1,
                               H5P_DEFAULT) < 0)
            st = gz_fail(GZ_ERR_FORMAT, "%s: listing %s failed (HDF5: %s)", file, groupname, ckpt_h5_detail());
        if (st != GZ_OK) {
            ckpt_free_names(list, n);
            return st;
        }
    }
    *names = list;
    *count = n;
    return GZ_OK;
}
