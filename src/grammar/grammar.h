/* grammar.h -- context-free grammars over bytes, for constrained decoding.
 *
 * A grammar is a list of rules; a rule is a list of alternatives; an
 * alternative is a sequence of elements, each either a byte class (a set of
 * bytes, matching one byte) or a reference to a rule. Literals are sequences
 * of one-byte classes; Unicode classes become helper rules whose
 * alternatives are UTF-8 byte sequences; repetition becomes helper rules:
 * x? and x* / x+ (left recursion) as plain rules, every other count x{m,n}
 * a counted repetition rule (its one alternative is x; the matcher carries
 * how many copies its item has read, so a bound of 10000 costs one rule).
 *
 * Building: sl_grammar_create, then rules by name (sl_grammar_rule) or fresh
 * helpers (sl_grammar_rule_new), alternatives from caller-owned sequences
 * (sl_gseq), then sl_grammar_finalize, which checks every referenced rule is
 * defined, drops alternatives that can never match, and lays the grammar out
 * for the matcher: each rule's alternatives contiguous, each alternative's
 * elements followed by an END element naming its rule, so a parse position
 * ("dot") is simply an index into elems[].
 *
 * Front ends: sl_grammar_parse_gbnf (llama.cpp's GBNF, gbnf.c),
 * sl_grammar_parse_lark (Lark, lark.c), sl_grammar_parse_any (either, for
 * requests) and the JSON schema / json_object / regex / choice compilers
 * (json_schema.h). */
#ifndef SL_GRAMMAR_H
#define SL_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

/* Limits that keep a hostile grammar from taking unbounded memory/time. */
#define SL_GRAMMAR_MAX_ELEMS (1u << 22)  /* elements after expansion */
#define SL_GRAMMAR_MAX_REPEAT 10000      /* the largest m or n in {m,n} */

typedef struct sl_gclass {
    uint64_t bits[4]; /* bit b set: byte b matches */
} sl_gclass;

enum { SL_GELEM_CLASS = 0, SL_GELEM_RULE = 1, SL_GELEM_END = 2 };

typedef struct sl_gelem {
    uint32_t kind;  /* SL_GELEM_* */
    uint32_t value; /* class index, rule index (RULE and END) */
} sl_gelem;

typedef struct sl_galt {
    uint32_t rule;
    uint32_t first_elem; /* elems[first_elem .. +n_elems) then an END element */
    uint32_t n_elems;
} sl_galt;

typedef struct sl_grule {
    char *name;          /* owned */
    uint32_t first_alt;  /* after finalize: alts[first_alt .. +n_alts) */
    uint32_t n_alts;
    uint32_t ref_pos;    /* source offset of the first reference (for errors) */
    bool defined;        /* has a definition (or is a helper) */
    bool nullable;       /* derives the empty string */
    bool productive;     /* derives some string */
    bool repeat;         /* a counted repetition: its one alternative x, read rep_min..rep_max times */
    uint32_t rep_min;
    uint32_t rep_max;    /* UINT32_MAX: no bound */
} sl_grule;

typedef struct sl_grammar {
    sl_gclass *classes;
    uint32_t n_classes, cap_classes;
    sl_gelem *elems;
    uint32_t n_elems, cap_elems;
    sl_galt *alts;
    uint32_t n_alts, cap_alts;
    sl_grule *rules;
    uint32_t n_rules, cap_rules;
    uint32_t root;
    uint32_t n_helpers; /* counter for fresh helper names */
    bool finalized;
} sl_grammar;

/* A sequence of elements under construction (owned by whoever builds it). */
typedef struct sl_gseq {
    sl_gelem *v;
    uint32_t n, cap;
} sl_gseq;

int sl_gseq_push(sl_gseq *s, sl_gelem e, sl_err *err);
void sl_gseq_free(sl_gseq *s);

static inline bool sl_gclass_has(const sl_gclass *c, uint8_t b) {
    return (c->bits[b >> 6] >> (b & 63)) & 1;
}
static inline void sl_gclass_add_range(sl_gclass *c, unsigned lo, unsigned hi) {
    for (unsigned b = lo; b <= hi && b < 256; b++) c->bits[b >> 6] |= 1ull << (b & 63);
}

int sl_grammar_create(sl_grammar **out, sl_err *err);
void sl_grammar_free(sl_grammar *g);

/* The rule called name (created undefined if new); pos is the source offset
 * of this mention, kept for "undefined rule" errors. */
int sl_grammar_rule(sl_grammar *g, const char *name, size_t name_len, uint32_t pos, uint32_t *rule,
                    sl_err *err);
/* A fresh helper rule named "<base>#<n>", already marked defined. */
int sl_grammar_rule_new(sl_grammar *g, const char *base, uint32_t *rule, sl_err *err);
int sl_grammar_add_alt(sl_grammar *g, uint32_t rule, const sl_gelem *elems, uint32_t n, sl_err *err);

/* A one-byte class element. */
int sl_grammar_class(sl_grammar *g, const sl_gclass *c, sl_gelem *out, sl_err *err);
/* Appends the bytes of s as one-byte classes. */
int sl_grammar_push_literal(sl_grammar *g, sl_gseq *seq, const uint8_t *s, size_t n, sl_err *err);
/* An element matching one code point (UTF-8 encoded) inside the union of
 * ranges[2i]..ranges[2i+1] (inclusive), or outside it when negate; surrogates
 * never match. */
int sl_grammar_codepoints(sl_grammar *g, const uint32_t *ranges, size_t n_ranges, bool negate,
                          sl_gelem *out, sl_err *err);
/* An element matching seq repeated min..max times (max UINT32_MAX: no bound);
 * counts other than ?, *, + and {1} become one counted repetition rule. */
int sl_grammar_repeat(sl_grammar *g, const sl_gelem *seq, uint32_t n, uint32_t min, uint32_t max,
                      sl_gelem *out, sl_err *err);

/* Checks and lays out the grammar (see the top comment); root names the start rule. */
int sl_grammar_finalize(sl_grammar *g, const char *root, sl_err *err);

/* GBNF text (llama.cpp syntax) -> a finalized grammar whose start rule is
 * `root`. Errors say "line L, column C: ...". */
int sl_grammar_parse_gbnf(const char *text, size_t n_bytes, sl_grammar **out, sl_err *err);

/* Lark grammar text (the subset lark.c's top comment lists; %import common
 * and %ignore included) -> a finalized grammar whose start rule is `start`.
 * Errors say "line L, column C: ..."; constructs outside the subset
 * (templates, %declare, %override, %extend, other imports) are SL_ENOTSUP
 * naming the construct. */
int sl_grammar_parse_lark(const char *text, size_t n_bytes, sl_grammar **out, sl_err *err);

/* A request's grammar in either syntax: GBNF when some line defines a rule
 * with "::=", Lark otherwise. The error names the syntax tried, why, and
 * the line and column. */
int sl_grammar_parse_any(const char *text, size_t n_bytes, sl_grammar **out, sl_err *err);

/* UTF-8 encoding of cp into buf (4 bytes); returns its length. */
int sl_grammar_utf8_encode(uint32_t cp, uint8_t *buf);

#endif
