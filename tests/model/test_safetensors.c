/* test_safetensors.c -- the safetensors reader on good and broken files.
 *
 * Broken files are written by hand here (truncated, lying offsets, sizes
 * that disagree with the shape, overlapping tensors, bad JSON, shards that
 * lack what their index promises); each must fail with one line that names
 * the file and, where there is one, the tensor. The fixture model checks the
 * good path, sharded indexes included. Usage: test_safetensors FIXTURE_DIR */
#include <stdint.h>
#include <unistd.h>

#include "model/safetensors.h"
#include "test.h"
#include "util/fs.h"

static char g_tmp[] = "/tmp/sl_st_XXXXXX";
static const char *g_fixture;

/* Writes header JSON + n_data zero bytes; n_header_override replaces the length field when nonzero. */
static void write_st(const char *name, const char *header, size_t n_data, uint64_t n_header_override) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", g_tmp, name);
    FILE *f = fopen(path, "wb");
    uint64_t n = n_header_override ? n_header_override : strlen(header);
    for (int i = 0; i < 8; i++) fputc((int)((n >> (8 * i)) & 0xff), f);
    fputs(header, f);
    for (size_t i = 0; i < n_data; i++) fputc(0, f);
    fclose(f);
}

static int open_tmp(const char *name, sl_safetensors **st, sl_err *err) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", g_tmp, name);
    return sl_safetensors_open_file(path, st, err);
}

static void expect_error(const char *name, const char *header, size_t n_data, uint64_t n_header, const char *needle) {
    sl_safetensors *st = NULL;
    sl_err err = {0};
    write_st(name, header, n_data, n_header);
    int rc = open_tmp(name, &st, &err);
    CHECK(rc != 0);
    CHECK(st == NULL);
    CHECK_CONTAINS(err.msg, name);
    CHECK_CONTAINS(err.msg, needle);
}

static void test_good_file(void) {
    write_st("good.safetensors",
             "{\"__metadata__\":{\"format\":\"pt\"},\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[12,24]},"
             "\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[24,32]}}", 32, 0);
    sl_safetensors *st;
    sl_err err = {0};
    CHECK_EQ_INT(open_tmp("good.safetensors", &st, &err), 0);
    CHECK_EQ_INT(sl_safetensors_count(st), 3);
    const sl_st_tensor *t;
    CHECK_EQ_INT(sl_safetensors_get(st, "b", 2, (int64_t[]){2, 3}, &t, &err), 0);
    CHECK_EQ_INT(t->dtype, SL_DTYPE_BF16);
    CHECK_EQ_INT(t->n_bytes, 12);
    CHECK_EQ_INT(sl_safetensors_get(st, "b", 2, (int64_t[]){3, 2}, &t, &err), SL_EFORMAT);
    CHECK_CONTAINS(err.msg, "\"b\" has shape [2, 3], expected [3, 2]");
    CHECK_EQ_INT(sl_safetensors_get(st, "missing", 1, (int64_t[]){1}, &t, &err), SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "\"missing\"");
    CHECK_EQ_INT(sl_safetensors_get(st, "ids", 1, (int64_t[]){1}, &t, &err), SL_ENOTSUP);
    CHECK_CONTAINS(err.msg, "I64");
    sl_safetensors_close(st);
}

static void test_broken_files(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/short.safetensors", g_tmp);
    FILE *f = fopen(path, "wb");
    fputs("abc", f);
    fclose(f);
    sl_safetensors *st = NULL;
    sl_err err = {0};
    CHECK_EQ_INT(open_tmp("short.safetensors", &st, &err), SL_EFORMAT);
    CHECK_CONTAINS(err.msg, "too short");
    expect_error("empty.safetensors", "", 0, 0, "not valid JSON");
    expect_error("hugelen.safetensors", "{}", 0, 1ull << 40, "header length");
    expect_error("badjson.safetensors", "{\"a\": {", 0, 0, "not valid JSON");
    expect_error("notobj.safetensors", "[1,2]", 0, 0, "not a JSON object");
    expect_error("trunc.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, 0,
                 "truncated");
    expect_error("size.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", 16, 0,
                 "\"w\": 12 bytes for 4 elements");
    expect_error("order.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 16, 0,
                 "begin <= end");
    expect_error("dtype.safetensors", "{\"w\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 4, 0,
                 "unknown dtype");
    expect_error("overlap.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0, "overlap");
    expect_error("shape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, 0,
                 "negative");
    expect_error("overflow.safetensors",
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4, 0,
                 "overflows");
}

static void test_sharded_index(void) {
    write_st("model-00001-of-00002.safetensors", "{\"x\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, 0);
    write_st("model-00002-of-00002.safetensors", "{\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0);
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", g_tmp);
    FILE *f = fopen(path, "w");
    fputs("{\"metadata\":{},\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
          "\"y\":\"model-00002-of-00002.safetensors\"}}", f);
    fclose(f);
    sl_safetensors *st;
    sl_err err = {0};
    CHECK_EQ_INT(sl_safetensors_open(g_tmp, &st, &err), 0);
    CHECK(sl_safetensors_find(st, "x") && sl_safetensors_find(st, "y"));
    sl_safetensors_close(st);
    /* the index names a tensor its shard does not hold */
    f = fopen(path, "w");
    fputs("{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\",\"z\":\"model-00002-of-00002.safetensors\"}}", f);
    fclose(f);
    CHECK_EQ_INT(sl_safetensors_open(g_tmp, &st, &err), SL_EFORMAT);
    CHECK_CONTAINS(err.msg, "\"z\"");
    /* a shard that is missing */
    f = fopen(path, "w");
    fputs("{\"weight_map\":{\"x\":\"model-00009-of-00009.safetensors\"}}", f);
    fclose(f);
    CHECK_EQ_INT(sl_safetensors_open(g_tmp, &st, &err), SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "model-00009-of-00009.safetensors");
    /* path traversal in a shard name */
    f = fopen(path, "w");
    fputs("{\"weight_map\":{\"x\":\"../etc/passwd\"}}", f);
    fclose(f);
    CHECK_EQ_INT(sl_safetensors_open(g_tmp, &st, &err), SL_EFORMAT);
    CHECK_CONTAINS(err.msg, "invalid file name");
    unlink(path);
}

static void test_fixture_and_missing(void) {
    sl_safetensors *st;
    sl_err err = {0};
    CHECK_EQ_INT(sl_safetensors_open(g_fixture, &st, &err), 0);
    CHECK(sl_safetensors_find(st, "model.embed_tokens.weight") != NULL);
    sl_safetensors_close(st);
    CHECK_EQ_INT(sl_safetensors_open("/nonexistent", &st, &err), SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "no model.safetensors");
}

int main(int argc, char **argv) {
    if (argc < 2 || !mkdtemp(g_tmp)) return 2;
    g_fixture = argv[1];
    TEST_RUN(test_good_file);
    TEST_RUN(test_broken_files);
    TEST_RUN(test_sharded_index);
    TEST_RUN(test_fixture_and_missing);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    TEST_EXIT();
}
