// SPDX-License-Identifier: MIT
/*
 * Peer fd I/O with a watchdog (pfd.h). Each registered thread publishes a counter that is odd
 * while it is inside a peer call; the watchdog samples every counter once a tick and signals a
 * thread whose counter is odd and unchanged since the last tick. The signal's handler is empty
 * and installed without SA_RESTART: a sleeping read or write returns EINTR. An eventfd call on a
 * descriptor we set non-blocking never sleeps, so a guarded call that returns EINTR slept, which
 * only a peer that made the fd blocking (and full, or empty) can cause: that is -ETIMEDOUT.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "virtap/log.h"
#include "virtap/pfd.h"

struct pfd_thread {
	pthread_t tid;
	char name[32];
	unsigned seq;  /* odd while inside a peer call; stored by the owner, read by the watchdog */
	unsigned seen; /* the watchdog's sample from the previous tick */
	struct pfd_thread *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct pfd_thread *threads; /* registered threads, under lock */
static bool started;		   /* the watchdog runs (under lock) */
static __thread struct pfd_thread *self;

/* The signal the watchdog sends: a real-time one that nothing else here uses. */
static int pfd_signal(void)
{
	return SIGRTMIN + 4;
}

static void on_signal(int sig)
{
	(void)sig; /* only here to make the interrupted call return EINTR */
}

static void *watchdog(void *arg)
{
	struct timespec tick = {.tv_sec = 0, .tv_nsec = PFD_TICK_MS * 1000000L};

	(void)arg;
	for (;;) {
		nanosleep(&tick, NULL);
		pthread_mutex_lock(&lock);
		for (struct pfd_thread *t = threads; t; t = t->next) {
			unsigned s = __atomic_load_n(&t->seq, __ATOMIC_ACQUIRE);

			if ((s & 1) && s == t->seen)
				pthread_kill(t->tid, pfd_signal());
			t->seen = s;
		}
		pthread_mutex_unlock(&lock);
	}
	return NULL;
}

/* Install the handler and start the watchdog, once; under lock. */
static int start_watchdog(void)
{
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: that is the point */
	sigset_t all, old;
	pthread_t tid;
	int err;

	if (started)
		return 0;
	sigemptyset(&sa.sa_mask);
	if (sigaction(pfd_signal(), &sa, NULL) < 0)
		return -errno;
	/* The watchdog itself takes no signals. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = -pthread_create(&tid, NULL, watchdog, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		return err;
	/* Not "vt-...": that prefix names a port's own workers (tests count them). */
	pthread_setname_np(tid, "vtwatchdog");
	pthread_detach(tid);
	started = true;
	return 0;
}

int pfd_thread_enter(const char *name)
{
	struct pfd_thread *t;
	sigset_t set;
	int err;

	if (self)
		return 0;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->tid = pthread_self();
	snprintf(t->name, sizeof(t->name), "%s", name ? name : "thread");
	pthread_mutex_lock(&lock);
	err = start_watchdog();
	if (!err) {
		t->next = threads;
		threads = t;
	}
	pthread_mutex_unlock(&lock);
	if (err) {
		vt_err("%s: cannot start the peer fd watchdog: %s", t->name, strerror(-err));
		free(t);
		return err;
	}
	/* Threads inherit the daemon's blocked signals (it takes its own through a signalfd). */
	sigemptyset(&set);
	sigaddset(&set, pfd_signal());
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	self = t;
	return 1;
}

void pfd_thread_leave(void)
{
	struct pfd_thread *t = self;

	if (!t)
		return;
	pthread_mutex_lock(&lock);
	for (struct pfd_thread **pp = &threads; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
	self = NULL;
	free(t);
}

static int guarded(int fd, uint64_t *v, bool wr)
{
	struct pfd_thread *t = self;
	ssize_t n;

	if (t)
		__atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELAXED);
	n = wr ? write(fd, v, sizeof(*v)) : read(fd, v, sizeof(*v));
	if (t)
		__atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELEASE);
	if (n == (ssize_t)sizeof(*v))
		return 0;
	if (n >= 0)
		return -EIO; /* an eventfd moves 8 bytes or none */
	return errno == EINTR ? -ETIMEDOUT : -errno;
}

int pfd_write_u64(int fd, uint64_t v)
{
	return guarded(fd, &v, true);
}

int pfd_read_u64(int fd, uint64_t *v)
{
	return guarded(fd, v, false);
}

bool pfd_is_eventfd(int fd)
{
	char path[64], link[64];
	ssize_t n;

	if (fd < 0 || fcntl(fd, F_GETFD) < 0)
		return false;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	/* No /proc (a sandbox without it): the kind cannot be told, so the fd is taken; the guard
	 * still stops a kick that does not drain or a call that blocks, this only costs a log
	 * line more. */
	if (n < 0)
		return errno == ENOENT && access("/proc/self/fd", F_OK) < 0;
	link[n] = '\0';
	return strcmp(link, "anon_inode:[eventfd]") == 0;
}
