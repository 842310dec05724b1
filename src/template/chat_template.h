/* chat_template.h -- a model's chat template, rendered exactly as
 * transformers' apply_chat_template renders it.
 *
 * The template language is Jinja2 as transformers configures it
 * (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls,
 * its tojson, raise_exception and strftime_now). A compiled template is
 * immutable: any number of threads may render it at once. Constructs the
 * interpreter does not implement are compile errors with a line and column,
 * never a silently different prompt. */
#ifndef SL_TEMPLATE_CHAT_TEMPLATE_H
#define SL_TEMPLATE_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stddef.h>

#include "util/error.h"

typedef struct sl_chat_template sl_chat_template;

/* Compiles source (n_bytes long, need not be NUL-terminated). Syntax errors
 * are SL_EINVAL with "chat template line L, column C: ...". */
int sl_chat_template_compile(const char *source, size_t n_bytes, sl_chat_template **out, sl_err *err);
void sl_chat_template_free(sl_chat_template *t);

/* context: a JSON object whose members become the template's variables
 * (messages, tools, add_generation_prompt, bos_token, eos_token, any kwargs).
 * Returns a NUL-terminated *out the caller frees. Errors raised by the
 * template: code SL_EINVAL, message = the raised text (raise_exception's
 * message verbatim; for type and undefined errors, the error followed by the
 * template position). */
int sl_chat_template_render(const sl_chat_template *t, const json_t *context, char **out, size_t *n_bytes,
                            sl_err *err);

/* Finds the model's template: `chat_template.jinja` in model_dir, else
 * tokenizer_config.json "chat_template" (a string, or a list of
 * {"name","template"} -- `name`, or "default" when name is NULL). Fills
 * *source (caller frees) or returns SL_ENOTFOUND with a message that says how
 * to pass one (--chat-template FILE). Also returns the bos/eos token strings
 * of tokenizer_config.json (a string or {"content": ...}) in
 * *bos_token and *eos_token (caller frees; NULL when absent). */
int sl_chat_template_load_source(const char *model_dir, const char *name, char **source, char **bos_token,
                                 char **eos_token, sl_err *err);

#endif
