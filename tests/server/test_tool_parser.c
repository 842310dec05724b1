/* test_tool_parser.c -- tool calls read out of model-like output
 * (src/server/tool_parser.c): every format, the calls and content expected
 * for each, malformed calls falling back to content as vLLM's parsers do,
 * and streaming: the output split at every byte boundary, and fed one byte
 * at a time, gives the same calls and content as the whole output, a call's
 * CALL delta comes before its arguments, and nothing that may be the start
 * of a call is sent as content; random well-formed outputs (JSON arguments
 * with markers and brackets inside strings, content with pieces of
 * markers; pythonic calls with nested literals, both quotes and escapes,
 * their JSON written beside them) cut at random points read back exactly
 * their calls. first_only (parallel_tool_calls false) returns the
 * first call of each, whole and streamed alike. */
#include "server/tool_parser.h"
#include "test.h"

typedef struct want_call {
    const char *name, *arguments;
} want_call;

typedef struct tcase {
    const char *what;
    int format;           /* an sl_tool_format, FIRST_ONLY() for parallel_tool_calls false */
    const char *function; /* SL_TOOL_NAMED */
    const char *text;
    const char *content;  /* NULL: none */
    int n_calls;
    want_call calls[3];
} tcase;

/* A case's format with parallel_tool_calls false: the format, plus this bit for first_only. */
#define FIRST_ONLY_BIT 0x100
#define FIRST_ONLY(f) ((f) | FIRST_ONLY_BIT)

static sl_tool_stream *stream_new(int format, const char *function) {
    return sl_tool_stream_new((sl_tool_format)(format & ~FIRST_ONLY_BIT), function, (format & FIRST_ONLY_BIT) != 0);
}
static int parse(int format, const char *function, const char *text, size_t n, sl_tool_result *out) {
    return sl_tool_parse((sl_tool_format)(format & ~FIRST_ONLY_BIT), function, (format & FIRST_ONLY_BIT) != 0, text, n,
                         out);
}

static const tcase CASES[] = {
    {"hermes: content then a call", SL_TOOL_HERMES, NULL,
     "I'll check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
     "I'll check.", 1, {{"get_weather", "{\"city\": \"Paris\"}"}}},
    {"hermes: two calls", SL_TOOL_HERMES, NULL,
     "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", "
     "\"arguments\": {\"y\": [1, {\"z\": \"}]\"}]}}\n</tool_call>",
     NULL, 2, {{"a", "{\"x\": 1}"}, {"b", "{\"y\": [1, {\"z\": \"}]\"}]}"}}},
    {"hermes: no closing tag at the end", SL_TOOL_HERMES, NULL,
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\": \"a \\\"quoted\\\" word\"}}", NULL, 1,
     {{"f", "{\"q\": \"a \\\"quoted\\\" word\"}"}}},
    {"hermes: arguments before the name", SL_TOOL_HERMES, NULL,
     "<tool_call>{\"arguments\": {\"n\": -1.5e3}, \"name\": \"calc\"}</tool_call>", NULL, 1,
     {{"calc", "{\"n\": -1.5e3}"}}},
    {"hermes: no arguments", SL_TOOL_HERMES, NULL, "<tool_call>{\"name\": \"now\"}</tool_call>", NULL, 1,
     {{"now", "{}"}}},
    {"hermes: unicode", SL_TOOL_HERMES, NULL,
     "Voilà: <tool_call>{\"name\": \"m\\u00e9t\\u00e9o\", \"arguments\": {\"ville\": \"Zürich 🌧\"}}</tool_call>",
     "Voilà:", 1, {{"météo", "{\"ville\": \"Zürich 🌧\"}"}}},
    {"hermes: plain text", SL_TOOL_HERMES, NULL, "Hello! 1 < 2 and <tool is not a tag.\n",
     "Hello! 1 < 2 and <tool is not a tag.\n", 0, {{0}}},
    {"hermes: text ending in half a tag", SL_TOOL_HERMES, NULL, "See <tool_ca", "See <tool_ca", 0, {{0}}},
    {"hermes: malformed JSON is content", SL_TOOL_HERMES, NULL,
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1,}}\n</tool_call>",
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1,}}\n</tool_call>", 0, {{0}}},
    {"hermes: cut short is content", SL_TOOL_HERMES, NULL, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": ",
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": ", 0, {{0}}},
    {"hermes: not JSON after the tag", SL_TOOL_HERMES, NULL, "<tool_call> I would call f.",
     "<tool_call> I would call f.", 0, {{0}}},
    {"hermes: a name that is no string", SL_TOOL_HERMES, NULL, "<tool_call>{\"name\": 3}</tool_call>",
     "<tool_call>{\"name\": 3}</tool_call>", 0, {{0}}},
    {"llama3_json: python tag, two calls", SL_TOOL_LLAMA3_JSON, NULL,
     "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": 1}}; {\"name\": \"g\", \"parameters\": {}}", NULL, 2,
     {{"f", "{\"x\": 1}"}, {"g", "{}"}}},
    {"llama3_json: bare object", SL_TOOL_LLAMA3_JSON, NULL,
     "  {\"name\": \"search\", \"parameters\": {\"query\": \"C11 atomics\", \"k\": 3}}", NULL, 1,
     {{"search", "{\"query\": \"C11 atomics\", \"k\": 3}"}}},
    {"llama3_json: arguments key", SL_TOOL_LLAMA3_JSON, NULL, "{\"name\": \"f\", \"arguments\": true}", NULL, 1,
     {{"f", "true"}}},
    {"llama3_json: plain text", SL_TOOL_LLAMA3_JSON, NULL, " The answer is {42}.", " The answer is {42}.", 0, {{0}}},
    {"llama3_json: an object without a name is content", SL_TOOL_LLAMA3_JSON, NULL, "{\"answer\": 42}",
     "{\"answer\": 42}", 0, {{0}}},
    {"llama3_json: text after a call", SL_TOOL_LLAMA3_JSON, NULL, "{\"name\": \"f\", \"parameters\": {}} and more",
     "{\"name\": \"f\", \"parameters\": {}} and more", 0, {{0}}},
    {"mistral: content then an array", SL_TOOL_MISTRAL, NULL,
     "Sure.[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": [1, 2]}}, {\"name\": \"g\", \"arguments\": {}}]",
     "Sure.", 2, {{"f", "{\"a\": [1, 2]}"}, {"g", "{}"}}},
    {"mistral: plain text", SL_TOOL_MISTRAL, NULL, "No tools [TOOL", "No tools [TOOL", 0, {{0}}},
    {"mistral: unclosed array is content", SL_TOOL_MISTRAL, NULL, "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}",
     "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}", 0, {{0}}},
    {"required: one call", SL_TOOL_REQUIRED, NULL, "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}]",
     NULL, 1, {{"get_weather", "{\"city\": \"Oslo\"}"}}},
    {"required: three calls, pretty", SL_TOOL_REQUIRED, NULL,
     "[\n  {\"name\": \"a\", \"parameters\": {}},\n  {\"name\": \"b\", \"parameters\": {\"v\": null}},\n"
     "  {\"name\": \"c\", \"parameters\": {\"s\": \"[{,}]\"}}\n]",
     NULL, 3, {{"a", "{}"}, {"b", "{\"v\": null}"}, {"c", "{\"s\": \"[{,}]\"}"}}},
    {"required: cut short is content", SL_TOOL_REQUIRED, NULL, "[{\"name\": \"f\", \"par",
     "[{\"name\": \"f\", \"par", 0, {{0}}},
    {"required: empty output", SL_TOOL_REQUIRED, NULL, "", "", 0, {{0}}},
    {"named: the output is the arguments", SL_TOOL_NAMED, "get_weather", "{\"city\": \"Lima\", \"unit\": \"C\"}", NULL,
     1, {{"get_weather", "{\"city\": \"Lima\", \"unit\": \"C\"}"}}},
    /* pythonic: the arguments are what Python's json.dumps writes for the keyword arguments */
    {"pythonic: two calls", SL_TOOL_PYTHONIC, NULL, "[get_weather(city=\"Paris\", unit=\"c\"), get_time(tz='CET')]",
     NULL, 2, {{"get_weather", "{\"city\": \"Paris\", \"unit\": \"c\"}"}, {"get_time", "{\"tz\": \"CET\"}"}}},
    {"pythonic: nested literals", SL_TOOL_PYTHONIC, NULL,
     "[f(a=[1, 2.5, -3, True, None], b={'x': {\"y\": [False, []]}, 'n': 1_000, 2: 'two', None: 0}, c=0x1F, d=1e3, "
     "e=.5, g=5., h=-0.25E-3, i={}, j=0o17, k=0b101, l=+7, m=00, n=007.50)]",
     NULL, 1,
     {{"f", "{\"a\": [1, 2.5, -3, true, null], \"b\": {\"x\": {\"y\": [false, []]}, \"n\": 1000, \"2\": \"two\", "
            "\"null\": 0}, \"c\": 31, \"d\": 1e3, \"e\": 0.5, \"g\": 5.0, \"h\": -0.25e-3, \"i\": {}, \"j\": 15, "
            "\"k\": 5, \"l\": 7, \"m\": 0, \"n\": 7.50}"}}},
    {"pythonic: escapes", SL_TOOL_PYTHONIC, NULL,
     "[say(text='It\\'s \"fine\"\\n\\ttab \\\\ \\x41\\u00e9\\U0001F327 \\101\\0 \\q', raw=r'C:\\new\\'s', u=u\"ok\", "
     "z='Zürich 🌧')]",
     NULL, 1,
     {{"say", "{\"text\": \"It's \\\"fine\\\"\\n\\ttab \\\\ Aé🌧 A\\u0000 \\\\q\", \"raw\": \"C:\\\\new\\\\'s\", "
              "\"u\": \"ok\", \"z\": \"Zürich 🌧\"}"}}},
    {"pythonic: triple quotes", SL_TOOL_PYTHONIC, NULL,
     "[note(body=\"\"\"line one\nline \"two\" \"\"x\"\" \\d\"\"\", empty='', e2=\"\", t='''a''')]", NULL, 1,
     {{"note", "{\"body\": \"line one\\nline \\\"two\\\" \\\"\\\"x\\\"\\\" \\\\d\", \"empty\": \"\", \"e2\": \"\", "
               "\"t\": \"a\"}"}}},
    {"pythonic: no arguments, blanks and trailing commas", SL_TOOL_PYTHONIC, NULL,
     "\n [\n  now(),\n  f( a = 1 ,\n b = ['x',] , ) ]\n ", NULL, 2, {{"now", "{}"}, {"f", "{\"a\": 1, \"b\": [\"x\"]}"}}},
    {"pythonic: plain text", SL_TOOL_PYTHONIC, NULL, "The answer is [42].\n", "The answer is [42].\n", 0, {{0}}},
    {"pythonic: a list that is no calls", SL_TOOL_PYTHONIC, NULL, "[1, 2, 3]", "[1, 2, 3]", 0, {{0}}},
    {"pythonic: text before the list", SL_TOOL_PYTHONIC, NULL, "Sure! [f(a=1)]", "Sure! [f(a=1)]", 0, {{0}}},
    {"pythonic: text after the list", SL_TOOL_PYTHONIC, NULL, "[f(a=1)] and more", "[f(a=1)] and more", 0, {{0}}},
    {"pythonic: an empty list", SL_TOOL_PYTHONIC, NULL, "[]", "[]", 0, {{0}}},
    {"pythonic: cut short", SL_TOOL_PYTHONIC, NULL, "[get_weather(city=\"Paris\")", "[get_weather(city=\"Paris\")", 0,
     {{0}}},
    {"pythonic: positional argument", SL_TOOL_PYTHONIC, NULL, "[f(1)]", "[f(1)]", 0, {{0}}},
    {"pythonic: a name as a value", SL_TOOL_PYTHONIC, NULL, "[f(a=x)]", "[f(a=x)]", 0, {{0}}},
    {"pythonic: a comparison", SL_TOOL_PYTHONIC, NULL, "[f(a==1)]", "[f(a==1)]", 0, {{0}}},
    {"pythonic: a repeated keyword", SL_TOOL_PYTHONIC, NULL, "[f(a=1, a=2)]", "[f(a=1, a=2)]", 0, {{0}}},
    {"pythonic: an unterminated string", SL_TOOL_PYTHONIC, NULL, "[f(a='x)]", "[f(a='x)]", 0, {{0}}},
    {"pythonic: a newline in a short string", SL_TOOL_PYTHONIC, NULL, "[f(a='x\ny')]", "[f(a='x\ny')]", 0, {{0}}},
    {"pythonic: an attribute call", SL_TOOL_PYTHONIC, NULL, "[m.f(a=1)]", "[m.f(a=1)]", 0, {{0}}},
    {"pythonic: bytes", SL_TOOL_PYTHONIC, NULL, "[f(a=b'x')]", "[f(a=b'x')]", 0, {{0}}},
    {"pythonic: a complex number", SL_TOOL_PYTHONIC, NULL, "[f(a=1j)]", "[f(a=1j)]", 0, {{0}}},
    {"pythonic: a leading zero", SL_TOOL_PYTHONIC, NULL, "[f(a=07)]", "[f(a=07)]", 0, {{0}}},
    {"pythonic: a trailing comma after the last call", SL_TOOL_PYTHONIC, NULL, "[f(a=1),]", "[f(a=1),]", 0, {{0}}},
    {"pythonic: a set", SL_TOOL_PYTHONIC, NULL, "[f(a={1, 2})]", "[f(a={1, 2})]", 0, {{0}}},
    {"pythonic: a list as a key", SL_TOOL_PYTHONIC, NULL, "[f(a={[1]: 2})]", "[f(a={[1]: 2})]", 0, {{0}}},
    {"pythonic: a named escape", SL_TOOL_PYTHONIC, NULL, "[f(a=\"\\N{BULLET}\")]", "[f(a=\"\\N{BULLET}\")]", 0, {{0}}},
    {"pythonic: an escape past Unicode", SL_TOOL_PYTHONIC, NULL, "[f(a='\\U00110000')]", "[f(a='\\U00110000')]", 0,
     {{0}}},
    /* parallel_tool_calls false: only the first call */
    {"first only: hermes", FIRST_ONLY(SL_TOOL_HERMES), NULL,
     "Two. <tool_call>{\"name\": \"a\", \"arguments\": {\"x\": 1}}</tool_call>\n<tool_call>{\"name\": \"b\", "
     "\"arguments\": {}}</tool_call>",
     "Two.", 1, {{"a", "{\"x\": 1}"}}},
    {"first only: llama3_json", FIRST_ONLY(SL_TOOL_LLAMA3_JSON), NULL,
     "{\"name\": \"f\", \"parameters\": {\"x\": 1}}; {\"name\": \"g\", \"parameters\": {}}", NULL, 1,
     {{"f", "{\"x\": 1}"}}},
    {"first only: mistral", FIRST_ONLY(SL_TOOL_MISTRAL), NULL,
     "Sure.[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"g\", \"arguments\": {\"a\": 2}}]", "Sure.", 1,
     {{"f", "{}"}}},
    {"first only: required", FIRST_ONLY(SL_TOOL_REQUIRED), NULL,
     "[{\"name\": \"a\", \"parameters\": {}}, {\"name\": \"b\", \"parameters\": {\"v\": 1}}]", NULL, 1, {{"a", "{}"}}},
    {"first only: pythonic", FIRST_ONLY(SL_TOOL_PYTHONIC), NULL,
     "[get_weather(city=\"Paris\"), get_time(tz=\"CET\"), now()]", NULL, 1,
     {{"get_weather", "{\"city\": \"Paris\"}"}}},
    {"first only: one call", FIRST_ONLY(SL_TOOL_PYTHONIC), NULL, "[now()]", NULL, 1, {{"now", "{}"}}},
    {"first only: a broken later call is content", FIRST_ONLY(SL_TOOL_PYTHONIC), NULL, "[f(a=1), g(b=)]",
     "[f(a=1), g(b=)]", 0, {{0}}},
};

static int same_text(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

static void check_expected(const tcase *t, const sl_tool_result *r) {
    if (!same_text(r->content, t->content))
        fprintf(stderr, "  %s: content \"%s\", want \"%s\"\n", t->what, r->content ? r->content : "(null)",
                t->content ? t->content : "(null)");
    CHECK(same_text(r->content, t->content));
    CHECK_EQ_INT(r->n_calls, t->n_calls);
    for (int i = 0; i < r->n_calls && i < t->n_calls; i++) {
        CHECK_STR(r->calls[i].name, t->calls[i].name);
        CHECK_STR(r->calls[i].arguments, t->calls[i].arguments);
        if ((t->format & ~FIRST_ONLY_BIT) == SL_TOOL_MISTRAL) CHECK_EQ_INT(strlen(r->calls[i].id), 9);
        else CHECK(strncmp(r->calls[i].id, "chatcmpl-tool-", 14) == 0 && strlen(r->calls[i].id) == 14 + 32);
    }
}

/* A stream's deltas, checked for order as they come: a call's CALL before
 * its arguments, calls numbered in order, no content inside a call. */
typedef struct collector {
    sl_tool_result r;
    int calls_started;
    int ok;
} collector;

static void collect(collector *c, const sl_tool_delta *d, int n) {
    for (int i = 0; i < n; i++) {
        if (d[i].kind == SL_TOOL_DELTA_CALL && d[i].call != c->calls_started++) c->ok = 0;
        if (d[i].kind == SL_TOOL_DELTA_ARGS && d[i].call != c->calls_started - 1) c->ok = 0;
        if (d[i].kind == SL_TOOL_DELTA_CONTENT && d[i].n == 0) c->ok = 0;
    }
    if (sl_tool_result_add(&c->r, d, n)) c->ok = 0;
}

/* The output fed in pieces at the given cut points; the stream's deltas
 * assembled as a client assembles them. */
static void stream_pieces(const tcase *t, const size_t *cuts, int n_cuts, collector *c) {
    *c = (collector){.ok = 1};
    sl_tool_stream *s = stream_new(t->format, t->function);
    size_t n = strlen(t->text), at = 0;
    const sl_tool_delta *d;
    int nd;
    for (int i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : n;
        if (sl_tool_stream_feed(s, t->text + at, to - at, i == n_cuts, &d, &nd)) c->ok = 0;
        collect(c, d, nd);
        at = to;
    }
    if (!sl_tool_stream_failed(s) && c->r.n_calls == 0 && !c->r.content) c->r.content = strdup("");
    sl_tool_stream_free(s);
}

/* Streamed and whole agree on well-formed outputs (a malformed call has
 * been partly sent by the time it breaks: only the whole output falls back). */
static void check_same(const tcase *t, const sl_tool_result *whole, const collector *c, size_t cut) {
    int broken = t->n_calls == 0 && t->content && c->r.n_calls > 0;
    if (!c->ok) fprintf(stderr, "  %s (cut %zu): deltas out of order\n", t->what, cut);
    CHECK(c->ok);
    if (broken) return;
    int same = same_text(c->r.content, whole->content) || (!c->r.content && whole->content && !*whole->content);
    if (!same)
        fprintf(stderr, "  %s (cut %zu): streamed content \"%s\", whole \"%s\"\n", t->what, cut,
                c->r.content ? c->r.content : "(null)", whole->content ? whole->content : "(null)");
    CHECK(same);
    CHECK_EQ_INT(c->r.n_calls, whole->n_calls);
    for (int i = 0; i < c->r.n_calls && i < whole->n_calls; i++) {
        CHECK_STR(c->r.calls[i].name, whole->calls[i].name);
        CHECK_STR(c->r.calls[i].arguments, whole->calls[i].arguments);
    }
}

static void test_whole_outputs(void) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        sl_tool_result r;
        CHECK_EQ_INT(parse(CASES[i].format, CASES[i].function, CASES[i].text, strlen(CASES[i].text), &r), 0);
        check_expected(&CASES[i], &r);
        sl_tool_result_free(&r);
    }
}

static void test_split_everywhere(void) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const tcase *t = &CASES[i];
        sl_tool_result whole;
        CHECK_EQ_INT(parse(t->format, t->function, t->text, strlen(t->text), &whole), 0);
        size_t n = strlen(t->text);
        for (size_t cut = 0; cut <= n; cut++) {
            collector c;
            stream_pieces(t, &cut, 1, &c);
            check_same(t, &whole, &c, cut);
            sl_tool_result_free(&c.r);
        }
        size_t *every = malloc((n + 1) * sizeof *every);
        for (size_t k = 0; k < n; k++) every[k] = k + 1;
        collector c;
        stream_pieces(t, every, n ? (int)n - 1 : 0, &c);
        check_same(t, &whole, &c, (size_t)-1);
        sl_tool_result_free(&c.r);
        free(every);
        sl_tool_result_free(&whole);
    }
}

/* Text that may begin a call waits; content never carries a marker. */
static void test_holds_back(void) {
    sl_tool_stream *s = stream_new(SL_TOOL_HERMES, NULL);
    const sl_tool_delta *d;
    int n;
#define FEED(text, final) sl_tool_stream_feed(s, text, strlen(text), final, &d, &n)
    CHECK_EQ_INT(FEED("Let me look. <tool_", 0), 0);
    CHECK_EQ_INT(n, 1);
    CHECK(n == 1 && d[0].kind == SL_TOOL_DELTA_CONTENT && d[0].n == 12 && memcmp(d[0].text, "Let me look.", 12) == 0);
    CHECK_EQ_INT(FEED("call>\n{\"name\": \"lo", 0), 0);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(FEED("ok\", \"arguments\": {\"q\": ", 0), 0);
    CHECK(n == 2 && d[0].kind == SL_TOOL_DELTA_CALL && d[0].n == 4 && memcmp(d[0].text, "look", 4) == 0 &&
          d[1].kind == SL_TOOL_DELTA_ARGS && d[1].n == 6 && memcmp(d[1].text, "{\"q\": ", 6) == 0);
    CHECK_EQ_INT(FEED("1}}\n</tool_call>\n", 1), 0);
    CHECK(n == 1 && d[0].kind == SL_TOOL_DELTA_ARGS && d[0].n == 2 && memcmp(d[0].text, "1}", 2) == 0);
    CHECK_EQ_INT(sl_tool_stream_calls(s), 1);
    CHECK_EQ_INT(sl_tool_stream_failed(s), 0);
    sl_tool_stream_free(s);

    /* llama3_json decides nothing until the first non-blank byte */
    s = stream_new(SL_TOOL_LLAMA3_JSON, NULL);
    CHECK_EQ_INT(FEED("\n <|python", 0), 0);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(FEED("_tag|>{\"name\": \"f\"", 0), 0);
    CHECK(n == 1 && d[0].kind == SL_TOOL_DELTA_CALL);
    sl_tool_stream_free(s);

    /* a named call starts at the first byte */
    s = stream_new(SL_TOOL_NAMED, "f");
    CHECK_EQ_INT(FEED("{", 0), 0);
    CHECK(n == 2 && d[0].kind == SL_TOOL_DELTA_CALL && d[1].kind == SL_TOOL_DELTA_ARGS && d[1].n == 1);
    sl_tool_stream_free(s);

    /* a pythonic call starts with its first keyword; a number waits for its end */
    s = stream_new(SL_TOOL_PYTHONIC, NULL);
    CHECK_EQ_INT(FEED(" [get_weather(", 0), 0);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(FEED("city=", 0), 0);
    CHECK_EQ_INT(n, 0); /* "==" is no keyword */
    CHECK_EQ_INT(FEED("'Pa", 0), 0);
    CHECK(n == 2 && d[0].kind == SL_TOOL_DELTA_CALL && d[0].n == 11 && memcmp(d[0].text, "get_weather", 11) == 0 &&
          d[1].kind == SL_TOOL_DELTA_ARGS && d[1].n == 12 && memcmp(d[1].text, "{\"city\": \"Pa", 12) == 0);
    CHECK_EQ_INT(FEED("ris', n=1", 0), 0);
    CHECK(n == 1 && d[0].kind == SL_TOOL_DELTA_ARGS && d[0].n == 11 && memcmp(d[0].text, "ris\", \"n\": ", 11) == 0);
    CHECK_EQ_INT(FEED("2)]\n", 1), 0);
    CHECK(n == 1 && d[0].kind == SL_TOOL_DELTA_ARGS && d[0].n == 3 && memcmp(d[0].text, "12}", 3) == 0);
    CHECK_EQ_INT(sl_tool_stream_calls(s), 1);
    sl_tool_stream_free(s);

    /* text that looks like a call until its arguments: no call was ever sent */
    s = stream_new(SL_TOOL_PYTHONIC, NULL);
    CHECK_EQ_INT(FEED("[see(this", 0), 0);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(FEED(") page]", 1), 0);
    CHECK(n == 1 && d[0].kind == SL_TOOL_DELTA_CONTENT && d[0].n == 16 && memcmp(d[0].text, "[see(this) page]", 16) == 0);
    CHECK_EQ_INT(sl_tool_stream_calls(s), 0);
    sl_tool_stream_free(s);
#undef FEED
}

/* parallel_tool_calls false: later calls are read, not sent, nor counted. */
static void test_first_only(void) {
    static const char text[] = "<tool_call>{\"name\": \"a\"}</tool_call><tool_call>{\"name\": \"b\", \"arguments\": "
                               "{\"x\": 1}}</tool_call>";
    sl_tool_stream *s = stream_new(FIRST_ONLY(SL_TOOL_HERMES), NULL);
    const sl_tool_delta *d;
    int n;
    CHECK_EQ_INT(sl_tool_stream_feed(s, text, sizeof text - 1, 1, &d, &n), 0);
    CHECK_EQ_INT(n, 2);
    for (int i = 0; i < n; i++) CHECK(d[i].kind != SL_TOOL_DELTA_CONTENT && d[i].call == 0);
    CHECK_EQ_INT(sl_tool_stream_calls(s), 1);
    CHECK_EQ_INT(sl_tool_stream_failed(s), 0);
    sl_tool_stream_free(s);
    /* without the flag both come back */
    sl_tool_result r;
    CHECK_EQ_INT(parse(SL_TOOL_HERMES, NULL, text, sizeof text - 1, &r), 0);
    CHECK_EQ_INT(r.n_calls, 2);
    sl_tool_result_free(&r);
    /* a named function is one call either way */
    CHECK_EQ_INT(parse(FIRST_ONLY(SL_TOOL_NAMED), "f", "{\"a\": 1}", 8, &r), 0);
    CHECK(r.n_calls == 1 && strcmp(r.calls[0].name, "f") == 0 && strcmp(r.calls[0].arguments, "{\"a\": 1}") == 0);
    sl_tool_result_free(&r);
}

/* A broken call in a stream: what was not sent goes out as content. */
static void test_broken_stream(void) {
    sl_tool_stream *s = stream_new(SL_TOOL_HERMES, NULL);
    const sl_tool_delta *d;
    int n;
    CHECK_EQ_INT(sl_tool_stream_feed(s, "Hi <tool_call> not json", 23, 1, &d, &n), 0);
    sl_tool_result r = {0};
    CHECK_EQ_INT(sl_tool_result_add(&r, d, n), 0);
    CHECK_STR(r.content, "Hi <tool_call> not json");
    CHECK_EQ_INT(r.n_calls, 0);
    CHECK_EQ_INT(sl_tool_stream_failed(s), 1);
    sl_tool_result_free(&r);
    /* nothing more after the end */
    CHECK_EQ_INT(sl_tool_stream_feed(s, "more", 4, 1, &d, &n), 0);
    CHECK_EQ_INT(n, 0);
    sl_tool_stream_free(s);
}

static void test_parser_names(void) {
    sl_tool_format f;
    CHECK(sl_tool_format_from_name("hermes", &f) == 0 && f == SL_TOOL_HERMES);
    CHECK(sl_tool_format_from_name("llama3_json", &f) == 0 && f == SL_TOOL_LLAMA3_JSON);
    CHECK(sl_tool_format_from_name("mistral", &f) == 0 && f == SL_TOOL_MISTRAL);
    CHECK(sl_tool_format_from_name("pythonic", &f) == 0 && f == SL_TOOL_PYTHONIC);
    CHECK(sl_tool_format_from_name("pythonic2", &f) != 0);
    CHECK(strstr(SL_TOOL_PARSER_NAMES, "pythonic") != NULL);
    CHECK(sl_tool_format_from_name(NULL, &f) != 0);
}

/* Random bytes and random cuts of call-like text: no crash, no leak, and
 * every delta inside the text. */
static void test_random(void) {
    static const char *const parts[] = {"<tool_call>", "</tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "{", "}",
                                        "[", "]", "\"name\"", "\"arguments\"", ":", ",", ";", "\"f\"", " ", "\n",
                                        "\\", "\"", "12", "true", "x", "(", ")", "=", "'", "None", "get(", "a=",
                                        "r'", "\"\"\"", "0x", "-", ".", "e", "\\u00", "\\U0010", "\\x", "\\7"};
    unsigned seed = 12345;
    char text[256];
    for (int round = 0; round < 4000; round++) {
        size_t n = 0;
        while (n < 200) {
            seed = seed * 1103515245u + 12345u;
            const char *p = parts[(seed >> 8) % (sizeof parts / sizeof parts[0])];
            size_t k = strlen(p);
            if (n + k >= sizeof text) break;
            memcpy(text + n, p, k);
            n += k;
            if (((seed >> 20) & 7) == 0) break;
        }
        const int f = round % 6 | (round / 6 % 2 ? FIRST_ONLY_BIT : 0);
        sl_tool_stream *s = stream_new(f, "fn");
        size_t at = 0;
        while (at < n) {
            seed = seed * 1103515245u + 12345u;
            size_t k = 1 + (seed >> 16) % 9;
            if (at + k > n) k = n - at;
            const sl_tool_delta *d;
            int nd;
            CHECK_EQ_INT(sl_tool_stream_feed(s, text + at, k, at + k == n, &d, &nd), 0);
            at += k;
        }
        sl_tool_result r;
        CHECK_EQ_INT(parse(f, "fn", text, n, &r), 0);
        sl_tool_result_free(&r);
        sl_tool_stream_free(s);
    }
}

/* ---- random well-formed outputs ------------------------------------------------------------ */

typedef struct rng {
    unsigned long long s;
} rng;

static unsigned next(rng *r, unsigned n) {
    r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)(r->s >> 33) % n;
}

typedef struct text {
    char b[4096];
    size_t n;
} text;

static void put(text *t, const char *s) {
    size_t k = strlen(s);
    if (t->n + k < sizeof t->b) memcpy(t->b + t->n, s, k), t->n += k;
    t->b[t->n] = '\0';
}

static void put_ws(rng *r, text *t) {
    static const char *const ws[] = {"", "", " ", "\n", "  ", "\n  "};
    put(t, ws[next(r, 6)]);
}

/* A JSON string whose characters include JSON's and the markers' own. */
static void put_string(rng *r, text *t) {
    static const char *const chars[] = {"a", "Z", " ", "{", "}", "[", "]", ",", ":", ";", "<", ">", "\\\"", "\\\\",
                                        "\\n", "\\u00e9", "é", "🌧", "tool_call"};
    put(t, "\"");
    for (unsigned i = next(r, 6); i > 0; i--) put(t, chars[next(r, sizeof chars / sizeof chars[0])]);
    put(t, "\"");
}

static void put_value(rng *r, text *t, int depth) {
    static const char *const scalars[] = {"0", "-12", "3.5e-2", "true", "false", "null"};
    unsigned k = depth > 2 ? next(r, 2) : next(r, 4);
    if (k == 0) put(t, scalars[next(r, 6)]);
    else if (k == 1) put_string(r, t);
    else {
        int obj = k == 2;
        put(t, obj ? "{" : "[");
        for (unsigned i = next(r, 4), first = 1; i > 0; i--, first = 0) {
            if (!first) put(t, ",");
            put_ws(r, t);
            if (obj) put_string(r, t), put(t, ":"), put_ws(r, t);
            put_value(r, t, depth + 1);
        }
        put_ws(r, t);
        put(t, obj ? "}" : "]");
    }
}

/* Content that never holds a whole marker (it may hold pieces of one). */
static void put_content(rng *r, text *t) {
    static const char *const words[] = {"Sure", " ", "\n", "<tool", "[TOOL", "{", "}", "ok.", "é", "<", "<|python"};
    for (unsigned i = next(r, 5); i > 0; i--) put(t, words[next(r, sizeof words / sizeof words[0])]);
}

/* One random output of format f with its expected calls (args in want). */
static int make_output(rng *r, sl_tool_format f, text *t, text *args, int *n_calls) {
    const char *key = f == SL_TOOL_REQUIRED || (f == SL_TOOL_LLAMA3_JSON && next(r, 2)) ? "parameters" : "arguments";
    *n_calls = 1 + (int)next(r, 3);
    t->n = 0;
    t->b[0] = '\0';
    if (f == SL_TOOL_HERMES || f == SL_TOOL_MISTRAL) put_content(r, t);
    if (f == SL_TOOL_MISTRAL) put(t, "[TOOL_CALLS]"), put_ws(r, t), put(t, "[");
    if (f == SL_TOOL_REQUIRED) put(t, "[");
    if (f == SL_TOOL_LLAMA3_JSON && next(r, 2)) put(t, "<|python_tag|>");
    for (int i = 0; i < *n_calls; i++) {
        if (i > 0) put(t, f == SL_TOOL_LLAMA3_JSON ? ";" : f == SL_TOOL_HERMES ? "\n" : ",");
        if (f == SL_TOOL_HERMES) put(t, "<tool_call>");
        put_ws(r, t);
        args[i].n = 0;
        put(&args[i], "{");
        put_string(r, &args[i]);
        put(&args[i], ": ");
        put_value(r, &args[i], 0);
        put(&args[i], "}");
        put(t, "{\"name\": \"f");
        put(t, (const char[]){(char)('0' + i), 0});
        put(t, "\", \"");
        put(t, key);
        put(t, "\": ");
        put(t, args[i].b);
        put(t, "}");
        put_ws(r, t);
        if (f == SL_TOOL_HERMES) put(t, "</tool_call>");
    }
    if (f == SL_TOOL_MISTRAL || f == SL_TOOL_REQUIRED) put(t, "]");
    put_ws(r, t);
    return t->n + 1 < sizeof t->b;
}

/* A Python string literal, and the JSON string json.dumps writes for it. */
static void put_py_string(rng *r, text *py, text *js) {
    static const char *const chars[][3] = {
        /* in "..", in '..', in JSON */
        {"a", "a", "a"},          {" ", " ", " "},          {"\\\"", "\"", "\\\""},    {"'", "\\'", "'"},
        {"\\\\", "\\\\", "\\\\"}, {"\\n", "\\n", "\\n"},    {"\t", "\t", "\\t"},       {"\\x41", "\\x41", "A"},
        {"\\u00e9", "\\u00e9", "é"}, {"é", "é", "é"},       {"🌧", "🌧", "🌧"},        {"[", "[", "["},
        {")", ")", ")"},          {",", ",", ","},          {"=", "=", "="},           {"\\d", "\\d", "\\\\d"},
        {"\\101", "\\101", "A"},  {"]", "]", "]"}};
    int dq = (int)next(r, 2);
    put(py, dq ? "\"" : "'");
    put(js, "\"");
    for (unsigned i = next(r, 6); i > 0; i--) {
        unsigned k = next(r, sizeof chars / sizeof chars[0]);
        put(py, chars[k][dq ? 0 : 1]);
        put(js, chars[k][2]);
    }
    put(py, dq ? "\"" : "'");
    put(js, "\"");
}

/* A Python literal, and its JSON. */
static void put_py_value(rng *r, text *py, text *js, int depth) {
    static const char *const scalars[][2] = {{"0", "0"},         {"-12", "-12"},   {"3.5e-2", "3.5e-2"}, {"True", "true"},
                                             {"False", "false"}, {"None", "null"}, {"1_000", "1000"},    {"0x1F", "31"},
                                             {".5", "0.5"},      {"5.", "5.0"}};
    unsigned k = depth > 2 ? next(r, 2) : next(r, 4);
    if (k == 0) {
        unsigned j = next(r, sizeof scalars / sizeof scalars[0]);
        put(py, scalars[j][0]);
        put(js, scalars[j][1]);
        return;
    }
    if (k == 1) {
        put_py_string(r, py, js);
        return;
    }
    const char *open = k == 2 ? "{" : "[", *close = k == 2 ? "}" : "]";
    unsigned n = next(r, 4);
    put(py, open);
    put(js, open);
    for (unsigned i = 0; i < n; i++) {
        if (i > 0) put(py, ","), put(js, ", ");
        put_ws(r, py);
        if (k == 2) put_py_string(r, py, js), put_ws(r, py), put(py, ":"), put_ws(r, py), put(js, ": ");
        put_py_value(r, py, js, depth + 1);
    }
    if (n > 0 && next(r, 3) == 0) put(py, ","); /* Python allows a trailing comma */
    put_ws(r, py);
    put(py, close);
    put(js, close);
}

/* [f0(k0=v, ..), f1(..)] with the JSON of each call's keyword arguments in args. */
static int make_pythonic(rng *r, text *t, text *args, int *n_calls) {
    *n_calls = 1 + (int)next(r, 3);
    t->n = 0;
    t->b[0] = '\0';
    put_ws(r, t);
    put(t, "[");
    for (int i = 0; i < *n_calls; i++) {
        if (i > 0) put(t, ","), put_ws(r, t);
        put(t, (const char[]){'f', (char)('0' + i), '(', 0});
        args[i].n = 0;
        put(&args[i], "{");
        unsigned n = next(r, 3);
        for (unsigned k = 0; k < n; k++) {
            const char key[] = {'k', (char)('0' + k), 0};
            if (k > 0) put(t, ","), put(&args[i], ", ");
            put_ws(r, t);
            put(t, key), put_ws(r, t), put(t, "="), put_ws(r, t);
            put(&args[i], "\""), put(&args[i], key), put(&args[i], "\": ");
            put_py_value(r, t, &args[i], 0);
        }
        if (n > 0 && next(r, 3) == 0) put(t, ",");
        put_ws(r, t);
        put(t, ")");
        put(&args[i], "}");
    }
    put(t, "]");
    put_ws(r, t);
    return t->n + 1 < sizeof t->b;
}

static void test_random_well_formed(void) {
    static const sl_tool_format formats[] = {SL_TOOL_HERMES, SL_TOOL_LLAMA3_JSON, SL_TOOL_MISTRAL, SL_TOOL_REQUIRED,
                                             SL_TOOL_PYTHONIC};
    rng r = {42};
    text t, args[3];
    int bad = 0;
    for (int round = 0; round < 5000 && bad < 5; round++) {
        const sl_tool_format base = formats[round % 5];
        const int first_only = round / 5 % 3 == 2, f = first_only ? FIRST_ONLY((int)base) : (int)base;
        int n_calls;
        if (!(base == SL_TOOL_PYTHONIC ? make_pythonic(&r, &t, args, &n_calls) : make_output(&r, base, &t, args, &n_calls)))
            continue;
        if (first_only) n_calls = 1;
        tcase c = {.what = "random", .format = f, .text = t.b};
        size_t cuts[8];
        int n_cuts = (int)next(&r, 8);
        for (int i = 0; i < n_cuts; i++) cuts[i] = next(&r, (unsigned)t.n + 1);
        for (int i = 1; i < n_cuts; i++) /* ascending */
            for (int j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
                size_t x = cuts[j];
                cuts[j] = cuts[j - 1];
                cuts[j - 1] = x;
            }
        sl_tool_result whole;
        collector col;
        CHECK_EQ_INT(parse(f, NULL, t.b, t.n, &whole), 0);
        stream_pieces(&c, cuts, n_cuts, &col);
        int ok = whole.n_calls == n_calls && col.ok && col.r.n_calls == n_calls &&
                 same_text(whole.content, col.r.content);
        for (int i = 0; ok && i < n_calls; i++)
            ok = strcmp(whole.calls[i].arguments, args[i].b) == 0 && strcmp(col.r.calls[i].arguments, args[i].b) == 0;
        if (!ok) {
            fprintf(stderr, "  random format %d: %s\n", (int)f, t.b);
            bad++;
        }
        CHECK(ok);
        sl_tool_result_free(&whole);
        sl_tool_result_free(&col.r);
    }
}

int main(void) {
    TEST_RUN(test_whole_outputs);
    TEST_RUN(test_split_everywhere);
    TEST_RUN(test_holds_back);
    TEST_RUN(test_broken_stream);
    TEST_RUN(test_first_only);
    TEST_RUN(test_parser_names);
    TEST_RUN(test_random);
    TEST_RUN(test_random_well_formed);
    TEST_EXIT();
}
