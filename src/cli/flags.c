/* flags.c -- table-driven flag parsing: vLLM's names and short forms, one
 * size syntax for every size flag, and "did you mean" for typos. */
#include "cli/flags.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- "did you mean": the flags a misspelled name most likely meant ----
 *
 * Names are compared bare: without leading dashes, lower case, '_' as '-'.
 * Four kinds of match, the first kind that finds any wins: a flag's name or
 * alias exactly (--tp is -tp, --max_model_len), a misspelling (Damerau-
 * Levenshtein distance, a swap of neighbours one edit, at most a quarter of
 * the typed length: --prot, --max-model-length), a prefix of names (--max),
 * whole words of names (--utilization, --parallel-size). Up to
 * MAX_SUGGESTIONS are offered; more, or none of a kind, offer nothing: no
 * suggestion is better than a wrong one (--quiet, where no flag is near it). */
#define MAX_SUGGESTIONS 4
#define MAX_NAME 64

/* vLLM's other names of flags, taken wherever the flag itself is. */
static const struct {
    const char *alias, *name;
} k_aliases[] = {
    {"-tp", "--tensor-parallel-size"},
    {"-pp", "--pipeline-parallel-size"},
    {"--kv-cache-memory-bytes", "--kv-cache-memory"},
};

static const char *alias_of(const char *name) {
    for (size_t i = 0; i < sizeof k_aliases / sizeof k_aliases[0]; i++)
        if (strcmp(k_aliases[i].name, name) == 0) return k_aliases[i].alias;
    return NULL;
}

static void bare_name(const char *s, size_t len, char out[MAX_NAME]) {
    while (len && *s == '-') s++, len--;
    size_t k = 0;
    for (; k < len && k < MAX_NAME - 1; k++) out[k] = s[k] == '_' ? '-' : (char)tolower((unsigned char)s[k]);
    out[k] = '\0';
}

/* Optimal string alignment distance: insertions, deletions, substitutions
 * and swaps of two neighbours each cost one. */
static int typo_distance(const char *a, const char *b) {
    const int n = (int)strlen(a), m = (int)strlen(b);
    int d[MAX_NAME][MAX_NAME];
    for (int i = 0; i <= n; i++) d[i][0] = i;
    for (int j = 0; j <= m; j++) d[0][j] = j;
    for (int i = 1; i <= n; i++)
        for (int j = 1; j <= m; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

/* Whether part's words are whole words of name, in order ("parallel-size" and "max-len" are
 * in "tensor-parallel-size" and "max-model-len"). */
static bool has_words(const char *name, const char *part) {
    const char *at = name; /* the start of one of name's words */
    while (*part) {
        const size_t k = strcspn(part, "-");
        while (*at && !(strncmp(at, part, k) == 0 && (at[k] == '\0' || at[k] == '-'))) {
            at += strcspn(at, "-"); /* on to name's next word */
            if (*at) at++;
        }
        if (!*at) return false;
        at += k;
        part += k;
        while (*part == '-') part++;
    }
    return true;
}

/* How well bare name `cand` matches bare `typed`: 0 for the same name, 1 + the distance of a
 * misspelling, then prefix, then words; -1 no match. */
enum { MATCH_TYPO = 1, MATCH_PREFIX = 1000, MATCH_WORDS = 1001 };
static int match_rank(const char *typed, const char *cand) {
    const size_t len = strlen(typed);
    const int d = typo_distance(typed, cand);
    if (d == 0) return 0;
    if (d <= (int)len / 4) return MATCH_TYPO + d;
    if (len >= 3 && strncmp(cand, typed, len) == 0) return MATCH_PREFIX;
    if (len >= 3 && has_words(cand, typed)) return MATCH_WORDS;
    return -1;
}

/* Fills out[] with the best-matching flags (only booleans for a --no-X); returns how many (0: none worth offering). */
static int suggest(const sl_flag *flags, int n, const char *typed_name, bool negated, const sl_flag *out[MAX_SUGGESTIONS]) {
    char typed[MAX_NAME], cand[MAX_NAME];
    bare_name(typed_name, strlen(typed_name), typed);
    int best = -1, n_best = 0;
    for (int i = 0; i < n; i++) {
        int r = -1;
        for (int k = 0; k < 2 && (!negated || flags[i].type == SL_FLAG_BOOL); k++) {
            const char *name = k ? alias_of(flags[i].name) : flags[i].name;
            if (!name) continue;
            bare_name(name, strlen(name), cand);
            int rk = match_rank(typed, cand);
            if (rk >= 0 && (r < 0 || rk < r)) r = rk;
        }
        if (r < 0 || (best >= 0 && r > best)) continue;
        if (r != best) best = r, n_best = 0;
        if (n_best < MAX_SUGGESTIONS) out[n_best] = &flags[i];
        n_best++;
    }
    return n_best <= MAX_SUGGESTIONS ? n_best : 0;
}

static int unknown_flag(const sl_flag *flags, int n, const char *name, sl_err *err) {
    const sl_flag *near[MAX_SUGGESTIONS];
    const bool negated = strncmp(name, "--no-", 5) == 0;
    int k = suggest(flags, n, negated ? name + 5 : name, negated, near);
    if (k == 0) return sl_err_set(err, SL_EINVAL, "unknown flag %s (see --help)", name);
    char list[256] = "";
    for (int i = 0; i < k; i++) {
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%s%s", i == 0 ? "" : i == k - 1 ? " or " : ", ", negated ? "--no-" : "",
                 near[i]->name + (negated ? 2 : 0));
    }
    return sl_err_set(err, SL_EINVAL, "unknown flag %s; did you mean %s?", name, list);
}

int sl_parse_bytes(const char *s, int64_t *out) {
    /* digits with at most one '.', and at least one digit: no sign, hex, exponent, inf or nan */
    const size_t n_num = strspn(s, "0123456789.");
    const char *dot = memchr(s, '.', n_num);
    if (n_num == 0 || n_num == (dot ? 1u : 0u) || (dot && memchr(dot + 1, '.', n_num - (size_t)(dot - s) - 1)))
        return SL_EINVAL;
    const double v = strtod(s, NULL);
    const char *u = s + n_num;
    if (*u == ' ') u++;
    double scale = 1;
    const char *prefixes = "KMGT", *p = *u ? strchr(prefixes, toupper((unsigned char)*u)) : NULL;
    if (p) {
        u++;
        const bool binary = *u == 'i' || *u == 'I';
        u += binary;
        for (const char *q = prefixes; q <= p; q++) scale *= binary ? 1024.0 : 1000.0;
    }
    if (*u == 'B' || *u == 'b') u++;
    if (*u || !(v * scale < 9.2e18)) return SL_EINVAL;
    *out = (int64_t)(v * scale);
    return SL_OK;
}

int sl_model_arg(const char *positional, const char *flag, const char **model, sl_err *err) {
    if (positional && flag && strcmp(positional, flag) != 0)
        return sl_err_set(err, SL_EINVAL, "the model is given twice, as \"%s\" and as --model \"%s\": give one", positional,
                          flag);
    *model = positional ? positional : flag;
    return SL_OK;
}

static int set_value(const sl_flag *f, const char *value, sl_err *err) {
    char *end;
    errno = 0;
    switch (f->type) {
    case SL_FLAG_STRING: *(const char **)f->dest = value; return SL_OK;
    case SL_FLAG_INT: {
        long v = strtol(value, &end, 10);
        if (*value == '\0' || *end || errno || v < INT32_MIN || v > INT32_MAX)
            return sl_err_set(err, SL_EINVAL, "%s expects an integer, got \"%s\"", f->name, value);
        *(int *)f->dest = (int)v;
        return SL_OK;
    }
    case SL_FLAG_FLOAT: {
        double v = strtod(value, &end);
        if (*value == '\0' || *end || errno || !isfinite(v))
            return sl_err_set(err, SL_EINVAL, "%s expects a number, got \"%s\"", f->name, value);
        *(double *)f->dest = v;
        return SL_OK;
    }
    case SL_FLAG_BOOL:
        if (strcasecmp(value, "true") == 0 || strcmp(value, "1") == 0) *(int *)f->dest = 1;
        else if (strcasecmp(value, "false") == 0 || strcmp(value, "0") == 0) *(int *)f->dest = 0;
        else return sl_err_set(err, SL_EINVAL, "%s expects true or false, got \"%s\"", f->name, value);
        return SL_OK;
    case SL_FLAG_BYTES:
        if (sl_parse_bytes(value, (int64_t *)f->dest))
            return sl_err_set(err, SL_EINVAL, "%s expects a size like 48G, 48GB, 1.5GiB, 512M or 1000000 (bytes), got \"%s\"",
                              f->name, value);
        return SL_OK;
    case SL_FLAG_INT64: {
        long long v = strtoll(value, &end, 10);
        if (*value == '\0' || *end || errno)
            return sl_err_set(err, SL_EINVAL, "%s expects an integer, got \"%s\"", f->name, value);
        *(int64_t *)f->dest = (int64_t)v;
        return SL_OK;
    }
    }
    return SL_EINTERNAL;
}

/* Whether arg[0..len) is flag_name, '_' read as '-' (vLLM's parser takes --max_model_len too). */
static bool is_name(const char *flag_name, const char *arg, size_t len) {
    if (!flag_name || strlen(flag_name) != len) return false;
    for (size_t i = 0; i < len; i++)
        if (flag_name[i] != (arg[i] == '_' ? '-' : arg[i])) return false;
    return true;
}

static const sl_flag *find(const sl_flag *flags, int n, const char *name, size_t len) {
    for (int i = 0; i < n; i++)
        if (is_name(flags[i].name, name, len) || is_name(alias_of(flags[i].name), name, len)) return &flags[i];
    return NULL;
}

int sl_flags_parse(const sl_flag *flags, int n_flags, int argc, char **argv, const char **positional,
                   int max_positional, int *n_positional, int *help, sl_err *err) {
    *n_positional = 0;
    *help = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            *help = 1;
            continue;
        }
        if (arg[0] != '-' || strcmp(arg, "-") == 0 || strcmp(arg, "--") == 0) {
            if (*n_positional >= max_positional)
                return sl_err_set(err, SL_EINVAL, "unexpected argument \"%s\"", arg);
            positional[(*n_positional)++] = arg;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        const sl_flag *f = find(flags, n_flags, arg, len);
        int negated = 0;
        if (!f && strncmp(arg, "--no-", 5) == 0) { /* --no-enable-prefix-caching */
            char name[128];
            snprintf(name, sizeof name, "--%.*s", (int)(len - 5), arg + 5);
            f = find(flags, n_flags, name, strlen(name));
            negated = f && f->type == SL_FLAG_BOOL;
            if (!negated) f = NULL;
        }
        if (!f) {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)len, arg);
            return unknown_flag(flags, n_flags, name, err);
        }
        if (f->type == SL_FLAG_BOOL && !eq) {
            *(int *)f->dest = !negated;
            continue;
        }
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!value) return sl_err_set(err, SL_EINVAL, "%s needs a value", f->name);
        int rc = set_value(f, value, err);
        if (rc) return rc;
    }
    return SL_OK;
}

void sl_flags_print_help(FILE *out, const char *usage, const sl_flag *flags, int n_flags) {
    fprintf(out, "usage: %s\n", usage);
    for (int i = 0; i < n_flags; i++) {
        bool first_of_group = true;
        for (int j = 0; j < i; j++)
            if (strcmp(flags[j].group, flags[i].group) == 0) first_of_group = false;
        if (!first_of_group) continue;
        fprintf(out, "\n%s:\n", flags[i].group);
        for (int j = i; j < n_flags; j++) {
            if (strcmp(flags[j].group, flags[i].group) != 0) continue;
            static const char *types[] = {"STR", "INT", "FLOAT", "", "SIZE", "INT"};
            const sl_flag *f = &flags[j];
            const char *meta = f->metavar ? f->metavar : types[f->type];
            char left[128];
            const char *alias = alias_of(f->name);
            if (f->type == SL_FLAG_BOOL) snprintf(left, sizeof left, "%s, --no-%s", f->name, f->name + 2);
            else snprintf(left, sizeof left, "%s%s%s %s", f->name, alias ? ", " : "", alias ? alias : "", meta);
            if (strlen(left) > 40) fprintf(out, "  %s\n  %-40s %s\n", left, "", f->help);
            else fprintf(out, "  %-40s %s\n", left, f->help);
        }
    }
}
