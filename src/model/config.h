/* config.h -- a model's hyper-parameters, read from its config.json.
 *
 * Accepts the architectures shardlm can run (LlamaForCausalLM,
 * Qwen2ForCausalLM, MistralForCausalLM) in both spellings found in the wild:
 * transformers 4.x (`rope_theta` + `rope_scaling`) and 5.x (`rope_parameters`).
 * Anything else is an error naming the field and the value. */
#ifndef SL_MODEL_CONFIG_H
#define SL_MODEL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "util/dtype.h"
#include "util/error.h"

typedef enum { SL_ARCH_LLAMA, SL_ARCH_QWEN2, SL_ARCH_MISTRAL } sl_arch;
typedef enum { SL_ROPE_DEFAULT, SL_ROPE_LINEAR, SL_ROPE_LLAMA3 } sl_rope_type;

#define SL_MAX_EOS_IDS 8

typedef struct sl_model_config {
    sl_arch arch;
    char arch_name[64];
    int hidden_size;          /* d_model */
    int intermediate_size;    /* MLP width */
    int n_layers;
    int n_heads;              /* query heads */
    int n_kv_heads;           /* key/value heads (GQA when < n_heads) */
    int head_dim;
    int vocab_size;
    int max_position_embeddings;
    float rms_norm_eps;
    bool tie_word_embeddings;
    bool attention_bias;      /* q/k/v biases (Qwen2, or Llama's attention_bias) */
    bool o_proj_bias;         /* o_proj bias: Llama/Mistral with attention_bias; never Qwen2 */
    bool mlp_bias;
    sl_dtype dtype;           /* torch_dtype / dtype */
    /* rotary embedding */
    sl_rope_type rope_type;
    double rope_theta;
    double rope_factor;                 /* linear, llama3 */
    double rope_low_freq_factor;        /* llama3 */
    double rope_high_freq_factor;       /* llama3 */
    int rope_original_max_position;     /* llama3 */
    int sliding_window;                 /* 0 when none */
    /* special ids (-1 when absent) */
    int bos_token_id;
    int eos_token_ids[SL_MAX_EOS_IDS];
    int n_eos_token_ids;
} sl_model_config;

/* Reads model_dir/config.json. */
int sl_model_config_load(const char *model_dir, sl_model_config *cfg, sl_err *err);
/* The folder of the default model (SmolLM2-135M-Instruct), used when no model is named:
 * $SHARDLM_DEFAULT_MODEL, else the converted copy in the source tree's models/. */
const char *sl_model_default_dir(void);
/* Parses config.json text; `what` names the source in messages. */
int sl_model_config_parse(const char *json_text, const char *what, sl_model_config *cfg, sl_err *err);

/* Rotary inverse frequencies, head_dim/2 values, exactly as transformers
 * computes them for this config (incl. llama3 and linear scaling). */
void sl_model_config_rope_inv_freq(const sl_model_config *cfg, float *inv_freq);

/* Parameter count of the whole model (all ranks), for memory planning. */
int64_t sl_model_config_n_params(const sl_model_config *cfg);
/* Parameters of one decoder layer. */
int64_t sl_model_config_layer_params(const sl_model_config *cfg);

#endif
