// SPDX-License-Identifier: MIT
/*
 * Logging sink. Formats into a stack buffer and hands one complete line to the sink, so lines from
 * different worker threads never interleave mid-line.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "virtap/log.h"

static int log_level = VT_LOG_INFO;
static vt_log_fn log_sink;
static void *log_ctx;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"err", "warn", "info", "debug"};

static void default_sink(void *ctx, int level, const char *msg)
{
	struct timespec ts;
	struct tm tm;
	char when[32];

	(void)ctx;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ld virtap %s: %s\n", when, ts.tv_nsec / 1000000L, level_names[level],
		msg);
}

void vt_log_set_level(int level)
{
	if (level < VT_LOG_ERR)
		level = -1; /* off: fuzzers and embedders that log elsewhere */
	if (level > VT_LOG_DEBUG)
		level = VT_LOG_DEBUG;
	__atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
}

int vt_log_get_level(void)
{
	return __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

void vt_log_set_sink(vt_log_fn fn, void *ctx)
{
	pthread_mutex_lock(&log_lock);
	log_sink = fn;
	log_ctx = ctx;
	pthread_mutex_unlock(&log_lock);
}

int vt_log_parse_level(const char *s)
{
	for (int i = 0; i <= VT_LOG_DEBUG; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	if (strcmp(s, "error") == 0)
		return VT_LOG_ERR;
	if (strcmp(s, "warning") == 0)
		return VT_LOG_WARN;
	return -EINVAL;
}

bool vt_ratelimit(struct vt_ratelimit *rl, unsigned burst, unsigned interval_ms, unsigned *missed)
{
	struct timespec ts;
	long long now;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	if (!rl->start_ms || now - rl->start_ms >= interval_ms) {
		rl->start_ms = now ? now : 1;
		rl->n = 0;
	}
	if (rl->n >= burst) {
		rl->missed++;
		return false;
	}
	rl->n++;
	*missed = rl->missed;
	rl->missed = 0;
	return true;
}

void vt_log(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vt_vlog(level, fmt, ap);
	va_end(ap);
}

void vt_vlog(int level, const char *fmt, va_list ap)
{
	char msg[512];

	if (level > vt_log_get_level())
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	pthread_mutex_lock(&log_lock);
	if (log_sink)
		log_sink(log_ctx, level, msg);
	else
		default_sink(NULL, level, msg);
	pthread_mutex_unlock(&log_lock);
}
