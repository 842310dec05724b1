/* cmd_bench.c -- `shardlm bench latency|throughput`: measure the engine.
 *
 * latency: batch-size requests of input-len random tokens each, output-len
 * tokens out, timed from submission to the first token (prefill) and from
 * the first to the last (decode), over several iterations; prints medians and
 * decode's share of the memory-bandwidth limit (weight bytes read per step
 * over a read bandwidth measured on the spot).
 * throughput: num-prompts requests submitted at once, as vLLM's
 * benchmark_throughput: requests/s, output tokens/s, total tokens/s. */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "util/progress.h"

typedef struct bench_flags {
    int input_len, output_len, batch_size, num_iters, num_iters_warmup, num_prompts;
    int64_t seed;
    double temperature;      /* 0: greedy, as the peers are run; > 0: seeded sampling, request i with seed + i */
    const char *output_json;
} bench_flags;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Read bandwidth of this machine with the engine's thread count: the best
 * of ten sums over a buffer as large as the weights a step reads (at least
 * 256 MB, beyond the caches), in huge pages as the CPU backend keeps its
 * weights (so the limit is not understated by TLB misses), with four
 * independent vector sums per thread so that only memory limits the loop.
 * Shared machines vary by tens of percent from second to second: the best
 * of ten is the ceiling the decode is held to. */
typedef float bw_vec __attribute__((vector_size(64)));

static double measure_read_bandwidth_gbs(int n_threads, int64_t step_bytes) {
    const size_t floor_bytes = (size_t)256 << 20, want = (size_t)step_bytes > floor_bytes ? (size_t)step_bytes : floor_bytes;
    const size_t n_vecs = (want / sizeof(bw_vec) + 3) / 4 * 4, n_bytes = n_vecs * sizeof(bw_vec);
    bw_vec *buf = NULL;
    if (posix_memalign((void **)&buf, (size_t)2 << 20, n_bytes)) return 0;
    madvise(buf, n_bytes, MADV_HUGEPAGE);
    memset(buf, 0, n_bytes);
    double best = 0;
    for (int rep = 0; rep < 10; rep++) {
        double t0 = sl_now_s();
        float total = 0;
#pragma omp parallel num_threads(n_threads) reduction(+ : total)
        {
            bw_vec a = {0}, b = {0}, c = {0}, d = {0};
#pragma omp for schedule(static)
            for (size_t i = 0; i < n_vecs; i += 4) {
                a += buf[i], b += buf[i + 1], c += buf[i + 2], d += buf[i + 3];
            }
            a += b + c + d;
            for (int l = 0; l < 16; l++) total += a[l];
        }
        double gbs = (double)n_bytes / (sl_now_s() - t0) / 1e9;
        if (gbs > best && total == 0) best = gbs;
    }
    free(buf);
    return best;
}

/* Requests of one batch report here from the engine thread. */
typedef struct batch_done {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n_done;
} batch_done;

typedef struct timing {
    double t_submit, t_first, t_last;
    int n_out;
    char error[256]; /* why the engine aborted the request, or empty */
    batch_done *done;
} timing;

static void on_output(const sl_output *o, void *user) {
    timing *t = user;
    double now = sl_now_s();
    if (o->n_tokens && t->n_out == 0) t->t_first = now;
    t->n_out += o->n_tokens;
    if (!o->finished) return;
    t->t_last = now;
    if (o->error) snprintf(t->error, sizeof t->error, "%s", o->error);
    pthread_mutex_lock(&t->done->mu);
    t->done->n_done++;
    pthread_cond_signal(&t->done->cv);
    pthread_mutex_unlock(&t->done->mu);
}

static void random_prompt(int32_t *ids, int n, int vocab, uint64_t *state) {
    for (int i = 0; i < n; i++) {
        *state = *state * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)(100 + (*state >> 33) % (uint64_t)(vocab - 200));
    }
}

/* Submits n requests at once and waits for all; timings per request. Fails with the engine's message when it
 * aborted one (a failed step): its timings would measure nothing. */
static int run_batch(sl_engine *e, int n, const bench_flags *f, uint64_t *rng, timing *t, char *msg, size_t len) {
    const int input_len = f->input_len, output_len = f->output_len;
    sl_engine_info info;
    sl_engine_get_info(e, &info);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)input_len);
    int rc = ids ? 0 : -1;
    uint64_t *req_ids = malloc(sizeof(uint64_t) * (size_t)n);
    batch_done done = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    int n_submitted = 0;
    for (int i = 0; i < n && !rc; i++) {
        random_prompt(ids, input_len, info.vocab_size, rng);
        sl_request r;
        sl_request_init(&r);
        r.prompt_ids = ids;
        r.n_prompt_ids = input_len;
        r.params.temperature = (float)f->temperature;
        if (f->temperature > 0) r.params.seed = f->seed + i;
        r.params.max_tokens = output_len;
        r.params.ignore_eos = 1;
        t[i] = (timing){.t_submit = sl_now_s(), .done = &done};
        rc = sl_engine_submit(e, &r, on_output, &t[i], &req_ids[i], msg, len);
        n_submitted += rc == 0;
    }
    pthread_mutex_lock(&done.mu);
    while (done.n_done < n_submitted) pthread_cond_wait(&done.cv, &done.mu);
    pthread_mutex_unlock(&done.mu);
    for (int i = 0; i < n_submitted && !rc; i++)
        if (t[i].error[0]) rc = -1, snprintf(msg, len, "request %d of %d was aborted: %s", i + 1, n, t[i].error);
    free(ids);
    free(req_ids);
    return rc;
}

static int bench_latency(sl_engine *e, const bench_flags *f) {
    sl_engine_info info;
    sl_engine_get_info(e, &info);
    int iters = f->num_iters > 0 ? f->num_iters : 5;
    double *prefill = malloc(sizeof(double) * (size_t)iters), *decode = malloc(sizeof(double) * (size_t)iters);
    timing *t = malloc(sizeof(timing) * (size_t)f->batch_size);
    uint64_t rng = (uint64_t)f->seed;
    char msg[1024];
    int rc = 0;
    for (int it = -f->num_iters_warmup; it < iters && !rc; it++) {
        rc = run_batch(e, f->batch_size, f, &rng, t, msg, sizeof msg);
        if (rc || it < 0) continue;
        double first = 0, last = 0, submit = t[0].t_submit;
        for (int i = 0; i < f->batch_size; i++) {
            first = t[i].t_first > first ? t[i].t_first : first;
            last = t[i].t_last > last ? t[i].t_last : last;
        }
        prefill[it] = (double)f->input_len * f->batch_size / (first - submit);
        decode[it] = f->output_len > 1 ? (double)(f->output_len - 1) * f->batch_size / (last - first) : 0;
        fprintf(stderr, "iteration %d: prefill %.1f tok/s, decode %.1f tok/s\n", it + 1, prefill[it], decode[it]);
    }
    if (rc) {
        fprintf(stderr, "shardlm bench latency: %s\n", msg);
    } else {
        double p = median(prefill, iters), d = median(decode, iters);
        /* the host's read bandwidth bounds a CPU rank; a GPU's is measured beside the run (bench/gpu.sh) */
        const bool cpu = strcmp(info.device, "cpu") == 0;
        double bw = cpu ? measure_read_bandwidth_gbs(info.n_threads, info.weight_bytes) : NAN;
        /* a decode step reads every weight once (plus the KV cache, small here) */
        double step_gb = (double)info.step_read_bytes / 1e9, limit = bw / step_gb * f->batch_size;
        printf("model %s, batch %d, input %d, output %d, %d threads\n", info.model_name, f->batch_size, f->input_len,
               f->output_len, info.n_threads);
        printf("prefill: %.1f tokens/s (median of %d)\n", p, iters);
        printf("decode:  %.1f tokens/s (median of %d)\n", d, iters);
        if (cpu)
            printf("bandwidth limit: %.2f GB of weights per step / %.1f GB/s measured read bandwidth = %.1f tokens/s; "
                   "decode reaches %.0f%%\n", step_gb, bw, limit, 100 * d / limit);
        else
            printf("%.2f GB of weights read per step on %s\n", step_gb, info.device);
        sl_engine_stats st;
        sl_engine_get_stats(e, &st);
        if (info.tensor_parallel_size * info.pipeline_parallel_size > 1 && st.n_steps > 0)
            printf("communication: %.3f ms per step on rank 0, %.0f%% of step time (%lld steps, %d x %d ranks)\n",
                   1e3 * st.comm_seconds / (double)st.n_steps, 100 * st.comm_seconds / st.step_seconds,
                   (long long)st.n_steps, info.tensor_parallel_size, info.pipeline_parallel_size);
        if (f->output_json) {
            FILE *out = fopen(f->output_json, "w");
            if (out) {
                fprintf(out, "{\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"read_bw_gbs\": %.2f, "
                        "\"step_read_gb\": %.4f, \"limit_tok_s\": %.2f, \"batch\": %d, \"threads\": %d, \"device\": \"%s\"}\n",
                        p, d, cpu ? bw : 0.0, step_gb, cpu ? limit : 0.0, f->batch_size, info.n_threads, info.device);
                fclose(out);
            }
        }
    }
    free(prefill);
    free(decode);
    free(t);
    return rc ? 1 : 0;
}

static int bench_throughput(sl_engine *e, const bench_flags *f) {
    sl_engine_info info;
    sl_engine_get_info(e, &info);
    int n = f->num_prompts > 0 ? f->num_prompts : 100;
    timing *t = calloc((size_t)n, sizeof *t);
    uint64_t rng = (uint64_t)f->seed;
    char msg[1024];
    double t0 = sl_now_s();
    int rc = run_batch(e, n, f, &rng, t, msg, sizeof msg);
    double elapsed = sl_now_s() - t0;
    if (rc) {
        fprintf(stderr, "shardlm bench throughput: %s\n", msg);
    } else {
        long long out_tokens = 0;
        for (int i = 0; i < n; i++) out_tokens += t[i].n_out;
        double total = (double)out_tokens + (double)n * f->input_len;
        printf("Throughput: %.2f requests/s, %.2f total tokens/s, %.2f output tokens/s\n", n / elapsed,
               total / elapsed, out_tokens / elapsed);
        printf("(%d requests of %d input and %d output tokens in %.2f s, %d threads)\n", n, f->input_len, f->output_len,
               elapsed, info.n_threads);
        sl_engine_stats st;
        sl_engine_get_stats(e, &st);
        if (st.n_steps > 0)
            printf("%lld steps: %.1f ms each in the forward pass, %.1f ms turning logits into outputs, %.1f ms "
                   "elsewhere (scheduling, waiting for requests)\n", (long long)st.n_steps,
                   1e3 * st.step_seconds / (double)st.n_steps, 1e3 * st.output_seconds / (double)st.n_steps,
                   1e3 * (elapsed - st.step_seconds - st.output_seconds) / (double)st.n_steps);
        if (f->output_json) {
            FILE *out = fopen(f->output_json, "w");
            if (out) {
                fprintf(out, "{\"requests_per_s\": %.3f, \"total_tok_s\": %.2f, \"output_tok_s\": %.2f, \"elapsed_s\": %.3f, "
                        "\"num_prompts\": %d}\n", n / elapsed, total / elapsed, out_tokens / elapsed, elapsed, n);
                fclose(out);
            }
        }
    }
    free(t);
    return rc ? 1 : 0;
}

int sl_cmd_bench(int argc, char **argv) {
    if (argc >= 1 && strcmp(argv[0], "serve") == 0) return sl_cmd_bench_serve(argc - 1, argv + 1);
    if (argc < 1 || (strcmp(argv[0], "latency") != 0 && strcmp(argv[0], "throughput") != 0)) {
        const bool help = argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0);
        fprintf(help ? stdout : stderr,
                "usage: shardlm bench latency|throughput [MODEL] [flags]\n"
                "       shardlm bench serve --base-url URL --num-prompts N --request-rate R [flags]\n\n"
                "  latency      --batch-size requests at a time: prefill and decode tokens/s (medians)\n"
                "  throughput   --num-prompts requests at once: requests/s and tokens/s\n"
                "  serve        requests to a running server at --request-rate: throughput and latency percentiles\n\n"
                "`shardlm bench latency --help` (throughput, serve) lists a benchmark's flags.\n");
        return help ? 0 : 2;
    }
    bool latency = strcmp(argv[0], "latency") == 0;
    sl_engine_options o;
    sl_engine_options_init(&o);
    sl_engine_flag_values v;
    bench_flags f = {.input_len = latency ? 32 : 128, .output_len = 128, .batch_size = 1, .num_iters = 5,
                     .num_iters_warmup = 1, .num_prompts = 100, .seed = 0};
    sl_flag flags[64];
    int n = sl_engine_flags(&o, &v, flags, 64);
    const sl_flag mine[] = {
        {"--input-len", SL_FLAG_INT, &f.input_len, "Benchmark", "prompt tokens per request", NULL},
        {"--output-len", SL_FLAG_INT, &f.output_len, "Benchmark", "generated tokens per request", NULL},
        {"--batch-size", SL_FLAG_INT, &f.batch_size, "Benchmark", "latency: concurrent requests", NULL},
        {"--num-iters", SL_FLAG_INT, &f.num_iters, "Benchmark", "latency: measured iterations (5)", NULL},
        {"--num-iters-warmup", SL_FLAG_INT, &f.num_iters_warmup, "Benchmark", "latency: warm-up iterations (1)", NULL},
        {"--num-prompts", SL_FLAG_INT, &f.num_prompts, "Benchmark", "throughput: requests (100)", NULL},
        {"--temperature", SL_FLAG_FLOAT, &f.temperature, "Benchmark",
         "0: greedy (default, as the peers); vLLM's benchmark_throughput samples at 1.0", NULL},
        {"--output-json", SL_FLAG_STRING, &f.output_json, "Benchmark", "also write the figures as JSON", "FILE"},
    };
    memcpy(flags + n, mine, sizeof mine);
    n += (int)(sizeof mine / sizeof mine[0]);
    const char *positional[1];
    int n_pos, help;
    sl_err err = {0};
    int rc = sl_flags_parse(flags, n, argc - 1, argv + 1, positional, 1, &n_pos, &help, &err);
    if (!rc && help) {
        sl_flags_print_help(stdout, latency ? "shardlm bench latency [MODEL] [flags]" : "shardlm bench throughput [MODEL] [flags]",
                            flags, n);
        return 0;
    }
    if (!rc) rc = sl_engine_flags_finish(&o, &v, n_pos ? positional[0] : NULL, &err);
    if (o.seed != SL_UNSET) f.seed = o.seed; /* the engine's --seed also seeds the random prompts */
    if (!rc && (f.input_len < 1 || f.output_len < 1 || f.batch_size < 1))
        rc = sl_err_set(&err, SL_EINVAL, "--input-len, --output-len and --batch-size must be >= 1");
    if (rc) {
        fprintf(stderr, "shardlm bench: %s\n", err.msg);
        return 2;
    }
    if (o.max_num_seqs == 0 && latency) o.max_num_seqs = f.batch_size; /* throughput: the engine's default */
    if (o.max_model_len == 0) o.max_model_len = f.input_len + f.output_len;
    sl_engine *e;
    char msg[1024];
    if (sl_engine_open(&o, &e, msg, sizeof msg)) {
        fprintf(stderr, "shardlm bench: %s\n", msg);
        return 1;
    }
    sl_engine_flags_warn(&v, e);
    rc = latency ? bench_latency(e, &f) : bench_throughput(e, &f);
    sl_engine_close(e);
    return rc;
}
