/* checkpoint_write.c — gz_checkpoint_save: the whole checkpoint goes to a temporary file in
 * the target's folder, which is flushed, fsynced and renamed over the target, so the target
 * always holds either the previous checkpoint or the new one. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "checkpoint_internal.h"

static gz_status interrupted(const char *file) {
    return gz_interrupt_requested() ? gz_fail(GZ_ERR_INTERRUPTED, "%s: save interrupted", file) : GZ_OK;
}

static gz_status create_group(const char *file, hid_t loc, const char *name, hid_t *out) {
    hid_t gcpl = ckpt_compact_plist(H5P_GROUP_CREATE);
    *out = gcpl < 0 ? -1 : H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    ckpt_close(gcpl);
    if (*out < 0) return gz_fail(GZ_ERR_IO, "%s: creating group %s failed (HDF5: %s)", file, name, ckpt_h5_detail());
    return GZ_OK;
}

static gz_status write_root(const char *file, hid_t f, const char *config_json, int64_t step, int64_t tokens_seen) {
    GZ_TRY(ckpt_write_attr_str(file, f, "/", "format", GZ_CKPT_FORMAT));
    GZ_TRY(ckpt_write_attr_i64(file, f, "/", "version", GZ_CKPT_VERSION));
    GZ_TRY(ckpt_write_attr_str(file, f, "/", "config", config_json ? config_json : ""));
    GZ_TRY(ckpt_write_attr_i64(file, f, "/", "step", step));
    GZ_TRY(ckpt_write_attr_i64(file, f, "/", "tokens_seen", tokens_seen));
    return GZ_OK;
}

static gz_status write_params(const char *file, hid_t f, gz_model *m) {
    hid_t g;
    GZ_TRY(create_group(file, f, "params", &g));
    gz_status st = ckpt_write_config(file, g, gz_model_config(m));
    if (st == GZ_OK) st = ckpt_write_rope(file, g, m);
    const float *host = gz_model_params_host(m);
    int n = gz_model_num_tensors(m);
    for (int i = 0; i < n && st == GZ_OK; i++) {
        gz_tensor_info t;
        hid_t ds = -1;
        st = gz_model_tensor(m, i, &t);
        if (st == GZ_OK) st = interrupted(file);
        if (st == GZ_OK) st = ckpt_write_f32(file, g, "/params", t.name, t.ndim, t.shape, host + t.offset, &ds);
        if (st == GZ_OK) st = ckpt_write_attr_i64(file, ds, t.name, "trainable", gz_model_is_trainable(m, i));
        ckpt_close(ds);
    }
    ckpt_close(g);
    return st;
}

static gz_status write_optimizer_config(const char *file, hid_t g, const gz_adamw *opt, float lr) {
    const gz_adamw_config *c = gz_adamw_get_config(opt);
    float betas[2] = {c->beta1, c->beta2};
    GZ_TRY(ckpt_write_attr_f32(file, g, "/optim", "lr", &lr, 1));
    GZ_TRY(ckpt_write_attr_f32(file, g, "/optim", "betas", betas, 2));
    GZ_TRY(ckpt_write_attr_f32(file, g, "/optim", "eps", &c->eps, 1));
    GZ_TRY(ckpt_write_attr_f32(file, g, "/optim", "weight_decay", &c->weight_decay, 1));
    GZ_TRY(ckpt_write_attr_i64(file, g, "/optim", "decay_all", c->decay_all));
    return GZ_OK;
}

/* Moments of every tensor that has optimizer state (trainable now or at some earlier step). */
static gz_status write_moments(const char *file, hid_t gm, hid_t gv, gz_model *m, const gz_adamw *opt) {
    int n = gz_model_num_tensors(m);
    int64_t max_numel = 0;
    for (int i = 0; i < n; i++) {
        gz_tensor_info t;
        GZ_TRY(gz_model_tensor(m, i, &t));
        if (gz_adamw_has_state(opt, i) && t.numel > max_numel) max_numel = t.numel;
    }
    if (max_numel == 0) return GZ_OK;
    float *mbuf = NULL, *vbuf = NULL;
    gz_status st = gz_calloc((void **)&mbuf, (size_t)max_numel, sizeof(float), "optimizer moments for saving");
    if (st == GZ_OK) st = gz_calloc((void **)&vbuf, (size_t)max_numel, sizeof(float), "optimizer moments for saving");
    for (int i = 0; i < n && st == GZ_OK; i++) {
        if (!gz_adamw_has_state(opt, i)) continue;
        gz_tensor_info t;
        int64_t step = 0;
        hid_t dm = -1, dv = -1;
        st = gz_model_tensor(m, i, &t);
        if (st == GZ_OK) st = interrupted(file);
        if (st == GZ_OK) st = gz_adamw_get_state(opt, i, mbuf, vbuf, &step);
        if (st == GZ_OK) st = ckpt_write_f32(file, gm, "/optim/m", t.name, t.ndim, t.shape, mbuf, &dm);
        if (st == GZ_OK) st = ckpt_write_attr_i64(file, dm, t.name, "step", step);
        if (st == GZ_OK) st = ckpt_write_f32(file, gv, "/optim/v", t.name, t.ndim, t.shape, vbuf, &dv);
        ckpt_close(dm);
        ckpt_close(dv);
    }
    free(mbuf);
    free(vbuf);
    return st;
}

static gz_status write_optimizer(const char *file, hid_t f, gz_model *m, const gz_adamw *opt, float lr) {
    hid_t g = -1, gm = -1, gv = -1;
    gz_status st = create_group(file, f, "optim", &g);
    if (st == GZ_OK) st = write_optimizer_config(file, g, opt, lr);
    if (st == GZ_OK) st = create_group(file, g, "m", &gm);
    if (st == GZ_OK) st = create_group(file, g, "v", &gv);
    if (st == GZ_OK) st = write_moments(file, gm, gv, m, opt);
    ckpt_close(gv);
    ckpt_close(gm);
    ckpt_close(g);
    return st;
}

/* Everything but the rename; on failure the caller deletes tmp. */
static gz_status write_file(const char *tmp, const char *path, gz_model *m, const gz_checkpoint_save_args *a) {
    hid_t fapl = ckpt_fapl(), fcpl = ckpt_compact_plist(H5P_FILE_CREATE);
    hid_t f = fapl < 0 || fcpl < 0 ? -1 : H5Fcreate(tmp, H5F_ACC_EXCL, fcpl, fapl);
    ckpt_close(fapl);
    ckpt_close(fcpl);
    if (f < 0) return gz_fail(GZ_ERR_IO, "%s: creating %s failed (HDF5: %s)", path, tmp, ckpt_h5_detail());
    gz_status st = write_root(path, f, a->config_json ? a->config_json : "", a->step, a->tokens_seen);
    if (st == GZ_OK) st = write_params(path, f, m);
    if (st == GZ_OK && a->optimizer) st = write_optimizer(path, f, m, a->optimizer, a->lr);
    if (st == GZ_OK) st = ckpt_write_bytes(path, f, "rng", a->rng, a->rng_len);
    if (st == GZ_OK) st = ckpt_write_bytes(path, f, "data", a->extra, a->extra_len);
    if (st == GZ_OK && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0)
        st = gz_fail(GZ_ERR_IO, "%s: flushing %s failed (HDF5: %s)", path, tmp, ckpt_h5_detail());
    if (ckpt_close_file(f) < 0 && st == GZ_OK)
        st = gz_fail(GZ_ERR_IO, "%s: closing %s failed (HDF5: %s)", path, tmp, ckpt_h5_detail());
    return st;
}

gz_status gz_checkpoint_save(const char *path, gz_model *m, const gz_checkpoint_save_args *args) {
    if (!path || !*path || !m) return gz_fail(GZ_ERR_VALUE, "gz_checkpoint_save: path and model are required");
    const gz_checkpoint_save_args none = {0}, *a = args ? args : &none;
    if (a->step < 0 || a->tokens_seen < 0)
        return gz_fail(GZ_ERR_VALUE, "gz_checkpoint_save: step = %lld and tokens_seen = %lld must be >= 0",
                       (long long)a->step, (long long)a->tokens_seen);
    if ((a->rng_len && !a->rng) || (a->extra_len && !a->extra))
        return gz_fail(GZ_ERR_VALUE, "gz_checkpoint_save: a byte blob has a length but no data");
    GZ_TRY(gz_model_sync_params_to_host(m));
    ckpt_lock();
    ckpt_remove_stale_temps(path);
    char *tmp = NULL;
    gz_status st = ckpt_temp_path(path, &tmp);
    if (st == GZ_OK) {
        st = write_file(tmp, path, m, a);
        if (st == GZ_OK) st = ckpt_commit(tmp, path);
        if (st != GZ_OK) unlink(tmp); /* harmless when the rename already happened */
    }
    free(tmp);
    ckpt_unlock();
    return st;
}
