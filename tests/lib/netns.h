/* SPDX-License-Identifier: MIT */
/*
 * Test helpers: a private network namespace per test process (unshare(CLONE_NEWNET)), so TAP
 * devices and traffic never leave it and the kernel tears it all down when the test exits, even
 * on a crash. Plus the small pass/fail harness every test program uses.
 */
#ifndef VT_NETNS_H
#define VT_NETNS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#define TH_SKIP 77

extern int th_failures;
extern int th_checks;

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		th_checks++;                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);      \
			th_failures++;                                                             \
		}                                                                                  \
	} while (0)

#define REQUIRE(c)                                                                                 \
	do {                                                                                       \
		th_checks++;                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #c);    \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

/* Print the verdict and return the exit code. */
int th_done(const char *name);
/* Skip (exit 77) with a reason unless root; enter a fresh network namespace with lo up. */
void th_private_netns(void);
/* Run a shell command (in our namespace); returns its exit status. */
int th_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Capture virtap's log: the count of error lines and the last one. */
void th_log_capture(void);
extern int th_log_errors;
extern char th_log_last[512];
/* Monotonic milliseconds. */
long long th_now_ms(void);
/* CPU time this process has used (every thread, user and system), in ms. */
long long th_cpu_ms(void);

#endif
