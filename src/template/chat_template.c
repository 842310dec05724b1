/* chat_template.c -- the public face of the chat-template interpreter:
 * compile (lex + parse into an arena the template owns), render (one
 * independent evaluation per call, so renders may run concurrently), and
 * finding a model's template and special tokens on disk the way transformers
 * does (chat_template.jinja first, then tokenizer_config.json). */
#include "template/chat_template.h"

#include <stdlib.h>
#include <string.h>

#include "template/jinja.h"
#include "util/fs.h"

struct sl_chat_template {
    jinja_arena arena; /* tokens, AST and literal strings */
    jinja_nodes body;
};

int sl_chat_template_compile(const char *source, size_t n_bytes, sl_chat_template **out, sl_err *err) {
    *out = NULL;
    if (!source && n_bytes) return sl_err_set(err, SL_EINVAL, "chat template: no source given");
    sl_chat_template *t = calloc(1, sizeof *t);
    if (!t) return sl_err_set(err, SL_ENOMEM, "chat template: out of memory");
    t->arena.limit = JINJA_MAX_MEMORY;
    jinja_tokens toks;
    int rc = jinja_lex(source ? source : "", n_bytes, &t->arena, &toks, err);
    if (!rc) rc = jinja_parse(&toks, &t->arena, &t->body, err);
    if (rc) {
        sl_chat_template_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void sl_chat_template_free(sl_chat_template *t) {
    if (!t) return;
    jinja_arena_free(&t->arena);
    free(t);
}

int sl_chat_template_render(const sl_chat_template *t, const json_t *context, char **out, size_t *n_bytes,
                            sl_err *err) {
    *out = NULL;
    if (n_bytes) *n_bytes = 0;
    if (!json_is_object(context))
        return sl_err_set(err, SL_EINVAL, "chat template: the render context must be a JSON object");
    return jinja_render_template(&t->body, context, out, n_bytes, err);
}

/* tokenizer_config.json holds integers beyond 64 bits (model_max_length =
 * 1e30 in Llama configs), so it is parsed with integers read as reals. */
static int load_config(const char *path, json_t **out, sl_err *err) {
    char *text = NULL;
    size_t n = 0;
    int rc = sl_file_read_all(path, &text, &n, err);
    if (rc) return rc;
    json_error_t jerr;
    *out = json_loadb(text, n, JSON_DECODE_INT_AS_REAL, &jerr);
    free(text);
    if (!*out)
        return sl_err_set(err, SL_EFORMAT, "%s:%d:%d: invalid JSON: %s", path, jerr.line, jerr.column, jerr.text);
    return 0;
}

/* A special token in tokenizer_config.json: "text" or {"content": "text"}. */
static char *token_string(const json_t *config, const char *key) {
    const json_t *v = json_object_get(config, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static int no_template(sl_err *err, const char *where) {
    return sl_err_set(err, SL_ENOTFOUND, "%s: no chat template (no chat_template.jinja and no \"chat_template\" in "
                      "tokenizer_config.json); pass one with --chat-template FILE", where);
}

static int template_from_config(const json_t *config, const char *path, const char *name, char **source,
                                sl_err *err) {
    const json_t *tpl = json_object_get(config, "chat_template");
    if (json_is_string(tpl) && (!name || !strcmp(name, "default"))) {
        *source = strdup(json_string_value(tpl));
        return *source ? 0 : sl_err_set(err, SL_ENOMEM, "out of memory");
    }
    const char *want = name ? name : "default";
    if (json_is_array(tpl)) {
        size_t i;
        const json_t *entry;
        json_array_foreach(tpl, i, entry) {
            const json_t *n = json_object_get(entry, "name"), *s = json_object_get(entry, "template");
            if (json_is_string(n) && json_is_string(s) && !strcmp(json_string_value(n), want)) {
                *source = strdup(json_string_value(s));
                return *source ? 0 : sl_err_set(err, SL_ENOMEM, "out of memory");
            }
        }
        return sl_err_set(err, SL_ENOTFOUND, "%s has no chat template named '%s'; pick one of its names or pass "
                          "a template with --chat-template FILE", path, want);
    }
    if (tpl && !json_is_null(tpl) && !json_is_string(tpl))
        return sl_err_set(err, SL_EFORMAT, "%s: \"chat_template\" must be a string or a list of "
                          "{\"name\", \"template\"}", path);
    if (json_is_string(tpl))
        return sl_err_set(err, SL_ENOTFOUND, "%s has a single chat template, not one named '%s'; pass a template "
                          "with --chat-template FILE", path, want);
    return no_template(err, path);
}

int sl_chat_template_load_source(const char *model_dir, const char *name, char **source, char **bos_token,
                                 char **eos_token, sl_err *err) {
    *source = NULL;
    if (bos_token) *bos_token = NULL;
    if (eos_token) *eos_token = NULL;
    char *config_path = sl_path_join(model_dir, "tokenizer_config.json");
    char *jinja_path = sl_path_join(model_dir, "chat_template.jinja");
    json_t *config = NULL;
    int rc = 0;
    if (!config_path || !jinja_path) {
        rc = sl_err_set(err, SL_ENOMEM, "out of memory");
        goto done;
    }
    if (sl_path_exists(config_path) && (rc = load_config(config_path, &config, err))) goto done;
    if (config && !json_is_object(config)) {
        rc = sl_err_set(err, SL_EFORMAT, "%s: expected a JSON object", config_path);
        goto done;
    }
    if ((!name || !strcmp(name, "default")) && sl_path_exists(jinja_path)) {
        rc = sl_file_read_all(jinja_path, source, NULL, err);
    } else {
        rc = config ? template_from_config(config, config_path, name, source, err) : no_template(err, model_dir);
    }
    if (!rc && config) {
        if (bos_token) *bos_token = token_string(config, "bos_token");
        if (eos_token) *eos_token = token_string(config, "eos_token");
    }
done:
    if (rc) {
        free(*source);
        *source = NULL;
    }
    json_decref(config);
    free(config_path);
    free(jinja_path);
    return rc;
}
