/* pretokenizer.c -- tokenizer.json "pre_tokenizer": Split, ByteLevel,
 * Digits, Metaspace, Whitespace, WhitespaceSplit and Sequence.
 *
 * A pre-tokenizer turns a list of pieces into a finer list. Every splitter
 * first computes `tokenizers`' find_matches segments (matched / not matched
 * ranges covering the piece) and then applies the split behavior (Removed,
 * Isolated, MergedWithPrevious, MergedWithNext, Contiguous) exactly as
 * NormalizedString::split does; empty pieces are dropped. Pieces that are
 * added tokens pass through untouched. Transformations (ByteLevel's byte
 * mapping, Metaspace's replacement) write new text at the end of the arena. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"

static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char *const pre_names[] = {"Sequence", "Split", "ByteLevel", "Digits", "Metaspace",
                                        "Whitespace", "WhitespaceSplit"};
static const char *const behavior_names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                             "MergedWithNext", "Contiguous"};

static int parse_body(const json_t *j, const char *where, sl_tok_pretokenizer *p, sl_err *err) {
    char sub[512];
    const char *s;
    int rc = SL_OK;
    switch (p->kind) {
    case SL_PRE_SEQUENCE: {
        const json_t *arr = json_object_get(j, "pretokenizers");
        if (!json_is_array(arr)) return sl_err_set(err, SL_EFORMAT, "%s.pretokenizers: expected an array", where);
        p->subs = calloc(json_array_size(arr) + 1, sizeof *p->subs);
        if (!p->subs) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
        for (size_t i = 0; i < json_array_size(arr) && !rc; i++) {
            sl_tok_pretokenizer *c;
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", where, i);
            rc = sl_tok_pretokenizer_parse(json_array_get(arr, i), sub, &c, err);
            if (!rc && !c) rc = sl_err_set(err, SL_EFORMAT, "%s: expected an object", sub);
            if (!rc) {
                p->subs[p->n_subs++] = *c;
                free(c);
            }
        }
        return rc;
    }
    case SL_PRE_SPLIT: {
        int k;
        if ((rc = sl_tok_json_name(j, "behavior", where, "Split behavior", behavior_names,
                                   sizeof behavior_names / sizeof *behavior_names, &k, err)))
            return rc;
        p->behavior = (sl_tok_split_behavior)k;
        if ((rc = sl_tok_json_bool(j, "invert", where, &p->invert, err))) return rc;
        snprintf(sub, sizeof sub, "%s.pattern", where);
        return sl_tok_pattern_parse(json_object_get(j, "pattern"), &p->re, sub, err);
    }
    case SL_PRE_BYTELEVEL:
        p->add_prefix_space = p->use_regex = true;
        if ((rc = sl_tok_json_bool(j, "add_prefix_space", where, &p->add_prefix_space, err)) ||
            (rc = sl_tok_json_bool(j, "use_regex", where, &p->use_regex, err)))
            return rc;
        return p->use_regex ? sl_tok_regex_compile(&p->re, gpt2_regex, strlen(gpt2_regex), false, where, err) : SL_OK;
    case SL_PRE_DIGITS:
        return sl_tok_json_bool(j, "individual_digits", where, &p->individual_digits, err);
    case SL_PRE_METASPACE:
        p->split = true;
        if ((rc = sl_tok_json_str(j, "replacement", where, false, &s, err))) return rc;
        if (!s) s = "\xE2\x96\x81";
        if (!*s || (size_t)sl_tok_utf8_len((unsigned char)*s) != strlen(s))
            return sl_err_set(err, SL_EFORMAT, "%s.replacement: expected exactly one character", where);
        sl_tok_utf8_next(s, strlen(s), &p->replacement);
        p->rep_len = sl_utf8_encode(p->replacement, p->rep_utf8);
        if ((rc = sl_tok_json_bool(j, "split", where, &p->split, err))) return rc;
        return sl_tok_prepend_scheme_parse(j, where, &p->prepend_scheme, err);
    default:
        return SL_OK;
    }
}

int sl_tok_pretokenizer_parse(const json_t *j, const char *where, sl_tok_pretokenizer **out,
                              sl_err *err) {
    *out = NULL;
    if (!j || json_is_null(j)) return SL_OK;
    int k;
    int rc = sl_tok_json_name(j, "type", where, "pre_tokenizer type", pre_names, sizeof pre_names / sizeof *pre_names,
                              &k, err);
    if (rc) return rc;
    sl_tok_pretokenizer *p = calloc(1, sizeof *p);
    if (!p) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
    p->kind = (sl_tok_pre_kind)k;
    if ((rc = parse_body(j, where, p, err))) {
        sl_tok_pretokenizer_free(p);
        return rc;
    }
    *out = p;
    return SL_OK;
}

static void pretokenizer_clear(sl_tok_pretokenizer *p) {
    for (size_t i = 0; i < p->n_subs; i++) pretokenizer_clear(&p->subs[i]);
    free(p->subs);
    sl_tok_regex_free(&p->re);
}

void sl_tok_pretokenizer_free(sl_tok_pretokenizer *p) {
    if (!p) return;
    pretokenizer_clear(p);
    free(p);
}

/* ---- splitting ------------------------------------------------------------ */

static int emit(const sl_tok_piece *p, const sl_tok_seg *s, sl_tok_pieces *out) {
    if (s->end <= s->start) return SL_OK;
    sl_tok_piece q = {p->off + s->start, s->end - s->start, -1, p->at_start && s->start == 0};
    return sl_tok_pieces_push(out, q);
}

int sl_tok_split_by_segs(const sl_tok_piece *p, const sl_tok_segs *segs,
                         sl_tok_split_behavior behavior, sl_tok_pieces *out) {
    sl_tok_seg *v = segs->v;
    size_t n = segs->n, w = 0;
    bool prev = false;
    switch (behavior) {
    case SL_SPLIT_ISOLATED:
    case SL_SPLIT_REMOVED:
        for (size_t i = 0; i < n; i++)
            if ((behavior == SL_SPLIT_ISOLATED || !v[i].match) && emit(p, &v[i], out)) return SL_ENOMEM;
        return SL_OK;
    case SL_SPLIT_CONTIGUOUS:
    case SL_SPLIT_MERGED_PREV:
        for (size_t i = 0; i < n; i++) {
            bool merge = behavior == SL_SPLIT_CONTIGUOUS ? v[i].match == prev : (v[i].match && !prev);
            prev = v[i].match;
            if (merge && w > 0) v[w - 1].end = v[i].end;
            else v[w++] = v[i];
        }
        for (size_t i = 0; i < w; i++)
            if (emit(p, &v[i], out)) return SL_ENOMEM;
        return SL_OK;
    case SL_SPLIT_MERGED_NEXT:
        w = n;
        for (size_t i = n; i-- > 0;) {
            bool merge = v[i].match && !prev;
            prev = v[i].match;
            if (merge && w < n) v[w].start = v[i].start;
            else v[--w] = v[i];
        }
        for (size_t i = w; i < n; i++)
            if (emit(p, &v[i], out)) return SL_ENOMEM;
        return SL_OK;
    }
    return SL_EINTERNAL;
}

/* Segments where every char satisfying pred is a match of its own (or, for
 * want == 'c' == the given code point). */
static int char_segments(const char *s, size_t len, bool (*pred)(uint32_t), uint32_t only,
                         sl_tok_segs *segs) {
    segs->n = 0;
    if (len == 0) return sl_tok_segs_push(segs, 0, 0, false);
    size_t last = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = sl_tok_utf8_next(s + i, len - i, &cp);
        if (pred ? pred(cp) : cp == only) {
            if (last < i && sl_tok_segs_push(segs, (uint32_t)last, (uint32_t)i, false)) return SL_ENOMEM;
            if (sl_tok_segs_push(segs, (uint32_t)i, (uint32_t)(i + k), true)) return SL_ENOMEM;
            last = i + (size_t)k;
        }
        i += (size_t)k;
    }
    if (last < len && sl_tok_segs_push(segs, (uint32_t)last, (uint32_t)len, false)) return SL_ENOMEM;
    return SL_OK;
}

/* Whitespace: runs matching \w+|[^\w\s]+ are kept (flagged not-match so
 * that Removed drops the whitespace between them). */
static int whitespace_segments(const char *s, size_t len, sl_tok_segs *segs) {
    segs->n = 0;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t start = i;
        int k = sl_tok_utf8_next(s + i, len - i, &cp);
        int cls = sl_tok_is_word(cp) ? 1 : sl_tok_is_whitespace(cp) ? 0 : 2;
        i += (size_t)k;
        while (i < len) {
            k = sl_tok_utf8_next(s + i, len - i, &cp);
            int c2 = sl_tok_is_word(cp) ? 1 : sl_tok_is_whitespace(cp) ? 0 : 2;
            if (cls == 0 ? c2 != 0 : c2 != cls) break;
            i += (size_t)k;
        }
        if (cls == 0) {
            if (sl_tok_segs_push(segs, (uint32_t)start, (uint32_t)i, true)) return SL_ENOMEM;
        } else if (sl_tok_segs_push(segs, (uint32_t)start, (uint32_t)i, false)) {
            return SL_ENOMEM;
        }
    }
    if (len == 0) return sl_tok_segs_push(segs, 0, 0, false);
    return SL_OK;
}

/* Copies bytes [off, off+len) of the arena, prefixed, to its end. */
static int arena_copy(sl_tok_buf *arena, const char *prefix, size_t plen, uint32_t off, uint32_t len,
                      sl_tok_piece *out) {
    if (sl_tok_buf_reserve(arena, plen + len)) return SL_ENOMEM;
    out->off = (uint32_t)arena->n;
    memcpy(arena->p + arena->n, prefix, plen);
    memmove(arena->p + arena->n + plen, arena->p + off, len);
    arena->n += plen + len;
    out->len = (uint32_t)(plen + len);
    return SL_OK;
}

static int bytelevel_map(sl_tok_buf *arena, sl_tok_piece *p) {
    const sl_tok_bytelevel *bl = sl_tok_bytelevel_table();
    if (sl_tok_buf_reserve(arena, (size_t)p->len * 2)) return SL_ENOMEM;
    const unsigned char *src = (const unsigned char *)arena->p + p->off;
    char *dst = arena->p + arena->n;
    size_t n = 0;
    for (uint32_t i = 0; i < p->len; i++) {
        const char *e = bl->enc[src[i]];
        dst[n] = e[0];
        if (bl->enc_len[src[i]] == 2) dst[++n] = e[1];
        n++;
    }
    p->off = (uint32_t)arena->n;
    p->len = (uint32_t)n;
    arena->n += n;
    return SL_OK;
}

static int bytelevel_piece(const sl_tok_pretokenizer *p, sl_tok_buf *arena, sl_tok_piece piece,
                           sl_tok_pieces *out, sl_tok_scratch *sc, sl_err *err) {
    if (p->add_prefix_space && (piece.len == 0 || arena->p[piece.off] != ' ') &&
        arena_copy(arena, " ", 1, piece.off, piece.len, &piece))
        return SL_ENOMEM;
    size_t first = out->n;
    if (p->use_regex) {
        int rc = sl_tok_regex_segments(&p->re, arena->p + piece.off, piece.len, sc, err);
        if (rc) return rc;
        if (sl_tok_split_by_segs(&piece, &sc->segs, SL_SPLIT_ISOLATED, out)) return SL_ENOMEM;
    } else if (piece.len && sl_tok_pieces_push(out, piece)) {
        return SL_ENOMEM;
    }
    for (size_t i = first; i < out->n; i++)
        if (bytelevel_map(arena, &out->v[i])) return SL_ENOMEM;
    return SL_OK;
}

static int metaspace_piece(const sl_tok_pretokenizer *p, sl_tok_buf *arena, sl_tok_piece piece,
                           sl_tok_pieces *out, sl_tok_scratch *sc) {
    size_t extra = (size_t)piece.len * 3 + 4;
    if (sl_tok_buf_reserve(arena, extra)) return SL_ENOMEM;
    const char *src = arena->p + piece.off;
    char *dst = arena->p + arena->n;
    size_t n = 0;
    bool starts = piece.len >= (uint32_t)p->rep_len && !memcmp(src, p->rep_utf8, (size_t)p->rep_len);
    bool starts_space = piece.len && src[0] == ' ';
    /* after replacing spaces, the text starts with the replacement iff it
     * started with it or with a space */
    bool prepend = !(starts || starts_space) &&
              (p->prepend_scheme == SL_PREPEND_ALWAYS || (p->prepend_scheme == SL_PREPEND_FIRST && piece.at_start));
    if (prepend) {
        memcpy(dst, p->rep_utf8, (size_t)p->rep_len);
        n += (size_t)p->rep_len;
    }
    for (uint32_t i = 0; i < piece.len; i++) {
        if (src[i] == ' ') {
            memcpy(dst + n, p->rep_utf8, (size_t)p->rep_len);
            n += (size_t)p->rep_len;
        } else {
            dst[n++] = src[i];
        }
    }
    piece.off = (uint32_t)arena->n;
    piece.len = (uint32_t)n;
    arena->n += n;
    if (!p->split) return piece.len ? sl_tok_pieces_push(out, piece) : SL_OK;
    if (char_segments(arena->p + piece.off, piece.len, NULL, p->replacement, &sc->segs)) return SL_ENOMEM;
    return sl_tok_split_by_segs(&piece, &sc->segs, SL_SPLIT_MERGED_NEXT, out);
}

static int pretokenize_piece(const sl_tok_pretokenizer *p, sl_tok_buf *arena, sl_tok_piece piece,
                             sl_tok_pieces *out, sl_tok_scratch *sc, sl_err *err) {
    const char *s = arena->p + piece.off;
    int rc;
    switch (p->kind) {
    case SL_PRE_SPLIT:
        if ((rc = sl_tok_regex_segments(&p->re, s, piece.len, sc, err))) return rc;
        if (p->invert)
            for (size_t i = 0; i < sc->segs.n; i++) sc->segs.v[i].match = !sc->segs.v[i].match;
        return sl_tok_split_by_segs(&piece, &sc->segs, p->behavior, out);
    case SL_PRE_DIGITS:
        if (char_segments(s, piece.len, sl_tok_is_numeric, 0, &sc->segs)) return SL_ENOMEM;
        return sl_tok_split_by_segs(&piece, &sc->segs, p->individual_digits ? SL_SPLIT_ISOLATED : SL_SPLIT_CONTIGUOUS, out);
    case SL_PRE_WHITESPACE:
        if (whitespace_segments(s, piece.len, &sc->segs)) return SL_ENOMEM;
        return sl_tok_split_by_segs(&piece, &sc->segs, SL_SPLIT_REMOVED, out);
    case SL_PRE_WHITESPACE_SPLIT:
        if (char_segments(s, piece.len, sl_tok_is_whitespace, 0, &sc->segs)) return SL_ENOMEM;
        return sl_tok_split_by_segs(&piece, &sc->segs, SL_SPLIT_REMOVED, out);
    case SL_PRE_BYTELEVEL:
        return bytelevel_piece(p, arena, piece, out, sc, err);
    case SL_PRE_METASPACE:
        return metaspace_piece(p, arena, piece, out, sc);
    case SL_PRE_SEQUENCE:
        break;
    }
    return SL_EINTERNAL;
}

int sl_tok_pretokenize(const sl_tok_pretokenizer *p, sl_tok_buf *arena, sl_tok_pieces *ps,
                       sl_tok_pieces *tmp, sl_tok_scratch *sc, sl_err *err) {
    if (p->kind == SL_PRE_SEQUENCE) {
        for (size_t i = 0; i < p->n_subs; i++) {
            int rc = sl_tok_pretokenize(&p->subs[i], arena, ps, tmp, sc, err);
            if (rc) return rc;
        }
        return SL_OK;
    }
    tmp->n = 0;
    for (size_t i = 0; i < ps->n; i++) {
        int rc = ps->v[i].id >= 0 ? sl_tok_pieces_push(tmp, ps->v[i])
                                  : pretokenize_piece(p, arena, ps->v[i], tmp, sc, err);
        if (rc) return rc == SL_ENOMEM ? sl_err_set(err, rc, "tokenizer: out of memory pre-tokenizing") : rc;
    }
    sl_tok_pieces t = *ps;
    *ps = *tmp;
    *tmp = t;
    return SL_OK;
}
