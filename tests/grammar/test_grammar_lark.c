/* test_grammar_lark.c -- the Lark front end (src/grammar/lark.c) and
 * sl_grammar_parse_any: errors with their line and column (SL_ENOTSUP for
 * constructs outside the subset), every construct against accepted and
 * refused strings, %ignore, each common-library terminal, a JSON-like
 * grammar whose random outputs jansson must parse, vLLM's SQL examples,
 * GBNF and Lark texts of one language agreeing on random strings generated
 * from either (and mutations of them), choosing the syntax, and random
 * mutations of grammar texts (errors, never a crash). */
#include <stdio.h>

#include "grammar_test_util.h"
#include "test.h"

#define STRS(...) ((const char *const[]){__VA_ARGS__, NULL})

static sl_grammar *lark(const char *text) {
    sl_err err = {0};
    sl_grammar *g = NULL;
    if (sl_grammar_parse_lark(text, strlen(text), &g, &err)) fprintf(stderr, "lark: %s\n", err.msg);
    return g;
}

static sl_grammar *any(const char *text) {
    sl_err err = {0};
    sl_grammar *g = NULL;
    if (sl_grammar_parse_any(text, strlen(text), &g, &err)) fprintf(stderr, "any: %s\n", err.msg);
    return g;
}

/* 1: the bytes are a complete sentence, 0: a live prefix, -1: refused. */
static int match_n(const sl_grammar *g, const uint8_t *s, size_t n) {
    sl_matcher *m;
    if (sl_matcher_create(g, 0, &m, NULL)) return -2;
    int rc = sl_matcher_accept(m, s, n, NULL);
    int r = rc < 0 ? -2 : rc != 1 ? -1 : sl_matcher_is_accepting(m) ? 1 : 0;
    sl_matcher_free(m);
    return r;
}

static int match(const sl_grammar *g, const char *s) { return match_n(g, (const uint8_t *)s, strlen(s)); }

/* g accepts every string of yes as a whole and none of no. */
static void check_strings(const sl_grammar *g, const char *what, const char *const *yes, const char *const *no) {
    CHECK(g != NULL);
    if (!g) return;
    for (; yes && *yes; yes++)
        if (match(g, *yes) != 1) {
            fprintf(stderr, "  %s: should accept \"%s\" (got %d)\n", what, *yes, match(g, *yes));
            test_case_failed_ = 1;
        }
    for (; no && *no; no++)
        if (match(g, *no) == 1) {
            fprintf(stderr, "  %s: should refuse \"%s\"\n", what, *no);
            test_case_failed_ = 1;
        }
}

static void check_lark(const char *text, const char *const *yes, const char *const *no) {
    sl_grammar *g = lark(text);
    check_strings(g, text, yes, no);
    sl_grammar_free(g);
}

/* ---- errors ------------------------------------------------------------------ */

static void lark_error(const char *text, int code, const char *needle) {
    sl_err err = {0};
    sl_grammar *g = NULL;
    int rc = sl_grammar_parse_lark(text, strlen(text), &g, &err);
    CHECK(g == NULL);
    if (rc != code || !strstr(err.msg, needle)) {
        fprintf(stderr, "  for %s\n  got %d \"%s\"\n  want %d \"%s\"\n", text, rc, err.msg, code, needle);
        test_case_failed_ = 1;
    }
    sl_grammar_free(g);
}

static void test_lark_errors(void) {
    int E = SL_EINVAL, U = SL_ENOTSUP;
    lark_error("start: \"a\" b\n", E, "lark grammar: line 1, column 12: 'b' is used but never defined");
    lark_error("start: \"abc\n", E, "line 1, column 8: unterminated string");
    lark_error("start: (\"a\" | \"b\"\n", E, "line 2, column 1: expected ')' to close the '(' at line 1, column 8");
    lark_error("start: [\"a\"\n  | \"b\")\n", E, "line 2, column 8: expected ']' to close the '['");
    lark_error("start: \"a\" ~ 3..2\n", E, "line 1, column 12: repetition ~ 3..2 has max below min");
    lark_error("start = \"a\"\n", E, "line 1, column 7: expected ':' after 'start', found '='");
    lark_error("a: \"x\"\n", E, "no rule named 'start'");
    lark_error("start: \"a\"\nstart: \"b\"\n", E, "line 2, column 1: 'start' is defined twice");
    lark_error("start: * \"a\"\n", E, "line 1, column 8: unexpected '*'");
    lark_error("start: \"a\" )\n", E, "line 1, column 12: unexpected ')'");
    lark_error("start: \"a\"\n  \"b\"\n", E, "line 2, column 3: expected a rule or terminal name, found '\"'");
    lark_error("start: 5\n", E, "line 1, column 8: expected a rule or terminal name, found '5'");
    lark_error("start: myRule\n", E, "line 1, column 8: 'myRule' mixes cases");
    lark_error("?START: \"a\"\n", E, "'?' and '!' apply to rules");
    lark_error("start.x: \"a\"\n", E, "line 1, column 7: expected a number after '.'");
    lark_error("start: \"\"\n", E, "line 1, column 8: an empty string");
    lark_error("start: \"ab\"..\"z\"\n", E, "one character each");
    lark_error("start: \"z\"..\"a\"\n", E, "range end U+61 below its start U+7A");
    lark_error("start: \"\\x4\"\n", E, "line 1, column 12: expected 2 hex digits");
    lark_error("start: \"\\ud800\"\n", E, "not a Unicode scalar value");
    lark_error("start: \"a\" ~ 99999\n", E, "repetition count above");
    lark_error("start: /ab\n", E, "line 1, column 8: unterminated regex");
    lark_error("start: A\nA: a\na: \"x\"\n", E, "line 2, column 4: 'a' is a rule; terminals and %ignore may use only terminals");
    lark_error("start: x\nx: x \"a\"\n", E, "matches no finite string");
    lark_error("start: NUMBER\n", E, "line 1, column 8: 'NUMBER' is used but never defined (add %import common.NUMBER)");
    lark_error("%import common.FOO\nstart: FOO\n", E, "line 1, column 16: 'FOO' is not in the built-in common library (it has DIGIT, HEXDIGIT,");
    lark_error("%import common.number\n", E, "only terminals");
    lark_error("%import common (WS NUMBER)\n", E, "expected ',' or ')'");
    lark_error("%import common\n", E, "expected a module and a name");
    lark_error("%import common.WS\n%import common.WS\n", E, "line 2, column 16: 'WS' is defined twice");
    lark_error("start: \"a\"\n%foo\n", E, "line 2, column 1: unknown directive '%foo'");
    /* outside the subset: SL_ENOTSUP, naming the construct and its line */
    lark_error("start: /a(?=b)/\n", U, "line 1, column 8: in this regex: regex: at offset");
    lark_error("start: /(a)\\1/\n", U, "backreferences");
    lark_error("start: /a/m\n", U, "line 1, column 11: the regex flag 'm' is not supported");
    lark_error("start: /a/x\n", U, "the regex flag 'x'");
    lark_error("start: sep{\"a\"}\n", U, "line 1, column 8: templates ('sep{...}') are not supported");
    lark_error("start: \"a\"\n_sep{x}: x\n", U, "line 2, column 1: templates");
    lark_error("start: \"a\"\n%declare FOO\n", U, "line 2, column 1: %declare is not supported");
    lark_error("%override start: \"a\"\n", U, "line 1, column 1: %override is not supported");
    lark_error("%extend start: \"a\"\n", U, "%extend is not supported");
    lark_error("%import python.NAME\nstart: NAME\n", U, "line 1, column 1: %import from 'python' is not supported");
    lark_error("%import .local.X\n", U, "relative imports");

    char deep[1024] = "start: ";
    for (int i = 0; i < 300; i++) strcat(deep, "(");
    lark_error(deep, E, "nested deeper than 200");

    /* n_bytes bounds the text: no reading past it */
    sl_err err = {0};
    sl_grammar *g = NULL;
    CHECK(sl_grammar_parse_lark("start: \"ab\"", 10, &g, &err) == SL_EINVAL);
    CHECK_CONTAINS(err.msg, "unterminated string");
    CHECK(g == NULL);
}

/* ---- constructs ---------------------------------------------------------------- */

static void test_lark_constructs(void) {
    /* alternatives, continuation lines, comments, empty alternative */
    check_lark("start: \"ab\" | \"c\"  // a comment\n"
               "    | \"d\" \"e\"\n"
               "  # another comment\n\n"
               "  | \"f\" |\n",
               STRS("ab", "c", "de", "f", ""), STRS("a", "abc", "d", "fab"));
    /* groups, [ ] and ? */
    check_lark("start: \"a\" (\"b\" | \"c\")? [\"d\" \"e\"] \"f\"\n", STRS("af", "abf", "acdef", "adef"),
               STRS("abcf", "adf", "abdf"));
    /* * + ~n ~n..m, on literals, groups and with spaces around the operators */
    check_lark("start: \"a\"* \"b\"+ \"c\" ~ 2 \"d\"~1..3 (\"e\" \"f\") ~ 0..1\n",
               STRS("bccd", "aabbbccddd", "bccdef"), STRS("bcd", "bccdddd", "ccd", "bccde", "bccdefef"));
    check_lark("start: \"ab\"~0 \"x\"\n", STRS("x"), STRS("abx"));
    /* string escapes as Python reads them; an unknown escape keeps its backslash */
    check_lark("start: \"\\n\\t\\r\\f\\\"\\\\\" \"\\x41\\u00e9\\U0001F600\" \"\\d\\q\"\n",
               STRS("\n\t\r\f\"\\A\xc3\xa9\xf0\x9f\x98\x80\\d\\q"), STRS("\n\t\r\f\"\\A\xc3\xa9\xf0\x9f\x98\x80" "dq"));
    check_lark("start: \"caf\xc3\xa9\"\n", STRS("caf\xc3\xa9"), STRS("cafe"));
    /* the i flag on strings and regexes */
    check_lark("start: \"SeLect\"i \" \" NAME\nNAME: /[a-z]+/i\n", STRS("select x", "SELECT ABC", "sElEcT aBc"),
               STRS("selec x", "select 1", "select"));
    /* regexes: classes, counts, escaped slashes, quotes, flags */
    check_lark("start: /\\d{2,3}-[a-f]+/\n", STRS("12-a", "123-fed"), STRS("1-a", "12-g", "1234-a"));
    check_lark("start: /a.c/s\n", STRS("abc", "a\nc"), STRS("ac"));
    check_lark("start: /a.c/u\n", STRS("abc", "a\xc3\xa9" "c"), STRS("a\nc"));
    check_lark("start: /[.]x\\.[]a]/s\n", STRS(".x.a", ".x.]"), STRS("ax.a", "\nx.a", ".xaa"));
    check_lark("start: /(ab)+/i \"!\"\n", STRS("AbaB!", "ab!"), STRS("aba!", "!"));
    check_lark("start: /\\/\\/ \"q\"/\n", STRS("// \"q\""), STRS("//"));
    check_lark("start: /x|y/ /z*/\n", STRS("x", "yzzz"), STRS("xy", "z"));
    /* literal ranges, also of escaped and non-ASCII characters */
    check_lark("start: (\"a\"..\"c\" | \"\\u00e0\"..\"\\u00e5\")+\n", STRS("abc", "\xc3\xa0\xc3\xa5", "b\xc3\xa2"),
               STRS("d", "\xc3\xa6", ""));
    /* terminals made of terminals, used from rules */
    check_lark("start: ID (\",\" ID)*\nID: LET (LET | DIG)*\nLET: \"a\"..\"z\"\nDIG: \"0\"..\"9\"\n",
               STRS("a1b2", "x,y9"), STRS("1a", "a,", "A"));
    /* prefixes, priorities and aliases change nothing here */
    check_lark("?start: item+ -> items\n!item.2: \"x\" -> ex\n  | \"y\"\n?!other: \"z\"\nTERM.-1: \"t\"\n_T2.+3: \"u\"\n",
               STRS("x", "xyx"), STRS("xz", "t", ""));
    /* a backslash joins lines; CRLF line ends; indented definitions */
    check_lark("start: \"a\" \\\n  \"b\"\r\n  | \"c\"\r\n", STRS("ab", "c"), STRS("a"));
    check_lark("\n    start: a\n\n    a: \"x\"\n", STRS("x"), NULL);
    /* definitions in any order; a rule used before it is defined */
    check_lark("b: \"y\"\nstart: a b\na: \"x\"\n", STRS("xy"), STRS("x"));
}

/* ---- %ignore --------------------------------------------------------------------- */

static void test_lark_ignore(void) {
    /* before the tokens of rules: between them and before the first; not
     * inside terminals, not after the last token */
    check_lark("start: \"a\" \"b\" CD\nCD: \"c\" \"d\"\n%ignore \" \"\n", STRS("abcd", "a bcd", "a    b  cd", "  abcd"),
               STRS("abcd ", "abc d", "a\tbcd"));
    /* between the copies of a repetition, and inside groups at any depth */
    check_lark("start: \"x\"+ \";\" \"y\"~3 (\"(\" (\"a\" \"b\")* \")\")?\n%ignore WS\n%import common.WS\n",
               STRS("x x\n\tx ; y y y", "xx;yyy", "x;yyy ( a b a b )", "x;yyy(abab)", "\n x;yyy"),
               STRS("x;yy", "x;y y y y", "x;yyy(a b a)", "x;yyy ( a b ) "));
    check_lark("start: \"<\" \"a\"~2..3 \">\"\n%ignore \" \"\n", STRS("<aa>", "< a a a >"), STRS("< a >", "<a a a a>"));
    /* several %ignore directives: any run of them; %ignore before the rules */
    check_lark("%ignore \" \"\n%ignore /#[^\\n]*\\n/ | \"\\t\"\nstart: \"a\" \"b\"\n", STRS("a b", "a #c\n b", "a\t #x\n\t b"),
               STRS("a #c b"));
    /* %ignore of a terminal made of others, imported under an alias */
    check_lark("%import common.WS_INLINE -> SP\n%ignore SP\nstart: NAME \"=\" NAME\nNAME: /[a-z]+/\n",
               STRS("a=b", "a  = \tb"), STRS("a\n=b"));
    /* ignored x+ terminals side by side, and ignoring a rule-made x+ twice */
    check_lark("start: \"a\" \"b\"\n%ignore /[ ]+/\n%ignore /\\t/\n", STRS("a  \t \t\t  b"), STRS("a\nb"));
    /* long runs of ignored text, also around absent optional parts, stay
     * well within the matcher's item bound (the work is linear in the run) */
    static const char *long_runs[] = {
        "start: \"a\" \"b\"\n%import common.WS\n%ignore WS\n",
        "start: \"a\" [\"c\"] (\"d\" \"e\")* \"b\"\n%import common.WS\n%ignore WS\n%ignore \"#\"\n",
        "start: \"a\" \"b\"\n%ignore \" \"\n",
    };
    for (size_t i = 0; i < sizeof long_runs / sizeof long_runs[0]; i++) {
        sl_grammar *g = lark(long_runs[i]);
        sl_matcher *m = NULL;
        CHECK(g && sl_matcher_create(g, 1u << 20, &m, NULL) == 0); /* a quarter of the default bound */
        static char s[20003];
        s[0] = 'a';
        memset(s + 1, ' ', 20000);
        s[20001] = 'b';
        CHECK(m && sl_matcher_accept(m, (const uint8_t *)s, 20002, NULL) == 1 && sl_matcher_is_accepting(m));
        sl_matcher_free(m);
        sl_grammar_free(g);
    }
}

/* ---- the common library ------------------------------------------------------- */

static void test_lark_common(void) {
    static const char *names[] = {"DIGIT", "HEXDIGIT", "INT", "SIGNED_INT", "DECIMAL", "FLOAT", "SIGNED_FLOAT", "NUMBER",
                                  "SIGNED_NUMBER", "ESCAPED_STRING", "LCASE_LETTER", "UCASE_LETTER", "LETTER", "WORD",
                                  "CNAME", "WS_INLINE", "WS", "CR", "LF", "NEWLINE", "SH_COMMENT", "CPP_COMMENT",
                                  "C_COMMENT", "SQL_COMMENT"};
    static const struct { const char *name, *text; int ok; } cases[] = {
        {"DIGIT", "7", 1}, {"DIGIT", "a", 0}, {"DIGIT", "12", 0},
        {"HEXDIGIT", "f", 1}, {"HEXDIGIT", "F", 1}, {"HEXDIGIT", "9", 1}, {"HEXDIGIT", "g", 0},
        {"INT", "0123", 1}, {"INT", "", 0}, {"INT", "-1", 0},
        {"SIGNED_INT", "-12", 1}, {"SIGNED_INT", "+3", 1}, {"SIGNED_INT", "4", 1}, {"SIGNED_INT", "--1", 0},
        {"DECIMAL", "1.5", 1}, {"DECIMAL", "1.", 1}, {"DECIMAL", ".5", 1}, {"DECIMAL", ".", 0}, {"DECIMAL", "1", 0},
        {"FLOAT", "1e5", 1}, {"FLOAT", "1.5E-3", 1}, {"FLOAT", ".5e+2", 1}, {"FLOAT", "1.5", 1}, {"FLOAT", "1", 0},
        {"FLOAT", "e5", 0}, {"SIGNED_FLOAT", "-1.5", 1}, {"SIGNED_FLOAT", "-1", 0},
        {"NUMBER", "42", 1}, {"NUMBER", "4.2e1", 1}, {"NUMBER", "-4", 0},
        {"SIGNED_NUMBER", "-4.2e1", 1}, {"SIGNED_NUMBER", "+7", 1}, {"SIGNED_NUMBER", "7e", 0},
        {"ESCAPED_STRING", "\"\"", 1}, {"ESCAPED_STRING", "\"a\\\"b\"", 1}, {"ESCAPED_STRING", "\"\\\\\"", 1},
        {"ESCAPED_STRING", "\"\xc3\xa9\\n\"", 1}, {"ESCAPED_STRING", "\"a\"b\"", 0}, {"ESCAPED_STRING", "\"a\\\"", 0},
        {"ESCAPED_STRING", "\"a\nb\"", 0},
        {"LCASE_LETTER", "q", 1}, {"LCASE_LETTER", "Q", 0}, {"UCASE_LETTER", "Q", 1}, {"UCASE_LETTER", "q", 0},
        {"LETTER", "z", 1}, {"LETTER", "Z", 1}, {"LETTER", "1", 0},
        {"WORD", "Hello", 1}, {"WORD", "he llo", 0}, {"WORD", "", 0},
        {"CNAME", "_x1", 1}, {"CNAME", "abc", 1}, {"CNAME", "1x", 0},
        {"WS_INLINE", " \t ", 1}, {"WS_INLINE", "\n", 0}, {"WS", " \n\t\r\f", 1}, {"WS", "", 0},
        {"CR", "\r", 1}, {"LF", "\n", 1}, {"NEWLINE", "\r\n\n", 1}, {"NEWLINE", "\r", 0},
        {"SH_COMMENT", "# hi", 1}, {"SH_COMMENT", "# a\nb", 0}, {"CPP_COMMENT", "// x", 1}, {"CPP_COMMENT", "/ x", 0},
        {"C_COMMENT", "/* a * b */", 1}, {"C_COMMENT", "/**/", 1}, {"C_COMMENT", "/***/", 1},
        {"C_COMMENT", "/* a\n */", 1}, {"C_COMMENT", "/* a */ b */", 0}, {"C_COMMENT", "/* a", 0},
        {"SQL_COMMENT", "-- x", 1}, {"SQL_COMMENT", "- x", 0},
    };
    /* one grammar: "NAME=" then that terminal, for every name */
    char text[4096] = "%import common (";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "%s%s", i ? ",\n  " : "", names[i]);
    strcat(text, ")\nstart: ");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "%s\"%s=\" %s", i ? "\n  | " : "", names[i], names[i]);
    strcat(text, "\n");
    sl_grammar *g = lark(text);
    CHECK(g != NULL);
    for (size_t i = 0; g && i < sizeof cases / sizeof cases[0]; i++) {
        char s[256];
        snprintf(s, sizeof s, "%s=%s", cases[i].name, cases[i].text);
        if ((match(g, s) == 1) != cases[i].ok) {
            fprintf(stderr, "  common.%s should %s \"%s\"\n", cases[i].name, cases[i].ok ? "accept" : "refuse", cases[i].text);
            test_case_failed_ = 1;
        }
    }
    sl_grammar_free(g);
    check_lark("%import common.NUMBER -> NUM\nstart: NUM\n", STRS("1.5"), STRS("x"));
    check_lark("%import common.SIGNED_NUMBER\nNUMBER: \"n\"\nstart: SIGNED_NUMBER NUMBER\n", STRS("-1.5n"), STRS("-1.5"));
}

/* ---- a JSON-like grammar and vLLM's examples -------------------------------- */

/* JSON as a client would write it for Lark, with JSON's own number and
 * string terminals (common's SIGNED_NUMBER and ESCAPED_STRING are looser:
 * "+1", ".5", "\\q"; WS takes form feeds); \\u escapes (to U+0040..U+007F) and exponents
 * are kept small so that jansson reads every output (no NUL, no lone
 * surrogate, no overflow). */
static const char *JSON_LARK =
    "start: value\n"
    "?value: dict\n"
    "      | list\n"
    "      | STRING\n"
    "      | NUMBER -> num\n"
    "      | \"true\" -> t | \"false\" -> f\n"
    "      | \"null\"\n"
    "list: \"[\" [value (\",\" value)*] \"]\"\n"
    "dict: \"{\" [member (\",\" member)*] \"}\"\n"
    "member: STRING \":\" value\n"
    "NUMBER: \"-\"? INT FRAC? EXP?\n"
    "INT: \"0\" | \"1\"..\"9\" DIGIT*\n"
    "FRAC: \".\" DIGIT+\n"
    "EXP: /[eE][+-]?[0-9]{1,2}/\n"
    "STRING: \"\\\"\" (/[^\"\\\\\\x00-\\x1f]/ | /\\\\[\"\\\\\\/bfnrt]/ | \"\\\\u00\" \"4\"..\"7\" HEXDIGIT)* \"\\\"\"\n"
    "JSON_WS: /[ \\t\\n\\r]+/\n"
    "%import common (DIGIT, HEXDIGIT)\n"
    "%ignore JSON_WS\n";

static void test_lark_json(void) {
    sl_grammar *g = lark(JSON_LARK);
    check_strings(g, "json", STRS("{\"a\": [1, -2.5e3, true, null], \"b\": {\"c\": \"d\\\"e\"}}", "[]", "{ }", "[ 1 ,\n 2 ]",
                              "\"x\"", "-0.5", "[[[]], {}]"),
                  STRS("{\"a\" 1}", "[1,]", "{'a': 1}", "[1 2]", "[1] ", "{\"a\":}", "tru", "+1", ".5", "01", "\"\\q\""));
    /* random outputs are JSON by jansson's reading */
    uint64_t rng = 7;
    sl_matcher *m = NULL;
    CHECK(g && sl_matcher_create(g, 0, &m, NULL) == 0);
    static uint8_t buf[4096];
    int n_ok = 0;
    for (int i = 0; m && i < 300; i++) {
        sl_matcher_rollback(m, sl_matcher_len(m));
        size_t n = 0;
        if (random_walk(m, &rng, sizeof buf, 0.3, buf, &n) != 1) continue;
        json_error_t je;
        json_t *v = json_loadb((const char *)buf, n, JSON_DECODE_ANY, &je);
        if (!v) {
            fprintf(stderr, "  json: not JSON (%s): %.*s\n", je.text, (int)n, buf);
            test_case_failed_ = 1;
        }
        n_ok += v != NULL;
        json_decref(v);
    }
    CHECK(n_ok > 200);
    sl_matcher_free(m);
    sl_grammar_free(g);
}

/* vLLM's documentation example (indented inside a Python string, as sent),
 * and its tests' SQL grammar in both syntaxes. */
static void test_lark_vllm(void) {
    check_lark("\n"
               "    ?start: select_statement\n\n"
               "    ?select_statement: \"SELECT \" column_list \" FROM \" table_name\n\n"
               "    ?column_list: column_name (\",\" column_name)*\n\n"
               "    ?table_name: identifier\n\n"
               "    ?column_name: identifier\n\n"
               "    ?identifier: /[a-zA-Z_][a-zA-Z0-9_]*/\n",
               STRS("SELECT username,email FROM users", "SELECT a FROM b"),
               STRS("SELECT username, email FROM users", "select a FROM b", "SELECT  FROM users", "SELECT 1a FROM b"));
    static const char *sql_lark = "\nstart: select_statement\n"
                                  "select_statement: \"SELECT\" column \"from\" table \"where\" condition\n"
                                  "column: \"col_1\" | \"col_2\"\n"
                                  "table: \"table_1\" | \"table_2\"\n"
                                  "condition: column \"=\" number\n"
                                  "number: \"1\" | \"2\"\n";
    static const char *sql_gbnf = "\nroot ::= select_statement\n"
                                  "select_statement ::= \"SELECT\" column \"from\" table \"where\" condition\n"
                                  "column ::= \"col_1\" | \"col_2\"\n"
                                  "table ::= \"table_1\" | \"table_2\"\n"
                                  "condition ::= column \"=\" number\n"
                                  "number ::= \"1\" | \"2\"\n";
    const char *const *yes = STRS("SELECTcol_1fromtable_2wherecol_2=1", "SELECTcol_2fromtable_1wherecol_1=2");
    const char *const *no = STRS("SELECT col_1 from table_1 where col_1 = 1", "SELECTcol_3fromtable_1wherecol_1=1");
    sl_grammar *g = any(sql_lark);
    check_strings(g, "sql (Lark)", yes, no);
    sl_grammar_free(g);
    g = any(sql_gbnf);
    check_strings(g, "sql (GBNF)", yes, no);
    sl_grammar_free(g);
}

/* ---- GBNF and Lark agree ---------------------------------------------------------- */

static const struct { const char *name, *gbnf, *lark; } SAME[] = {
    {"arithmetic",
     "root ::= expr\n"
     "expr ::= term ((\"+\" | \"-\") term)*\n"
     "term ::= factor ((\"*\" | \"/\") factor)*\n"
     "factor ::= [0-9]+ (\".\" [0-9]+)? | \"(\" expr \")\" | \"-\" factor\n",
     "?start: sum\n"
     "?sum: product | sum \"+\" product -> add | sum \"-\" product -> sub\n"
     "?product: atom\n"
     "    | product (\"*\"|\"/\") atom\n"
     "?atom: NUMBER | \"(\" sum \")\" | \"-\" atom\n"
     "NUMBER: /[0-9]+(\\.[0-9]+)?/\n"},
    {"list with %ignore",
     "root ::= s \"[\" s (item (s \",\" s item)*)? s \"]\"\n"
     "s ::= [ \\t]*\n"
     "item ::= [a-z]+ | \"\\\"\" [^\"]* \"\\\"\"\n",
     "start: \"[\" [item (\",\" item)*] \"]\"\n"
     "item: WORD_L | STR\n"
     "WORD_L: /[a-z]+/\n"
     "STR: /\"[^\"]*\"/\n"
     "%import common.WS_INLINE\n"
     "%ignore WS_INLINE\n"},
    {"keywords and counts",
     "root ::= [sS][eE][tT] \" \" [a-zA-Z_] [a-zA-Z_0-9]* \" = \" ( [0-9]{1,3} | \"0x\" [0-9a-fA-F]{2} )\n",
     "start: \"set\"i \" \" CNAME \" = \" (SMALL | HEX)\n"
     "SMALL: DIGIT ~ 1..3\n"
     "HEX: \"0x\" HEXDIGIT~2\n"
     "%import common (CNAME, DIGIT, HEXDIGIT)\n"},
    {"repetition with %ignore",
     "root ::= s x (s x){1,3} (s \"!\")?\n"
     "s ::= \" \"*\n"
     "x ::= \"ab\" | \"c\"\n",
     "start: (\"ab\" | \"c\") ~ 2..4 \"!\"?\n"
     "%ignore \" \"\n"},
    {"strings and numbers",
     "root ::= val (\",\" val)*\n"
     "val ::= \"\\\"\" ( [^\"\\\\\\n] | \"\\\\\" [^\\n] )* \"\\\"\" | [+-]? ( [0-9]+ exp | dec exp? | [0-9]+ )\n"
     "dec ::= [0-9]+ \".\" [0-9]* | \".\" [0-9]+\n"
     "exp ::= [eE] [+-]? [0-9]+\n",
     "start: val (\",\" val)*\n"
     "?val: ESCAPED_STRING | SIGNED_NUMBER\n"
     "%import common.ESCAPED_STRING\n"
     "%import common.SIGNED_NUMBER\n"},
};

/* A copy of s[0..n) with one random edit: a byte dropped, doubled or
 * replaced by one of the text's own bytes or a space. */
static size_t mutate(const uint8_t *s, size_t n, uint8_t *out, uint64_t *rng) {
    memcpy(out, s, n);
    if (n == 0) {
        out[0] = ' ';
        return 1;
    }
    size_t i = rng_below(rng, (uint32_t)n);
    switch (rng_below(rng, 3)) {
    case 0: memmove(out + i, out + i + 1, n - i - 1); return n - 1;
    case 1: memmove(out + i + 1, out + i, n - i); return n + 1;
    default: out[i] = rng_below(rng, 4) ? s[rng_below(rng, (uint32_t)n)] : ' '; return n;
    }
}

static void test_lark_same_as_gbnf(void) {
    uint64_t rng = 11;
    static uint8_t buf[4096], mut[4097];
    for (size_t k = 0; k < sizeof SAME / sizeof SAME[0]; k++) {
        sl_grammar *gs[2] = {any(SAME[k].gbnf), lark(SAME[k].lark)};
        CHECK(gs[0] && gs[1]);
        int compared = 0, accepted = 0;
        for (int from = 0; from < 2 && gs[0] && gs[1]; from++) {
            sl_matcher *m;
            if (sl_matcher_create(gs[from], 0, &m, NULL)) break;
            for (int i = 0; i < 300; i++) {
                sl_matcher_rollback(m, sl_matcher_len(m));
                size_t n = 0;
                int w = random_walk(m, &rng, 200, 0.25, buf, &n);
                CHECK(w >= 0);
                for (int t = 0; t < 3; t++) {
                    const uint8_t *s = t == 0 ? buf : mut;
                    size_t len = t == 0 ? n : mutate(buf, n, mut, &rng);
                    int a = match_n(gs[0], s, len), b = match_n(gs[1], s, len);
                    compared++;
                    accepted += a == 1;
                    if (a != b) {
                        fprintf(stderr, "  %s: GBNF %d, Lark %d on \"%.*s\"\n", SAME[k].name, a, b, (int)len, s);
                        test_case_failed_ = 1;
                    }
                }
            }
            sl_matcher_free(m);
        }
        fprintf(stderr, "  %s: %d strings compared, %d accepted\n", SAME[k].name, compared, accepted);
        CHECK(accepted > 300 && accepted < compared);
        sl_grammar_free(gs[0]);
        sl_grammar_free(gs[1]);
    }
}

/* ---- choosing the syntax ---------------------------------------------------------- */

static void any_error(const char *text, int code, const char *needle1, const char *needle2) {
    sl_err err = {0};
    sl_grammar *g = NULL;
    int rc = sl_grammar_parse_any(text, strlen(text), &g, &err);
    CHECK_EQ_INT(rc, code);
    CHECK(g == NULL);
    CHECK_CONTAINS(err.msg, needle1);
    CHECK_CONTAINS(err.msg, needle2);
}

static void test_parse_any(void) {
    sl_grammar *g = any("root ::= \"a\" x\nx ::= \"b\"\n");
    check_strings(g, "gbnf", STRS("ab"), STRS("a"));
    sl_grammar_free(g);
    g = any("  # comment\n  root::=[0-9]+\n");
    check_strings(g, "gbnf, indented", STRS("12"), NULL);
    sl_grammar_free(g);
    g = any("start: \"::=\" x\nx: \"root ::= y\"\n// r ::= s\n");
    check_strings(g, "lark with ::= inside", STRS("::=root ::= y"), NULL);
    sl_grammar_free(g);
    any_error("root ::= \"a\" b\n", SL_EINVAL, "read as GBNF (a line defines a rule with '::=')",
              "line 1, column 14: rule 'b' is used but never defined");
    any_error("start: \"a\" b\n", SL_EINVAL, "read as Lark (no line defines a rule with '::=', so not GBNF)",
              "line 1, column 12: 'b' is used but never defined");
    any_error("start: \"a\"\n%declare X\n", SL_ENOTSUP, "read as Lark", "line 2, column 1: %declare is not supported");
    any_error("", SL_EINVAL, "read as Lark", "no rule named 'start'");
}

/* ---- robustness -------------------------------------------------------------------- */

/* Mutated and truncated grammar texts: 0 with a grammar, or an error code
 * with a message and no grammar (run under the sanitizers in the Sanitize build). */
static void test_lark_mutations(void) {
    const char *texts[] = {JSON_LARK, SAME[0].lark, SAME[1].lark, SAME[2].lark, SAME[4].lark,
                           "start: /a.c/si \"x\"i ~ 2..3 [\"a\"..\"z\"] -> q\n%ignore \" \"\n"};
    uint64_t rng = 5;
    static uint8_t mut[4096];
    int parsed = 0, refused = 0;
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        size_t n = strlen(texts[t]);
        for (int i = 0; i < 400; i++) {
            size_t len = n;
            memcpy(mut, texts[t], n);
            for (int e = 1 + (int)rng_below(&rng, 3); e > 0; e--) len = mutate(mut, len, mut, &rng);
            if (i % 10 == 0) len = rng_below(&rng, (uint32_t)n); /* a truncation */
            sl_err err = {0};
            sl_grammar *g = NULL;
            int rc = sl_grammar_parse_lark((const char *)mut, len, &g, &err);
            CHECK(rc <= 0 && (rc == 0) == (g != NULL));
            if (rc) CHECK(err.msg[0] != '\0');
            parsed += rc == 0;
            refused += rc != 0;
            sl_grammar_free(g);
        }
    }
    fprintf(stderr, "  %d mutated texts parsed, %d refused\n", parsed, refused);
    CHECK(parsed > 0 && refused > 0);
}

int main(void) {
    TEST_RUN(test_lark_errors);
    TEST_RUN(test_lark_constructs);
    TEST_RUN(test_lark_ignore);
    TEST_RUN(test_lark_common);
    TEST_RUN(test_lark_json);
    TEST_RUN(test_lark_vllm);
    TEST_RUN(test_lark_same_as_gbnf);
    TEST_RUN(test_parse_any);
    TEST_RUN(test_lark_mutations);
    TEST_EXIT();
}
