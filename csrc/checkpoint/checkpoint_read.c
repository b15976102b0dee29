/* checkpoint_read.c — gz_checkpoint_read_meta / gz_checkpoint_load.
 *
 * Load reads and validates everything into temporary buffers while the file is open and only
 * then writes into the model and optimizer, so a bad file leaves both unchanged. The price is
 * one extra host copy of the checkpoint's tensors during the load. */
#include <stdlib.h>
#include <string.h>
#include "checkpoint_internal.h"

/* ------------------------------------------------------------------ opening */

static gz_status open_checkpoint(const char *path, hid_t *out) {
    *out = -1;
    GZ_TRY(ckpt_check_readable(path));
    hid_t fapl = ckpt_fapl();
    if (fapl < 0) return gz_fail(GZ_ERR_IO, "checkpoint %s: HDF5 setup failed (HDF5: %s)", path, ckpt_h5_detail());
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    ckpt_close(fapl);
    if (f < 0)
        return gz_fail(GZ_ERR_FORMAT, "checkpoint %s is not a readable HDF5 file: truncated or corrupt (HDF5: %s)",
                       path, ckpt_h5_detail());
    char *format = NULL;
    int64_t version = 0;
    gz_status st = ckpt_read_attr_str(path, f, "/", "format", &format);
    if (st == GZ_OK && strcmp(format, GZ_CKPT_FORMAT) != 0)
        st = gz_fail(GZ_ERR_FORMAT, "checkpoint %s: format attribute is '%.40s', not '%s'", path, format,
                     GZ_CKPT_FORMAT);
    if (st == GZ_OK) st = ckpt_read_attr_i64(path, f, "/", "version", &version);
    if (st == GZ_OK && (version < 1 || version > GZ_CKPT_VERSION))
        st = gz_fail(GZ_ERR_FORMAT, "checkpoint %s has format version %lld; this gozaru reads version %d%s", path,
                     (long long)version, GZ_CKPT_VERSION, version > GZ_CKPT_VERSION ? " (upgrade gozaru)" : "");
    free(format);
    if (st != GZ_OK) {
        ckpt_close(f);
        return st;
    }
    *out = f;
    return GZ_OK;
}

static gz_status open_group(const char *path, hid_t loc, const char *locname, const char *name, hid_t *out) {
    *out = -1;
    GZ_TRY(ckpt_check_link(path, loc, locname, name));
    *out = H5Gopen2(loc, name, H5P_DEFAULT);
    if (*out < 0)
        return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: group %s is missing or unreadable (HDF5: %s)", path, name,
                       ckpt_h5_detail());
    return GZ_OK;
}

/* ------------------------------------------------------------------ meta */

static gz_status read_optimizer_meta(const char *path, hid_t f, gz_checkpoint_meta *out) {
    int e = ckpt_exists(f, "optim");
    if (e < 0) return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: unreadable (HDF5: %s)", path, ckpt_h5_detail());
    if (e == 0) return GZ_OK;
    hid_t g;
    GZ_TRY(open_group(path, f, "", "optim", &g));
    float betas[2];
    int64_t decay_all = 0;
    gz_status st = ckpt_read_attr_f32(path, g, "/optim", "lr", &out->lr, 1);
    if (st == GZ_OK) st = ckpt_read_attr_f32(path, g, "/optim", "betas", betas, 2);
    if (st == GZ_OK) st = ckpt_read_attr_f32(path, g, "/optim", "eps", &out->adamw.eps, 1);
    if (st == GZ_OK) st = ckpt_read_attr_f32(path, g, "/optim", "weight_decay", &out->adamw.weight_decay, 1);
    if (st == GZ_OK) st = ckpt_read_attr_i64(path, g, "/optim", "decay_all", &decay_all);
    ckpt_close(g);
    GZ_TRY(st);
    out->adamw.beta1 = betas[0];
    out->adamw.beta2 = betas[1];
    out->adamw.decay_all = decay_all != 0;
    out->has_optimizer = 1;
    return GZ_OK;
}

static gz_status read_meta(const char *path, hid_t f, gz_checkpoint_meta *out) {
    int64_t version;
    GZ_TRY(ckpt_read_attr_str(path, f, "/", "format", &out->format));
    GZ_TRY(ckpt_read_attr_i64(path, f, "/", "version", &version));
    out->version = (int)version;
    GZ_TRY(ckpt_read_attr_str(path, f, "/", "config", &out->config_json));
    GZ_TRY(ckpt_read_attr_i64(path, f, "/", "step", &out->step));
    GZ_TRY(ckpt_read_attr_i64(path, f, "/", "tokens_seen", &out->tokens_seen));
    GZ_TRY(ckpt_read_bytes(path, f, "rng", &out->rng, &out->rng_len));
    GZ_TRY(ckpt_read_bytes(path, f, "data", &out->extra, &out->extra_len));
    return read_optimizer_meta(path, f, out);
}

void gz_checkpoint_meta_free(gz_checkpoint_meta *meta) {
    if (!meta) return;
    free(meta->format);
    free(meta->config_json);
    free(meta->rng);
    free(meta->extra);
    memset(meta, 0, sizeof *meta);
}

gz_status gz_checkpoint_read_meta(const char *path, gz_checkpoint_meta *out) {
    if (!out) return gz_fail(GZ_ERR_VALUE, "gz_checkpoint_read_meta: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path || !*path) return gz_fail(GZ_ERR_VALUE, "gz_checkpoint_read_meta: empty path");
    ckpt_lock();
    hid_t f;
    gz_status st = open_checkpoint(path, &f);
    if (st == GZ_OK) {
        st = read_meta(path, f, out);
        ckpt_close(f);
    }
    ckpt_unlock();
    if (st != GZ_OK) gz_checkpoint_meta_free(out);
    return st;
}

/* ------------------------------------------------------------------ load */

/* Everything read from the file, before anything is written into the model. */
typedef struct {
    int n;             /* tensors in the model */
    float *params;     /* the model's layout */
    int *trainable;    /* [n] */
    float **m, **v;    /* [n], NULL where the file has no optimizer state for that tensor */
    int64_t *steps;    /* [n] */
} staged_load;

static void staged_free(staged_load *s) {
    for (int i = 0; s->m && i < s->n; i++) free(s->m[i]);
    for (int i = 0; s->v && i < s->n; i++) free(s->v[i]);
    free(s->m);
    free(s->v);
    free(s->steps);
    free(s->trainable);
    free(s->params);
}

/* "a, b, c and 4 more" from the flagged names, for error messages. */
static void name_list(char *buf, size_t size, char **names, const int *flagged, int count) {
    int shown = 0, total = 0;
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < count; i++) {
        if (!flagged[i]) continue;
        total++;
        if (shown < 4 && used < size) {
            used += snprintf(buf + used, size - used, "%s%s", shown ? ", " : "", names[i]);
            shown++;
        }
    }
    if (total > shown && used < size) snprintf(buf + used, size - used, " and %d more", total - shown);
}

static gz_status interrupted(const char *path) {
    return gz_interrupt_requested() ? gz_fail(GZ_ERR_INTERRUPTED, "checkpoint %s: load interrupted", path) : GZ_OK;
}

/* Every name in group must be a model tensor; every model tensor must be there when required. */
static gz_status check_names(const char *path, hid_t g, const char *groupname, const gz_model *m, int required,
                             int *present) {
    char **names = NULL;
    int count = 0;
    GZ_TRY(ckpt_list_group(path, g, groupname, &names, &count));
    int n = gz_model_num_tensors(m);
    int *unknown = NULL, *missing = NULL;
    gz_status st = gz_calloc((void **)&unknown, count, sizeof(int), "a name check");
    if (st == GZ_OK) st = gz_calloc((void **)&missing, n, sizeof(int), "a name check");
    int n_unknown = 0, n_missing = 0;
    for (int i = 0; i < n && st == GZ_OK; i++) present[i] = 0;
    for (int i = 0; i < count && st == GZ_OK; i++) {
        int idx = gz_model_find_tensor(m, names[i]);
        if (idx < 0) unknown[i] = 1, n_unknown++;
        else present[idx] = 1;
    }
    char list[512];
    if (st == GZ_OK && n_unknown) {
        name_list(list, sizeof list, names, unknown, count);
        st = gz_fail(GZ_ERR_FORMAT, "checkpoint %s: %d unknown tensor(s) in %s: %s", path, n_unknown, groupname, list);
    }
    if (st == GZ_OK && required) {
        char **model_names = NULL;
        st = gz_calloc((void **)&model_names, n, sizeof(char *), "a name check");
        for (int i = 0; i < n && st == GZ_OK; i++) {
            gz_tensor_info t;
            st = gz_model_tensor(m, i, &t);
            model_names[i] = (char *)t.name;
            if (!present[i]) missing[i] = 1, n_missing++;
        }
        if (st == GZ_OK && n_missing) {
            name_list(list, sizeof list, model_names, missing, n);
            st = gz_fail(GZ_ERR_FORMAT, "checkpoint %s: %d tensor(s) missing from %s: %s", path, n_missing, groupname,
                         list);
        }
        free(model_names);
    }
    free(unknown);
    free(missing);
    ckpt_free_names(names, count);
    return st;
}

static gz_status stage_params(const char *path, hid_t f, const gz_model *m, staged_load *s) {
    hid_t g;
    GZ_TRY(open_group(path, f, "", "params", &g));
    int *present = NULL;
    gz_status st = ckpt_check_config(path, g, gz_model_config(m));
    if (st == GZ_OK) st = ckpt_check_rope(path, g, m);
    if (st == GZ_OK) st = gz_calloc((void **)&present, s->n, sizeof(int), "a name check");
    if (st == GZ_OK) st = check_names(path, g, "/params", m, 1, present);
    free(present);
    for (int i = 0; i < s->n && st == GZ_OK; i++) {
        gz_tensor_info t;
        int64_t flag = 0;
        hid_t ds = -1;
        st = gz_model_tensor(m, i, &t);
        if (st == GZ_OK) st = interrupted(path);
        if (st == GZ_OK) st = ckpt_read_f32(path, g, "/params", t.name, t.ndim, t.shape, s->params + t.offset, &ds);
        if (st == GZ_OK) st = ckpt_read_attr_i64(path, ds, t.name, "trainable", &flag);
        if (st == GZ_OK && flag != 0 && flag != 1)
            st = gz_fail(GZ_ERR_FORMAT, "checkpoint %s: tensor %s has trainable=%lld (must be 0 or 1)", path, t.name,
                         (long long)flag);
        s->trainable[i] = (int)flag;
        ckpt_close(ds);
    }
    ckpt_close(g);
    return st;
}

static gz_status stage_moments(const char *path, hid_t gm, hid_t gv, const gz_model *m, staged_load *s) {
    int *in_m = NULL, *in_v = NULL;
    gz_status st = gz_calloc((void **)&in_m, s->n, sizeof(int), "a name check");
    if (st == GZ_OK) st = gz_calloc((void **)&in_v, s->n, sizeof(int), "a name check");
    if (st == GZ_OK) st = check_names(path, gm, "/optim/m", m, 0, in_m);
    if (st == GZ_OK) st = check_names(path, gv, "/optim/v", m, 0, in_v);
    for (int i = 0; i < s->n && st == GZ_OK; i++) {
        if (!in_m[i] && !in_v[i]) continue;
        gz_tensor_info t;
        hid_t dm = -1, dv = -1;
        st = gz_model_tensor(m, i, &t);
        if (st == GZ_OK && in_m[i] != in_v[i])
            st = gz_fail(GZ_ERR_FORMAT, "checkpoint %s: tensor %s has /optim/%s but no /optim/%s", path, t.name,
                         in_m[i] ? "m" : "v", in_m[i] ? "v" : "m");
        if (st == GZ_OK) st = interrupted(path);
        if (st == GZ_OK) st = gz_calloc((void **)&s->m[i], (size_t)t.numel, sizeof(float), "optimizer moments");
        if (st == GZ_OK) st = gz_calloc((void **)&s->v[i], (size_t)t.numel, sizeof(float), "optimizer moments");
        if (st == GZ_OK) st = ckpt_read_f32(path, gm, "/optim/m", t.name, t.ndim, t.shape, s->m[i], &dm);
        if (st == GZ_OK) st = ckpt_read_attr_i64(path, dm, t.name, "step", &s->steps[i]);
        if (st == GZ_OK) st = ckpt_read_f32(path, gv, "/optim/v", t.name, t.ndim, t.shape, s->v[i], &dv);
        if (st == GZ_OK && gz_adamw_check_moments(t.name, s->m[i], s->v[i], t.numel) != GZ_OK)
            st = gz_fail_context(GZ_ERR_FORMAT, "checkpoint %s", path);
        if (st == GZ_OK && s->steps[i] < 0)
            st = gz_fail(GZ_ERR_FORMAT, "checkpoint %s: optimizer step of %s is %lld (must be >= 0)", path, t.name,
                         (long long)s->steps[i]);
        ckpt_close(dm);
        ckpt_close(dv);
    }
    free(in_m);
    free(in_v);
    return st;
}

static gz_status stage_optimizer(const char *path, hid_t f, const gz_model *m, const gz_adamw *opt,
                                 staged_load *s) {
    int e = ckpt_exists(f, "optim");
    if (e < 0) return gz_fail(GZ_ERR_FORMAT, "checkpoint %s: unreadable (HDF5: %s)", path, ckpt_h5_detail());
    if (e == 1) {
        hid_t g = -1, gm = -1, gv = -1;
        gz_status st = open_group(path, f, "", "optim", &g);
        if (st == GZ_OK) st = open_group(path, g, "/optim", "m", &gm);
        if (st == GZ_OK) st = open_group(path, g, "/optim", "v", &gv);
        if (st == GZ_OK) st = stage_moments(path, gm, gv, m, s);
        ckpt_close(gv);
        ckpt_close(gm);
        ckpt_close(g);
        GZ_TRY(st);
    }
    /* State the optimizer already has cannot be removed, so it must all be replaced. */
    for (int i = 0; i < s->n; i++) {
        if (gz_adamw_has_state(opt, i) && !s->m[i]) {
            gz_tensor_info t;
            GZ_TRY(gz_model_tensor(m, i, &t));
            return gz_fail(GZ_ERR_STATE,
                           "checkpoint %s has no optimizer state for %s but the optimizer has; load into a fresh "
                           "optimizer", path, t.name);
        }
    }
    return GZ_OK;
}

static gz_status stage(const char *path, const gz_model *m, const gz_adamw *opt, staged_load *s) {
    s->n = gz_model_num_tensors(m);
    GZ_TRY(gz_calloc((void **)&s->params, (size_t)gz_model_num_params(m), sizeof(float), "checkpoint parameters"));
    GZ_TRY(gz_calloc((void **)&s->trainable, s->n, sizeof(int), "trainable flags"));
    GZ_TRY(gz_calloc((void **)&s->m, s->n, sizeof(float *), "optimizer state"));
    GZ_TRY(gz_calloc((void **)&s->v, s->n, sizeof(float *), "optimizer state"));
    GZ_TRY(gz_calloc((void **)&s->steps, s->n, sizeof(int64_t), "optimizer steps"));
    ckpt_lock();
    hid_t f;
    gz_status st = open_checkpoint(path, &f);
    if (st == GZ_OK) {
        st = stage_params(path, f, m, s);
        if (st == GZ_OK && opt) st = stage_optimizer(path, f, m, opt, s);
        if (ckpt_close_file(f) < 0 && st == GZ_OK)
            st = gz_fail(GZ_ERR_FORMAT, "checkpoint %s: closing failed (HDF5: %s)", path, ckpt_h5_detail());
    }
    ckpt_unlock();
    return st;
}

/* Only allocation failures inside the model or optimizer can stop this half-way. */
static gz_status commit(gz_model *m, gz_adamw *opt, const staged_load *s) {
    for (int i = 0; i < s->n; i++) GZ_TRY(gz_model_set_trainable(m, i, s->trainable[i]));
    GZ_TRY(gz_model_sync_params_to_host(m)); /* device backends: no stale mirror left to re-upload */
    memcpy(gz_model_params_host(m), s->params, (size_t)gz_model_num_params(m) * sizeof(float));
    GZ_TRY(gz_model_params_changed(m));
    for (int i = 0; opt && i < s->n; i++)
        if (s->m[i]) GZ_TRY(gz_adamw_set_state(opt, i, s->m[i], s->v[i], s->steps[i]));
    return GZ_OK;
}

gz_status gz_checkpoint_load(const char *path, gz_model *m, gz_adamw *opt) {
    if (!path || !*path || !m) return gz_fail(GZ_ERR_VALUE, "gz_checkpoint_load: path and model are required");
    staged_load s = {0};
    gz_status st = stage(path, m, opt, &s);
    if (st == GZ_OK) st = commit(m, opt, &s);
    staged_free(&s);
    return st;
}
