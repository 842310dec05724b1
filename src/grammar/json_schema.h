/* json_schema.h -- grammars for structured output: JSON schema, any JSON
 * object, a regex, a list of choices.
 *
 * Each compiler writes GBNF text (rule `root`) and parses it with
 * sl_grammar_parse_gbnf; the *_gbnf forms return that text, for logs and
 * tests. Unsupported schema keywords and regex constructs are errors naming
 * them (SL_ENOTSUP; the server answers 400). Details in json_schema.c and
 * regex.c. */
#ifndef SL_GRAMMAR_JSON_SCHEMA_H
#define SL_GRAMMAR_JSON_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

#include "grammar/grammar.h"
#include "util/error.h"

/* A growing text buffer; a failed allocation sets failed and drops later writes. */
typedef struct sl_gtext {
    char *s;
    size_t n, cap;
    int failed;
} sl_gtext;

void sl_gtext_printf(sl_gtext *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a GBNF "literal". */
void sl_gtext_literal(sl_gtext *b, const char *s, size_t n);
void sl_gtext_free(sl_gtext *b);

/* *gbnf is a fresh NUL-terminated string the caller frees. */
int sl_json_schema_to_gbnf(const json_t *schema, char **gbnf, sl_err *err);
int sl_grammar_from_json_schema(const json_t *schema, sl_grammar **out, sl_err *err);
/* response_format json_object: any JSON value whose top level is an object. */
int sl_grammar_json_object(sl_grammar **out, sl_err *err);
/* Exactly one of the choices (raw text, not JSON). */
int sl_grammar_from_choices(const char *const *choices, size_t n_choices, sl_grammar **out, sl_err *err);

/* Regex -> the body of a GBNF rule (no rule name). json_string: the text is
 * the inside of a JSON string literal, so '"', '\' and newlines appear
 * escaped and other control characters not at all. */
int sl_regex_to_gbnf(const char *re, size_t n, int json_string, sl_gtext *out, sl_err *err);
int sl_grammar_from_regex(const char *re, size_t n, sl_grammar **out, sl_err *err);

#endif
