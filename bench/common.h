// SPDX-License-Identifier: MIT
/* Helpers shared by the bench programs: a monotonic clock in nanoseconds, thread pinning. */
#ifndef VT_BENCH_COMMON_H
#define VT_BENCH_COMMON_H

/* CLOCK_MONOTONIC in nanoseconds. */
long long now_ns(void);

/* Sleep until now_ns() reaches t (returns at once if it already has). */
void wait_until(long long t);

/* Pin the calling thread to one CPU; 0, or an errno value. */
int pin_thread(int cpu);

#endif
