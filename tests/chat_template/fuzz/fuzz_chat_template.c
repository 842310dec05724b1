/* fuzz_chat_template.c -- libFuzzer entry for compile + render.
 *
 * Input: template source, optionally followed by a NUL byte and a JSON
 * object used as the render context (a fixed conversation with tools
 * otherwise). Any input must end in success or a clean error: no crash, no
 * leak, no unbounded time or memory. The same entry point is linked into the
 * corpus replay test. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "template/chat_template.h"

static const char default_context[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"Hi <b>\\\"there\\\"</b> \\u00e9\\u4e2d\"},"
    " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"type\": \"function\", \"function\":"
    " {\"name\": \"get\", \"arguments\": {\"q\": [1, 2.5, true, null]}}}]},"
    " {\"role\": \"tool\", \"content\": \"42\"}, {\"role\": \"assistant\", \"content\": \"<think>x</think>ok\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get\", \"parameters\": {\"type\": \"object\"}}}],"
    " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"enable_thinking\": false}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *src = (const char *)data;
    const char *nul = memchr(src, 0, size);
    size_t src_n = nul ? (size_t)(nul - src) : size;
    json_t *ctx = NULL;
    if (nul) ctx = json_loadb(nul + 1, size - src_n - 1, 0, NULL);
    if (!json_is_object(ctx)) {
        json_decref(ctx);
        ctx = json_loads(default_context, 0, NULL);
    }
    sl_chat_template *t = NULL;
    sl_err err = {0};
    if (sl_chat_template_compile(src, src_n, &t, &err) == 0) {
        char *out = NULL;
        size_t n = 0;
        sl_chat_template_render(t, ctx, &out, &n, &err);
        free(out);
        sl_chat_template_free(t);
    }
    json_decref(ctx);
    return 0;
}
