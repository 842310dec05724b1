/* log.c -- leveled logging to stderr, one line per call, safe across threads
 * (each line is written with a single fprintf under the stdio lock). */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int g_level = -1; /* -1: not yet read from the environment */

sl_log_level sl_log_get_level(void) {
    if (g_level < 0) {
        const char *env = getenv("SHARDLM_LOG_LEVEL");
        int parsed = env ? sl_log_parse_level(env) : -1;
        g_level = parsed >= 0 ? parsed : SL_LOG_INFO;
    }
    return (sl_log_level)g_level;
}

void sl_log_set_level(sl_log_level level) { g_level = (int)level; }

int sl_log_parse_level(const char *name) {
    static const struct { const char *name; sl_log_level level; } names[] = {
        {"debug", SL_LOG_DEBUG}, {"info", SL_LOG_INFO},   {"warning", SL_LOG_WARN},
        {"warn", SL_LOG_WARN},   {"error", SL_LOG_ERROR}, {"critical", SL_LOG_ERROR},
        {"off", SL_LOG_OFF},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(name, names[i].name) == 0) return (int)names[i].level;
    return -1;
}

void sl_log(sl_log_level level, const char *fmt, ...) {
    if (level < sl_log_get_level()) return;
    static const char *tags[] = {"DEBUG", "INFO", "WARNING", "ERROR"};
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "%s %s %s\n", tags[level], stamp, line);
}
