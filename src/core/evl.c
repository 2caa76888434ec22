// SPDX-License-Identifier: MIT
/*
 * Control-plane event loop: epoll over registered fds plus a short list of one-shot timers
 * (reconnect intervals). Callbacks may add and remove fds, including their own.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "virtap/evl.h"
#include "virtap/pfd.h"

#define EVL_MAX_TIMERS 256

struct evl_watch {
	int fd;
	evl_fd_fn fn;
	void *arg;
	struct evl_watch *next;
	bool dead;
};

struct evl_tmr {
	long id;
	long long due_ms;
	evl_timer_fn fn;
	void *arg;
};

struct evl {
	int ep;
	bool stop;
	struct evl_watch *watches;
	struct evl_tmr timers[EVL_MAX_TIMERS];
	unsigned ntimers;
	long next_id;
};

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int evl_create(struct evl **out)
{
	struct evl *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	if (l->ep < 0) {
		int err = -errno;

		free(l);
		return err;
	}
	*out = l;
	return 0;
}

static void reap(struct evl *l)
{
	struct evl_watch **pp = &l->watches;

	while (*pp) {
		struct evl_watch *w = *pp;

		if (w->dead) {
			*pp = w->next;
			free(w);
		} else {
			pp = &w->next;
		}
	}
}

void evl_destroy(struct evl *l)
{
	if (!l)
		return;
	for (struct evl_watch *w = l->watches; w; w = w->next)
		w->dead = true;
	reap(l);
	close(l->ep);
	free(l);
}

static struct evl_watch *find(struct evl *l, int fd)
{
	for (struct evl_watch *w = l->watches; w; w = w->next)
		if (!w->dead && w->fd == fd)
			return w;
	return NULL;
}

int evl_add(struct evl *l, int fd, unsigned events, evl_fd_fn fn, void *arg)
{
	struct evl_watch *w;
	struct epoll_event ev = {.events = events};

	if (find(l, fd))
		return -EEXIST;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->fn = fn;
	w->arg = arg;
	ev.data.ptr = w;
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = -errno;

		free(w);
		return err;
	}
	w->next = l->watches;
	l->watches = w;
	return 0;
}

int evl_mod(struct evl *l, int fd, unsigned events)
{
	struct evl_watch *w = find(l, fd);
	struct epoll_event ev = {.events = events};

	if (!w)
		return -ENOENT;
	ev.data.ptr = w;
	return epoll_ctl(l->ep, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

void evl_del(struct evl *l, int fd)
{
	struct evl_watch *w = find(l, fd);

	if (!w)
		return;
	epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
	/* Freed after the current dispatch round: an event for it may still be in hand. */
	w->dead = true;
}

long evl_timer(struct evl *l, unsigned ms, evl_timer_fn fn, void *arg)
{
	struct evl_tmr *t;

	if (l->ntimers == EVL_MAX_TIMERS)
		return -ENOSPC;
	t = &l->timers[l->ntimers++];
	t->id = ++l->next_id;
	t->due_ms = now_ms() + ms;
	t->fn = fn;
	t->arg = arg;
	return t->id;
}

void evl_timer_cancel(struct evl *l, long id)
{
	for (unsigned i = 0; i < l->ntimers; i++) {
		if (l->timers[i].id == id) {
			l->timers[i] = l->timers[--l->ntimers];
			return;
		}
	}
}

static int next_timeout(struct evl *l)
{
	long long now = now_ms(), best = -1;

	for (unsigned i = 0; i < l->ntimers; i++) {
		long long d = l->timers[i].due_ms - now;

		if (d < 0)
			d = 0;
		if (best < 0 || d < best)
			best = d;
	}
	return best < 0 ? -1 : (int)best;
}

static void run_timers(struct evl *l)
{
	long long now = now_ms();

	for (unsigned i = 0; i < l->ntimers;) {
		struct evl_tmr t = l->timers[i];

		if (t.due_ms > now) {
			i++;
			continue;
		}
		l->timers[i] = l->timers[--l->ntimers];
		t.fn(t.arg);
	}
}

int evl_poll(struct evl *l, int timeout_ms)
{
	struct epoll_event evs[32];
	int t = next_timeout(l), n;

	if (t < 0 || (timeout_ms >= 0 && timeout_ms < t))
		t = timeout_ms;
	n = epoll_wait(l->ep, evs, 32, t);
	if (n < 0 && errno != EINTR)
		return -errno;
	for (int i = 0; i < n && !l->stop; i++) {
		struct evl_watch *w = evs[i].data.ptr;

		if (!w->dead)
			w->fn(w->arg, w->fd, evs[i].events);
	}
	reap(l);
	run_timers(l);
	return 0;
}

int evl_run(struct evl *l)
{
	int err = 0;
	bool registered;

	/* The control loop may signal a frontend's call fds while it tears a pair down (after its
	 * worker stopped): guarded like a worker's (pfd.h). */
	registered = pfd_thread_enter("vt-control") == 1;
	l->stop = false;
	while (!l->stop && !err)
		err = evl_poll(l, -1);
	if (registered)
		pfd_thread_leave();
	return err;
}

void evl_stop(struct evl *l)
{
	l->stop = true;
}
