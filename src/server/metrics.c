/* metrics.c -- /metrics in the Prometheus text format.
 *
 * Names mirror vLLM's `vllm:` metrics with a `shardlm:` prefix, so the
 * dashboards written for vLLM need only the prefix changed: gauges for
 * running/waiting requests and KV-cache usage read from the engine at
 * scrape time; counters for prompt/generation tokens and prefix-cache
 * queries/hits from the engine; histograms (vLLM's bucket bounds) for
 * time to first token, inter-token latency and end-to-end latency,
 * observed by the server as outputs arrive. shardlm:kv_cache_blocks_used
 * lets tests check that aborted requests gave their blocks back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                     1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double itl_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                    0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
static const double e2e_bounds[] = {0.3,  0.5,  0.8,  1.0,  1.5,  2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
                                    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
static const double len_bounds[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

void sl_server_metrics_init(sl_server_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->ttft = (sl_server_histogram){.bounds = ttft_bounds, .n_bounds = N_OF(ttft_bounds)};
    m->itl = (sl_server_histogram){.bounds = itl_bounds, .n_bounds = N_OF(itl_bounds)};
    m->e2e = (sl_server_histogram){.bounds = e2e_bounds, .n_bounds = N_OF(e2e_bounds)};
    m->prompt_len = (sl_server_histogram){.bounds = len_bounds, .n_bounds = N_OF(len_bounds)};
    m->gen_len = (sl_server_histogram){.bounds = len_bounds, .n_bounds = N_OF(len_bounds)};
}

void sl_server_metrics_destroy(sl_server_metrics *m) { pthread_mutex_destroy(&m->mu); }

void sl_server_metrics_observe(sl_server_metrics *m, sl_server_histogram *h, double v) {
    int b = 0;
    while (b < h->n_bounds && v > h->bounds[b]) b++;
    pthread_mutex_lock(&m->mu);
    h->counts[b]++;
    h->sum += v;
    h->count++;
    pthread_mutex_unlock(&m->mu);
}

void sl_server_metrics_count_status(sl_server_metrics *m, unsigned status) {
    unsigned k = status / 100;
    if (k >= 6) k = 5;
    pthread_mutex_lock(&m->mu);
    m->http_by_status[k]++;
    pthread_mutex_unlock(&m->mu);
}

/* ---- exposition ---------------------------------------------------------------- */

static void put_header(sl_server_buf *b, const char *name, const char *type, const char *help) {
    char line[512];
    snprintf(line, sizeof line, "# HELP shardlm:%s %s\n# TYPE shardlm:%s %s\n", name, help, name, type);
    sl_server_buf_puts(b, line);
}

static void put_value(sl_server_buf *b, const char *name, const char *labels, double v) {
    char line[512];
    snprintf(line, sizeof line, "shardlm:%s{%s} %.17g\n", name, labels, v);
    sl_server_buf_puts(b, line);
}

static void put_metric(sl_server_buf *b, const char *name, const char *type, const char *help, const char *labels,
                       double v) {
    put_header(b, name, type, help);
    char full[160];
    snprintf(full, sizeof full, "%s%s", name, strcmp(type, "counter") == 0 ? "_total" : "");
    put_value(b, full, labels, v);
}

static void put_histogram(sl_server_buf *b, const char *name, const char *help, const char *labels,
                          const sl_server_histogram *h) {
    put_header(b, name, "histogram", help);
    char line[512], full[160];
    uint64_t cum = 0;
    for (int i = 0; i <= h->n_bounds; i++) {
        cum += h->counts[i];
        if (i < h->n_bounds)
            snprintf(line, sizeof line, "shardlm:%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, h->bounds[i],
                     (unsigned long long)cum);
        else
            snprintf(line, sizeof line, "shardlm:%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels,
                     (unsigned long long)cum);
        sl_server_buf_puts(b, line);
    }
    snprintf(full, sizeof full, "%s_count", name);
    put_value(b, full, labels, (double)h->count);
    snprintf(full, sizeof full, "%s_sum", name);
    put_value(b, full, labels, h->sum);
}

char *sl_server_metrics_render(sl_server *s) {
    sl_engine_stats st;
    memset(&st, 0, sizeof st);
    sl_engine_get_stats(s->engine, &st);
    char labels[256];
    /* model names are paths or hub ids; quotes and backslashes are escaped */
    char name[160];
    size_t k = 0;
    for (const char *p = s->model_name; *p && k + 2 < sizeof name; p++) {
        if (*p == '"' || *p == '\\') name[k++] = '\\';
        name[k++] = *p == '\n' ? ' ' : *p;
    }
    name[k] = '\0';
    snprintf(labels, sizeof labels, "model_name=\"%s\"", name);

    sl_server_buf b = {0};
    double usage = st.n_kv_blocks_total > 0 ? (double)st.n_kv_blocks_used / st.n_kv_blocks_total : 0.0;
    put_metric(&b, "num_requests_running", "gauge", "Number of requests in model execution batches.", labels,
               st.n_running);
    put_metric(&b, "num_requests_waiting", "gauge", "Number of requests waiting to be processed.", labels,
               st.n_waiting);
    put_metric(&b, "kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", labels, usage);
    put_metric(&b, "kv_cache_blocks_used", "gauge", "KV-cache blocks held by requests or the prefix cache.", labels,
               st.n_kv_blocks_used);
    put_metric(&b, "kv_cache_blocks_total", "gauge", "KV-cache blocks in the pool.", labels, st.n_kv_blocks_total);
    put_metric(&b, "prefix_cache_queries", "counter", "Prefix cache queries, in terms of number of queried tokens.",
               labels, (double)st.prefix_cache_queries);
    put_metric(&b, "prefix_cache_hits", "counter", "Prefix cache hits, in terms of number of cached tokens.", labels,
               (double)st.prefix_cache_hits);
    put_metric(&b, "prompt_tokens", "counter", "Number of prefill tokens processed.", labels,
               (double)st.prompt_tokens);
    put_metric(&b, "generation_tokens", "counter", "Number of generation tokens processed.", labels,
               (double)st.generation_tokens);
    put_metric(&b, "num_preemptions", "counter", "Cumulative number of preemptions from the engine.", labels,
               (double)st.n_preemptions);
    put_metric(&b, "engine_steps", "counter", "Forward steps the engine ran.", labels, (double)st.n_steps);

    struct {
        sl_server_histogram ttft, itl, e2e, prompt_len, gen_len;
        uint64_t finished[4], http_by_status[6];
    } m; /* a consistent snapshot */
    pthread_mutex_lock(&s->metrics.mu);
    m.ttft = s->metrics.ttft;
    m.itl = s->metrics.itl;
    m.e2e = s->metrics.e2e;
    m.prompt_len = s->metrics.prompt_len;
    m.gen_len = s->metrics.gen_len;
    memcpy(m.finished, s->metrics.finished, sizeof m.finished);
    memcpy(m.http_by_status, s->metrics.http_by_status, sizeof m.http_by_status);
    pthread_mutex_unlock(&s->metrics.mu);
    static const char *reasons[] = {"error", "stop", "length", "abort"};
    put_header(&b, "request_success_total", "counter", "Count of finished requests by finish reason.");
    for (int i = 0; i < 4; i++) {
        char l[320];
        snprintf(l, sizeof l, "%s,finished_reason=\"%s\"", labels, reasons[i]);
        put_value(&b, "request_success_total", l, (double)m.finished[i]);
    }
    put_header(&b, "http_responses_total", "counter", "HTTP responses by status class.");
    for (int i = 1; i < 6; i++) {
        char l[320];
        snprintf(l, sizeof l, "%s,status=\"%dxx\"", labels, i);
        put_value(&b, "http_responses_total", l, (double)m.http_by_status[i]);
    }
    put_histogram(&b, "time_to_first_token_seconds", "Histogram of time to first token in seconds.", labels,
                  &m.ttft);
    put_histogram(&b, "inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", labels, &m.itl);
    put_histogram(&b, "e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", labels,
                  &m.e2e);
    put_histogram(&b, "request_prompt_tokens", "Number of prefill tokens processed.", labels, &m.prompt_len);
    put_histogram(&b, "request_generation_tokens", "Number of generation tokens processed.", labels, &m.gen_len);
    return b.data;
}
