/* tokenizer.h -- text <-> token ids, exactly as Hugging Face `tokenizers`.
 *
 * Loads a `tokenizer.json` (BPE model, normalizers, pre-tokenizers,
 * post-processor, decoders, added tokens) plus the bos/eos names from
 * `tokenizer_config.json` / `special_tokens_map.json` / `generation_config.json`,
 * and encodes/decodes with the same ids and text as `tokenizers` 0.23.
 *
 * Thread safety: a loaded sl_tokenizer is immutable; any number of threads
 * may call encode/decode/lookups on it at once. An sl_detokenizer belongs to
 * one stream (one thread at a time).
 *
 * Input text must be valid UTF-8 (SL_EINVAL otherwise). Unknown ids in
 * decode are skipped, as `tokenizers` does; negative ids are SL_EINVAL. */
#ifndef SL_TOKENIZER_H
#define SL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

typedef struct sl_tokenizer sl_tokenizer;

/* model_dir holds tokenizer.json and optionally tokenizer_config.json,
 * special_tokens_map.json, generation_config.json. */
int sl_tokenizer_load(const char *model_dir, sl_tokenizer **out, sl_err *err);
/* Only tokenizer.json (+ tokenizer_config.json beside it, if present). */
int sl_tokenizer_load_file(const char *tokenizer_json_path, sl_tokenizer **out, sl_err *err);
void sl_tokenizer_free(sl_tokenizer *t);

/* *ids is a fresh heap array the caller frees (may be NULL when *n_ids is 0). */
int sl_tokenizer_encode(const sl_tokenizer *t, const char *text, size_t n_bytes,
                        bool add_special_tokens, int32_t **ids, size_t *n_ids, sl_err *err);
/* *text is a fresh NUL-terminated heap string the caller frees. */
int sl_tokenizer_decode(const sl_tokenizer *t, const int32_t *ids, size_t n_ids,
                        bool skip_special_tokens, char **text, size_t *n_bytes, sl_err *err);

size_t sl_tokenizer_vocab_size(const sl_tokenizer *t); /* incl. added tokens: max id + 1 */
int32_t sl_tokenizer_token_to_id(const sl_tokenizer *t, const char *token); /* -1 if none */
const char *sl_tokenizer_id_to_token(const sl_tokenizer *t, int32_t id);  /* NULL if none */
bool sl_tokenizer_is_special(const sl_tokenizer *t, int32_t id);
/* The bytes token id stands for inside a text (what a grammar matches): the
 * ByteLevel decoders' characters mapped back to bytes, a byte-fallback
 * token <0xHH> as its one byte, and otherwise the token's string with the
 * Metaspace / Replace decoders' U+2581 as a space. A token that is only part
 * of a UTF-8 character gives those raw bytes. Writes at most cap bytes;
 * SL_ENOSPACE when the token is longer, SL_EINVAL for an unknown id. */
int sl_tokenizer_token_bytes(const sl_tokenizer *t, int32_t id, uint8_t *buf, size_t cap, size_t *n_bytes,
                             sl_err *err);
/* -1 / NULL when the model has none. */
int32_t sl_tokenizer_bos_id(const sl_tokenizer *t);
int32_t sl_tokenizer_eos_id(const sl_tokenizer *t);
const char *sl_tokenizer_bos_token(const sl_tokenizer *t);
const char *sl_tokenizer_eos_token(const sl_tokenizer *t);

/* Incremental detokenization: push ids one at a time and get the text that
 * became final (never half a UTF-8 character); the concatenation of all
 * pieces plus finish equals sl_tokenizer_decode of all ids (same
 * skip_special_tokens) for every id sequence whose full decode is valid
 * text. Works like vLLM/HF streaming: decode a window of earlier tokens
 * plus the new ones and emit the new suffix once it does not end in an
 * incomplete character (U+FFFD). */
typedef struct sl_detokenizer sl_detokenizer;
int sl_detokenizer_create(const sl_tokenizer *t, bool skip_special_tokens, sl_detokenizer **out,
                          sl_err *err);
/* *piece is owned by d and valid until the next call; may be empty. */
int sl_detokenizer_push(sl_detokenizer *d, int32_t id, char **piece, size_t *n_bytes, sl_err *err);
/* Context before the stream (a prompt): the pieces that follow are those
 * pushing ids one at a time would give, with the context's own text dropped,
 * wherever the context does not end in over 32 tokens of one unfinished
 * character; only its last 32 tokens are decoded, so a long prompt costs what
 * a short one does. */
int sl_detokenizer_prime(sl_detokenizer *d, const int32_t *ids, size_t n, sl_err *err);
/* Flushes what is left (after this, the stream starts over). */
int sl_detokenizer_finish(sl_detokenizer *d, char **piece, size_t *n_bytes, sl_err *err);
void sl_detokenizer_free(sl_detokenizer *d);

#endif
