// SPDX-License-Identifier: MIT
#include "common.h"

#include <pthread.h>
#include <sched.h>
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
