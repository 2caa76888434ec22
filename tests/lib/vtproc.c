// SPDX-License-Identifier: MIT
/*
 * Child-process helpers for daemon tests (vtproc.h). Test code: every wait is bounded, and a
 * daemon that will not die is killed with SIGKILL before the test gives up on it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "netns.h"
#include "vtproc.h"

const char *vtproc_bin(void)
{
	static char path[4096];
	const char *env = getenv("VT_BIN");
	ssize_t n;
	char *slash;

	if (env && *env && access(env, X_OK) == 0)
		return env;
	n = readlink("/proc/self/exe", path, sizeof(path) - 16);
	if (n > 0) {
		path[n] = 0;
		slash = strrchr(path, '/');
		if (slash) {
			strcpy(slash + 1, "virtap");
			if (access(path, X_OK) == 0)
				return path;
		}
	}
	printf("SKIP: no virtap binary (set VT_BIN)\n");
	exit(TH_SKIP);
}

pid_t vtproc_start(const char *log, const char *const *args)
{
	const char *argv[64];
	unsigned n = 0;
	pid_t pid;

	argv[n++] = vtproc_bin();
	while (args && args[n - 1] && n < 63) {
		argv[n] = args[n - 1];
		n++;
	}
	argv[n] = NULL;
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

int vtproc_stop(pid_t pid, int sig, int ms)
{
	long long end = th_now_ms() + ms;
	int st;

	kill(pid, sig);
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return st;
		if (r < 0)
			return -1;
		if (th_now_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		usleep(2000);
	}
}

long vtproc_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t len = strlen(field);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, field, len) && line[len] == ':') {
			v = strtol(line + len + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

int vtproc_nfds(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

bool vtproc_wait_path(const char *path, bool exists, int ms)
{
	long long end = th_now_ms() + ms;
	struct stat st;

	for (;;) {
		if ((lstat(path, &st) == 0) == exists)
			return true;
		if (th_now_ms() > end)
			return false;
		usleep(2000);
	}
}

int vtproc_nfds_settle(pid_t pid, int n, int ms)
{
	long long end = th_now_ms() + ms;
	int now;

	while ((now = vtproc_nfds(pid)) != n && th_now_ms() < end)
		usleep(5000);
	return now;
}

int vtproc_threads_named(pid_t pid, const char *comm)
{
	size_t len = strlen(comm);
	char path[64], name[32];
	struct dirent *e;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.16s/comm", (int)pid, e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue; /* the thread has just exited */
		if (fgets(name, sizeof(name), f) && !strncmp(name, comm, len) && name[len] == '\n')
			n++;
		fclose(f);
	}
	closedir(d);
	return n;
}

long vtproc_log_count_range(const char *log, const char *needle, long from, long to, bool show)
{
	char line[1024];
	long n = 0, i = 0;
	FILE *f = fopen(log, "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (to >= 0 && i >= to)
			break;
		if (i++ < from || (needle && !strstr(line, needle)))
			continue;
		n++;
		if (show)
			printf("  daemon: %s", line);
	}
	fclose(f);
	return n;
}

long vtproc_log_count(const char *log, const char *needle, bool show)
{
	return vtproc_log_count_range(log, needle, 0, -1, show);
}

bool vtproc_log_wait(const char *log, const char *needle, int ms)
{
	long long end = th_now_ms() + ms;

	for (;;) {
		if (vtproc_log_count(log, needle, false) > 0)
			return true;
		if (th_now_ms() > end)
			return false;
		usleep(20000);
	}
}

void vtproc_tail(const char *log, int lines)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "tail -n %d '%s' >&2", lines, log);
	fflush(NULL);
	if (system(cmd) != 0)
		fprintf(stderr, "(cannot read %s)\n", log);
}
