/* tokenizer_map.c -- the containers under the tokenizer: growable byte
 * buffers and piece lists, a string -> id hash map for the vocabulary and a
 * uint64 -> uint64 map for BPE merges (pair of ids -> rank and new id), and
 * the small JSON readers every component parser shares.
 *
 * Both maps use open addressing with linear probing in power-of-two tables
 * kept at most half full; lookups never allocate, so a loaded tokenizer can
 * be read from many threads at once. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"

/* ---- growable arrays ---------------------------------------------------- */

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return SL_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *np = realloc(*p, c * elem);
    if (!np) return SL_ENOMEM;
    *p = np;
    *cap = c;
    return SL_OK;
}

int sl_tok_buf_reserve(sl_tok_buf *b, size_t extra) {
    return grow((void **)&b->p, &b->cap, b->n + extra + 1, 1);
}

int sl_tok_buf_append(sl_tok_buf *b, const void *s, size_t n) {
    if (sl_tok_buf_reserve(b, n)) return SL_ENOMEM;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return SL_OK;
}

void sl_tok_buf_free(sl_tok_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

int sl_tok_pieces_push(sl_tok_pieces *ps, sl_tok_piece p) {
    if (grow((void **)&ps->v, &ps->cap, ps->n + 1, sizeof p)) return SL_ENOMEM;
    ps->v[ps->n++] = p;
    return SL_OK;
}

void sl_tok_pieces_free(sl_tok_pieces *ps) {
    free(ps->v);
    memset(ps, 0, sizeof *ps);
}

int sl_tok_segs_push(sl_tok_segs *s, uint32_t start, uint32_t end, bool match) {
    if (grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v)) return SL_ENOMEM;
    s->v[s->n++] = (sl_tok_seg){start, end, match};
    return SL_OK;
}

/* ---- hashing ------------------------------------------------------------ */

static inline uint64_t mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t sl_tok_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x100000001b3ULL;
    return mix(h);
}

/* ---- string map --------------------------------------------------------- */

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

int sl_tok_strmap_init(sl_tok_strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->n_slots = pow2_at_least(expected * 2 + 1);
    m->slots = calloc(m->n_slots, sizeof *m->slots);
    return m->slots ? SL_OK : SL_ENOMEM;
}

void sl_tok_strmap_free(sl_tok_strmap *m) {
    free(m->slots);
    free(m->ents);
    sl_tok_buf_free(&m->keys);
    memset(m, 0, sizeof *m);
}

static size_t strmap_find(const sl_tok_strmap *m, const char *s, size_t len, uint64_t h) {
    size_t mask = m->n_slots - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t e = m->slots[i];
        if (!e) return i;
        const struct sl_tok_strent *ent = &m->ents[e - 1];
        if (ent->hash == h && ent->len == len && memcmp(m->keys.p + ent->off, s, len) == 0) return i;
    }
}

static int strmap_rehash(sl_tok_strmap *m) {
    size_t n = m->n_slots * 2;
    uint32_t *slots = calloc(n, sizeof *slots);
    if (!slots) return SL_ENOMEM;
    for (size_t e = 0; e < m->n_ents; e++) {
        size_t i = m->ents[e].hash & (n - 1);
        while (slots[i]) i = (i + 1) & (n - 1);
        slots[i] = (uint32_t)(e + 1);
    }
    free(m->slots);
    m->slots = slots;
    m->n_slots = n;
    return SL_OK;
}

int sl_tok_strmap_put(sl_tok_strmap *m, const char *s, size_t len, int32_t id, uint32_t *key_off) {
    if ((m->n_ents + 1) * 2 > m->n_slots && strmap_rehash(m)) return SL_ENOMEM;
    uint64_t h = sl_tok_hash(s, len);
    size_t i = strmap_find(m, s, len, h);
    if (m->slots[i]) {
        struct sl_tok_strent *ent = &m->ents[m->slots[i] - 1];
        ent->id = id;
        if (key_off) *key_off = ent->off;
        return SL_OK;
    }
    if (grow((void **)&m->ents, &m->cap_ents, m->n_ents + 1, sizeof *m->ents)) return SL_ENOMEM;
    uint32_t off = (uint32_t)m->keys.n;
    if (sl_tok_buf_append(&m->keys, s, len) || sl_tok_buf_append(&m->keys, "", 1)) return SL_ENOMEM;
    m->ents[m->n_ents] = (struct sl_tok_strent){h, off, (uint32_t)len, id};
    m->slots[i] = (uint32_t)++m->n_ents;
    if (key_off) *key_off = off;
    return SL_OK;
}

int32_t sl_tok_strmap_get(const sl_tok_strmap *m, const char *s, size_t len) {
    if (!m->slots) return -1;
    size_t i = strmap_find(m, s, len, sl_tok_hash(s, len));
    return m->slots[i] ? m->ents[m->slots[i] - 1].id : -1;
}

/* ---- uint64 map --------------------------------------------------------- */

int sl_tok_u64map_init(sl_tok_u64map *m, size_t expected) {
    m->n_slots = pow2_at_least(expected * 2 + 1);
    m->n = 0;
    m->keys = malloc(m->n_slots * sizeof *m->keys);
    m->vals = malloc(m->n_slots * sizeof *m->vals);
    if (!m->keys || !m->vals) {
        sl_tok_u64map_free(m);
        return SL_ENOMEM;
    }
    memset(m->keys, 0xff, m->n_slots * sizeof *m->keys);
    return SL_OK;
}

void sl_tok_u64map_free(sl_tok_u64map *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static int u64map_rehash(sl_tok_u64map *m) {
    sl_tok_u64map n;
    if (sl_tok_u64map_init(&n, m->n_slots)) return SL_ENOMEM;
    for (size_t i = 0; i < m->n_slots; i++)
        if (m->keys[i] != UINT64_MAX) sl_tok_u64map_put(&n, m->keys[i], m->vals[i]);
    sl_tok_u64map_free(m);
    *m = n;
    return SL_OK;
}

int sl_tok_u64map_put(sl_tok_u64map *m, uint64_t key, uint64_t val) {
    if ((m->n + 1) * 2 > m->n_slots && u64map_rehash(m)) return SL_ENOMEM;
    size_t mask = m->n_slots - 1;
    for (size_t i = mix(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key) {
            m->vals[i] = val;
            return SL_OK;
        }
        if (m->keys[i] == UINT64_MAX) {
            m->keys[i] = key;
            m->vals[i] = val;
            m->n++;
            return SL_OK;
        }
    }
}

bool sl_tok_u64map_get(const sl_tok_u64map *m, uint64_t key, uint64_t *val) {
    size_t mask = m->n_slots - 1;
    for (size_t i = mix(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key) {
            *val = m->vals[i];
            return true;
        }
        if (m->keys[i] == UINT64_MAX) return false;
    }
}

/* ---- JSON helpers ------------------------------------------------------- */

int sl_tok_json_str(const json_t *obj, const char *key, const char *where, bool required,
                    const char **out, sl_err *err) {
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required) return sl_err_set(err, SL_EFORMAT, "%s.%s: missing (expected a string)", where, key);
        return SL_OK;
    }
    if (!json_is_string(v)) return sl_err_set(err, SL_EFORMAT, "%s.%s: expected a string", where, key);
    *out = json_string_value(v);
    return SL_OK;
}

int sl_tok_json_bool(const json_t *obj, const char *key, const char *where, bool *out, sl_err *err) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return SL_OK;
    if (!json_is_boolean(v)) return sl_err_set(err, SL_EFORMAT, "%s.%s: expected true or false", where, key);
    *out = json_is_true(v);
    return SL_OK;
}

int sl_tok_json_name(const json_t *obj, const char *key, const char *where, const char *what,
                     const char *const *names, size_t n_names, int *out, sl_err *err) {
    if (!json_is_object(obj)) return sl_err_set(err, SL_EFORMAT, "%s: expected an object", where);
    const char *s;
    int rc = sl_tok_json_str(obj, key, where, true, &s, err);
    if (rc) return rc;
    for (size_t k = 0; k < n_names; k++)
        if (strcmp(s, names[k]) == 0) {
            *out = (int)k;
            return SL_OK;
        }
    char list[512] = "";
    for (size_t k = 0, len = 0; k < n_names && len < sizeof list; k++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", k ? ", " : "", names[k]);
    bool type = strcmp(key, "type") == 0; /* a component shardlm lacks, or a value the format has not */
    return sl_err_set(err, type ? SL_ENOTSUP : SL_EFORMAT, "%s%s%s: %s \"%s\" is not supported (supported: %s)", where,
                      type ? "" : ".", type ? "" : key, what, s, list);
}

int sl_tok_prepend_scheme_parse(const json_t *j, const char *where, sl_tok_prepend_scheme *out,
                                sl_err *err) {
    const char *s;
    int rc = sl_tok_json_str(j, "prepend_scheme", where, false, &s, err);
    if (rc) return rc;
    if (!s) { /* legacy files: add_prefix_space */
        bool add = true;
        if ((rc = sl_tok_json_bool(j, "add_prefix_space", where, &add, err))) return rc;
        *out = add ? SL_PREPEND_ALWAYS : SL_PREPEND_NEVER;
        return SL_OK;
    }
    if (!strcmp(s, "always")) *out = SL_PREPEND_ALWAYS;
    else if (!strcmp(s, "first")) *out = SL_PREPEND_FIRST;
    else if (!strcmp(s, "never")) *out = SL_PREPEND_NEVER;
    else return sl_err_set(err, SL_EFORMAT, "%s.prepend_scheme: unknown value \"%s\" (expected always, first or never)", where, s);
    return SL_OK;
}
