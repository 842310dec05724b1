/* bench_chat_template.c -- render time of a 10-message conversation with the
 * Llama 3.1 and Qwen3 chat templates of the shared tokenizers: median and
 * 90th percentile of single renders (after a warm-up), single thread.
 * Usage: bench_chat_template SHARED_DIR [RUNS]. Goal: median < 50 us. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "template/chat_template.h"

static const char conversation[] =
    "{\"add_generation_prompt\": true, \"messages\": ["
    "{\"role\": \"system\", \"content\": \"You are a helpful assistant. Answer briefly and cite sources.\"},"
    "{\"role\": \"user\", \"content\": \"What is the capital of France?\"},"
    "{\"role\": \"assistant\", \"content\": \"Paris is the capital of France.\"},"
    "{\"role\": \"user\", \"content\": \"And how many people live there? Please give the city and metro area.\"},"
    "{\"role\": \"assistant\", \"content\": \"About 2.1 million in the city and 12 million in the metro area.\"},"
    "{\"role\": \"user\", \"content\": \"Compare that with Berlin, Madrid and Rome in a short table.\"},"
    "{\"role\": \"assistant\", \"content\": \"| City | Population |\\n|---|---|\\n| Berlin | 3.7M |\\n| Madrid | 3.3M |\\n| Rome | 2.8M |\"},"
    "{\"role\": \"user\", \"content\": \"Which of them is the oldest?\"},"
    "{\"role\": \"assistant\", \"content\": \"<think>\\nRome was founded in 753 BC.\\n</think>\\n\\nRome, by far.\"},"
    "{\"role\": \"user\", \"content\": \"Thanks! Summarize everything in one sentence.\"}]}";

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int bench(const char *shared, const char *model, const char *bos, const char *eos, int runs) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tokenizers/%s", shared, model);
    char *src = NULL;
    sl_err err;
    if (sl_chat_template_load_source(dir, NULL, &src, NULL, NULL, &err)) {
        fprintf(stderr, "%s: %s\n", model, err.msg);
        return 1;
    }
    sl_chat_template *t = NULL;
    if (sl_chat_template_compile(src, strlen(src), &t, &err)) {
        fprintf(stderr, "%s: %s\n", model, err.msg);
        free(src);
        return 1;
    }
    json_t *ctx = json_loads(conversation, 0, NULL);
    if (bos) json_object_set_new(ctx, "bos_token", json_string(bos));
    json_object_set_new(ctx, "eos_token", json_string(eos));
    double *samples = malloc(sizeof *samples * (size_t)runs);
    size_t bytes = 0;
    for (int i = -runs / 10; i < runs; i++) {
        char *out = NULL;
        size_t n;
        double t0 = now_us();
        int rc = sl_chat_template_render(t, ctx, &out, &n, &err);
        double t1 = now_us();
        if (rc) {
            fprintf(stderr, "%s: %s\n", model, err.msg);
            return 1;
        }
        if (i >= 0) samples[i] = t1 - t0;
        bytes = n;
        free(out);
    }
    qsort(samples, (size_t)runs, sizeof *samples, cmp_double);
    printf("%-10s 10 messages -> %zu bytes: median %.1f us, p90 %.1f us (%d runs)\n", model, bytes,
           samples[runs / 2], samples[runs * 9 / 10], runs);
    free(samples);
    json_decref(ctx);
    sl_chat_template_free(t);
    free(src);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SHARED_DIR [RUNS]\n", argv[0]);
        return 2;
    }
    int runs = argc > 2 ? atoi(argv[2]) : 20000;
    if (runs < 10) runs = 10;
    int rc = bench(argv[1], "llama3.1", "<|begin_of_text|>", "<|eot_id|>", runs);
    rc |= bench(argv[1], "qwen3", NULL, "<|im_end|>", runs);
    return rc;
}
