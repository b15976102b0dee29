/* weight_copies.h — the table of low-precision weight copies one backend instance keeps, and the rule of
 * precision.h for when a copy goes stale, shared by the CPU (cpu/matmul_bf16.c) and CUDA (cuda/gemm.cu)
 * backends. Each backend allocates, fills and frees the copies in its own memory; this table only finds them and
 * tracks which are valid. Host code, C and C++. */
#ifndef GOZARU_WEIGHT_COPIES_H
#define GOZARU_WEIGHT_COPIES_H

#include <stdlib.h>
#include "internal.h"

typedef struct {
    const float *src; /* the fp32 master in backend memory */
    int64_t count;
    void *copy;       /* backend memory (NULL until the backend allocates it) */
    int valid;        /* 0: re-round from src before the next read */
} gz_weight_copy;

typedef struct {
    gz_weight_copy *items;
    int n, cap;
} gz_weight_copies;

/* Marks the copies overlapping [p, p + bytes) stale; p NULL: all of them. */
static inline void gz_weight_copies_written(gz_weight_copies *t, const void *p, size_t bytes) {
    const char *lo = (const char *)p, *hi = lo + bytes;
    for (int i = 0; i < t->n; i++) {
        gz_weight_copy *w = &t->items[i];
        const char *a = (const char *)w->src, *b = a + (size_t)w->count * sizeof(float);
        if (!p || (a < hi && lo < b)) w->valid = 0;
    }
}

/* The entry of weight w[count]; a new one (copy NULL, not valid) is appended when there is none. */
static inline gz_status gz_weight_copies_find(gz_weight_copies *t, const float *w, int64_t count,
                                              gz_weight_copy **out) {
    for (int i = 0; i < t->n; i++)
        if (t->items[i].src == w && t->items[i].count == count) {
            *out = &t->items[i];
            return GZ_OK;
        }
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 64;
        gz_weight_copy *grown = (gz_weight_copy *)realloc(t->items, (size_t)cap * sizeof *grown);
        if (!grown) return gz_fail(GZ_ERR_NOMEM, "low-precision weight table (%d entries)", cap);
        t->items = grown;
        t->cap = cap;
    }
    gz_weight_copy *e = &t->items[t->n++];
    e->src = w;
    e->count = count;
    e->copy = NULL;
    e->valid = 0;
    *out = e;
    return GZ_OK;
}

/* Empties the table; the backend has freed every entry's copy first. */
static inline void gz_weight_copies_clear(gz_weight_copies *t) {
    free(t->items);
    t->items = NULL;
    t->n = t->cap = 0;
}

#endif
