/* tool_parser.c -- tool calls read out of model output (see tool_parser.h).
 *
 * The reader keeps the whole output and a position: every byte before it
 * has been sent or dropped. A phase says what may come next:
 *
 *   START    llama3_json, pythonic: nothing decided yet (leading whitespace,
 *            <|python_tag|>, pythonic's '[')
 *   CONTENT  text, up to a start marker ("<tool_call>", "[TOOL_CALLS]")
 *   OPEN     whitespace, then a call object (pythonic: a call's name), or a JSON array of them
 *   CALL     a call object {"name": .., "arguments": ..}, or pythonic's name(key=value, ..)
 *   AFTER    after a call: the closing tag, a separator, the array's end
 *   TAIL     required, pythonic: only whitespace may follow the array
 *   REST     everything left is content (not a call after all, or a broken one)
 *
 * A call object is scanned again from its '{' whenever text arrives
 * (scan_call): its name is known once the "name" string closes, and the bytes
 * of its arguments value seen so far are sent as they come -- they belong to
 * the value whatever follows. Scanning checks structure only; jansson checks
 * a call once its braces close.
 *
 * A pythonic call is Python, not JSON: it is read again from its name
 * whenever text arrives (py_call), writing its keyword arguments out as a
 * JSON object as far as they are known -- a string's characters as they
 * come, a number or True/False/None once it ends, a separator once the next
 * item begins -- so each reading extends the last and the new end is sent.
 * Its CALL waits for the first "key=" or the ")", so "[see(this)]" style
 * text never starts one.
 *
 * Content: whitespace at the end of what is known is held back; it is
 * dropped when a call follows, and sent when more content follows or when
 * the output ends without calls. So "Sure.\n<tool_call>..." gives the
 * content "Sure." and a plain answer is sent unchanged.
 *
 * first_only: calls after the first are read all the same (so a
 * broken one still breaks the output, as in vLLM, which filters after
 * parsing), but their deltas are not sent. */
#include "server/tool_parser.h"

#include <ctype.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "server/buf.h"
#include "util/error.h"
#include "util/utf8.h"

#define NONE SIZE_MAX

static const char HERMES_OPEN[] = "<tool_call>", HERMES_CLOSE[] = "</tool_call>";
static const char MISTRAL_OPEN[] = "[TOOL_CALLS]", LLAMA_TAG[] = "<|python_tag|>";

int sl_tool_format_from_name(const char *name, sl_tool_format *out) {
    static const struct {
        const char *name;
        sl_tool_format format;
    } names[] = {{"hermes", SL_TOOL_HERMES},
                 {"llama3_json", SL_TOOL_LLAMA3_JSON},
                 {"mistral", SL_TOOL_MISTRAL},
                 {"pythonic", SL_TOOL_PYTHONIC}};
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
    sl_server_buf text;         /* the output so far */
    size_t pos;                 /* bytes before it are sent or dropped */
    phase ph;
    int in_array;               /* the calls are elements of a JSON array */
    int cur_sent;               /* the call being read has been started (its CALL sent) */
    size_t item_start;          /* where the call being read began: content from here if it breaks */
    size_t held_from, held_to;  /* whitespace held back (empty when equal) */
    call_rec *calls;            /* calls started */
    int n_calls, cap_calls;
    int first_only;             /* deltas of calls after the first are not sent */
    int failed, ended, oom;
    sl_tool_delta *out;         /* this feed's deltas */
    int n_out, cap_out;
    char **owned;               /* this feed's text that is not the output's (pythonic arguments) */
    int n_owned, cap_owned;
};

sl_tool_stream *sl_tool_stream_new(sl_tool_format format, const char *function, int first_only) {
    sl_tool_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->first_only = first_only;
    s->format = format;
    s->ph = format == SL_TOOL_REQUIRED ? PH_OPEN : PH_CONTENT;
    if (format == SL_TOOL_LLAMA3_JSON || format == SL_TOOL_PYTHONIC) s->ph = PH_START;
    if (format == SL_TOOL_NAMED && !(s->function = strdup(function ? function : ""))) {
        free(s);
        return NULL;
    }
    return s;
}

static void free_owned(sl_tool_stream *s) {
    for (int i = 0; i < s->n_owned; i++) free(s->owned[i]);
    s->n_owned = 0;
}

void sl_tool_stream_free(sl_tool_stream *s) {
    if (!s) return;
    for (int i = 0; i < s->n_calls; i++) {
        free(s->calls[i].id);
        free(s->calls[i].name);
    }
    free(s->calls);
    free_owned(s);
    free(s->owned);
    free(s->out);
    sl_server_buf_free(&s->text);
    free(s->function);
    free(s);
}

int sl_tool_stream_calls(const sl_tool_stream *s) { return s->first_only && s->n_calls > 1 ? 1 : s->n_calls; }
int sl_tool_stream_failed(const sl_tool_stream *s) { return s->failed; }

/* ---- deltas ---------------------------------------------------------------------------- */

/* Whether call's deltas are sent (content's call is -1). */
static int sends(const sl_tool_stream *s, int call) { return !s->first_only || call <= 0; }

static void push(sl_tool_stream *s, sl_tool_delta_kind kind, int call, const char *id, const char *text, size_t n) {
    if (!sends(s, call)) return;
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
    while (k > a && is_ws(s->text.data[k - 1])) k--;
    int continues = s->held_to == a && s->held_from < s->held_to;
    if (k > a) {
        size_t from = continues ? s->held_from : a;
        push(s, SL_TOOL_DELTA_CONTENT, -1, NULL, s->text.data + from, k - from);
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
    push(s, SL_TOOL_DELTA_ARGS, s->n_calls - 1, NULL, s->text.data + from, b - from);
    c->args_sent = b - a;
}

/* Sends a copy of text[0, n) as the next piece of the current call's
 * arguments: text that is not the output's and lives until the next feed. */
static void send_owned_args(sl_tool_stream *s, const char *text, size_t n) {
    int call = s->n_calls - 1;
    if (n == 0 || !sends(s, call)) return;
    if (s->n_owned == s->cap_owned) {
        int cap = s->cap_owned ? 2 * s->cap_owned : 8;
        char **p = realloc(s->owned, (size_t)cap * sizeof *p);
        if (!p) {
            s->oom = 1;
            return;
        }
        s->owned = p;
        s->cap_owned = cap;
    }
    char *copy = malloc(n);
    if (!copy) {
        s->oom = 1;
        return;
    }
    memcpy(copy, text, n);
    s->owned[s->n_owned++] = copy;
    push(s, SL_TOOL_DELTA_ARGS, call, NULL, copy, n);
}

/* The call being read is broken: what of it was not sent, and all that
 * follows, is content. */
static void fail(sl_tool_stream *s) {
    s->failed = 1;
    s->pos = s->cur_sent && sends(s, s->n_calls - 1) ? s->text.len : s->item_start;
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
    size_t k = strlen(lit), have = s->text.len - p < k ? s->text.len - p : k;
    if (memcmp(s->text.data + p, lit, have) != 0) return -1;
    return have == k ? 1 : 0;
}

/* The length of the longest proper prefix of lit that ends the text b[0, n). */
static size_t partial_suffix(const char *b, size_t n, const char *lit) {
    size_t k = strlen(lit) - 1;
    for (k = k < n ? k : n; k > 0; k--)
        if (memcmp(b + n - k, lit, k) == 0) return k;
    return 0;
}

/* ---- reading pythonic calls ----------------------------------------------------------------- */

/* name(key=value, ...) with Python literals as values (strings with either
 * quote, triple quotes, r/u prefixes and escapes; ints, with underscores,
 * hex, octal, binary; floats; a sign; True/False/None; lists; dicts), read
 * into the JSON text json.dumps gives (", " and ": " between items, strings
 * with non-ASCII characters as they are). Everything written is final for
 * the bytes read: reading more text only appends. */
#define PY_MAX_DEPTH 64

typedef struct py_reader {
    const char *b;
    size_t n;            /* bytes known */
    int final;
    sl_server_buf json;  /* the arguments as JSON, so far */
    size_t *keys;        /* the keywords read: start, length pairs */
    int n_keys, cap_keys;
    int oom;
} py_reader;

#define PY_TRY(x)                                                                                                     \
    do {                                                                                                              \
        scan_state try_ = (x);                                                                                        \
        if (try_ != SCAN_DONE) return try_;                                                                           \
    } while (0)

static void py_put(py_reader *r, const char *t, size_t n) {
    if (sl_server_buf_append(&r->json, t, n)) r->oom = 1;
}

static void py_puts(py_reader *r, const char *t) { py_put(r, t, strlen(t)); }

/* Code point cp inside a JSON string (UTF-8; escaped as json.dumps escapes). */
static void py_put_cp(py_reader *r, uint32_t cp) {
    char t[8];
    if (cp == '"' || cp == '\\') {
        py_put(r, (const char[]){'\\', (char)cp}, 2);
    } else if (cp == '\n' || cp == '\r' || cp == '\t' || cp == '\b' || cp == '\f') {
        py_put(r, cp == '\n' ? "\\n" : cp == '\r' ? "\\r" : cp == '\t' ? "\\t" : cp == '\b' ? "\\b" : "\\f", 2);
    } else if (cp < 0x20 || (cp >= 0xD800 && cp <= 0xDFFF)) { /* lone surrogates stay escapes */
        py_put(r, t, (size_t)snprintf(t, sizeof t, "\\u%04x", (unsigned)cp));
    } else {
        py_put(r, t, sl_utf8_encode(cp, t));
    }
}

/* A byte of the source inside a JSON string (UTF-8 sequences pass as they are). */
static void py_put_byte(py_reader *r, char c) {
    if ((unsigned char)c >= 0x80) py_put(r, &c, 1);
    else py_put_cp(r, (unsigned char)c);
}

static int py_name_start(char c) { return isalpha((unsigned char)c) || c == '_' || (unsigned char)c >= 0x80; }
static int py_name_char(char c) { return py_name_start(c) || isdigit((unsigned char)c); }

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') return (c | 0x20) - 'a' + 10;
    return -1;
}

/* A name at b[p]: *end past it (it may go on while the text is not final). */
static scan_state py_name(const py_reader *r, size_t p, size_t *end) {
    while (p < r->n && py_name_char(r->b[p])) p++;
    if (p == r->n && !r->final) return SCAN_WAIT;
    *end = p;
    return SCAN_DONE;
}

/* The escape at b[p] == '\\' of a string that is not raw. */
static scan_state py_escape(py_reader *r, size_t p, size_t *end) {
    static const char names[] = "\\'\"abfnrtv", values[] = "\\'\"\a\b\f\n\r\t\v";
    if (p + 1 >= r->n) return SCAN_WAIT;
    char c = r->b[p + 1];
    const char *k = c ? strchr(names, c) : NULL;
    if (k) {
        py_put_cp(r, (unsigned char)values[k - names]);
        return *end = p + 2, SCAN_DONE;
    }
    if (c == '\n') return *end = p + 2, SCAN_DONE; /* a continued line */
    if (c >= '0' && c <= '7') {                    /* up to three octal digits */
        size_t i = p + 1;
        uint32_t v = 0;
        for (; i < r->n && i < p + 4 && r->b[i] >= '0' && r->b[i] <= '7'; i++) v = v * 8 + (uint32_t)(r->b[i] - '0');
        if (i == r->n && i < p + 4) return SCAN_WAIT;
        py_put_cp(r, v);
        return *end = i, SCAN_DONE;
    }
    int digits = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
    if (digits) {
        uint32_t v = 0;
        for (int i = 0; i < digits; i++) {
            if (p + 2 + (size_t)i >= r->n) return SCAN_WAIT;
            int h = hex_digit(r->b[p + 2 + (size_t)i]);
            if (h < 0) return SCAN_BAD;
            v = v * 16 + (uint32_t)h;
        }
        if (v > 0x10FFFF) return SCAN_BAD;
        py_put_cp(r, v);
        return *end = p + 2 + (size_t)digits, SCAN_DONE;
    }
    if (c == 'N') return SCAN_BAD; /* \N{NAME}: no table of names here */
    py_put_cp(r, '\\');            /* an unknown escape keeps its backslash, as in Python */
    return *end = p + 1, SCAN_DONE;
}

/* A string literal at b[p] (its opening quote), as a JSON string. */
static scan_state py_string(py_reader *r, size_t p, int raw, size_t *end) {
    const char *b = r->b;
    char q = b[p];
    int triple = 0;
    if (p + 1 >= r->n) return SCAN_WAIT;
    if (b[p + 1] == q) { /* "" or """ */
        if (p + 2 >= r->n && !r->final) return SCAN_WAIT;
        triple = p + 2 < r->n && b[p + 2] == q;
        if (!triple) {
            py_puts(r, "\"\"");
            return *end = p + 2, SCAN_DONE;
        }
    }
    py_puts(r, "\"");
    for (size_t i = p + (triple ? 3 : 1); i < r->n;) {
        char c = b[i];
        if (c == q && !triple) {
            py_puts(r, "\"");
            return *end = i + 1, SCAN_DONE;
        }
        if (c == q) { /* inside triple quotes: three close it */
            size_t run = 1;
            while (run < 3 && i + run < r->n && b[i + run] == q) run++;
            if (run == 3) {
                py_puts(r, "\"");
                return *end = i + 3, SCAN_DONE;
            }
            if (i + run == r->n) return SCAN_WAIT;
            for (; run > 0; run--, i++) py_put_byte(r, q);
        } else if (c == '\\' && raw) { /* a raw string keeps the backslash and what follows it */
            if (i + 1 >= r->n) return SCAN_WAIT;
            py_put_byte(r, c);
            py_put_byte(r, b[i + 1]);
            i += 2;
        } else if (c == '\\') {
            PY_TRY(py_escape(r, i, &i));
        } else if ((c == '\n' || c == '\r') && !triple) {
            return SCAN_BAD;
        } else {
            py_put_byte(r, c);
            i++;
        }
    }
    return SCAN_WAIT;
}

/* The digits of an int in base 2, 8 or 16, as JSON's decimal. */
static scan_state py_int(py_reader *r, const char *d, size_t n, int base) {
    unsigned long long v = 0;
    if (n == 0) return SCAN_BAD;
    for (size_t k = 0; k < n; k++) {
        int h = hex_digit(d[k]);
        if (h < 0 || h >= base || v > (ULLONG_MAX - (unsigned)h) / (unsigned)base) return SCAN_BAD;
        v = v * (unsigned)base + (unsigned)h;
    }
    char t[24];
    py_put(r, t, (size_t)snprintf(t, sizeof t, "%llu", v));
    return SCAN_DONE;
}

/* digits [. digits] [e [sign] digits], as JSON: leading zeros dropped, a
 * dot with digits on both sides ("5." 5.0, ".5" 0.5). */
static scan_state py_decimal(py_reader *r, const char *d, size_t n) {
    size_t k = 0, int0 = 0, int1, frac0, frac1, e = NONE;
    while (k < n && isdigit((unsigned char)d[k])) k++;
    int1 = k;
    int dot = k < n && d[k] == '.';
    frac0 = k += (size_t)dot;
    while (k < n && isdigit((unsigned char)d[k])) k++;
    frac1 = k;
    if (k < n && (d[k] | 0x20) == 'e') {
        e = k++;
        if (k < n && (d[k] == '-' || d[k] == '+')) k++;
        size_t digits = k;
        while (k < n && isdigit((unsigned char)d[k])) k++;
        if (k == digits) return SCAN_BAD;
    }
    if (k != n || (int1 == int0 && frac1 == frac0)) return SCAN_BAD; /* 1j, 0x, 1.2.3, . */
    while (int1 - int0 > 1 && d[int0] == '0') int0++;
    if (!dot && e == NONE && int0 > 0 && d[int0] != '0') return SCAN_BAD; /* 007: Python refuses it, 00 is 0 */
    py_put(r, int1 > int0 ? d + int0 : "0", int1 > int0 ? int1 - int0 : 1);
    if (dot) {
        py_puts(r, ".");
        py_put(r, frac1 > frac0 ? d + frac0 : "0", frac1 > frac0 ? frac1 - frac0 : 1);
    }
    if (e != NONE) {
        py_puts(r, "e");
        py_put(r, d + e + 1, n - e - 1);
    }
    return SCAN_DONE;
}

static int py_digit(char c, int base) { return base == 16 ? hex_digit(c) >= 0 : isdigit((unsigned char)c); }

/* A number at b[p]: a sign, then an int literal (0x, 0o, 0b; single
 * underscores between digits) or a float literal, as JSON. */
static scan_state py_number(py_reader *r, size_t p, size_t *end) {
    const char *b = r->b;
    size_t start = b[p] == '-' || b[p] == '+' ? skip_ws(b, p + 1, r->n) : p, i = start;
    while (i < r->n && (isalnum((unsigned char)b[i]) || b[i] == '_' || b[i] == '.' ||
                        ((b[i] == '-' || b[i] == '+') && i > start && (b[i - 1] | 0x20) == 'e')))
        i++;
    if (i == r->n && !r->final) return SCAN_WAIT;
    int base = 0;
    if (i - start > 1 && b[start] == '0') {
        char x = (char)(b[start + 1] | 0x20);
        base = x == 'x' ? 16 : x == 'o' ? 8 : x == 'b' ? 2 : 0;
    }
    char d[128]; /* the literal without its underscores */
    size_t n = 0;
    for (size_t k = start; k < i; k++) {
        if (b[k] == '_') {
            int after_prefix = base && k == start + 2;
            if (k + 1 == i || !py_digit(b[k + 1], base) || !(after_prefix || py_digit(b[k - 1], base))) return SCAN_BAD;
            continue;
        }
        if (n + 1 == sizeof d) return SCAN_BAD;
        d[n++] = b[k];
    }
    if (b[p] == '-') py_puts(r, "-");
    *end = i;
    return base ? py_int(r, d + 2, n - 2, base) : py_decimal(r, d, n);
}

static scan_state py_value(py_reader *r, size_t p, int depth, size_t *end);

/* A dict's key: a string, a number, True, False or None, as a JSON string
 * (json.dumps writes 1 as "1" and True as "true"). */
static scan_state py_key(py_reader *r, size_t p, int depth, size_t *end) {
    if (r->b[p] == '[' || r->b[p] == '{') return SCAN_BAD; /* unhashable */
    size_t at = r->json.len;
    PY_TRY(py_value(r, p, depth, end));
    if (r->json.len > at && r->json.data[at] == '"') return SCAN_DONE;
    py_puts(r, "\"");
    if (r->oom) return SCAN_DONE;
    memmove(r->json.data + at + 1, r->json.data + at, r->json.len - at - 1); /* written whole just now: quote it */
    r->json.data[at] = '"';
    py_puts(r, "\"");
    return SCAN_DONE;
}

/* A list or a dict at b[p] ('[' or '{'); a trailing comma is allowed. */
static scan_state py_items(py_reader *r, size_t p, int depth, size_t *end) {
    int dict = r->b[p] == '{';
    char close = dict ? '}' : ']';
    py_put(r, r->b + p, 1);
    p++;
    for (int first = 1;; first = 0) {
        if ((p = skip_ws(r->b, p, r->n)) == r->n) return SCAN_WAIT;
        if (r->b[p] == close) {
            py_put(r, &close, 1);
            return *end = p + 1, SCAN_DONE;
        }
        if (!first) py_puts(r, ", ");
        if (dict) {
            PY_TRY(py_key(r, p, depth + 1, &p));
            if ((p = skip_ws(r->b, p, r->n)) == r->n) return SCAN_WAIT;
            if (r->b[p] != ':') return SCAN_BAD;
            py_puts(r, ": ");
            if ((p = skip_ws(r->b, p + 1, r->n)) == r->n) return SCAN_WAIT;
        }
        PY_TRY(py_value(r, p, depth + 1, &p));
        if ((p = skip_ws(r->b, p, r->n)) == r->n) return SCAN_WAIT;
        if (r->b[p] == ',') p++;
        else if (r->b[p] != close) return SCAN_BAD;
    }
}

static scan_state py_value(py_reader *r, size_t p, int depth, size_t *end) {
    static const char *const consts[][2] = {{"True", "true"}, {"False", "false"}, {"None", "null"}};
    const char *b = r->b;
    if (depth > PY_MAX_DEPTH) return SCAN_BAD;
    if (b[p] == '"' || b[p] == '\'') return py_string(r, p, 0, end);
    if (b[p] == '[' || b[p] == '{') return py_items(r, p, depth, end);
    if (isdigit((unsigned char)b[p]) || b[p] == '.' || b[p] == '-' || b[p] == '+') return py_number(r, p, end);
    if (!py_name_start(b[p])) return SCAN_BAD;
    size_t e;
    PY_TRY(py_name(r, p, &e));
    if (e < r->n && (b[e] == '"' || b[e] == '\'')) { /* a prefixed string: r"..", u"..", not bytes or f-strings */
        if (e - p != 1 || !strchr("rRuU", b[p])) return SCAN_BAD;
        return py_string(r, e, (b[p] | 0x20) == 'r', end);
    }
    for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++) {
        if (e - p == strlen(consts[i][0]) && memcmp(b + p, consts[i][0], e - p) == 0) {
            py_puts(r, consts[i][1]);
            return *end = e, SCAN_DONE;
        }
    }
    return SCAN_BAD; /* a name, not a literal */
}

/* Records the keyword b[p, e); 0, or -1 when the call has it already (Python refuses that). */
static int py_new_key(py_reader *r, size_t p, size_t e) {
    for (int i = 0; i < r->n_keys; i++)
        if (r->keys[2 * i + 1] == e - p && memcmp(r->b + r->keys[2 * i], r->b + p, e - p) == 0) return -1;
    if (r->n_keys == r->cap_keys) {
        int cap = r->cap_keys ? 2 * r->cap_keys : 8;
        size_t *k = realloc(r->keys, 2 * (size_t)cap * sizeof *k);
        if (!k) return r->oom = 1, 0;
        r->keys = k;
        r->cap_keys = cap;
    }
    r->keys[2 * r->n_keys] = p;
    r->keys[2 * r->n_keys + 1] = e - p;
    r->n_keys++;
    return 0;
}

/* A call name(key=value, ...) at b[p] (a name's first byte): *name_end,
 * *begun once its first "key=" or its ")" is read, its arguments in r->json. */
static scan_state py_call(py_reader *r, size_t p, size_t *name_end, int *begun, size_t *end) {
    PY_TRY(py_name(r, p, name_end));
    if (*name_end == r->n) return SCAN_WAIT;
    if (r->b[*name_end] != '(') return SCAN_BAD;
    py_puts(r, "{");
    p = *name_end + 1;
    for (int first = 1;; first = 0) {
        if ((p = skip_ws(r->b, p, r->n)) == r->n) return SCAN_WAIT;
        if (r->b[p] == ')') {
            *begun = 1;
            py_puts(r, "}");
            return *end = p + 1, SCAN_DONE;
        }
        if (!py_name_start(r->b[p])) return SCAN_BAD; /* positional arguments, ** */
        size_t key = p, key_end;
        PY_TRY(py_name(r, key, &key_end));
        if ((p = skip_ws(r->b, key_end, r->n)) == r->n) return SCAN_WAIT;
        if (r->b[p] != '=') return SCAN_BAD;
        if (p + 1 == r->n) return SCAN_WAIT;
        if (r->b[p + 1] == '=' || py_new_key(r, key, key_end)) return SCAN_BAD;
        *begun = 1;
        py_puts(r, first ? "\"" : ", \"");
        py_put(r, r->b + key, key_end - key);
        py_puts(r, "\": ");
        if ((p = skip_ws(r->b, p + 1, r->n)) == r->n) return SCAN_WAIT;
        PY_TRY(py_value(r, p, 0, &p));
        if ((p = skip_ws(r->b, p, r->n)) == r->n) return SCAN_WAIT;
        if (r->b[p] == ',') p++;
        else if (r->b[p] != ')') return SCAN_BAD;
    }
}

/* ---- the phases ------------------------------------------------------------------------ */

static void step_start(sl_tool_stream *s, int final) {
    size_t p = skip_ws(s->text.data, s->pos, s->text.len);
    if (p == s->text.len) {
        if (final) s->ph = PH_REST;
        return;
    }
    if (s->format == SL_TOOL_PYTHONIC) { /* the output is a list of calls, or content */
        s->item_start = s->pos;
        s->in_array = s->text.data[p] == '[';
        s->pos = s->in_array ? p + 1 : s->pos;
        s->ph = s->in_array ? PH_OPEN : PH_REST;
        return;
    }
    int m = match(s, p, LLAMA_TAG);
    if (m == 0 && !final) return;
    s->item_start = s->pos;
    if (m > 0) {
        s->pos = p + strlen(LLAMA_TAG);
        s->ph = PH_OPEN;
    } else if (s->text.data[p] == '{') {
        s->pos = p;
        s->ph = PH_CALL;
    } else {
        s->ph = PH_REST;
    }
}

static void step_content(sl_tool_stream *s, int final) {
    const char *marker = s->format == SL_TOOL_HERMES ? HERMES_OPEN : MISTRAL_OPEN;
    const char *hit = memmem(s->text.data + s->pos, s->text.len - s->pos, marker, strlen(marker));
    if (hit) {
        size_t at = (size_t)(hit - s->text.data);
        content(s, s->pos, at);
        s->item_start = s->held_from < s->held_to && s->held_to == at ? s->held_from : at; /* with its blank */
        drop_held(s);
        s->pos = at + strlen(marker);
        s->ph = PH_OPEN;
        return;
    }
    size_t end = final ? s->text.len : s->text.len - partial_suffix(s->text.data + s->pos, s->text.len - s->pos, marker);
    content(s, s->pos, end);
    s->pos = end;
}

static void step_open(sl_tool_stream *s, int final) {
    size_t p = skip_ws(s->text.data, s->pos, s->text.len);
    if (p == s->text.len) {
        if (final) fail(s);
        return;
    }
    int arrays = s->format == SL_TOOL_MISTRAL || s->format == SL_TOOL_REQUIRED;
    if (s->text.data[p] == '[' && arrays && !s->in_array) {
        s->in_array = 1;
        s->pos = p + 1;
    } else if (s->format == SL_TOOL_PYTHONIC ? py_name_start(s->text.data[p]) : s->text.data[p] == '{') {
        s->pos = p;
        s->ph = PH_CALL;
    } else {
        fail(s);
    }
}

static void step_call(sl_tool_stream *s, int final) {
    call_scan cs;
    scan_call(s->text.data, s->pos, s->text.len, final, &cs);
    if (cs.state == SCAN_BAD) {
        fail(s);
        return;
    }
    if (!s->cur_sent && cs.name_end != NONE) {
        size_t n = 0;
        char *name = decode_name(s->text.data, cs.name_start, cs.name_end, &n);
        if (!name) {
            fail(s);
            return;
        }
        if (start_call(s, name, n)) s->oom = 1;
        free(name);
        if (s->oom) return;
    }
    if (s->cur_sent && cs.args_start != NONE) send_args(s, cs.args_start, cs.args_end != NONE ? cs.args_end : s->text.len);
    if (cs.state == SCAN_WAIT) {
        if (final) fail(s);
        return;
    }
    if (!s->cur_sent || !call_valid(s->text.data, s->pos, cs.end)) {
        fail(s);
        return;
    }
    if (cs.args_start == NONE) push(s, SL_TOOL_DELTA_ARGS, s->n_calls - 1, NULL, "{}", 2);
    s->cur_sent = 0;
    s->pos = cs.end;
    s->ph = PH_AFTER;
}

/* A pythonic call, read again from its name. */
static void step_py_call(sl_tool_stream *s, int final) {
    py_reader r = {.b = s->text.data, .n = s->text.len, .final = final};
    size_t name_end = NONE, end = NONE;
    int begun = 0;
    scan_state st = py_call(&r, s->pos, &name_end, &begun, &end);
    if (r.oom) s->oom = 1;
    else if (st == SCAN_BAD) fail(s);
    else if (begun && !s->cur_sent && start_call(s, s->text.data + s->pos, name_end - s->pos)) s->oom = 1;
    if (!s->oom && !s->failed && s->cur_sent) {
        call_rec *c = &s->calls[s->n_calls - 1];
        send_owned_args(s, r.json.data + c->args_sent, r.json.len - c->args_sent);
        c->args_sent = r.json.len;
    }
    sl_server_buf_free(&r.json);
    free(r.keys);
    if (s->oom || s->failed) return;
    if (st == SCAN_WAIT) {
        if (final) fail(s);
        return;
    }
    s->cur_sent = 0;
    s->pos = end;
    s->ph = PH_AFTER;
}

/* Something other than what may follow a call, at p. */
static void fail_at(sl_tool_stream *s, size_t p) {
    s->item_start = p;
    fail(s);
}

static void step_after(sl_tool_stream *s, int final) {
    size_t p = skip_ws(s->text.data, s->pos, s->text.len);
    if (p == s->text.len) {
        if (final && s->in_array) fail_at(s, p);
        return;
    }
    if (s->format == SL_TOOL_HERMES) {
        int m = match(s, p, HERMES_CLOSE);
        if (m == 0 && !final) return;
        s->pos = m > 0 ? p + strlen(HERMES_CLOSE) : p; /* no closing tag: content follows */
        s->ph = PH_CONTENT;
    } else if (s->format == SL_TOOL_LLAMA3_JSON) {
        if (s->text.data[p] != ';') {
            fail_at(s, p);
            return;
        }
        s->item_start = p;
        s->pos = p + 1;
        s->ph = PH_OPEN;
    } else if (!s->in_array) {
        s->pos = p;
        s->ph = s->format == SL_TOOL_MISTRAL ? PH_CONTENT : PH_TAIL;
    } else if (s->text.data[p] == ',') {
        s->item_start = p;
        s->pos = p + 1;
        s->ph = PH_OPEN;
    } else if (s->text.data[p] == ']') {
        s->in_array = 0;
        s->pos = p + 1;
        s->ph = s->format == SL_TOOL_MISTRAL ? PH_CONTENT : PH_TAIL;
    } else {
        fail_at(s, p);
    }
}

static void step_tail(sl_tool_stream *s) {
    size_t p = skip_ws(s->text.data, s->pos, s->text.len);
    if (p < s->text.len) fail_at(s, p);
    else s->pos = p;
}

static void step(sl_tool_stream *s, int final) {
    switch (s->ph) {
    case PH_START: step_start(s, final); break;
    case PH_CONTENT: step_content(s, final); break;
    case PH_OPEN: step_open(s, final); break;
    case PH_CALL: s->format == SL_TOOL_PYTHONIC ? step_py_call(s, final) : step_call(s, final); break;
    case PH_AFTER: step_after(s, final); break;
    case PH_TAIL: step_tail(s); break;
    case PH_REST:
        content(s, s->pos, s->text.len);
        s->pos = s->text.len;
        break;
    }
}

/* SL_TOOL_NAMED: the whole output is one call's arguments. */
static void feed_named(sl_tool_stream *s, int final) {
    if (!s->cur_sent && (s->text.len > 0 || final) && start_call(s, s->function, strlen(s->function))) s->oom = 1;
    if (s->cur_sent) send_args(s, 0, s->text.len);
}

int sl_tool_stream_feed(sl_tool_stream *s, const char *text, size_t n, int final, const sl_tool_delta **deltas,
                        int *n_deltas) {
    s->n_out = 0;
    free_owned(s);
    *deltas = NULL;
    *n_deltas = 0;
    if (s->ended) return SL_OK;
    if (sl_server_buf_append(&s->text, text, n)) return SL_ENOMEM;
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
            push(s, SL_TOOL_DELTA_CONTENT, -1, NULL, s->text.data + s->held_from, s->held_to - s->held_from);
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

int sl_tool_parse(sl_tool_format format, const char *function, int first_only, const char *text, size_t n,
                  sl_tool_result *out) {
    *out = (sl_tool_result){0};
    sl_tool_stream *s = sl_tool_stream_new(format, function, first_only);
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
