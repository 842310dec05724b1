/* config.c -- config.json -> sl_model_config.
 *
 * Reads the fields transformers' LlamaConfig / Qwen2Config / MistralConfig
 * define, with their defaults, and checks every value shardlm depends on.
 * Rotary settings come either from `rope_theta` + `rope_scaling` (4.x) or
 * from `rope_parameters` (5.x); both may carry `rope_type` or the older
 * `type`. An unknown architecture, activation, rope type or dtype is an
 * error that names it, so a user knows at once why a model will not load. */
#include "model/config.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fs.h"
#include "util/json.h"

static const struct { const char *name; sl_arch arch; } k_archs[] = {
    {"LlamaForCausalLM", SL_ARCH_LLAMA},
    {"Qwen2ForCausalLM", SL_ARCH_QWEN2},
    {"MistralForCausalLM", SL_ARCH_MISTRAL},
};

static int parse_arch(const json_t *root, const char *what, sl_model_config *cfg, sl_err *err) {
    const json_t *archs = json_object_get(root, "architectures");
    const char *name = NULL;
    if (json_is_array(archs) && json_array_size(archs) > 0) name = json_string_value(json_array_get(archs, 0));
    if (!name) {
        const char *model_type = NULL;
        if (sl_json_get_string(root, "model_type", &model_type, what, err)) return err->code;
        if (model_type && strcmp(model_type, "llama") == 0) name = "LlamaForCausalLM";
        else if (model_type && strcmp(model_type, "qwen2") == 0) name = "Qwen2ForCausalLM";
        else if (model_type && strcmp(model_type, "mistral") == 0) name = "MistralForCausalLM";
    }
    if (!name)
        return sl_err_set(err, SL_EFORMAT, "%s: no \"architectures\" or known \"model_type\"; "
                          "shardlm runs LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM", what);
    for (size_t i = 0; i < sizeof k_archs / sizeof k_archs[0]; i++) {
        if (strcmp(name, k_archs[i].name) == 0) {
            cfg->arch = k_archs[i].arch;
            snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", name);
            return SL_OK;
        }
    }
    return sl_err_set(err, SL_ENOTSUP, "%s: architecture \"%s\" is not supported; shardlm runs "
                      "LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM", what, name);
}

static int get_int(const json_t *obj, const char *key, int *out, const char *what, sl_err *err) {
    int64_t v = *out;
    int rc = sl_json_get_int(obj, key, &v, what, err);
    if (rc) return rc;
    if (v < INT32_MIN || v > INT32_MAX) return sl_err_set(err, SL_EFORMAT, "%s: \"%s\" is out of range", what, key);
    *out = (int)v;
    return SL_OK;
}

static int parse_dtype(const json_t *root, const char *what, sl_model_config *cfg, sl_err *err) {
    const char *name = NULL;
    int rc = sl_json_get_string(root, "dtype", &name, what, err);
    if (!rc && !name) rc = sl_json_get_string(root, "torch_dtype", &name, what, err);
    if (rc) return rc;
    cfg->dtype = SL_DTYPE_BF16;
    if (!name) return SL_OK;
    if (strcmp(name, "bfloat16") == 0) cfg->dtype = SL_DTYPE_BF16;
    else if (strcmp(name, "float16") == 0) cfg->dtype = SL_DTYPE_F16;
    else if (strcmp(name, "float32") == 0) cfg->dtype = SL_DTYPE_F32;
    else return sl_err_set(err, SL_ENOTSUP, "%s: dtype \"%s\" is not supported (bfloat16, float16, float32)", what, name);
    return SL_OK;
}

/* rope: `rope_parameters` (5.x) or `rope_theta` + `rope_scaling` (4.x). */
static int parse_rope(const json_t *root, const char *what, sl_model_config *cfg, sl_err *err) {
    cfg->rope_theta = 10000.0;
    cfg->rope_type = SL_ROPE_DEFAULT;
    cfg->rope_factor = 1.0;
    int rc = sl_json_get_number(root, "rope_theta", &cfg->rope_theta, what, err);
    if (rc) return rc;
    const json_t *params = json_object_get(root, "rope_parameters");
    if (!json_is_object(params)) params = json_object_get(root, "rope_scaling");
    if (!params || json_is_null(params)) return SL_OK;
    if (!json_is_object(params)) return sl_err_set(err, SL_EFORMAT, "%s: \"rope_scaling\" must be an object or null", what);
    if ((rc = sl_json_get_number(params, "rope_theta", &cfg->rope_theta, what, err))) return rc;
    const char *type = NULL;
    if ((rc = sl_json_get_string(params, "rope_type", &type, what, err))) return rc;
    if (!type && (rc = sl_json_get_string(params, "type", &type, what, err))) return rc;
    if (!type || strcmp(type, "default") == 0) return SL_OK;
    if (strcmp(type, "linear") == 0) {
        cfg->rope_type = SL_ROPE_LINEAR;
    } else if (strcmp(type, "llama3") == 0) {
        cfg->rope_type = SL_ROPE_LLAMA3;
        cfg->rope_low_freq_factor = 1.0;
        cfg->rope_high_freq_factor = 4.0;
        cfg->rope_original_max_position = 8192;
        if ((rc = sl_json_get_number(params, "low_freq_factor", &cfg->rope_low_freq_factor, what, err)) ||
            (rc = sl_json_get_number(params, "high_freq_factor", &cfg->rope_high_freq_factor, what, err)) ||
            (rc = get_int(params, "original_max_position_embeddings", &cfg->rope_original_max_position, what, err)))
            return rc;
        if (cfg->rope_high_freq_factor <= cfg->rope_low_freq_factor || cfg->rope_original_max_position <= 0)
            return sl_err_set(err, SL_EFORMAT, "%s: llama3 rope scaling needs high_freq_factor > low_freq_factor "
                              "and original_max_position_embeddings > 0", what);
    } else {
        return sl_err_set(err, SL_ENOTSUP, "%s: rope type \"%s\" is not supported (default, linear, llama3)", what, type);
    }
    if ((rc = sl_json_get_number(params, "factor", &cfg->rope_factor, what, err))) return rc;
    if (!(cfg->rope_factor > 0)) return sl_err_set(err, SL_EFORMAT, "%s: rope scaling \"factor\" must be > 0", what);
    return SL_OK;
}

static int parse_special_ids(const json_t *root, const char *what, sl_model_config *cfg, sl_err *err) {
    cfg->bos_token_id = -1;
    cfg->n_eos_token_ids = 0;
    int rc = get_int(root, "bos_token_id", &cfg->bos_token_id, what, err);
    if (rc) return rc;
    const json_t *eos = json_object_get(root, "eos_token_id");
    if (json_is_integer(eos)) {
        cfg->eos_token_ids[cfg->n_eos_token_ids++] = (int)json_integer_value(eos);
    } else if (json_is_array(eos)) {
        size_t i;
        const json_t *v;
        json_array_foreach(eos, i, v) {
            if (!json_is_integer(v)) return sl_err_set(err, SL_EFORMAT, "%s: \"eos_token_id\" must hold integers", what);
            if (cfg->n_eos_token_ids < SL_MAX_EOS_IDS) cfg->eos_token_ids[cfg->n_eos_token_ids++] = (int)json_integer_value(v);
        }
    } else if (eos && !json_is_null(eos)) {
        return sl_err_set(err, SL_EFORMAT, "%s: \"eos_token_id\" must be an integer or a list", what);
    }
    return SL_OK;
}

static int check_positive(int v, const char *key, const char *what, sl_err *err) {
    if (v > 0) return SL_OK;
    return sl_err_set(err, SL_EFORMAT, "%s: \"%s\" must be a positive integer (got %d)", what, key, v);
}

static int parse_root(const json_t *root, const char *what, sl_model_config *cfg, sl_err *err) {
    memset(cfg, 0, sizeof *cfg);
    if (!json_is_object(root)) return sl_err_set(err, SL_EFORMAT, "%s: must hold a JSON object", what);
    int rc = parse_arch(root, what, cfg, err);
    if (rc) return rc;
    cfg->max_position_embeddings = 2048;
    cfg->n_kv_heads = -1;
    cfg->head_dim = -1;
    double eps = 1e-6;
    if ((rc = get_int(root, "hidden_size", &cfg->hidden_size, what, err)) ||
        (rc = get_int(root, "intermediate_size", &cfg->intermediate_size, what, err)) ||
        (rc = get_int(root, "num_hidden_layers", &cfg->n_layers, what, err)) ||
        (rc = get_int(root, "num_attention_heads", &cfg->n_heads, what, err)) ||
        (rc = get_int(root, "num_key_value_heads", &cfg->n_kv_heads, what, err)) ||
        (rc = get_int(root, "head_dim", &cfg->head_dim, what, err)) ||
        (rc = get_int(root, "vocab_size", &cfg->vocab_size, what, err)) ||
        (rc = get_int(root, "max_position_embeddings", &cfg->max_position_embeddings, what, err)) ||
        (rc = sl_json_get_number(root, "rms_norm_eps", &eps, what, err)) ||
        (rc = sl_json_get_bool(root, "tie_word_embeddings", &cfg->tie_word_embeddings, what, err)) ||
        (rc = sl_json_get_bool(root, "attention_bias", &cfg->attention_bias, what, err)) ||
        (rc = sl_json_get_bool(root, "mlp_bias", &cfg->mlp_bias, what, err)))
        return rc;
    cfg->rms_norm_eps = (float)eps;
    if (cfg->n_kv_heads < 0) cfg->n_kv_heads = cfg->n_heads;
    if ((rc = check_positive(cfg->hidden_size, "hidden_size", what, err)) ||
        (rc = check_positive(cfg->intermediate_size, "intermediate_size", what, err)) ||
        (rc = check_positive(cfg->n_layers, "num_hidden_layers", what, err)) ||
        (rc = check_positive(cfg->n_heads, "num_attention_heads", what, err)) ||
        (rc = check_positive(cfg->n_kv_heads, "num_key_value_heads", what, err)) ||
        (rc = check_positive(cfg->vocab_size, "vocab_size", what, err)) ||
        (rc = check_positive(cfg->max_position_embeddings, "max_position_embeddings", what, err)))
        return rc;
    if (cfg->head_dim < 0) {
        if (cfg->hidden_size % cfg->n_heads)
            return sl_err_set(err, SL_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d "
                              "and no head_dim is given", what, cfg->hidden_size, cfg->n_heads);
        cfg->head_dim = cfg->hidden_size / cfg->n_heads;
    }
    if (cfg->head_dim <= 0 || cfg->head_dim % 2)
        return sl_err_set(err, SL_EFORMAT, "%s: head_dim must be a positive even number (got %d)", what, cfg->head_dim);
    if (cfg->n_heads % cfg->n_kv_heads)
        return sl_err_set(err, SL_EFORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                          what, cfg->n_heads, cfg->n_kv_heads);
    if (!(cfg->rms_norm_eps > 0)) return sl_err_set(err, SL_EFORMAT, "%s: \"rms_norm_eps\" must be > 0", what);
    const char *act = NULL;
    if ((rc = sl_json_get_string(root, "hidden_act", &act, what, err))) return rc;
    if (act && strcmp(act, "silu") != 0)
        return sl_err_set(err, SL_ENOTSUP, "%s: hidden_act \"%s\" is not supported (silu)", what, act);
    cfg->o_proj_bias = cfg->attention_bias && cfg->arch != SL_ARCH_QWEN2;
    if (cfg->arch == SL_ARCH_QWEN2) cfg->attention_bias = true;
    if ((rc = parse_dtype(root, what, cfg, err)) || (rc = parse_rope(root, what, cfg, err)) ||
        (rc = parse_special_ids(root, what, cfg, err)))
        return rc;
    bool use_window = cfg->arch == SL_ARCH_MISTRAL;
    if ((rc = sl_json_get_bool(root, "use_sliding_window", &use_window, what, err)) ||
        (use_window && (rc = get_int(root, "sliding_window", &cfg->sliding_window, what, err))))
        return rc;
    if (cfg->sliding_window < 0) cfg->sliding_window = 0;
    return SL_OK;
}

int sl_model_config_parse(const char *json_text, const char *what, sl_model_config *cfg, sl_err *err) {
    json_error_t jerr;
    json_t *root = json_loads(json_text, 0, &jerr);
    if (!root) return sl_err_set(err, SL_EFORMAT, "%s:%d:%d: invalid JSON: %s", what, jerr.line, jerr.column, jerr.text);
    int rc = parse_root(root, what, cfg, err);
    json_decref(root);
    return rc;
}

#ifndef SHARDLM_DEFAULT_MODEL_DIR
#define SHARDLM_DEFAULT_MODEL_DIR "models/SmolLM2-135M-Instruct"
#endif

const char *sl_model_default_dir(void) {
    const char *env = getenv("SHARDLM_DEFAULT_MODEL");
    return env && *env ? env : SHARDLM_DEFAULT_MODEL_DIR;
}

int sl_model_config_load(const char *model_dir, sl_model_config *cfg, sl_err *err) {
    char *path = sl_path_join(model_dir, "config.json"), *text = NULL;
    if (!path) return sl_err_set(err, SL_ENOMEM, "out of memory");
    int rc = sl_file_read_all(path, &text, NULL, err);
    if (rc == SL_ENOTFOUND)
        sl_err_set(err, rc, "%s: no config.json; is this a Hugging Face model folder?", model_dir);
    if (!rc) rc = sl_model_config_parse(text, path, cfg, err);
    free(text);
    free(path);
    return rc;
}

/* transformers: inv_freq = 1 / base^(arange(0, d, 2) / d) in float32, then
 * the scaling rule of the rope type. */
void sl_model_config_rope_inv_freq(const sl_model_config *cfg, float *inv_freq) {
    const int half = cfg->head_dim / 2;
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < half; i++) {
        float exponent = (float)(2 * i) / (float)cfg->head_dim;
        float f = 1.0f / powf((float)cfg->rope_theta, exponent);
        if (cfg->rope_type == SL_ROPE_LINEAR) {
            f = (float)(f / cfg->rope_factor);
        } else if (cfg->rope_type == SL_ROPE_LLAMA3) {
            double old_len = cfg->rope_original_max_position;
            double low_wavelen = old_len / cfg->rope_low_freq_factor;
            double high_wavelen = old_len / cfg->rope_high_freq_factor;
            double wavelen = 2 * pi / f;
            if (wavelen > low_wavelen) {
                f = (float)(f / cfg->rope_factor);
            } else if (wavelen >= high_wavelen) {
                double smooth = (old_len / wavelen - cfg->rope_low_freq_factor) /
                                (cfg->rope_high_freq_factor - cfg->rope_low_freq_factor);
                f = (float)((1 - smooth) * f / cfg->rope_factor + smooth * f);
            }
        }
        inv_freq[i] = f;
    }
}

int64_t sl_model_config_layer_params(const sl_model_config *c) {
    int64_t h = c->hidden_size, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t n = h * q + 2 * h * kv + q * h + 3 * h * c->intermediate_size + 2 * h;
    if (c->attention_bias) n += q + 2 * kv + (c->o_proj_bias ? h : 0);
    if (c->mlp_bias) n += 2 * c->intermediate_size + h;
    return n;
}

int64_t sl_model_config_n_params(const sl_model_config *c) {
    int64_t embed = (int64_t)c->vocab_size * c->hidden_size;
    return sl_model_config_layer_params(c) * c->n_layers + embed * (c->tie_word_embeddings ? 1 : 2) + c->hidden_size;
}
