/* gozaru.h — the one public header of the gozaru C core.
 *
 * A decoder-only causal language model of the GPT-NeoX or the Llama / Qwen2 family (same math and
 * tensor names as HF transformers' GPTNeoXForCausalLM, LlamaForCausalLM and Qwen2ForCausalLM) with
 * forward, backward, selective per-tensor training, AdamW, KV-cache generation and HDF5 checkpoints.
 * The family is data in gz_config (tensor layout, norm, MLP, kv heads, biases): one code path.
 *
 * Conventions
 *  - Every function that can fail returns gz_status; on failure gz_last_error() holds a
 *    thread-local message naming the problem (the Python layer turns it into an exception).
 *  - Tensors are fp32, row-major, shaped exactly as HF stores them (Linear weights [out, in]).
 *  - Host pointers only cross this interface; a device backend copies as needed.
 */
#ifndef GOZARU_H
#define GOZARU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Target value that marks a token as not counted in the loss (HF's ignore_index). */
#define GZ_IGNORE_INDEX (-100)

/* Limits of the core, checked where a value enters (gz_config_validate, the tensor table; the thread count in
 * the Python layer, _core.set_num_threads). */
#define GZ_MAX_NAME 96                  /* bytes of a tensor name, with its terminating NUL */
#define GZ_MAX_VOCAB (1 << 24)          /* vocab_size */
#define GZ_MAX_HIDDEN (1 << 16)         /* hidden_size */
#define GZ_MAX_LAYERS 4096              /* num_hidden_layers */
#define GZ_MAX_HEADS 1024               /* num_attention_heads */
#define GZ_MAX_INTERMEDIATE (1 << 18)   /* intermediate_size */
#define GZ_MAX_POSITIONS (1 << 20)      /* max_position_embeddings */
#define GZ_MAX_THREADS 4096             /* gz_set_num_threads */

/* ------------------------------------------------------------------ errors */
typedef enum {
    GZ_OK = 0,
    GZ_ERR_VALUE,       /* bad argument: shape, range, unknown name   -> ValueError        */
    GZ_ERR_NOMEM,       /* allocation failed                          -> MemoryError       */
    GZ_ERR_IO,          /* file system error                          -> OSError           */
    GZ_ERR_FORMAT,      /* malformed / mismatching checkpoint content -> CheckpointError   */
    GZ_ERR_BACKEND,     /* CUDA / cuBLAS failure, backend not built   -> RuntimeError      */
    GZ_ERR_STATE,       /* call out of order (backward before forward) -> RuntimeError     */
    GZ_ERR_INTERRUPTED  /* gz_request_interrupt() was called          -> KeyboardInterrupt */
} gz_status;

const char *gz_last_error(void);

/* Long-running calls (generation, checkpoint IO loops) poll this flag and stop with
 * GZ_ERR_INTERRUPTED. Signal-safe: it only stores to an atomic int. */
void gz_request_interrupt(void);
void gz_clear_interrupt(void);
int gz_interrupt_requested(void);

/* Threads used by OpenMP loops and BLAS on the CPU backend (0 = library default). */
void gz_set_num_threads(int n);
int gz_get_num_threads(void);

/* ------------------------------------------------------------------ config */
/* Families: the tensor layout and names. GPT-NeoX: fused per-head query_key_value, biases on every Linear and
 * norm, "gpt_neox." names. Llama (Qwen2 too): separate q/k/v/o projections ("model." names), no biases except
 * the optional q/k/v bias (Qwen2), lm_head or tied embeddings. */
enum { GZ_ARCH_GPT_NEOX = 0, GZ_ARCH_LLAMA = 1 };
enum { GZ_NORM_LAYERNORM = 0, GZ_NORM_RMSNORM = 1 }; /* LayerNorm with bias; RMSNorm w * x / rms(x) */
enum { GZ_MLP_GELU = 0, GZ_MLP_SWIGLU = 1 };        /* down(gelu(up x)); down(silu(gate x) * up x) */

/* Mirrors transformers' GPTNeoXConfig / LlamaConfig / Qwen2Config (the fields the math needs). */
typedef struct {
    int vocab_size;
    int hidden_size;
    int num_hidden_layers;
    int num_attention_heads;
    int intermediate_size;
    float rotary_pct;
    float rotary_emb_base;   /* rope_theta */
    int max_position_embeddings;
    float layer_norm_eps;    /* the norm's eps (Llama's rms_norm_eps) */
    int use_parallel_residual;
    int tie_word_embeddings; /* Llama family only: the head reuses the embedding matrix */
    int arch;                /* GZ_ARCH_* */
    int norm_kind;           /* GZ_NORM_*: LayerNorm for GPT-NeoX, RMSNorm for Llama */
    int mlp_kind;            /* GZ_MLP_*: GELU for GPT-NeoX, SwiGLU for Llama */
    int num_key_value_heads; /* grouped-query attention: divides num_attention_heads (1 = multi-query) */
    int qkv_bias;            /* Llama family: biases on q/k/v (Qwen2); GPT-NeoX: always 1 */
} gz_config;

/* Checks ranges and divisibility; returns GZ_ERR_VALUE naming the bad field. */
gz_status gz_config_validate(const gz_config *cfg);

/* ------------------------------------------------------------------ model */
typedef enum { GZ_BACKEND_CPU = 0, GZ_BACKEND_CUDA = 1 } gz_backend_kind;

/* 1 when the backend was compiled in (and, for CUDA, a device is present). */
int gz_backend_available(gz_backend_kind kind);

typedef struct gz_model gz_model;

typedef struct {
    const char *name;   /* HF state-dict name, e.g. "gpt_neox.layers.3.mlp.dense_h_to_4h.weight" */
    int ndim;           /* 1 or 2 */
    int64_t shape[2];
    int64_t numel;
    int64_t offset;     /* element offset in the contiguous parameter buffer */
    int layer;          /* -1 embed_in, 0..L-1 transformer layers, L final_layer_norm, L+1 embed_out */
    int is_matrix_weight; /* 1 for Linear/embedding weights (weight decay applies by default) */
    int trainable;
    const char *kind;   /* see gz_tensor_spec */
} gz_tensor_info;

/* One row of the model's structure, known from the config alone (no weights). */
typedef struct {
    char name[GZ_MAX_NAME];
    int ndim;
    int64_t shape[2];   /* shape[1] is 0 for vectors */
    int layer;          /* as gz_tensor_info.layer */
    int pos;            /* position in the backward sweep (internal) */
    const char *kind;   /* "embed", "norm", "qkv", "attn_out", "mlp_gate", "mlp_up", "mlp_down" or "head" (static) */
    int is_matrix_weight;
} gz_tensor_spec;

/* Number of tensors of a config (-1 when the config is invalid), and the table itself in HF state-dict order.
 * Both validate the config first, so an absurd config costs nothing. */
int gz_tensor_count(const gz_config *cfg);
gz_status gz_tensor_table(const gz_config *cfg, gz_tensor_spec *out, int capacity);

/* Parameters are zero until gz_model_init_random or a load writes them. */
gz_status gz_model_create(const gz_config *cfg, gz_backend_kind backend, gz_model **out);

/* A LoRA adapter on one Linear weight W [out, in] (a "qkv", "attn_out", "mlp_gate", "mlp_up", "mlp_down" or "head"
 * tensor): the layer computes x W^T + b + scale * (x A^T) B^T with A [r, in], B [out, r]. Adapters are
 * tensors of the model's table after the base tensors (kinds "lora_A", "lora_B", PEFT's saved names
 * "base_model.model.<W's name without .weight>.lora_A.weight"), so gradients, AdamW state and checkpoints
 * cover them like any other tensor. Fixed when the model is created. */
typedef struct {
    int target;  /* tensor index of W in the base table */
    int r;       /* 1 <= r <= min(out, in) */
    float scale; /* alpha / r (LoRA) or alpha / sqrt(r) (rsLoRA) */
} gz_lora_spec;

/* gz_model_create with adapters (specs may be NULL when n == 0). An unknown or unadaptable target, a bad
 * rank or scale, or two adapters on one tensor is GZ_ERR_VALUE naming the tensor. */
gz_status gz_model_create_lora(const gz_config *cfg, gz_backend_kind backend, const gz_lora_spec *specs, int n,
                               gz_model **out);
/* PEFT's initialisation of every adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform_ with a = sqrt(5)),
 * B = 0, from seed. gz_model_init_random calls it with its own seed. */
gz_status gz_model_init_lora(gz_model *m, uint64_t seed);
int gz_model_num_lora(const gz_model *m);
/* The i-th adapter: its spec and the tensor indices of A and B. */
gz_status gz_model_lora(const gz_model *m, int i, gz_lora_spec *spec, int *a_index, int *b_index);
void gz_model_free(gz_model *m);
const gz_config *gz_model_config(const gz_model *m);
gz_backend_kind gz_model_backend(const gz_model *m);
/* The precision of the model's Linear layers, a name of csrc/precision.h's vocabulary ("fp32", "bf16",
 * "bf16-emulated", "tf32"). A new model has its backend's default: "fp32" on the CPU, "bf16" on CUDA. */
const char *gz_model_precision(const gz_model *m);
/* Chooses it (csrc/precision.h has the contract). GZ_ERR_VALUE for a name outside the vocabulary; GZ_ERR_BACKEND
 * when the model's backend, this machine or this build cannot run it (the message names the missing instruction
 * set or library, or the precisions the backend runs). A run setting: checkpoints hold the fp32 masters. */
gz_status gz_model_set_precision(gz_model *m, const char *precision);

/* Rotary position embedding. A model starts with HF's default frequencies base^(-2i/d) (d = rotary_ndims) and
 * attention factor 1. A RoPE type that scales them (linear, llama3, YaRN, ...) is the caller's to compute, once
 * per model (gozaru/engine/rope.py mirrors transformers' rope init functions): gz_model_set_rope takes n =
 * gz_model_rope_size(m) inverse frequencies (finite, >= 0) and the factor both cos and sin are multiplied by
 * (YaRN's mscale; finite, > 0), and rebuilds the tables every backend's rotary op reads. Checkpoints store both
 * and refuse a model whose rotary differs. gz_model_rope points at the model's own copy. */
int gz_model_rope_size(const gz_model *m);
gz_status gz_model_set_rope(gz_model *m, const float *inv_freq, int n, float attention_factor);
gz_status gz_model_rope(const gz_model *m, const float **inv_freq, int *n, float *attention_factor);

int gz_model_num_tensors(const gz_model *m);
int64_t gz_model_num_params(const gz_model *m);
gz_status gz_model_tensor(const gz_model *m, int index, gz_tensor_info *out);
int gz_model_find_tensor(const gz_model *m, const char *name); /* -1 when unknown */

/* HF-style init: Linear/embedding weights ~ N(0, std), biases 0, LayerNorm weight 1 bias 0. */
gz_status gz_model_init_random(gz_model *m, uint64_t seed, float std);

/* Host fp32 copy of all parameters (the master copy on CPU; a mirror on CUDA).
 * After writing into it, call gz_model_params_changed(); before reading it after training
 * on a device backend, call gz_model_sync_params_to_host(). Both are no-ops on CPU.
 * On a device backend an AdamW step only marks the mirror stale; sync_params_to_host downloads
 * when stale (and is free otherwise), and params_changed refuses (GZ_ERR_STATE) to upload a stale
 * mirror, which would undo the steps it has not seen. */
float *gz_model_params_host(gz_model *m);
gz_status gz_model_params_changed(gz_model *m);
gz_status gz_model_sync_params_to_host(gz_model *m);

/* Frozen tensors get no weight-gradient GEMM, no gradient memory and no optimizer state.
 * Changing flags drops accumulated gradients of tensors that become frozen. */
gz_status gz_model_set_trainable(gz_model *m, int index, int trainable);
int gz_model_is_trainable(const gz_model *m, int index);

/* Forward pass over tokens [B, T] (int32, 0 <= id < vocab, T <= max_position_embeddings).
 * targets [B, T] or NULL; -100 means "ignore". With targets, *loss_out receives the mean
 * cross-entropy over counted targets (NaN when none are counted) and *n_counted_out their
 * number; activations are kept for gz_model_backward. logits_out [B, T, V] may be NULL. */
gz_status gz_model_forward(gz_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                           float *logits_out, float *loss_out, int64_t *n_counted_out);

/* The same forward for evaluation: loss and/or logits, but nothing is kept for backward (every layer
 * runs through one scratch set of activations), whatever is trainable. */
gz_status gz_model_evaluate(gz_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                            float *logits_out, float *loss_out, int64_t *n_counted_out);

/* Both over packed rows: doc_ids [B, T] (NULL: one document per row, as above) says which document each token
 * belongs to. A row's documents are its runs of equal ids (any int32 values: 0, 1, 2, ... or -1 on padding); a
 * document's tokens are contiguous, so an id may not come back in its row after another (GZ_ERR_VALUE naming
 * the token). Each token attends only to the tokens of its own document up to itself, and positions (rotary)
 * restart at 0 at each document's first token: a document's loss and gradients are the ones it has in a row of
 * its own. A later gz_model_backward uses the same documents. */
gz_status gz_model_forward_docs(gz_model *m, const int32_t *tokens, const int32_t *targets, const int32_t *doc_ids,
                                int B, int T, float *logits_out, float *loss_out, int64_t *n_counted_out);
gz_status gz_model_evaluate_docs(gz_model *m, const int32_t *tokens, const int32_t *targets, const int32_t *doc_ids,
                                 int B, int T, float *logits_out, float *loss_out, int64_t *n_counted_out);

/* Accumulates (+=) d(loss_scale * mean_loss)/d(param) into the gradients of trainable tensors,
 * using the activations of the last forward with targets. Gradient accumulation over
 * micro-batches: call forward/backward per micro-batch with loss_scale = its share. */
gz_status gz_model_backward(gz_model *m, float loss_scale);
gz_status gz_model_zero_grad(gz_model *m);

/* Copies the gradient of a trainable tensor into out[numel]; GZ_ERR_VALUE when frozen. */
gz_status gz_model_grad(gz_model *m, int index, float *out);
/* L2 norm of each tensor's gradient into out[num_tensors] (NaN for frozen tensors). */
gz_status gz_model_grad_norms(gz_model *m, float *out);

/* ------------------------------------------------------------------ AdamW */
typedef struct {
    float beta1, beta2, eps, weight_decay;
    int decay_all; /* 0: no decay on biases and LayerNorm weights (default); 1: decay everything */
} gz_adamw_config;

typedef struct gz_adamw gz_adamw;

/* The optimizer keeps a pointer to the model; free it before the model. State (m, v, step)
 * is created lazily, per tensor, the first time that tensor is trainable at a step. */
gz_status gz_adamw_create(gz_model *m, const gz_adamw_config *cfg, gz_adamw **out);
void gz_adamw_free(gz_adamw *opt);
const gz_adamw_config *gz_adamw_get_config(const gz_adamw *opt);

/* The one check of a learning rate, which every entry point taking one applies (step, the recorded lr of a
 * checkpoint, _core.check_lr for Python's AdamW): 0 <= lr <= FLT_MAX (a finite float32 >= 0; 0 leaves the weights
 * as they are while the moments advance). GZ_ERR_VALUE naming the value and the bounds otherwise. */
gz_status gz_adamw_check_lr(double lr);

/* One step on every trainable tensor (lr checked by gz_adamw_check_lr). max_grad_norm > 0 clips the global L2
 * norm first (as torch.nn.utils.clip_grad_norm_). *grad_norm_out (may be NULL) gets the pre-clip norm.
 * A non-finite gradient returns GZ_ERR_VALUE naming the first offending tensor and changes nothing. */
gz_status gz_adamw_step(gz_adamw *opt, double lr, float max_grad_norm, float *grad_norm_out);

int gz_adamw_has_state(const gz_adamw *opt, int index);
/* Copy state out / in (host buffers of the tensor's numel). */
gz_status gz_adamw_get_state(const gz_adamw *opt, int index, float *m_out, float *v_out, int64_t *step_out);
gz_status gz_adamw_set_state(gz_adamw *opt, int index, const float *m_in, const float *v_in, int64_t step);
/* L2 norm of the last update applied to each tensor (NaN where none), for weight-motion analysis. */
gz_status gz_adamw_update_norms(const gz_adamw *opt, float *out);

/* ------------------------------------------------------------------ generation */
typedef struct {
    int max_new_tokens;
    float temperature;  /* below GZ_GREEDY_TEMPERATURE (1e-6, sample.h), 0 included: greedy */
    int top_k;          /* 0: off */
    float top_p;        /* >= 1: off */
    uint64_t seed;
    int eos_token_id;   /* < 0: never stop early */
} gz_generate_config;

/* prompts: B rows of a [B, Tmax] int32 array, row b using its first prompt_lens[b] tokens
 * (each row keeps its own positions 0..len-1; no padding enters the attention).
 * out [B, max_new_tokens] receives the generated ids (eos included), out_lens[b] how many.
 * Slots after out_lens[b] are set to -1. Deterministic per seed. step_logits (may be NULL)
 * [B, max_new_tokens, V] receives the logits each token was chosen from (before temperature);
 * rows of steps after a row ended are left as they were. */
gz_status gz_generate(gz_model *m, const int32_t *prompts, const int32_t *prompt_lens, int B, int Tmax,
                      const gz_generate_config *cfg, int32_t *out, int32_t *out_lens, float *step_logits);

/* ------------------------------------------------------------------ checkpoints (HDF5) */
typedef struct {
    char *format;            /* "gozaru" */
    int version;
    char *config_json;       /* the model config as JSON text */
    int64_t step;
    int64_t tokens_seen;
    void *rng; size_t rng_len;       /* opaque bytes supplied by Python */
    void *extra; size_t extra_len;   /* opaque bytes (data cursor, user metadata) */
    int has_optimizer;
    gz_adamw_config adamw;
    float lr;
} gz_checkpoint_meta;

/* What a checkpoint holds besides the model's parameters. Zero-initialise and set what applies. */
typedef struct {
    const gz_adamw *optimizer;       /* NULL: no optimizer state */
    float lr;                        /* learning rate recorded with the optimizer config */
    const char *config_json;         /* NULL or "" for none */
    int64_t step, tokens_seen;
    const void *rng; size_t rng_len;     /* opaque bytes (may be NULL when the length is 0) */
    const void *extra; size_t extra_len; /* opaque bytes (data cursor, user metadata) */
} gz_checkpoint_save_args;

/* Atomic: writes "<path>.tmp-<pid>-<counter>" in the same folder, flushes, fsyncs, renames; removes
 * temporary files of dead writers. args may be NULL (parameters only). */
gz_status gz_checkpoint_save(const char *path, gz_model *m, const gz_checkpoint_save_args *args);
gz_status gz_checkpoint_read_meta(const char *path, gz_checkpoint_meta *out);
void gz_checkpoint_meta_free(gz_checkpoint_meta *meta);
/* Validates names, shapes, dtypes against m and fills parameters, trainable flags and (when
 * opt != NULL) optimizer state. On error m and opt are unchanged. */
gz_status gz_checkpoint_load(const char *path, gz_model *m, gz_adamw *opt);

#ifdef __cplusplus
}
#endif
#endif /* GOZARU_H */
