/* bpe.c -- the BPE model of tokenizer.json, as `tokenizers`' models::bpe.
 *
 * Loading builds a string -> id map of the vocabulary and a map from a pair
 * of ids to (merge rank, merged id). Tokenizing one pre-tokenized piece
 * starts with one symbol per character (with continuing_subword_prefix /
 * end_of_word_suffix, byte_fallback to <0xAB> tokens, and unk / fuse_unk
 * for characters not in the vocabulary; with no unk they are dropped), then
 * merges with a min-heap on (rank, position) over a linked list of symbols,
 * skipping stale heap entries exactly as Word::merge_all does, so ties and
 * overlapping pairs resolve the same way. ignore_merges looks the whole
 * piece up first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"

static int parse_vocab(const json_t *vocab, const char *where, sl_tok_bpe *b, sl_err *err) {
    if (!json_is_object(vocab)) return sl_err_set(err, SL_EFORMAT, "%s.vocab: missing or not an object", where);
    if (sl_tok_strmap_init(&b->vocab, json_object_size(vocab))) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
    const char *key;
    const json_t *v;
    int64_t max_id = -1;
    json_object_foreach((json_t *)vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX - 1)
            return sl_err_set(err, SL_EFORMAT, "%s.vocab[\"%s\"]: expected a non-negative integer id", where, key);
        int64_t id = json_integer_value(v);
        if (id > max_id) max_id = id;
    }
    b->n_ids = (size_t)(max_id + 1);
    b->id_to_token = calloc(b->n_ids + 1, sizeof *b->id_to_token);
    uint32_t *offs = malloc((b->n_ids + 1) * sizeof *offs);
    if (!b->id_to_token || !offs) {
        free(offs);
        return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
    }
    memset(offs, 0xff, (b->n_ids + 1) * sizeof *offs);
    json_object_foreach((json_t *)vocab, key, v) {
        /* jansson keys are NUL-terminated; a token with an embedded NUL
         * cannot be represented and is rejected by the JSON parser. */
        int32_t id = (int32_t)json_integer_value(v);
        if (sl_tok_strmap_put(&b->vocab, key, strlen(key), id, &offs[id])) {
            free(offs);
            return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
        }
    }
    for (size_t i = 0; i < b->n_ids; i++)
        b->id_to_token[i] = offs[i] == UINT32_MAX ? NULL : b->vocab.keys.p + offs[i];
    free(offs);
    return SL_OK;
}

static int merge_parts(const json_t *m, const char *where, size_t i, const char **a, size_t *alen,
                       const char **bb, size_t *blen, sl_err *err) {
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        const char *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return sl_err_set(err, SL_EFORMAT, "%s.merges[%zu]: \"%s\" is not two tokens separated by one space", where, i, s);
        *a = s;
        *alen = (size_t)(sp - s);
        *bb = sp + 1;
        *blen = strlen(sp + 1);
        return SL_OK;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *alen = json_string_length(json_array_get(m, 0));
        *bb = json_string_value(json_array_get(m, 1));
        *blen = json_string_length(json_array_get(m, 1));
        return SL_OK;
    }
    return sl_err_set(err, SL_EFORMAT, "%s.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", where, i);
}

static int parse_merges(const json_t *merges, const char *where, sl_tok_bpe *b, sl_err *err) {
    if (!json_is_array(merges)) return sl_err_set(err, SL_EFORMAT, "%s.merges: missing or not an array", where);
    size_t n = json_array_size(merges);
    if (sl_tok_u64map_init(&b->merges, n)) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
    sl_tok_buf joined = {0};
    int rc = SL_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        const char *a = NULL, *c = NULL;
        size_t alen = 0, clen = 0;
        if ((rc = merge_parts(json_array_get(merges, i), where, i, &a, &alen, &c, &clen, err))) break;
        int32_t ia = sl_tok_strmap_get(&b->vocab, a, alen), ic = sl_tok_strmap_get(&b->vocab, c, clen);
        if (ia < 0 || ic < 0) {
            rc = sl_err_set(err, SL_EFORMAT, "%s.merges[%zu]: token \"%.*s\" is not in the vocabulary", where, i,
                            (int)(ia < 0 ? alen : clen), ia < 0 ? a : c);
            break;
        }
        if (clen < b->prefix_len) {
            rc = sl_err_set(err, SL_EFORMAT, "%s.merges[%zu]: \"%.*s\" is shorter than continuing_subword_prefix", where, i, (int)clen, c);
            break;
        }
        joined.n = 0;
        if (sl_tok_buf_append(&joined, a, alen) || sl_tok_buf_append(&joined, c + b->prefix_len, clen - b->prefix_len)) {
            rc = sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
            break;
        }
        int32_t inew = sl_tok_strmap_get(&b->vocab, joined.p, joined.n);
        if (inew < 0) {
            rc = sl_err_set(err, SL_EFORMAT, "%s.merges[%zu]: merged token \"%s\" is not in the vocabulary", where, i, joined.p);
            break;
        }
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ic;
        if (sl_tok_u64map_put(&b->merges, key, ((uint64_t)i << 32) | (uint32_t)inew))
            rc = sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
    }
    sl_tok_buf_free(&joined);
    return rc;
}

static int opt_string(const json_t *model, const char *key, const char *where, char **out, size_t *len, sl_err *err) {
    const char *s;
    int rc = sl_tok_json_str(model, key, where, false, &s, err);
    if (rc || !s) return rc;
    if (!(*out = strdup(s))) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
    *len = strlen(s);
    return SL_OK;
}

static int parse_model(const json_t *model, const char *where, sl_tok_bpe *b, sl_err *err) {
    const char *type = NULL, *unk = NULL;
    int rc;
    if (!json_is_object(model)) return sl_err_set(err, SL_EFORMAT, "%s: missing or not an object", where);
    if ((rc = sl_tok_json_str(model, "type", where, false, &type, err))) return rc;
    if (type && strcmp(type, "BPE"))
        return sl_err_set(err, SL_ENOTSUP, "%s.type: model \"%s\" is not supported (supported: BPE)", where, type);
    if (!type && !json_object_get(model, "merges"))
        return sl_err_set(err, SL_ENOTSUP, "%s: model without \"type\" and without merges is not supported (supported: BPE)", where);
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return sl_err_set(err, SL_ENOTSUP, "%s.dropout: BPE dropout is not supported (set it to null)", where);
    if ((rc = sl_tok_json_bool(model, "fuse_unk", where, &b->fuse_unk, err)) ||
        (rc = sl_tok_json_bool(model, "byte_fallback", where, &b->byte_fallback, err)) ||
        (rc = sl_tok_json_bool(model, "ignore_merges", where, &b->ignore_merges, err)) ||
        (rc = sl_tok_json_str(model, "unk_token", where, false, &unk, err)) ||
        (rc = opt_string(model, "continuing_subword_prefix", where, &b->prefix, &b->prefix_len, err)) ||
        (rc = opt_string(model, "end_of_word_suffix", where, &b->suffix, &b->suffix_len, err)) ||
        (rc = parse_vocab(json_object_get(model, "vocab"), where, b, err)) ||
        (rc = parse_merges(json_object_get(model, "merges"), where, b, err)))
        return rc;
    if (unk && (b->unk_id = sl_tok_strmap_get(&b->vocab, unk, strlen(unk))) < 0)
        return sl_err_set(err, SL_EFORMAT, "%s.unk_token: \"%s\" is not in the vocabulary", where, unk);
    return SL_OK;
}

int sl_tok_bpe_parse(const json_t *model, const char *where, sl_tok_bpe *b, sl_err *err) {
    memset(b, 0, sizeof *b);
    b->unk_id = -1;
    int rc = parse_model(model, where, b, err);
    if (rc) {
        sl_tok_bpe_free(b);
        return rc;
    }
    for (int i = 0; i < 256; i++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", i);
        b->byte_ids[i] = sl_tok_strmap_get(&b->vocab, name, 6);
    }
    bool plain = b->prefix_len == 0 && b->suffix_len == 0;
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        b->ascii_ids[c] = plain ? sl_tok_strmap_get(&b->vocab, &ch, 1) : -2;
    }
    return SL_OK;
}

void sl_tok_bpe_free(sl_tok_bpe *b) {
    sl_tok_strmap_free(&b->vocab);
    if (b->merges.keys || b->merges.vals) sl_tok_u64map_free(&b->merges);
    free(b->id_to_token);
    free(b->prefix);
    free(b->suffix);
    memset(b, 0, sizeof *b);
    b->unk_id = -1;
}

void sl_tok_bpe_work_free(sl_tok_bpe_work *w) {
    free(w->syms);
    free(w->heap);
    sl_tok_buf_free(&w->tmp);
    memset(w, 0, sizeof *w);
}

/* ---- tokenizing ------------------------------------------------------------ */

static int push_id(int32_t **ids, size_t *n, size_t *cap, int32_t id) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        int32_t *p = realloc(*ids, c * sizeof *p);
        if (!p) return SL_ENOMEM;
        *ids = p;
        *cap = c;
    }
    (*ids)[(*n)++] = id;
    return SL_OK;
}

static int add_sym(sl_tok_bpe_work *w, size_t *n, int32_t id, uint32_t len) {
    if (*n == w->cap_syms) {
        size_t c = w->cap_syms ? w->cap_syms * 2 : 64;
        struct sl_tok_sym *p = realloc(w->syms, c * sizeof *p);
        if (!p) return SL_ENOMEM;
        w->syms = p;
        w->cap_syms = c;
    }
    w->syms[*n] = (struct sl_tok_sym){id, (int32_t)*n - 1, (int32_t)*n + 1, len};
    (*n)++;
    return SL_OK;
}

/* Id of the char s[i..i+k) with prefix/suffix as merge_word adds them; the
 * decorated string is left in w->tmp. */
static int32_t char_id(const sl_tok_bpe *b, const char *s, size_t i, int k, bool last, sl_tok_bpe_work *w) {
    if (k == 1 && b->ascii_ids[(unsigned char)s[i]] != -2 && !(b->byte_fallback && b->ascii_ids[(unsigned char)s[i]] < 0))
        return b->ascii_ids[(unsigned char)s[i]];
    w->tmp.n = 0;
    if (i > 0 && b->prefix) sl_tok_buf_append(&w->tmp, b->prefix, b->prefix_len);
    sl_tok_buf_append(&w->tmp, s + i, (size_t)k);
    if (last && b->suffix) sl_tok_buf_append(&w->tmp, b->suffix, b->suffix_len);
    return w->tmp.p ? sl_tok_strmap_get(&b->vocab, w->tmp.p, w->tmp.n) : -1;
}

/* Builds the initial symbols (merge_word before merge_all). */
static int initial_symbols(const sl_tok_bpe *b, const char *s, size_t len, sl_tok_bpe_work *w, size_t *n) {
    int32_t unk = -1;
    uint32_t unk_len = 0;
    *n = 0;
    for (size_t i = 0; i < len;) {
        int k = sl_tok_utf8_len((unsigned char)s[i]);
        bool last = i + (size_t)k >= len;
        int32_t id = char_id(b, s, i, k, last, w);
        i += (size_t)k;
        if (id >= 0) {
            if (unk >= 0 && add_sym(w, n, unk, unk_len)) return SL_ENOMEM;
            unk = -1;
            if (add_sym(w, n, id, (uint32_t)k)) return SL_ENOMEM;
            continue;
        }
        if (b->byte_fallback) {
            bool all = true;
            for (size_t j = 0; j < w->tmp.n && all; j++) all = b->byte_ids[(unsigned char)w->tmp.p[j]] >= 0;
            if (all) {
                for (size_t j = 0; j < w->tmp.n; j++)
                    if (add_sym(w, n, b->byte_ids[(unsigned char)w->tmp.p[j]], 1)) return SL_ENOMEM;
                continue;
            }
        }
        if (b->unk_id < 0) continue;
        if (unk >= 0 && b->fuse_unk) {
            unk_len += (uint32_t)k;
            continue;
        }
        if (unk >= 0 && add_sym(w, n, unk, unk_len)) return SL_ENOMEM;
        unk = b->unk_id;
        unk_len = (uint32_t)k;
    }
    if (unk >= 0 && add_sym(w, n, unk, unk_len)) return SL_ENOMEM;
    if (*n) w->syms[*n - 1].next = -1;
    return SL_OK;
}

static bool merge_less(const struct sl_tok_merge *x, const struct sl_tok_merge *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static int heap_push(sl_tok_bpe_work *w, size_t *n, struct sl_tok_merge m) {
    if (*n == w->cap_heap) {
        size_t c = w->cap_heap ? w->cap_heap * 2 : 64;
        struct sl_tok_merge *p = realloc(w->heap, c * sizeof *p);
        if (!p) return SL_ENOMEM;
        w->heap = p;
        w->cap_heap = c;
    }
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!merge_less(&m, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = m;
    return SL_OK;
}

static struct sl_tok_merge heap_pop(sl_tok_bpe_work *w, size_t *n) {
    struct sl_tok_merge top = w->heap[0], last = w->heap[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && merge_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!merge_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (*n) w->heap[i] = last;
    return top;
}

static bool lookup_merge(const sl_tok_bpe *b, int32_t l, int32_t r, uint32_t *rank, int32_t *new_id) {
    uint64_t v;
    if (!sl_tok_u64map_get(&b->merges, ((uint64_t)(uint32_t)l << 32) | (uint32_t)r, &v)) return false;
    *rank = (uint32_t)(v >> 32);
    *new_id = (int32_t)(uint32_t)v;
    return true;
}

static int push_pair(const sl_tok_bpe *b, sl_tok_bpe_work *w, size_t *nh, int32_t pos) {
    struct sl_tok_sym *sy = w->syms;
    uint32_t rank;
    int32_t nid;
    if (sy[pos].next < 0 || !lookup_merge(b, sy[pos].id, sy[sy[pos].next].id, &rank, &nid)) return SL_OK;
    return heap_push(w, nh, (struct sl_tok_merge){rank, (uint32_t)pos, nid});
}

static int merge_all(const sl_tok_bpe *b, sl_tok_bpe_work *w, size_t n) {
    size_t nh = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (push_pair(b, w, &nh, (int32_t)i)) return SL_ENOMEM;
    struct sl_tok_sym *sy = w->syms;
    while (nh) {
        struct sl_tok_merge top = heap_pop(w, &nh);
        struct sl_tok_sym *cur = &sy[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        uint32_t rank;
        int32_t nid;
        int32_t nx = cur->next;
        if (!lookup_merge(b, cur->id, sy[nx].id, &rank, &nid) || nid != top.new_id) continue;
        cur->id = top.new_id;
        cur->len += sy[nx].len;
        cur->next = sy[nx].next;
        sy[nx].len = 0;
        if (cur->next >= 0) sy[cur->next].prev = (int32_t)top.pos;
        if (cur->prev >= 0 && push_pair(b, w, &nh, cur->prev)) return SL_ENOMEM;
        if (push_pair(b, w, &nh, (int32_t)top.pos)) return SL_ENOMEM;
    }
    return SL_OK;
}

int sl_tok_bpe_tokenize(const sl_tok_bpe *b, const char *s, size_t len, sl_tok_bpe_work *w,
                        int32_t **ids, size_t *n_ids, size_t *cap_ids) {
    if (len == 0) return SL_OK;
    if (b->ignore_merges) {
        int32_t id = sl_tok_strmap_get(&b->vocab, s, len);
        if (id >= 0) return push_id(ids, n_ids, cap_ids, id);
    }
    size_t n;
    if (initial_symbols(b, s, len, w, &n)) return SL_ENOMEM;
    if (n > 1 && merge_all(b, w, n)) return SL_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (w->syms[i].len && push_id(ids, n_ids, cap_ids, w->syms[i].id)) return SL_ENOMEM;
    return SL_OK;
}
