/* json.c -- typed, error-reporting reads of JSON config files (jansson). */
#include "util/json.h"

int sl_json_load_file(const char *path, json_t **out, sl_err *err) {
    json_error_t jerr;
    *out = json_load_file(path, 0, &jerr);
    if (*out) return SL_OK;
    if (jerr.line <= 0 && jerr.position == 0)
        return sl_err_set(err, SL_ENOTFOUND, "%s: %s", path, jerr.text);
    return sl_err_set(err, SL_EFORMAT, "%s:%d:%d: invalid JSON: %s", path, jerr.line, jerr.column,
                      jerr.text);
}

static const json_t *present(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    return (v && !json_is_null(v)) ? v : NULL;
}

int sl_json_get_int(const json_t *obj, const char *key, int64_t *out, const char *what, sl_err *err) {
    const json_t *v = present(obj, key);
    if (!v) return SL_OK;
    if (!json_is_integer(v))
        return sl_err_set(err, SL_EFORMAT, "%s: \"%s\" must be an integer", what, key);
    *out = (int64_t)json_integer_value(v);
    return SL_OK;
}

int sl_json_get_number(const json_t *obj, const char *key, double *out, const char *what, sl_err *err) {
    const json_t *v = present(obj, key);
    if (!v) return SL_OK;
    if (!json_is_number(v))
        return sl_err_set(err, SL_EFORMAT, "%s: \"%s\" must be a number", what, key);
    *out = json_number_value(v);
    return SL_OK;
}

int sl_json_get_bool(const json_t *obj, const char *key, bool *out, const char *what, sl_err *err) {
    const json_t *v = present(obj, key);
    if (!v) return SL_OK;
    if (!json_is_boolean(v))
        return sl_err_set(err, SL_EFORMAT, "%s: \"%s\" must be true or false", what, key);
    *out = json_is_true(v);
    return SL_OK;
}

int sl_json_get_string(const json_t *obj, const char *key, const char **out, const char *what, sl_err *err) {
    const json_t *v = present(obj, key);
    if (!v) return SL_OK;
    if (!json_is_string(v))
        return sl_err_set(err, SL_EFORMAT, "%s: \"%s\" must be a string", what, key);
    *out = json_string_value(v);
    return SL_OK;
}
