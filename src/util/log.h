/* log.h -- leveled logging to stderr.
 *
 * Messages go to stderr with a level tag; the level is set once at start
 * (--log-level or SHARDLM_LOG_LEVEL). Logging is for operators; errors that
 * a caller must act on travel in sl_err instead. */
#ifndef SL_UTIL_LOG_H
#define SL_UTIL_LOG_H

typedef enum { SL_LOG_DEBUG, SL_LOG_INFO, SL_LOG_WARN, SL_LOG_ERROR, SL_LOG_OFF } sl_log_level;

void sl_log_set_level(sl_log_level level);
sl_log_level sl_log_get_level(void);
/* Parses "debug", "info", "warning"/"warn", "error", "off"/"critical"; -1 if unknown. */
int sl_log_parse_level(const char *name);
void sl_log(sl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define SL_DEBUG(...) sl_log(SL_LOG_DEBUG, __VA_ARGS__)
#define SL_INFO(...) sl_log(SL_LOG_INFO, __VA_ARGS__)
#define SL_WARN(...) sl_log(SL_LOG_WARN, __VA_ARGS__)
#define SL_ERROR(...) sl_log(SL_LOG_ERROR, __VA_ARGS__)

#endif
