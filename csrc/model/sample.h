/* sample.h — choosing the next token from one row of logits (generation's sampling step). */
#ifndef GOZARU_SAMPLE_H
#define GOZARU_SAMPLE_H

#include "gozaru.h"
#include "internal.h"

/* Temperatures below this sample as greedy: 1/T would scale float32 logit gaps past any useful
 * range (and below float32's normal range it overflows), while the distribution is already the argmax. */
#define GZ_GREEDY_TEMPERATURE 1e-6f

/* Scratch for gz_sample_token: V entries. */
typedef struct { float logit; int id; } gz_scored;

/* The next token from logits lg[V] under cfg (temperature, top_k, top_p) into *out: always one of the
 * top_k / top_p tokens, the argmax when greedy. GZ_ERR_VALUE when a logit is NaN or infinite (the
 * model's weights or activations went non-finite), naming the row and step given. */
gz_status gz_sample_token(const float *lg, int V, const gz_generate_config *cfg, gz_scored *buf, gz_rng *rng,
                          int row, int step, int *out);

#endif
