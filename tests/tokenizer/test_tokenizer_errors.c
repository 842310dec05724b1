/* test_tokenizer_errors.c -- malformed tokenizer.json files fail with a
 * clear error naming the file and the field, and never crash; plus small
 * synthetic tokenizers for the components the shared ones do not use
 * (Metaspace, Whitespace, Lowercase/Strip/NFKC, unk/fuse_unk, lstrip/rstrip,
 * single_word), checked against ids recorded from `tokenizers` 0.23. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "tokenizer/tokenizer.h"

static char dir_template[] = "/tmp/sl_tok_errXXXXXX";
static char path[512];

static int load_text(const char *json, sl_tokenizer **t, sl_err *err) {
    FILE *f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    *t = NULL;
    return sl_tokenizer_load_file(path, t, err);
}

#define MODEL "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"c\":3,\"<unk>\":4},\"merges\":[\"a b\"]"

static void expect_error(const char *json, int code, const char *needle) {
    sl_tokenizer *t;
    sl_err err = {0};
    int rc = load_text(json, &t, &err);
    CHECK_EQ_INT(rc, code);
    CHECK(t == NULL);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, needle);
    if (t) sl_tokenizer_free(t);
}

static void test_malformed(void) {
    expect_error("{\"model\": ", SL_EFORMAT, "invalid JSON");
    expect_error("[1,2]", SL_EFORMAT, "top level");
    expect_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", SL_ENOTSUP, "model.type: model \"WordPiece\"");
    expect_error("{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", SL_EFORMAT, "model.vocab");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}", SL_EFORMAT, "model.merges");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a z\"]}}", SL_EFORMAT, "model.merges[0]: token \"z\"");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}", SL_EFORMAT, "merged token \"ab\"");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},\"merges\":[]}}", SL_EFORMAT, "model.vocab[\"a\"]");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[3]}}", SL_EFORMAT, "model.merges[0]");
    expect_error("{" MODEL ",\"unk_token\":\"<zz>\"}}", SL_EFORMAT, "model.unk_token");
    expect_error("{" MODEL "},\"normalizer\":{\"type\":\"BertNormalizer\"}}", SL_ENOTSUP, "normalizer: normalizer type \"BertNormalizer\"");
    expect_error("{" MODEL "},\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Precompiled\"}]}}",
                 SL_ENOTSUP, "normalizer.normalizers[1]");
    expect_error("{" MODEL "},\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"(\"},\"content\":\"x\"}}", SL_EFORMAT, "normalizer.pattern");
    expect_error("{" MODEL "},\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"BertPreTokenizer\"}]}}",
                 SL_ENOTSUP, "pre_tokenizer.pretokenizers[0]");
    expect_error("{" MODEL "},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Sideways\"}}", SL_EFORMAT, "pre_tokenizer.behavior");
    expect_error("{" MODEL "},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":\"a\",\"behavior\":\"Isolated\"}}", SL_EFORMAT, "pre_tokenizer.pattern");
    expect_error("{" MODEL "},\"decoder\":{\"type\":\"WordPiece\"}}", SL_ENOTSUP, "decoder: decoder type \"WordPiece\"");
    expect_error("{" MODEL "},\"decoder\":{\"type\":\"Strip\",\"content\":\"ab\"}}", SL_EFORMAT, "decoder.content");
    expect_error("{" MODEL "},\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{}}}",
                 SL_EFORMAT, "post_processor.special_tokens[\"<s>\"]");
    expect_error("{" MODEL "},\"post_processor\":{\"type\":\"Weird\"}}", SL_ENOTSUP, "post_processor type \"Weird\"");
    expect_error("{" MODEL "},\"added_tokens\":[{\"id\":\"x\",\"content\":\"<s>\"}]}", SL_EFORMAT, "added_tokens[0].id");
    expect_error("{" MODEL "},\"added_tokens\":[{\"id\":5,\"content\":\"<s>\",\"special\":1}]}", SL_EFORMAT, "added_tokens[0].special");
    expect_error("{" MODEL "},\"truncation\":{\"max_length\":5}}", SL_ENOTSUP, "truncation");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"dropout\":0.1}}", SL_ENOTSUP, "model.dropout");
    sl_tokenizer *t;
    sl_err err = {0};
    CHECK_EQ_INT(sl_tokenizer_load("/nonexistent-dir", &t, &err), SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "/nonexistent-dir/tokenizer.json");
}

static void expect_ids(const sl_tokenizer *t, const char *text, bool special, const int32_t *want, size_t n_want) {
    int32_t *ids;
    size_t n;
    sl_err err = {0};
    CHECK_EQ_INT(sl_tokenizer_encode(t, text, strlen(text), special, &ids, &n, &err), 0);
    CHECK_EQ_INT(n, n_want);
    for (size_t i = 0; i < n && i < n_want; i++) CHECK_EQ_INT(ids[i], want[i]);
    free(ids);
}

static void expect_decode(const sl_tokenizer *t, const int32_t *ids, size_t n, bool skip, const char *want) {
    char *text;
    size_t len;
    sl_err err = {0};
    CHECK_EQ_INT(sl_tokenizer_decode(t, ids, n, skip, &text, &len, &err), 0);
    CHECK_STR(text, want);
    free(text);
}

/* Ids and texts below were produced by `tokenizers` 0.23.3 on the same JSON. */
static void test_metaspace_unk(void) {
    sl_tokenizer *t;
    sl_err err = {0};
    int rc = load_text("{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKC\"},{\"type\":\"Lowercase\"},{\"type\":\"Strip\",\"strip_left\":true,\"strip_right\":true}]},"
                       "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":true},"
                       "\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":true},"
                       "\"added_tokens\":[{\"id\":7,\"content\":\"<sep>\",\"special\":true,\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"single_word\":false}],"
                       "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"vocab\":{\"<unk>\":0,\"\xE2\x96\x81\":1,\"a\":2,\"b\":3,\"\xE2\x96\x81" "a\":4,\"ab\":5,\"\xE2\x96\x81" "ab\":6},"
                       "\"merges\":[\"a b\",\"\xE2\x96\x81 a\",\"\xE2\x96\x81" "a b\"]}}", &t, &err);
    CHECK_EQ_INT(rc, 0);
    if (rc) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    static const int32_t w1[] = {5, 1, 3, 2, 1, 0};
    expect_ids(t, "  AB bA xyz ", false, w1, 6);
    static const int32_t w2[] = {1, 5, 7, 5, 2, 0};
    expect_ids(t, "Ab  <sep>  ab\xEF\xBC\xA1zz", false, w2, 6);
    static const int32_t d1[] = {6, 1, 3, 2, 0, 7, 4};
    expect_decode(t, d1, 7, false, "ab ba<unk><sep> a");
    expect_decode(t, d1, 7, true, "ab ba<unk> a");
    sl_tokenizer_free(t);
}

int main(void) {
    if (!mkdtemp(dir_template)) return 1;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir_template);
    TEST_RUN(test_malformed);
    TEST_RUN(test_metaspace_unk);
    unlink(path);
    rmdir(dir_template);
    TEST_EXIT();
}
