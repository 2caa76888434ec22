// SPDX-License-Identifier: MIT
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "netns.h"
#include "virtap/log.h"

int th_failures;
int th_checks;
int th_log_errors;
char th_log_last[512];

int th_done(const char *name)
{
	if (th_failures) {
		printf("FAIL %s: %d of %d checks failed\n", name, th_failures, th_checks);
		return 1;
	}
	printf("PASS %s: %d checks\n", name, th_checks);
	return 0;
}

void th_private_netns(void)
{
	if (geteuid() != 0) {
		printf(
		    "SKIP: needs root (CAP_NET_ADMIN) for TAP devices and a network namespace\n");
		exit(TH_SKIP);
	}
	/* A mount namespace too, so /sys can show this network namespace's devices (sysfs
	 * reflects the namespace of whoever mounted it), as `ip netns exec` does. */
	if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0) {
		printf("SKIP: unshare(CLONE_NEWNET | CLONE_NEWNS): %s\n", strerror(errno));
		exit(TH_SKIP);
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    umount2("/sys", MNT_DETACH) < 0 || mount("sysfs", "/sys", "sysfs", 0, NULL) < 0) {
		fprintf(stderr, "cannot remount /sys in the test namespace: %s\n", strerror(errno));
		exit(1);
	}
	if (th_sh("ip link set lo up") != 0) {
		fprintf(stderr, "cannot bring lo up in the test namespace\n");
		exit(1);
	}
}

int th_sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void capture_sink(void *ctx, int level, const char *msg)
{
	(void)ctx;
	if (level == VT_LOG_ERR) {
		th_log_errors++;
		snprintf(th_log_last, sizeof(th_log_last), "%s", msg);
	}
	fprintf(stderr, "[virtap %d] %s\n", level, msg);
}

void th_log_capture(void)
{
	th_log_errors = 0;
	th_log_last[0] = 0;
	vt_log_set_sink(capture_sink, NULL);
}

long long th_cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000ll +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

long long th_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
