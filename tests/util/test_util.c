/* test_util.c -- error messages, path joins, half-precision conversions. */
#include "test.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/half.h"

static void test_err_wrap(void) {
    sl_err err = {0};
    CHECK_EQ_INT(sl_err_set(&err, SL_EIO, "cannot read %s", "x.bin"), SL_EIO);
    sl_err_wrap(&err, SL_EIO, "loading %s: ", "model");
    CHECK_STR(err.msg, "loading model: cannot read x.bin");
    CHECK_EQ_INT(err.code, SL_EIO);
}

static void test_path_join(void) {
    char *a = sl_path_join("dir", "f.json"), *b = sl_path_join("dir/", "f.json");
    CHECK_STR(a, "dir/f.json");
    CHECK_STR(b, "dir/f.json");
    free(a);
    free(b);
}

static void test_half(void) {
    /* Values from torch: torch.tensor(x).to(torch.bfloat16 / float16).view(torch.int16) */
    CHECK_EQ_INT(sl_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(sl_f32_to_bf16(3.14159265f), 0x4049);
    CHECK_EQ_INT(sl_f32_to_bf16(-2.5f), 0xc020);
    CHECK_EQ_INT(sl_f32_to_bf16(1.00390625f), 0x3f80); /* tie rounds to even */
    CHECK_NEAR(sl_bf16_to_f32(0x4049), 3.140625, 0);
    CHECK_NEAR(sl_f16_to_f32(0x3c00), 1.0, 0);
    CHECK_NEAR(sl_f16_to_f32(0xc248), -3.140625, 0);
    CHECK_NEAR(sl_f16_to_f32(0x0001), 5.960464477539063e-08, 0); /* smallest subnormal */
    CHECK_NEAR(sl_f16_to_f32(0x7bff), 65504.0, 0);
}

static void test_read_missing(void) {
    char *buf;
    sl_err err = {0};
    CHECK_EQ_INT(sl_file_read_all("/nonexistent/file", &buf, NULL, &err), SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "/nonexistent/file");
}

int main(void) {
    TEST_RUN(test_err_wrap);
    TEST_RUN(test_path_join);
    TEST_RUN(test_half);
    TEST_RUN(test_read_missing);
    TEST_EXIT();
}
