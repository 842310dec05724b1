/* simple_generate.c -- the smallest complete program on the public C API.
 *
 * It opens an engine (the default model, or the folder given with --model),
 * submits every prompt at once so the engine batches them, and receives each
 * request's stream through a callback: text deltas and token ids arrive on
 * the engine thread, are appended under a mutex, and the last output of a
 * request wakes the main thread. It then prints each result and the token
 * usage. Prompts are text (positional) or token ids (--prompt-ids,
 * for models without a tokenizer); decoding is greedy.
 *
 *     simple_generate                                   # two prompts, default model
 *     simple_generate --model DIR --prompt-ids 1,5,9 --max-tokens 8
 *
 * It only includes shardlm.h and links libshardlm.so, as a user would. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm.h"

#define MAX_PROMPTS 8
#define MAX_IDS 256

typedef struct result {
    char *text;
    size_t text_len;
    int32_t *tokens;
    int n_tokens;
    int n_prompt_tokens;
    sl_finish_reason finish;
    int done;
} result;

typedef struct run {
    pthread_mutex_t mu;
    pthread_cond_t all_done;
    int n_done;
    result results[MAX_PROMPTS];
} run;

typedef struct stream {
    run *run;
    result *result;
} stream;

static const char *finish_name(sl_finish_reason r) {
    return r == SL_FINISH_STOP ? "stop" : r == SL_FINISH_LENGTH ? "length" : r == SL_FINISH_ABORT ? "abort" : "none";
}

/* Called on the engine thread for every piece of a request: keep it short. */
static void on_output(const sl_output *out, void *user) {
    stream *s = user;
    result *r = s->result;
    pthread_mutex_lock(&s->run->mu);
    char *text = realloc(r->text, r->text_len + out->text_len + 1);
    int32_t *tokens = realloc(r->tokens, sizeof(int32_t) * (size_t)(r->n_tokens + out->n_tokens + 1));
    if (text) {
        memcpy(text + r->text_len, out->text, out->text_len);
        r->text_len += out->text_len;
        text[r->text_len] = '\0';
        r->text = text;
    }
    if (tokens) {
        memcpy(tokens + r->n_tokens, out->token_ids, sizeof(int32_t) * (size_t)out->n_tokens);
        r->n_tokens += out->n_tokens;
        r->tokens = tokens;
    }
    r->n_prompt_tokens = out->n_prompt_tokens;
    if (out->finished) {
        r->finish = out->finish_reason;
        r->done = 1;
        s->run->n_done++;
        pthread_cond_signal(&s->run->all_done);
    }
    pthread_mutex_unlock(&s->run->mu);
}

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [--model DIR] [--max-tokens N] [--prompt-ids ID,ID,...]... [PROMPT]...\n"
            "Generates greedily for every prompt at once (default: two sample prompts on the default model).\n",
            argv0);
    return 2;
}

/* "1,5,9" -> ids; returns the count, or -1 when it is not a list of ids. */
static int parse_ids(const char *s, int32_t *ids, int max) {
    int n = 0;
    for (char *end; *s && n < max; s = *end == ',' ? end + 1 : end) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX || (*end && *end != ',')) return -1;
        ids[n++] = (int32_t)v;
    }
    return *s || n == 0 ? -1 : n;
}

typedef struct prompt {
    const char *text;
    int32_t ids[MAX_IDS];
    int n_ids;
} prompt;

static void print_result(const prompt *p, const result *r, int i) {
    if (p->text) printf("prompt %d: \"%s\"\n", i, p->text);
    else printf("prompt %d: %d token ids\n", i, p->n_ids);
    printf("text: %s\ntoken_ids:", r->text ? r->text : "");
    for (int t = 0; t < r->n_tokens; t++) printf(" %d", r->tokens[t]);
    printf("\nfinish_reason: %s (%d prompt + %d generated tokens)\n\n", finish_name(r->finish), r->n_prompt_tokens,
           r->n_tokens);
}

static int submit_all(sl_engine *e, prompt *prompts, int n, int max_tokens, run *rn, stream *streams) {
    for (int i = 0; i < n; i++) {
        sl_request req;
        sl_request_init(&req);
        req.prompt = prompts[i].text;
        req.prompt_ids = prompts[i].ids;
        req.n_prompt_ids = prompts[i].n_ids;
        req.params.temperature = 0;
        req.params.max_tokens = max_tokens;
        streams[i] = (stream){rn, &rn->results[i]};
        uint64_t id;
        char err[512];
        if (sl_engine_submit(e, &req, on_output, &streams[i], &id, err, sizeof err)) {
            fprintf(stderr, "prompt %d: %s\n", i, err);
            return i;
        }
    }
    return n;
}

int main(int argc, char **argv) {
    sl_engine_options o;
    sl_engine_options_init(&o);
    o.quiet = 1;
    int max_tokens = 24, n = 0;
    static prompt prompts[MAX_PROMPTS];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc, room = n < MAX_PROMPTS;
        if (!strcmp(a, "--model") && has_value) o.model = argv[++i];
        else if (!strcmp(a, "--max-tokens") && has_value) max_tokens = atoi(argv[++i]);
        else if (!strcmp(a, "--prompt-ids") && has_value && room) {
            if ((prompts[n].n_ids = parse_ids(argv[++i], prompts[n].ids, MAX_IDS)) < 0) return usage(argv[0]);
            n++;
        } else if (a[0] != '-' && room) prompts[n++].text = a;
        else return usage(argv[0]);
    }
    if (n == 0) {
        prompts[n++].text = "The capital of France is";
        prompts[n++].text = "Counting in steps of 7: 7, 14, 21, 28,";
    }
    sl_engine *e;
    char err[512];
    if (sl_engine_open(&o, &e, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    static run rn = {.mu = PTHREAD_MUTEX_INITIALIZER, .all_done = PTHREAD_COND_INITIALIZER};
    stream streams[MAX_PROMPTS];
    int submitted = submit_all(e, prompts, n, max_tokens, &rn, streams);
    pthread_mutex_lock(&rn.mu);
    while (rn.n_done < submitted) pthread_cond_wait(&rn.all_done, &rn.mu);
    pthread_mutex_unlock(&rn.mu);
    sl_engine_close(e);
    int n_prompt_tokens = 0, n_generated = 0;
    for (int i = 0; i < submitted; i++) {
        print_result(&prompts[i], &rn.results[i], i);
        n_prompt_tokens += rn.results[i].n_prompt_tokens;
        n_generated += rn.results[i].n_tokens;
        free(rn.results[i].text);
        free(rn.results[i].tokens);
    }
    printf("usage: %d prompt tokens, %d generated tokens\n", n_prompt_tokens, n_generated);
    return submitted == n ? 0 : 1;
}
