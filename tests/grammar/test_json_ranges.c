/* test_json_ranges.c -- integer bounds in JSON schemas (minimum, maximum and
 * their exclusive forms) are exact: for ranges around interesting values,
 * every integer in a window around each bound is accepted iff it lies in the
 * range, leading zeros and "-0" never are, and bounds on numbers other than
 * minimum 0 are refused by name. (grammar_jsonschema checks random outputs of
 * schemas/ranges.json with Python's jsonschema.) */
#include <jansson.h>
#include <stdio.h>

#include "grammar/json_schema.h"
#include "grammar/matcher.h"
#include "test.h"
#include "util/error.h"

static sl_grammar *compile_text(const char *schema_text, sl_err *err) {
    json_t *s = json_loads(schema_text, 0, NULL);
    sl_grammar *g = NULL;
    int rc = sl_grammar_from_json_schema(s, &g, err);
    json_decref(s);
    return rc ? NULL : g;
}

static int accepts(sl_matcher *m, const char *text) {
    sl_matcher_rollback(m, sl_matcher_len(m));
    return sl_matcher_accept(m, (const uint8_t *)text, strlen(text), NULL) == 1 && sl_matcher_is_accepting(m);
}

/* has_lo/has_hi: whether the bound is there; the schema uses minimum/maximum, or the exclusive forms. */
static void check_range(long long lo, int has_lo, long long hi, int has_hi, int exclusive) {
    char schema[256], num[40];
    int n = snprintf(schema, sizeof schema, "{\"type\":\"integer\"");
    if (has_lo) n += snprintf(schema + n, sizeof schema - (size_t)n, ",\"%s\":%lld", exclusive ? "exclusiveMinimum" : "minimum", exclusive ? lo - 1 : lo);
    if (has_hi) n += snprintf(schema + n, sizeof schema - (size_t)n, ",\"%s\":%lld", exclusive ? "exclusiveMaximum" : "maximum", exclusive ? hi + 1 : hi);
    snprintf(schema + n, sizeof schema - (size_t)n, "}");
    sl_err err = {0};
    sl_grammar *g = compile_text(schema, &err);
    if (!g) fprintf(stderr, "%s: %s\n", schema, err.msg);
    CHECK(g != NULL);
    if (!g) return;
    sl_matcher *m;
    CHECK_EQ_INT(sl_matcher_create(g, 0, &m, NULL), 0);
    const long long probes[] = {lo, hi, 0, 1, -1, 9, 10, 99, 100, -9, -10, -100, 1000, -1000};
    int bad = 0;
    for (size_t p = 0; p < sizeof probes / sizeof probes[0] && bad < 5; p++)
        for (long long v = probes[p] - 120; v <= probes[p] + 120 && bad < 5; v++) {
            snprintf(num, sizeof num, "%lld", v);
            const int want = (!has_lo || v >= lo) && (!has_hi || v <= hi);
            if (accepts(m, num) != want) {
                fprintf(stderr, "%s: %s %s\n", schema, num, want ? "refused" : "accepted");
                bad++;
            }
        }
    CHECK_EQ_INT(bad, 0);
    CHECK(!accepts(m, "-0"));
    snprintf(num, sizeof num, "0%lld", has_lo && lo > 0 ? lo : 5);
    CHECK(!accepts(m, num)); /* a leading zero */
    sl_matcher_free(m);
    sl_grammar_free(g);
}

static void test_integer_ranges(void) {
    const long long bounds[] = {-1000000, -10001, -999, -100, -57, -10, -1, 0, 1, 7, 9, 10, 19, 99, 100, 101, 150,
                                899, 1000, 1900, 2099, 9999, 10000, 123456};
    const int nb = (int)(sizeof bounds / sizeof bounds[0]);
    for (int i = 0; i < nb; i++)
        for (int j = i; j < nb; j++) check_range(bounds[i], 1, bounds[j], 1, (i + j) % 2);
    for (int i = 0; i < nb; i++) {
        check_range(bounds[i], 1, 0, 0, i % 2); /* no maximum */
        check_range(0, 0, bounds[i], 1, i % 2); /* no minimum */
    }
}

static void test_refusals(void) {
    const struct {
        const char *schema, *needle;
        int rc;
    } cases[] = {
        {"{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "no value", SL_EINVAL},
        {"{\"type\":\"integer\",\"minimum\":\"5\"}", "must be a number", SL_EINVAL},
        {"{\"type\":\"integer\",\"maximum\":1e19}", "beyond 1e18", SL_ENOTSUP},
        {"{\"type\":\"number\",\"maximum\":10}", "a bound on a number", SL_ENOTSUP},
        {"{\"type\":\"number\",\"minimum\":0.5}", "a bound on a number", SL_ENOTSUP},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_err err = {0};
        sl_grammar *g = compile_text(cases[i].schema, &err);
        CHECK(g == NULL);
        CHECK_EQ_INT(err.code, cases[i].rc);
        if (!strstr(err.msg, cases[i].needle)) fprintf(stderr, "%s: %s\n", cases[i].schema, err.msg);
        CHECK(strstr(err.msg, cases[i].needle) != NULL);
        sl_grammar_free(g);
    }
}

/* minimum 0 on a number: no sign, anything else a JSON number allows. */
static void test_nonnegative_number(void) {
    sl_err err = {0};
    sl_grammar *g = compile_text("{\"type\":\"number\",\"minimum\":0}", &err);
    CHECK(g != NULL);
    sl_matcher *m;
    CHECK_EQ_INT(sl_matcher_create(g, 0, &m, NULL), 0);
    const char *ok[] = {"0", "0.5", "12", "3.25e-7", "1E+3"}, *no[] = {"-1", "-0.5", "01", ".5", "1."};
    for (size_t i = 0; i < 5; i++) CHECK(accepts(m, ok[i]));
    for (size_t i = 0; i < 5; i++) CHECK(!accepts(m, no[i]));
    sl_matcher_free(m);
    sl_grammar_free(g);
}

int main(void) {
    TEST_RUN(test_integer_ranges);
    TEST_RUN(test_refusals);
    TEST_RUN(test_nonnegative_number);
    TEST_EXIT();
}
