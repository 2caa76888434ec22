/* SPDX-License-Identifier: MIT */
/*
 * virtap logging: one sink for the whole library. The bottom layer (src/base) so that every other
 * layer may log without depending on threads or the event loop. Never blocks on anything but the
 * sink's own write.
 */
#ifndef VIRTAP_LOG_H
#define VIRTAP_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum vt_log_level {
	VT_LOG_ERR = 0,
	VT_LOG_WARN = 1,
	VT_LOG_INFO = 2,
	VT_LOG_DEBUG = 3,
};

typedef void (*vt_log_fn)(void *ctx, int level, const char *msg);

void vt_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vt_vlog(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* VT_LOG_ERR..VT_LOG_DEBUG; below VT_LOG_ERR turns logging off. */
void vt_log_set_level(int level);
int vt_log_get_level(void);
/* Replace the sink (default: stderr with a timestamp). NULL restores the default. */
void vt_log_set_sink(vt_log_fn fn, void *ctx);
/* Parse "err", "warn", "info", "debug"; returns the level or -EINVAL. */
int vt_log_parse_level(const char *s);

/*
 * A log rate limit for lines a peer can trigger at will (a flood of bad messages or
 * connections must not flood the log): at most `burst` lines per `interval_ms`, the rest
 * counted. Zero-initialise; one per source, used from one thread.
 */
struct vt_ratelimit {
	long long start_ms; /* current interval */
	unsigned n;	    /* lines allowed in it */
	unsigned missed;    /* lines suppressed since the last one allowed */
};

/* True if a line may be logged now; then *missed is how many were suppressed before it (the
 * line should say so) and the count restarts. */
bool vt_ratelimit(struct vt_ratelimit *rl, unsigned burst, unsigned interval_ms, unsigned *missed);

#define vt_err(...)   vt_log(VT_LOG_ERR, __VA_ARGS__)
#define vt_warn(...)  vt_log(VT_LOG_WARN, __VA_ARGS__)
#define vt_info(...)  vt_log(VT_LOG_INFO, __VA_ARGS__)
#define vt_debug(...) vt_log(VT_LOG_DEBUG, __VA_ARGS__)

#endif
