/* params.c -- the sampling fields of /v1/completions and
 * /v1/chat/completions, checked before anything reaches the engine.
 *
 * Field names are OpenAI's plus vLLM's extras (top_k, min_p,
 * repetition_penalty, ignore_eos, stop_token_ids, min_tokens, seed,
 * skip_special_tokens, add_special_tokens, include_stop_str_in_output). A
 * wrong type or an out-of-range value is a 400 naming the field, with vLLM's
 * wording where vLLM has one.
 * Unknown fields are ignored, as vLLM ignores them; fields that would change
 * the answer but that the engine cannot honour (suffix, logit_bias,
 * best_of > n, prompt_logprobs) are refused clearly rather than ignored.
 * Structured output (response_format and the guided_* family) is read by
 * structured.c, tools and tool_choice by tools.c; both land here. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

#define MAX_LOGPROBS 20
#define MAX_STOP 64

/* ---- typed field readers: 1 when present, 0 absent/null, <0 error ---------- */

static int get_bool(const json_t *body, const char *key, int *out, sl_err *err, const char **param) {
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) {
        *param = key;
        return sl_err_set(err, SL_EINVAL, "%s: Input should be a valid boolean", key);
    }
    *out = json_is_true(v);
    return 1;
}

/* v as a whole number: 1 (*out set) for an integer or an integral real that
 * fits 64 bits, -1 for an integral real past them (an integer jansson found
 * too big, decoded as a real: see sl_server_params_too_big), 0 otherwise. */
static int whole_value(const json_t *v, int64_t *out) {
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 1;
    }
    if (!json_is_real(v) || json_real_value(v) != floor(json_real_value(v))) return 0;
    if (fabs(json_real_value(v)) >= 0x1p63) return -1;
    *out = (int64_t)json_real_value(v);
    return 1;
}

/* Every integer field goes through here. [lo, hi] is the field's range,
 * named in the error for a number past 64 bits; the callers check ordinary
 * values themselves, with vLLM's wording. */
static int get_int(const json_t *body, const char *key, int64_t lo, int64_t hi, int64_t *out, sl_err *err,
                   const char **param) {
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return 0;
    int r = whole_value(v, out);
    if (r > 0) return 1;
    *param = key;
    if (r < 0)
        return sl_err_set(err, SL_EINVAL, "%s must be between %lld and %lld, got %.0f.", key, (long long)lo,
                          (long long)hi, json_real_value(v));
    return sl_err_set(err, SL_EINVAL, "%s: Input should be a valid integer", key);
}

static int get_number(const json_t *body, const char *key, double *out, sl_err *err, const char **param) {
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) {
        *param = key;
        return sl_err_set(err, SL_EINVAL, "%s: Input should be a valid number", key);
    }
    *out = json_number_value(v);
    return 1;
}

static int bad(sl_err *err, const char **param, const char *key, const char *fmt, double got) {
    *param = key;
    return sl_err_set(err, SL_EINVAL, fmt, got);
}

/* ---- the model ----------------------------------------------------------------- */

/* As vLLM: a missing model is the served one; with --served-model-name only
 * that name is served; without it, the model's name (folder name or hub
 * id) and the model folder as given on the command line. */
int sl_server_check_model(const sl_server *s, const json_t *body, sl_err *err) {
    json_t *m = json_object_get(body, "model");
    if (!m || json_is_null(m)) return SL_OK;
    if (!json_is_string(m)) return sl_err_set(err, SL_EINVAL, "model: Input should be a valid string");
    const char *name = json_string_value(m);
    if (strcmp(name, s->model_name) == 0 ||
        (!s->name_given && s->info.model_path && strcmp(name, s->info.model_path) == 0))
        return SL_OK;
    return sl_err_set(err, SL_ENOTFOUND, "The model `%s` does not exist.", name);
}

/* ---- stop strings and ids ------------------------------------------------------------ */

static int parse_stop(const json_t *body, sl_server_params *p, sl_err *err, const char **param) {
    json_t *v = json_object_get(body, "stop");
    if (v && !json_is_null(v)) {
        size_t n = json_is_array(v) ? json_array_size(v) : 1;
        if (!json_is_string(v) && !json_is_array(v)) {
            *param = "stop";
            return sl_err_set(err, SL_EINVAL, "stop: Input should be a valid string or a list of strings");
        }
        if (n > MAX_STOP) {
            *param = "stop";
            return sl_err_set(err, SL_EINVAL, "stop: at most %d stop strings are allowed, got %zu", MAX_STOP, n);
        }
        p->stop = calloc(n ? n : 1, sizeof *p->stop);
        if (!p->stop) return sl_err_set(err, SL_ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
            if (!json_is_string(e)) {
                *param = "stop";
                return sl_err_set(err, SL_EINVAL, "stop[%zu]: Input should be a valid string", i);
            }
            if (json_string_length(e) == 0) {
                *param = "stop";
                return sl_err_set(err, SL_EINVAL, "stop[%zu]: stop strings must not be empty", i);
            }
            p->stop[i] = json_string_value(e);
        }
        p->sampling.stop = p->stop;
        p->sampling.n_stop = (int)n;
    }
    v = json_object_get(body, "stop_token_ids");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) > 4096) {
            *param = "stop_token_ids";
            return sl_err_set(err, SL_EINVAL, "stop_token_ids: Input should be a valid list of integers");
        }
        size_t n = json_array_size(v);
        p->stop_ids = calloc(n ? n : 1, sizeof *p->stop_ids);
        if (!p->stop_ids) return sl_err_set(err, SL_ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            int64_t id = -1;
            if (whole_value(json_array_get(v, i), &id) <= 0 || id < 0 || id >= INT32_MAX) {
                *param = "stop_token_ids";
                return sl_err_set(err, SL_EINVAL, "stop_token_ids[%zu]: Input should be a non-negative token id", i);
            }
            p->stop_ids[i] = (int32_t)id;
        }
        p->sampling.stop_token_ids = p->stop_ids;
        p->sampling.n_stop_token_ids = (int)n;
    }
    return SL_OK;
}

/* ---- fields the engine cannot honour -------------------------------------------------- */

static int refuse_unsupported(const json_t *body, sl_gen_kind kind, sl_err *err, const char **param) {
    json_t *v;
    if (kind == SL_GEN_COMPLETION && (v = json_object_get(body, "suffix")) && !json_is_null(v)) {
        *param = "suffix";
        return sl_err_set(err, SL_EINVAL, "suffix is not currently supported");
    }
    if ((v = json_object_get(body, "logit_bias")) && !json_is_null(v) &&
        !(json_is_object(v) && json_object_size(v) == 0)) {
        *param = "logit_bias";
        return sl_err_set(err, SL_EINVAL, "logit_bias is not currently supported");
    }
    if ((v = json_object_get(body, "prompt_logprobs")) && !json_is_null(v)) {
        *param = "prompt_logprobs";
        return sl_err_set(err, SL_EINVAL, "prompt_logprobs is not currently supported");
    }
    return SL_OK;
}

/* ---- logprobs --------------------------------------------------------------------------- */

static int parse_logprobs(const json_t *body, sl_gen_kind kind, sl_server_params *p, sl_err *err,
                          const char **param) {
    int64_t k = 0;
    int r;
    if (kind == SL_GEN_COMPLETION) {
        if ((r = get_int(body, "logprobs", 0, MAX_LOGPROBS, &k, err, param)) < 0) return r;
        if (r) {
            if (k < 0) return bad(err, param, "logprobs", "logprobs must be non-negative, got %.0f.", (double)k);
            if (k > MAX_LOGPROBS) {
                *param = "logprobs";
                return sl_err_set(err, SL_EINVAL,
                                  "Requested sample logprobs of %lld, which is greater than max allowed: %d",
                                  (long long)k, MAX_LOGPROBS);
            }
            p->logprobs = (int)k;
        }
        return SL_OK;
    }
    int want = 0;
    if ((r = get_bool(body, "logprobs", &want, err, param)) < 0) return r;
    int has_top = get_int(body, "top_logprobs", 0, MAX_LOGPROBS, &k, err, param);
    if (has_top < 0) return has_top;
    if (has_top) {
        if (k < 0) return bad(err, param, "top_logprobs", "top_logprobs must be non-negative, got %.0f.", (double)k);
        if (k > MAX_LOGPROBS) {
            *param = "top_logprobs";
            return sl_err_set(err, SL_EINVAL, "Requested sample logprobs of %lld, which is greater than max allowed: %d",
                              (long long)k, MAX_LOGPROBS);
        }
        if (!want && k > 0) {
            *param = "top_logprobs";
            return sl_err_set(err, SL_EINVAL, "when using `top_logprobs`, `logprobs` must be set to true.");
        }
    }
    if (want) p->logprobs = has_top ? (int)k : 0;
    return SL_OK;
}

/* ---- stream options -------------------------------------------------------------------------- */

static int parse_stream(const json_t *body, sl_server_params *p, sl_err *err, const char **param) {
    int r = get_bool(body, "stream", &p->stream, err, param);
    if (r < 0) return r;
    json_t *so = json_object_get(body, "stream_options");
    if (!so || json_is_null(so)) return SL_OK;
    if (!json_is_object(so)) {
        *param = "stream_options";
        return sl_err_set(err, SL_EINVAL, "stream_options: Input should be a valid dictionary");
    }
    if (!p->stream) {
        *param = "stream_options";
        return sl_err_set(err, SL_EINVAL, "Stream options can only be defined when `stream=True`.");
    }
    if ((r = get_bool(so, "include_usage", &p->include_usage, err, param)) < 0) return r;
    if ((r = get_bool(so, "continuous_usage_stats", &p->continuous_usage, err, param)) < 0) return r;
    return SL_OK;
}

/* ---- everything -------------------------------------------------------------------------------- */

static int parse_floats(const json_t *body, sl_sampling *sp, sl_err *err, const char **param) {
    double v = 0;
    int r;
    if ((r = get_number(body, "temperature", &v, err, param)) < 0) return r;
    if (r) {
        if (!(v >= 0)) return bad(err, param, "temperature", "temperature must be non-negative, got %g.", v);
        sp->temperature = (float)v;
    }
    if ((r = get_number(body, "top_p", &v, err, param)) < 0) return r;
    if (r) {
        if (!(v > 0 && v <= 1)) return bad(err, param, "top_p", "top_p must be in (0, 1], got %g.", v);
        sp->top_p = (float)v;
    }
    if ((r = get_number(body, "min_p", &v, err, param)) < 0) return r;
    if (r) {
        if (!(v >= 0 && v <= 1)) return bad(err, param, "min_p", "min_p must be in [0, 1], got %g.", v);
        sp->min_p = (float)v;
    }
    if ((r = get_number(body, "presence_penalty", &v, err, param)) < 0) return r;
    if (r) {
        if (!(v >= -2 && v <= 2))
            return bad(err, param, "presence_penalty", "presence_penalty must be in [-2, 2], got %g.", v);
        sp->presence_penalty = (float)v;
    }
    if ((r = get_number(body, "frequency_penalty", &v, err, param)) < 0) return r;
    if (r) {
        if (!(v >= -2 && v <= 2))
            return bad(err, param, "frequency_penalty", "frequency_penalty must be in [-2, 2], got %g.", v);
        sp->frequency_penalty = (float)v;
    }
    if ((r = get_number(body, "repetition_penalty", &v, err, param)) < 0) return r;
    if (r) {
        if (!(v > 0 && v <= 100))
            return bad(err, param, "repetition_penalty", "repetition_penalty must be in (0, 100], got %g.", v);
        sp->repetition_penalty = (float)v;
    }
    return SL_OK;
}

static int parse_ints(const sl_server *s, const json_t *body, sl_server_params *p, sl_err *err, const char **param) {
    sl_sampling *sp = &p->sampling;
    int64_t v = 0;
    int r;
    if ((r = get_int(body, "n", 1, s->max_n, &v, err, param)) < 0) return r;
    if (r) {
        if (v < 1) return bad(err, param, "n", "n must be at least 1, got %.0f.", (double)v);
        if (v > s->max_n) {
            *param = "n";
            return sl_err_set(err, SL_EINVAL, "n must be at most %d, got %lld.", s->max_n, (long long)v);
        }
        sp->n = (int)v;
    }
    if ((r = get_int(body, "best_of", 1, s->max_n, &v, err, param)) < 0) return r;
    if (r && v != sp->n) {
        *param = "best_of";
        return sl_err_set(err, SL_EINVAL, "best_of must equal n (%d): ranking several samples is not supported", sp->n);
    }
    const char *max_key = json_object_get(body, "max_completion_tokens") &&
                                  !json_is_null(json_object_get(body, "max_completion_tokens"))
                              ? "max_completion_tokens"
                              : "max_tokens";
    if ((r = get_int(body, max_key, 1, INT64_MAX, &v, err, param)) < 0) return r;
    if (r) {
        if (v < 1) return bad(err, param, max_key, "max_tokens must be at least 1, got %.0f.", (double)v);
        sp->max_tokens = v > INT32_MAX / 2 ? INT32_MAX / 2 : (int)v;
        p->max_tokens_given = v;
    }
    if ((r = get_int(body, "min_tokens", 0, INT64_MAX, &v, err, param)) < 0) return r;
    if (r) {
        if (v < 0)
            return bad(err, param, "min_tokens", "min_tokens must be greater than or equal to 0, got %.0f.", (double)v);
        if (p->max_tokens_given && v > p->max_tokens_given) {
            *param = "min_tokens";
            return sl_err_set(err, SL_EINVAL, "min_tokens must be less than or equal to max_tokens=%lld, got %lld.",
                              (long long)p->max_tokens_given, (long long)v);
        }
        sp->min_tokens = v > INT32_MAX / 2 ? INT32_MAX / 2 : (int)v;
    }
    if ((r = get_int(body, "top_k", -1, INT32_MAX, &v, err, param)) < 0) return r;
    if (r) {
        if (v < -1 || v > INT32_MAX)
            return bad(err, param, "top_k", "top_k must be -1 or 0 (disable), or at least 1, got %.0f.", (double)v);
        sp->top_k = (int)v;
    }
    if ((r = get_int(body, "seed", INT64_MIN, INT64_MAX, &v, err, param)) < 0) return r;
    if (r) sp->seed = v;
    int b = 0;
    if ((r = get_bool(body, "ignore_eos", &b, err, param)) < 0) return r;
    if (r) sp->ignore_eos = b;
    if ((r = get_bool(body, "include_stop_str_in_output", &b, err, param)) < 0) return r;
    if (r) sp->include_stop_str_in_output = b;
    if ((r = get_bool(body, "skip_special_tokens", &b, err, param)) < 0) return r;
    if (r) sp->skip_special_tokens = b;
    if ((r = get_bool(body, "add_special_tokens", &b, err, param)) < 0) return r;
    if (r) p->add_special_tokens = b;
    if ((r = get_bool(body, "echo", &b, err, param)) < 0) return r;
    if (r) p->echo = b;
    return SL_OK;
}

int sl_server_params_parse(const sl_server *s, const json_t *body, sl_gen_kind kind, sl_server_params *p,
                           sl_err *err, const char **param) {
    memset(p, 0, sizeof *p);
    sl_request r;
    sl_request_init(&r);
    p->sampling = r.params;
    p->logprobs = -1;
    p->add_special_tokens = -1;
    *param = NULL;
    int rc;
    if ((rc = refuse_unsupported(body, kind, err, param))) return rc;
    if ((rc = parse_stream(body, p, err, param))) return rc;
    if ((rc = parse_floats(body, &p->sampling, err, param))) return rc;
    if ((rc = parse_ints(s, body, p, err, param))) return rc;
    if ((rc = parse_logprobs(body, kind, p, err, param))) return rc;
    if ((rc = parse_stop(body, p, err, param))) return rc;
    if ((rc = sl_server_guide_parse(body, &p->guide, err, param))) return rc;
    if (kind == SL_GEN_CHAT && (rc = sl_server_tools_parse(s, body, p, err, param))) return rc;
    p->sampling.guide = p->guide.guide;
    if (kind == SL_GEN_COMPLETION && p->echo && p->logprobs >= 0) {
        *param = "echo";
        return sl_err_set(err, SL_EINVAL, "echo together with logprobs needs prompt logprobs, "
                                          "which are not currently supported");
    }
    p->sampling.logprobs = p->logprobs;
    p->n = p->sampling.n;
    return SL_OK;
}

/* ---- numbers past 64 bits ------------------------------------------------------------------ */

/* The first real past 64 bits in v (an integer jansson found too big), or NULL. */
static const json_t *huge_number(const json_t *v) {
    const json_t *found = NULL, *e;
    const char *k;
    size_t i;
    if (json_is_real(v)) return fabs(json_real_value(v)) >= 0x1p63 ? v : NULL;
    if (json_is_array(v)) json_array_foreach(v, i, e) if ((found = huge_number(e))) return found;
    if (json_is_object(v)) json_object_foreach((json_t *)v, k, e) if ((found = huge_number(e))) return found;
    return NULL;
}

int sl_server_params_too_big(const sl_server *s, const json_t *body, sl_gen_kind kind, sl_err *err,
                             const char **param) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        const json_t *huge = huge_number(v);
        if (!huge) continue;
        /* the field parsed alone: a sampling field's own range error */
        json_t *alone = json_pack("{s:O}", key, v);
        if (!alone) return sl_err_set(err, SL_ENOMEM, "out of memory");
        sl_server_params p;
        int rc = sl_server_params_parse(s, alone, kind, &p, err, param);
        sl_server_params_free(&p);
        json_decref(alone);
        if (rc && *param && strcmp(*param, key) == 0) return rc;
        *param = key;
        return sl_err_set(err, SL_EINVAL, "%s: %.0f is out of range: integers must be between %lld and %lld", key,
                          json_real_value(huge), (long long)INT64_MIN, (long long)INT64_MAX);
    }
    *param = NULL;
    return SL_OK;
}

void sl_server_params_free(sl_server_params *p) {
    free(p->stop);
    free(p->stop_ids);
    p->stop = NULL;
    p->stop_ids = NULL;
    sl_server_guide_free(&p->guide);
    sl_server_tools_free(&p->tools);
}
