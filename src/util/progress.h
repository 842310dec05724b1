/* progress.h -- progress for long work (loading, downloading, benchmarks).
 *
 * On a terminal, one line redrawn in place with a bar, rate and ETA; elsewhere
 * (logs, CI), a plain line at most every few seconds and at the end. */
#ifndef SL_UTIL_PROGRESS_H
#define SL_UTIL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct sl_progress {
    FILE *out;
    char label[96];
    const char *unit;  /* "B" prints sizes as KB/MB/GB; anything else as counts */
    uint64_t total;    /* 0 when unknown */
    uint64_t done;
    double start_s, last_draw_s;
    bool tty, finished;
} sl_progress;

void sl_progress_start(sl_progress *p, FILE *out, const char *label, uint64_t total, const char *unit);
void sl_progress_update(sl_progress *p, uint64_t done); /* thread-compatible, not thread-safe */
void sl_progress_finish(sl_progress *p);

/* Seconds on the monotonic clock. */
double sl_now_s(void);

#endif
