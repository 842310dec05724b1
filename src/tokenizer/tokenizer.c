/* tokenizer.c -- loading tokenizer.json and the encode/decode pipeline.
 *
 * Encoding is `tokenizers`' TokenizerImpl::encode for one sequence:
 *   1. added tokens with normalized=false are cut out of the raw text
 *      (leftmost-longest match over a byte trie; single_word / lstrip /
 *      rstrip as AddedVocabulary::find_matches);
 *   2. every other piece is normalized, then added tokens with
 *      normalized=true (matched in their normalized form) are cut out;
 *   3. the pre-tokenizer splits the remaining pieces, BPE encodes each;
 *   4. with add_special_tokens the post-processor adds its ids around.
 * Decoding maps ids to token strings (added tokens first, then the model's
 * vocabulary; unknown ids skipped; special ones skipped on request) and
 * runs the decoder over them.
 *
 * bos/eos come from tokenizer_config.json (string or {"content": ...}),
 * else special_tokens_map.json, else generation_config.json ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_internal.h"
#include "util/fs.h"
#include "util/json.h"

typedef struct added_token {
    char *content;
    size_t len;
    int32_t id;
    bool special, lstrip, rstrip, normalized, single_word;
} added_token;

/* Byte trie over added-token contents: child of (node, byte) in `edges`,
 * term[node] = index of the token ending there or -1. */
typedef struct token_trie {
    sl_tok_u64map edges;
    int32_t *term;
    size_t n_nodes, cap_nodes;
    bool first[256];
} token_trie;

/* A post-processor step: ids before and after the sequence. */
typedef struct template_step {
    int32_t *pre, *post;
    size_t n_pre, n_post;
} template_step;

struct sl_tokenizer {
    sl_tok_bpe bpe;
    sl_tok_normalizer *normalizer;
    sl_tok_pretokenizer *pre;
    sl_tok_decoder *decoder;
    added_token *added;
    size_t n_added;
    sl_tok_strmap added_map; /* content -> index into added */
    int32_t *added_by_id;    /* id -> index into added, -1 */
    size_t n_ids;            /* max id + 1 */
    token_trie raw_trie, norm_trie;
    template_step *steps;
    size_t n_steps;
    char *bos, *eos;
    int32_t bos_id, eos_id;
};

/* ---- added tokens ------------------------------------------------------ */

static int trie_init(token_trie *tr) {
    memset(tr, 0, sizeof *tr);
    if (sl_tok_u64map_init(&tr->edges, 256)) return SL_ENOMEM;
    tr->cap_nodes = 64;
    tr->term = malloc(tr->cap_nodes * sizeof *tr->term);
    if (!tr->term) return SL_ENOMEM;
    tr->term[0] = -1;
    tr->n_nodes = 1;
    return SL_OK;
}

static void trie_free(token_trie *tr) {
    if (tr->edges.keys || tr->edges.vals) sl_tok_u64map_free(&tr->edges);
    free(tr->term);
    memset(tr, 0, sizeof *tr);
}

static int trie_add(token_trie *tr, const char *s, size_t len, int32_t index) {
    if (!len) return SL_OK;
    uint64_t node = 0;
    tr->first[(unsigned char)s[0]] = true;
    for (size_t i = 0; i < len; i++) {
        uint64_t key = node * 256 + (unsigned char)s[i], child;
        if (!sl_tok_u64map_get(&tr->edges, key, &child)) {
            if (tr->n_nodes == tr->cap_nodes) {
                int32_t *p = realloc(tr->term, tr->cap_nodes * 2 * sizeof *p);
                if (!p) return SL_ENOMEM;
                tr->term = p;
                tr->cap_nodes *= 2;
            }
            child = tr->n_nodes++;
            tr->term[child] = -1;
            if (sl_tok_u64map_put(&tr->edges, key, child)) return SL_ENOMEM;
        }
        node = child;
    }
    if (tr->term[node] < 0) tr->term[node] = index; /* the first token with this content wins */
    return SL_OK;
}

/* Leftmost-longest match in s[from..len); returns the token index or -1. */
static int32_t trie_find(const token_trie *tr, const char *s, size_t len, size_t from, size_t *ms, size_t *me) {
    if (tr->n_nodes <= 1) return -1;
    for (size_t pos = from; pos < len; pos++) {
        if (!tr->first[(unsigned char)s[pos]]) continue;
        uint64_t node = 0;
        int32_t best = -1;
        for (size_t j = pos; j < len; j++) {
            if (!sl_tok_u64map_get(&tr->edges, node * 256 + (unsigned char)s[j], &node)) break;
            if (tr->term[node] >= 0) {
                best = tr->term[node];
                *me = j + 1;
            }
        }
        if (best >= 0) {
            *ms = pos;
            return best;
        }
    }
    return -1;
}

static uint32_t last_char(const char *s, size_t end) {
    size_t c = end - 1;
    while (c > 0 && ((unsigned char)s[c] & 0xC0) == 0x80) c--;
    uint32_t cp;
    sl_tok_utf8_next(s + c, end - c, &cp);
    return cp;
}

/* Start of the whitespace run ending at `end`. */
static size_t space_leftmost_at_end(const char *s, size_t end) {
    while (end > 0) {
        size_t c = end - 1;
        while (c > 0 && ((unsigned char)s[c] & 0xC0) == 0x80) c--;
        uint32_t cp;
        sl_tok_utf8_next(s + c, end - c, &cp);
        if (!sl_tok_is_whitespace(cp)) break;
        end = c;
    }
    return end;
}

static size_t space_rightmost_at_start(const char *s, size_t from, size_t len) {
    size_t i = from;
    while (i < len) {
        uint32_t cp;
        int k = sl_tok_utf8_next(s + i, len - i, &cp);
        if (!sl_tok_is_whitespace(cp)) break;
        i += (size_t)k;
    }
    return i - from;
}

/* AddedVocabulary::split_with_indices of the piece `p` of the arena. */
static int split_added(const sl_tokenizer *t, const token_trie *tr, sl_tok_buf *arena, sl_tok_piece p,
                       sl_tok_pieces *out) {
    const char *s = arena->p + p.off;
    size_t len = p.len, start_offset = 0, from = 0, ms = 0, me = 0;
    int32_t k;
    while ((k = trie_find(tr, s, len, from, &ms, &me)) >= 0) {
        const added_token *a = &t->added[k];
        size_t start = ms, stop = me;
        from = me;
        if (a->single_word) {
            bool start_space = start == 0 || !sl_tok_is_word(last_char(s, start));
            uint32_t next = 0;
            if (stop < len) sl_tok_utf8_next(s + stop, len - stop, &next);
            bool stop_space = stop == len || !sl_tok_is_word(next);
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = space_leftmost_at_end(s, start);
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) stop += space_rightmost_at_start(s, stop, len);
        if (start < start_offset) start = start_offset;
        if (start_offset < start) {
            sl_tok_piece q = {p.off + (uint32_t)start_offset, (uint32_t)(start - start_offset), -1, p.at_start && start_offset == 0};
            if (sl_tok_pieces_push(out, q)) return SL_ENOMEM;
        }
        sl_tok_piece q = {p.off + (uint32_t)start, (uint32_t)(stop - start), a->id, false};
        if (sl_tok_pieces_push(out, q)) return SL_ENOMEM;
        start_offset = stop;
        if (from < stop) from = stop;
    }
    if (start_offset < len) {
        sl_tok_piece q = {p.off + (uint32_t)start_offset, (uint32_t)(len - start_offset), -1, p.at_start && start_offset == 0};
        if (sl_tok_pieces_push(out, q)) return SL_ENOMEM;
    }
    return SL_OK;
}

static int parse_added(sl_tokenizer *t, const json_t *arr, const char *file, sl_err *err) {
    if (!arr || json_is_null(arr)) return SL_OK;
    if (!json_is_array(arr)) return sl_err_set(err, SL_EFORMAT, "%s: added_tokens: expected an array", file);
    t->added = calloc(json_array_size(arr) + 1, sizeof *t->added);
    if (!t->added || sl_tok_strmap_init(&t->added_map, json_array_size(arr)))
        return sl_err_set(err, SL_ENOMEM, "%s: out of memory", file);
    char where[512];
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *j = json_array_get(arr, i);
        added_token *a = &t->added[t->n_added];
        snprintf(where, sizeof where, "%s: added_tokens[%zu]", file, i);
        const char *content;
        const json_t *id = json_object_get(j, "id");
        int rc;
        if (!json_is_object(j)) return sl_err_set(err, SL_EFORMAT, "%s: expected an object", where);
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > INT32_MAX - 1)
            return sl_err_set(err, SL_EFORMAT, "%s.id: expected a non-negative integer", where);
        if ((rc = sl_tok_json_str(j, "content", where, true, &content, err)) ||
            (rc = sl_tok_json_bool(j, "special", where, &a->special, err)) ||
            (rc = sl_tok_json_bool(j, "lstrip", where, &a->lstrip, err)) ||
            (rc = sl_tok_json_bool(j, "rstrip", where, &a->rstrip, err)) ||
            (rc = sl_tok_json_bool(j, "normalized", where, &a->normalized, err)) ||
            (rc = sl_tok_json_bool(j, "single_word", where, &a->single_word, err)))
            return rc;
        if (!*content) continue; /* `tokenizers` ignores empty added tokens */
        a->id = (int32_t)json_integer_value(id);
        a->len = strlen(content);
        if (!(a->content = strdup(content)) || sl_tok_strmap_put(&t->added_map, content, a->len, (int32_t)t->n_added, NULL))
            return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
        t->n_added++;
    }
    return SL_OK;
}

static int build_added_index(sl_tokenizer *t, const char *file, sl_err *err) {
    t->n_ids = t->bpe.n_ids;
    for (size_t i = 0; i < t->n_added; i++)
        if ((size_t)t->added[i].id + 1 > t->n_ids) t->n_ids = (size_t)t->added[i].id + 1;
    t->added_by_id = malloc((t->n_ids + 1) * sizeof *t->added_by_id);
    if (!t->added_by_id || trie_init(&t->raw_trie) || trie_init(&t->norm_trie))
        return sl_err_set(err, SL_ENOMEM, "%s: out of memory", file);
    memset(t->added_by_id, 0xff, (t->n_ids + 1) * sizeof *t->added_by_id);
    sl_tok_buf norm = {0};
    sl_tok_scratch sc;
    sl_tok_scratch_init(&sc);
    int rc = SL_OK;
    for (size_t i = 0; i < t->n_added && !rc; i++) {
        const added_token *a = &t->added[i];
        t->added_by_id[a->id] = (int32_t)i;
        if (!a->normalized) {
            rc = trie_add(&t->raw_trie, a->content, a->len, (int32_t)i);
        } else if (!t->normalizer) {
            rc = trie_add(&t->norm_trie, a->content, a->len, (int32_t)i);
        } else if (!(rc = sl_tok_normalize(t->normalizer, a->content, a->len, &norm, &(bool){true}, &sc, err))) {
            rc = trie_add(&t->norm_trie, norm.p ? norm.p : "", norm.n, (int32_t)i);
        }
    }
    sl_tok_buf_free(&norm);
    sl_tok_scratch_free(&sc);
    if (rc == SL_ENOMEM) return sl_err_set(err, rc, "%s: out of memory", file);
    return rc;
}

/* ---- post-processor --------------------------------------------------- */

static int ids_of_special(const json_t *specials, const char *name, const char *where, int32_t **ids, size_t *n,
                          sl_err *err) {
    const json_t *sp = json_object_get(specials, name);
    const json_t *arr = sp ? json_object_get(sp, "ids") : NULL;
    if (!json_is_array(arr))
        return sl_err_set(err, SL_EFORMAT, "%s.special_tokens[\"%s\"].ids: missing (the template names an undefined special token)", where, name);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            return sl_err_set(err, SL_EFORMAT, "%s.special_tokens[\"%s\"].ids[%zu]: expected a non-negative integer", where, name, i);
        int32_t *p = realloc(*ids, (*n + 1) * sizeof *p);
        if (!p) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
        *ids = p;
        p[(*n)++] = (int32_t)json_integer_value(v);
    }
    return SL_OK;
}

static int parse_template(const json_t *j, const char *where, template_step *st, sl_err *err) {
    const json_t *single = json_object_get(j, "single"), *specials = json_object_get(j, "special_tokens");
    if (!json_is_array(single)) return sl_err_set(err, SL_EFORMAT, "%s.single: expected an array", where);
    bool seen_seq = false;
    for (size_t i = 0; i < json_array_size(single); i++) {
        const json_t *item = json_array_get(single, i), *sp = json_object_get(item, "SpecialToken"),
                     *seq = json_object_get(item, "Sequence");
        const char *name = NULL;
        if (seq && json_is_object(seq)) {
            if (seen_seq) return sl_err_set(err, SL_ENOTSUP, "%s.single[%zu]: a single template with two sequences is not supported", where, i);
            seen_seq = true;
            continue;
        }
        if (!sp || sl_tok_json_str(sp, "id", where, true, &name, err) || !name)
            return sl_err_set(err, SL_EFORMAT, "%s.single[%zu]: expected {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": ...}", where, i);
        int rc = seen_seq ? ids_of_special(specials, name, where, &st->post, &st->n_post, err)
                          : ids_of_special(specials, name, where, &st->pre, &st->n_pre, err);
        if (rc) return rc;
    }
    if (!seen_seq) return sl_err_set(err, SL_EFORMAT, "%s.single: no {\"Sequence\": {\"id\": \"A\"}} item", where);
    return SL_OK;
}

static int pair_id(const json_t *j, const char *key, const char *where, int32_t *out, sl_err *err) {
    const json_t *v = json_object_get(j, key), *id = json_array_get(v, 1);
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(id) || json_integer_value(id) < 0)
        return sl_err_set(err, SL_EFORMAT, "%s.%s: expected [\"token\", id]", where, key);
    *out = (int32_t)json_integer_value(id);
    return SL_OK;
}

static int parse_post(sl_tokenizer *t, const json_t *j, const char *where, sl_err *err) {
    if (!j || json_is_null(j)) return SL_OK;
    static const char *const post_names[] = {"Sequence", "ByteLevel", "TemplateProcessing", "BertProcessing",
                                             "RobertaProcessing"};
    int kind;
    int rc = sl_tok_json_name(j, "type", where, "post_processor type", post_names, sizeof post_names / sizeof *post_names,
                              &kind, err);
    if (rc) return rc;
    char sub[512];
    if (kind == 0) { /* Sequence */
        const json_t *arr = json_object_get(j, "processors");
        if (!json_is_array(arr)) return sl_err_set(err, SL_EFORMAT, "%s.processors: expected an array", where);
        for (size_t i = 0; i < json_array_size(arr) && !rc; i++) {
            snprintf(sub, sizeof sub, "%s.processors[%zu]", where, i);
            rc = parse_post(t, json_array_get(arr, i), sub, err);
        }
        return rc;
    }
    if (kind == 1) return SL_OK; /* ByteLevel only moves offsets */
    bool tmpl = kind == 2;
    template_step *steps = realloc(t->steps, (t->n_steps + 1) * sizeof *steps);
    if (!steps) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
    t->steps = steps;
    template_step *st = &t->steps[t->n_steps++];
    memset(st, 0, sizeof *st);
    if (tmpl) return parse_template(j, where, st, err);
    int32_t cls, sep;
    if ((rc = pair_id(j, "cls", where, &cls, err)) || (rc = pair_id(j, "sep", where, &sep, err))) return rc;
    st->pre = malloc(sizeof *st->pre);
    st->post = malloc(sizeof *st->post);
    if (!st->pre || !st->post) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", where);
    st->pre[0] = cls;
    st->post[0] = sep;
    st->n_pre = st->n_post = 1;
    return SL_OK;
}

/* ---- special token names from the side files -------------------------- */

/* bos_token / eos_token as a string or {"content": ...}; NULL if absent. */
static const char *token_name(const json_t *cfg, const char *key) {
    const json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Side files may hold integers beyond 64 bits (model_max_length 1e30), so
 * they are parsed with integers as reals. */
static int load_side_file(const char *path, json_t **out, sl_err *err) {
    char *text;
    size_t n;
    int rc = sl_file_read_all(path, &text, &n, err);
    if (rc) return rc;
    json_error_t jerr;
    *out = json_loadb(text, n, JSON_DECODE_INT_AS_REAL, &jerr);
    free(text);
    if (!*out) return sl_err_set(err, SL_EFORMAT, "%s:%d:%d: invalid JSON: %s", path, jerr.line, jerr.column, jerr.text);
    return SL_OK;
}

static int take_names(sl_tokenizer *t, const char *path, bool required_ok, sl_err *err) {
    if (!sl_path_exists(path)) return SL_OK;
    json_t *cfg;
    int rc = load_side_file(path, &cfg, err);
    if (rc) return required_ok ? rc : SL_OK;
    const char *bos = token_name(cfg, "bos_token"), *eos = token_name(cfg, "eos_token");
    if (!t->bos && bos && !(t->bos = strdup(bos))) rc = SL_ENOMEM;
    if (!t->eos && eos && !(t->eos = strdup(eos))) rc = SL_ENOMEM;
    json_decref(cfg);
    return rc ? sl_err_set(err, rc, "%s: out of memory", path) : SL_OK;
}

static int32_t first_id(const json_t *v) {
    if (json_is_array(v)) v = json_array_get(v, 0);
    double d = json_is_number(v) ? json_number_value(v) : -1.0;
    return d >= 0 && d <= INT32_MAX ? (int32_t)d : -1;
}

static void take_generation_ids(sl_tokenizer *t, const char *path) {
    json_t *cfg;
    sl_err ignored;
    if (!sl_path_exists(path) || load_side_file(path, &cfg, &ignored)) return;
    if (t->bos_id < 0) t->bos_id = first_id(json_object_get(cfg, "bos_token_id"));
    if (t->eos_id < 0) t->eos_id = first_id(json_object_get(cfg, "eos_token_id"));
    json_decref(cfg);
}

/* ---- loading ------------------------------------------------------------ */

static int check_null(const json_t *root, const char *key, const char *file, sl_err *err) {
    const json_t *v = json_object_get(root, key);
    if (v && !json_is_null(v))
        return sl_err_set(err, SL_ENOTSUP, "%s: %s: only null is supported (shardlm does its own %s)", file, key, key);
    return SL_OK;
}

static int load_json(sl_tokenizer *t, const char *file, sl_err *err) {
    json_t *root;
    int rc = sl_json_load_file(file, &root, err);
    if (rc) return rc;
    char where[512];
    if (!json_is_object(root)) {
        json_decref(root);
        return sl_err_set(err, SL_EFORMAT, "%s: expected a JSON object at the top level", file);
    }
#define WHERE(key) (snprintf(where, sizeof where, "%s: %s", file, key), where)
    if (!(rc = check_null(root, "truncation", file, err)) && !(rc = check_null(root, "padding", file, err)) &&
        !(rc = sl_tok_bpe_parse(json_object_get(root, "model"), WHERE("model"), &t->bpe, err)) &&
        !(rc = sl_tok_normalizer_parse(json_object_get(root, "normalizer"), WHERE("normalizer"), &t->normalizer, err)) &&
        !(rc = sl_tok_pretokenizer_parse(json_object_get(root, "pre_tokenizer"), WHERE("pre_tokenizer"), &t->pre, err)) &&
        !(rc = sl_tok_decoder_parse(json_object_get(root, "decoder"), WHERE("decoder"), &t->decoder, err)) &&
        !(rc = parse_post(t, json_object_get(root, "post_processor"), WHERE("post_processor"), err)) &&
        !(rc = parse_added(t, json_object_get(root, "added_tokens"), file, err)))
        rc = build_added_index(t, file, err);
#undef WHERE
    json_decref(root);
    return rc;
}

static int load(const char *dir, const char *file, bool side_files, sl_tokenizer **out, sl_err *err) {
    *out = NULL;
    sl_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", file);
    t->bpe.unk_id = -1;
    t->bos_id = t->eos_id = -1;
    int rc = load_json(t, file, err);
    const char *names[] = {"tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; i < (side_files ? 2 : 1) && !rc; i++) {
        char *p = sl_path_join(dir, names[i]);
        rc = p ? take_names(t, p, i == 0, err) : sl_err_set(err, SL_ENOMEM, "out of memory");
        free(p);
    }
    if (rc) {
        sl_tokenizer_free(t);
        return rc;
    }
    if (t->bos) t->bos_id = sl_tokenizer_token_to_id(t, t->bos);
    if (t->eos) t->eos_id = sl_tokenizer_token_to_id(t, t->eos);
    if (side_files) {
        char *p = sl_path_join(dir, "generation_config.json");
        if (p) take_generation_ids(t, p);
        free(p);
    }
    *out = t;
    return SL_OK;
}

int sl_tokenizer_load(const char *model_dir, sl_tokenizer **out, sl_err *err) {
    char *file = sl_path_join(model_dir, "tokenizer.json");
    if (!file) return sl_err_set(err, SL_ENOMEM, "out of memory");
    int rc = load(model_dir, file, true, out, err);
    free(file);
    return rc;
}

int sl_tokenizer_load_file(const char *tokenizer_json_path, sl_tokenizer **out, sl_err *err) {
    char *dir = strdup(tokenizer_json_path);
    if (!dir) return sl_err_set(err, SL_ENOMEM, "out of memory");
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else strcpy(dir, ".");
    int rc = load(dir, tokenizer_json_path, false, out, err);
    free(dir);
    return rc;
}

void sl_tokenizer_free(sl_tokenizer *t) {
    if (!t) return;
    sl_tok_bpe_free(&t->bpe);
    sl_tok_normalizer_free(t->normalizer);
    sl_tok_pretokenizer_free(t->pre);
    sl_tok_decoder_free(t->decoder);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    sl_tok_strmap_free(&t->added_map);
    free(t->added_by_id);
    trie_free(&t->raw_trie);
    trie_free(&t->norm_trie);
    for (size_t i = 0; i < t->n_steps; i++) {
        free(t->steps[i].pre);
        free(t->steps[i].post);
    }
    free(t->steps);
    free(t->bos);
    free(t->eos);
    free(t);
}

/* ---- encoding ----------------------------------------------------------- */

typedef struct encode_state {
    sl_tok_scratch sc;
    sl_tok_buf arena, norm;
    sl_tok_pieces a, b;
    sl_tok_bpe_work work;
} encode_state;

static void encode_state_free(encode_state *st) {
    sl_tok_scratch_free(&st->sc);
    sl_tok_buf_free(&st->arena);
    sl_tok_buf_free(&st->norm);
    sl_tok_pieces_free(&st->a);
    sl_tok_pieces_free(&st->b);
    sl_tok_bpe_work_free(&st->work);
}

/* Steps 1-2: added tokens out, normalization; leaves the pieces in st->a. */
static int extract_and_normalize(const sl_tokenizer *t, encode_state *st, size_t len, sl_err *err) {
    sl_tok_piece whole = {0, (uint32_t)len, -1, true};
    if (len && split_added(t, &t->raw_trie, &st->arena, whole, &st->b)) return SL_ENOMEM;
    for (size_t i = 0; i < st->b.n; i++) {
        sl_tok_piece p = st->b.v[i];
        if (p.id >= 0) {
            if (sl_tok_pieces_push(&st->a, p)) return SL_ENOMEM;
            continue;
        }
        if (t->normalizer) {
            int rc = sl_tok_normalize(t->normalizer, st->arena.p + p.off, p.len, &st->norm, &p.at_start, &st->sc, err);
            if (rc) return rc;
            p.off = (uint32_t)st->arena.n;
            p.len = (uint32_t)st->norm.n;
            if (sl_tok_buf_append(&st->arena, st->norm.p, st->norm.n)) return SL_ENOMEM;
        }
        if (p.len && split_added(t, &t->norm_trie, &st->arena, p, &st->a)) return SL_ENOMEM;
    }
    return SL_OK;
}

static int append_ids(int32_t **ids, size_t *n, size_t *cap, const int32_t *src, size_t k) {
    if (*n + k > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *n + k) c *= 2;
        int32_t *p = realloc(*ids, c * sizeof *p);
        if (!p) return SL_ENOMEM;
        *ids = p;
        *cap = c;
    }
    if (k) memcpy(*ids + *n, src, k * sizeof *src);
    *n += k;
    return SL_OK;
}

static int post_process(const sl_tokenizer *t, int32_t **ids, size_t *n, size_t *cap) {
    for (size_t s = 0; s < t->n_steps; s++) {
        const template_step *st = &t->steps[s];
        size_t total = st->n_pre + *n + st->n_post;
        int32_t *v = malloc((total ? total : 1) * sizeof *v);
        if (!v) return SL_ENOMEM;
        if (st->n_pre) memcpy(v, st->pre, st->n_pre * sizeof *v);
        if (*n) memcpy(v + st->n_pre, *ids, *n * sizeof *v);
        if (st->n_post) memcpy(v + st->n_pre + *n, st->post, st->n_post * sizeof *v);
        free(*ids);
        *ids = v;
        *n = *cap = total;
    }
    return SL_OK;
}

static int encode(const sl_tokenizer *t, encode_state *st, const char *text, size_t len, bool add_special,
                  int32_t **ids, size_t *n_ids, size_t *cap, sl_err *err) {
    if (sl_tok_buf_append(&st->arena, text, len)) return SL_ENOMEM;
    int rc = extract_and_normalize(t, st, len, err);
    if (!rc && t->pre) rc = sl_tok_pretokenize(t->pre, &st->arena, &st->a, &st->b, &st->sc, err);
    for (size_t i = 0; i < st->a.n && !rc; i++) {
        const sl_tok_piece *p = &st->a.v[i];
        rc = p->id >= 0 ? append_ids(ids, n_ids, cap, &p->id, 1)
                        : sl_tok_bpe_tokenize(&t->bpe, st->arena.p + p->off, p->len, &st->work, ids, n_ids, cap);
    }
    if (!rc && add_special) rc = post_process(t, ids, n_ids, cap);
    return rc;
}

int sl_tokenizer_encode(const sl_tokenizer *t, const char *text, size_t n_bytes, bool add_special_tokens,
                        int32_t **ids, size_t *n_ids, sl_err *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && n_bytes) return sl_err_set(err, SL_EINVAL, "tokenizer: encode: text is NULL");
    if (n_bytes > UINT32_MAX / 4) return sl_err_set(err, SL_EINVAL, "tokenizer: encode: text of %zu bytes is too long (limit 1 GiB)", n_bytes);
    if (!sl_tok_utf8_valid(text, n_bytes)) return sl_err_set(err, SL_EINVAL, "tokenizer: encode: the text is not valid UTF-8");
    encode_state st;
    memset(&st, 0, sizeof st);
    sl_tok_scratch_init(&st.sc);
    size_t cap = 0;
    int rc = encode(t, &st, text ? text : "", n_bytes, add_special_tokens, ids, n_ids, &cap, err);
    encode_state_free(&st);
    if (rc) {
        free(*ids);
        *ids = NULL;
        *n_ids = 0;
        if (rc == SL_ENOMEM) return sl_err_set(err, rc, "tokenizer: out of memory encoding %zu bytes", n_bytes);
    }
    return rc;
}

/* ---- decoding and lookups ------------------------------------------------- */

const char *sl_tokenizer_id_to_token(const sl_tokenizer *t, int32_t id) {
    if (id < 0 || (size_t)id >= t->n_ids) return NULL;
    if (t->added_by_id[id] >= 0) return t->added[t->added_by_id[id]].content;
    return (size_t)id < t->bpe.n_ids ? t->bpe.id_to_token[id] : NULL;
}

int32_t sl_tokenizer_token_to_id(const sl_tokenizer *t, const char *token) {
    size_t len = strlen(token);
    int32_t k = sl_tok_strmap_get(&t->added_map, token, len);
    if (k >= 0) return t->added[k].id;
    return sl_tok_strmap_get(&t->bpe.vocab, token, len);
}

bool sl_tokenizer_is_special(const sl_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_ids && t->added_by_id[id] >= 0 && t->added[t->added_by_id[id]].special;
}

int sl_tokenizer_token_bytes(const sl_tokenizer *t, int32_t id, uint8_t *buf, size_t cap, size_t *n_bytes,
                             sl_err *err) {
    const char *s = sl_tokenizer_id_to_token(t, id);
    if (!s) return sl_err_set(err, SL_EINVAL, "tokenizer: no token has id %d", id);
    if (sl_tok_decoder_token_bytes(t->decoder, s, strlen(s), buf, cap, n_bytes))
        return sl_err_set(err, SL_ENOSPACE, "tokenizer: token %d is longer than %zu bytes", id, cap);
    return SL_OK;
}

size_t sl_tokenizer_vocab_size(const sl_tokenizer *t) { return t->n_ids; }
int32_t sl_tokenizer_bos_id(const sl_tokenizer *t) { return t->bos_id; }
int32_t sl_tokenizer_eos_id(const sl_tokenizer *t) { return t->eos_id; }
const char *sl_tokenizer_bos_token(const sl_tokenizer *t) { return t->bos; }
const char *sl_tokenizer_eos_token(const sl_tokenizer *t) { return t->eos; }

int sl_tok_decode_ids(const sl_tokenizer *t, const int32_t *ids, size_t n_ids, bool skip_special,
                      sl_tok_buf *out, sl_err *err) {
    sl_tok_buf arena = {0};
    sl_tok_pieces ps = {0};
    sl_tok_scratch sc;
    sl_tok_scratch_init(&sc);
    int rc = SL_OK;
    for (size_t i = 0; i < n_ids && !rc; i++) {
        if (ids[i] < 0) {
            rc = sl_err_set(err, SL_EINVAL, "tokenizer: decode: id %d at position %zu is negative", (int)ids[i], i);
            break;
        }
        const char *s = sl_tokenizer_id_to_token(t, ids[i]);
        if (!s || (skip_special && sl_tokenizer_is_special(t, ids[i]))) continue;
        size_t len = strlen(s);
        sl_tok_piece p = {(uint32_t)arena.n, (uint32_t)len, -1, false};
        if (sl_tok_buf_append(&arena, s, len) || sl_tok_pieces_push(&ps, p))
            rc = sl_err_set(err, SL_ENOMEM, "tokenizer: out of memory decoding");
    }
    if (!rc) rc = sl_tok_decode_tokens(ps.n ? t->decoder : NULL, &arena, &ps, out, &sc, err);
    sl_tok_scratch_free(&sc);
    sl_tok_buf_free(&arena);
    sl_tok_pieces_free(&ps);
    return rc;
}

int sl_tokenizer_decode(const sl_tokenizer *t, const int32_t *ids, size_t n_ids, bool skip_special_tokens,
                        char **text, size_t *n_bytes, sl_err *err) {
    sl_tok_buf out = {0};
    *text = NULL;
    *n_bytes = 0;
    int rc = sl_tok_decode_ids(t, ids, n_ids, skip_special_tokens, &out, err);
    if (!rc && !out.p && sl_tok_buf_append(&out, "", 0)) rc = sl_err_set(err, SL_ENOMEM, "tokenizer: out of memory decoding");
    if (rc) {
        sl_tok_buf_free(&out);
        return rc;
    }
    *text = out.p;
    *n_bytes = out.n;
    return SL_OK;
}
