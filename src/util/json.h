/* json.h -- small helpers over jansson for reading config files with
 * errors that name the file and the field. */
#ifndef SL_UTIL_JSON_H
#define SL_UTIL_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

/* Parses a JSON file; the error names the file, line and column. */
int sl_json_load_file(const char *path, json_t **out, sl_err *err);

/* Typed getters: a missing key leaves *out unchanged and returns SL_OK (use
 * the default); a present key of the wrong type is an SL_EFORMAT error naming
 * `what` (usually the file) and the key. Integers accept only JSON integers;
 * numbers accept integers and reals. */
int sl_json_get_int(const json_t *obj, const char *key, int64_t *out, const char *what, sl_err *err);
int sl_json_get_number(const json_t *obj, const char *key, double *out, const char *what, sl_err *err);
int sl_json_get_bool(const json_t *obj, const char *key, bool *out, const char *what, sl_err *err);
/* *out points into obj (borrowed). */
int sl_json_get_string(const json_t *obj, const char *key, const char **out, const char *what, sl_err *err);

#endif
