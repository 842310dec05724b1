/* test_config.c -- config.json parsing against transformers.
 *
 * configs/expected.json holds, for published configs, the parameter count and
 * the rotary inverse frequencies transformers computes (written with
 * transformers 5.24 on a meta device). Fixture configs cover the 5.x spelling
 * (rope_parameters); the published ones the 4.x spelling (rope_scaling).
 * Usage: test_config CONFIGS_DIR FIXTURES_DIR */
#include <jansson.h>

#include "model/config.h"
#include "model/memory_plan.h"
#include "model/shard_plan.h"
#include "test.h"
#include "util/fs.h"

static const char *g_configs, *g_fixtures;

static void test_published_configs(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/expected.json", g_configs);
    json_t *expected = json_load_file(path, 0, NULL);
    CHECK(expected != NULL);
    const char *file;
    json_t *want;
    int n_checked = 0;
    json_object_foreach(expected, file, want) {
        snprintf(path, sizeof path, "%s/%s", g_configs, file);
        char *text;
        sl_err err = {0};
        sl_model_config cfg;
        CHECK_EQ_INT(sl_file_read_all(path, &text, NULL, &err), 0);
        int rc = sl_model_config_parse(text, path, &cfg, &err);
        free(text);
        CHECK_EQ_INT(rc, 0);
        if (rc) continue;
        CHECK_EQ_INT(sl_model_config_n_params(&cfg), json_integer_value(json_object_get(want, "n_params")));
        const json_t *inv = json_object_get(want, "inv_freq");
        float got[256];
        sl_model_config_rope_inv_freq(&cfg, got);
        CHECK_EQ_INT(json_array_size(inv), cfg.head_dim / 2);
        for (size_t i = 0; i < json_array_size(inv); i++) {
            double w = json_real_value(json_array_get(inv, i));
            CHECK_NEAR(got[i] / w, 1.0, 2e-6);
        }
        n_checked++;
    }
    CHECK_EQ_INT(n_checked, 5);
    json_decref(expected);
}

static void test_fields(void) {
    sl_model_config cfg;
    sl_err err = {0};
    char path[1024];
    snprintf(path, sizeof path, "%s/llama-3.1-70b-instruct.json", g_configs);
    char *text;
    CHECK_EQ_INT(sl_file_read_all(path, &text, NULL, &err), 0);
    CHECK_EQ_INT(sl_model_config_parse(text, path, &cfg, &err), 0);
    free(text);
    CHECK_EQ_INT(cfg.arch, SL_ARCH_LLAMA);
    CHECK_EQ_INT(cfg.n_kv_heads, 8);
    CHECK_EQ_INT(cfg.head_dim, 128);
    CHECK_EQ_INT(cfg.rope_type, SL_ROPE_LLAMA3);
    CHECK_EQ_INT(cfg.n_eos_token_ids, 3);
    CHECK_EQ_INT(cfg.eos_token_ids[2], 128009);
    CHECK_EQ_INT(cfg.dtype, SL_DTYPE_BF16);

    /* 5.x spelling: rope_parameters, explicit head_dim, dtype */
    CHECK_EQ_INT(sl_model_config_load(g_fixtures, &cfg, &err), SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "config.json");
    snprintf(path, sizeof path, "%s/llama3_tied", g_fixtures);
    CHECK_EQ_INT(sl_model_config_load(path, &cfg, &err), 0);
    CHECK_EQ_INT(cfg.rope_type, SL_ROPE_LLAMA3);
    CHECK_EQ_INT(cfg.rope_original_max_position, 64);
    CHECK(cfg.tie_word_embeddings);
    snprintf(path, sizeof path, "%s/mistral_5layer", g_fixtures);
    CHECK_EQ_INT(sl_model_config_load(path, &cfg, &err), 0);
    CHECK_EQ_INT(cfg.head_dim, 16);
    CHECK_EQ_INT(cfg.arch, SL_ARCH_MISTRAL);
    snprintf(path, sizeof path, "%s/qwen2_bias", g_fixtures);
    CHECK_EQ_INT(sl_model_config_load(path, &cfg, &err), 0);
    CHECK(cfg.attention_bias && !cfg.o_proj_bias);
}

/* Each bad config fails with a message naming the field or value. */
static void test_errors(void) {
    static const struct { const char *json, *needle; int code; } cases[] = {
        {"{\"architectures\": [\"GPT2LMHeadModel\"]}", "GPT2LMHeadModel", SL_ENOTSUP},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64}", "intermediate_size", SL_EFORMAT},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": \"64\"}", "hidden_size", SL_EFORMAT},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 8, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 8, \"hidden_act\": \"gelu\"}",
         "gelu", SL_ENOTSUP},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 8, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 8, "
         "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}", "yarn", SL_ENOTSUP},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 8, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"num_key_value_heads\": 3, \"vocab_size\": 8}",
         "num_key_value_heads 3", SL_EFORMAT},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 8, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 8, \"torch_dtype\": \"int8\"}",
         "int8", SL_ENOTSUP},
        {"{\"architectures\": ", "invalid JSON", SL_EFORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_model_config cfg;
        sl_err err = {0};
        CHECK_EQ_INT(sl_model_config_parse(cases[i].json, "config.json", &cfg, &err), cases[i].code);
        CHECK_CONTAINS(err.msg, cases[i].needle);
        CHECK_CONTAINS(err.msg, "config.json");
    }
}

/* Head splits of the shard plan (the layouts the parallelism issue names). */
static void test_shard_plan(void) {
    sl_model_config cfg = {.n_heads = 32, .n_kv_heads = 8, .n_layers = 5, .intermediate_size = 1024, .vocab_size = 100};
    sl_shard_plan p;
    sl_err err = {0};
    int want_q[] = {12, 12, 8};
    for (int r = 0; r < 3; r++) {
        CHECK_EQ_INT(sl_shard_plan_make(&cfg, r, 3, 0, 1, &p, &err), 0);
        CHECK_EQ_INT(sl_shard_plan_n_heads(&p), want_q[r]);
    }
    cfg = (sl_model_config){.n_heads = 9, .n_kv_heads = 3, .n_layers = 30, .intermediate_size = 1536, .vocab_size = 49152};
    CHECK_EQ_INT(sl_shard_plan_make(&cfg, 0, 2, 0, 1, &p, &err), 0);
    CHECK_EQ_INT(sl_shard_plan_n_heads(&p), 6);
    CHECK_EQ_INT(p.ffn_end - p.ffn_begin, 1024);
    CHECK_EQ_INT(sl_shard_plan_make(&cfg, 1, 2, 0, 1, &p, &err), 0);
    CHECK_EQ_INT(sl_shard_plan_n_heads(&p), 3);
    CHECK_EQ_INT(p.ffn_end, 1536);
    /* replication: 8 heads on 2 KV heads at tp=4 */
    cfg = (sl_model_config){.n_heads = 8, .n_kv_heads = 2, .n_layers = 5, .intermediate_size = 128, .vocab_size = 512};
    CHECK_EQ_INT(sl_shard_plan_make(&cfg, 3, 4, 0, 1, &p, &err), 0);
    CHECK_EQ_INT(p.kv_head_begin, 1);
    CHECK_EQ_INT(p.q_head_begin, 6);
    CHECK_EQ_INT(sl_shard_plan_make(&cfg, 0, 3, 0, 1, &p, &err), SL_EINVAL);
    CHECK_CONTAINS(err.msg, "valid sizes: 1, 2, 4");
}

static void stage_sizes(const sl_model_config *cfg, int pp, int *sizes) {
    sl_shard_plan p;
    sl_err err = {0};
    for (int s = 0; s < pp; s++) {
        CHECK_EQ_INT(sl_shard_plan_make(cfg, 0, 1, s, pp, &p, &err), 0);
        sizes[s] = p.layer_end - p.layer_begin;
    }
}

/* Stages balance weights: the first holds the embedding, the last the LM
 * head, so they take fewer layers. Worked by hand for Qwen2.5-32B: a layer
 * is 487.6M parameters and the embedding / head 778.6M each (1.6 layers), so
 * 64 layers + 3.2 over 4 stages is 16.8 per stage: 15, 17, 17, 15. */
static void test_pipeline_balance(void) {
    char path[1024], *text;
    sl_model_config cfg;
    sl_err err = {0};
    snprintf(path, sizeof path, "%s/qwen2.5-32b-instruct.json", g_configs);
    CHECK_EQ_INT(sl_file_read_all(path, &text, NULL, &err), 0);
    CHECK_EQ_INT(sl_model_config_parse(text, path, &cfg, &err), 0);
    free(text);
    CHECK_EQ_INT(sl_model_config_layer_params(&cfg), 487605248); /* (32763876352 - 2 x 778567680 - 5120) / 64 */
    int sizes[8];
    stage_sizes(&cfg, 4, sizes);
    CHECK(sizes[0] == 15 && sizes[1] == 17 && sizes[2] == 17 && sizes[3] == 15);
    stage_sizes(&cfg, 2, sizes);
    CHECK(sizes[0] == 32 && sizes[1] == 32);
    /* the override, and its errors */
    setenv("SHARDLM_PP_LAYER_PARTITION", "10,30,24", 1);
    stage_sizes(&cfg, 3, sizes);
    CHECK(sizes[0] == 10 && sizes[1] == 30 && sizes[2] == 24);
    sl_shard_plan p;
    setenv("SHARDLM_PP_LAYER_PARTITION", "10,30", 1);
    CHECK_EQ_INT(sl_shard_plan_make(&cfg, 0, 1, 0, 3, &p, &err), SL_EINVAL);
    CHECK_CONTAINS(err.msg, "must list 3 positive layer counts");
    unsetenv("SHARDLM_PP_LAYER_PARTITION");
    /* 5 layers over 3 stages: every stage gets at least one, all layers covered */
    cfg = (sl_model_config){.hidden_size = 64, .intermediate_size = 128, .n_layers = 5, .n_heads = 8, .n_kv_heads = 2,
                            .head_dim = 16, .vocab_size = 512};
    stage_sizes(&cfg, 3, sizes);
    CHECK(sizes[0] >= 1 && sizes[1] >= 1 && sizes[2] >= 1 && sizes[0] + sizes[1] + sizes[2] == 5);
}

static void load_published(const char *name, sl_model_config *cfg) {
    char path[1024], *text;
    sl_err err = {0};
    snprintf(path, sizeof path, "%s/%s", g_configs, name);
    CHECK_EQ_INT(sl_file_read_all(path, &text, NULL, &err), 0);
    CHECK_EQ_INT(sl_model_config_parse(text, path, cfg, &err), 0);
    free(text);
}

/* The smallest layouts, checked by hand from the parameter counts that
 * transformers gives (configs/expected.json) at bf16, 0.9 of each device,
 * the model's full context, KV in bf16:
 *  - Qwen2.5-32B: 65.53 GB; per token 64 layers x 2 x 8 KV heads x 128 x 2 B = 262 KB,
 *    x 32768 = 8.6 GB. 80 GB (72 usable): 65.5 + 8.6 > 72, tp=2: 32.8 + 4.3 fits.
 *    24 GB (21.6): tp=3 splits KV heads 3/3/2, its largest rank is 3/8 = 24.6 GB: no; tp=4 fits.
 *  - Llama-3.1-70B: 141.1 GB; 80 layers x 2 x 8 x 128 x 2 B = 328 KB per token, x 131072 = 43 GB.
 *    80 GB: tp=2 is 70.6 + 21.5 > 72; tp=3 (3/3/2 KV heads) is 52.9 + 16.1 + workspace < 72.
 *  - Llama-3.1-405B: 811.7 GB of weights exceed 8 x 72 GB: nothing fits. */
static void test_memory_plan(void) {
    sl_model_config qwen, llama70, llama405;
    load_published("qwen2.5-32b-instruct.json", &qwen);
    load_published("llama-3.1-70b-instruct.json", &llama70);
    load_published("llama-3.1-405b.json", &llama405);
    const sl_mem_limits lim = {.kv_bytes_per_elem = 2};
    CHECK_NEAR(sl_mem_total_weight_bytes(&qwen) / 1e9, 65.53, 0.01);
    struct { sl_model_config *cfg; double gb; int tp, pp; } cases[] = {
        {&qwen, 80, 2, 1}, {&qwen, 48, 2, 1}, {&qwen, 24, 4, 1}, {&llama70, 80, 3, 1},
        {&llama405, 80, 0, 0}, {&llama405, 24, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_mem_layout l;
        bool fits = sl_mem_smallest_layout(cases[i].cfg, 8, 8, cases[i].gb * 1e9 * 0.9, &lim, &l);
        CHECK_EQ_INT(fits, cases[i].tp > 0);
        if (fits && cases[i].tp) {
            CHECK_EQ_INT(l.tp, cases[i].tp);
            CHECK_EQ_INT(l.pp, cases[i].pp);
        }
    }
    sl_mem_layout two;
    sl_mem_layout_eval(&qwen, 2, 1, &lim, &two);
    CHECK_NEAR(two.weight_bytes / 1e9, 65.53 / 2, 0.01);
    CHECK_NEAR(two.kv_bytes_per_token, 64 * 2 * 4 * 128 * 2, 0);
    sl_mem_layout one;
    sl_mem_layout_eval(&qwen, 1, 1, &lim, &one);
    char msg[512];
    sl_mem_advice(msg, sizeof msg, "Qwen2.5-32B", &qwen, &one, 48e9 * 0.9, "GPU", 8, &lim);
    CHECK_CONTAINS(msg, "Qwen2.5-32B needs 65.5 GB of weights");
    CHECK_CONTAINS(msg, "one GPU has 43.2 GB");
    CHECK_CONTAINS(msg, "use --tensor-parallel-size 2 (32.8 GB of weights");
    CHECK(!strstr(msg, "max-model-len")); /* 65.5 GB of weights do not fit 43.2 GB at any context */
    /* on one 80 GB GPU the weights fit, the full context's KV cache does not: a shorter context, or two GPUs */
    sl_mem_advice(msg, sizeof msg, "Qwen2.5-32B", &qwen, &one, 80e9 * 0.9, "GPU", 8, &lim);
    const int shorter = sl_mem_max_model_len(&one, 80e9 * 0.9);
    CHECK(shorter > 4096 && shorter < 32768);
    char want[96];
    snprintf(want, sizeof want, "lower --max-model-len to %d or less, or use --tensor-parallel-size 2", shorter);
    CHECK_CONTAINS(msg, want);
    /* Llama-3.1-405B's 811.7 GB exceed 8 x 72 GB: no advice about the context */
    sl_mem_layout big;
    sl_mem_layout_eval(&llama405, 1, 1, &lim, &big);
    sl_mem_advice(msg, sizeof msg, "Llama-3.1-405B", &llama405, &big, 80e9 * 0.9, "GPU", 8, &lim);
    CHECK_CONTAINS(msg, "the weights alone exceed every layout of up to 8 GPUs");
    CHECK_EQ_INT(sl_mem_max_model_len(&big, 80e9 * 0.9), 0);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    g_configs = argv[1];
    g_fixtures = argv[2];
    TEST_RUN(test_published_configs);
    TEST_RUN(test_fields);
    TEST_RUN(test_errors);
    TEST_RUN(test_shard_plan);
    TEST_RUN(test_pipeline_balance);
    TEST_RUN(test_memory_plan);
    TEST_EXIT();
}
