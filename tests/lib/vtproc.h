/* SPDX-License-Identifier: MIT */
/*
 * The virtap daemon as a child process of a test: start the real binary (VT_BIN, set by CMake),
 * signal it, reap it, and read what the kernel says about it (resident memory, open fds), for the
 * tests that need a separate process: a daemon that can be SIGKILLed, reloaded with SIGHUP, and
 * watched for leaks over a long run.
 */
#ifndef VT_VTPROC_H
#define VT_VTPROC_H

#include <stdbool.h>
#include <sys/types.h>

/* The daemon binary: $VT_BIN, else `virtap` next to this test's executable. Exits with SKIP (77)
 * if neither exists. */
const char *vtproc_bin(void);
/* Start bin with args (NULL-terminated, argv[0] excluded); stdout and stderr appended to log.
 * The pid, or -1. */
pid_t vtproc_start(const char *log, const char *const *args);
/* Send sig and reap: the wait status, or -1 if it did not exit within ms. */
int vtproc_stop(pid_t pid, int sig, int ms);
/* A field of /proc/PID/status in kB (VmRSS, RssAnon, ...), -1 if unreadable. */
long vtproc_status_kb(pid_t pid, const char *field);
/* Open fds of the process, -1 if unreadable. */
int vtproc_nfds(pid_t pid);
/* Wait up to ms until path exists (or, with exists false, is gone). */
bool vtproc_wait_path(const char *path, bool exists, int ms);
/* Wait up to ms until the process holds n open fds (it closes a connection's fds a moment
 * after it sees the hang-up); the count it last had. */
int vtproc_nfds_settle(pid_t pid, int n, int ms);
/* Threads of the process whose name (comm) is exactly comm, -1 if unreadable. */
int vtproc_threads_named(pid_t pid, const char *comm);
/* Lines of a log file that contain needle (every line with needle NULL), -1 if unreadable; with
 * show, the matching lines are printed to stdout. */
long vtproc_log_count(const char *log, const char *needle, bool show);
/* The same over lines [from, to) of the log only (to < 0: to the end). */
long vtproc_log_count_range(const char *log, const char *needle, long from, long to, bool show);
/* Wait up to ms until a line of the log contains needle. */
bool vtproc_log_wait(const char *log, const char *needle, int ms);
/* Print the last lines of a log file to stderr. */
void vtproc_tail(const char *log, int lines);

#endif
