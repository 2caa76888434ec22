// SPDX-License-Identifier: MIT
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

void wait_until(long long t)
{
	long long left;

	while ((left = t - now_ns()) > 0) {
		struct timespec ts = {.tv_sec = left / 1000000000ll,
				      .tv_nsec = left % 1000000000ll};

		nanosleep(&ts, NULL);
	}
}

int pin_thread(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

int parse_list(const char *s, unsigned *v, unsigned *n, unsigned max, unsigned lo, unsigned hi)
{
	*n = 0;
	while (*s) {
		char *end;
		unsigned long x = strtoul(s, &end, 10);

		if (end == s || x < lo || x > hi || *n >= max || (*end && *end != ','))
			return -EINVAL;
		v[(*n)++] = (unsigned)x;
		s = *end ? end + 1 : end;
	}
	return *n ? 0 : -EINVAL;
}

int parse_names(const char *s, const char *const *names, unsigned count, bool *on)
{
	unsigned any = 0;

	for (unsigned m = 0; m < count; m++)
		on[m] = false;
	while (*s) {
		size_t len = strcspn(s, ",");
		unsigned m;

		for (m = 0; m < count; m++)
			if (strlen(names[m]) == len && !strncmp(s, names[m], len))
				break;
		if (m == count)
			return -EINVAL;
		on[m] = true;
		any++;
		s += len;
		if (*s)
			s++;
	}
	return any ? 0 : -EINVAL;
}
