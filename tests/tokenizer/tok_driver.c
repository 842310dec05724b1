/* tok_driver.c -- the C side of the differential tokenizer tests.
 *
 * Usage: tok_driver DIR|tokenizer.json
 * Reads one JSON request per line on stdin and writes one JSON answer per
 * line on stdout, so a Python driver can compare with Hugging Face
 * `tokenizers` without a Python binding:
 *   {"op":"encode","text":"...","special":true}  -> {"ids":[...]}
 *   {"op":"decode","ids":[...],"skip":false}      -> {"text":"..."}
 *   {"op":"stream","ids":[...],"skip":false}      -> {"text":"..."} (concatenated
 *                                                     sl_detokenizer pieces)
 *   {"op":"info"}                                 -> {"vocab_size":..,"bos_id":..,"eos_id":..}
 * A failed request answers {"error":"..."}. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/fs.h"

static json_t *ids_json(const int32_t *ids, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static int32_t *ids_of(const json_t *a, size_t *n) {
    *n = json_array_size(a);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    for (size_t i = 0; ids && i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return ids;
}

static json_t *do_stream(const sl_tokenizer *t, const int32_t *ids, size_t n, bool skip, sl_err *err) {
    sl_detokenizer *d;
    if (sl_detokenizer_create(t, skip, &d, err)) return NULL;
    char *all = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&all, &len);
    int rc = 0;
    for (size_t i = 0; i <= n && !rc && f; i++) {
        char *piece;
        size_t k;
        rc = i < n ? sl_detokenizer_push(d, ids[i], &piece, &k, err) : sl_detokenizer_finish(d, &piece, &k, err);
        if (!rc) fwrite(piece, 1, k, f);
    }
    sl_detokenizer_free(d);
    if (f) fclose(f);
    json_t *r = rc || !all ? NULL : json_pack("{s:s%}", "text", all, len);
    free(all);
    return r;
}

static json_t *answer(const sl_tokenizer *t, const json_t *req, sl_err *err) {
    const char *op = json_string_value(json_object_get(req, "op"));
    if (!op) return NULL;
    if (!strcmp(op, "info"))
        return json_pack("{s:I,s:i,s:i}", "vocab_size", (json_int_t)sl_tokenizer_vocab_size(t), "bos_id",
                         sl_tokenizer_bos_id(t), "eos_id", sl_tokenizer_eos_id(t));
    if (!strcmp(op, "encode")) {
        const json_t *text = json_object_get(req, "text");
        int32_t *ids;
        size_t n;
        if (sl_tokenizer_encode(t, json_string_value(text), json_string_length(text),
                                json_is_true(json_object_get(req, "special")), &ids, &n, err))
            return NULL;
        json_t *r = json_pack("{s:o}", "ids", ids_json(ids, n));
        free(ids);
        return r;
    }
    size_t n;
    int32_t *ids = ids_of(json_object_get(req, "ids"), &n);
    bool skip = json_is_true(json_object_get(req, "skip"));
    json_t *r = NULL;
    if (!strcmp(op, "decode")) {
        char *text;
        size_t len;
        if (!sl_tokenizer_decode(t, ids, n, skip, &text, &len, err)) {
            r = json_pack("{s:s%}", "text", text, len);
            free(text);
        }
    } else if (!strcmp(op, "stream")) {
        r = do_stream(t, ids, n, skip, err);
    }
    free(ids);
    return r;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR|tokenizer.json\n", argv[0]);
        return 2;
    }
    sl_err err = {0};
    sl_tokenizer *t;
    int rc = sl_path_is_dir(argv[1]) ? sl_tokenizer_load(argv[1], &t, &err) : sl_tokenizer_load_file(argv[1], &t, &err);
    if (rc) {
        fprintf(stderr, "tok_driver: %s\n", err.msg);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        json_error_t jerr;
        json_t *req = json_loadb(line, (size_t)n, JSON_ALLOW_NUL, &jerr);
        err.msg[0] = 0;
        json_t *res = req ? answer(t, req, &err) : NULL;
        if (!res) res = json_pack("{s:s}", "error", req ? (err.msg[0] ? err.msg : "bad request") : jerr.text);
        char *out = json_dumps(res, JSON_COMPACT);
        fputs(out, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        free(out);
        json_decref(res);
        json_decref(req);
    }
    free(line);
    sl_tokenizer_free(t);
    return 0;
}
