/* grammar_driver.c -- prints random outputs of a JSON schema's grammar, one
 * JSON string per line, for cross_check_jsonschema.py; or says which texts
 * the grammar accepts.
 *
 *   grammar_driver SCHEMA_FILE COUNT SEED
 *   grammar_driver SCHEMA_FILE --check      texts on stdin (a JSON string a line): 1 or 0 a line
 *
 * Each output is a random walk through the matcher (tests/grammar/
 * grammar_test_util.h) that ended in an accepting state; walks that run
 * past 4000 bytes are dropped and retried. Exit 2 with a message on a
 * schema the compiler refuses, 1 when no accepting walk was found. */
#include <stdio.h>

#include "grammar_test_util.h"

/* --check: 1 when the grammar accepts the text of each line, else 0. */
static int check_texts(sl_matcher *m) {
    static char line[1 << 20];
    while (fgets(line, sizeof line, stdin)) {
        json_error_t je;
        json_t *text = json_loads(line, JSON_DECODE_ANY, &je);
        if (!json_is_string(text)) {
            fprintf(stderr, "--check: a line is not a JSON string: %s\n", je.text);
            return 1;
        }
        sl_matcher_rollback(m, sl_matcher_len(m));
        int rc = sl_matcher_accept(m, (const uint8_t *)json_string_value(text), json_string_length(text), NULL);
        printf("%d\n", rc == 1 && sl_matcher_is_accepting(m));
        json_decref(text);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4 && !(argc == 3 && strcmp(argv[2], "--check") == 0)) {
        fprintf(stderr, "usage: %s SCHEMA_FILE COUNT SEED | %s SCHEMA_FILE --check\n", argv[0], argv[0]);
        return 2;
    }
    json_error_t je;
    json_t *schema = json_load_file(argv[1], 0, &je);
    if (!schema) {
        fprintf(stderr, "%s: %s\n", argv[1], je.text);
        return 2;
    }
    sl_grammar *g;
    sl_err err = {0};
    if (sl_grammar_from_json_schema(schema, &g, &err)) {
        fprintf(stderr, "%s: %s\n", argv[1], err.msg);
        json_decref(schema);
        return 2;
    }
    sl_matcher *m;
    int rc = sl_matcher_create(g, 0, &m, &err);
    if (!rc && argc == 3) {
        rc = check_texts(m);
        sl_matcher_free(m);
        sl_grammar_free(g);
        json_decref(schema);
        return rc;
    }
    uint64_t rng = strtoull(argv[3], NULL, 10);
    static uint8_t buf[4096];
    for (long i = 0, done = 0, tries = 0; !rc && done < atol(argv[2]); i++) {
        if (++tries > 100 * atol(argv[2])) {
            fprintf(stderr, "%s: no accepting walk in %ld tries\n", argv[1], tries);
            rc = 1;
            break;
        }
        sl_matcher_rollback(m, sl_matcher_len(m));
        size_t n = 0;
        int w = random_walk(m, &rng, sizeof buf, 0.5, buf, &n);
        if (w < 0) {
            fprintf(stderr, "%s: random walk error %d after %zu bytes\n", argv[1], w, n);
            rc = 1;
        }
        if (w != 1) continue;
        json_t *line = json_stringn((const char *)buf, n);
        char *text = line ? json_dumps(line, JSON_ENCODE_ANY) : NULL;
        if (!text) {
            fprintf(stderr, "%s: output %ld is not valid UTF-8\n", argv[1], i);
            rc = 1;
        } else printf("%s\n", text);
        free(text);
        json_decref(line);
        done++;
    }
    sl_matcher_free(m);
    sl_grammar_free(g);
    json_decref(schema);
    return rc;
}
