/* checkpoint_internal.h — helpers shared by the checkpoint writer and reader (not public).
 *
 * Schema (version 1; docs/checkpoints.md is the reference):
 *   /                 attrs format="gozaru", version, config (JSON text), step, tokens_seen
 *   /params           attrs: the gz_config fields (checked against the model on load)
 *   /params/<HF name> float32, HF shape; attr trainable (0/1)
 *   /optim            present when an optimizer was saved; attrs lr, betas[2], eps,
 *                     weight_decay, decay_all
 *   /optim/m/<name>   float32 first moment; attr step (int64, that tensor's AdamW step)
 *   /optim/v/<name>   float32 second moment
 *   /rng, /data       uint8, opaque bytes from Python
 * Every dataset except empty blobs is chunked with the Fletcher-32 filter, the file uses the
 * HDF5 1.10 format (checksummed metadata) and groups keep their links and attributes in their
 * object headers, so corrupt metadata and corrupt tensor bytes both fail checksums on load
 * instead of loading garbage or crashing libhdf5. */
#ifndef GOZARU_CHECKPOINT_INTERNAL_H
#define GOZARU_CHECKPOINT_INTERNAL_H

#include <hdf5.h>
#include "internal.h"

#define GZ_CKPT_FORMAT "gozaru"
#define GZ_CKPT_VERSION 1

/* HDF5 (and our use of it) is serialized by one process-wide lock. Lock also silences
 * HDF5's automatic error printing for the calling thread. */
void ckpt_lock(void);
void ckpt_unlock(void);

/* The most specific message on HDF5's error stack (then clears it), for error texts. */
const char *ckpt_h5_detail(void);

/* Closes any kind of HDF5 id (file, group, dataset, attribute, dataspace, type, plist);
 * ignores ids <= 0 so cleanup paths can call it unconditionally. */
void ckpt_close(hid_t id);

/* H5Fclose that, when the close fails, still releases the file and every id under it (so libhdf5's
 * shutdown finds nothing half-closed); 0 or -1 (the error is on HDF5's stack). */
int ckpt_close_file(hid_t f);

/* File access properties: 1.10 format (checksummed metadata), no flock (files are replaced
 * by rename, never modified in place), strong close. */
hid_t ckpt_fapl(void);

/* Creation properties (H5P_FILE_CREATE for the root, H5P_GROUP_CREATE) that keep every link and
 * attribute inside the group's checksummed object header. HDF5's "dense" storage for more than 8
 * entries lives in a fractal heap whose blocks are not checksummed, and libhdf5 1.10 can crash on a
 * corrupt one. */
hid_t ckpt_compact_plist(hid_t cls);

/* ---- attributes; every function fails with GZ_ERR_FORMAT/GZ_ERR_IO naming file and object.
 * Integers are stored as int64, floats as float32 (the core's types). */
gz_status ckpt_write_attr_str(const char *file, hid_t obj, const char *objname, const char *attr, const char *s);
gz_status ckpt_write_attr_i64(const char *file, hid_t obj, const char *objname, const char *attr, int64_t v);
gz_status ckpt_write_attr_f32(const char *file, hid_t obj, const char *objname, const char *attr,
                              const float *v, int n);
/* *out is malloc'ed and NUL-terminated. */
gz_status ckpt_read_attr_str(const char *file, hid_t obj, const char *objname, const char *attr, char **out);
gz_status ckpt_read_attr_i64(const char *file, hid_t obj, const char *objname, const char *attr, int64_t *out);
gz_status ckpt_read_attr_f32(const char *file, hid_t obj, const char *objname, const char *attr,
                             float *out, int n);

/* ---- datasets */
/* Writes an fp32 tensor of the given shape (ndim 1 or 2) as group/name. */
gz_status ckpt_write_f32(const char *file, hid_t group, const char *groupname, const char *name, int ndim,
                         const int64_t *shape, const float *data, hid_t *out_dataset);
/* Opens group/name, checks it is a float32 dataset of exactly this shape, reads it into data. */
gz_status ckpt_read_f32(const char *file, hid_t group, const char *groupname, const char *name, int ndim,
                        const int64_t *shape, float *data, hid_t *out_dataset);
/* Opaque byte blobs (/rng, /data). */
gz_status ckpt_write_bytes(const char *file, hid_t loc, const char *name, const void *data, size_t len);
/* *out is malloc'ed (never NULL on success, even for len 0). */
gz_status ckpt_read_bytes(const char *file, hid_t loc, const char *name, void **out, size_t *len);

/* ---- what the reader accepts (checkpoint_check.c) */
/* GZ_ERR_FORMAT unless loc/name is a hard link: soft, external and user-defined links are refused, so
 * a checkpoint never makes the reader open another file (locname: "" for the root, for messages). */
gz_status ckpt_check_link(const char *file, hid_t loc, const char *locname, const char *name);
/* H5Dopen2 of loc/name after ckpt_check_link. */
gz_status ckpt_open_dataset(const char *file, hid_t loc, const char *locname, const char *name, hid_t *out);
/* GZ_ERR_FORMAT unless dataset ds is stored as the writer stores it: data inside the file (no external
 * storage, not virtual), no filter but Fletcher-32 (required when numel > 0), and at least
 * numel * elem_size stored bytes. Call before allocating numel elements. */
gz_status ckpt_check_storage(const char *file, hid_t ds, const char *locname, const char *name, hsize_t numel,
                             size_t elem_size);

/* 1 when group/name exists, 0 when not, GZ_ERR_FORMAT (returned negated as -1) on error. */
int ckpt_exists(hid_t loc, const char *name);

/* Names of the links in a group: *names (malloc'ed array of malloc'ed strings), *count. */
gz_status ckpt_list_group(const char *file, hid_t group, const char *groupname, char ***names, int *count);
void ckpt_free_names(char **names, int count);

/* ---- the model config as attributes of /params (checkpoint_config.c) */
gz_status ckpt_write_config(const char *file, hid_t params, const gz_config *cfg);
/* GZ_ERR_FORMAT naming the first field whose stored value differs from cfg. */
gz_status ckpt_check_config(const char *file, hid_t params, const gz_config *cfg);
/* the model's rotary frequencies and attention factor; files without them hold default-RoPE models */
gz_status ckpt_write_rope(const char *file, hid_t params, const gz_model *m);
gz_status ckpt_check_rope(const char *file, hid_t params, const gz_model *m);

/* ---- files (checkpoint_file.c) */
/* GZ_ERR_IO unless path names an existing regular file. */
gz_status ckpt_check_readable(const char *path);
/* "<path>.tmp-<pid>-<counter>" (malloc'ed) after checking the folder is writable. */
gz_status ckpt_temp_path(const char *path, char **out);
/* Removes "<basename>.tmp-<pid>-<n>" files next to path whose writer process is gone
 * (or is this process: its saves are serialized, so such a file is a leftover). */
void ckpt_remove_stale_temps(const char *path);
/* chmod(tmp) to the mode of an existing path, fsync(tmp), rename(tmp, path), fsync(folder). */
gz_status ckpt_commit(const char *tmp, const char *path);

#endif
