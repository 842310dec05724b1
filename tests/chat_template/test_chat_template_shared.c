/* test_chat_template_shared.c -- renders every chat case of the shared
 * tokenizers (transformers' apply_chat_template output, add_generation_prompt
 * as recorded) and compares byte for byte. Models whose tokenizer_config.json
 * has no chat template are reported and skipped; without the shared data the
 * whole test is skipped (exit 77). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "template/chat_template.h"
#include "util/fs.h"
#include "util/json.h"

static const char *shared_dir;
static const char *const models[] = {"llama3.1", "qwen3", "llama2", "deepseek-v3"};
static int rendered;

static void check_model(const char *model) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tokenizers/%s", shared_dir, model);
    char *cases_path = sl_path_join(dir, "cases.json");
    json_t *cases = NULL;
    sl_err err = {0};
    CHECK_EQ_INT(sl_json_load_file(cases_path, &cases, &err), 0);
    free(cases_path);
    json_t *chat = json_object_get(cases, "chat");
    char *source = NULL, *bos = NULL, *eos = NULL;
    int rc = sl_chat_template_load_source(dir, NULL, &source, &bos, &eos, &err);
    if (rc == SL_ENOTFOUND) {
        CHECK_EQ_INT(json_array_size(chat), 0); /* no template, so no recorded chats */
        CHECK_CONTAINS(err.msg, "--chat-template");
        fprintf(stderr, "note: %s has no chat template; skipped\n", model);
        json_decref(cases);
        return;
    }
    CHECK_EQ_INT(rc, 0);
    if (rc) {
        fprintf(stderr, "%s: %s\n", model, err.msg);
        json_decref(cases);
        return;
    }
    sl_chat_template *t = NULL;
    CHECK_EQ_INT(sl_chat_template_compile(source, strlen(source), &t, &err), 0);
    if (!t) fprintf(stderr, "%s: %s\n", model, err.msg);
    size_t i;
    json_t *c;
    json_array_foreach(chat, i, c) {
        if (!t) break;
        json_t *ctx = json_object();
        json_object_set(ctx, "messages", json_object_get(c, "messages"));
        json_object_set(ctx, "add_generation_prompt", json_object_get(c, "add_generation_prompt"));
        if (json_object_get(c, "tools")) json_object_set(ctx, "tools", json_object_get(c, "tools"));
        if (bos) json_object_set_new(ctx, "bos_token", json_string(bos));
        if (eos) json_object_set_new(ctx, "eos_token", json_string(eos));
        char *out = NULL;
        size_t n = 0;
        int r = sl_chat_template_render(t, ctx, &out, &n, &err);
        CHECK_EQ_INT(r, 0);
        if (r) fprintf(stderr, "%s case %zu: %s\n", model, i, err.msg);
        const char *want = json_string_value(json_object_get(c, "text"));
        CHECK_STR(out, want);
        CHECK_EQ_INT(n, want ? strlen(want) : 0);
        rendered++;
        free(out);
        json_decref(ctx);
    }
    sl_chat_template_free(t);
    free(source);
    free(bos);
    free(eos);
    json_decref(cases);
}

static void test_shared_chat_cases(void) {
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) check_model(models[m]);
    CHECK(rendered >= 9);
    fprintf(stderr, "rendered %d shared chat cases\n", rendered);
}

int main(int argc, char **argv) {
    char probe[1024];
    snprintf(probe, sizeof probe, "%s/tokenizers", argc > 1 ? argv[1] : "");
    if (argc < 2 || !sl_path_is_dir(probe)) {
        fprintf(stderr, "skipped: shared tokenizers not found at %s (set SHARDLM_SHARED)\n", probe);
        return 77;
    }
    shared_dir = argv[1];
    TEST_RUN(test_shared_chat_cases);
    TEST_EXIT();
}
