/* bench_tokenizer.c -- single-thread encode throughput of the tokenizer.
 *
 * Usage: bench_tokenizer TOKENIZER_DIR TEXT_FILE [RUNS]
 * TEXT_FILE holds documents separated by NUL bytes; each run encodes every
 * document once (add_special_tokens=false, one call per document) and the
 * program prints one line per run and a final JSON line:
 *   {"mb_per_s": median, "tokens": total ids per run, "bytes": ...}
 * bench/tokenizer/bench.py runs it beside Hugging Face `tokenizers`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/fs.h"
#include "util/progress.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER_DIR TEXT_FILE [RUNS]\n", argv[0]);
        return 2;
    }
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    if (runs < 1 || runs > 100) runs = 5;
    sl_err err = {0};
    sl_tokenizer *t;
    char *text;
    size_t n;
    if (sl_tokenizer_load(argv[1], &t, &err) || sl_file_read_all(argv[2], &text, &n, &err)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        return 1;
    }
    double mbs[100];
    size_t tokens = 0;
    for (int r = 0; r < runs; r++) {
        tokens = 0;
        double t0 = sl_now_s();
        for (size_t at = 0; at < n;) {
            size_t len = strnlen(text + at, n - at);
            int32_t *ids;
            size_t k;
            if (sl_tokenizer_encode(t, text + at, len, false, &ids, &k, &err)) {
                fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
                return 1;
            }
            tokens += k;
            free(ids);
            at += len + 1;
        }
        double dt = sl_now_s() - t0;
        mbs[r] = (double)n / dt / 1e6;
        fprintf(stderr, "run %d: %.2f MB/s (%zu tokens)\n", r, mbs[r], tokens);
    }
    qsort(mbs, (size_t)runs, sizeof *mbs, cmp_double);
    printf("{\"mb_per_s\": %.3f, \"tokens\": %zu, \"bytes\": %zu}\n", mbs[runs / 2], tokens, n);
    free(text);
    sl_tokenizer_free(t);
    return 0;
}
