/* tokenizer_internal.h -- the pieces the tokenizer is built from, shared by
 * its .c files (not a public API).
 *
 * Encoding follows `tokenizers` step by step: added tokens are cut out of
 * the raw text, the rest is normalized (string -> string), pre-tokenized
 * (a list of pieces, each a byte range of an arena), each piece is run
 * through BPE, and the post-processor adds BOS/EOS. Decoding maps ids to
 * token strings and runs the decoder chain over that list of strings.
 *
 * Offsets are not tracked (shardlm never needs them); the one place
 * `tokenizers` consults them (Metaspace prepend_scheme "first") uses the
 * piece's at_start flag instead. */
#ifndef SL_TOKENIZER_INTERNAL_H
#define SL_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/utf8.h"

#include "util/error.h"

/* ---- growable arrays ---------------------------------------------------- */

typedef struct sl_tok_buf {
    char *p;
    size_t n, cap;
} sl_tok_buf;

int sl_tok_buf_reserve(sl_tok_buf *b, size_t extra);
int sl_tok_buf_append(sl_tok_buf *b, const void *s, size_t n);
void sl_tok_buf_free(sl_tok_buf *b);

/* A piece of text being tokenized: bytes [off, off+len) of an arena; id >= 0
 * when it is an added token already (then it is never split again). */
typedef struct sl_tok_piece {
    uint32_t off, len;
    int32_t id;
    bool at_start; /* begins at offset 0 of the original text */
} sl_tok_piece;

typedef struct sl_tok_pieces {
    sl_tok_piece *v;
    size_t n, cap;
} sl_tok_pieces;

int sl_tok_pieces_push(sl_tok_pieces *ps, sl_tok_piece p);
void sl_tok_pieces_free(sl_tok_pieces *ps);

/* `tokenizers`' find_matches: consecutive segments covering a string, each
 * flagged as a pattern match or not. */
typedef struct sl_tok_seg {
    uint32_t start, end;
    bool match;
} sl_tok_seg;

typedef struct sl_tok_segs {
    sl_tok_seg *v;
    size_t n, cap;
} sl_tok_segs;

int sl_tok_segs_push(sl_tok_segs *s, uint32_t start, uint32_t end, bool match);

/* ---- hash maps (tokenizer_map.c) ---------------------------------------- */

/* bytes -> id; keys copied into the map's own arena. */
typedef struct sl_tok_strmap {
    uint32_t *slots; /* index+1 into entries, 0 = empty */
    size_t n_slots;  /* power of two */
    struct sl_tok_strent { uint64_t hash; uint32_t off, len; int32_t id; } *ents;
    size_t n_ents, cap_ents;
    sl_tok_buf keys;
} sl_tok_strmap;

int sl_tok_strmap_init(sl_tok_strmap *m, size_t expected);
void sl_tok_strmap_free(sl_tok_strmap *m);
/* Inserts or overwrites; *key_off receives where the key lives in m->keys. */
int sl_tok_strmap_put(sl_tok_strmap *m, const char *s, size_t len, int32_t id, uint32_t *key_off);
int32_t sl_tok_strmap_get(const sl_tok_strmap *m, const char *s, size_t len); /* -1 if none */

/* uint64 -> uint64 (merge pair -> rank and new id). */
typedef struct sl_tok_u64map {
    uint64_t *keys; /* UINT64_MAX = empty */
    uint64_t *vals;
    size_t n_slots, n;
} sl_tok_u64map;

int sl_tok_u64map_init(sl_tok_u64map *m, size_t expected);
void sl_tok_u64map_free(sl_tok_u64map *m);
int sl_tok_u64map_put(sl_tok_u64map *m, uint64_t key, uint64_t val);
bool sl_tok_u64map_get(const sl_tok_u64map *m, uint64_t key, uint64_t *val);

uint64_t sl_tok_hash(const void *p, size_t n);

/* ---- Unicode helpers (unicode.c) ---------------------------------------- */

/* Decodes one code point of valid UTF-8 at s (len > 0); returns its length. */
int sl_tok_utf8_next(const char *s, size_t len, uint32_t *cp);
bool sl_tok_utf8_valid(const char *s, size_t len);
/* Length of the first char (1 when s[0] is not a valid lead byte). */
int sl_tok_utf8_len(unsigned char lead);
/* Rust's String::from_utf8_lossy: each maximal invalid subpart -> U+FFFD. */
int sl_tok_utf8_lossy(const char *s, size_t len, sl_tok_buf *out);
bool sl_tok_is_whitespace(uint32_t cp); /* Unicode White_Space */
bool sl_tok_is_numeric(uint32_t cp);    /* Rust char::is_numeric: N* */
bool sl_tok_is_word(uint32_t cp);       /* regex \w: alphabetic, marks, Nd, Pc */

/* GPT-2 byte <-> printable char mapping used by the ByteLevel pieces. */
typedef struct sl_tok_bytelevel {
    char enc[256][3];     /* UTF-8 of the char for each byte */
    uint8_t enc_len[256];
    int16_t dec[324];     /* code point -> byte, -1 if not a byte char */
} sl_tok_bytelevel;
extern const sl_tok_bytelevel *sl_tok_bytelevel_table(void);

/* ---- regex (unicode_regex.c) -------------------------------------------- */

typedef struct sl_tok_regex {
    pcre2_code *code; /* NULL for an empty literal, which never matches */
} sl_tok_regex;

/* Per-call match state; one per encode/decode call, never shared. PCRE2's
 * part (md, mctx, jit_stack) is made at the first regex match. */
typedef struct sl_tok_scratch {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    sl_tok_segs segs;
    sl_tok_buf tmp[2];
} sl_tok_scratch;

void sl_tok_scratch_init(sl_tok_scratch *sc);
void sl_tok_scratch_free(sl_tok_scratch *sc);

/* Compiles an Oniguruma-style pattern (as in tokenizer.json) with PCRE2 in
 * UTF+UCP mode with JIT; literal = pattern is a plain string. `where` names
 * the file and JSON path for errors. */
int sl_tok_regex_compile(sl_tok_regex *re, const char *pattern, size_t len, bool literal,
                         const char *where, sl_err *err);
void sl_tok_regex_free(sl_tok_regex *re);
/* Parses {"String": s} or {"Regex": r} into a compiled regex. */
int sl_tok_pattern_parse(const json_t *j, sl_tok_regex *re, const char *where, sl_err *err);
/* Appends the segments of s (offsets relative to s) to sc->segs, which is cleared first. */
int sl_tok_regex_segments(const sl_tok_regex *re, const char *s, size_t len, sl_tok_scratch *sc,
                          sl_err *err);
/* Replaces every match in s with content, writing to out (appended). */
int sl_tok_regex_replace(const sl_tok_regex *re, const char *s, size_t len, const char *content,
                         size_t content_len, sl_tok_scratch *sc, sl_tok_buf *out, sl_err *err);

/* ---- normalizers (normalizer.c) ----------------------------------------- */

typedef enum {
    SL_NORM_SEQUENCE, SL_NORM_NFC, SL_NORM_NFD, SL_NORM_NFKC, SL_NORM_NFKD, SL_NORM_LOWERCASE,
    SL_NORM_STRIP, SL_NORM_PREPEND, SL_NORM_REPLACE
} sl_tok_norm_kind;

typedef struct sl_tok_normalizer {
    sl_tok_norm_kind kind;
    struct sl_tok_normalizer *subs;
    size_t n_subs;
    char *str; /* Prepend text / Replace content */
    size_t str_len;
    sl_tok_regex re; /* Replace pattern */
    bool left, right; /* Strip */
} sl_tok_normalizer;

/* j may be JSON null (no normalizer) -> *out = NULL. */
int sl_tok_normalizer_parse(const json_t *j, const char *where, sl_tok_normalizer **out, sl_err *err);
void sl_tok_normalizer_free(sl_tok_normalizer *n);
/* Normalizes s into out (cleared first); clears *at_start when the text's
 * first chars were removed (Strip, Replace with nothing), as `tokenizers`'
 * offsets would then no longer start at 0. */
int sl_tok_normalize(const sl_tok_normalizer *n, const char *s, size_t len, sl_tok_buf *out,
                     bool *at_start, sl_tok_scratch *sc, sl_err *err);

/* ---- pre-tokenizers (pretokenizer.c) ------------------------------------ */

typedef enum {
    SL_PRE_SEQUENCE, SL_PRE_SPLIT, SL_PRE_BYTELEVEL, SL_PRE_DIGITS, SL_PRE_METASPACE,
    SL_PRE_WHITESPACE, SL_PRE_WHITESPACE_SPLIT
} sl_tok_pre_kind;

typedef enum {
    SL_SPLIT_REMOVED, SL_SPLIT_ISOLATED, SL_SPLIT_MERGED_PREV, SL_SPLIT_MERGED_NEXT,
    SL_SPLIT_CONTIGUOUS
} sl_tok_split_behavior;

typedef enum { SL_PREPEND_ALWAYS, SL_PREPEND_FIRST, SL_PREPEND_NEVER } sl_tok_prepend_scheme;

typedef struct sl_tok_pretokenizer {
    sl_tok_pre_kind kind;
    struct sl_tok_pretokenizer *subs;
    size_t n_subs;
    sl_tok_regex re;        /* Split pattern; ByteLevel's GPT-2 regex */
    sl_tok_split_behavior behavior;
    bool invert;            /* Split */
    bool add_prefix_space;  /* ByteLevel */
    bool use_regex;         /* ByteLevel */
    bool individual_digits; /* Digits */
    uint32_t replacement;   /* Metaspace */
    char rep_utf8[4];
    int rep_len;
    sl_tok_prepend_scheme prepend_scheme;
    bool split;             /* Metaspace */
} sl_tok_pretokenizer;

int sl_tok_pretokenizer_parse(const json_t *j, const char *where, sl_tok_pretokenizer **out,
                              sl_err *err);
void sl_tok_pretokenizer_free(sl_tok_pretokenizer *p);
/* Rewrites *ps (pieces of arena) in place, using *tmp as the second list. */
int sl_tok_pretokenize(const sl_tok_pretokenizer *p, sl_tok_buf *arena, sl_tok_pieces *ps,
                       sl_tok_pieces *tmp, sl_tok_scratch *sc, sl_err *err);
/* Splits piece `p` by the segments in sc->segs (relative to the piece)
 * with the given behavior, appending non-empty pieces to out. */
int sl_tok_split_by_segs(const sl_tok_piece *p, const sl_tok_segs *segs,
                         sl_tok_split_behavior behavior, sl_tok_pieces *out);

/* ---- BPE model (bpe.c) -------------------------------------------------- */

typedef struct sl_tok_bpe {
    sl_tok_strmap vocab;
    sl_tok_u64map merges; /* (left id << 32 | right id) -> (rank << 32 | new id) */
    const char **id_to_token; /* pointers into vocab.keys, n_ids long */
    size_t n_ids;             /* max vocab id + 1 */
    int32_t unk_id;           /* -1 when unk_token is null */
    bool fuse_unk, byte_fallback, ignore_merges;
    char *prefix, *suffix;    /* continuing_subword_prefix / end_of_word_suffix, NULL if absent */
    size_t prefix_len, suffix_len;
    int32_t byte_ids[256];    /* "<0xAB>" ids for byte_fallback, -1 if missing */
    int32_t ascii_ids[128];   /* single-char ids for ASCII when no prefix/suffix, else -2 */
} sl_tok_bpe;

int sl_tok_bpe_parse(const json_t *model, const char *where, sl_tok_bpe *out, sl_err *err);
void sl_tok_bpe_free(sl_tok_bpe *b);

/* Work arrays reused between words of one call. */
typedef struct sl_tok_bpe_work {
    struct sl_tok_sym { int32_t id, prev, next; uint32_t len; } *syms;
    size_t cap_syms;
    struct sl_tok_merge { uint32_t rank; uint32_t pos; int32_t new_id; } *heap;
    size_t cap_heap;
    sl_tok_buf tmp;
} sl_tok_bpe_work;

void sl_tok_bpe_work_free(sl_tok_bpe_work *w);
/* Tokenizes one pre-tokenized piece, appending ids to *ids (grown as needed). */
int sl_tok_bpe_tokenize(const sl_tok_bpe *b, const char *s, size_t len, sl_tok_bpe_work *w,
                        int32_t **ids, size_t *n_ids, size_t *cap_ids);

/* ---- decoders (decoder.c) ----------------------------------------------- */

typedef enum {
    SL_DEC_SEQUENCE, SL_DEC_BYTELEVEL, SL_DEC_BYTEFALLBACK, SL_DEC_FUSE, SL_DEC_STRIP,
    SL_DEC_REPLACE, SL_DEC_METASPACE
} sl_tok_dec_kind;

typedef struct sl_tok_decoder {
    sl_tok_dec_kind kind;
    struct sl_tok_decoder *subs;
    size_t n_subs;
    uint32_t ch; /* Strip content / Metaspace replacement */
    size_t start, stop;
    sl_tok_regex re; /* Replace */
    char *content;
    size_t content_len;
    sl_tok_prepend_scheme prepend_scheme;
} sl_tok_decoder;

int sl_tok_decoder_parse(const json_t *j, const char *where, sl_tok_decoder **out, sl_err *err);
void sl_tok_decoder_free(sl_tok_decoder *d);
/* Runs the decoder over the token strings `ps` (ranges of *arena) and
 * writes the joined text to out (cleared first). d == NULL joins with " ". */
int sl_tok_decode_tokens(const sl_tok_decoder *d, sl_tok_buf *arena, sl_tok_pieces *ps,
                         sl_tok_buf *out, sl_tok_scratch *sc, sl_err *err);

/* The bytes one token's string s stands for in a text, by the chain d's rule
 * (sl_tokenizer_token_bytes); SL_ENOSPACE when more than cap. */
int sl_tok_decoder_token_bytes(const sl_tok_decoder *d, const char *s, size_t len, uint8_t *buf, size_t cap,
                               size_t *n_bytes);

/* ---- whole-tokenizer helpers (tokenizer.c) ------------------------------ */

struct sl_tokenizer;
/* Decodes ids to text (NUL-terminated) into out, cleared first. */
int sl_tok_decode_ids(const struct sl_tokenizer *t, const int32_t *ids, size_t n_ids, bool skip_special,
                      sl_tok_buf *out, sl_err *err);

/* ---- JSON helpers shared by the parsers --------------------------------- */

/* Reads obj[key] as a string (NULL if absent/null), erroring on other types. */
int sl_tok_json_str(const json_t *obj, const char *key, const char *where, bool required,
                    const char **out, sl_err *err);
int sl_tok_json_bool(const json_t *obj, const char *key, const char *where, bool *out, sl_err *err);
/* Reads obj[key], a required string, as an index into names[0..n_names): how
 * every component ("type") and option with a fixed set of values is parsed.
 * An object is required; a name not in the table is an error naming what was
 * read (`what`, e.g. "decoder type") and listing the table: SL_ENOTSUP for a
 * "type" (a component shardlm lacks), SL_EFORMAT for other keys. */
int sl_tok_json_name(const json_t *obj, const char *key, const char *where, const char *what,
                     const char *const *names, size_t n_names, int *out, sl_err *err);
int sl_tok_prepend_scheme_parse(const json_t *j, const char *where, sl_tok_prepend_scheme *out,
                                sl_err *err);

#endif
