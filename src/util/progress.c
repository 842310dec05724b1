/* progress.c -- a progress line: redrawn in place on a terminal, throttled
 * plain lines otherwise so that logs stay readable. */
#include "util/progress.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

double sl_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void format_amount(char *buf, size_t n, uint64_t v, const char *unit) {
    if (strcmp(unit, "B") != 0) {
        snprintf(buf, n, "%llu", (unsigned long long)v);
        return;
    }
    const char *units[] = {"B", "KB", "MB", "GB", "TB"};
    double x = (double)v;
    int u = 0;
    while (x >= 1000.0 && u < 4) { x /= 1000.0; u++; }
    snprintf(buf, n, u == 0 ? "%.0f %s" : "%.1f %s", x, units[u]);
}

static void draw(sl_progress *p, double now, bool final) {
    char done[32], total[32], rate[32];
    double elapsed = now - p->start_s;
    format_amount(done, sizeof done, p->done, p->unit);
    format_amount(total, sizeof total, p->total, p->unit);
    format_amount(rate, sizeof rate, elapsed > 0 ? (uint64_t)((double)p->done / elapsed) : 0, p->unit);
    double frac = p->total ? (double)p->done / (double)p->total : 0.0;
    if (frac > 1.0) frac = 1.0;
    const char *unit = strcmp(p->unit, "B") == 0 ? "" : p->unit, *sep = *unit ? " " : "";
    if (p->tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        double eta = (frac > 0 && !final) ? elapsed * (1.0 / frac - 1.0) : 0.0;
        fprintf(p->out, "\r%s [%s] %3.0f%% %s/%s%s%s %s%s%s/s eta %.0fs ", p->label, bar, frac * 100, done,
                p->total ? total : "?", sep, unit, rate, sep, unit, eta);
        if (final) fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s: %s/%s%s%s (%.0f%%) %s%s%s/s %.1fs%s\n", p->label, done, p->total ? total : "?", sep,
                unit, frac * 100, rate, sep, unit, elapsed, final ? " done" : "");
    }
    fflush(p->out);
    p->last_draw_s = now;
}

void sl_progress_start(sl_progress *p, FILE *out, const char *label, uint64_t total, const char *unit) {
    memset(p, 0, sizeof *p);
    p->out = out;
    snprintf(p->label, sizeof p->label, "%s", label);
    p->unit = unit ? unit : "";
    p->total = total;
    p->tty = isatty(fileno(out));
    p->start_s = p->last_draw_s = sl_now_s();
}

void sl_progress_update(sl_progress *p, uint64_t done) {
    p->done = done;
    double now = sl_now_s();
    if (now - p->last_draw_s >= (p->tty ? 0.1 : 5.0)) draw(p, now, false);
}

void sl_progress_finish(sl_progress *p) {
    if (p->finished) return;
    p->finished = true;
    draw(p, sl_now_s(), true);
}
