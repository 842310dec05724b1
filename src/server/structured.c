/* structured.c -- the request fields that constrain the output to a grammar
 * (structured output), read into one sl_guide for the engine.
 *
 * Accepted, as vLLM, OpenAI and llama.cpp's server take them:
 *   response_format     {"type": "text" | "json_object" | "json_schema",
 *                        "json_schema": {"name", "schema", "strict"}}      (OpenAI)
 *   structured_outputs  {"json" | "regex" | "choice" | "grammar" | "json_object": true}  (vLLM)
 *   guided_json, guided_regex, guided_choice, guided_grammar              (vLLM, older)
 *   json_schema, grammar                                                  (llama.cpp)
 * and tool_choice "required" or a named function, which tools.c turns into
 * a JSON schema through sl_server_guide_set_schema. One constraint per
 * request: a second is a 400 naming both. A schema may be an object or a
 * string holding one (vLLM takes both).
 *
 * The engine compiles the grammar (an invalid or unsupported one fails the
 * submit, answered 400 with its message); JSON schemas and regexes are also
 * checked here, by compiling them to GBNF text only, so their 400s name the
 * request field. Options that do not change what is allowed (strict,
 * whitespace patterns, backends, disable_*) are accepted and ignored. */
#include <stdlib.h>
#include <string.h>

#include "grammar/json_schema.h"
#include "server/server_internal.h"

static int refuse(sl_err *err, const char **param, const char *key, int code, const char *fmt, const char *field) {
    *param = key;
    return sl_err_set(err, code, fmt, field);
}

/* The first constraint of a request, or a 400 naming it and this one. */
static int claim(sl_server_guide *g, sl_guide_kind kind, const char *field, const char *key, sl_err *err,
                 const char **param) {
    if (g->guide.kind != SL_GUIDE_NONE) {
        *param = key;
        return sl_err_set(err, SL_EINVAL, "`%s` and `%s` both constrain the output: give only one of them", g->field,
                          field);
    }
    g->guide.kind = kind;
    g->field = field;
    return SL_OK;
}

/* ---- the kinds of constraint -------------------------------------------------------------- */

/* v: a schema object, or a string holding one. */
static int set_json(sl_server_guide *g, const char *field, const char *key, const json_t *v, sl_err *err,
                    const char **param) {
    json_t *parsed = NULL;
    if (json_is_string(v)) {
        json_error_t jerr;
        parsed = json_loadb(json_string_value(v), json_string_length(v), 0, &jerr);
        v = parsed;
    }
    int rc = json_is_object(v) ? claim(g, SL_GUIDE_JSON, field, key, err, param)
                               : refuse(err, param, key, SL_EINVAL,
                                        "%s: Input should be a JSON schema (an object, or a string holding one)", field);
    char *gbnf = NULL;
    if (!rc && (rc = sl_json_schema_to_gbnf(v, &gbnf, err))) {
        *param = key;
        sl_err_wrap(err, rc, "%s: ", field);
    }
    free(gbnf);
    if (!rc && !(g->text = json_dumps(v, JSON_COMPACT))) rc = sl_err_set(err, SL_ENOMEM, "out of memory");
    json_decref(parsed);
    g->guide.text = g->text;
    return rc;
}

static int set_regex(sl_server_guide *g, const char *field, const char *key, const json_t *v, sl_err *err,
                     const char **param) {
    if (!json_is_string(v)) return refuse(err, param, key, SL_EINVAL, "%s: Input should be a valid string", field);
    int rc = claim(g, SL_GUIDE_REGEX, field, key, err, param);
    sl_gtext gbnf = {0};
    if (!rc && (rc = sl_regex_to_gbnf(json_string_value(v), json_string_length(v), 0, &gbnf, err))) {
        *param = key;
        sl_err_wrap(err, rc, "%s: ", field);
    }
    sl_gtext_free(&gbnf);
    if (!rc && !(g->text = strndup(json_string_value(v), json_string_length(v))))
        rc = sl_err_set(err, SL_ENOMEM, "out of memory");
    g->guide.text = g->text;
    return rc;
}

static int set_grammar(sl_server_guide *g, const char *field, const char *key, const json_t *v, sl_err *err,
                       const char **param) {
    if (!json_is_string(v) || json_string_length(v) == 0)
        return refuse(err, param, key, SL_EINVAL, "%s: Input should be a grammar in GBNF (a non-empty string)", field);
    int rc = claim(g, SL_GUIDE_GRAMMAR, field, key, err, param);
    if (!rc && !(g->text = strndup(json_string_value(v), json_string_length(v))))
        rc = sl_err_set(err, SL_ENOMEM, "out of memory");
    g->guide.text = g->text;
    return rc;
}

/* The choices stay the request body's strings. */
static int set_choice(sl_server_guide *g, const char *field, const char *key, const json_t *v, sl_err *err,
                      const char **param) {
    size_t n = json_array_size(v), i;
    json_t *e;
    if (!json_is_array(v) || n == 0 || n > INT32_MAX)
        return refuse(err, param, key, SL_EINVAL, "%s: Input should be a non-empty list of strings", field);
    json_array_foreach(v, i, e) if (!json_is_string(e)) {
        *param = key;
        return sl_err_set(err, SL_EINVAL, "%s[%zu]: Input should be a valid string", field, i);
    }
    int rc = claim(g, SL_GUIDE_CHOICE, field, key, err, param);
    if (rc) return rc;
    if (!(g->choices = calloc(n, sizeof *g->choices))) return sl_err_set(err, SL_ENOMEM, "out of memory");
    json_array_foreach(v, i, e) g->choices[i] = json_string_value(e);
    g->guide.choices = g->choices;
    g->guide.n_choices = (int)n;
    return SL_OK;
}

typedef int (*setter)(sl_server_guide *, const char *, const char *, const json_t *, sl_err *, const char **);

/* ---- the fields ------------------------------------------------------------------------------- */

static int parse_response_format(const json_t *body, sl_server_guide *g, sl_err *err, const char **param) {
    static const char key[] = "response_format";
    json_t *rf = json_object_get(body, key), *type = json_object_get(rf, "type");
    if (!rf || json_is_null(rf)) return SL_OK;
    if (!json_is_object(rf)) return refuse(err, param, key, SL_EINVAL, "%s: Input should be a valid dictionary", key);
    if (!json_is_string(type))
        return refuse(err, param, key, SL_EINVAL, "%s.type: Field required: \"text\", \"json_object\" or \"json_schema\"",
                      key);
    const char *t = json_string_value(type);
    if (strcmp(t, "text") == 0) return SL_OK;
    if (strcmp(t, "json_object") == 0) return claim(g, SL_GUIDE_JSON_OBJECT, key, key, err, param);
    if (strcmp(t, "json_schema") != 0)
        return refuse(err, param, key, SL_EINVAL,
                      "%s.type: Input should be \"text\", \"json_object\" or \"json_schema\"", key);
    json_t *js = json_object_get(rf, "json_schema"), *schema = json_object_get(js, "schema");
    json_t *name = json_object_get(js, "name"), *strict = json_object_get(js, "strict");
    if (!json_is_object(js))
        return refuse(err, param, key, SL_EINVAL,
                      "%s.json_schema: Field required (an object with `name` and `schema`) when type is \"json_schema\"",
                      key);
    if (name && !json_is_string(name))
        return refuse(err, param, key, SL_EINVAL, "%s.json_schema.name: Input should be a valid string", key);
    if (strict && !json_is_null(strict) && !json_is_boolean(strict))
        return refuse(err, param, key, SL_EINVAL, "%s.json_schema.strict: Input should be a valid boolean", key);
    if (!schema || json_is_null(schema))
        return refuse(err, param, key, SL_EINVAL, "%s.json_schema.schema: Field required", key);
    return set_json(g, "response_format.json_schema.schema", key, schema, err, param);
}

static int parse_structured_outputs(const json_t *body, sl_server_guide *g, sl_err *err, const char **param) {
    static const char key[] = "structured_outputs";
    static const struct {
        const char *name, *field;
        setter set;
    } kinds[] = {
        {"json", "structured_outputs.json", set_json},
        {"regex", "structured_outputs.regex", set_regex},
        {"choice", "structured_outputs.choice", set_choice},
        {"grammar", "structured_outputs.grammar", set_grammar},
    };
    json_t *so = json_object_get(body, key), *v;
    if (!so || json_is_null(so)) return SL_OK;
    if (!json_is_object(so)) return refuse(err, param, key, SL_EINVAL, "%s: Input should be a valid dictionary", key);
    if ((v = json_object_get(so, "structural_tag")) && !json_is_null(v))
        return refuse(err, param, key, SL_ENOTSUP, "%s.structural_tag is not supported", key);
    int rc;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if ((v = json_object_get(so, kinds[i].name)) && !json_is_null(v) &&
            (rc = kinds[i].set(g, kinds[i].field, key, v, err, param)))
            return rc;
    if ((v = json_object_get(so, "json_object")) && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return refuse(err, param, key, SL_EINVAL, "%s.json_object: Input should be a valid boolean", key);
        if (json_is_true(v)) return claim(g, SL_GUIDE_JSON_OBJECT, "structured_outputs.json_object", key, err, param);
    }
    return SL_OK;
}

/* vLLM's guided_* fields and llama.cpp's json_schema and grammar. */
static int parse_top_level(const json_t *body, sl_server_guide *g, sl_err *err, const char **param) {
    static const struct {
        const char *key;
        setter set;
    } fields[] = {
        {"guided_json", set_json},   {"guided_regex", set_regex}, {"guided_choice", set_choice},
        {"guided_grammar", set_grammar}, {"json_schema", set_json}, {"grammar", set_grammar},
    };
    json_t *v;
    int rc;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if ((v = json_object_get(body, fields[i].key)) && !json_is_null(v) &&
            (rc = fields[i].set(g, fields[i].key, fields[i].key, v, err, param)))
            return rc;
    return SL_OK;
}

int sl_server_guide_parse(const json_t *body, sl_server_guide *g, sl_err *err, const char **param) {
    int rc;
    if ((rc = parse_response_format(body, g, err, param))) return rc;
    if ((rc = parse_structured_outputs(body, g, err, param))) return rc;
    return parse_top_level(body, g, err, param);
}

int sl_server_guide_set_schema(sl_server_guide *g, const char *field, const json_t *schema, sl_err *err,
                               const char **param) {
    return set_json(g, field, field, schema, err, param);
}

void sl_server_guide_free(sl_server_guide *g) {
    free(g->text);
    free(g->choices);
    *g = (sl_server_guide){0};
}
