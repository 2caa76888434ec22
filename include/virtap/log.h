/* SPDX-License-Identifier: MIT */
/*
 * virtap logging: one sink for the whole library. The bottom layer (src/base) so that every other
 * layer may log without depending on threads or the event loop. Never blocks on anything but the
 * sink's own write.
 */
#ifndef VIRTAP_LOG_H
#define VIRTAP_LOG_H

#include <stdarg.h>

enum vt_log_level {
	VT_LOG_ERR = 0,
	VT_LOG_WARN = 1,
	VT_LOG_INFO = 2,
	VT_LOG_DEBUG = 3,
};

typedef void (*vt_log_fn)(void *ctx, int level, const char *msg);

void vt_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* VT_LOG_ERR..VT_LOG_DEBUG; below VT_LOG_ERR turns logging off. */
void vt_log_set_level(int level);
int vt_log_get_level(void);
/* Replace the sink (default: stderr with a timestamp). NULL restores the default. */
void vt_log_set_sink(vt_log_fn fn, void *ctx);
/* Parse "err", "warn", "info", "debug"; returns the level or -EINVAL. */
int vt_log_parse_level(const char *s);

#define vt_err(...)   vt_log(VT_LOG_ERR, __VA_ARGS__)
#define vt_warn(...)  vt_log(VT_LOG_WARN, __VA_ARGS__)
#define vt_info(...)  vt_log(VT_LOG_INFO, __VA_ARGS__)
#define vt_debug(...) vt_log(VT_LOG_DEBUG, __VA_ARGS__)

#endif
