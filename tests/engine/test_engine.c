/* test_engine.c -- the engine end to end on a fixture model (token ids).
 *
 * Truth is transformers' greedy continuation (golden.json) and the engine's
 * own one-request-at-a-time results: batching, preemption under a tiny KV
 * cache, prefix-cache hits and n > 1 must change nothing. A randomized run
 * drives the scheduler with arrivals, aborts and lengths, with the engine's
 * invariant checks on after every step. Both also run with 2 and 3
 * micro-batch slots in flight (the pipeline-parallel scheduler, simulated
 * in one process): the same tokens, the same invariants.
 * Usage: test_engine FIXTURE_DIR */
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <unistd.h>

#include "shardlm.h"
#include "test.h"

static const char *g_model;
static int g_slots = 1; /* micro-batch slots the engines opened here keep in flight */
static const char *g_kv_dtype; /* --kv-cache-dtype of the engines opened here; NULL: auto */
/* one KV block of llama_gqa: K and V, 3 layers, 2 KV heads of 16, 16 tokens, f32 (half of it in 16 bits) */
#define BLOCK_BYTES (2 * 3 * 2 * 16 * 16 * (g_kv_dtype && strcmp(g_kv_dtype, "float32") != 0 ? 2 : 4))

static sl_engine *open_engine(int64_t kv_bytes, int prefix_caching, int max_seqs, int max_tokens) {
    sl_engine_options o;
    sl_engine_options_init(&o);
    o.model = g_model;
    o.quiet = 1;
    o.debug_checks = 1;
    o.kv_cache_memory = kv_bytes;
    o.enable_prefix_caching = prefix_caching;
    o.max_num_seqs = max_seqs;
    o.max_num_batched_tokens = max_tokens;
    o.max_model_len = 128;
    o.kv_cache_dtype = g_kv_dtype;
    char slots[16];
    snprintf(slots, sizeof slots, "%d", g_slots);
    setenv("SHARDLM_DEBUG_MICROBATCHES", slots, 1);
    sl_engine *e;
    char err[512];
    if (sl_engine_open(&o, &e, err, sizeof err)) {
        fprintf(stderr, "open: %s\n", err);
        return NULL;
    }
    return e;
}

typedef struct result {
    int32_t tokens[128];
    int n_tokens;
    sl_finish_reason finish;
    int n_cached;
    float logprob0;
} result;

/* Submits, then polls to the end; NULL prompt_ids: reuse. */
static uint64_t submit(sl_engine *e, const int32_t *ids, int n, const sl_sampling *p) {
    sl_request r;
    sl_request_init(&r);
    r.prompt_ids = ids;
    r.n_prompt_ids = n;
    if (p) r.params = *p;
    uint64_t id = 0;
    char err[512];
    int rc = sl_engine_submit(e, &r, NULL, NULL, &id, err, sizeof err);
    if (rc) fprintf(stderr, "submit: %s\n", err);
    CHECK_EQ_INT(rc, 0);
    return id;
}

static void collect(sl_engine *e, uint64_t id, result *res, int n_choices) {
    memset(res, 0, sizeof *res * (size_t)n_choices);
    int done = 0;
    sl_output *o;
    while (done < n_choices && sl_engine_poll(e, id, 10000, &o) == 0) {
        result *r = &res[o->index];
        for (int i = 0; i < o->n_tokens && r->n_tokens < 128; i++) r->tokens[r->n_tokens++] = o->token_ids[i];
        if (o->logprobs && r->n_tokens == 1) r->logprob0 = o->logprobs[0];
        if (o->finished) {
            r->finish = o->finish_reason;
            r->n_cached = o->n_cached_tokens;
            done++;
        }
        sl_output_free(o);
    }
    CHECK_EQ_INT(done, n_choices);
}

/* Stats are published after each step: wait until the engine is idle. */
static void wait_idle(sl_engine *e, sl_engine_stats *st) {
    for (int i = 0; i < 2000; i++) {
        sl_engine_get_stats(e, st);
        if (st->n_running + st->n_waiting == 0 && st->n_kv_blocks_used == 0) return;
        usleep(1000);
    }
}

static sl_sampling greedy(int max_tokens) {
    sl_request r;
    sl_request_init(&r);
    r.params.temperature = 0;
    r.params.max_tokens = max_tokens;
    r.params.ignore_eos = 1;
    return r.params;
}

static void read_golden(int32_t prompts[][64], int *n_prompt, int32_t want[][32], int *n_want, int *n_seqs) {
    char path[1024];
    snprintf(path, sizeof path, "%s/golden.json", g_model);
    json_t *g = json_load_file(path, 0, NULL);
    json_t *seqs = json_object_get(g, "sequences");
    *n_seqs = (int)json_array_size(seqs);
    for (int s = 0; s < *n_seqs; s++) {
        json_t *p = json_object_get(json_array_get(seqs, (size_t)s), "prompt");
        json_t *w = json_object_get(json_array_get(seqs, (size_t)s), "greedy");
        n_prompt[s] = (int)json_array_size(p);
        n_want[s] = (int)json_array_size(w);
        for (int i = 0; i < n_prompt[s]; i++) prompts[s][i] = (int32_t)json_integer_value(json_array_get(p, (size_t)i));
        for (int i = 0; i < n_want[s]; i++) want[s][i] = (int32_t)json_integer_value(json_array_get(w, (size_t)i));
    }
    json_decref(g);
}

/* Greedy continuations equal transformers', submitted together. */
static void test_golden_batched(void) {
    int32_t prompts[8][64], want[8][32];
    int n_prompt[8], n_want[8], n_seqs;
    read_golden(prompts, n_prompt, want, n_want, &n_seqs);
    sl_engine *e = open_engine(0, 1, 8, 64);
    CHECK(e != NULL);
    if (!e) return;
    uint64_t ids[8];
    sl_sampling p = greedy(16);
    for (int s = 0; s < n_seqs; s++) ids[s] = submit(e, prompts[s], n_prompt[s], &p);
    for (int s = 0; s < n_seqs; s++) {
        result r;
        collect(e, ids[s], &r, 1);
        CHECK_EQ_INT(r.n_tokens, n_want[s]);
        CHECK_EQ_INT(r.finish, SL_FINISH_LENGTH);
        for (int i = 0; i < r.n_tokens && i < n_want[s]; i++) CHECK_EQ_INT(r.tokens[i], want[s][i]);
    }
    sl_engine_close(e);
}

static uint64_t g_rng = 12345;
static int32_t rnd(int n) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (int32_t)((g_rng >> 33) % (uint64_t)n);
}

#define N_REQ 12
static int32_t g_prompts[N_REQ][100];
static int g_lens[N_REQ];

static sl_sampling request_params(int i) {
    sl_sampling p = greedy(10 + i % 7);
    if (i % 2) { /* seeded sampling */
        p.temperature = 0.9f;
        p.top_p = 0.95f;
        p.top_k = 50;
        p.seed = 1000 + i;
    }
    if (i % 3 == 0) p.repetition_penalty = 1.3f;
    return p;
}

/* Results of each request alone on a roomy engine, one step at a time. */
static void run_alone(result *out) {
    const int slots = g_slots;
    g_slots = 1;
    sl_engine *e = open_engine(0, 0, 8, 256);
    g_slots = slots;
    if (!e) return;
    for (int i = 0; i < N_REQ; i++) {
        sl_sampling p = request_params(i);
        collect(e, submit(e, g_prompts[i], g_lens[i], &p), &out[i], 1);
    }
    sl_engine_close(e);
}

static void check_same(const result *a, const result *b, const char *what) {
    for (int i = 0; i < N_REQ; i++) {
        bool same = a[i].n_tokens == b[i].n_tokens && memcmp(a[i].tokens, b[i].tokens, sizeof(int32_t) * (size_t)a[i].n_tokens) == 0;
        if (!same) fprintf(stderr, "%s: request %d differs\n", what, i);
        CHECK(same);
    }
}

/* Batched, with a budget forcing chunked prefill, and with a KV cache so
 * small that sequences are preempted and recomputed: same tokens. */
static void test_batched_and_preempted_equal_alone(void) {
    for (int i = 0; i < N_REQ; i++) {
        g_lens[i] = 5 + rnd(90);
        for (int j = 0; j < g_lens[i]; j++) g_prompts[i][j] = 3 + rnd(500);
    }
    result alone[N_REQ], together[N_REQ], tight[N_REQ];
    run_alone(alone);
    struct { int64_t kv; int seqs, tokens; result *out; const char *name; } runs[] = {
        {0, 8, 48, together, "batched, chunked prefill"},
        {BLOCK_BYTES * 9, 8, 64, tight, "9-block KV cache"},
    };
    for (size_t k = 0; k < 2; k++) {
        sl_engine *e = open_engine(runs[k].kv, 1, runs[k].seqs, runs[k].tokens);
        CHECK(e != NULL);
        if (!e) return;
        uint64_t ids[N_REQ];
        for (int i = 0; i < N_REQ; i++) {
            sl_sampling p = request_params(i);
            ids[i] = submit(e, g_prompts[i], g_lens[i], &p);
        }
        for (int i = 0; i < N_REQ; i++) collect(e, ids[i], &runs[k].out[i], 1);
        sl_engine_stats st;
        wait_idle(e, &st);
        if (k == 1) CHECK(st.n_preemptions > 0);
        CHECK_EQ_INT(st.n_kv_blocks_used, 0);
        sl_engine_close(e);
        check_same(alone, runs[k].out, runs[k].name);
    }
}

/* A repeated prompt reuses its blocks and gives the same tokens. */
static void test_prefix_cache(void) {
    sl_engine *e = open_engine(0, 1, 4, 64);
    if (!e) return;
    int32_t prompt[70];
    for (int i = 0; i < 70; i++) prompt[i] = 3 + rnd(500);
    sl_sampling p = greedy(8);
    result a, b;
    collect(e, submit(e, prompt, 70, &p), &a, 1);
    collect(e, submit(e, prompt, 70, &p), &b, 1);
    CHECK_EQ_INT(a.n_cached, 0);
    CHECK_EQ_INT(b.n_cached, 64); /* 4 full blocks of 16; the last token is always computed */
    CHECK(a.n_tokens == b.n_tokens && memcmp(a.tokens, b.tokens, sizeof(int32_t) * (size_t)a.n_tokens) == 0);
    sl_engine_stats st;
    sl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.prefix_cache_hits, 64);
    CHECK_EQ_INT(st.prefix_cache_queries, 140);
    sl_engine_close(e);
}

/* n > 1: seeded choices are reproducible, greedy choices identical. */
static void test_n_choices(void) {
    sl_engine *e = open_engine(0, 0, 8, 64);
    if (!e) return;
    int32_t prompt[40];
    for (int i = 0; i < 40; i++) prompt[i] = 3 + rnd(500);
    sl_sampling p = greedy(12);
    p.n = 3;
    p.temperature = 1.0f;
    p.seed = 7;
    result a[3], b[3];
    collect(e, submit(e, prompt, 40, &p), a, 3);
    collect(e, submit(e, prompt, 40, &p), b, 3);
    for (int i = 0; i < 3; i++) CHECK(memcmp(a[i].tokens, b[i].tokens, sizeof a[i].tokens) == 0);
    CHECK(memcmp(a[0].tokens, a[1].tokens, sizeof a[0].tokens) != 0);
    p.temperature = 0;
    collect(e, submit(e, prompt, 40, &p), a, 3);
    CHECK(memcmp(a[0].tokens, a[2].tokens, sizeof a[0].tokens) == 0 && a[0].n_tokens == 12);
    sl_engine_close(e);
}

/* Stop tokens, EOS, min_tokens, logprobs, and what is refused at submission. */
static void test_stops_and_validation(void) {
    sl_engine *e = open_engine(0, 1, 4, 64);
    if (!e) return;
    int32_t prompt[10] = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
    sl_sampling p = greedy(20);
    result r;
    collect(e, submit(e, prompt, 10, &p), &r, 1);
    int32_t third = r.tokens[2];
    p.stop_token_ids = &third;
    p.n_stop_token_ids = 1;
    p.logprobs = 2;
    result s;
    collect(e, submit(e, prompt, 10, &p), &s, 1);
    CHECK_EQ_INT(s.finish, SL_FINISH_STOP);
    CHECK_EQ_INT(s.n_tokens, 3);
    CHECK(s.logprob0 < 0);
    p.min_tokens = 5; /* the stop token may not be drawn before 5 tokens */
    collect(e, submit(e, prompt, 10, &p), &s, 1);
    CHECK(s.n_tokens >= 5);
    for (int i = 0; i < 4; i++) CHECK(s.tokens[i] != third);

    sl_request req;
    sl_request_init(&req);
    char err[512];
    uint64_t id;
    req.prompt_ids = prompt;
    req.n_prompt_ids = 10;
    req.params.max_tokens = 500;
    CHECK_EQ_INT(sl_engine_submit(e, &req, NULL, NULL, &id, err, sizeof err), -1);
    CHECK_CONTAINS(err, "maximum context length is 128 tokens");
    req.params.max_tokens = 5;
    req.params.temperature = -1;
    CHECK(sl_engine_submit(e, &req, NULL, NULL, &id, err, sizeof err) != 0);
    CHECK_CONTAINS(err, "temperature");
    sl_request_init(&req);
    int32_t bad = 100000;
    req.prompt_ids = &bad;
    req.n_prompt_ids = 1;
    CHECK(sl_engine_submit(e, &req, NULL, NULL, &id, err, sizeof err) != 0);
    CHECK_CONTAINS(err, "outside the vocabulary");
    req.prompt = "text";
    CHECK(sl_engine_submit(e, &req, NULL, NULL, &id, err, sizeof err) != 0);
    CHECK_CONTAINS(err, "no tokenizer");
    sl_engine_close(e);
}

/* Thousands of random arrivals, aborts and lengths against a small cache;
 * the engine checks its invariants after every step (a violation kills it,
 * which the final checks see). */
static void test_randomized_scheduler(void) {
    sl_engine *e = open_engine(BLOCK_BYTES * 24, 1, 16, 96);
    if (!e) return;
    enum { N = 2000 };
    static uint64_t ids[N];
    static int n_choices[N];
    static int32_t base[64];
    for (int i = 0; i < 64; i++) base[i] = 3 + rnd(500);
    int finished = 0, aborted = 0;
    for (int i = 0; i < N; i++) {
        int32_t prompt[100];
        int n = 1 + rnd(80);
        int shared = rnd(2) ? rnd(n) : 0; /* shared prefixes exercise the cache */
        for (int j = 0; j < n; j++) prompt[j] = j < shared ? base[j % 64] : 3 + rnd(500);
        sl_sampling p = greedy(1 + rnd(20));
        p.n = 1 + (rnd(8) == 0);
        if (rnd(2)) p.temperature = 1.0f;
        ids[i] = submit(e, prompt, n, &p);
        n_choices[i] = p.n;
        if (rnd(5) == 0) sl_engine_abort(e, ids[rnd(i + 1)]);
        if (i % 50 == 49) { /* drain what has finished so far, then go on */
            for (int k = i - 49; k <= i; k++) {
                sl_output *o;
                int choices_done = 0;
                while (choices_done < n_choices[k] && sl_engine_poll(e, ids[k], 20000, &o) == 0) {
                    if (o->finished) {
                        choices_done++;
                        finished += o->finish_reason != SL_FINISH_ABORT;
                        aborted += o->finish_reason == SL_FINISH_ABORT;
                    } else if (rnd(24) == 0) { /* running now, perhaps in a step in flight */
                        sl_engine_abort(e, ids[k]);
                    }
                    sl_output_free(o);
                }
                CHECK_EQ_INT(choices_done, n_choices[k]);
            }
        }
    }
    sl_engine_stats st;
    wait_idle(e, &st);
    CHECK_EQ_INT(st.n_running + st.n_waiting, 0);
    CHECK_EQ_INT(st.n_kv_blocks_used, 0);
    CHECK(finished > 0 && aborted > 0);
    int32_t one = 5;
    sl_sampling p = greedy(1);
    result r;
    collect(e, submit(e, &one, 1, &p), &r, 1); /* still alive: no invariant broke */
    CHECK_EQ_INT(r.n_tokens, 1);
    fprintf(stderr, "randomized: %d finished, %d aborted, %lld preemptions, %lld steps\n", finished, aborted,
            (long long)st.n_preemptions, (long long)st.n_steps);
    sl_engine_close(e);
}

/* A float16 KV cache holds twice the blocks in the same bytes, and batching,
 * chunked prefill and preemption change no token against the same cache
 * type alone; an unknown type is refused by name. */
static void test_kv_cache_float16(void) {
    g_kv_dtype = "float16";
    sl_engine *e = open_engine(2 * 3 * 2 * 16 * 16 * 4 * 9, 1, 8, 64); /* 9 float32 blocks' bytes */
    CHECK(e != NULL);
    if (e) {
        sl_engine_info info;
        sl_engine_get_info(e, &info);
        CHECK_EQ_INT(info.n_kv_blocks, 18);
        CHECK(strcmp(info.kv_cache_dtype, "float16") == 0);
        sl_engine_close(e);
    }
    test_batched_and_preempted_equal_alone();
    sl_engine_options o;
    sl_engine_options_init(&o);
    o.model = g_model;
    o.quiet = 1;
    o.kv_cache_dtype = "fp8";
    char err[512] = "";
    CHECK(sl_engine_open(&o, &e, err, sizeof err) != 0);
    CHECK(strstr(err, "--kv-cache-dtype must be auto, float32, bfloat16 or float16, not \"fp8\"") != NULL);
    g_kv_dtype = NULL;
}

/* The scheduler with steps in flight: sequences in one step at a time,
 * aborts of in-flight sequences, preemption around them. */
static void test_micro_batches(void) {
    for (g_slots = 2; g_slots <= 3; g_slots++) {
        fprintf(stderr, "%d micro-batch slots:\n", g_slots);
        test_batched_and_preempted_equal_alone();
        test_randomized_scheduler();
    }
    g_slots = 1;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    g_model = argv[1];
    TEST_RUN(test_golden_batched);
    TEST_RUN(test_batched_and_preempted_equal_alone);
    TEST_RUN(test_prefix_cache);
    TEST_RUN(test_n_choices);
    TEST_RUN(test_stops_and_validation);
    TEST_RUN(test_randomized_scheduler);
    TEST_RUN(test_micro_batches);
    TEST_RUN(test_kv_cache_float16);
    TEST_EXIT();
}
