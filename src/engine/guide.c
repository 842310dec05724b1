/* guide.c -- structured output in the engine (guide.h): the grammar cache,
 * the vocabulary's token trie, and the mask worker.
 *
 * The cache is a short list searched by key (the kind, then the text, or
 * each choice followed by a NUL): requests of one application repeat a few
 * schemas, and a compile costs far more than a scan. A miss compiles
 * outside the lock, so a long schema never holds up other submitters.
 *
 * Each grammar carries a mask cache (grammar/matcher.h): the tokens each
 * grammar position takes or refuses on its own, so a step's mask walks only
 * the few tokens that depend on what follows.
 *
 * The workers are a small pool (guide.h says how many), started with the
 * first mask: they fill a step's masks, and count what each allows, while
 * the engine thread issues the step's forward pass. A step's rows are
 * claimed one at a time through an atomic counter, so each row (its matcher,
 * its mask) is touched by one thread; the mask cache serves them all. The
 * thread that waits for the masks claims rows too when there are several
 * workers (with one, it waits as the engine always did). Whoever finishes
 * the last claimed row of a step marks it done. Idle workers sleep on a
 * condition variable; a worker takes each step once (job_seq). */
#include "engine/guide.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/sample.h"
#include "grammar/json_schema.h"

#define GUIDE_CACHE_UNUSED 32        /* grammars kept with no request holding them */
#define GUIDE_MAX_TOKEN_BYTES 1024   /* longer tokens are never allowed by a grammar */
#define GUIDE_MAX_EOS 16
#define GUIDE_MASK_CACHE_BYTES (16u << 20) /* per grammar: its cached masks (typically KiBs) stop growing here */
#define GUIDE_DEFAULT_MAX_THREADS 8  /* the engine's choice: min(8, online CPUs - 1), at least 1 */
#define GUIDE_MAX_THREADS 256        /* SHARDLM_GUIDE_THREADS above this is refused */

struct sl_guide_grammar {
    char *key;
    size_t key_len;
    sl_grammar *g;
    sl_mask_cache *masks;            /* token sets per grammar position, shared by its requests */
    int refs;
    uint64_t last_used;
    struct sl_guide_grammar *next;
};

struct sl_guides {
    const sl_tokenizer *tok;
    int32_t eos_ids[GUIDE_MAX_EOS];
    int n_eos, vocab;

    pthread_mutex_t mu;              /* the cache and the trie's construction */
    sl_token_trie *trie;             /* built with the first grammar; immutable after */
    sl_guide_grammar *cache;
    uint64_t clock;

    pthread_mutex_t wmu;             /* the workers' job: the fields below but next_row */
    pthread_cond_t work;             /* a step is posted, or quit */
    pthread_cond_t done;             /* the step's last row is done */
    pthread_t *workers;              /* [n_threads], started with the first mask */
    int n_threads, n_started;
    bool busy, quit;                 /* busy: a step's masks are posted and not all done */
    uint64_t job_seq;                /* counts the steps posted */
    int n_active;                    /* threads inside the step's rows */
    sl_guide_state **jobs;           /* [cap_jobs]: the step's states; grows to the largest step */
    int n_jobs, cap_jobs;
    atomic_int next_row;             /* the step's next unclaimed row */
};

/* ---- the vocabulary ---- */

static int build_trie(sl_guides *gs, sl_err *err) {
    const uint32_t n = (uint32_t)sl_tokenizer_vocab_size(gs->tok);
    sl_token_bytes *tokens = calloc(n ? n : 1, sizeof *tokens);
    uint8_t *arena = NULL;
    size_t used = 0, cap = (size_t)n * 8 + GUIDE_MAX_TOKEN_BYTES;
    size_t *off = calloc((size_t)n + 1, sizeof *off);
    int rc = tokens && off && (arena = malloc(cap)) ? SL_OK : sl_err_set(err, SL_ENOMEM, "out of memory");
    for (uint32_t id = 0; !rc && id < n; id++) {
        size_t len = 0;
        if (cap - used < GUIDE_MAX_TOKEN_BYTES) {
            uint8_t *grown = realloc(arena, cap * 2);
            if (!grown) rc = sl_err_set(err, SL_ENOMEM, "out of memory");
            else arena = grown, cap *= 2;
        }
        const bool special = sl_tokenizer_is_special(gs->tok, (int32_t)id) || !sl_tokenizer_id_to_token(gs->tok, (int32_t)id);
        if (!rc && !special && sl_tokenizer_token_bytes(gs->tok, (int32_t)id, arena + used, GUIDE_MAX_TOKEN_BYTES, &len, NULL))
            len = 0; /* too long for any grammar: left out like a special token */
        off[id] = used;
        tokens[id].n_bytes = (uint32_t)len;
        tokens[id].special = special || len == 0;
        used += len;
    }
    for (uint32_t id = 0; !rc && id < n; id++) tokens[id].bytes = arena + off[id]; /* the arena has stopped moving */
    int32_t eos[GUIDE_MAX_EOS];
    uint32_t n_eos = 0;
    for (int i = 0; i < gs->n_eos; i++)
        if (gs->eos_ids[i] >= 0 && (uint32_t)gs->eos_ids[i] < n) eos[n_eos++] = gs->eos_ids[i];
    if (!rc) rc = sl_token_trie_create(tokens, n, eos, n_eos, &gs->trie, err);
    free(tokens);
    free(arena);
    free(off);
    return rc;
}

/* SHARDLM_GUIDE_THREADS when it is a count in [1, GUIDE_MAX_THREADS], else
 * min(8, online CPUs - 1), at least 1. */
static int mask_threads(void) {
    const char *env = getenv("SHARDLM_GUIDE_THREADS");
    if (env && *env) {
        char *end;
        const long n = strtol(env, &end, 10);
        if (!*end && n >= 1 && n <= GUIDE_MAX_THREADS) return (int)n;
    }
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const long n = cpus - 1 < GUIDE_DEFAULT_MAX_THREADS ? cpus - 1 : GUIDE_DEFAULT_MAX_THREADS;
    return n > 1 ? (int)n : 1;
}

int sl_guides_create(const sl_tokenizer *tok, const int32_t *eos_ids, int n_eos, int vocab, sl_guides **out,
                     sl_err *err) {
    sl_guides *gs = calloc(1, sizeof *gs);
    if (!gs) return sl_err_set(err, SL_ENOMEM, "out of memory");
    gs->n_threads = mask_threads();
    if (!(gs->workers = calloc((size_t)gs->n_threads, sizeof *gs->workers))) {
        free(gs);
        return sl_err_set(err, SL_ENOMEM, "out of memory");
    }
    gs->tok = tok;
    gs->vocab = vocab;
    for (int i = 0; i < n_eos && gs->n_eos < GUIDE_MAX_EOS; i++) gs->eos_ids[gs->n_eos++] = eos_ids[i];
    pthread_mutex_init(&gs->mu, NULL);
    pthread_mutex_init(&gs->wmu, NULL);
    pthread_cond_init(&gs->work, NULL);
    pthread_cond_init(&gs->done, NULL);
    atomic_init(&gs->next_row, 0);
    *out = gs;
    return SL_OK;
}

static void grammar_free(sl_guide_grammar *gg) {
    sl_mask_cache_free(gg->masks);
    sl_grammar_free(gg->g);
    free(gg->key);
    free(gg);
}

void sl_guides_free(sl_guides *gs) {
    if (!gs) return;
    pthread_mutex_lock(&gs->wmu);
    gs->quit = true;
    pthread_cond_broadcast(&gs->work);
    pthread_mutex_unlock(&gs->wmu);
    for (int i = 0; i < gs->n_started; i++) pthread_join(gs->workers[i], NULL);
    free(gs->workers);
    for (sl_guide_grammar *gg = gs->cache, *next; gg; gg = next) {
        next = gg->next;
        grammar_free(gg);
    }
    sl_token_trie_free(gs->trie);
    free(gs->jobs);
    pthread_cond_destroy(&gs->done);
    pthread_cond_destroy(&gs->work);
    pthread_mutex_destroy(&gs->wmu);
    pthread_mutex_destroy(&gs->mu);
    free(gs);
}

/* ---- compiling, with the cache ---- */

static const char *kind_name(sl_guide_kind k) {
    switch (k) {
    case SL_GUIDE_JSON: return "JSON schema";
    case SL_GUIDE_JSON_OBJECT: return "JSON object";
    case SL_GUIDE_REGEX: return "regex";
    case SL_GUIDE_CHOICE: return "choice";
    case SL_GUIDE_GRAMMAR: return "grammar";
    default: return "guide";
    }
}

/* The cache key: the kind's byte, then the text or each choice with its NUL. */
static int make_key(const sl_guide *spec, char **key, size_t *len, sl_err *err) {
    size_t n = 1;
    if (spec->kind == SL_GUIDE_CHOICE)
        for (int i = 0; i < spec->n_choices; i++) n += strlen(spec->choices[i]) + 1;
    else if (spec->text) n += strlen(spec->text);
    char *k = malloc(n + 1);
    if (!k) return sl_err_set(err, SL_ENOMEM, "out of memory");
    size_t at = 0;
    k[at++] = (char)spec->kind;
    if (spec->kind == SL_GUIDE_CHOICE)
        for (int i = 0; i < spec->n_choices; i++) {
            size_t l = strlen(spec->choices[i]) + 1;
            memcpy(k + at, spec->choices[i], l);
            at += l;
        }
    else if (spec->text) memcpy(k + at, spec->text, n - 1), at = n;
    *key = k;
    *len = at;
    return SL_OK;
}

static int check_spec(const sl_guide *spec, sl_err *err) {
    const char *what = kind_name(spec->kind);
    switch (spec->kind) {
    case SL_GUIDE_JSON:
    case SL_GUIDE_REGEX:
    case SL_GUIDE_GRAMMAR:
        if (!spec->text || !*spec->text) return sl_err_set(err, SL_EINVAL, "structured output: the %s is empty", what);
        return SL_OK;
    case SL_GUIDE_JSON_OBJECT: return SL_OK;
    case SL_GUIDE_CHOICE:
        if (spec->n_choices < 1 || !spec->choices)
            return sl_err_set(err, SL_EINVAL, "structured output: choice needs at least one choice");
        for (int i = 0; i < spec->n_choices; i++)
            if (!spec->choices[i] || !*spec->choices[i])
                return sl_err_set(err, SL_EINVAL, "structured output: choice %d is empty", i);
        return SL_OK;
    default: return sl_err_set(err, SL_EINVAL, "structured output: unknown kind %d", (int)spec->kind);
    }
}

static int compile(const sl_guide *spec, sl_grammar **g, sl_err *err) {
    switch (spec->kind) {
    case SL_GUIDE_JSON: {
        json_error_t jerr;
        json_t *schema = json_loads(spec->text, JSON_DECODE_ANY, &jerr);
        if (!schema)
            return sl_err_set(err, SL_EINVAL, "structured output: the JSON schema is not valid JSON: %s (line %d, column %d)",
                              jerr.text, jerr.line, jerr.column);
        int rc = sl_grammar_from_json_schema(schema, g, err);
        json_decref(schema);
        return rc;
    }
    case SL_GUIDE_JSON_OBJECT: return sl_grammar_json_object(g, err);
    case SL_GUIDE_REGEX: return sl_grammar_from_regex(spec->text, strlen(spec->text), g, err);
    case SL_GUIDE_CHOICE: return sl_grammar_from_choices(spec->choices, (size_t)spec->n_choices, g, err);
    case SL_GUIDE_GRAMMAR: return sl_grammar_parse_any(spec->text, strlen(spec->text), g, err); /* GBNF or Lark */
    default: return sl_err_set(err, SL_EINTERNAL, "structured output: unknown kind");
    }
}

/* Under mu: the cached grammar of key, now referenced once more, or NULL. */
static sl_guide_grammar *cache_take(sl_guides *gs, const char *key, size_t len) {
    for (sl_guide_grammar *gg = gs->cache; gg; gg = gg->next)
        if (gg->key_len == len && !memcmp(gg->key, key, len)) {
            gg->refs++;
            gg->last_used = ++gs->clock;
            return gg;
        }
    return NULL;
}

/* Under mu: frees the least recently used grammars no request holds, beyond the allowance. */
static void cache_trim(sl_guides *gs) {
    for (;;) {
        int unused = 0;
        sl_guide_grammar **oldest = NULL;
        for (sl_guide_grammar **p = &gs->cache; *p; p = &(*p)->next)
            if ((*p)->refs == 0) {
                unused++;
                if (!oldest || (*p)->last_used < (*oldest)->last_used) oldest = p;
            }
        if (unused <= GUIDE_CACHE_UNUSED) return;
        sl_guide_grammar *victim = *oldest;
        *oldest = victim->next;
        grammar_free(victim);
    }
}

int sl_guides_compile(sl_guides *gs, const sl_guide *spec, sl_guide_grammar **out, sl_err *err) {
    *out = NULL;
    if (!gs->tok) return sl_err_set(err, SL_EINVAL, "structured output needs the model's tokenizer.json, which it lacks");
    int rc = check_spec(spec, err);
    char *key = NULL;
    size_t len = 0;
    if (!rc) rc = make_key(spec, &key, &len, err);
    if (rc) return rc;
    pthread_mutex_lock(&gs->mu);
    if (!gs->trie) rc = build_trie(gs, err);
    sl_guide_grammar *gg = rc ? NULL : cache_take(gs, key, len);
    pthread_mutex_unlock(&gs->mu);
    if (rc || gg) {
        free(key);
        *out = gg;
        return rc;
    }
    sl_grammar *g = NULL;
    sl_mask_cache *masks = NULL;
    if (!(rc = compile(spec, &g, err))) rc = sl_mask_cache_create(g, gs->trie, GUIDE_MASK_CACHE_BYTES, &masks, err);
    if (rc) {
        sl_grammar_free(g);
        if (strncmp(err->msg, "structured output", 17)) {
            char msg[SL_ERR_MSG_MAX];
            snprintf(msg, sizeof msg, "%s", err->msg);
            sl_err_set(err, rc, "structured output: %s", msg);
        }
        free(key);
        return rc;
    }
    pthread_mutex_lock(&gs->mu);
    if (!(gg = cache_take(gs, key, len))) { /* nobody compiled it meanwhile */
        gg = calloc(1, sizeof *gg);
        if (gg) {
            *gg = (sl_guide_grammar){.key = key, .key_len = len, .g = g, .masks = masks, .refs = 1,
                                     .last_used = ++gs->clock, .next = gs->cache};
            gs->cache = gg;
            key = NULL;
            g = NULL;
            masks = NULL;
        } else {
            rc = sl_err_set(err, SL_ENOMEM, "out of memory");
        }
    }
    pthread_mutex_unlock(&gs->mu);
    sl_mask_cache_free(masks);
    sl_grammar_free(g);
    free(key);
    *out = gg;
    return rc;
}

void sl_guides_release(sl_guides *gs, sl_guide_grammar *gg) {
    if (!gg) return;
    pthread_mutex_lock(&gs->mu);
    gg->refs--;
    cache_trim(gs);
    pthread_mutex_unlock(&gs->mu);
}

/* ---- one choice's state ---- */

int sl_guide_state_init(sl_guides *gs, sl_guide_grammar *gg, sl_guide_state *st, sl_err *err) {
    memset(st, 0, sizeof *st);
    int rc = sl_matcher_create(gg->g, 0, &st->matcher, err);
    if (rc) return rc;
    st->masks = gg->masks;
    if (!(st->mask = calloc(((size_t)gs->trie->n_tokens + 31) / 32, sizeof *st->mask)))
        return sl_err_set(err, SL_ENOMEM, "out of memory");
    return SL_OK;
}

void sl_guide_state_destroy(sl_guide_state *st) {
    sl_matcher_free(st->matcher);
    free(st->mask);
    memset(st, 0, sizeof *st);
}

/* Ids a mask can allow: the tokenizer's, below the LM head's rows. */
static int mask_ids(const sl_guides *gs, int vocab) {
    return (int)gs->trie->n_tokens < vocab ? (int)gs->trie->n_tokens : vocab;
}

void sl_guide_apply_mask(const sl_guides *gs, const sl_guide_state *st, float *logits, int vocab) {
    const int n_ids = mask_ids(gs, vocab);
    for (int id = 0; id < n_ids; id++)
        if (!((st->mask[id >> 5] >> (id & 31)) & 1)) logits[id] = -INFINITY;
    for (int id = n_ids; id < vocab; id++) logits[id] = -INFINITY;
}

void sl_guide_copy_mask(const sl_guides *gs, const sl_guide_state *st, uint32_t *dst, int vocab) {
    const int n_ids = mask_ids(gs, vocab);
    const size_t full = (size_t)n_ids / 32, words = sl_sample_mask_words(vocab);
    memcpy(dst, st->mask, full * sizeof *dst);
    size_t w = full;
    if (n_ids % 32) dst[w++] = st->mask[full] & ((1u << (n_ids % 32)) - 1);
    memset(dst + w, 0, (words - w) * sizeof *dst);
}

/* How many ids the state's mask allows. */
static int count_allowed(const sl_guides *gs, const sl_guide_state *st) {
    const int n_ids = mask_ids(gs, gs->vocab);
    int n = 0;
    for (int w = 0; w < n_ids / 32; w++) n += __builtin_popcount(st->mask[w]);
    if (n_ids % 32) n += __builtin_popcount(st->mask[n_ids / 32] & ((1u << (n_ids % 32)) - 1));
    return n;
}

int sl_guide_accept(const sl_guides *gs, sl_guide_state *st, int32_t tok, sl_err *err) {
    const sl_token_trie *t = gs->trie;
    for (uint32_t i = 0; i < t->n_eos; i++)
        if (t->eos_ids[i] == tok) return 1;
    if (tok < 0 || (uint32_t)tok >= t->n_tokens) return 0;
    uint32_t n;
    const uint8_t *bytes = sl_token_trie_bytes(t, tok, &n);
    return n == 0 ? 0 : sl_matcher_accept(st->matcher, bytes, n, err);
}

bool sl_guide_complete(const sl_guide_state *st) { return sl_matcher_is_accepting(st->matcher); }

/* ---- the mask workers ---- */

/* Fills rows of the posted step, claimed one at a time, until none is left.
 * Called outside wmu by a thread counted in n_active. */
static void fill_rows(sl_guides *gs) {
    for (int i; (i = atomic_fetch_add_explicit(&gs->next_row, 1, memory_order_relaxed)) < gs->n_jobs;) {
        sl_guide_state *st = gs->jobs[i];
        st->mask_rc = sl_matcher_fill_mask_cached(st->matcher, st->masks, st->mask, NULL);
        st->n_allowed = st->mask_rc ? 0 : count_allowed(gs, st);
    }
}

/* Under wmu, with the step busy: this thread fills rows with the others;
 * the last one out (every row claimed, so every row done) ends the step. */
static void join_step(sl_guides *gs) {
    gs->n_active++;
    pthread_mutex_unlock(&gs->wmu);
    fill_rows(gs);
    pthread_mutex_lock(&gs->wmu);
    if (--gs->n_active == 0) {
        gs->busy = false;
        pthread_cond_broadcast(&gs->done);
    }
}

static void *mask_worker(void *arg) {
    sl_guides *gs = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&gs->wmu);
    for (;;) {
        while (!gs->quit && (!gs->busy || gs->job_seq == seen)) pthread_cond_wait(&gs->work, &gs->wmu);
        if (gs->quit) break;
        seen = gs->job_seq;
        join_step(gs);
    }
    pthread_mutex_unlock(&gs->wmu);
    return NULL;
}

/* Under wmu: until the posted step's masks are done, helping with its rows
 * when there are several workers. */
static void wait_step(sl_guides *gs) {
    if (gs->busy && gs->n_started > 1) join_step(gs);
    while (gs->busy) pthread_cond_wait(&gs->done, &gs->wmu);
}

int sl_guides_begin_masks(sl_guides *gs, sl_guide_state *const *states, int n, sl_err *err) {
    if (n == 0) return SL_OK;
    for (; gs->n_started < gs->n_threads; gs->n_started++) /* only the engine thread starts them */
        if (pthread_create(&gs->workers[gs->n_started], NULL, mask_worker, gs)) {
            if (gs->n_started > 0) {
                gs->n_threads = gs->n_started; /* fewer workers than asked for */
                break;
            }
            return sl_err_set(err, SL_ENOMEM, "cannot start the structured-output mask thread");
        }
    int rc = SL_OK;
    pthread_mutex_lock(&gs->wmu);
    wait_step(gs); /* an earlier step's masks (pipeline slots) */
    if (n > gs->cap_jobs) { /* grows to the largest step once */
        sl_guide_state **grown = realloc(gs->jobs, sizeof *grown * (size_t)n);
        if (grown) gs->jobs = grown, gs->cap_jobs = n;
        else rc = sl_err_set(err, SL_ENOMEM, "out of memory");
    }
    if (!rc) {
        memcpy(gs->jobs, states, sizeof *states * (size_t)n);
        gs->n_jobs = n;
        atomic_store_explicit(&gs->next_row, 0, memory_order_relaxed); /* published by wmu */
        gs->job_seq++;
        gs->busy = true;
        pthread_cond_broadcast(&gs->work);
    }
    pthread_mutex_unlock(&gs->wmu);
    return rc;
}

void sl_guides_wait_masks(sl_guides *gs) {
    pthread_mutex_lock(&gs->wmu);
    wait_step(gs);
    pthread_mutex_unlock(&gs->wmu);
}
