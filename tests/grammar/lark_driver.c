/* lark_driver.c -- our Lark front end, for cross_check_lark.py.
 *
 *   lark_driver GRAMMAR_FILE COUNT SEED   random outputs, one JSON string a line
 *   lark_driver GRAMMAR_FILE --check      for each JSON string read a line:
 *                                         1 if the grammar accepts it, else 0
 *
 * Each output is a random walk through the matcher (grammar_test_util.h)
 * that ended accepting; walks past 2000 bytes are dropped and retried.
 * Exit 2 with a message on a grammar the front end refuses, 1 when no
 * accepting walk was found or a line is not a JSON string. */
#include <stdio.h>

#include "grammar_test_util.h"

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[1 << 16];
    *n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[*n] = '\0';
    return buf;
}

/* --check: one verdict per input line. */
static int check_lines(const sl_grammar *g) {
    static char line[1 << 16];
    sl_matcher *m;
    if (sl_matcher_create(g, 0, &m, NULL)) return 1;
    int rc = 0;
    while (!rc && fgets(line, sizeof line, stdin)) {
        json_t *s = json_loads(line, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (!json_is_string(s)) {
            fprintf(stderr, "not a JSON string: %s", line);
            rc = 1;
        } else {
            sl_matcher_rollback(m, sl_matcher_len(m));
            int a = sl_matcher_accept(m, (const uint8_t *)json_string_value(s), json_string_length(s), NULL);
            printf("%d\n", a == 1 && sl_matcher_is_accepting(m));
        }
        json_decref(s);
    }
    sl_matcher_free(m);
    return rc;
}

int main(int argc, char **argv) {
    bool check = argc == 3 && strcmp(argv[2], "--check") == 0;
    if (argc != 4 && !check) {
        fprintf(stderr, "usage: %s GRAMMAR_FILE COUNT SEED | %s GRAMMAR_FILE --check\n", argv[0], argv[0]);
        return 2;
    }
    size_t n;
    const char *text = read_file(argv[1], &n);
    sl_grammar *g;
    sl_err err = {0};
    if (!text) {
        fprintf(stderr, "%s: cannot read\n", argv[1]);
        return 2;
    }
    if (sl_grammar_parse_lark(text, n, &g, &err)) {
        fprintf(stderr, "%s: %s\n", argv[1], err.msg);
        return 2;
    }
    if (check) {
        int rc = check_lines(g);
        sl_grammar_free(g);
        return rc;
    }
    sl_matcher *m;
    int rc = sl_matcher_create(g, 0, &m, &err);
    uint64_t rng = strtoull(argv[3], NULL, 10);
    static uint8_t buf[2048];
    for (long done = 0, tries = 0; !rc && done < atol(argv[2]);) {
        if (++tries > 100 * atol(argv[2])) {
            fprintf(stderr, "%s: no accepting walk in %ld tries\n", argv[1], tries);
            rc = 1;
            break;
        }
        sl_matcher_rollback(m, sl_matcher_len(m));
        size_t len = 0;
        int w = random_walk(m, &rng, sizeof buf, 0.3, buf, &len);
        if (w < 0) {
            fprintf(stderr, "%s: random walk error %d after %zu bytes\n", argv[1], w, len);
            rc = 1;
        }
        if (w != 1) continue;
        json_t *line = json_stringn((const char *)buf, len);
        char *out = line ? json_dumps(line, JSON_ENCODE_ANY) : NULL;
        if (!out) {
            fprintf(stderr, "%s: an output is not valid UTF-8\n", argv[1]);
            rc = 1;
        } else printf("%s\n", out);
        free(out);
        json_decref(line);
        done++;
    }
    sl_matcher_free(m);
    sl_grammar_free(g);
    return rc;
}
