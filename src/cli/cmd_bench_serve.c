/* cmd_bench_serve.c -- `shardlm bench serve`: a serving benchmark in the
 * manner of vLLM's benchmark_serving, against any OpenAI-compatible server.
 *
 * Requests (synthetic prompts of --input-len words, --output-len tokens
 * each) are sent on a Poisson schedule of --request-rate per second (all at
 * once when the rate is inf), at most --max-concurrency in flight, as
 * streaming /v1/completions (or --endpoint /v1/chat/completions) requests
 * over one libcurl multi loop. Each SSE chunk carrying text is a token
 * arrival: the first gives TTFT, the gaps between the rest give ITL; TPOT is
 * (latency - TTFT) / (output tokens - 1), with output tokens from the
 * stream's usage (include_usage) or, when the server sends none, the chunk
 * count. Prints request throughput, output tokens/s and TTFT/TPOT/ITL mean,
 * median and p99. */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "util/progress.h"

typedef struct bench_req {
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    char *line;              /* partial SSE line */
    size_t line_len, line_cap;
    double t_start, t_first, t_last, t_end;
    double *itl;             /* gaps between chunks */
    int n_itl, cap_itl;
    int n_chunks, prompt_tokens, output_tokens;
    int ok, http_status;
} bench_req;

typedef struct bench_cfg {
    const char *base_url, *endpoint, *model, *api_key;
    int num_prompts, max_concurrency, input_len, output_len, seed, ignore_eos;
    double request_rate;
    int chat;
} bench_cfg;

/* ---- prompts -------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static double rng_uniform(uint64_t *s) { return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0; }

static char *make_prompt(uint64_t *rng, int n_words) {
    static const char *words[] = {"time", "river", "model", "light", "stone", "paper", "music", "garden", "number",
                                  "window", "system", "ocean", "forest", "signal", "memory", "engine", "market",
                                  "planet", "story", "bridge", "winter", "silver", "question", "answer"};
    size_t n_vocab = sizeof words / sizeof words[0], cap = (size_t)n_words * 10 + 1, len = 0;
    char *p = malloc(cap);
    if (!p) return NULL;
    for (int i = 0; i < n_words; i++)
        len += (size_t)snprintf(p + len, cap - len, "%s%s", i ? " " : "", words[rng_next(rng) % n_vocab]);
    p[len] = '\0';
    return p;
}

static char *make_body(const bench_cfg *c, const char *prompt) {
    json_t *b = json_pack("{s:s, s:i, s:b, s:{s:b}, s:f}", "model", c->model, "max_tokens", c->output_len, "stream", 1,
                          "stream_options", "include_usage", 1, "temperature", 0.0);
    if (c->ignore_eos) json_object_set_new(b, "ignore_eos", json_true());
    if (c->chat)
        json_object_set_new(b, "messages", json_pack("[{s:s, s:s}]", "role", "user", "content", prompt));
    else
        json_object_set_new(b, "prompt", json_string(prompt));
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return s;
}

/* ---- the stream ----------------------------------------------------------------------- */

static void on_event(bench_req *r, const char *data) {
    if (strcmp(data, "[DONE]") == 0) {
        r->ok = 1;
        return;
    }
    json_t *j = json_loads(data, 0, NULL);
    if (!j) return;
    json_t *usage = json_object_get(j, "usage");
    if (json_is_object(usage)) {
        r->prompt_tokens = (int)json_integer_value(json_object_get(usage, "prompt_tokens"));
        r->output_tokens = (int)json_integer_value(json_object_get(usage, "completion_tokens"));
    }
    json_t *choice = json_array_get(json_object_get(j, "choices"), 0);
    json_t *text = json_object_get(choice, "text");
    if (!text) text = json_object_get(json_object_get(choice, "delta"), "content");
    if (json_is_string(text) && json_string_length(text) > 0) {
        double now = sl_now_s();
        if (r->n_chunks == 0) {
            r->t_first = now;
        } else {
            if (r->n_itl == r->cap_itl) {
                int cap = r->cap_itl ? r->cap_itl * 2 : 64;
                double *grown = realloc(r->itl, (size_t)cap * sizeof *grown);
                if (grown) {
                    r->itl = grown;
                    r->cap_itl = cap;
                }
            }
            if (r->n_itl < r->cap_itl) r->itl[r->n_itl++] = now - r->t_last;
        }
        r->t_last = now;
        r->n_chunks++;
    }
    json_decref(j);
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *user) {
    bench_req *r = user;
    size_t n = size * nmemb;
    for (size_t i = 0; i < n; i++) {
        if (ptr[i] == '\n') {
            if (r->line_len >= 6 && strncmp(r->line, "data: ", 6) == 0) {
                r->line[r->line_len] = '\0';
                on_event(r, r->line + 6);
            }
            r->line_len = 0;
            continue;
        }
        if (r->line_len + 2 > r->line_cap) {
            size_t cap = r->line_cap ? r->line_cap * 2 : 1024;
            char *grown = realloc(r->line, cap);
            if (!grown) return 0;
            r->line = grown;
            r->line_cap = cap;
        }
        r->line[r->line_len++] = ptr[i];
    }
    return n;
}

static int start_request(CURLM *multi, const bench_cfg *c, bench_req *r, const char *url) {
    r->easy = curl_easy_init();
    if (!r->easy) return -1;
    r->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (c->api_key) {
        char auth[512];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->api_key);
        r->headers = curl_slist_append(r->headers, auth);
    }
    curl_easy_setopt(r->easy, CURLOPT_URL, url);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    r->t_start = sl_now_s();
    return curl_multi_add_handle(multi, r->easy) == CURLM_OK ? 0 : -1;
}

/* ---- statistics ------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_stats(const char *title, const char *name, double *v, int n) {
    double mean = 0, med = 0, p99 = 0;
    if (n > 0) {
        qsort(v, (size_t)n, sizeof *v, cmp_double);
        for (int i = 0; i < n; i++) mean += v[i];
        mean /= n;
        med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
        double pos = 0.99 * (n - 1);
        int lo = (int)pos;
        p99 = lo + 1 < n ? v[lo] + (v[lo + 1] - v[lo]) * (pos - lo) : v[lo];
    }
    char label[64];
    printf("%s\n", title);
    snprintf(label, sizeof label, "Mean %s (ms):", name);
    printf("%-40s %.2f\n", label, mean * 1e3);
    snprintf(label, sizeof label, "Median %s (ms):", name);
    printf("%-40s %.2f\n", label, med * 1e3);
    snprintf(label, sizeof label, "P99 %s (ms):", name);
    printf("%-40s %.2f\n", label, p99 * 1e3);
}

static void report(const bench_cfg *c, bench_req *reqs, double duration) {
    int n_ok = 0;
    long in_tok = 0, out_tok = 0, n_itl = 0;
    for (int i = 0; i < c->num_prompts; i++) {
        bench_req *r = &reqs[i];
        if (!r->ok || r->n_chunks == 0) continue;
        n_ok++;
        if (r->output_tokens <= 0) r->output_tokens = r->n_chunks;
        in_tok += r->prompt_tokens;
        out_tok += r->output_tokens;
        n_itl += r->n_itl;
    }
    double *ttft = calloc((size_t)n_ok + 1, sizeof *ttft), *tpot = calloc((size_t)n_ok + 1, sizeof *tpot);
    double *itl = calloc((size_t)n_itl + 1, sizeof *itl);
    int k = 0, kt = 0, ki = 0;
    for (int i = 0; ttft && tpot && itl && i < c->num_prompts; i++) {
        bench_req *r = &reqs[i];
        if (!r->ok || r->n_chunks == 0) continue;
        ttft[k++] = r->t_first - r->t_start;
        if (r->output_tokens > 1) tpot[kt++] = (r->t_end - r->t_first) / (r->output_tokens - 1);
        for (int j = 0; j < r->n_itl; j++) itl[ki++] = r->itl[j];
    }
    printf("============ Serving Benchmark Result ============\n");
    printf("%-40s %d\n", "Successful requests:", n_ok);
    printf("%-40s %d\n", "Failed requests:", c->num_prompts - n_ok);
    printf("%-40s %.2f\n", "Benchmark duration (s):", duration);
    printf("%-40s %ld\n", "Total input tokens:", in_tok);
    printf("%-40s %ld\n", "Total generated tokens:", out_tok);
    printf("%-40s %.2f\n", "Request throughput (req/s):", n_ok / duration);
    printf("%-40s %.2f\n", "Output token throughput (tok/s):", out_tok / duration);
    printf("%-40s %.2f\n", "Total Token throughput (tok/s):", (in_tok + out_tok) / duration);
    print_stats("---------------Time to First Token----------------", "TTFT", ttft, k);
    print_stats("-----Time per Output Token (excl. 1st token)------", "TPOT", tpot, kt);
    print_stats("---------------Inter-token Latency----------------", "ITL", itl, ki);
    printf("==================================================\n");
    free(ttft);
    free(tpot);
    free(itl);
}

/* ---- the run ----------------------------------------------------------------------------- */

static int run(const bench_cfg *c) {
    char url[1024];
    snprintf(url, sizeof url, "%s%s", c->base_url, c->endpoint);
    bench_req *reqs = calloc((size_t)c->num_prompts, sizeof *reqs);
    double *arrival = calloc((size_t)c->num_prompts, sizeof *arrival);
    uint64_t rng = (uint64_t)c->seed * 2654435761u + 88172645463325252ull;
    if (!reqs || !arrival) return 1;
    double t = 0;
    for (int i = 0; i < c->num_prompts; i++) {
        char *prompt = make_prompt(&rng, c->input_len);
        reqs[i].body = prompt ? make_body(c, prompt) : NULL;
        free(prompt);
        if (!reqs[i].body) return 1;
        if (isfinite(c->request_rate)) t += -log(rng_uniform(&rng)) / c->request_rate;
        arrival[i] = t;
    }
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)(c->max_concurrency > 0 ? c->max_concurrency : 0));
    int next = 0, active = 0, done = 0;
    double t0 = sl_now_s();
    while (done < c->num_prompts) {
        double now = sl_now_s() - t0;
        while (next < c->num_prompts && arrival[next] <= now && (c->max_concurrency <= 0 || active < c->max_concurrency)) {
            if (start_request(multi, c, &reqs[next], url) != 0) {
                fprintf(stderr, "shardlm bench serve: cannot start a request\n");
                return 1;
            }
            next++;
            active++;
        }
        int running = 0;
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            bench_req *r;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            r->http_status = (int)status;
            r->t_end = sl_now_s();
            if (msg->data.result != CURLE_OK || status != 200) {
                r->ok = 0;
                if (done == 0 || status != 200)
                    fprintf(stderr, "request failed: %s (HTTP %ld)\n", curl_easy_strerror(msg->data.result), status);
            }
            curl_multi_remove_handle(multi, msg->easy_handle);
            curl_easy_cleanup(msg->easy_handle);
            curl_slist_free_all(r->headers);
            r->easy = NULL;
            active--;
            done++;
        }
        double wait_s = next < c->num_prompts ? arrival[next] - (sl_now_s() - t0) : 0.1;
        int wait_ms = wait_s <= 0 ? 0 : wait_s > 0.1 ? 100 : (int)(wait_s * 1e3);
        curl_multi_poll(multi, NULL, 0, wait_ms, NULL);
    }
    double duration = sl_now_s() - t0;
    curl_multi_cleanup(multi);
    printf("base url %s%s, model %s, %d prompts of %d words, %d output tokens, request rate %g/s, max concurrency %d\n",
           c->base_url, c->endpoint, c->model, c->num_prompts, c->input_len, c->output_len, c->request_rate,
           c->max_concurrency);
    report(c, reqs, duration);
    for (int i = 0; i < c->num_prompts; i++) {
        free(reqs[i].body);
        free(reqs[i].line);
        free(reqs[i].itl);
    }
    free(reqs);
    free(arrival);
    return 0;
}

/* The first model the server lists, when --model is not given. */
static size_t collect(char *ptr, size_t size, size_t nmemb, void *user) {
    json_t **acc = user;
    const char *old = json_string_value(*acc);
    size_t n = size * nmemb, m = old ? strlen(old) : 0;
    char *joined = malloc(m + n + 1);
    if (!joined) return 0;
    memcpy(joined, old ? old : "", m);
    memcpy(joined + m, ptr, n);
    joined[m + n] = '\0';
    json_decref(*acc);
    *acc = json_string_nocheck(joined);
    free(joined);
    return n;
}

static char *first_model(const bench_cfg *c) {
    char url[1024];
    snprintf(url, sizeof url, "%s/v1/models", c->base_url);
    CURL *e = curl_easy_init();
    json_t *acc = json_string("");
    struct curl_slist *h = NULL;
    if (c->api_key) {
        char auth[512];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->api_key);
        h = curl_slist_append(NULL, auth);
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &acc);
    CURLcode rc = curl_easy_perform(e);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    char *name = NULL;
    json_t *j = rc == CURLE_OK ? json_loads(json_string_value(acc), 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "id"));
    if (id) name = strdup(id);
    json_decref(j);
    json_decref(acc);
    return name;
}

int sl_cmd_bench_serve(int argc, char **argv) {
    bench_cfg c = {.base_url = "http://127.0.0.1:8000", .endpoint = "/v1/completions", .num_prompts = 100,
                   .input_len = 128, .output_len = 128, .ignore_eos = 1, .request_rate = INFINITY};
    const sl_flag flags[] = {
        {"--base-url", SL_FLAG_STRING, &c.base_url, "Benchmark", "server to measure (http://127.0.0.1:8000)", "URL"},
        {"--endpoint", SL_FLAG_STRING, &c.endpoint, "Benchmark", "/v1/completions (default) or /v1/chat/completions", "PATH"},
        {"--model", SL_FLAG_STRING, &c.model, "Benchmark", "model name to request (default: the first of /v1/models)", "NAME"},
        {"--num-prompts", SL_FLAG_INT, &c.num_prompts, "Benchmark", "requests to send (100)", NULL},
        {"--request-rate", SL_FLAG_FLOAT, &c.request_rate, "Benchmark", "Poisson arrivals per second (inf: all at once)", NULL},
        {"--max-concurrency", SL_FLAG_INT, &c.max_concurrency, "Benchmark", "requests in flight at most (unlimited)", NULL},
        {"--input-len", SL_FLAG_INT, &c.input_len, "Benchmark", "words per synthetic prompt (128)", NULL},
        {"--output-len", SL_FLAG_INT, &c.output_len, "Benchmark", "max_tokens per request (128)", NULL},
        {"--ignore-eos", SL_FLAG_BOOL, &c.ignore_eos, "Benchmark", "ask for exactly --output-len tokens (on)", NULL},
        {"--seed", SL_FLAG_INT, &c.seed, "Benchmark", "prompt and arrival seed (0)", NULL},
        {"--api-key", SL_FLAG_STRING, &c.api_key, "Benchmark", "bearer key (default: env OPENAI_API_KEY)", "KEY"},
    };
    int n_pos = 0, help = 0;
    sl_err err = {0};
    if (sl_flags_parse(flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, NULL, 0, &n_pos, &help, &err)) {
        fprintf(stderr, "shardlm bench serve: %s\n", err.msg);
        return 2;
    }
    if (help) {
        sl_flags_print_help(stdout, "shardlm bench serve --base-url URL --num-prompts N --request-rate R "
                                    "[--max-concurrency C] [--model NAME] [--input-len L] [--output-len L]",
                            flags, (int)(sizeof flags / sizeof flags[0]));
        return 0;
    }
    if (c.num_prompts < 1 || c.input_len < 1 || c.output_len < 1 || !(c.request_rate > 0)) {
        fprintf(stderr, "shardlm bench serve: --num-prompts, --input-len, --output-len and --request-rate must be > 0\n");
        return 2;
    }
    if (!c.api_key) c.api_key = getenv("OPENAI_API_KEY");
    c.chat = strstr(c.endpoint, "chat") != NULL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char *model = c.model ? NULL : first_model(&c);
    if (!c.model && !model) {
        fprintf(stderr, "shardlm bench serve: cannot list models at %s/v1/models; is the server up? (or pass --model)\n",
                c.base_url);
        curl_global_cleanup();
        return 1;
    }
    if (!c.model) c.model = model;
    int rc = run(&c);
    free(model);
    curl_global_cleanup();
    return rc;
}
