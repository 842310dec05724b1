/* render_tool.c -- the C side of the differential test: reads JSON lines
 * {"template": "...", "context": {...}} on stdin and writes one JSON line per
 * input, {"ok": true, "text": "..."} or {"ok": false, "error": "..."}.
 * Consecutive cases with the same template reuse one compilation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/chat_template.h"

static void reply(json_t *obj) {
    char *s = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII);
    puts(s ? s : "{\"ok\": false, \"error\": \"out of memory\"}");
    free(s);
    json_decref(obj);
}

int main(void) {
    char *line = NULL, *cached_src = NULL;
    size_t cap = 0;
    ssize_t len;
    sl_chat_template *tpl = NULL;
    sl_err cached_err = {0};
    while ((len = getline(&line, &cap, stdin)) > 0) {
        json_error_t jerr;
        json_t *in = json_loadb(line, (size_t)len, JSON_ALLOW_NUL, &jerr);
        const char *src = json_string_value(json_object_get(in, "template"));
        json_t *ctx = json_object_get(in, "context");
        if (!src || !ctx) {
            reply(json_pack("{s:b, s:s}", "ok", 0, "error", "bad input line"));
            json_decref(in);
            continue;
        }
        if (!cached_src || strcmp(cached_src, src) != 0) {
            sl_chat_template_free(tpl);
            tpl = NULL;
            free(cached_src);
            cached_src = strdup(src);
            cached_err = (sl_err){0};
            sl_chat_template_compile(src, json_string_length(json_object_get(in, "template")), &tpl, &cached_err);
        }
        if (!tpl) {
            reply(json_pack("{s:b, s:s, s:s}", "ok", 0, "error", cached_err.msg, "stage", "compile"));
        } else {
            char *out = NULL;
            size_t n = 0;
            sl_err err = {0};
            if (sl_chat_template_render(tpl, ctx, &out, &n, &err) == 0)
                reply(json_pack("{s:b, s:s%}", "ok", 1, "text", out, n));
            else
                reply(json_pack("{s:b, s:s, s:s}", "ok", 0, "error", err.msg, "stage", "render"));
            free(out);
        }
        fflush(stdout);
        json_decref(in);
    }
    sl_chat_template_free(tpl);
    free(cached_src);
    free(line);
    return 0;
}
