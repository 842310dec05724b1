/* tools.c -- `tools` and `tool_choice` of a chat request: what the output
 * must be, and how tool calls are read out of it (tool_parser.c).
 *
 * As vLLM: without tool_choice it is "auto" when tools are given, else
 * "none". "none" leaves the tools in the chat template and reads no calls.
 * "auto" reads calls with the server's --tool-call-parser and needs
 * --enable-auto-tool-choice (otherwise a 400 with vLLM's message); with the
 * hermes and mistral parsers special tokens are kept in the text, since
 * some models mark their call tags special. "required" and a named function
 * work on any model, through structured output: a named function's output
 * is constrained to its parameters schema and returned as one call with
 * those arguments; "required" to a JSON array of at least one
 * {"name": <one of the tools>, "parameters": <its schema>}, returned as
 * those calls. "required" with an empty tools list is "none" (OpenAI's rule).
 *
 * parallel_tool_calls (default true): false allows one call per turn, as
 * OpenAI means it. "required" is then held to an array of exactly one call
 * (a named function is one call anyway); "auto" reads the calls as ever and
 * returns only the first, whole and streamed (vLLM's filter).
 *
 * Shapes are checked as vLLM's protocol checks them, with its messages. */
#include <stdlib.h>
#include <string.h>

#include "grammar/json_schema.h"
#include "server/server_internal.h"

#define NAMED_USAGE "Correct usage: `{\"type\": \"function\", \"function\": {\"name\": \"my_function\"}}`"

/* A 400 about the tool at index i (fmt has one %zu). */
static int bad_tool(sl_err *err, const char **param, const char *fmt, size_t i) {
    *param = "tools";
    return sl_err_set(err, SL_EINVAL, fmt, i);
}

static int bad_choice(sl_err *err, const char **param, const char *msg) {
    *param = "tool_choice";
    return sl_err_set(err, SL_EINVAL, "%s", msg);
}

/* ---- tools ---------------------------------------------------------------------------------- */

/* Each tool is {"type": "function", "function": {"name", "description"?, "parameters"?}}. */
static int check_tools(const json_t *tools, sl_err *err, const char **param) {
    if (!json_is_array(tools)) {
        *param = "tools";
        return sl_err_set(err, SL_EINVAL, "tools: Input should be a valid list");
    }
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *type = json_object_get(t, "type"), *fn = json_object_get(t, "function");
        json_t *name = json_object_get(fn, "name"), *params = json_object_get(fn, "parameters");
        if (!json_is_object(t)) return bad_tool(err, param, "tools[%zu]: Input should be a valid dictionary", i);
        if (type && !(json_is_string(type) && strcmp(json_string_value(type), "function") == 0))
            return bad_tool(err, param, "tools[%zu].type: Input should be 'function'", i);
        if (!json_is_object(fn))
            return bad_tool(err, param, "tools[%zu].function: Field required (an object with `name`)", i);
        if (!json_is_string(name) || json_string_length(name) == 0)
            return bad_tool(err, param, "tools[%zu].function.name: Field required (a non-empty string)", i);
        if (params && !json_is_null(params) && !json_is_object(params))
            return bad_tool(err, param, "tools[%zu].function.parameters: Input should be a valid dictionary", i);
    }
    return SL_OK;
}

static const json_t *tool_params(const json_t *tool) {
    json_t *p = json_object_get(json_object_get(tool, "function"), "parameters");
    return json_is_object(p) ? p : NULL;
}

/* A tool's parameters schema compiles (checked per tool, so the 400 names it). */
static int check_params(const json_t *tools, size_t i, sl_err *err, const char **param) {
    const json_t *p = tool_params(json_array_get(tools, i));
    char *gbnf = NULL;
    int rc = p ? sl_json_schema_to_gbnf(p, &gbnf, err) : SL_OK;
    free(gbnf);
    if (rc) {
        *param = "tools";
        return sl_err_wrap(err, rc, "tools[%zu].function.parameters: ", i);
    }
    return SL_OK;
}

/* ---- the schemas behind "required" and a named function ----------------------------------- */

/* Moves params' $defs / definitions into defs (one map per keyword), as
 * vLLM lifts them, so references to "#/$defs/x" resolve from the root. */
static int lift_defs(json_t *params, json_t *defs, sl_err *err, const char **param) {
    static const char *const keys[] = {"$defs", "definitions"};
    for (int k = 0; k < 2; k++) {
        json_t *mine = json_object_get(params, keys[k]), *v;
        const char *name;
        if (!json_is_object(mine)) continue;
        json_t *all = json_object_get(defs, keys[k]);
        if (!all) json_object_set_new(defs, keys[k], all = json_object());
        json_object_foreach(mine, name, v) {
            json_t *seen = json_object_get(all, name);
            if (seen && !json_equal(seen, v)) {
                *param = "tools";
                return sl_err_set(err, SL_EINVAL, "Tool definition '%s' has multiple schemas, which is not supported.",
                                  name);
            }
            json_object_set(all, name, v);
        }
        json_object_del(params, keys[k]);
    }
    return SL_OK;
}

/* {"type": "array", "minItems": 1, "items": {"anyOf": [{"type": "object", "properties":
 *  {"name": {"type": "string", "enum": [NAME]}, "parameters": PARAMS}, "required": ["name", "parameters"]}, ...]}},
 * with "maxItems": 1 when the calls may not be parallel. */
static int required_schema(const json_t *tools, int parallel, json_t **out, sl_err *err, const char **param) {
    json_t *any = json_array(), *schema = json_pack("{s:s, s:i, s:{s:o}}", "type", "array", "minItems", 1, "items",
                                                    "anyOf", any);
    size_t i;
    json_t *t;
    int rc = schema ? SL_OK : sl_err_set(err, SL_ENOMEM, "out of memory");
    if (!rc && !parallel && json_object_set_new(schema, "maxItems", json_integer(1)))
        rc = sl_err_set(err, SL_ENOMEM, "out of memory");
    json_array_foreach(tools, i, t) {
        if (rc) break;
        const json_t *p = tool_params(t);
        json_t *params = p ? json_deep_copy(p) : json_pack("{s:s, s:{}}", "type", "object", "properties");
        json_t *name = json_object_get(json_object_get(t, "function"), "name");
        if (!params) rc = sl_err_set(err, SL_ENOMEM, "out of memory");
        if (!rc) rc = lift_defs(params, schema, err, param);
        json_t *member = rc ? NULL : json_pack("{s:s, s:{s:{s:s, s:[O]}, s:O}, s:[s, s]}", "type", "object",
                                               "properties", "name", "type", "string", "enum", name, "parameters",
                                               params, "required", "name", "parameters");
        if (!rc && (!member || json_array_append_new(any, member))) rc = sl_err_set(err, SL_ENOMEM, "out of memory");
        json_decref(params);
    }
    if (rc) json_decref(schema);
    else *out = schema;
    return rc;
}

static int named_schema(const json_t *tool, json_t **out, sl_err *err) {
    const json_t *p = tool_params(tool);
    *out = p ? json_incref((json_t *)p) : json_pack("{s:s, s:{}}", "type", "object", "properties");
    return *out ? SL_OK : sl_err_set(err, SL_ENOMEM, "out of memory");
}

/* ---- tool_choice ---------------------------------------------------------------------------- */

/* {"type": "function", "function": {"name": NAME}}: the index of NAME in tools. */
static int named_choice(const json_t *choice, const json_t *tools, size_t *index, sl_err *err, const char **param) {
    json_t *type = json_object_get(choice, "type"), *fn = json_object_get(choice, "function");
    json_t *name = json_object_get(fn, "name");
    *param = "tool_choice";
    if (type && !(json_is_string(type) && strcmp(json_string_value(type), "function") == 0))
        return sl_err_set(err, SL_EINVAL, "Invalid value for `type` in `tool_choice`! %s", NAMED_USAGE);
    if (!json_is_object(fn)) return sl_err_set(err, SL_EINVAL, "Invalid value for `function` in `tool_choice`! %s",
                                               NAMED_USAGE);
    if (!name) return sl_err_set(err, SL_EINVAL, "Expected field `name` in `function` in `tool_choice`! %s", NAMED_USAGE);
    if (!json_is_string(name) || json_string_length(name) == 0)
        return sl_err_set(err, SL_EINVAL, "Invalid `name` in `function` in `tool_choice`! %s", NAMED_USAGE);
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        if (json_equal(json_object_get(json_object_get(t, "function"), "name"), name)) {
            *index = i;
            *param = NULL;
            return SL_OK;
        }
    }
    return sl_err_set(err, SL_EINVAL, "The tool specified in `tool_choice` does not match any of the specified `tools`");
}

/* The mode tool_choice asks for (a named function's index in *named). */
static int choice_mode(const sl_server *s, const json_t *body, const json_t *tools, sl_tools_mode *mode,
                       size_t *named, sl_err *err, const char **param) {
    json_t *choice = json_object_get(body, "tool_choice");
    int given = choice && !json_is_null(choice);
    const char *word = json_is_string(choice) ? json_string_value(choice) : NULL;
    size_t n_tools = json_array_size(tools);
    *mode = SL_TOOLS_NONE;
    if (!given) word = n_tools ? "auto" : "none";
    if (word && strcmp(word, "none") == 0) return SL_OK;
    if (given && !tools) return bad_choice(err, param, "When using `tool_choice`, `tools` must be set.");
    if (json_is_object(choice)) {
        *mode = SL_TOOLS_NAMED;
        return named_choice(choice, tools, named, err, param);
    }
    if (word && strcmp(word, "auto") == 0) {
        if (!s->auto_tools)
            return bad_choice(err, param, "\"auto\" tool choice requires --enable-auto-tool-choice and "
                                          "--tool-call-parser to be set");
        *mode = n_tools ? SL_TOOLS_AUTO : SL_TOOLS_NONE;
        return SL_OK;
    }
    if (word && strcmp(word, "required") == 0) {
        *mode = n_tools ? SL_TOOLS_REQUIRED : SL_TOOLS_NONE;
        return SL_OK;
    }
    *param = "tool_choice";
    char *shown = json_dumps(choice, JSON_ENCODE_ANY | JSON_COMPACT);
    int rc = sl_err_set(err, SL_EINVAL, "Invalid value for `tool_choice`: %.200s! Only named tools, \"none\", \"auto\" "
                                        "or \"required\" are supported.", word ? word : shown ? shown : "?");
    free(shown);
    return rc;
}

/* parallel_tool_calls: a boolean, true when absent or null. */
static int parallel_calls(const json_t *body, int *parallel, sl_err *err, const char **param) {
    json_t *v = json_object_get(body, "parallel_tool_calls");
    *parallel = 1;
    if (!v || json_is_null(v)) return SL_OK;
    if (!json_is_boolean(v)) {
        *param = "parallel_tool_calls";
        return sl_err_set(err, SL_EINVAL, "parallel_tool_calls: Input should be a valid boolean");
    }
    *parallel = json_is_true(v);
    return SL_OK;
}

/* The schema a forced call is constrained to, into the request's guide. */
static int force_calls(const json_t *tools, sl_tools_mode mode, size_t named, int parallel, sl_server_guide *g,
                       sl_err *err, const char **param) {
    json_t *schema = NULL;
    int rc = SL_OK;
    for (size_t i = 0; !rc && i < json_array_size(tools); i++)
        if (mode == SL_TOOLS_REQUIRED || i == named) rc = check_params(tools, i, err, param);
    if (!rc) rc = mode == SL_TOOLS_REQUIRED ? required_schema(tools, parallel, &schema, err, param)
                                            : named_schema(json_array_get(tools, named), &schema, err);
    if (!rc) rc = sl_server_guide_set_schema(g, "tool_choice", schema, err, param);
    json_decref(schema);
    return rc;
}

int sl_server_tools_parse(const sl_server *s, const json_t *body, sl_server_params *p, sl_err *err,
                          const char **param) {
    sl_server_tools *t = &p->tools;
    json_t *tools = json_object_get(body, "tools");
    if (json_is_null(tools)) tools = NULL;
    size_t named = 0;
    int parallel;
    int rc = parallel_calls(body, &parallel, err, param);
    if (!rc && tools) rc = check_tools(tools, err, param);
    if (!rc) rc = choice_mode(s, body, tools, &t->mode, &named, err, param);
    if (rc) return rc;
    if (t->mode == SL_TOOLS_REQUIRED || t->mode == SL_TOOLS_NAMED) {
        if ((rc = force_calls(tools, t->mode, named, parallel, &p->guide, err, param))) return rc;
    }
    t->first_only = !parallel;
    switch (t->mode) {
    case SL_TOOLS_NONE: return SL_OK;
    case SL_TOOLS_AUTO:
        t->format = s->tool_format;
        if (t->format == SL_TOOL_HERMES || t->format == SL_TOOL_MISTRAL) p->sampling.skip_special_tokens = 0;
        return SL_OK;
    case SL_TOOLS_REQUIRED: t->format = SL_TOOL_REQUIRED; return SL_OK;
    case SL_TOOLS_NAMED: break;
    }
    t->format = SL_TOOL_NAMED;
    json_t *name = json_object_get(json_object_get(json_array_get(tools, named), "function"), "name");
    if (!(t->function = strdup(json_string_value(name)))) return sl_err_set(err, SL_ENOMEM, "out of memory");
    return SL_OK;
}

void sl_server_tools_free(sl_server_tools *t) {
    free(t->function);
    *t = (sl_server_tools){0};
}
