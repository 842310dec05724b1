/* test_flags.c -- the flag parser below every subcommand: the one size syntax
 * (sl_parse_bytes), vLLM's other flag names and spellings, integer seeds, and
 * the model given positionally or as --model. The suggestions for typos are
 * held to the real commands' tables in test_cli.py. */
#include <stdint.h>

#include "cli/flags.h"
#include "test.h"

static void test_sizes(void) {
    static const struct {
        const char *text;
        int64_t bytes;
    } good[] = {
        {"0", 0},
        {"1000", 1000},
        {"48G", 48000000000},
        {"48GB", 48000000000},
        {"48gb", 48000000000},
        {"48 GB", 48000000000},
        {"48Gb", 48000000000},
        {"48GiB", 48LL << 30},
        {"48Gi", 48LL << 30},
        {"48gib", 48LL << 30},
        {"1.5GiB", 3LL << 29},
        {"0.5G", 500000000},
        {"512M", 512000000},
        {"512MiB", 512LL << 20},
        {"400K", 400000},
        {"64KiB", 65536},
        {"2T", 2000000000000},
        {"1TiB", 1LL << 40},
        {"100B", 100},
        {".5K", 500},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t v = -1;
        int rc = sl_parse_bytes(good[i].text, &v);
        if (rc || v != good[i].bytes) fprintf(stderr, "  \"%s\": rc %d, %lld\n", good[i].text, rc, (long long)v);
        CHECK_EQ_INT(rc, 0);
        CHECK_EQ_INT(v, good[i].bytes);
    }
    static const char *bad[] = {"", "G", "GB", ".", "-1", "-1G", "+1G", "1e9", "0x10", "inf", "nan", "1.2.3",
                                "48x", "48GBB", "48GiBB", "48iB", "48  GB", " 48G", "48P", "99999999T"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = -1;
        int rc = sl_parse_bytes(bad[i], &v);
        if (rc == 0) fprintf(stderr, "  \"%s\" accepted as %lld\n", bad[i], (long long)v);
        CHECK(rc != 0);
    }
}

static void test_aliases_and_types(void) {
    int tp = 1, pp = 1, len = 0, help = 0, n_pos = 0;
    int64_t kv = 0, seed = 0;
    const sl_flag flags[] = {
        {"--tensor-parallel-size", SL_FLAG_INT, &tp, "P", "", NULL},
        {"--pipeline-parallel-size", SL_FLAG_INT, &pp, "P", "", NULL},
        {"--max-model-len", SL_FLAG_INT, &len, "M", "", NULL},
        {"--kv-cache-memory", SL_FLAG_BYTES, &kv, "C", "", NULL},
        {"--seed", SL_FLAG_INT64, &seed, "S", "", NULL},
    };
    char *argv[] = {"model", "-tp", "4", "-pp=2", "--max_model_len", "64", "--kv-cache-memory-bytes", "2GiB",
                    "--seed", "-7"};
    const char *pos[1];
    sl_err err = {0};
    CHECK_EQ_INT(sl_flags_parse(flags, 5, 10, argv, pos, 1, &n_pos, &help, &err), 0);
    CHECK_EQ_INT(tp, 4);
    CHECK_EQ_INT(pp, 2);
    CHECK_EQ_INT(len, 64);
    CHECK_EQ_INT(kv, 2LL << 30);
    CHECK_EQ_INT(seed, -7);
    CHECK_EQ_INT(n_pos, 1);
    char *seed_size[] = {"--seed", "1K"};
    CHECK_EQ_INT(sl_flags_parse(flags, 5, 2, seed_size, pos, 1, &n_pos, &help, &err), SL_EINVAL);
    CHECK_CONTAINS(err.msg, "--seed expects an integer");
    /* a single-dash word is a flag, never the model */
    char *unknown[] = {"-tq", "4"};
    CHECK_EQ_INT(sl_flags_parse(flags, 5, 2, unknown, pos, 1, &n_pos, &help, &err), SL_EINVAL);
    CHECK_CONTAINS(err.msg, "unknown flag -tq");
}

static void test_model_arg(void) {
    const char *model = "x";
    sl_err err = {0};
    CHECK_EQ_INT(sl_model_arg(NULL, NULL, &model, &err), 0);
    CHECK(model == NULL);
    CHECK_EQ_INT(sl_model_arg("a/b", NULL, &model, &err), 0);
    CHECK_STR(model, "a/b");
    CHECK_EQ_INT(sl_model_arg(NULL, "a/b", &model, &err), 0);
    CHECK_STR(model, "a/b");
    CHECK_EQ_INT(sl_model_arg("a/b", "a/b", &model, &err), 0);
    CHECK_STR(model, "a/b");
    CHECK_EQ_INT(sl_model_arg("a/b", "c/d", &model, &err), SL_EINVAL);
    CHECK_CONTAINS(err.msg, "given twice");
}

int main(void) {
    TEST_RUN(test_sizes);
    TEST_RUN(test_aliases_and_types);
    TEST_RUN(test_model_arg);
    TEST_EXIT();
}
