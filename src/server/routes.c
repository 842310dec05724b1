/* routes.c -- the routes behind the dispatcher (server.c): completions and
 * chat completions (validate, render, tokenize, check lengths, submit, then
 * stream or suspend until done), /tokenize, /detokenize and /v1/models.
 *
 * Prompts are tokenized here, on the HTTP thread, so every length and
 * token-id check happens before the engine sees the request and `usage`
 * counts exactly the ids submitted. Chat prompts are tokenized without
 * special tokens (the template writes them), completion prompts with them,
 * as vLLM does; `add_special_tokens` overrides both. */
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"
#include "util/log.h"

#define MAX_PROMPTS 1024

int sl_server_tokenize(const sl_server *s, const char *text, int add_special, int32_t **ids, int *n_ids,
                       sl_err *err) {
    if (!s->tok)
        return sl_err_set(err, SL_EINVAL, "this model has no tokenizer (no tokenizer.json): send token ids instead "
                                          "of text");
    size_t n = 0;
    int rc = sl_tokenizer_encode(s->tok, text, strlen(text), add_special != 0, ids, &n, err);
    if (rc) return rc;
    if (n > INT32_MAX / 2) return sl_err_set(err, SL_EINVAL, "prompt too long");
    *n_ids = (int)n;
    return SL_OK;
}

/* ---- prompts ----------------------------------------------------------------------- */

typedef struct prompt_in {
    const char *text;        /* borrowed from the body, or NULL */
    const json_t *ids;       /* a JSON array of ints, or NULL */
} prompt_in;

static int is_id_list(const json_t *a) {
    if (!json_is_array(a) || json_array_size(a) == 0) return 0;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) if (!json_is_integer(v)) return 0;
    return 1;
}

/* The four prompt forms of /v1/completions. */
static int collect_prompts(const json_t *body, prompt_in *out, int *n, sl_err *err) {
    json_t *p = json_object_get(body, "prompt");
    if (!p || json_is_null(p)) return sl_err_set(err, SL_EINVAL, "prompt: Field required");
    if (json_is_string(p)) {
        out[0] = (prompt_in){.text = json_string_value(p)};
        *n = 1;
        return SL_OK;
    }
    if (!json_is_array(p) || json_array_size(p) == 0)
        return sl_err_set(err, SL_EINVAL, "prompt: Input should be a string, a list of strings, a list of token ids "
                                          "or a list of lists of token ids (and not empty)");
    if (is_id_list(p)) {
        out[0] = (prompt_in){.ids = p};
        *n = 1;
        return SL_OK;
    }
    if (json_array_size(p) > MAX_PROMPTS)
        return sl_err_set(err, SL_EINVAL, "prompt: at most %d prompts per request, got %zu", MAX_PROMPTS,
                          json_array_size(p));
    size_t i;
    json_t *v;
    json_array_foreach(p, i, v) {
        if (json_is_string(v)) out[i] = (prompt_in){.text = json_string_value(v)};
        else if (is_id_list(v)) out[i] = (prompt_in){.ids = v};
        else
            return sl_err_set(err, SL_EINVAL, "prompt[%zu]: Input should be a string or a non-empty list of token "
                                              "ids", i);
    }
    *n = (int)json_array_size(p);
    return SL_OK;
}

/* Copies and checks the ids; a list as long as the context is only
 * counted (check_length refuses it). */
static int ids_from_json(const sl_server *s, const json_t *a, int32_t **ids, int *n, sl_err *err) {
    size_t len = json_array_size(a);
    if (len >= (size_t)s->info.max_model_len) {
        *n = len > INT32_MAX / 2 ? INT32_MAX / 2 : (int)len;
        return SL_OK;
    }
    *ids = malloc((len ? len : 1) * sizeof **ids);
    if (!*ids) return sl_err_set(err, SL_ENOMEM, "out of memory");
    for (size_t i = 0; i < len; i++) {
        json_int_t v = json_integer_value(json_array_get(a, i));
        if (v < 0 || v >= s->info.vocab_size) {
            free(*ids);
            *ids = NULL;
            return sl_err_set(err, SL_EINVAL, "Token id %lld is out of vocabulary (vocab size %d)", (long long)v,
                              s->info.vocab_size);
        }
        (*ids)[i] = (int32_t)v;
    }
    *n = (int)len;
    return SL_OK;
}

/* vLLM's context-length messages. */
static int check_length(const sl_server *s, int n_prompt, const sl_server_params *p, sl_err *err,
                        const char **param) {
    int max_len = s->info.max_model_len;
    if (n_prompt == 0) return sl_err_set(err, SL_EINVAL, "The prompt is empty: it has no tokens.");
    if (n_prompt >= max_len)
        return sl_err_set(err, SL_EINVAL, "This model's maximum context length is %d tokens. However, your request "
                                          "has %d input tokens. Please reduce the length of the input messages.",
                          max_len, n_prompt);
    const long long asked = (long long)p->max_tokens_given; /* as sent: sampling.max_tokens is capped */
    if (asked && asked > (long long)max_len - n_prompt && (*param = "max_tokens"))
        return sl_err_set(err, SL_EINVAL, "'max_tokens' or 'max_completion_tokens' is too large: %lld. This model's "
                                          "maximum context length is %d tokens and your request has %d input "
                                          "tokens (%lld > %d - %d).",
                          asked, max_len, n_prompt, asked, max_len, n_prompt);
    return SL_OK;
}

/* Fills the generation's prompts (ids, echo text) for either route. */
static int build_prompts(sl_server *s, const json_t *body, sl_gen_kind kind, const sl_server_params *p, sl_gen **gout,
                         sl_err *err, const char **param) {
    prompt_in *in = calloc(MAX_PROMPTS, sizeof *in);
    char *chat_prompt = NULL, *role = NULL, *echo = NULL;
    int n = 0, rc;
    if (!in) return sl_err_set(err, SL_ENOMEM, "out of memory");
    if (kind == SL_GEN_CHAT) {
        if (!s->tok) {
            free(in);
            return sl_err_set(err, SL_EINVAL, "this model has no tokenizer (no tokenizer.json), so it cannot chat: "
                                              "use /v1/completions with token ids");
        }
        rc = sl_server_chat_render(s, body, &chat_prompt, &role, p->echo ? &echo : NULL, err, param);
        in[0].text = chat_prompt;
        n = 1;
    } else {
        rc = collect_prompts(body, in, &n, err);
        if (rc) *param = "prompt";
    }
    sl_gen *g = rc ? NULL : sl_server_gen_new(s, kind, n, p->n);
    if (!rc && !g) rc = sl_err_set(err, SL_ENOMEM, "out of memory");
    if (g) g->role = role, role = NULL;
    if (g && echo) g->subs[0].echo_text = echo, echo = NULL; /* chat: one prompt */
    int add_special = p->add_special_tokens >= 0 ? p->add_special_tokens : kind == SL_GEN_COMPLETION;
    for (int i = 0; !rc && i < n; i++) {
        sl_gen_sub *sub = &g->subs[i];
        if (in[i].text) {
            rc = sl_server_tokenize(s, in[i].text, add_special, &sub->prompt_ids, &sub->n_prompt, err);
            if (!rc && p->echo && kind == SL_GEN_COMPLETION && !(sub->echo_text = strdup(in[i].text)))
                rc = sl_err_set(err, SL_ENOMEM, "out of memory");
            if (!rc && s->log_requests && !(sub->log_text = strdup(in[i].text)))
                rc = sl_err_set(err, SL_ENOMEM, "out of memory");
        } else {
            rc = ids_from_json(s, in[i].ids, &sub->prompt_ids, &sub->n_prompt, err);
            if (!rc && p->echo && s->tok) {
                size_t nb;
                rc = sl_tokenizer_decode(s->tok, sub->prompt_ids, (size_t)sub->n_prompt, false, &sub->echo_text, &nb,
                                         err);
            }
        }
        if (!rc) rc = check_length(s, sub->n_prompt, p, err, param);
        if (rc && !*param) *param = kind == SL_GEN_CHAT ? "messages" : "prompt";
    }
    free(in);
    free(chat_prompt);
    free(role);
    free(echo);
    if (rc) {
        if (g) sl_server_gen_release(g);
        return rc;
    }
    *gout = g;
    return SL_OK;
}

/* ---- completions and chat completions ------------------------------------------------ */

static enum MHD_Result start_stream(sl_server *s, struct MHD_Connection *c, sl_gen *g) {
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sl_server_gen_stream_read, g,
                                          sl_server_gen_stream_free);
    if (!r) return sl_server_reply_error(s, c, 500, NULL, "out of memory");
    pthread_mutex_lock(&g->mu);
    g->refs++; /* the response body's */
    pthread_mutex_unlock(&g->mu);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    sl_cors_add_headers(&s->cors, c, r);
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    sl_server_metrics_count_status(&s->metrics, 200);
    return ret;
}

enum MHD_Result sl_server_route_completions(sl_server *s, struct MHD_Connection *c, json_t *body, sl_gen_kind kind,
                                            sl_gen **gen_out, double t_arrival) {
    sl_err err = {0};
    const char *param = NULL;
    if (!json_is_object(body)) return sl_server_reply_error(s, c, 400, NULL, "the request body must be a JSON object");
    if (sl_server_check_model(s, body, &err)) return sl_server_reply_error(s, c, sl_server_status_of(err.code), "model", "%s", err.msg);
    sl_server_params p;
    int rc = sl_server_params_parse(s, body, kind, &p, &err, &param);
    sl_gen *g = NULL;
    if (!rc) rc = build_prompts(s, body, kind, &p, &g, &err, &param);
    if (rc) {
        sl_server_params_free(&p);
        return sl_server_reply_error(s, c, sl_server_status_of(rc), param, "%s", err.msg);
    }
    g->conn = c;
    g->t_arrival = t_arrival;
    g->stream = p.stream;
    g->include_usage = p.include_usage || p.continuous_usage;
    g->continuous_usage = p.continuous_usage;
    g->logprobs = p.logprobs;
    g->echo = p.echo;
    g->tools = p.tools; /* the generation reads the calls out of its output */
    p.tools = (sl_server_tools){0};
    int status = 500;
    rc = sl_server_gen_submit(g, &p.sampling, &err, &status);
    sl_server_params_free(&p);
    if (rc) {
        sl_server_gen_release(g);
        return sl_server_reply_error(s, c, (unsigned)status, NULL, "%s", err.msg);
    }
    *gen_out = g; /* the connection's reference from here on */
    sl_server_watch(g);
    if (g->stream) return start_stream(s, c, g);
    return sl_server_finish_gen(s, c, g);
}

enum MHD_Result sl_server_finish_gen(sl_server *s, struct MHD_Connection *c, sl_gen *g) {
    int done = sl_server_gen_drain(g);
    if (!done) {
        if (sl_server_gen_wait(g, 0)) return MHD_YES; /* resumed by the engine callback */
        done = sl_server_gen_drain(g);
    }
    if (!done) {
        return g->error ? sl_server_reply_error(s, c, 500, NULL, "%s", g->error)
                        : sl_server_reply_error(s, c, 503, NULL, "the server is shutting down; the request was aborted");
    }
    if (g->error) return sl_server_reply_error(s, c, 500, NULL, "%s", g->error);
    return sl_server_reply_json(s, c, 200, sl_server_gen_final_json(g));
}

/* ---- /tokenize and /detokenize -------------------------------------------------------- */

enum MHD_Result sl_server_route_tokenize(sl_server *s, struct MHD_Connection *c, json_t *body) {
    sl_err err = {0};
    const char *param = NULL;
    if (!json_is_object(body)) return sl_server_reply_error(s, c, 400, NULL, "the request body must be a JSON object");
    if (sl_server_check_model(s, body, &err)) return sl_server_reply_error(s, c, sl_server_status_of(err.code), "model", "%s", err.msg);
    json_t *messages = json_object_get(body, "messages"), *prompt = json_object_get(body, "prompt");
    json_t *add = json_object_get(body, "add_special_tokens"), *strs = json_object_get(body, "return_token_strs");
    if ((add && !json_is_boolean(add) && !json_is_null(add)) || (strs && !json_is_boolean(strs) && !json_is_null(strs)))
        return sl_server_reply_error(s, c, 400, add && !json_is_boolean(add) ? "add_special_tokens" : "return_token_strs",
                                     "Input should be a valid boolean");
    int is_chat = messages && !json_is_null(messages);
    int add_special = json_is_boolean(add) ? json_is_true(add) : !is_chat;
    char *text = NULL;
    int rc = SL_OK;
    if (!s->tok) {
        rc = sl_err_set(&err, SL_EINVAL, "this model has no tokenizer (no tokenizer.json)");
    } else if (is_chat) {
        rc = sl_server_chat_render(s, body, &text, NULL, NULL, &err, &param);
    } else if (!json_is_string(prompt)) {
        param = "prompt";
        rc = sl_err_set(&err, SL_EINVAL, "prompt: Field required (a string), or give `messages`");
    } else if (!(text = strdup(json_string_value(prompt)))) {
        rc = sl_err_set(&err, SL_ENOMEM, "out of memory");
    }
    int32_t *ids = NULL;
    int n = 0;
    if (!rc) rc = sl_server_tokenize(s, text, add_special, &ids, &n, &err);
    free(text);
    if (rc) return sl_server_reply_error(s, c, sl_server_status_of(rc), param, "%s", err.msg);
    json_t *tokens = json_array(), *token_strs = json_is_true(strs) ? json_array() : json_null();
    for (int i = 0; i < n; i++) {
        json_array_append_new(tokens, json_integer(ids[i]));
        if (json_is_array(token_strs)) {
            const char *t = sl_tokenizer_id_to_token(s->tok, ids[i]);
            json_array_append_new(token_strs, t ? json_string(t) : json_null());
        }
    }
    free(ids);
    return sl_server_reply_json(s, c, 200,
                                json_pack("{s:i, s:i, s:o, s:o}", "count", n, "max_model_len", s->info.max_model_len,
                                          "tokens", tokens, "token_strs", token_strs));
}

enum MHD_Result sl_server_route_detokenize(sl_server *s, struct MHD_Connection *c, json_t *body) {
    sl_err err = {0};
    if (!json_is_object(body)) return sl_server_reply_error(s, c, 400, NULL, "the request body must be a JSON object");
    if (sl_server_check_model(s, body, &err)) return sl_server_reply_error(s, c, sl_server_status_of(err.code), "model", "%s", err.msg);
    json_t *tokens = json_object_get(body, "tokens");
    if (!json_is_array(tokens)) return sl_server_reply_error(s, c, 400, "tokens", "tokens: Field required (a list of token ids)");
    if (!s->tok) return sl_server_reply_error(s, c, 400, NULL, "this model has no tokenizer (no tokenizer.json)");
    size_t n = json_array_size(tokens);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return sl_server_reply_error(s, c, 500, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(tokens, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= s->info.vocab_size) {
            free(ids);
            return sl_server_reply_error(s, c, 400, "tokens", "tokens[%zu]: a token id in [0, %d) is expected", i,
                                         s->info.vocab_size);
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    char *text = NULL;
    size_t nb = 0;
    int rc = sl_tokenizer_decode(s->tok, ids, n, false, &text, &nb, &err);
    free(ids);
    if (rc) return sl_server_reply_error(s, c, sl_server_status_of(rc), "tokens", "%s", err.msg);
    json_t *out = json_pack("{s:s#}", "prompt", text, nb);
    free(text);
    return sl_server_reply_json(s, c, 200, out);
}

/* ---- /v1/models -------------------------------------------------------------------------- */

enum MHD_Result sl_server_route_models(sl_server *s, struct MHD_Connection *c) {
    char perm_id[64];
    sl_server_make_id(perm_id, sizeof perm_id, "modelperm-");
    json_t *perm = json_pack("{s:s, s:s, s:I, s:b, s:b, s:b, s:b, s:b, s:b, s:s, s:n, s:b}", "id", perm_id, "object",
                             "model_permission", "created", (json_int_t)s->created, "allow_create_engine", 0,
                             "allow_sampling", 1, "allow_logprobs", 1, "allow_search_indices", 0, "allow_view", 1,
                             "allow_fine_tuning", 0, "organization", "*", "group", "is_blocking", 0);
    json_t *model = json_pack("{s:s, s:s, s:I, s:s, s:s, s:n, s:i, s:[o]}", "id", s->model_name, "object", "model",
                              "created", (json_int_t)s->created, "owned_by", "shardlm", "root",
                              s->info.model_path ? s->info.model_path : s->model_name, "parent", "max_model_len",
                              s->info.max_model_len, "permission", perm);
    return sl_server_reply_json(s, c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model));
}
