// SPDX-License-Identifier: MIT
/* Helpers shared by the bench programs: a monotonic clock in nanoseconds, thread pinning,
 * option parsing. */
#ifndef VT_BENCH_COMMON_H
#define VT_BENCH_COMMON_H

#include <stdbool.h>

/* CLOCK_MONOTONIC in nanoseconds. */
long long now_ns(void);

/* Sleep until now_ns() reaches t (returns at once if it already has). */
void wait_until(long long t);

/* Pin the calling thread to one CPU; 0, or an errno value. */
int pin_thread(int cpu);

/* A whole decimal number in [lo, hi]; 0, or -EINVAL. */
int parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out);

/* "a,b,c": up to max numbers, each in [lo, hi], at least one; 0, or -EINVAL. */
int parse_list(const char *s, unsigned *v, unsigned *n, unsigned max, unsigned lo, unsigned hi);

/* "x,y": names out of names[0..count), on[i] set for each one given, at least one; 0, or
 * -EINVAL. */
int parse_names(const char *s, const char *const *names, unsigned count, bool *on);

#endif
