/* test_tokenizer_cases.c -- the shared reference cases, byte for byte.
 *
 * For Llama 3.1, Qwen3, Llama 2 and DeepSeek V3 (SHARED/tokenizers/NAME),
 * every case of cases.json (ids Hugging Face `tokenizers` gave, with and
 * without special tokens, and the decoded text) and every chat rendering
 * (its text encoded without special tokens gives its ids) must match; the
 * streaming detokenizer's pieces must concatenate to the full decode with
 * and without skip_special_tokens, and a primed prompt must leave the
 * output's pieces as pushing it would; bos/eos come from tokenizer_config.json.
 * Usage: test_tokenizer_cases SHARED/tokenizers (exit 77 when absent). */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "test.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_internal.h"
#include "util/fs.h"

static const char *root;

static bool same_ids(const int32_t *ids, size_t n, const json_t *want) {
    if (n != json_array_size(want)) return false;
    for (size_t i = 0; i < n; i++)
        if (ids[i] != json_integer_value(json_array_get(want, i))) return false;
    return true;
}

static void check_encode(const sl_tokenizer *t, const char *name, const char *text, bool special, const json_t *want) {
    int32_t *ids = NULL;
    size_t n = 0;
    sl_err err = {0};
    CHECK_EQ_INT(sl_tokenizer_encode(t, text, strlen(text), special, &ids, &n, &err), 0);
    if (!same_ids(ids, n, want)) {
        fprintf(stderr, "%s: encode(special=%d) of \"%.60s\" differs from tokenizers\n", name, special, text);
        test_case_failed_ = 1;
    }
    free(ids);
}

/* The detokenizer's pieces for ids[k..n) and its finish, after ids[0..k) went in as context (primed, or
 * pushed with their pieces dropped); each piece followed by a NUL where `separate`, so pieces compare one
 * for one, else end to end as one string. */
static char *stream_pieces(const sl_tokenizer *t, const int32_t *ids, size_t k, size_t n, bool skip, bool prime,
                           bool separate, size_t *len) {
    sl_detokenizer *d;
    sl_err err = {0};
    char *all = NULL, *piece;
    size_t n_bytes;
    if (sl_detokenizer_create(t, skip, &d, &err)) return NULL;
    if (prime) CHECK_EQ_INT(sl_detokenizer_prime(d, ids, k, &err), 0);
    for (size_t i = 0; i < k && !prime; i++) CHECK_EQ_INT(sl_detokenizer_push(d, ids[i], &piece, &n_bytes, &err), 0);
    FILE *f = open_memstream(&all, len);
    for (size_t i = k; i <= n; i++) {
        int rc = i < n ? sl_detokenizer_push(d, ids[i], &piece, &n_bytes, &err) : sl_detokenizer_finish(d, &piece, &n_bytes, &err);
        CHECK_EQ_INT(rc, 0);
        if (!rc) fwrite(piece, 1, n_bytes + separate, f);
    }
    fclose(f);
    sl_detokenizer_free(d);
    return all;
}

static void check_decode(const sl_tokenizer *t, const char *name, const json_t *jids, const char *want) {
    size_t n = json_array_size(jids);
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(jids, i));
    sl_err err = {0};
    for (int skip = 0; skip < 2; skip++) {
        char *text = NULL, *streamed;
        size_t len;
        CHECK_EQ_INT(sl_tokenizer_decode(t, ids, n, skip, &text, &len, &err), 0);
        if (want && !skip) CHECK_STR(text, want);
        streamed = stream_pieces(t, ids, 0, n, skip, false, false, &len);
        if (!text || !streamed || strcmp(text, streamed)) {
            fprintf(stderr, "%s: streamed decode (skip=%d) \"%s\" != decode \"%s\"\n", name, skip, streamed, text);
            test_case_failed_ = 1;
        }
        free(text);
        free(streamed);
    }
    free(ids);
}

/* A prompt primed as context (its last tokens decoded) gives the output the same pieces, one for one, as
 * the prompt pushed token by token: the cases' ids end to end (with their special tokens, several hundred),
 * cut at every 7th token. */
static void check_prime(const sl_tokenizer *t, const char *name, const json_t *cases) {
    size_t n = 0, i, cap = 0;
    int32_t *ids = NULL;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const json_t *jids = json_object_get(c, "ids_with_special");
        ids = realloc(ids, (cap += json_array_size(jids)) * sizeof *ids);
        for (size_t j = 0; j < json_array_size(jids); j++) ids[n++] = (int32_t)json_integer_value(json_array_get(jids, j));
    }
    CHECK(n > 100);
    for (size_t k = 0; k < n; k += 7) {
        size_t len_push = 0, len_prime = 0;
        char *pushed = stream_pieces(t, ids, k, n, false, false, true, &len_push);
        char *primed = stream_pieces(t, ids, k, n, false, true, true, &len_prime);
        if (!pushed || !primed || len_push != len_prime || memcmp(pushed, primed, len_push)) {
            fprintf(stderr, "%s: after %zu of %zu ids as a primed prompt, the pieces differ from pushing them\n", name, k, n);
            test_case_failed_ = 1;
            k = n;
        }
        free(pushed);
        free(primed);
    }
    free(ids);
}

/* chat_ids: the chat renderings' ids are what `tokenizers` gives for their
 * text. Not so for DeepSeek V3, whose ids transformers 5 produced through
 * its own LlamaTokenizerFast rebuild (spaces dropped: "You", "are", ...);
 * `tokenizers` itself encodes that text differently, and so do we. */
/* Every token's bytes, as a grammar sees them, are what decoding adds after an
 * anchor token ("a"), wherever those bytes are whole UTF-8 (decoding writes U+FFFD
 * for the rest); byte-fallback tokens give their byte. */
static void check_token_bytes(const sl_tokenizer *t, const char *name) {
    const int32_t anchor = sl_tokenizer_token_to_id(t, "a");
    CHECK(anchor >= 0);
    char *base = NULL;
    size_t n_base = 0, n_checked = 0;
    CHECK_EQ_INT(sl_tokenizer_decode(t, &anchor, 1, false, &base, &n_base, NULL), 0);
    for (int32_t id = 0; anchor >= 0 && id < (int32_t)sl_tokenizer_vocab_size(t); id++) {
        uint8_t buf[512];
        size_t n = 0;
        if (!sl_tokenizer_id_to_token(t, id) || sl_tokenizer_is_special(t, id)) continue;
        CHECK_EQ_INT(sl_tokenizer_token_bytes(t, id, buf, sizeof buf, &n, NULL), 0);
        if (!sl_tok_utf8_valid((const char *)buf, n)) continue;
        int32_t pair[2] = {anchor, id};
        char *text = NULL;
        size_t n_text = 0;
        CHECK_EQ_INT(sl_tokenizer_decode(t, pair, 2, false, &text, &n_text, NULL), 0);
        if (!text || n_text != n_base + n || memcmp(text + n_base, buf, n)) {
            fprintf(stderr, "%s: token %d (%s): bytes differ from its decoding\n", name, id, sl_tokenizer_id_to_token(t, id));
            test_case_failed_ = 1;
            free(text);
            break;
        }
        n_checked++;
        free(text);
    }
    CHECK(n_checked > sl_tokenizer_vocab_size(t) / 2);
    free(base);
    uint8_t small[1];
    size_t n;
    CHECK_EQ_INT(sl_tokenizer_token_bytes(t, (int32_t)sl_tokenizer_vocab_size(t), small, 1, &n, NULL), SL_EINVAL);
    int32_t byte_id = sl_tokenizer_token_to_id(t, "<0x0A>");
    if (byte_id >= 0) {
        CHECK_EQ_INT(sl_tokenizer_token_bytes(t, byte_id, small, 1, &n, NULL), 0);
        CHECK(n == 1 && small[0] == '\n');
    }
}

static void run_tokenizer(const char *name, const char *bos, const char *eos, bool chat_ids) {
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    snprintf(path, sizeof path, "%s/cases.json", dir);
    sl_tokenizer *t;
    sl_err err = {0};
    json_error_t jerr;
    json_t *cases = json_load_file(path, 0, &jerr);
    CHECK(cases != NULL);
    if (sl_tokenizer_load(dir, &t, &err)) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        test_case_failed_ = 1;
        json_decref(cases);
        return;
    }
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(cases, "cases"), i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        check_encode(t, name, text, false, json_object_get(c, "ids"));
        check_encode(t, name, text, true, json_object_get(c, "ids_with_special"));
        check_decode(t, name, json_object_get(c, "ids"), json_string_value(json_object_get(c, "decoded")));
        check_decode(t, name, json_object_get(c, "ids_with_special"), NULL);
    }
    json_array_foreach(json_object_get(cases, "chat"), i, c) {
        if (!chat_ids) continue;
        check_encode(t, name, json_string_value(json_object_get(c, "text")), false, json_object_get(c, "ids"));
        check_decode(t, name, json_object_get(c, "ids"), json_string_value(json_object_get(c, "text")));
    }
    check_token_bytes(t, name);
    check_prime(t, name, json_object_get(cases, "cases"));
    if (bos) CHECK_STR(sl_tokenizer_bos_token(t), bos);
    else CHECK(sl_tokenizer_bos_token(t) == NULL && sl_tokenizer_bos_id(t) == -1);
    CHECK_STR(sl_tokenizer_eos_token(t), eos);
    if (bos) CHECK_EQ_INT(sl_tokenizer_bos_id(t), sl_tokenizer_token_to_id(t, bos));
    CHECK_EQ_INT(sl_tokenizer_eos_id(t), sl_tokenizer_token_to_id(t, eos));
    CHECK(sl_tokenizer_eos_id(t) >= 0 && sl_tokenizer_is_special(t, sl_tokenizer_eos_id(t)));
    CHECK_STR(sl_tokenizer_id_to_token(t, sl_tokenizer_eos_id(t)), eos);
    sl_tokenizer_free(t);
    json_decref(cases);
}

static void test_llama31(void) { run_tokenizer("llama3.1", "<|begin_of_text|>", "<|eot_id|>", true); }
static void test_qwen3(void) { run_tokenizer("qwen3", NULL, "<|im_end|>", true); }
static void test_llama2(void) { run_tokenizer("llama2", "<s>", "</s>", true); }
static void test_deepseek_v3(void) {
    run_tokenizer("deepseek-v3", "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
                  "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", false);
}

static void test_lookups(void) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/llama3.1", root);
    sl_tokenizer *t;
    sl_err err = {0};
    CHECK_EQ_INT(sl_tokenizer_load(dir, &t, &err), 0);
    if (!t) return;
    CHECK_EQ_INT(sl_tokenizer_vocab_size(t), 128256);
    CHECK_EQ_INT(sl_tokenizer_token_to_id(t, "Hello"), 9906);
    CHECK_EQ_INT(sl_tokenizer_token_to_id(t, "no such token"), -1);
    CHECK(sl_tokenizer_id_to_token(t, 1 << 30) == NULL);
    CHECK(sl_tokenizer_id_to_token(t, -1) == NULL);
    CHECK(!sl_tokenizer_is_special(t, 9906));
    CHECK(sl_tokenizer_is_special(t, 128000));
    int32_t *ids;
    size_t n;
    CHECK_EQ_INT(sl_tokenizer_encode(t, "\xff", 1, false, &ids, &n, &err), SL_EINVAL);
    CHECK_CONTAINS(err.msg, "UTF-8");
    int32_t bad[] = {9906, -5};
    char *text;
    size_t len;
    CHECK_EQ_INT(sl_tokenizer_decode(t, bad, 2, false, &text, &len, &err), SL_EINVAL);
    int32_t unknown[] = {9906, 1 << 29};
    CHECK_EQ_INT(sl_tokenizer_decode(t, unknown, 2, false, &text, &len, &err), 0);
    CHECK_STR(text, "Hello");
    free(text);
    sl_tokenizer_free(t);
}

int main(int argc, char **argv) {
    root = argc > 1 ? argv[1] : "../shared/tokenizers";
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/llama3.1/tokenizer.json", root);
    if (!sl_path_exists(probe)) {
        printf("SKIP: shared tokenizers not found at %s\n", root);
        return 77;
    }
    TEST_RUN(test_llama31);
    TEST_RUN(test_qwen3);
    TEST_RUN(test_llama2);
    TEST_RUN(test_deepseek_v3);
    TEST_RUN(test_lookups);
    TEST_EXIT();
}
