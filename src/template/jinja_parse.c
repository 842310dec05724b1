/* jinja_parse.c -- Jinja2's grammar: tokens to the AST of jinja.h.
 *
 * The expression parser follows Jinja2's precedence ladder function for
 * function (conditional, or, and, not, comparison chains, + -, ~, * / // %,
 * ** (left-associative, as in Jinja2), unary, postfix, filters and tests), so
 * that every template parses to the tree Jinja2 would build. Statements
 * cover what shipped chat templates use: if/elif/else, for (with filter and
 * else), set (plain, tuple, namespace attribute, block), macro, call,
 * filter, with, break/continue and generation. Anything else — include,
 * extends, block, import, recursive loops, *args — is refused with the line
 * and column, as are unknown filters and tests (Jinja2 refuses those at
 * compile time too). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "template/jinja.h"

#define MAX_NESTING 100

typedef struct parser {
    const jinja_tokens *toks;
    size_t pos;
    jinja_arena *arena;
    sl_err *err;
    jmp_buf fail;
    int depth;
    int loop_depth;
} parser;

typedef struct node_vec {
    jinja_node **v;
    size_t n, cap;
} node_vec;

static const jinja_token *cur(const parser *ps) { return &ps->toks->v[ps->pos]; }
static const jinja_token *peek(const parser *ps, size_t k) {
    size_t i = ps->pos + k;
    return &ps->toks->v[i < ps->toks->n ? i : ps->toks->n - 1];
}

__attribute__((format(printf, 3, 4))) _Noreturn static void parse_fail(parser *ps, const jinja_token *t,
                                                                        const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sl_err_set(ps->err, SL_EINVAL, "chat template line %d, column %d: %s", t->line, t->col, msg);
    longjmp(ps->fail, 1);
}

static void *ps_alloc(parser *ps, size_t n) {
    void *p = jinja_arena_alloc(ps->arena, n);
    if (!p) {
        sl_err_set(ps->err, SL_ENOMEM, "chat template: out of memory while parsing");
        longjmp(ps->fail, 1);
    }
    memset(p, 0, n);
    return p;
}

static void vec_push(parser *ps, node_vec *v, jinja_node *n) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        jinja_node **nv = ps_alloc(ps, cap * sizeof *nv);
        if (v->n) memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = n;
}

static jinja_nodes vec_done(node_vec *v) {
    jinja_nodes out = {v->v, v->n};
    return out;
}

static jinja_node *new_node(parser *ps, jinja_node_kind kind, const jinja_token *at) {
    jinja_node *n = ps_alloc(ps, sizeof *n);
    n->kind = kind;
    n->line = at->line;
    n->col = at->col;
    return n;
}

static char *tok_text(parser *ps, const jinja_token *t) {
    char *s = ps_alloc(ps, t->n + 1);
    memcpy(s, t->p, t->n);
    return s;
}

static bool is_op(const jinja_token *t, const char *op) {
    return t->type == JT_OP && t->n == strlen(op) && memcmp(t->p, op, t->n) == 0;
}
static bool is_name(const jinja_token *t, const char *name) {
    return t->type == JT_NAME && t->n == strlen(name) && memcmp(t->p, name, t->n) == 0;
}

static const char *describe(const jinja_token *t) {
    switch (t->type) {
    case JT_EOF: return "end of template";
    case JT_BLOCK_END: return "end of statement block";
    case JT_VAR_END: return "end of print statement";
    case JT_DATA: return "template data";
    case JT_STRING: return "string";
    case JT_INT: return "integer";
    case JT_FLOAT: return "float";
    default: return NULL;
    }
}

_Noreturn static void unexpected(parser *ps, const char *wanted) {
    const jinja_token *t = cur(ps);
    const char *d = describe(t);
    if (d) parse_fail(ps, t, "expected %s, got %s", wanted, d);
    parse_fail(ps, t, "expected %s, got '%.*s'", wanted, (int)t->n, t->p);
}

static void expect_op(parser *ps, const char *op) {
    if (!is_op(cur(ps), op)) {
        char w[16];
        snprintf(w, sizeof w, "'%s'", op);
        unexpected(ps, w);
    }
    ps->pos++;
}

static void expect_name(parser *ps, const char *name) {
    if (!is_name(cur(ps), name)) {
        char w[48];
        snprintf(w, sizeof w, "'%s'", name);
        unexpected(ps, w);
    }
    ps->pos++;
}

static void expect_type(parser *ps, jinja_tok_type type, const char *what) {
    if (cur(ps)->type != type) unexpected(ps, what);
    ps->pos++;
}

static void enter(parser *ps) {
    if (++ps->depth > MAX_NESTING) parse_fail(ps, cur(ps), "template nested too deeply (limit %d)", MAX_NESTING);
}

/* ---- expressions ---- */

static jinja_node *parse_expression(parser *ps);
static jinja_node *parse_or(parser *ps);
static jinja_node *parse_unary(parser *ps, bool with_filter);
static jinja_node *parse_primary(parser *ps);
static jinja_node *parse_postfix(parser *ps, jinja_node *node);
static jinja_node *parse_filter_expr(parser *ps, jinja_node *node);
static jinja_node *parse_tuple(parser *ps, bool simplified, bool with_condexpr, const char *extra_end,
                               bool explicit_parens);

static jinja_node *parse_condexpr(parser *ps) {
    jinja_node *expr = parse_or(ps);
    while (is_name(cur(ps), "if")) {
        const jinja_token *at = cur(ps);
        ps->pos++;
        jinja_node *n = new_node(ps, JN_COND, at);
        n->a = parse_or(ps);
        n->b = expr;
        if (is_name(cur(ps), "else")) {
            ps->pos++;
            n->c = parse_condexpr(ps);
        }
        expr = n;
    }
    return expr;
}

static jinja_node *parse_expression(parser *ps) {
    enter(ps);
    jinja_node *n = parse_condexpr(ps);
    ps->depth--;
    return n;
}

static jinja_node *binary(parser *ps, jinja_node_kind kind, jinja_op op, const jinja_token *at,
                          jinja_node *a, jinja_node *b) {
    jinja_node *n = new_node(ps, kind, at);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static jinja_node *parse_not(parser *ps);

static jinja_node *parse_and(parser *ps) {
    jinja_node *left = parse_not(ps);
    while (is_name(cur(ps), "and")) {
        const jinja_token *at = cur(ps);
        ps->pos++;
        left = binary(ps, JN_AND, 0, at, left, parse_not(ps));
    }
    return left;
}

static jinja_node *parse_or(parser *ps) {
    jinja_node *left = parse_and(ps);
    while (is_name(cur(ps), "or")) {
        const jinja_token *at = cur(ps);
        ps->pos++;
        left = binary(ps, JN_OR, 0, at, left, parse_and(ps));
    }
    return left;
}

static jinja_node *parse_math1(parser *ps);

static jinja_node *parse_compare(parser *ps) {
    const jinja_token *at = cur(ps);
    jinja_node *expr = parse_math1(ps);
    node_vec operands = {0};
    jinja_op ops[64];
    size_t nops = 0;
    for (;;) {
        const jinja_token *t = cur(ps);
        jinja_op op;
        if (is_op(t, "==")) op = JOP_EQ;
        else if (is_op(t, "!=")) op = JOP_NE;
        else if (is_op(t, "<")) op = JOP_LT;
        else if (is_op(t, "<=")) op = JOP_LE;
        else if (is_op(t, ">")) op = JOP_GT;
        else if (is_op(t, ">=")) op = JOP_GE;
        else if (is_name(t, "in")) op = JOP_IN;
        else if (is_name(t, "not") && is_name(peek(ps, 1), "in")) { op = JOP_NOTIN; ps->pos++; }
        else break;
        ps->pos++;
        if (nops == 64) parse_fail(ps, t, "comparison chain too long");
        ops[nops++] = op;
        vec_push(ps, &operands, parse_math1(ps));
    }
    if (!nops) return expr;
    jinja_node *n = new_node(ps, JN_COMPARE, at);
    n->a = expr;
    n->items = vec_done(&operands);
    n->ops = ps_alloc(ps, nops * sizeof *n->ops);
    memcpy(n->ops, ops, nops * sizeof *ops);
    return n;
}

static jinja_node *parse_not(parser *ps) {
    if (is_name(cur(ps), "not")) {
        const jinja_token *at = cur(ps);
        ps->pos++;
        enter(ps);
        jinja_node *n = new_node(ps, JN_NOT, at);
        n->a = parse_not(ps);
        ps->depth--;
        return n;
    }
    return parse_compare(ps);
}

static jinja_node *parse_pow(parser *ps) {
    jinja_node *left = parse_unary(ps, true);
    while (is_op(cur(ps), "**")) {
        const jinja_token *at = cur(ps);
        ps->pos++;
        left = binary(ps, JN_BINOP, JOP_POW, at, left, parse_unary(ps, true));
    }
    return left;
}

static jinja_node *parse_math2(parser *ps) {
    jinja_node *left = parse_pow(ps);
    for (;;) {
        const jinja_token *at = cur(ps);
        jinja_op op;
        if (is_op(at, "*")) op = JOP_MUL;
        else if (is_op(at, "/")) op = JOP_DIV;
        else if (is_op(at, "//")) op = JOP_FLOORDIV;
        else if (is_op(at, "%")) op = JOP_MOD;
        else return left;
        ps->pos++;
        left = binary(ps, JN_BINOP, op, at, left, parse_pow(ps));
    }
}

static jinja_node *parse_concat(parser *ps) {
    const jinja_token *at = cur(ps);
    jinja_node *first = parse_math2(ps);
    if (!is_op(cur(ps), "~")) return first;
    node_vec parts = {0};
    vec_push(ps, &parts, first);
    while (is_op(cur(ps), "~")) {
        ps->pos++;
        vec_push(ps, &parts, parse_math2(ps));
    }
    jinja_node *n = new_node(ps, JN_CONCAT, at);
    n->items = vec_done(&parts);
    return n;
}

static jinja_node *parse_math1(parser *ps) {
    jinja_node *left = parse_concat(ps);
    for (;;) {
        const jinja_token *at = cur(ps);
        jinja_op op;
        if (is_op(at, "+")) op = JOP_ADD;
        else if (is_op(at, "-")) op = JOP_SUB;
        else return left;
        ps->pos++;
        left = binary(ps, JN_BINOP, op, at, left, parse_concat(ps));
    }
}

static jinja_node *parse_unary(parser *ps, bool with_filter) {
    const jinja_token *at = cur(ps);
    jinja_node *node;
    enter(ps);
    if (is_op(at, "-") || is_op(at, "+")) {
        ps->pos++;
        node = new_node(ps, is_op(at, "-") ? JN_NEG : JN_POS, at);
        node->a = parse_unary(ps, false);
    } else {
        node = parse_primary(ps);
    }
    node = parse_postfix(ps, node);
    if (with_filter) node = parse_filter_expr(ps, node);
    ps->depth--;
    return node;
}

static jinja_node *constant(parser *ps, const jinja_token *at, jv v) {
    jinja_node *n = new_node(ps, JN_CONST, at);
    n->value = v;
    return n;
}

static jinja_node *parse_list_literal(parser *ps, const jinja_token *at) {
    node_vec items = {0};
    while (!is_op(cur(ps), "]")) {
        if (items.n) expect_op(ps, ",");
        if (is_op(cur(ps), "]")) break;
        vec_push(ps, &items, parse_expression(ps));
    }
    expect_op(ps, "]");
    jinja_node *n = new_node(ps, JN_LIST, at);
    n->items = vec_done(&items);
    return n;
}

static jinja_node *parse_dict_literal(parser *ps, const jinja_token *at) {
    node_vec keys = {0}, vals = {0};
    while (!is_op(cur(ps), "}")) {
        if (keys.n) expect_op(ps, ",");
        if (is_op(cur(ps), "}")) break;
        vec_push(ps, &keys, parse_expression(ps));
        expect_op(ps, ":");
        vec_push(ps, &vals, parse_expression(ps));
    }
    expect_op(ps, "}");
    jinja_node *n = new_node(ps, JN_DICT, at);
    n->items = vec_done(&keys);
    n->defaults = vec_done(&vals);
    return n;
}

static jinja_node *parse_primary(parser *ps) {
    const jinja_token *t = cur(ps);
    switch (t->type) {
    case JT_NAME:
        ps->pos++;
        if (is_name(t, "true") || is_name(t, "True")) return constant(ps, t, jv_bool(true));
        if (is_name(t, "false") || is_name(t, "False")) return constant(ps, t, jv_bool(false));
        if (is_name(t, "none") || is_name(t, "None")) return constant(ps, t, jv_none());
        {
            jinja_node *n = new_node(ps, JN_NAME, t);
            n->str = tok_text(ps, t);
            n->str_n = t->n;
            return n;
        }
    case JT_STRING: {
        size_t total = 0, k = ps->pos;
        while (ps->toks->v[k].type == JT_STRING) total += ps->toks->v[k++].n;
        char *buf = ps_alloc(ps, total + 1);
        size_t off = 0;
        while (cur(ps)->type == JT_STRING) {
            memcpy(buf + off, cur(ps)->p, cur(ps)->n);
            off += cur(ps)->n;
            ps->pos++;
        }
        return constant(ps, t, jv_str(buf, total));
    }
    case JT_INT: ps->pos++; return constant(ps, t, jv_int(t->i));
    case JT_FLOAT: ps->pos++; return constant(ps, t, jv_float(t->f));
    default: break;
    }
    if (is_op(t, "(")) {
        ps->pos++;
        jinja_node *n = parse_tuple(ps, false, true, NULL, true);
        expect_op(ps, ")");
        return n;
    }
    if (is_op(t, "[")) { ps->pos++; return parse_list_literal(ps, t); }
    if (is_op(t, "{")) { ps->pos++; return parse_dict_literal(ps, t); }
    unexpected(ps, "an expression");
}

static bool is_tuple_end(parser *ps, const char *extra_end) {
    const jinja_token *t = cur(ps);
    if (t->type == JT_VAR_END || t->type == JT_BLOCK_END || is_op(t, ")")) return true;
    return extra_end && is_name(t, extra_end);
}

static jinja_node *parse_tuple(parser *ps, bool simplified, bool with_condexpr, const char *extra_end,
                               bool explicit_parens) {
    const jinja_token *at = cur(ps);
    node_vec items = {0};
    bool is_tuple = false;
    for (;;) {
        if (items.n) expect_op(ps, ",");
        if (is_tuple_end(ps, extra_end)) break;
        jinja_node *item = simplified ? parse_primary(ps) : with_condexpr ? parse_expression(ps) : parse_or(ps);
        vec_push(ps, &items, item);
        if (is_op(cur(ps), ",")) is_tuple = true;
        else break;
    }
    if (!is_tuple) {
        if (items.n) return items.v[0];
        if (!explicit_parens) unexpected(ps, "an expression");
    }
    jinja_node *n = new_node(ps, JN_TUPLE, at);
    n->items = vec_done(&items);
    return n;
}

/* Positional and keyword arguments up to ')'; the '(' is consumed. */
static void parse_call_args(parser *ps, jinja_node *n) {
    node_vec pos = {0}, kwv = {0};
    const char *names[64];
    size_t nkw = 0;
    expect_op(ps, "(");
    while (!is_op(cur(ps), ")")) {
        if (pos.n || nkw) {
            expect_op(ps, ",");
            if (is_op(cur(ps), ")")) break;
        }
        const jinja_token *t = cur(ps);
        if (is_op(t, "*") || is_op(t, "**")) parse_fail(ps, t, "*args and **kwargs in calls are not supported");
        if (t->type == JT_NAME && is_op(peek(ps, 1), "=")) {
            if (nkw == 64) parse_fail(ps, t, "too many keyword arguments");
            names[nkw++] = tok_text(ps, t);
            ps->pos += 2;
            vec_push(ps, &kwv, parse_expression(ps));
        } else {
            if (nkw) parse_fail(ps, t, "positional argument follows keyword argument");
            vec_push(ps, &pos, parse_expression(ps));
        }
    }
    expect_op(ps, ")");
    n->items = vec_done(&pos);
    n->kwvals = vec_done(&kwv);
    n->kwnames = ps_alloc(ps, (nkw ? nkw : 1) * sizeof *n->kwnames);
    memcpy(n->kwnames, names, nkw * sizeof *names);
}

static jinja_node *parse_subscribed(parser *ps) {
    const jinja_token *at = cur(ps);
    jinja_node *args[3] = {0};
    if (is_op(at, ":")) {
        ps->pos++;
    } else {
        jinja_node *node = parse_expression(ps);
        if (!is_op(cur(ps), ":")) return node;
        ps->pos++;
        args[0] = node;
    }
    if (!is_op(cur(ps), ":") && !is_op(cur(ps), "]") && !is_op(cur(ps), ","))
        args[1] = parse_expression(ps);
    if (is_op(cur(ps), ":")) {
        ps->pos++;
        if (!is_op(cur(ps), "]") && !is_op(cur(ps), ",")) args[2] = parse_expression(ps);
    }
    jinja_node *n = new_node(ps, JN_SLICE, at);
    n->a = args[0];
    n->b = args[1];
    n->c = args[2];
    return n;
}

static jinja_node *parse_subscript(parser *ps, jinja_node *node) {
    const jinja_token *t = cur(ps);
    ps->pos++;
    if (is_op(t, ".")) {
        const jinja_token *attr = cur(ps);
        ps->pos++;
        if (attr->type == JT_NAME) {
            jinja_node *n = new_node(ps, JN_GETATTR, t);
            n->a = node;
            n->str = tok_text(ps, attr);
            n->str_n = attr->n;
            return n;
        }
        if (attr->type != JT_INT) { ps->pos--; unexpected(ps, "a name or number after '.'"); }
        jinja_node *n = new_node(ps, JN_GETITEM, t);
        n->a = node;
        n->b = constant(ps, attr, jv_int(attr->i));
        return n;
    }
    node_vec args = {0};
    while (!is_op(cur(ps), "]")) {
        if (args.n) {
            expect_op(ps, ",");
            if (is_op(cur(ps), "]")) break;
        }
        vec_push(ps, &args, parse_subscribed(ps));
    }
    expect_op(ps, "]");
    jinja_node *n = new_node(ps, JN_GETITEM, t);
    n->a = node;
    if (args.n == 1) {
        n->b = args.v[0];
    } else {
        n->b = new_node(ps, JN_TUPLE, t);
        n->b->items = vec_done(&args);
    }
    return n;
}

static jinja_node *parse_call(parser *ps, jinja_node *callee) {
    jinja_node *n = new_node(ps, JN_CALL, cur(ps));
    n->a = callee;
    parse_call_args(ps, n);
    return n;
}

static jinja_node *parse_postfix(parser *ps, jinja_node *node) {
    for (;;) {
        const jinja_token *t = cur(ps);
        if (is_op(t, ".") || is_op(t, "[")) node = parse_subscript(ps, node);
        else if (is_op(t, "(")) node = parse_call(ps, node);
        else return node;
    }
}

/* name(.name)* as Jinja2 allows for filter and test names. */
static char *dotted_name(parser *ps) {
    const jinja_token *t = cur(ps);
    if (t->type != JT_NAME) unexpected(ps, "a name");
    ps->pos++;
    char buf[256];
    snprintf(buf, sizeof buf, "%.*s", (int)t->n, t->p);
    while (is_op(cur(ps), ".") && peek(ps, 1)->type == JT_NAME) {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof buf - len, ".%.*s", (int)peek(ps, 1)->n, peek(ps, 1)->p);
        ps->pos += 2;
    }
    char *s = ps_alloc(ps, strlen(buf) + 1);
    memcpy(s, buf, strlen(buf));
    return s;
}

static jinja_node *parse_filter(parser *ps, jinja_node *operand, bool start_inline) {
    for (;;) {
        if (!start_inline) {
            if (!is_op(cur(ps), "|")) return operand;
            ps->pos++;
        }
        start_inline = false;
        const jinja_token *at = cur(ps);
        jinja_node *n = new_node(ps, JN_FILTER, at);
        n->str = dotted_name(ps);
        n->fn = (const void *)jinja_find_filter(n->str);
        if (!n->fn) parse_fail(ps, at, "no filter named '%s'", n->str);
        n->a = operand;
        if (is_op(cur(ps), "(")) parse_call_args(ps, n);
        else n->kwnames = ps_alloc(ps, sizeof *n->kwnames);
        operand = n;
    }
}

static jinja_node *parse_test(parser *ps, jinja_node *operand) {
    const jinja_token *is_tok = cur(ps);
    ps->pos++; /* 'is' */
    bool negate = false;
    if (is_name(cur(ps), "not")) { negate = true; ps->pos++; }
    const jinja_token *at = cur(ps);
    jinja_node *n = new_node(ps, JN_TEST, is_tok);
    n->str = dotted_name(ps);
    n->fn = (const void *)jinja_find_test(n->str);
    if (!n->fn) parse_fail(ps, at, "no test named '%s'", n->str);
    n->a = operand;
    n->kwnames = ps_alloc(ps, sizeof *n->kwnames);
    const jinja_token *t = cur(ps);
    if (is_op(t, "(")) {
        parse_call_args(ps, n);
    } else if ((t->type == JT_NAME || t->type == JT_STRING || t->type == JT_INT || t->type == JT_FLOAT ||
                is_op(t, "(") || is_op(t, "[") || is_op(t, "{")) &&
               !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and")) {
        if (is_name(t, "is")) parse_fail(ps, t, "you cannot chain multiple tests with is");
        node_vec args = {0};
        vec_push(ps, &args, parse_postfix(ps, parse_primary(ps)));
        n->items = vec_done(&args);
    }
    if (!negate) return n;
    jinja_node *not = new_node(ps, JN_NOT, is_tok);
    not->a = n;
    return not;
}

static jinja_node *parse_filter_expr(parser *ps, jinja_node *node) {
    for (;;) {
        const jinja_token *t = cur(ps);
        if (is_op(t, "|")) node = parse_filter(ps, node, false);
        else if (is_name(t, "is")) node = parse_test(ps, node);
        else if (is_op(t, "(")) node = parse_call(ps, node);
        else return node;
    }
}

/* ---- statements ---- */

static jinja_nodes parse_body(parser *ps, const char *const *ends);

static bool is_end(const jinja_token *t, const char *const *ends) {
    for (size_t i = 0; ends && ends[i]; i++)
        if (is_name(t, ends[i])) return true;
    return false;
}

/* Body up to one of ends; leaves the end name as the current token. */
static jinja_nodes parse_statements(parser *ps, const char *const *ends, const jinja_token *opener) {
    expect_type(ps, JT_BLOCK_END, "end of statement block");
    jinja_nodes body = parse_body(ps, ends);
    size_t last = 0;
    while (ends[last + 1]) last++;
    if (cur(ps)->type == JT_EOF)
        parse_fail(ps, opener, "unexpected end of template: '%.*s' is never closed (looking for '%s')",
                   (int)opener->n, opener->p, ends[last]);
    return body;
}

static jinja_node *parse_assign_target(parser *ps, bool with_tuple, bool with_namespace, const char *extra_end) {
    const jinja_token *t = cur(ps);
    jinja_node *target;
    if (with_namespace && t->type == JT_NAME && is_op(peek(ps, 1), ".") && peek(ps, 2)->type == JT_NAME) {
        target = new_node(ps, JN_NSREF, t);
        target->str = tok_text(ps, t);
        target->str_n = t->n;
        target->str2 = tok_text(ps, peek(ps, 2));
        ps->pos += 3;
        return target;
    }
    if (with_tuple) target = parse_tuple(ps, true, true, extra_end, false);
    else target = parse_primary(ps);
    bool ok = target->kind == JN_NAME;
    if (target->kind == JN_TUPLE) {
        ok = true;
        for (size_t i = 0; i < target->items.n; i++)
            if (target->items.v[i]->kind != JN_NAME) ok = false;
    }
    if (!ok) parse_fail(ps, t, "can't assign to this expression");
    return target;
}

static jinja_node *parse_for(parser *ps, const jinja_token *at) {
    jinja_node *n = new_node(ps, JN_FOR, at);
    n->a = parse_assign_target(ps, true, false, "in");
    expect_name(ps, "in");
    n->b = parse_tuple(ps, false, false, "recursive", false);
    if (is_name(cur(ps), "if")) {
        ps->pos++;
        n->c = parse_expression(ps);
    }
    if (is_name(cur(ps), "recursive")) parse_fail(ps, cur(ps), "recursive loops are not supported");
    static const char *const body_end[] = {"endfor", "else", NULL};
    static const char *const else_end[] = {"endfor", NULL};
    ps->loop_depth++;
    n->body = parse_statements(ps, body_end, at);
    ps->loop_depth--;
    if (is_name(cur(ps), "else")) {
        ps->pos++;
        n->orelse = parse_statements(ps, else_end, at);
    }
    ps->pos++;
    return n;
}

static jinja_node *parse_if(parser *ps, const jinja_token *at) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    static const char *const else_end[] = {"endif", NULL};
    jinja_node *n = new_node(ps, JN_IF, at);
    n->a = parse_tuple(ps, false, true, NULL, false);
    n->body = parse_statements(ps, ends, at);
    const jinja_token *t = cur(ps);
    ps->pos++;
    if (is_name(t, "elif")) {
        node_vec orelse = {0};
        vec_push(ps, &orelse, parse_if(ps, t));
        n->orelse = vec_done(&orelse);
        return n; /* the nested if consumed endif */
    }
    if (is_name(t, "else")) {
        n->orelse = parse_statements(ps, else_end, at);
        ps->pos++;
    }
    return n;
}

static jinja_node *parse_set(parser *ps, const jinja_token *at) {
    jinja_node *target = parse_assign_target(ps, true, true, NULL);
    if (is_op(cur(ps), "=")) {
        ps->pos++;
        jinja_node *n = new_node(ps, JN_SET, at);
        n->a = target;
        n->b = parse_tuple(ps, false, true, NULL, false);
        return n;
    }
    static const char *const ends[] = {"endset", NULL};
    jinja_node *n = new_node(ps, JN_SET_BLOCK, at);
    if (target->kind == JN_TUPLE) parse_fail(ps, at, "a block set needs a single name");
    n->a = target;
    if (is_op(cur(ps), "|")) n->c = parse_filter(ps, NULL, false);
    n->body = parse_statements(ps, ends, at);
    ps->pos++;
    return n;
}

/* (a, b=default, ...) for macro and call-block signatures. */
static void parse_signature(parser *ps, jinja_node *n) {
    node_vec params = {0}, defaults = {0};
    expect_op(ps, "(");
    bool seen_default = false;
    while (!is_op(cur(ps), ")")) {
        if (params.n) expect_op(ps, ",");
        const jinja_token *t = cur(ps);
        jinja_node *p = parse_assign_target(ps, false, false, NULL);
        jinja_node *def = NULL;
        if (is_op(cur(ps), "=")) {
            ps->pos++;
            def = parse_expression(ps);
            seen_default = true;
        } else if (seen_default) {
            parse_fail(ps, t, "non-default argument follows default argument");
        }
        vec_push(ps, &params, p);
        vec_push(ps, &defaults, def);
    }
    expect_op(ps, ")");
    n->params = vec_done(&params);
    n->defaults = vec_done(&defaults);
}

/* A macro's or call block's body up to its end tag (consumed): `loop` and
 * break/continue of an enclosing for do not reach inside it. */
static jinja_nodes parse_body_outside_loops(parser *ps, const char *const *ends, const jinja_token *at) {
    int saved = ps->loop_depth;
    ps->loop_depth = 0;
    jinja_nodes body = parse_statements(ps, ends, at);
    ps->loop_depth = saved;
    ps->pos++;
    return body;
}

static jinja_node *parse_macro(parser *ps, const jinja_token *at) {
    static const char *const ends[] = {"endmacro", NULL};
    jinja_node *n = new_node(ps, JN_MACRO, at);
    const jinja_token *name = cur(ps);
    if (name->type != JT_NAME) unexpected(ps, "a macro name");
    ps->pos++;
    n->str = tok_text(ps, name);
    n->str_n = name->n;
    parse_signature(ps, n);
    n->body = parse_body_outside_loops(ps, ends, at);
    return n;
}

static jinja_node *parse_call_block(parser *ps, const jinja_token *at) {
    static const char *const ends[] = {"endcall", NULL};
    jinja_node *n = new_node(ps, JN_CALL_BLOCK, at);
    if (is_op(cur(ps), "(")) parse_signature(ps, n);
    const jinja_token *t = cur(ps);
    n->a = parse_expression(ps);
    if (n->a->kind != JN_CALL) parse_fail(ps, t, "expected a call after 'call'");
    n->body = parse_body_outside_loops(ps, ends, at);
    return n;
}

static jinja_node *parse_filter_block(parser *ps, const jinja_token *at) {
    static const char *const ends[] = {"endfilter", NULL};
    jinja_node *n = new_node(ps, JN_FILTER_BLOCK, at);
    n->c = parse_filter(ps, NULL, true);
    n->body = parse_statements(ps, ends, at);
    ps->pos++;
    return n;
}

static jinja_node *parse_with(parser *ps, const jinja_token *at) {
    static const char *const ends[] = {"endwith", NULL};
    jinja_node *n = new_node(ps, JN_WITH, at);
    node_vec targets = {0}, values = {0};
    while (cur(ps)->type != JT_BLOCK_END) {
        if (targets.n) expect_op(ps, ",");
        vec_push(ps, &targets, parse_assign_target(ps, false, false, NULL));
        expect_op(ps, "=");
        vec_push(ps, &values, parse_expression(ps));
    }
    n->params = vec_done(&targets);
    n->defaults = vec_done(&values);
    n->body = parse_statements(ps, ends, at);
    ps->pos++;
    return n;
}

static jinja_node *parse_scope_tag(parser *ps, const jinja_token *at, const char *end) {
    const char *ends[] = {end, NULL};
    jinja_node *n = new_node(ps, JN_SCOPE, at);
    n->body = parse_statements(ps, ends, at);
    ps->pos++;
    return n;
}

static jinja_node *parse_statement(parser *ps) {
    const jinja_token *t = cur(ps);
    if (t->type != JT_NAME) unexpected(ps, "a statement name");
    ps->pos++;
    enter(ps);
    jinja_node *n;
    if (is_name(t, "for")) n = parse_for(ps, t);
    else if (is_name(t, "if")) n = parse_if(ps, t);
    else if (is_name(t, "set")) n = parse_set(ps, t);
    else if (is_name(t, "macro")) n = parse_macro(ps, t);
    else if (is_name(t, "call")) n = parse_call_block(ps, t);
    else if (is_name(t, "filter")) n = parse_filter_block(ps, t);
    else if (is_name(t, "with")) n = parse_with(ps, t);
    else if (is_name(t, "generation")) n = parse_scope_tag(ps, t, "endgeneration");
    else if (is_name(t, "break") || is_name(t, "continue")) {
        if (!ps->loop_depth) parse_fail(ps, t, "'%.*s' outside of a loop", (int)t->n, t->p);
        n = new_node(ps, is_name(t, "break") ? JN_BREAK : JN_CONTINUE, t);
    } else if (is_name(t, "include") || is_name(t, "extends") || is_name(t, "import") || is_name(t, "from") ||
               is_name(t, "block") || is_name(t, "do") || is_name(t, "autoescape") || is_name(t, "trans")) {
        parse_fail(ps, t, "'%.*s' is not supported in chat templates", (int)t->n, t->p);
    } else {
        parse_fail(ps, t, "encountered unknown tag '%.*s'", (int)t->n, t->p);
    }
    ps->depth--;
    expect_type(ps, JT_BLOCK_END, "end of statement block");
    return n;
}

static jinja_nodes parse_body(parser *ps, const char *const *ends) {
    node_vec body = {0};
    for (;;) {
        const jinja_token *t = cur(ps);
        if (t->type == JT_EOF) break;
        if (t->type == JT_DATA) {
            jinja_node *n = new_node(ps, JN_DATA, t);
            n->str = t->p;
            n->str_n = t->n;
            vec_push(ps, &body, n);
            ps->pos++;
        } else if (t->type == JT_VAR_BEGIN) {
            ps->pos++;
            jinja_node *n = new_node(ps, JN_OUTPUT, t);
            n->a = parse_tuple(ps, false, true, NULL, false);
            expect_type(ps, JT_VAR_END, "end of print statement");
            vec_push(ps, &body, n);
        } else if (t->type == JT_BLOCK_BEGIN) {
            ps->pos++;
            if (is_end(cur(ps), ends)) break;
            const jinja_token *name = cur(ps);
            if (name->type == JT_NAME && name->n >= 3 &&
                (memcmp(name->p, "end", 3) == 0 || is_name(name, "else") || is_name(name, "elif")))
                parse_fail(ps, name, "unexpected '%.*s'%s", (int)name->n, name->p,
                           ends ? "" : " (no block is open)");
            vec_push(ps, &body, parse_statement(ps));
        } else {
            unexpected(ps, "template data or a tag");
        }
    }
    return vec_done(&body);
}

int jinja_parse(const jinja_tokens *toks, jinja_arena *arena, jinja_nodes *out, sl_err *err) {
    parser ps = {.toks = toks, .arena = arena, .err = err};
    if (setjmp(ps.fail)) return err ? err->code : SL_EINVAL;
    *out = parse_body(&ps, NULL);
    if (cur(&ps)->type != JT_EOF) unexpected(&ps, "end of template");
    return 0;
}
