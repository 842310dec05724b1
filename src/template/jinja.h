/* jinja.h -- internal contract of the Jinja interpreter behind chat templates.
 *
 * The interpreter is split in four parts that share the types below:
 *   jinja_lex.c      source -> tokens (whitespace control, trim_blocks and
 *                    lstrip_blocks exactly as Jinja2's lexer applies them)
 *   jinja_parse.c    tokens -> AST (Jinja2's grammar and precedence)
 *   jinja_value.c    the value type: Python truthiness, equality, ordering,
 *                    str()/repr() and json.dumps as transformers' tojson
 *   jinja_eval.c     AST walk producing the prompt
 *   jinja_builtins.c filters, tests, str/list/dict methods and globals
 * Everything a parse or a render allocates lives in one arena that is freed
 * at once; errors unwind with longjmp to the public entry point, which turns
 * them into an sl_err. A compiled template is never written during a render,
 * so concurrent renders of one template are safe. */
#ifndef SL_TEMPLATE_JINJA_H
#define SL_TEMPLATE_JINJA_H

#include <jansson.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/utf8.h"

#include "util/error.h"

/* ---- arena and byte buffer ---- */

typedef struct jinja_chunk jinja_chunk;
typedef struct jinja_arena {
    jinja_chunk *head;
    size_t total;   /* bytes taken from malloc so far */
    size_t limit;   /* allocation fails past this */
} jinja_arena;

void *jinja_arena_alloc(jinja_arena *a, size_t n); /* NULL: out of memory or over limit */
void jinja_arena_free(jinja_arena *a);

typedef struct jinja_buf {
    char *p;
    size_t n, cap;
} jinja_buf;

/* ---- values ---- */

typedef enum {
    JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR,
    JV_LIST, JV_DICT, JV_NS, JV_FUNC, JV_LOOP
} jinja_type;

/* List flavours: what Python type the sequence stands for (printing differs). */
enum { JL_LIST, JL_TUPLE, JL_KEYS, JL_VALUES, JL_ITEMS };

typedef struct jinja_list jinja_list;
typedef struct jinja_dict jinja_dict;
typedef struct jinja_func jinja_func;
typedef struct jinja_loop jinja_loop;

typedef struct jv {
    uint8_t type;
    uint8_t flag; /* JV_UNDEF: 1 = unsafe attribute (sandbox); JV_STR: 1 = ASCII only */
    union {
        bool b;
        int64_t i;
        double f;
        struct { const char *p; size_t n; } s; /* JV_STR; JV_UNDEF: the message */
        jinja_list *l;
        jinja_dict *d; /* JV_DICT and JV_NS */
        jinja_func *fn;
        jinja_loop *loop;
    } u;
} jv;

struct jinja_list {
    size_t n, cap;
    int kind; /* JL_* */
    jv *items;
};

struct jinja_dict {
    size_t n, cap;
    jv *keys, *vals;
};

typedef struct jinja_render jinja_render;
typedef struct jinja_node jinja_node;
typedef struct jinja_frame jinja_frame;

/* Call arguments after evaluation. */
typedef struct jinja_args {
    jv *pos;
    size_t npos;
    const char **kwnames;
    jv *kwvals;
    size_t nkw;
    jinja_frame *frame; /* caller's frame (for caller() in call blocks) */
} jinja_args;

typedef jv (*jinja_builtin_fn)(jinja_render *r, jv self, const jinja_args *a);

enum { JF_BUILTIN, JF_MACRO, JF_CALLER };
struct jinja_func {
    int kind;
    const char *name;
    jinja_builtin_fn fn;   /* JF_BUILTIN */
    jv self;               /* bound object of a method */
    const jinja_node *node; /* JF_MACRO: the macro; JF_CALLER: the call block */
    jinja_frame *closure;
    jv caller;             /* JF_MACRO called from a call block */
};

struct jinja_loop {
    const jv *items;
    size_t n, i;
    int depth;
};

/* ---- AST ---- */

typedef enum {
    /* statements */
    JN_DATA, JN_OUTPUT, JN_IF, JN_FOR, JN_SET, JN_SET_BLOCK, JN_MACRO, JN_CALL_BLOCK,
    JN_FILTER_BLOCK, JN_BREAK, JN_CONTINUE, JN_WITH, JN_SCOPE,
    /* expressions */
    JN_CONST, JN_NAME, JN_NSREF, JN_TUPLE, JN_LIST, JN_DICT, JN_GETATTR, JN_GETITEM,
    JN_SLICE, JN_CALL, JN_FILTER, JN_TEST, JN_BINOP, JN_NEG, JN_POS, JN_NOT, JN_AND,
    JN_OR, JN_COMPARE, JN_COND, JN_CONCAT
} jinja_node_kind;

typedef enum {
    JOP_ADD, JOP_SUB, JOP_MUL, JOP_DIV, JOP_FLOORDIV, JOP_MOD, JOP_POW,
    JOP_EQ, JOP_NE, JOP_LT, JOP_LE, JOP_GT, JOP_GE, JOP_IN, JOP_NOTIN
} jinja_op;

typedef struct jinja_nodes {
    jinja_node **v;
    size_t n;
} jinja_nodes;

/* One node shape for all kinds; which fields a kind uses:
 *   DATA: str              OUTPUT: a          IF: a cond, body, orelse
 *   FOR: a target, b iter, c filter, body, orelse
 *   SET: a target, b value  SET_BLOCK: a target, c filter chain (operand NULL), body
 *   MACRO: str name, params (NAME nodes), defaults (NULL = required), body
 *   CALL_BLOCK: a call, params, defaults, body   FILTER_BLOCK: c filter chain, body
 *   WITH: params (targets), defaults (values), body   SCOPE: body
 *   CONST: value   NAME: str   NSREF: str name, str2 attr   TUPLE/LIST: items
 *   DICT: items keys, defaults values   GETATTR: a, str   GETITEM: a, b
 *   SLICE: a, b, c (each may be NULL)
 *   CALL: a callee, items positional, kwnames/kwvals
 *   FILTER/TEST: a operand, str name, fn, items + kwnames/kwvals; TEST: negate
 *   BINOP: op, a, b   NEG/POS/NOT: a   AND/OR: a, b
 *   COMPARE: a first, items operands, ops   COND: a cond, b then, c else (NULL)
 *   CONCAT: items */
struct jinja_node {
    jinja_node_kind kind;
    int line, col;
    jinja_op op;
    bool negate;
    jinja_node *a, *b, *c;
    jinja_nodes body, orelse, items, params, defaults;
    const char *str, *str2;
    size_t str_n;
    const char **kwnames;
    jinja_nodes kwvals;
    jinja_op *ops;
    jv value;
    const void *fn; /* FILTER/TEST: the builtin (jinja_filter_fn / jinja_test_fn) */
};

/* ---- lexer ---- */

typedef enum {
    JT_DATA, JT_VAR_BEGIN, JT_VAR_END, JT_BLOCK_BEGIN, JT_BLOCK_END,
    JT_NAME, JT_STRING, JT_INT, JT_FLOAT, JT_OP, JT_EOF
} jinja_tok_type;

typedef struct jinja_token {
    jinja_tok_type type;
    int line, col;
    const char *p; /* text (DATA, NAME, OP, decoded STRING) */
    size_t n;
    int64_t i;
    double f;
} jinja_token;

typedef struct jinja_tokens {
    jinja_token *v;
    size_t n, cap;
} jinja_tokens;

/* Tokenizes source; tokens and their text live in arena. Errors fill err
 * with "line L, column C: ..." and return SL_EINVAL. */
int jinja_lex(const char *source, size_t n, jinja_arena *arena, jinja_tokens *out, sl_err *err);

/* Parses tokens into the statement list *out. */
int jinja_parse(const jinja_tokens *toks, jinja_arena *arena, jinja_nodes *out, sl_err *err);

/* ---- render ---- */

#define JINJA_MAX_DEPTH 200          /* nested blocks, macro calls, printed values */
#define JINJA_MAX_EXPR_DEPTH 1000    /* nested expression nodes */
#define JINJA_MAX_OUTPUT (64u << 20) /* bytes of rendered text */
#define JINJA_MAX_MEMORY (256u << 20)
#define JINJA_MAX_STEPS 20000000L    /* loop iterations + calls */
#define JINJA_MAX_RANGE 100000       /* as Jinja2's sandbox */

struct jinja_render {
    jinja_arena arena;
    jinja_buf out;
    jmp_buf fail;
    sl_err *err;
    int depth, edepth;
    long steps;
    const jinja_node *at; /* node being evaluated, for error positions */
};

/* Renders body with the members of context as variables. */
int jinja_render_template(const jinja_nodes *body, const json_t *context, char **out, size_t *n,
                          sl_err *err);

/* Raises a template error (code SL_EINVAL unless given): unwinds the render. */
_Noreturn void jinja_fail(jinja_render *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A raise_exception(): the message is exactly msg. */
_Noreturn void jinja_raise_user(jinja_render *r, const char *msg, size_t n);
void *jinja_alloc(jinja_render *r, size_t n);

/* ---- values (jinja_value.c) ---- */

static inline jv jv_undef(void) { jv v = {.type = JV_UNDEF}; return v; }
static inline jv jv_none(void) { jv v = {.type = JV_NONE}; return v; }
static inline jv jv_bool(bool b) { jv v = {.type = JV_BOOL}; v.u.b = b; return v; }
static inline jv jv_int(int64_t i) { jv v = {.type = JV_INT}; v.u.i = i; return v; }
static inline jv jv_float(double f) { jv v = {.type = JV_FLOAT}; v.u.f = f; return v; }
jv jv_str(const char *p, size_t n);                       /* borrows p */
jv jv_str_copy(jinja_render *r, const char *p, size_t n); /* copies into the arena */
jv jv_undef_msg(jinja_render *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
jv jv_list_new(jinja_render *r, size_t cap, int kind);
void jv_list_push(jinja_render *r, jv list, jv item);
jv jv_dict_new(jinja_render *r, size_t cap);
void jv_dict_set(jinja_render *r, jv dict, jv key, jv val);
const jv *jv_dict_get(jv dict, jv key);          /* NULL when absent */
const jv *jv_dict_get_str(jv dict, const char *key, size_t n);
jv jv_from_json(jinja_render *r, const json_t *j);

bool jv_truthy(jv v);
bool jv_equal(jv a, jv b);
/* Python ordering: <0, 0, >0; raises TypeError-like errors for unorderable. */
int jv_compare(jinja_render *r, jv a, jv b, const char *op);
const char *jv_type_name(jv v); /* Python type name: 'str', 'int', 'NoneType', ... */
bool jv_is_number(jv v);        /* bool, int or float */
double jv_as_double(jv v);

void jinja_buf_put(jinja_render *r, jinja_buf *b, const char *p, size_t n);
void jinja_buf_putc(jinja_render *r, jinja_buf *b, char c);
void jv_write_str(jinja_render *r, jinja_buf *b, jv v);  /* Python str(v) */
void jv_write_repr(jinja_render *r, jinja_buf *b, jv v); /* Python repr(v) */
jv jv_to_str(jinja_render *r, jv v);                     /* str(v) as a value */
void jv_format_float(double f, char out[40]);            /* Python repr(float) */
/* json.dumps(v, ensure_ascii, indent (NULL or string), separators, sort_keys) */
void jv_write_json(jinja_render *r, jinja_buf *b, jv v, bool ensure_ascii, const char *indent,
                   const char *item_sep, const char *key_sep, bool sort_keys, int level);

/* UTF-8 helpers (code point semantics as Python str). */
size_t jinja_utf8_len(const char *p, size_t n);
size_t jinja_utf8_decode(const char *p, size_t n, uint32_t *cp); /* bytes used (>=1) */
bool jinja_is_space(uint32_t cp); /* str.isspace */

/* ---- builtins (jinja_builtins.c) ---- */

typedef jv (*jinja_filter_fn)(jinja_render *r, jv value, const jinja_args *a);
typedef bool (*jinja_test_fn)(jinja_render *r, jv value, const jinja_args *a);
jinja_filter_fn jinja_find_filter(const char *name);
jinja_test_fn jinja_find_test(const char *name);
/* A global (range, namespace, dict, raise_exception, strftime_now) or undefined. */
jv jinja_global(jinja_render *r, const char *name);
/* obj.name for str/list/dict methods; sets *found. */
jv jinja_method(jinja_render *r, jv obj, const char *name, bool *found);
/* `fmt % args` with Python's printf-style conversions (%s %r %d %i %f). */
jv jinja_format_percent(jinja_render *r, jv fmt, jv args);
/* Calls a function value (builtin, method or macro). */
jv jinja_call_value(jinja_render *r, jv callee, const jinja_args *a);
/* Frame-aware parts of the evaluator the builtins need. */
jv jinja_getattr(jinja_render *r, jv obj, const char *name, size_t n);
jv jinja_getitem(jinja_render *r, jv obj, jv key);
/* Iterates v as Python would (str -> chars, dict -> keys); fills a list value. */
jv jinja_iterate(jinja_render *r, jv v);
/* Argument helpers: positional i or keyword name, else NULL. */
const jv *jinja_arg(const jinja_args *a, size_t i, const char *name);
void jinja_check_args(jinja_render *r, const jinja_args *a, const char *what, size_t max_pos,
                      const char *const *kw);

#endif
