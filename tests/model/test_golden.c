/* test_golden.c -- the CPU forward pass against transformers' own outputs.
 *
 * For a fixture folder (config.json, model.safetensors, golden.json written by
 * tools/make_fixtures.py or tools/make_smollm2_golden.py), checks that:
 *   - a prefill of each whole recorded sequence gives transformers' top-5
 *     logprobs at every position (within 1e-4);
 *   - greedy decoding, with the prompt prefilled in chunks and KV blocks
 *     scattered over the pool, gives transformers' tokens and per-step top-5;
 *   - all sequences batched into one step give the same as one at a time.
 * Usage: test_golden MODEL_DIR [GOLDEN_JSON] [TOLERANCE] [highest|medium] [KV_DTYPE] [cpu|cuda] [WEIGHT_DTYPE]
 * (GOLDEN_JSON defaults to MODEL_DIR/golden.json; WEIGHT_DTYPE converts the matrices at load as --dtype
 * does: on cuda, bfloat16 weights make the activations bfloat16 too). On cuda it skips where no GPU is
 * visible. */
#include <jansson.h>
#include <math.h>

#include "backend/backend.h"
#ifdef SHARDLM_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "model/model.h"
#include "test.h"
#include "util/fs.h"

#define BLOCK 16
#define MAX_LEN 256
#define MAX_SEQS 8

static double g_tol = 1e-4;
static double g_worst;   /* the largest |logprob - transformers'| seen, printed at the end */
static sl_model g_model;
static json_t *g_golden;
static int g_vocab;

/* tools/make_smollm2_golden.py records {"cases": [{prompt_ids, greedy_ids, top5}]};
 * give it the shape of make_fixtures.py's {"sequences": [{prompt, greedy, steps}]}. */
static void normalize_golden(json_t *g) {
    json_t *cases = json_object_get(g, "cases");
    if (!cases || json_object_get(g, "sequences")) return;
    json_t *seqs = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        json_array_append_new(seqs, json_pack("{sOsOsO}", "prompt", json_object_get(c, "prompt_ids"), "greedy",
                                              json_object_get(c, "greedy_ids"), "steps", json_object_get(c, "top5")));
    }
    json_object_set_new(g, "sequences", seqs);
}

/* Block b of sequence s: scattered so that neighbours are never adjacent. */
static int32_t block_id(int s, int b) { return (int32_t)((b * MAX_SEQS + s) * 7 % (MAX_SEQS * (MAX_LEN / BLOCK))); }

static void log_softmax(const float *logits, int n, double *out) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < n; i++) sum += exp(logits[i] - mx);
    for (int i = 0; i < n; i++) out[i] = logits[i] - mx - log(sum);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

/* Our logprobs of the recorded top-5 ids equal the recorded values. */
static int check_top5(const float *logits, const json_t *top5, const char *where, int index) {
    double *lp = malloc(sizeof(double) * (size_t)g_vocab);
    log_softmax(logits, g_vocab, lp);
    int ok = 1;
    for (size_t i = 0; i < json_array_size(top5); i++) {
        const json_t *pair = json_array_get(top5, i);
        int id = (int)json_integer_value(json_array_get(pair, 0));
        double want = json_real_value(json_array_get(pair, 1));
        if (fabs(lp[id] - want) > g_worst) g_worst = fabs(lp[id] - want);
        if (fabs(lp[id] - want) > g_tol) {
            fprintf(stderr, "%s %d: logprob of token %d is %.7f, transformers %.7f\n", where, index, id, lp[id], want);
            ok = 0;
        }
    }
    int want_top = (int)json_integer_value(json_array_get(json_array_get(top5, 0), 0));
    double lp_top = json_real_value(json_array_get(json_array_get(top5, 0), 1));
    double lp_second = json_real_value(json_array_get(json_array_get(top5, 1), 1));
    /* A near-tie may flip within tolerance; anything else must agree. */
    if (argmax(logits, g_vocab) != want_top && lp_top - lp_second > 2 * g_tol) {
        fprintf(stderr, "%s %d: argmax %d, transformers %d\n", where, index, argmax(logits, g_vocab), want_top);
        ok = 0;
    }
    free(lp);
    return ok;
}

static void ids_of(const json_t *arr, int32_t *out, int *n) {
    *n = (int)json_array_size(arr);
    for (int i = 0; i < *n; i++) out[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
}

/* One step over several sequences, each contributing tokens [from, to) of its
 * ids; logits for every step token when all_logits, else the last of each. */
typedef struct step_seq { int seq; const int32_t *ids; int from, to; } step_seq;

static int run_step(const step_seq *seqs, int n_seqs, int all_logits, float *logits) {
    static int32_t tokens[MAX_LEN * MAX_SEQS], pos[MAX_LEN * MAX_SEQS], slots[MAX_LEN * MAX_SEQS];
    int32_t qs[MAX_SEQS + 1], ctx[MAX_SEQS], tables[MAX_SEQS * (MAX_LEN / BLOCK)], rows[MAX_LEN * MAX_SEQS];
    const int max_blocks = MAX_LEN / BLOCK;
    int n = 0, n_logits = 0;
    for (int s = 0; s < n_seqs; s++) {
        qs[s] = n;
        for (int b = 0; b < max_blocks; b++) tables[s * max_blocks + b] = block_id(seqs[s].seq, b);
        for (int j = seqs[s].from; j < seqs[s].to; j++, n++) {
            tokens[n] = seqs[s].ids[j];
            pos[n] = j;
            slots[n] = block_id(seqs[s].seq, j / BLOCK) * BLOCK + j % BLOCK;
            if (all_logits) rows[n_logits++] = n;
        }
        ctx[s] = seqs[s].to;
        if (!all_logits) rows[n_logits++] = n - 1;
    }
    qs[n_seqs] = n;
    sl_batch batch = {.n_tokens = n, .tokens = tokens, .positions = pos, .slots = slots, .n_seqs = n_seqs,
                      .max_blocks = max_blocks, .query_start = qs, .context_len = ctx, .block_tables = tables,
                      .n_logits = n_logits, .logits_rows = rows};
    sl_err err = {0};
    int rc = sl_model_forward(&g_model, &batch, logits, &err);
    if (rc) fprintf(stderr, "forward: %s\n", err.msg);
    return rc;
}

static void test_prefill_positions(void) {
    const json_t *seqs = json_object_get(g_golden, "sequences");
    float *logits = malloc(sizeof(float) * MAX_LEN * (size_t)g_vocab);
    for (size_t i = 0; i < json_array_size(seqs); i++) {
        const json_t *seq = json_array_get(seqs, i);
        int32_t ids[MAX_LEN];
        int n_prompt, n_greedy;
        ids_of(json_object_get(seq, "prompt"), ids, &n_prompt);
        ids_of(json_object_get(seq, "greedy"), ids + n_prompt, &n_greedy);
        const json_t *positions = json_object_get(seq, "positions");
        if (!positions) continue; /* recorded without per-position logprobs */
        int n = n_prompt + n_greedy;
        /* positions holds one entry per token; logits rows are limited to MAX_SEQS per step,
           so check the whole sequence a window of rows at a time with causal prefills. */
        for (int end = 1; end <= n; end += MAX_SEQS) {
            int last = end + MAX_SEQS - 1 < n ? end + MAX_SEQS - 1 : n;
            step_seq s = {.seq = 0, .ids = ids, .from = 0, .to = last};
            CHECK_EQ_INT(run_step(&s, 1, 0, logits), 0);
            CHECK(check_top5(logits, json_array_get(positions, (size_t)last - 1), "position", last - 1));
        }
    }
    free(logits);
}

static void test_greedy_chunked(void) {
    const json_t *seqs = json_object_get(g_golden, "sequences");
    float *logits = malloc(sizeof(float) * (size_t)g_vocab);
    for (size_t i = 0; i < json_array_size(seqs); i++) {
        const json_t *seq = json_array_get(seqs, i);
        int32_t ids[MAX_LEN], want[MAX_LEN];
        int n_prompt, n_greedy;
        ids_of(json_object_get(seq, "prompt"), ids, &n_prompt);
        ids_of(json_object_get(seq, "greedy"), want, &n_greedy);
        const json_t *steps = json_object_get(seq, "steps");
        int n = 0, chunk = 13; /* odd size: chunks straddle block edges */
        while (n < n_prompt) {
            int to = n + chunk < n_prompt ? n + chunk : n_prompt;
            step_seq s = {.seq = 1, .ids = ids, .from = n, .to = to};
            CHECK_EQ_INT(run_step(&s, 1, 0, logits), 0);
            n = to;
        }
        for (int g = 0; g < n_greedy; g++) {
            /* our argmax is transformers' token, but where the two are within 2 * tolerance (a near tie) */
            CHECK(check_top5(logits, json_array_get(steps, (size_t)g), "greedy step", g));
            ids[n] = want[g]; /* follow transformers' path even after a near-tie */
            n++;
            step_seq s = {.seq = 1, .ids = ids, .from = n - 1, .to = n};
            CHECK_EQ_INT(run_step(&s, 1, 0, logits), 0);
        }
    }
    free(logits);
}

/* Every sequence's full prefill in one step, logits of the last tokens. */
static void test_batched(void) {
    const json_t *seqs = json_object_get(g_golden, "sequences");
    int n_seqs = (int)json_array_size(seqs);
    CHECK(n_seqs <= MAX_SEQS);
    if (n_seqs > MAX_SEQS) n_seqs = MAX_SEQS;
    static int32_t ids[MAX_SEQS][MAX_LEN];
    step_seq step[MAX_SEQS] = {{0}};
    for (int i = 0; i < n_seqs; i++) {
        const json_t *seq = json_array_get(seqs, (size_t)i);
        int n_prompt, n_greedy;
        ids_of(json_object_get(seq, "prompt"), ids[i], &n_prompt);
        ids_of(json_object_get(seq, "greedy"), ids[i] + n_prompt, &n_greedy);
        step[i] = (step_seq){.seq = i + 2, .ids = ids[i], .from = 0, .to = n_prompt + n_greedy - 1};
    }
    float *logits = malloc(sizeof(float) * MAX_SEQS * (size_t)g_vocab);
    CHECK_EQ_INT(run_step(step, n_seqs, 0, logits), 0);
    for (int i = 0; i < n_seqs; i++) {
        const json_t *steps = json_object_get(json_array_get(seqs, (size_t)i), "steps");
        CHECK(check_top5(logits + (size_t)i * g_vocab, json_array_get(steps, json_array_size(steps) - 1), "batched seq", i));
    }
    free(logits);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [GOLDEN_JSON] [TOLERANCE] [highest|medium] [float32|float16|bfloat16] "
                "[cpu|cuda] [WEIGHT_DTYPE]\n", argv[0]);
        return 2;
    }
    if (argc > 3) g_tol = atof(argv[3]);
    char path[1024];
    snprintf(path, sizeof path, "%s/golden.json", argv[1]);
    if (argc > 2) snprintf(path, sizeof path, "%s", argv[2]);
    if (!sl_path_is_dir(argv[1])) {
        fprintf(stderr, "SKIP: no model at %s (tools/get-default-model.sh makes the default one)\n", argv[1]);
        return 77;
    }
    json_error_t jerr;
    g_golden = json_load_file(path, 0, &jerr);
    if (!g_golden) {
        fprintf(stderr, "SKIP: %s: %s\n", path, jerr.text);
        return 77;
    }
    normalize_golden(g_golden);
    const char *backend_name = argc > 6 ? argv[6] : "cpu";
#ifdef SHARDLM_HAVE_CUDA
    if (strcmp(backend_name, "cuda") == 0 && sl_cuda_device_count() == 0) {
        fprintf(stderr, "SKIP: no GPU visible: the CUDA backend is not checked against transformers\n");
        json_decref(g_golden);
        return 77;
    }
#endif
    sl_err err = {0};
    sl_backend backend;
    sl_shard_plan plan;
    sl_model_config cfg;
    if (sl_backend_create(backend_name,
                          &(sl_backend_options){.matmul_bf16_inputs = argc > 4 && strcmp(argv[4], "medium") == 0,
                                                .device_index = -1},
                          &backend, &err) || sl_model_config_load(argv[1], &cfg, &err) ||
        sl_shard_plan_make(&cfg, 0, 1, 0, 1, &plan, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    sl_model_limits limits = {.max_tokens = MAX_LEN * MAX_SEQS, .max_seqs = MAX_SEQS, .max_model_len = MAX_LEN,
                              .block_size = BLOCK, .n_blocks = MAX_SEQS * (MAX_LEN / BLOCK), .kv_dtype = SL_DTYPE_F32};
    for (sl_dtype d = SL_DTYPE_F32; argc > 5 && d <= SL_DTYPE_BF16; d++)
        if (strcmp(argv[5], sl_dtype_name(d)) == 0) limits.kv_dtype = d;
    if (argc > 5 && strcmp(argv[5], sl_dtype_name(limits.kv_dtype)) != 0) {
        fprintf(stderr, "unknown KV cache dtype %s (float32, float16 or bfloat16)\n", argv[5]);
        return 2;
    }
    for (sl_dtype d = SL_DTYPE_F32; argc > 7 && d <= SL_DTYPE_BF16; d++)
        if (strcmp(argv[7], sl_dtype_name(d)) == 0) limits.convert_weights = 1, limits.weight_dtype = d;
    if (argc > 7 && !limits.convert_weights) {
        fprintf(stderr, "unknown weight dtype %s (float32, float16 or bfloat16)\n", argv[7]);
        return 2;
    }
    if (sl_model_open(&g_model, argv[1], &backend, &plan, &limits, NULL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    g_vocab = g_model.config.vocab_size;
    CHECK_EQ_INT(g_model.n_unused_tensors, 0);
    TEST_RUN(test_prefill_positions);
    TEST_RUN(test_greedy_chunked);
    TEST_RUN(test_batched);
    printf("%s on %s: worst |logprob - transformers'| %.3g (tolerance %g)\n", argv[1], backend_name, g_worst, g_tol);
    sl_model_close(&g_model);
    sl_backend_destroy(&backend);
    json_decref(g_golden);
    TEST_EXIT();
}
