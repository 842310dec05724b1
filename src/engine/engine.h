/* engine.h -- what other layers inside libshardlm may reach of an engine
 * beyond the public API (include/shardlm.h): the tokenizer and the chat
 * template it loaded, for the HTTP server's /tokenize, chat rendering with a
 * request's own template, and token-level validation. */
#ifndef SL_ENGINE_ENGINE_H
#define SL_ENGINE_ENGINE_H

#include "shardlm.h"
#include "template/chat_template.h"
#include "tokenizer/tokenizer.h"

/* NULL when the model folder has no tokenizer.json (prompt ids only). */
const sl_tokenizer *sl_engine_tokenizer(const sl_engine *e);
/* The compiled chat template (--chat-template, else the model's), or NULL. */
const sl_chat_template *sl_engine_chat_template(const sl_engine *e);
/* bos/eos token strings for chat templates ("" when unknown). */
const char *sl_engine_bos_token(const sl_engine *e);
const char *sl_engine_eos_token(const sl_engine *e);

#endif
