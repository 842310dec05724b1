/* grammar_bench.c -- what structured output costs on the host, measured
 * through the engine's own path (engine/guide.h):
 *
 *   compile  each schema of SCHEMA_DIR compiled RUNS times into a grammar
 *            (sl_grammar_from_json_schema: the work a new schema text costs
 *            a request; the engine caches it by text after that), median
 *            and p99; and the first request of the process, which also
 *            builds the vocabulary's token trie.
 *   masks    each document of DOCS (JSON lines {"schema": FILE, "text": ...},
 *            conforming outputs as a model writes them) tokenized by the
 *            model's tokenizer and decoded by a guide state token by token:
 *            the time from handing the step's states to the mask worker to
 *            having the masks (sl_guides_begin_masks .. wait_masks), per
 *            step, at a grammar's first request (the mask cache filling) and
 *            at a later one (warm); then BATCH states at once (a step of
 *            BATCH guided sequences), per step. Each document must be
 *            accepted whole and end complete, or the bench fails.
 *
 * Usage: grammar_bench MODEL_DIR SCHEMA_DIR DOCS [RUNS=101] [BATCH=64]
 * Prints one JSON object per line. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/guide.h"
#include "grammar/json_schema.h"
#include "tokenizer/tokenizer.h"
#include "util/progress.h"

#define MAX_STEPS 4096

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of x[0..n) (sorted in place), nearest rank. */
static double quantile(double *x, int n, double q) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    int i = (int)(q * n + 0.999999) - 1;
    return x[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) free(s), s = NULL;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

static void fail(const char *what, const sl_err *err) {
    fprintf(stderr, "grammar_bench: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

static void bench_compile(const char *name, const char *schema_text, int runs) {
    json_error_t jerr;
    json_t *schema = json_loads(schema_text, 0, &jerr);
    if (!schema) fail(name, NULL);
    double *t = malloc(sizeof(double) * (size_t)runs);
    for (int i = 0; i < runs; i++) {
        sl_err err = {0};
        sl_grammar *g = NULL;
        const double t0 = sl_now_s();
        if (sl_grammar_from_json_schema(schema, &g, &err)) fail(name, &err);
        t[i] = (sl_now_s() - t0) * 1e6;
        sl_grammar_free(g);
    }
    printf("{\"what\": \"compile\", \"schema\": \"%s\", \"runs\": %d, \"median_us\": %.1f, \"p99_us\": %.1f}\n", name, runs,
           quantile(t, runs, 0.5), quantile(t, runs, 0.99));
    free(t);
    json_decref(schema);
}

/* One guide state per copy of the document, decoded together token by token; t[step] the mask time. */
static int decode_doc(sl_guides *gs, sl_guide_grammar *gg, const int32_t *ids, int n_ids, int copies, double *t,
                      const char *name) {
    sl_guide_state *st = calloc((size_t)copies, sizeof *st);
    sl_guide_state **ptrs = calloc((size_t)copies, sizeof *ptrs);
    sl_err err = {0};
    for (int c = 0; c < copies; c++) {
        if (sl_guide_state_init(gs, gg, &st[c], &err)) fail(name, &err);
        ptrs[c] = &st[c];
    }
    for (int i = 0; i < n_ids; i++) {
        const double t0 = sl_now_s();
        if (sl_guides_begin_masks(gs, ptrs, copies, &err)) fail(name, &err);
        sl_guides_wait_masks(gs);
        t[i] = (sl_now_s() - t0) * 1e6;
        for (int c = 0; c < copies; c++) {
            if (st[c].mask_rc || !(st[c].mask[ids[i] / 32] >> (ids[i] % 32) & 1u)) {
                fprintf(stderr, "grammar_bench: %s: token %d (step %d) is not in the mask\n", name, ids[i], i);
                exit(1);
            }
            if (sl_guide_accept(gs, &st[c], ids[i], &err) != 1) fail(name, &err);
        }
    }
    if (!sl_guide_complete(&st[0])) {
        fprintf(stderr, "grammar_bench: %s: the document does not complete the grammar\n", name);
        exit(1);
    }
    for (int c = 0; c < copies; c++) sl_guide_state_destroy(&st[c]);
    free(ptrs);
    free(st);
    return n_ids;
}

static void print_steps(const char *what, const char *name, int rows, double *t, int n) {
    double copy[MAX_STEPS];
    memcpy(copy, t, sizeof(double) * (size_t)n);
    double total = 0;
    for (int i = 0; i < n; i++) total += t[i];
    printf("{\"what\": \"%s\", \"doc\": \"%s\", \"rows\": %d, \"steps\": %d, \"median_us\": %.1f, \"p99_us\": %.1f, "
           "\"max_us\": %.1f, \"mean_us\": %.1f}\n",
           what, name, rows, n, quantile(copy, n, 0.5), quantile(copy, n, 0.99), quantile(copy, n, 1.0), total / n);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: grammar_bench MODEL_DIR SCHEMA_DIR DOCS [RUNS=101] [BATCH=64]\n");
        return 2;
    }
    const char *schema_dir = argv[2];
    const int runs = argc > 4 ? atoi(argv[4]) : 101, batch = argc > 5 ? atoi(argv[5]) : 64;
    sl_err err = {0};
    sl_tokenizer *tok = NULL;
    if (sl_tokenizer_load(argv[1], &tok, &err)) fail(argv[1], &err);
    int32_t eos[4];
    int n_eos = 0;
    for (const char *const *s = (const char *const[]){"<|im_end|>", "<|eot_id|>", "</s>", "<|endoftext|>", NULL}; *s; s++)
        if (n_eos < 4 && sl_tokenizer_token_to_id(tok, *s) >= 0) eos[n_eos++] = sl_tokenizer_token_to_id(tok, *s);
    sl_guides *gs = NULL;
    if (sl_guides_create(tok, eos, n_eos, (int)sl_tokenizer_vocab_size(tok), &gs, &err)) fail("guides", &err);

    FILE *docs = fopen(argv[3], "r");
    if (!docs) fail(argv[3], NULL);
    char line[1 << 16], path[4096], seen[64][256];
    int n_seen = 0;
    bool first = true;
    while (fgets(line, sizeof line, docs)) {
        json_error_t jerr;
        json_t *d = json_loads(line, 0, &jerr);
        const char *schema_name = json_string_value(json_object_get(d, "schema"));
        const char *text = json_string_value(json_object_get(d, "text"));
        if (!schema_name || !text) fail("a line of DOCS lacks schema or text", NULL);
        snprintf(path, sizeof path, "%s/%s", schema_dir, schema_name);
        char *schema_text = read_text(path);
        if (!schema_text) fail(path, NULL);
        bool compiled = false;
        for (int i = 0; i < n_seen; i++) compiled |= strcmp(seen[i], schema_name) == 0;
        if (!compiled && n_seen < 64) {
            bench_compile(schema_name, schema_text, runs);
            snprintf(seen[n_seen++], sizeof seen[0], "%s", schema_name);
        }

        /* the engine's compile of a new text: grammar, mask cache (and, the first time, the token trie) */
        sl_guide spec = {.kind = SL_GUIDE_JSON, .text = schema_text};
        sl_guide_grammar *gg = NULL;
        const double t0 = sl_now_s();
        if (sl_guides_compile(gs, &spec, &gg, &err)) fail(schema_name, &err);
        const double first_us = (sl_now_s() - t0) * 1e6;
        if (first) printf("{\"what\": \"first request (token trie + grammar)\", \"us\": %.0f}\n", first_us);
        first = false;

        int32_t *ids = NULL;
        size_t n_ids = 0;
        if (sl_tokenizer_encode(tok, text, strlen(text), false, &ids, &n_ids, &err)) fail("encode", &err);
        if (n_ids > MAX_STEPS) fail("a document of more than 4096 tokens", NULL);
        static double t[MAX_STEPS];
        char name[300];
        snprintf(name, sizeof name, "%s/%zu tokens", schema_name, n_ids);
        decode_doc(gs, gg, ids, (int)n_ids, 1, t, name);
        if (!compiled) print_steps("mask, first request", name, 1, t, (int)n_ids); /* else the cache is warm */
        decode_doc(gs, gg, ids, (int)n_ids, 1, t, name);
        print_steps("mask, warm", name, 1, t, (int)n_ids);
        decode_doc(gs, gg, ids, (int)n_ids, batch, t, name);
        print_steps("masks of a step, warm", name, batch, t, (int)n_ids);
        free(ids);
        sl_guides_release(gs, gg);
        free(schema_text);
        json_decref(d);
    }
    fclose(docs);
    sl_guides_free(gs);
    sl_tokenizer_free(tok);
    return 0;
}
