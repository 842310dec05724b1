/* flags.c -- table-driven flag parsing with "did you mean" for typos. */
#include "cli/flags.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Edit distance, for suggesting the closest flag to a typo. */
static int edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63) return 99;
    int row[64];
    for (size_t j = 0; j <= m; j++) row[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[m];
}

static const sl_flag *closest(const sl_flag *flags, int n, const char *name) {
    const sl_flag *best = NULL;
    int best_d = 1 << 30;
    for (int i = 0; i < n; i++) {
        int d = edit_distance(name, flags[i].name);
        /* a typo of a longer name, or a prefix of it */
        if (strncmp(flags[i].name, name, strlen(name)) == 0) d = 1;
        if (d < best_d) {
            best_d = d;
            best = &flags[i];
        }
    }
    return best_d <= 6 ? best : NULL;
}

int sl_parse_bytes(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || !isfinite(v)) return SL_EINVAL;
    while (*end == ' ') end++;
    double scale = 1;
    const char *u = end;
    if (*u) {
        char c = (char)toupper((unsigned char)*u);
        bool binary = u[1] && (u[1] == 'i' || u[1] == 'I');
        double base = binary ? 1024.0 : 1000.0;
        if (c == 'K') scale = base;
        else if (c == 'M') scale = base * base;
        else if (c == 'G') scale = base * base * base;
        else if (c == 'T') scale = base * base * base * base;
        else if (c != 'B') return SL_EINVAL;
        const char *rest = u + 1 + (binary ? 1 : 0);
        if (c != 'B' && (*rest == 'B' || *rest == 'b')) rest++;
        if (*rest) return SL_EINVAL;
    }
    *out = (int64_t)(v * scale);
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
            return sl_err_set(err, SL_EINVAL, "%s expects a size like 4G, 512MiB or 1000000, got \"%s\"", f->name, value);
        return SL_OK;
    }
    return SL_EINTERNAL;
}

static const sl_flag *find(const sl_flag *flags, int n, const char *name, size_t len) {
    for (int i = 0; i < n; i++)
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0) return &flags[i];
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
        if (strncmp(arg, "--", 2) != 0 || strlen(arg) == 2) {
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
            const sl_flag *near = closest(flags, n_flags, name);
            if (near) return sl_err_set(err, SL_EINVAL, "unknown flag %s; did you mean %s?", name, near->name);
            return sl_err_set(err, SL_EINVAL, "unknown flag %s (see --help)", name);
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
            static const char *types[] = {"STR", "INT", "FLOAT", "", "BYTES"};
            const char *meta = flags[j].metavar ? flags[j].metavar : types[flags[j].type];
            char left[96];
            if (flags[j].type == SL_FLAG_BOOL) snprintf(left, sizeof left, "%s, --no-%s", flags[j].name, flags[j].name + 2);
            else snprintf(left, sizeof left, "%s %s", flags[j].name, meta);
            fprintf(out, "  %-40s %s\n", left, flags[j].help);
        }
    }
}
