/* test_chat_template.c -- the chat-template API: rendering (expected strings
 * were produced by jinja2 3.1.6 in transformers' environment, see
 * diff_test.py's make_env), errors (syntax errors with line and column,
 * raise_exception messages verbatim, type and undefined errors), limits that
 * keep hostile templates from crashing, loading a template from a model
 * folder, and concurrent renders of one compiled template. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "template/chat_template.h"

/* Renders src with the JSON context ctx; returns the text (caller frees) or
 * NULL with err filled. */
static char *render(const char *src, const char *ctx_json, sl_err *err) {
    sl_chat_template *t = NULL;
    if (sl_chat_template_compile(src, strlen(src), &t, err)) return NULL;
    json_t *ctx = json_loads(ctx_json, 0, NULL);
    char *out = NULL;
    size_t n = 0;
    int rc = sl_chat_template_render(t, ctx, &out, &n, err);
    json_decref(ctx);
    sl_chat_template_free(t);
    if (!rc && strlen(out) != n) {
        free(out);
        return NULL;
    }
    return rc ? NULL : out;
}

static void expect(const char *src, const char *ctx, const char *want) {
    sl_err err = {0};
    char *got = render(src, ctx, &err);
    if (!got) fprintf(stderr, "render failed: %s\n", err.msg);
    CHECK_STR(got, want);
    free(got);
}

static void expect_error(const char *src, const char *ctx, int code, const char *needle) {
    sl_err err = {0};
    char *got = render(src, ctx, &err);
    CHECK(got == NULL);
    CHECK_EQ_INT(err.code, code);
    CHECK_CONTAINS(err.msg, needle);
    free(got);
}

static void test_render_matches_jinja2(void) {
    expect("{% for m in messages %}{{ loop.index }}{{ m.role[0] }}{% if not loop.last %},{% endif %}{% endfor %}",
           "{\"messages\": [{\"role\": \"user\"}, {\"role\": \"assistant\"}]}", "1u,2a");
    expect("  {% if x %}\n    yes\n  {% endif %}\nend\n", "{\"x\": true}", "    yes\nend");
    expect("{{ {'a': [1, 2.0, none, true, 'q\\'s']} }}|{{ x | tojson }}|{{ 1e16 }}|{{ 7 // -2 }}",
           "{\"x\": {\"k\": \"\\u00e9\\n\", \"n\": [1, 0.5]}}",
           "{'a': [1, 2.0, None, True, \"q's\"]}|{\"k\": \"\xc3\xa9\\n\", \"n\": [1, 0.5]}|1e+16|-4");
    expect("{% set ns = namespace(c=0) %}{% for i in range(4) if i is odd %}{% set ns.c = ns.c + i %}{% endfor %}"
           "{{ ns.c }}", "{}", "4");
    expect("{% macro m(a, b='B') %}[{{ a }}{{ b }}{{ caller() if caller is defined }}]{% endmacro %}{{ m(1) }}"
           "{% call m(2, b='c') %}body{% endcall %}", "{}", "[1B][2cbody]");
    expect("{{ 'Hello World'.split()[::-1] | join(' ') }}|{{ '  x '.strip() }}|{{ 'abc'[1:] }}|"
           "{{ 'aXbX'.replace('X', '-') }}", "{}", "World Hello|x|bc|a-b-");
    expect("{{ missing }}|{{ missing is defined }}|{{ messages[5] }}", "{\"messages\": []}", "|False|");
}

static void test_syntax_errors_have_position(void) {
    expect_error("hello\n  {% if x %}\nno end", "{}", SL_EINVAL, "line 2, column 6");
    expect_error("{{ x | nosuchfilter }}", "{}", SL_EINVAL, "no filter named 'nosuchfilter'");
    expect_error("{% include 'x.jinja' %}", "{}", SL_EINVAL, "not supported");
    expect_error("{{ 1 + }}", "{}", SL_EINVAL, "line 1, column 8");
    expect_error("{% for x in y recursive %}{% endfor %}", "{}", SL_EINVAL, "recursive");
    expect_error("{% break %}", "{}", SL_EINVAL, "outside of a loop");
}

static void test_template_errors(void) {
    sl_err err = {0};
    char *got = render("{{ raise_exception('Conversation roles must alternate user/assistant') }}", "{}", &err);
    CHECK(got == NULL);
    CHECK_EQ_INT(err.code, SL_EINVAL);
    CHECK_STR(err.msg, "Conversation roles must alternate user/assistant");
    expect_error("{{ 'a' + messages }}", "{\"messages\": []}", SL_EINVAL, "can only concatenate str");
    expect_error("{{ x.y.z }}", "{\"x\": {}}", SL_EINVAL, "has no attribute 'y'");
    expect_error("{{ messages.append(1) }}", "{\"messages\": []}", SL_EINVAL, "unsafe");
    expect_error("{{ 1 // 0 }}", "{}", SL_EINVAL, "by zero");
    expect_error("{% set ns = namespace() %}{% set ns._x = 1 %}", "{}", SL_EINVAL, "underscore");
}

static void test_limits(void) {
    expect_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "{}", SL_EINVAL, "too deeply");
    expect_error("{% set r = range(100000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}", "{}",
                 SL_EINVAL, "ran too long");
    expect_error("{{ range(100001) | length }}", "{}", SL_EINVAL, "Range too big");
    expect_error("{% set ns = namespace(s='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx') %}{% for i in range(30) %}"
                 "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
                 "{}", SL_EINVAL, "MiB");
    char deep[4096] = "{{ ";
    for (int i = 0; i < 1000; i++) strcat(deep, "(");
    expect_error(deep, "{}", SL_EINVAL, "line 1");
    char src[8192] = "{{ 1";
    for (int i = 0; i < 1500; i++) strcat(src, "+1");
    strcat(src, " }}");
    expect_error(src, "{}", SL_EINVAL, "too deeply");
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_load_source(void) {
    char dir[] = "/tmp/sl_chat_template_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char cfg[256], jinja[256];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    snprintf(jinja, sizeof jinja, "%s/chat_template.jinja", dir);
    char *src = NULL, *bos = NULL, *eos = NULL;
    sl_err err = {0};

    CHECK_EQ_INT(sl_chat_template_load_source(dir, NULL, &src, &bos, &eos, &err), SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "--chat-template FILE");

    write_file(cfg, "{\"model_max_length\": 1000000000000000019884624838656, \"bos_token\": {\"content\": \"<s>\"},"
                    " \"eos_token\": \"</s>\", \"chat_template\": [{\"name\": \"default\", \"template\": \"D\"},"
                    " {\"name\": \"tool_use\", \"template\": \"T\"}]}");
    CHECK_EQ_INT(sl_chat_template_load_source(dir, NULL, &src, &bos, &eos, &err), 0);
    CHECK_STR(src, "D");
    CHECK_STR(bos, "<s>");
    CHECK_STR(eos, "</s>");
    free(src), free(bos), free(eos);
    CHECK_EQ_INT(sl_chat_template_load_source(dir, "tool_use", &src, NULL, NULL, &err), 0);
    CHECK_STR(src, "T");
    free(src);
    CHECK_EQ_INT(sl_chat_template_load_source(dir, "rag", &src, NULL, NULL, &err), SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "'rag'");

    write_file(jinja, "J{{ x }}");
    CHECK_EQ_INT(sl_chat_template_load_source(dir, NULL, &src, &bos, &eos, &err), 0);
    CHECK_STR(src, "J{{ x }}");
    CHECK_STR(bos, "<s>");
    free(src), free(bos), free(eos);

    write_file(cfg, "{\"chat_template\": ");
    CHECK_EQ_INT(sl_chat_template_load_source(dir, NULL, &src, &bos, &eos, &err), SL_EFORMAT);
    unlink(cfg);
    unlink(jinja);
    rmdir(dir);
}

typedef struct worker {
    const sl_chat_template *t;
    json_t *ctx;
    int failures;
} worker;

static void *render_many(void *arg) {
    worker *w = arg;
    for (int i = 0; i < 200; i++) {
        char *out = NULL;
        size_t n;
        sl_err err;
        if (sl_chat_template_render(w->t, w->ctx, &out, &n, &err) || strcmp(out, "<u>hi</u><a>yo</a>!") != 0)
            w->failures++;
        free(out);
    }
    return NULL;
}

static void test_concurrent_renders(void) {
    const char *src = "{% set ns = namespace(s='') %}{% for m in messages %}{% set ns.s = ns.s ~ '<' ~ m.role[0] ~ '>' "
                      "~ m.content ~ '</' ~ m.role[0] ~ '>' %}{% endfor %}{{ ns.s }}{{ '!' if add_generation_prompt }}";
    sl_chat_template *t = NULL;
    sl_err err;
    CHECK_EQ_INT(sl_chat_template_compile(src, strlen(src), &t, &err), 0);
    json_t *ctx = json_loads("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\","
                             " \"content\": \"yo\"}], \"add_generation_prompt\": true}", 0, NULL);
    pthread_t th[4];
    worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){t, ctx, 0};
        pthread_create(&th[i], NULL, render_many, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(w[i].failures, 0);
    }
    json_decref(ctx);
    sl_chat_template_free(t);
}

int main(void) {
    TEST_RUN(test_render_matches_jinja2);
    TEST_RUN(test_syntax_errors_have_position);
    TEST_RUN(test_template_errors);
    TEST_RUN(test_limits);
    TEST_RUN(test_load_source);
    TEST_RUN(test_concurrent_renders);
    TEST_EXIT();
}
