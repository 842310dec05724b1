/* engine.h -- what other layers inside libshardlm may reach of an engine
 * beyond the public API (include/shardlm.h): the tokenizer and the chat
 * template it loaded, for the HTTP server's /tokenize, chat rendering with a
 * request's own template, and token-level validation. */
#ifndef SL_ENGINE_ENGINE_H
#define SL_ENGINE_ENGINE_H

#include "shardlm.h"
#include "template/chat_template.h"
#include "tokenizer/tokenizer.h"

/* Fills the step limits left 0 (the GPU is asked for its memory only then): on a GPU of 70 GB or more 512
 * sequences a step and 8192 tokens offline (2048 serving, where a long prefill chunk would stall every
 * stream's next token); elsewhere 256 and 2048. Measured on an H100, 8B shape, 1000 x (512 in, 256 out):
 * 8,668 output tok/s at 512 / 8192 against 8,132 at 256 / 2048 and 7,688 at vLLM's own H100 defaults
 * (1024 / 16384: more sequences admitted than the KV cache holds as they grow, so preemptions).
 * backend is "cpu" or "cuda" (NULL: the default one). */
void sl_engine_step_defaults(const char *backend, int serving, int *max_num_seqs, int *max_num_batched_tokens);

/* NULL when the model folder has no tokenizer.json (prompt ids only). */
const sl_tokenizer *sl_engine_tokenizer(const sl_engine *e);
/* The compiled chat template (--chat-template, else the model's), or NULL. */
const sl_chat_template *sl_engine_chat_template(const sl_engine *e);
/* bos/eos token strings for chat templates ("" when unknown). */
const char *sl_engine_bos_token(const sl_engine *e);
const char *sl_engine_eos_token(const sl_engine *e);

#endif
