/* tool_parser.c -- tool calls read out of model output (see tool_parser.h).
 *
 * The reader keeps the whole output and a position: every byte before it
 * has been sent or dropped. A phase says what may come next:
 *
 *   START    llama3_json: nothing decided yet (leading whitespace, <|python_tag|>)
 *   CONTENT  text, up to a start marker ("<tool_call>", "[TOOL_CALLS]")
 *   OPEN     whitespace, then a call object, or a JSON array of them
 *   CALL     a call object {"name": .., "arguments": ..}
 *   AFTER    after a call: the closing tag, a separator, the array's end
 *   TAIL     required: only whitespace may follow the array
 *   REST     everything left is content (not a call after all, or a broken one)
 *
 * A call object is scanned again from its '{' whenever text arrives
 * (scan_call): its name is known once the "name" string closes, and the bytes
 * of its arguments value seen so far are sent as they come -- they belong to
 * the value whatever follows. Scanning checks structure only; jansson checks
 * a call once its braces close.
 *
 * Content: whitespace at the end of what is known is held back; it is
 * dropped when a call follows, and sent when more content follows or when
 * the output ends without calls. So "Sure.\n<tool_call>..." gives the
 * content "Sure." and a plain answer is sent unchanged. */
#include "server/tool_parser.h"

#include <ctype.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "util/error.h"

#define NONE SIZE_MAX

static const char HERMES_OPEN[] = "<tool_call>", HERMES_CLOSE[] = "</tool_call>";
static const char MISTRAL_OPEN[] = "[TOOL_CALLS]", LLAMA_TAG[] = "<|python_tag|>";

int sl_tool_format_from_name(const char *name, sl_tool_format *out) {
    static const struct {
        const char *name;
        sl_tool_format format;
    } names[] = {{"hermes", SL_TOOL_HERMES}, {"llama3_json", SL_TOOL_LLAMA3_JSON}, {"mistral", SL_TOOL_MISTRAL}};
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) return *out = names[i].format, 0;
    return -1;
}

/* ---- the reader's state ------------------------------------------------------------- */

typedef enum { PH_START, PH_CONTENT, PH_OPEN, PH_CALL, PH_AFTER, PH_TAIL, PH_REST } phase;

typedef struct call_rec {
    char *id, *name;   /* owned */
    size_t args_sent;  /* bytes of the arguments value sent so far */
} call_rec;

struct sl_tool_stream {
    sl_tool_format format;
    char *function;             /* SL_TOOL_NAMED */
    char *buf;                  /* the output so far */
    size_t len, cap;
    size_t pos;                 /* bytes before it are sent or dropped */
    phase ph;
    int in_array;               /* the calls are elements of a JSON array */
    int cur_sent;               /* the call being read has been started (its CALL sent) */
    size_t item_start;          /* where the call being read began: content from here if it breaks */
    size_t held_from, held_to;  /* whitespace held back (empty when equal) */
    call_rec *calls;            /* calls started */
    int n_calls, cap_calls;
    int failed, ended, oom;
    sl_tool_delta *out;         /* this feed's deltas */
    int n_out, cap_out;
};

sl_tool_stream *sl_tool_stream_new(sl_tool_format format, const char *function) {
    sl_tool_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->format = format;
    s->ph = format == SL_TOOL_LLAMA3_JSON ? PH_START : format == SL_TOOL_REQUIRED ? PH_OPEN : PH_CONTENT;
    if (format == SL_TOOL_NAMED && !(s->function = strdup(function ? function : ""))) {
        free(s);
        return NULL;
    }
    return s;
}

void sl_tool_stream_free(sl_tool_stream *s) {
    if (!s) return;
    for (int i = 0; i < s->n_calls; i++) {
        free(s->calls[i].id);
        free(s->calls[i].name);
    }
    free(s->calls);
    free(s->out);
    free(s->buf);
    free(s->function);
    free(s);
}

int sl_tool_stream_calls(const sl_tool_stream *s) { return s->n_calls; }
int sl_tool_stream_failed(const sl_tool_stream *s) { return s->failed; }

/* ---- deltas ---------------------------------------------------------------------------- */

static void push(sl_tool_stream *s, sl_tool_delta_kind kind, int call, const char *id, const char *text, size_t n) {
    if (s->n_out == s->cap_out) {
        int cap = s->cap_out ? 2 * s->cap_out : 8;
        sl_tool_delta *p = realloc(s->out, (size_t)cap * sizeof *p);
        if (!p) {
            s->oom = 1;
            return;
        }
        s->out = p;
        s->cap_out = cap;
    }
    s->out[s->n_out++] = (sl_tool_delta){.kind = kind, .call = call, .id = id, .text = text, .n = n};
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Sends buf[a, b) as content, holding back its trailing whitespace (and
 * sending whitespace held before it, when it continues it). */
static void content(sl_tool_stream *s, size_t a, size_t b) {
    if (a >= b) return;
    size_t k = b;
    while (k > a && is_ws(s->buf[k - 1])) k--;
    int continues = s->held_to == a && s->held_from < s->held_to;
    if (k > a) {
        size_t from = continues ? s->held_from : a;
        push(s, SL_TOOL_DELTA_CONTENT, -1, NULL, s->buf + from, k - from);
        s->held_from = k;
    } else if (!continues) {
        s->held_from = a;
    }
    s->held_to = b;
}

static void drop_held(sl_tool_stream *s) { s->held_from = s->held_to = 0; }

/* 9 letters and digits for mistral (its templates check the length), else
 * vLLM's "chatcmpl-tool-" and 32 hex digits. */
static char *make_id(sl_tool_format format) {
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        static unsigned counter;
        for (size_t i = 0; i < sizeof r; i++) r[i] = (unsigned char)(++counter * 131u + i * 7u);
    }
    char *id = malloc(48);
    if (!id) return NULL;
    if (format == SL_TOOL_MISTRAL) {
        for (int i = 0; i < 9; i++) id[i] = alnum[r[i] % (sizeof alnum - 1)];
        id[9] = '\0';
        return id;
    }
    int k = snprintf(id, 48, "chatcmpl-tool-");
    for (size_t i = 0; i < sizeof r; i++) k += snprintf(id + k, 48 - (size_t)k, "%02x", r[i]);
    return id;
}

/* A call starts: its record, then the CALL delta. */
static int start_call(sl_tool_stream *s, const char *name, size_t n) {
    if (s->n_calls == s->cap_calls) {
        int cap = s->cap_calls ? 2 * s->cap_calls : 4;
        call_rec *p = realloc(s->calls, (size_t)cap * sizeof *p);
        if (!p) return SL_ENOMEM;
        s->calls = p;
        s->cap_calls = cap;
    }
    call_rec *c = &s->calls[s->n_calls];
    *c = (call_rec){.id = make_id(s->format), .name = strndup(name, n)};
    if (!c->id || !c->name) {
        free(c->id);
        free(c->name);
        return SL_ENOMEM;
    }
    s->n_calls++;
    s->cur_sent = 1;
    drop_held(s);
    push(s, SL_TOOL_DELTA_CALL, s->n_calls - 1, c->id, c->name, strlen(c->name));
    return SL_OK;
}

/* Sends the bytes of the current call's arguments value buf[a, b) not yet sent. */
static void send_args(sl_tool_stream *s, size_t a, size_t b) {
    call_rec *c = &s->calls[s->n_calls - 1];
    size_t from = a + c->args_sent;
    if (b <= from) return;
    push(s, SL_TOOL_DELTA_ARGS, s->n_calls - 1, NULL, s->buf + from, b - from);
    c->args_sent = b - a;
}

/* The call being read is broken: what of it was not sent, and all that
 * follows, is content. */
static void fail(sl_tool_stream *s) {
    s->failed = 1;
    s->pos = s->cur_sent ? s->len : s->item_start;
    s->cur_sent = 0;
    s->ph = PH_REST;
}

/* ---- scanning JSON ---------------------------------------------------------------------- */

typedef enum { SCAN_WAIT, SCAN_DONE, SCAN_BAD } scan_state;

static size_t skip_ws(const char *b, size_t p, size_t n) {
    while (p < n && is_ws(b[p])) p++;
    return p;
}

/* b[p] == '"': *end is one past the closing quote. */
static scan_state scan_string(const char *b, size_t p, size_t n, size_t *end) {
    for (size_t i = p + 1; i < n; i++) {
        if (b[i] == '\\') i++;
        else if (b[i] == '"') return *end = i + 1, SCAN_DONE;
    }
    return SCAN_WAIT;
}

/* One JSON value at b[p], by its structure only. A number or literal
 * reaching the end of the text may go on, unless the text is final. */
static scan_state scan_value(const char *b, size_t p, size_t n, int final, size_t *end) {
    if (b[p] == '"') return scan_string(b, p, n, end);
    if (b[p] == '{' || b[p] == '[') {
        long depth = 0;
        for (size_t i = p; i < n; i++) {
            if (b[i] == '"') {
                size_t e;
                if (scan_string(b, i, n, &e) == SCAN_WAIT) return SCAN_WAIT;
                i = e - 1; /* on past the string */
            } else if (b[i] == '{' || b[i] == '[') {
                depth++;
            } else if ((b[i] == '}' || b[i] == ']') && --depth == 0) {
                return *end = i + 1, SCAN_DONE;
            }
        }
        return SCAN_WAIT;
    }
    size_t i = p;
    while (i < n && (isalnum((unsigned char)b[i]) || b[i] == '-' || b[i] == '+' || b[i] == '.')) i++;
    if (i == p) return SCAN_BAD;
    if (i == n && !final) return SCAN_WAIT;
    return *end = i, SCAN_DONE;
}

/* What is known of a call object {"name": .., "arguments": ..} at b[p] == '{'. */
typedef struct call_scan {
    scan_state state;
    size_t end;                  /* DONE: one past its '}' */
    size_t name_start, name_end; /* the name's string literal, quotes included; NONE until it closes */
    size_t args_start, args_end; /* the arguments value; NONE until it starts / closes */
} call_scan;

static int key_is(const char *key, size_t n, const char *want) { return n == strlen(want) && memcmp(key, want, n) == 0; }

static void scan_call(const char *b, size_t p, size_t n, int final, call_scan *cs) {
    *cs = (call_scan){.state = SCAN_WAIT, .name_start = NONE, .name_end = NONE, .args_start = NONE, .args_end = NONE};
    p++;
    for (int first = 1;; first = 0) {
        size_t key_end, v_end;
        if ((p = skip_ws(b, p, n)) == n) return;
        if (b[p] == '}' && first) {
            cs->end = p + 1;
            cs->state = SCAN_DONE;
            return;
        }
        if (b[p] != '"') break;
        if (scan_string(b, p, n, &key_end) == SCAN_WAIT) return;
        const char *key = b + p + 1;
        size_t key_n = key_end - p - 2;
        if ((p = skip_ws(b, key_end, n)) == n) return;
        if (b[p] != ':') break;
        if ((p = skip_ws(b, p + 1, n)) == n) return;
        int is_name = key_is(key, key_n, "name");
        int is_args = cs->args_start == NONE && (key_is(key, key_n, "arguments") || key_is(key, key_n, "parameters"));
        if (is_name && b[p] != '"') break;
        if (is_args) cs->args_start = p;
        scan_state st = scan_value(b, p, n, final, &v_end);
        if (st == SCAN_BAD) break;
        if (st == SCAN_WAIT) return;
        if (is_name) cs->name_start = p, cs->name_end = v_end;
        if (is_args) cs->args_end = v_end;
        if ((p = skip_ws(b, v_end, n)) == n) return;
        if (b[p] == '}') {
            cs->end = p + 1;
            cs->state = SCAN_DONE;
            return;
        }
        if (b[p] != ',') break;
        p++;
    }
    cs->state = SCAN_BAD;
}

/* A complete call object: valid JSON, an object with a string name. */
static int call_valid(const char *b, size_t a, size_t z) {
    json_error_t jerr;
    json_t *o = json_loadb(b + a, z - a, 0, &jerr);
    int ok = json_is_object(o) && json_is_string(json_object_get(o, "name"));
    json_decref(o);
    return ok;
}

/* The name's string literal, decoded; NULL when it is not a valid string. */
static char *decode_name(const char *b, size_t a, size_t z, size_t *n) {
    json_error_t jerr;
    json_t *v = json_loadb(b + a, z - a, JSON_DECODE_ANY, &jerr);
    char *name = json_is_string(v) ? strndup(json_string_value(v), json_string_length(v)) : NULL;
    if (name) *n = json_string_length(v);
    json_decref(v);
    return name;
}

/* 1: b[p..] starts with lit; 0: the text ends inside a prefix of lit; -1: neither. */
static int match(const sl_tool_stream *s, size_t p, const char *lit) {
    size_t k = strlen(lit), have = s->len - p < k ? s->len - p : k;
    if (memcmp(s->buf + p, lit, have) != 0) return -1;
    return have == k ? 1 : 0;
}

/* The length of the longest proper prefix of lit that ends the text b[0, n). */
static size_t partial_suffix(const char *b, size_t n, const char *lit) {
    size_t k = strlen(lit) - 1;
    for (k = k < n ? k : n; k > 0; k--)
        if (memcmp(b + n - k, lit, k) == 0) return k;
    return 0;
}

/* ---- the phases ------------------------------------------------------------------------ */

static void step_start(sl_tool_stream *s, int final) {
    size_t p = skip_ws(s->buf, s->pos, s->len);
    if (p == s->len) {
        if (final) s->ph = PH_REST;
        return;
    }
    int m = match(s, p, LLAMA_TAG);
    if (m == 0 && !final) return;
    s->item_start = s->pos;
    if (m > 0) {
        s->pos = p + strlen(LLAMA_TAG);
        s->ph = PH_OPEN;
    } else if (s->buf[p] == '{') {
        s->pos = p;
        s->ph = PH_CALL;
    } else {
        s->ph = PH_REST;
    }
}

static void step_content(sl_tool_stream *s, int final) {
    const char *marker = s->format == SL_TOOL_HERMES ? HERMES_OPEN : MISTRAL_OPEN;
    const char *hit = memmem(s->buf + s->pos, s->len - s->pos, marker, strlen(marker));
    if (hit) {
        size_t at = (size_t)(hit - s->buf);
        content(s, s->pos, at);
        s->item_start = s->held_from < s->held_to && s->held_to == at ? s->held_from : at; /* with its blank */
        drop_held(s);
        s->pos = at + strlen(marker);
        s->ph = PH_OPEN;
        return;
    }
    size_t end = final ? s->len : s->len - partial_suffix(s->buf + s->pos, s->len - s->pos, marker);
    content(s, s->pos, end);
    s->pos = end;
}

static void step_open(sl_tool_stream *s, int final) {
    size_t p = skip_ws(s->buf, s->pos, s->len);
    if (p == s->len) {
        if (final) fail(s);
        return;
    }
    int arrays = s->format == SL_TOOL_MISTRAL || s->format == SL_TOOL_REQUIRED;
    if (s->buf[p] == '[' && arrays && !s->in_array) {
        s->in_array = 1;
        s->pos = p + 1;
    } else if (s->buf[p] == '{') {
        s->pos = p;
        s->ph = PH_CALL;
    } else {
        fail(s);
    }
}

static void step_call(sl_tool_stream *s, int final) {
    call_scan cs;
    scan_call(s->buf, s->pos, s->len, final, &cs);
    if (cs.state == SCAN_BAD) {
        fail(s);
        return;
    }
    if (!s->cur_sent && cs.name_end != NONE) {
        size_t n = 0;
        char *name = decode_name(s->buf, cs.name_start, cs.name_end, &n);
        if (!name) {
            fail(s);
            return;
        }
        if (start_call(s, name, n)) s->oom = 1;
        free(name);
        if (s->oom) return;
    }
    if (s->cur_sent && cs.args_start != NONE) send_args(s, cs.args_start, cs.args_end != NONE ? cs.args_end : s->len);
    if (cs.state == SCAN_WAIT) {
        if (final) fail(s);
        return;
    }
    if (!s->cur_sent || !call_valid(s->buf, s->pos, cs.end)) {
        fail(s);
        return;
    }
    if (cs.args_start == NONE) push(s, SL_TOOL_DELTA_ARGS, s->n_calls - 1, NULL, "{}", 2);
    s->cur_sent = 0;
    s->pos = cs.end;
    s->ph = PH_AFTER;
}

/* Something other than what may follow a call, at p. */
static void fail_at(sl_tool_stream *s, size_t p) {
    s->item_start = p;
    fail(s);
}

static void step_after(sl_tool_stream *s, int final) {
    size_t p = skip_ws(s->buf, s->pos, s->len);
    if (p == s->len) {
        if (final && s->in_array) fail_at(s, p);
        return;
    }
    if (s->format == SL_TOOL_HERMES) {
        int m = match(s, p, HERMES_CLOSE);
        if (m == 0 && !final) return;
        s->pos = m > 0 ? p + strlen(HERMES_CLOSE) : p; /* no closing tag: content follows */
        s->ph = PH_CONTENT;
    } else if (s->format == SL_TOOL_LLAMA3_JSON) {
        if (s->buf[p] != ';') {
            fail_at(s, p);
            return;
        }
        s->item_start = p;
        s->pos = p + 1;
        s->ph = PH_OPEN;
    } else if (!s->in_array) {
        s->pos = p;
        s->ph = s->format == SL_TOOL_MISTRAL ? PH_CONTENT : PH_TAIL;
    } else if (s->buf[p] == ',') {
        s->item_start = p;
        s->pos = p + 1;
        s->ph = PH_OPEN;
    } else if (s->buf[p] == ']') {
        s->in_array = 0;
        s->pos = p + 1;
        s->ph = s->format == SL_TOOL_MISTRAL ? PH_CONTENT : PH_TAIL;
    } else {
        fail_at(s, p);
    }
}

static void step_tail(sl_tool_stream *s) {
    size_t p = skip_ws(s->buf, s->pos, s->len);
    if (p < s->len) fail_at(s, p);
    else s->pos = p;
}

static void step(sl_tool_stream *s, int final) {
    switch (s->ph) {
    case PH_START: step_start(s, final); break;
    case PH_CONTENT: step_content(s, final); break;
    case PH_OPEN: step_open(s, final); break;
    case PH_CALL: step_call(s, final); break;
    case PH_AFTER: step_after(s, final); break;
    case PH_TAIL: step_tail(s); break;
    case PH_REST:
        content(s, s->pos, s->len);
        s->pos = s->len;
        break;
    }
}

/* SL_TOOL_NAMED: the whole output is one call's arguments. */
static void feed_named(sl_tool_stream *s, int final) {
    if (!s->cur_sent && (s->len > 0 || final) && start_call(s, s->function, strlen(s->function))) s->oom = 1;
    if (s->cur_sent) send_args(s, 0, s->len);
}

static int append(sl_tool_stream *s, const char *text, size_t n) {
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1) cap *= 2;
        char *p = realloc(s->buf, cap);
        if (!p) return SL_ENOMEM;
        s->buf = p;
        s->cap = cap;
    }
    if (n) memcpy(s->buf + s->len, text, n);
    s->len += n;
    s->buf[s->len] = '\0';
    return SL_OK;
}

int sl_tool_stream_feed(sl_tool_stream *s, const char *text, size_t n, int final, const sl_tool_delta **deltas,
                        int *n_deltas) {
    s->n_out = 0;
    *deltas = NULL;
    *n_deltas = 0;
    if (s->ended) return SL_OK;
    if (append(s, text, n)) return SL_ENOMEM;
    if (s->format == SL_TOOL_NAMED) {
        feed_named(s, final);
    } else {
        for (;;) {
            phase ph = s->ph;
            size_t pos = s->pos;
            step(s, final);
            if (s->oom || (s->ph == ph && s->pos == pos)) break;
        }
        int flush = s->n_calls == 0 || s->failed;
        if (final && flush && s->held_from < s->held_to)
            push(s, SL_TOOL_DELTA_CONTENT, -1, NULL, s->buf + s->held_from, s->held_to - s->held_from);
    }
    s->ended = final;
    *deltas = s->out;
    *n_deltas = s->n_out;
    return s->oom ? SL_ENOMEM : SL_OK;
}

/* ---- the whole output --------------------------------------------------------------------- */

static int grow_text(char **p, size_t *len, const char *add, size_t n) {
    char *q = realloc(*p, *len + n + 1);
    if (!q) return SL_ENOMEM;
    memcpy(q + *len, add, n);
    *len += n;
    q[*len] = '\0';
    *p = q;
    return SL_OK;
}

int sl_tool_result_add(sl_tool_result *r, const sl_tool_delta *d, int n_deltas) {
    for (int i = 0; i < n_deltas; i++, d++) {
        if (d->kind == SL_TOOL_DELTA_CONTENT) {
            if (grow_text(&r->content, &r->content_len, d->text, d->n)) return SL_ENOMEM;
        } else if (d->kind == SL_TOOL_DELTA_CALL) {
            sl_tool_call *calls = realloc(r->calls, (size_t)(r->n_calls + 1) * sizeof *calls);
            if (!calls) return SL_ENOMEM;
            r->calls = calls;
            calls[r->n_calls] = (sl_tool_call){strdup(d->id), strndup(d->text, d->n), strdup("")};
            if (!calls[r->n_calls].id || !calls[r->n_calls].name || !calls[r->n_calls].arguments) {
                r->n_calls++;
                return SL_ENOMEM;
            }
            r->n_calls++;
        } else if (d->call >= 0 && d->call < r->n_calls) {
            sl_tool_call *c = &r->calls[d->call];
            size_t len = strlen(c->arguments);
            if (grow_text(&c->arguments, &len, d->text, d->n)) return SL_ENOMEM;
        }
    }
    return SL_OK;
}

void sl_tool_result_free(sl_tool_result *r) {
    for (int i = 0; i < r->n_calls; i++) {
        free(r->calls[i].id);
        free(r->calls[i].name);
        free(r->calls[i].arguments);
    }
    free(r->calls);
    free(r->content);
    *r = (sl_tool_result){0};
}

int sl_tool_parse(sl_tool_format format, const char *function, const char *text, size_t n, sl_tool_result *out) {
    *out = (sl_tool_result){0};
    sl_tool_stream *s = sl_tool_stream_new(format, function);
    if (!s) return SL_ENOMEM;
    const sl_tool_delta *d;
    int nd, rc = sl_tool_stream_feed(s, text, n, 1, &d, &nd);
    if (!rc) rc = sl_tool_result_add(out, d, nd);
    if (!rc && s->failed) { /* as vLLM: a broken call makes the whole output content */
        sl_tool_result_free(out);
        rc = grow_text(&out->content, &out->content_len, text, n);
    } else if (!rc && out->n_calls == 0 && !out->content) {
        rc = grow_text(&out->content, &out->content_len, "", 0);
    }
    sl_tool_stream_free(s);
    if (rc) sl_tool_result_free(out);
    return rc;
}
