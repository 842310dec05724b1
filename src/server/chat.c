/* chat.c -- a chat request's messages rendered into a prompt, as vLLM
 * prepares them for transformers' apply_chat_template.
 *
 * The messages are copied and normalized first: content given as a list of
 * text parts becomes one string (parts joined by "\n", vLLM's "string"
 * content format), and no content becomes ""; an assistant message's
 * tool_calls[].function.arguments given as a JSON string becomes the object
 * it encodes (empty -> {}), as HF templates iterate or `tojson` it; every
 * other field (reasoning_content, name, tool_call_id, ...) passes through
 * untouched. The template is the request's `chat_template` when given, else
 * the engine's. Template variables: messages, tools, add_generation_prompt,
 * bos_token, eos_token, then chat_template_kwargs on top. With
 * continue_final_message the output is cut right after the final message's
 * content, exactly as transformers cuts it. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

static int fail(sl_err *err, const char **param, const char *field, const char *fmt, size_t i) {
    *param = field;
    return sl_err_set(err, SL_EINVAL, fmt, i);
}

/* Text parts -> one string; other part types are refused (text-only model).
 * No content (an assistant message with only tool_calls) is "", as vLLM
 * hands it to templates, which concatenate it. */
static int flatten_content(json_t *msg, size_t i, sl_err *err, const char **param) {
    json_t *content = json_object_get(msg, "content");
    if (!content || json_is_null(content))
        return json_object_set_new(msg, "content", json_string("")) ? sl_err_set(err, SL_ENOMEM, "out of memory")
                                                                      : SL_OK;
    if (json_is_string(content)) return SL_OK;
    if (!json_is_array(content))
        return fail(err, param, "messages", "messages[%zu].content: Input should be a valid string or a list of "
                                            "content parts", i);
    sl_server_buf b = {0};
    size_t j;
    json_t *part;
    json_array_foreach(content, j, part) {
        json_t *type = json_object_get(part, "type");
        json_t *text = json_object_get(part, "text");
        if (json_is_string(part)) text = part;
        else if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") != 0 ||
                 !json_is_string(text)) {
            sl_server_buf_free(&b);
            return fail(err, param, "messages",
                        "messages[%zu].content: only parts {\"type\": \"text\", \"text\": ...} are supported", i);
        }
        if (j > 0 && sl_server_buf_puts(&b, "\n")) goto oom;
        if (sl_server_buf_append(&b, json_string_value(text), json_string_length(text))) goto oom;
    }
    json_t *joined = json_stringn(b.data ? b.data : "", b.len);
    sl_server_buf_free(&b);
    if (!joined || json_object_set_new(msg, "content", joined)) return sl_err_set(err, SL_ENOMEM, "out of memory");
    return SL_OK;
oom:
    sl_server_buf_free(&b);
    return sl_err_set(err, SL_ENOMEM, "out of memory");
}

/* tool_calls[].function.arguments: JSON string -> object, as vLLM does. */
static int decode_tool_arguments(json_t *msg, size_t i, sl_err *err, const char **param) {
    json_t *calls = json_object_get(msg, "tool_calls");
    if (!json_is_array(calls)) return SL_OK;
    size_t j;
    json_t *call;
    json_array_foreach(calls, j, call) {
        json_t *fn = json_object_get(call, "function");
        if (!json_is_object(fn)) continue;
        json_t *args = json_object_get(fn, "arguments");
        if (args && (json_is_object(args) || json_is_array(args))) continue;
        json_t *decoded;
        if (!args || json_is_null(args) || (json_is_string(args) && json_string_length(args) == 0)) {
            decoded = json_object();
        } else if (json_is_string(args)) {
            json_error_t jerr;
            decoded = json_loadb(json_string_value(args), json_string_length(args), JSON_DECODE_ANY, &jerr);
            if (!decoded)
                return fail(err, param, "messages",
                            "messages[%zu].tool_calls: function.arguments is not valid JSON", i);
        } else {
            return fail(err, param, "messages", "messages[%zu].tool_calls: function.arguments should be a JSON string",
                        i);
        }
        if (json_object_set_new(fn, "arguments", decoded)) return sl_err_set(err, SL_ENOMEM, "out of memory");
    }
    return SL_OK;
}

static int normalize_messages(const json_t *messages, json_t **out, sl_err *err, const char **param) {
    if (!messages || json_is_null(messages)) {
        *param = "messages";
        return sl_err_set(err, SL_EINVAL, "messages: Field required");
    }
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        *param = "messages";
        return sl_err_set(err, SL_EINVAL, "messages: Input should be a non-empty list of messages");
    }
    json_t *copy = json_deep_copy(messages);
    if (!copy) return sl_err_set(err, SL_ENOMEM, "out of memory");
    size_t i;
    json_t *msg;
    int rc = SL_OK;
    json_array_foreach(copy, i, msg) {
        json_t *role = json_object_get(msg, "role");
        if (!json_is_object(msg) || !json_is_string(role)) {
            rc = fail(err, param, "messages", "messages[%zu]: a message is an object with a string `role`", i);
            break;
        }
        if ((rc = flatten_content(msg, i, err, param)) || (rc = decode_tool_arguments(msg, i, err, param))) break;
    }
    if (rc) {
        json_decref(copy);
        return rc;
    }
    *out = copy;
    return SL_OK;
}

/* ---- continue_final_message --------------------------------------------------------------- */

static int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* Cuts *prompt right after the final message's content (transformers' rule:
 * the last occurrence of the stripped content; keep its leading-stripped
 * length when the template kept it verbatim, else the stripped length). */
static int cut_after_final(char *prompt, const json_t *messages, sl_err *err, const char **param) {
    json_t *last = json_array_get(messages, json_array_size(messages) - 1);
    const char *content = json_string_value(json_object_get(last, "content"));
    if (!content) content = "";
    size_t n = strlen(content), a = 0, z = n;
    while (a < n && is_space((unsigned char)content[a])) a++;
    while (z > a && is_space((unsigned char)content[z - 1])) z--;
    char *found = NULL;
    size_t len = strlen(prompt);
    for (char *p = prompt; p <= prompt + len;) {
        char *hit = memmem(p, (size_t)(prompt + len - p), content + a, z - a);
        if (!hit) break;
        found = hit;
        p = hit + 1;
    }
    if (!found) {
        *param = "continue_final_message";
        return sl_err_set(err, SL_EINVAL, "continue_final_message is set but the final message does not appear in "
                                          "the chat after applying the chat template! This can happen if the chat "
                                          "template deletes portions of the final message.");
    }
    int verbatim = a == 0 && (size_t)(prompt + len - found) >= n && memcmp(found, content, n) == 0;
    found[verbatim ? n : z - a] = '\0';
    return SL_OK;
}

/* ---- the context and the render --------------------------------------------------------------- */

static int get_flag(const json_t *body, const char *key, int dflt, int *out, sl_err *err, const char **param) {
    json_t *v = json_object_get(body, key);
    *out = dflt;
    if (!v || json_is_null(v)) return SL_OK;
    if (!json_is_boolean(v)) {
        *param = key;
        return sl_err_set(err, SL_EINVAL, "%s: Input should be a valid boolean", key);
    }
    *out = json_is_true(v);
    return SL_OK;
}

static int build_context(const sl_server *s, const json_t *body, json_t *messages, int add_gen, json_t **out,
                         sl_err *err, const char **param) {
    json_t *tools = json_object_get(body, "tools");
    if (tools && !json_is_null(tools) && !json_is_array(tools)) {
        *param = "tools";
        return sl_err_set(err, SL_EINVAL, "tools: Input should be a valid list");
    }
    json_t *kwargs = json_object_get(body, "chat_template_kwargs");
    if (kwargs && !json_is_null(kwargs) && !json_is_object(kwargs)) {
        *param = "chat_template_kwargs";
        return sl_err_set(err, SL_EINVAL, "chat_template_kwargs: Input should be a valid dictionary");
    }
    json_t *ctx = json_pack("{s:O, s:b, s:s, s:s}", "messages", messages, "add_generation_prompt", add_gen,
                            "bos_token", sl_engine_bos_token(s->engine), "eos_token", sl_engine_eos_token(s->engine));
    if (!ctx) return sl_err_set(err, SL_ENOMEM, "out of memory");
    json_object_set(ctx, "tools", tools && json_array_size(tools) ? tools : json_null());
    json_t *docs = json_object_get(body, "documents");
    if (docs && !json_is_null(docs)) json_object_set(ctx, "documents", docs);
    if (kwargs && json_is_object(kwargs)) json_object_update(ctx, kwargs);
    *out = ctx;
    return SL_OK;
}

int sl_server_chat_render(const sl_server *s, const json_t *body, char **prompt, char **role, char **echo,
                          sl_err *err, const char **param) {
    int add_gen, cont, rc;
    if ((rc = get_flag(body, "continue_final_message", 0, &cont, err, param))) return rc;
    if ((rc = get_flag(body, "add_generation_prompt", !cont, &add_gen, err, param))) return rc;
    if (cont && add_gen) {
        *param = "continue_final_message";
        return sl_err_set(err, SL_EINVAL, "Cannot set both `continue_final_message` and `add_generation_prompt` to "
                                          "True.");
    }
    json_t *tmpl_src = json_object_get(body, "chat_template");
    if (tmpl_src && !json_is_null(tmpl_src) && !json_is_string(tmpl_src)) {
        *param = "chat_template";
        return sl_err_set(err, SL_EINVAL, "chat_template: Input should be a valid string");
    }
    sl_chat_template *own = NULL;
    const sl_chat_template *tmpl = s->tmpl;
    if (json_is_string(tmpl_src)) {
        if ((rc = sl_chat_template_compile(json_string_value(tmpl_src), json_string_length(tmpl_src), &own, err))) {
            *param = "chat_template";
            return rc == SL_ENOMEM ? rc : sl_err_wrap(err, SL_EINVAL, "request chat_template: ");
        }
        tmpl = own;
    }
    if (!tmpl)
        return sl_err_set(err, SL_EINVAL, "the model has no chat template: pass `chat_template` in the request, "
                                          "or start the server with --chat-template FILE");
    json_t *messages = NULL, *ctx = NULL;
    size_t n = 0;
    rc = normalize_messages(json_object_get(body, "messages"), &messages, err, param);
    if (!rc) rc = build_context(s, body, messages, add_gen, &ctx, err, param);
    if (!rc) {
        rc = sl_chat_template_render(tmpl, ctx, prompt, &n, err);
        if (rc && rc != SL_ENOMEM) {
            err->code = SL_EINVAL;
            rc = SL_EINVAL;
        }
    }
    if (!rc && cont && (rc = cut_after_final(*prompt, messages, err, param))) {
        free(*prompt);
        *prompt = NULL;
    }
    if (!rc && role) {
        const json_t *last = json_array_get(messages, json_array_size(messages) - 1);
        const char *last_role = json_string_value(json_object_get(last, "role"));
        const char *reply_role = add_gen ? s->response_role : last_role;
        const bool echoes = echo && strcmp(reply_role, last_role) == 0;
        *role = strdup(reply_role);
        if (echo) *echo = echoes ? strdup(json_string_value(json_object_get(last, "content"))) : NULL;
        if (!*role || (echoes && !*echo)) {
            free(*prompt), free(*role);
            *prompt = *role = NULL;
            if (echo) free(*echo), *echo = NULL;
            rc = sl_err_set(err, SL_ENOMEM, "out of memory");
        }
    }
    json_decref(ctx);
    json_decref(messages);
    sl_chat_template_free(own);
    return rc;
}
