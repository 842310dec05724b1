/* test_guide.c -- structured output through the engine's C API on the
 * default model (SmolLM2): JSON schema, json_object, regex, choice and GBNF
 * outputs follow their grammar with greedy and random sampling, n > 1,
 * logprobs and min_tokens, under preemption (a KV cache too small for the
 * batch: the same seeded outputs as alone); the backend's sample op with the
 * grammar's mask gives the tokens the host gives from the whole row (a
 * request with logprobs, which keep its rows on the host); bad grammars fail
 * the submit with a message naming the problem; a model without a tokenizer
 * refuses guided requests; many guided requests at once on four mask
 * threads (SHARDLM_GUIDE_THREADS=4) give the outputs of one.
 * (python/tests/test_structured.py checks JSON outputs with `jsonschema`.)
 * Usage: test_guide MODEL_DIR FIXTURE_WITHOUT_TOKENIZER; exits 77 without the model. */
#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

#include "shardlm.h"
#include "test.h"
#include "util/error.h"

static sl_engine *g_e;
static const char *g_model, *g_fixture;

enum { REPLY_TOKENS = 512 }; /* token ids kept per reply */

typedef struct reply {
    char text[4096];
    size_t len;
    sl_finish_reason finish;
    int n_tokens, n_logprobs;
    int32_t token_ids[REPLY_TOKENS];
} reply;

static char *chat_prompt(const char *user) {
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", user);
    char *m = json_dumps(msgs, 0), *prompt = NULL, err[512];
    CHECK_EQ_INT(sl_engine_apply_chat_template(g_e, m, NULL, &prompt, err, sizeof err), 0);
    free(m);
    json_decref(msgs);
    return prompt;
}

/* Submits one request: rc of the submit (err holds its message). */
static int submit(const char *user, sl_sampling p, uint64_t *id, char *err, size_t err_size) {
    char *prompt = chat_prompt(user);
    sl_request r;
    sl_request_init(&r);
    r.prompt = prompt;
    if (p.max_tokens == SL_UNSET) p.max_tokens = 96;
    r.params = p;
    int rc = sl_engine_submit(g_e, &r, NULL, NULL, id, err, err_size);
    free(prompt);
    return rc;
}

/* The outputs of a submitted request, to its end. */
static void collect(uint64_t id, reply *out, int n_out) {
    memset(out, 0, sizeof *out * (size_t)n_out);
    sl_output *o;
    for (int done = 0; done < n_out && sl_engine_poll(g_e, id, 60000, &o) == 0;) {
        reply *c = &out[o->index];
        if (c->len + o->text_len < sizeof c->text) memcpy(c->text + c->len, o->text, o->text_len), c->len += o->text_len;
        for (int i = 0; i < o->n_tokens && c->n_tokens + i < REPLY_TOKENS; i++)
            c->token_ids[c->n_tokens + i] = o->token_ids[i];
        c->n_tokens += o->n_tokens;
        c->n_logprobs += o->logprobs ? o->n_tokens : 0;
        if (o->finished) c->finish = o->finish_reason, done++;
        sl_output_free(o);
    }
}

/* Runs one request to the end: rc of the submit (err holds its message). */
static int run(const char *user, sl_sampling p, reply *out, int n_out, char *err, size_t err_size) {
    uint64_t id;
    memset(out, 0, sizeof *out * (size_t)n_out);
    int rc = submit(user, p, &id, err, err_size);
    if (!rc) collect(id, out, n_out);
    return rc;
}

static sl_sampling greedy(void) {
    sl_request r;
    sl_request_init(&r);
    r.params.temperature = 0;
    return r.params;
}

static const char PERSON[] =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":16},"
    "\"age\":{\"type\":\"integer\"},\"pet\":{\"enum\":[\"cat\",\"dog\",\"none\"]}},"
    "\"required\":[\"name\",\"age\",\"pet\"],\"additionalProperties\":false}";

/* A person object as PERSON describes it. */
static void check_person(const reply *c) {
    json_error_t jerr;
    json_t *v = json_loadb(c->text, c->len, 0, &jerr);
    if (!v) fprintf(stderr, "not JSON: %.*s (%s)\n", (int)c->len, c->text, jerr.text);
    CHECK(v && json_is_object(v));
    CHECK(json_object_size(v) == 3);
    json_t *name = json_object_get(v, "name"), *age = json_object_get(v, "age"), *pet = json_object_get(v, "pet");
    CHECK(json_is_string(name) && json_string_length(name) <= 16);
    CHECK(json_is_integer(age));
    CHECK(json_is_string(pet) && (!strcmp(json_string_value(pet), "cat") || !strcmp(json_string_value(pet), "dog") ||
                                  !strcmp(json_string_value(pet), "none")));
    CHECK_EQ_INT(c->finish, SL_FINISH_STOP);
    json_decref(v);
}

static void test_json_schema(void) {
    sl_sampling p = greedy();
    p.guide = (sl_guide){.kind = SL_GUIDE_JSON, .text = PERSON};
    reply c;
    char err[512];
    CHECK_EQ_INT(run("Describe a person as JSON.", p, &c, 1, err, sizeof err), 0);
    fprintf(stderr, "json schema: %.*s\n", (int)c.len, c.text);
    check_person(&c);
}

/* Random sampling, three choices, logprobs: each choice is its own valid object. */
static void test_json_sampled(void) {
    sl_sampling p = greedy();
    p.temperature = 1.0f;
    p.seed = 7;
    p.n = 3;
    p.logprobs = 2;
    p.guide = (sl_guide){.kind = SL_GUIDE_JSON, .text = PERSON};
    reply c[3];
    char err[512];
    CHECK_EQ_INT(run("Describe a person as JSON.", p, c, 3, err, sizeof err), 0);
    for (int i = 0; i < 3; i++) {
        fprintf(stderr, "choice %d: %.*s\n", i, (int)c[i].len, c[i].text);
        check_person(&c[i]);
        CHECK_EQ_INT(c[i].n_logprobs, c[i].n_tokens);
    }
}

static void test_json_object(void) {
    sl_sampling p = greedy();
    p.temperature = 0.8f;
    p.seed = 3;
    p.max_tokens = 200;
    p.guide = (sl_guide){.kind = SL_GUIDE_JSON_OBJECT};
    reply c;
    char err[512];
    CHECK_EQ_INT(run("Give me a JSON object with two fields.", p, &c, 1, err, sizeof err), 0);
    json_t *v = c.finish == SL_FINISH_STOP ? json_loadb(c.text, c.len, 0, NULL) : NULL;
    if (c.finish == SL_FINISH_STOP) CHECK(v && json_is_object(v));
    else CHECK(c.len > 0 && c.text[0] == '{'); /* cut by max_tokens: an object's start */
    json_decref(v);
}

static void test_choice_and_min_tokens(void) {
    const char *colors[] = {"red", "green", "blue"};
    sl_sampling p = greedy();
    p.min_tokens = 5; /* cannot be met inside the grammar: EOS stays allowed once it is the only way on */
    p.guide = (sl_guide){.kind = SL_GUIDE_CHOICE, .choices = colors, .n_choices = 3};
    reply c;
    char err[512];
    CHECK_EQ_INT(run("What color is the sky?", p, &c, 1, err, sizeof err), 0);
    fprintf(stderr, "choice: %.*s\n", (int)c.len, c.text);
    CHECK(c.len == 3 || c.len == 4 || c.len == 5);
    CHECK(!strcmp(c.text, "red") || !strcmp(c.text, "green") || !strcmp(c.text, "blue"));
    CHECK_EQ_INT(c.finish, SL_FINISH_STOP);
}

static void test_regex_and_gbnf(void) {
    sl_sampling p = greedy();
    p.guide = (sl_guide){.kind = SL_GUIDE_REGEX, .text = "[0-9]{3}-[0-9]{4}"};
    reply c;
    char err[512];
    CHECK_EQ_INT(run("Make up a phone number.", p, &c, 1, err, sizeof err), 0);
    fprintf(stderr, "regex: %.*s\n", (int)c.len, c.text);
    CHECK_EQ_INT(c.len, 8);
    for (size_t i = 0; i < c.len && c.len == 8; i++) CHECK(i == 3 ? c.text[i] == '-' : (c.text[i] >= '0' && c.text[i] <= '9'));
    CHECK_EQ_INT(c.finish, SL_FINISH_STOP);

    p.guide = (sl_guide){.kind = SL_GUIDE_GRAMMAR, .text = "root ::= answer \".\"\nanswer ::= \"yes\" | \"no\"\n"};
    CHECK_EQ_INT(run("Is water wet?", p, &c, 1, err, sizeof err), 0);
    fprintf(stderr, "gbnf: %.*s\n", (int)c.len, c.text);
    CHECK(!strcmp(c.text, "yes.") || !strcmp(c.text, "no."));
}

/* Each guided request twice: its rows sampled by the backend with the
 * grammar's mask, and with logprobs, which bring them back whole to be
 * masked and sampled on the host. The tokens must be the same, greedy and
 * seeded with each filter. */
static void test_backend_masks_match_host(void) {
    const char *colors[] = {"red", "green", "blue"};
    const sl_guide guides[] = {
        {.kind = SL_GUIDE_JSON, .text = PERSON},
        {.kind = SL_GUIDE_REGEX, .text = "[0-9]{3}-[0-9]{4}"},
        {.kind = SL_GUIDE_CHOICE, .choices = colors, .n_choices = 3},
    };
    const char *prompts[] = {"Describe a person as JSON.", "Make up a phone number.", "What color is grass?"};
    const struct { float temperature; int top_k; float top_p, min_p; } kinds[] = {
        {0, 0, 1, 0}, {1.0f, 0, 1, 0}, {0.8f, 40, 0.9f, 0.02f},
    };
    enum { N_GUIDES = sizeof guides / sizeof guides[0], N_KINDS = sizeof kinds / sizeof kinds[0] };
    uint64_t ids[N_GUIDES][N_KINDS][2]; /* [1]: with logprobs; all in flight together */
    char err[512];
    for (int g = 0; g < N_GUIDES; g++)
        for (int k = 0; k < N_KINDS; k++)
            for (int host = 0; host < 2; host++) {
                sl_sampling p = greedy();
                p.guide = guides[g];
                p.temperature = kinds[k].temperature, p.top_k = kinds[k].top_k;
                p.top_p = kinds[k].top_p, p.min_p = kinds[k].min_p;
                p.seed = 21 + k;
                p.max_tokens = 80;
                p.logprobs = host ? 0 : -1;
                CHECK_EQ_INT(submit(prompts[g], p, &ids[g][k][host], err, sizeof err), 0);
            }
    for (int g = 0; g < N_GUIDES; g++)
        for (int k = 0; k < N_KINDS; k++) {
            reply backend, host;
            collect(ids[g][k][0], &backend, 1);
            collect(ids[g][k][1], &host, 1);
            fprintf(stderr, "guide %d, kind %d: %.*s\n", g, k, (int)backend.len, backend.text);
            CHECK_EQ_INT(backend.n_logprobs, 0);
            CHECK_EQ_INT(host.n_logprobs, host.n_tokens);
            CHECK_EQ_INT(backend.n_tokens, host.n_tokens);
            const int n = host.n_tokens < REPLY_TOKENS ? host.n_tokens : REPLY_TOKENS;
            CHECK(!memcmp(backend.token_ids, host.token_ids, sizeof(int32_t) * (size_t)n));
            CHECK_EQ_INT(backend.finish, host.finish);
            if (g == 0 && backend.finish == SL_FINISH_STOP) check_person(&backend);
        }
}

/* Eight seeded guided requests at once in a KV cache that holds about two:
 * sequences are preempted and recomputed, and each output is the one the
 * request gives alone, valid for its schema. */
static void test_preemption(void) {
    sl_engine_options o;
    sl_engine_options_init(&o);
    o.model = g_model;
    o.quiet = 1;
    o.debug_checks = 1;
    o.max_model_len = 128;
    o.enable_prefix_caching = 0;
    o.kv_cache_memory = 7 << 20; /* SmolLM2 keeps 45 KiB per token: ~160 tokens */
    sl_engine *small;
    char err[512];
    CHECK_EQ_INT(sl_engine_open(&o, &small, err, sizeof err), 0);
    enum { N = 8 };
    char *prompt = chat_prompt("Describe a person as JSON.");
    uint64_t ids[N];
    for (int i = 0; i < N; i++) {
        sl_request r;
        sl_request_init(&r);
        r.prompt = prompt;
        r.params.temperature = 1.0f;
        r.params.seed = 100 + i;
        r.params.max_tokens = 80;
        r.params.guide = (sl_guide){.kind = SL_GUIDE_JSON, .text = PERSON};
        CHECK_EQ_INT(sl_engine_submit(small, &r, NULL, NULL, &ids[i], err, sizeof err), 0);
    }
    reply together[N];
    memset(together, 0, sizeof together);
    for (int i = 0; i < N; i++) {
        sl_output *out;
        while (sl_engine_poll(small, ids[i], 60000, &out) == 0) {
            reply *c = &together[i];
            if (c->len + out->text_len < sizeof c->text) memcpy(c->text + c->len, out->text, out->text_len), c->len += out->text_len;
            int done = out->finished;
            if (done) c->finish = out->finish_reason;
            sl_output_free(out);
            if (done) break;
        }
    }
    sl_engine_stats s;
    sl_engine_get_stats(small, &s);
    fprintf(stderr, "%lld preemptions\n", (long long)s.n_preemptions);
    CHECK(s.n_preemptions > 0);
    sl_engine_close(small);
    free(prompt);
    for (int i = 0; i < N; i++) {
        sl_sampling p = greedy();
        p.temperature = 1.0f;
        p.seed = 100 + i;
        p.max_tokens = 80;
        p.guide = (sl_guide){.kind = SL_GUIDE_JSON, .text = PERSON};
        reply alone;
        CHECK_EQ_INT(run("Describe a person as JSON.", p, &alone, 1, err, sizeof err), 0);
        if (alone.finish == SL_FINISH_STOP) check_person(&alone);
        CHECK_EQ_INT(together[i].finish, alone.finish);
        CHECK(together[i].len == alone.len && !memcmp(together[i].text, alone.text, alone.len));
    }
}

/* Runs reqs[0..n) at once on an engine whose mask pool has `threads`
 * threads (SHARDLM_GUIDE_THREADS, read when the engine opens). */
static void run_with_mask_threads(const char *threads, const sl_request *reqs, int n, reply *out) {
    sl_engine_options o;
    sl_engine_options_init(&o);
    o.model = g_model;
    o.quiet = 1;
    o.debug_checks = 1;
    o.max_model_len = 512;
    char err[512];
    sl_engine *e = NULL, *saved = g_e;
    CHECK_EQ_INT(setenv("SHARDLM_GUIDE_THREADS", threads, 1), 0);
    const int rc = sl_engine_open(&o, &e, err, sizeof err);
    unsetenv("SHARDLM_GUIDE_THREADS");
    CHECK_EQ_INT(rc, 0);
    if (rc) return;
    uint64_t ids[64];
    for (int i = 0; i < n; i++) CHECK_EQ_INT(sl_engine_submit(e, &reqs[i], NULL, NULL, &ids[i], err, sizeof err), 0);
    g_e = e; /* collect polls g_e */
    for (int i = 0; i < n; i++) collect(ids[i], &out[i], 1);
    g_e = saved;
    sl_engine_close(e);
}

/* Many guided requests in one batch, their masks filled by four threads
 * claiming rows: the same tokens as with one thread, greedy and seeded. */
static void test_mask_threads(void) {
    const char *colors[] = {"red", "green", "blue"};
    const sl_guide guides[] = {
        {.kind = SL_GUIDE_JSON, .text = PERSON},
        {.kind = SL_GUIDE_JSON_OBJECT},
        {.kind = SL_GUIDE_REGEX, .text = "[0-9]{3}-[0-9]{4}"},
        {.kind = SL_GUIDE_CHOICE, .choices = colors, .n_choices = 3},
    };
    const char *users[] = {"Describe a person as JSON.", "Give me a JSON object about a city.",
                           "Make up a phone number.", "What color is grass?"};
    enum { N_GUIDES = sizeof guides / sizeof guides[0], N = 16 };
    char *prompts[N_GUIDES];
    for (int g = 0; g < N_GUIDES; g++) prompts[g] = chat_prompt(users[g]);
    sl_request reqs[N];
    for (int i = 0; i < N; i++) {
        sl_request_init(&reqs[i]);
        reqs[i].prompt = prompts[i % N_GUIDES];
        reqs[i].params.guide = guides[i % N_GUIDES];
        reqs[i].params.temperature = i < N_GUIDES ? 0.0f : 1.0f;
        reqs[i].params.seed = 500 + i;
        reqs[i].params.max_tokens = 48;
    }
    static reply one[N], four[N];
    run_with_mask_threads("1", reqs, N, one);
    run_with_mask_threads("4", reqs, N, four);
    for (int i = 0; i < N; i++) {
        CHECK(one[i].n_tokens > 0);
        CHECK_EQ_INT(four[i].n_tokens, one[i].n_tokens);
        const int n = one[i].n_tokens < REPLY_TOKENS ? one[i].n_tokens : REPLY_TOKENS;
        CHECK(!memcmp(four[i].token_ids, one[i].token_ids, sizeof(int32_t) * (size_t)n));
        CHECK_EQ_INT(four[i].finish, one[i].finish);
        if (i % N_GUIDES == 0 && one[i].finish == SL_FINISH_STOP) check_person(&one[i]);
    }
    for (int g = 0; g < N_GUIDES; g++) free(prompts[g]);
}

/* Bad grammars fail the submit with a message naming what is wrong; nothing is queued. */
static void test_errors(void) {
    struct {
        sl_guide g;
        int rc;
        const char *needle;
    } cases[] = {
        {{.kind = SL_GUIDE_JSON, .text = "{\"type\": "}, SL_EINVAL, "not valid JSON"},
        {{.kind = SL_GUIDE_JSON, .text = "{\"type\":\"string\",\"contentEncoding\":\"base64\"}"}, SL_ENOTSUP, "contentEncoding"},
        {{.kind = SL_GUIDE_CHOICE, .n_choices = 0}, SL_EINVAL, "at least one"},
        {{.kind = SL_GUIDE_GRAMMAR, .text = "root ::= \"a\" | \n  (b"}, SL_EINVAL, "line"},
        {{.kind = SL_GUIDE_GRAMMAR, .text = "root ::= undefined-rule"}, SL_EINVAL, "undefined-rule"},
        {{.kind = SL_GUIDE_REGEX, .text = ""}, SL_EINVAL, "empty"},
        {{.kind = (sl_guide_kind)99}, SL_EINVAL, "unknown"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_sampling p = greedy();
        p.guide = cases[i].g;
        reply c;
        char err[512] = "";
        int rc = run("Hi", p, &c, 1, err, sizeof err);
        if (rc != cases[i].rc || !strstr(err, cases[i].needle))
            fprintf(stderr, "case %zu: rc %d, message: %s (want %d, \"%s\")\n", i, rc, err, cases[i].rc, cases[i].needle);
        CHECK_EQ_INT(rc, cases[i].rc);
        CHECK(strstr(err, cases[i].needle) != NULL);
    }
    const char *yes_no[] = {"yes", "no"}; /* the engine goes on serving */
    sl_sampling p = greedy();
    p.guide = (sl_guide){.kind = SL_GUIDE_CHOICE, .choices = yes_no, .n_choices = 2};
    reply c;
    char err[512];
    CHECK_EQ_INT(run("Is water wet?", p, &c, 1, err, sizeof err), 0);
    CHECK(!strcmp(c.text, "yes") || !strcmp(c.text, "no"));
}

/* Without tokenizer.json there are no token bytes: guided requests are refused, others run. */
static void test_no_tokenizer(void) {
    sl_engine_options o;
    sl_engine_options_init(&o);
    o.model = g_fixture;
    o.quiet = 1;
    sl_engine *e;
    char err[512];
    CHECK_EQ_INT(sl_engine_open(&o, &e, err, sizeof err), 0);
    sl_request r;
    sl_request_init(&r);
    int32_t ids[] = {5, 6, 7};
    r.prompt_ids = ids;
    r.n_prompt_ids = 3;
    r.params.max_tokens = 2;
    r.params.guide.kind = SL_GUIDE_JSON_OBJECT;
    uint64_t id;
    CHECK_EQ_INT(sl_engine_submit(e, &r, NULL, NULL, &id, err, sizeof err), SL_EINVAL);
    CHECK(strstr(err, "tokenizer.json") != NULL);
    sl_engine_close(e);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", argv[1]);
    if (access(path, R_OK)) {
        printf("SKIP: no default model at %s (tools/get-default-model.sh)\n", argv[1]);
        return 77;
    }
    g_model = argv[1];
    g_fixture = argv[2];
    sl_engine_options o;
    sl_engine_options_init(&o);
    o.model = argv[1];
    o.quiet = 1;
    o.debug_checks = 1;
    o.max_model_len = 512;
    char err[512];
    if (sl_engine_open(&o, &g_e, err, sizeof err)) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    TEST_RUN(test_json_schema);
    TEST_RUN(test_json_sampled);
    TEST_RUN(test_json_object);
    TEST_RUN(test_choice_and_min_tokens);
    TEST_RUN(test_regex_and_gbnf);
    TEST_RUN(test_backend_masks_match_host);
    TEST_RUN(test_preemption);
    TEST_RUN(test_mask_threads);
    TEST_RUN(test_errors);
    sl_engine_close(g_e);
    TEST_RUN(test_no_tokenizer);
    TEST_EXIT();
}
