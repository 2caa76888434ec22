// SPDX-License-Identifier: MIT
/*
 * Worker thread. Everything a handler touches is owned by this thread while the pair is attached;
 * other threads change it only through wrk_call(), which runs on this thread between handler
 * runs. The loop never blocks while work is pending (epoll timeout 0) and sleeps in epoll_wait
 * otherwise. Must never spin on a level-triggered fd it cannot make progress on: the backend fd
 * is unwatched for reading while the guest has no RX buffers, and watched for writing only after
 * the backend said it is full.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "virtap/log.h"
#include "virtap/pfd.h"
#include "virtap/wrk.h"

enum src_kind { SRC_CTL, SRC_RX_KICK, SRC_TX_KICK, SRC_BACKEND };

struct wrk_port;

struct wrk_src {
	enum src_kind kind;
	struct wrk_port *port;
	int fd;
};

struct wrk_port {
	struct vnet_qp *qp;
	struct wrk_src rx_kick, tx_kick, backend;
	bool rx_pending, tx_pending;
	bool rx_paused; /* backend not watched for reading */
	bool tx_wait;	/* backend watched for writing */
	unsigned be_events;
};

enum cmd_kind { CMD_ADD, CMD_REMOVE, CMD_CALL, CMD_REFRESH, CMD_STOP };

struct wrk_cmd {
	enum cmd_kind kind;
	struct vnet_qp *qp;
	void (*fn)(void *);
	void *arg;
	uint16_t rx_base, tx_base;
	int result;
	bool done;
};

struct wrk {
	char name[32];
	pthread_t tid;
	bool running;
	bool stop;
	int ep;
	struct wrk_src ctl;
	pthread_mutex_t call_lock; /* one command at a time */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct wrk_cmd *cmd;
	struct wrk_port *ports[WRK_MAX_PORTS];
	unsigned nports;
	unsigned rr;
	/* busy polling */
	unsigned poll_us; /* 0: never poll */
	bool polling;
	unsigned idle_spins;
	long long last_work_ns;
};

static long long mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static int ep_ctl(struct wrk *w, int op, struct wrk_src *s, unsigned events)
{
	struct epoll_event ev = {.events = events, .data.ptr = s};

	if (epoll_ctl(w->ep, op, s->fd, &ev) < 0)
		return -errno;
	return 0;
}

int wrk_create(struct wrk **out, const char *name)
{
	struct wrk *w = calloc(1, sizeof(*w));
	int err;

	if (!w)
		return -ENOMEM;
	snprintf(w->name, sizeof(w->name), "%s", name ? name : "wrk");
	pthread_mutex_init(&w->lock, NULL);
	pthread_mutex_init(&w->call_lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->ep = epoll_create1(EPOLL_CLOEXEC);
	w->ctl.kind = SRC_CTL;
	w->ctl.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->ep < 0 || w->ctl.fd < 0) {
		err = -errno;
		goto err_free;
	}
	err = ep_ctl(w, EPOLL_CTL_ADD, &w->ctl, EPOLLIN);
	if (err)
		goto err_free;
	*out = w;
	return 0;
err_free:
	if (w->ep >= 0)
		close(w->ep);
	if (w->ctl.fd >= 0)
		close(w->ctl.fd);
	free(w);
	return err;
}

static struct wrk_port *find_port(struct wrk *w, const struct vnet_qp *qp, unsigned *idx)
{
	for (unsigned i = 0; i < w->nports; i++) {
		if (w->ports[i]->qp == qp) {
			if (idx)
				*idx = i;
			return w->ports[i];
		}
	}
	return NULL;
}

/* Bring the backend fd's epoll interest in line with rx_paused / tx_wait. */
static void backend_watch(struct wrk *w, struct wrk_port *p)
{
	unsigned ev = (p->rx_paused ? 0 : EPOLLIN) | (p->tx_wait ? EPOLLOUT : 0);

	if (p->backend.fd < 0 || ev == p->be_events)
		return;
	if (ep_ctl(w, EPOLL_CTL_MOD, &p->backend, ev) == 0)
		p->be_events = ev;
}

static void watch_fd(struct wrk *w, struct wrk_src *s, struct wrk_port *p, enum src_kind k, int fd,
		     unsigned ev)
{
	s->kind = k;
	s->port = p;
	s->fd = fd;
	if (fd >= 0 && ep_ctl(w, EPOLL_CTL_ADD, s, ev) < 0) {
		vt_err("%s: cannot watch fd %d: %s", w->name, fd, strerror(errno));
		s->fd = -1;
	}
}

static void unwatch_fd(struct wrk *w, struct wrk_src *s)
{
	if (s->fd >= 0)
		epoll_ctl(w->ep, EPOLL_CTL_DEL, s->fd, NULL);
	s->fd = -1;
}

/* (Re)register a port's fds from its queue pair's current state. */
static void port_watch(struct wrk *w, struct wrk_port *p)
{
	struct vnet_qp *qp = p->qp;
	int be_fd = qp->be_ops ? qp->be_ops->fd(qp->be) : -1;

	unwatch_fd(w, &p->rx_kick);
	unwatch_fd(w, &p->tx_kick);
	unwatch_fd(w, &p->backend);
	watch_fd(w, &p->rx_kick, p, SRC_RX_KICK, qp->rx.kick_fd, EPOLLIN);
	watch_fd(w, &p->tx_kick, p, SRC_TX_KICK, qp->tx.kick_fd, EPOLLIN);
	/* Reading waits until the RX ring exists and has buffers. */
	p->rx_paused = !qp->rx.ready;
	p->tx_wait = false;
	p->be_events = p->rx_paused ? 0 : EPOLLIN;
	watch_fd(w, &p->backend, p, SRC_BACKEND, be_fd, p->be_events);
	/* Anything queued before we watched must not wait for a kick that already happened. */
	p->rx_pending = qp->rx.ready;
	p->tx_pending = qp->tx.ready;
}

static int do_add(struct wrk *w, struct vnet_qp *qp)
{
	struct wrk_port *p;

	if (find_port(w, qp, NULL))
		return -EEXIST;
	if (w->nports >= WRK_MAX_PORTS)
		return -ENOSPC;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->qp = qp;
	p->rx_kick.fd = p->tx_kick.fd = p->backend.fd = -1;
	port_watch(w, p);
	qp->poll_mode = w->polling;
	if (w->polling) {
		vq_disable_notify(&qp->rx);
		vq_disable_notify(&qp->tx);
	}
	w->ports[w->nports++] = p;
	return 0;
}

static int do_remove(struct wrk *w, struct wrk_cmd *c)
{
	unsigned i;
	struct wrk_port *p = find_port(w, c->qp, &i);

	if (!p)
		return -ENOENT;
	unwatch_fd(w, &p->rx_kick);
	unwatch_fd(w, &p->tx_kick);
	unwatch_fd(w, &p->backend);
	/* Publish anything staged so the driver sees every completed buffer (unless the frontend
	 * is being dropped for a call fd that blocked: its other call fds are no safer). */
	if (!vnet_qp_halted(c->qp)) {
		vq_notify(&c->qp->rx);
		vq_notify(&c->qp->tx);
		if (c->qp->rx.fd_stuck || c->qp->tx.fd_stuck)
			vnet_qp_peer_stuck(c->qp);
	}
	c->qp->poll_mode = false;
	c->rx_base = vq_stop(&c->qp->rx);
	c->tx_base = vq_stop(&c->qp->tx);
	w->ports[i] = w->ports[--w->nports];
	free(p);
	return 0;
}

static void run_cmd(struct wrk *w, struct wrk_cmd *c)
{
	struct wrk_port *p;

	switch (c->kind) {
	case CMD_ADD:
		c->result = do_add(w, c->qp);
		break;
	case CMD_REMOVE:
		c->result = do_remove(w, c);
		break;
	case CMD_CALL:
		c->fn(c->arg);
		c->result = 0;
		break;
	case CMD_REFRESH:
		p = find_port(w, c->qp, NULL);
		if (p)
			port_watch(w, p);
		c->result = p ? 0 : -ENOENT;
		break;
	case CMD_STOP:
		w->stop = true;
		c->result = 0;
		break;
	}
}

/* Hand a command to the worker thread (or run it here if there is none) and wait for it. */
static int submit(struct wrk *w, struct wrk_cmd *c)
{
	uint64_t one = 1;

	pthread_mutex_lock(&w->call_lock);
	if (!w->running || pthread_equal(pthread_self(), w->tid)) {
		run_cmd(w, c);
		pthread_mutex_unlock(&w->call_lock);
		return c->result;
	}
	pthread_mutex_lock(&w->lock);
	w->cmd = c;
	pthread_mutex_unlock(&w->lock);
	if (write(w->ctl.fd, &one, sizeof(one)) < 0)
		vt_err("%s: control eventfd write: %s", w->name, strerror(errno));
	pthread_mutex_lock(&w->lock);
	while (!c->done)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	pthread_mutex_unlock(&w->call_lock);
	return c->result;
}

static void handle_ctl(struct wrk *w)
{
	uint64_t v;
	struct wrk_cmd *c;

	if (read(w->ctl.fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		vt_err("%s: control eventfd read: %s", w->name, strerror(errno));
	pthread_mutex_lock(&w->lock);
	c = w->cmd;
	w->cmd = NULL;
	pthread_mutex_unlock(&w->lock);
	if (!c)
		return;
	run_cmd(w, c);
	pthread_mutex_lock(&w->lock);
	c->done = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/*
 * Take a kick. The kick fd is the frontend's eventfd, which we set non-blocking; a read that
 * sleeps (the frontend cleared O_NONBLOCK and drained it under us) is interrupted by the pfd
 * watchdog, and a descriptor that cannot be drained (not an eventfd: an embedder's pipe at EOF)
 * would be reported readable for ever. Either way the ring is dead to us: stop watching it, and
 * a blocked read halts the frontend's every pair (pfd.h).
 */
static void drain_kick(struct wrk *w, struct wrk_src *s, struct vnet_qp *qp, struct vq *vq)
{
	uint64_t v;
	int r = pfd_read_u64(s->fd, &v);

	if (r == 0) {
		vq->stats.kicks += v;
		return;
	}
	if (r == -EAGAIN)
		return;
	unwatch_fd(w, s);
	if (r == -ETIMEDOUT) {
		vq->fd_stuck = true;
		vq_mark_broken(vq, "the kick eventfd blocked (the frontend made it blocking and "
				   "drained it)");
		vnet_qp_peer_stuck(qp);
	} else {
		vq_mark_broken(vq, "the kick fd cannot be drained (%s): not an eventfd",
			       strerror(-r));
	}
}

static void dispatch(struct wrk *w, struct wrk_src *s, unsigned events)
{
	struct wrk_port *p = s->port;

	switch (s->kind) {
	case SRC_CTL:
		handle_ctl(w);
		break;
	case SRC_RX_KICK:
		drain_kick(w, s, p->qp, &p->qp->rx);
		/* The guest posted RX buffers: flush held frames, then resume reading. */
		p->rx_pending = true;
		if (p->rx_paused && !vq_is_broken(&p->qp->rx) && p->qp->rx.ready) {
			p->rx_paused = false;
			backend_watch(w, p);
		}
		break;
	case SRC_TX_KICK:
		drain_kick(w, s, p->qp, &p->qp->tx);
		p->tx_pending = true;
		break;
	case SRC_BACKEND:
		if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
			p->rx_pending = true;
		if (events & EPOLLOUT) {
			p->tx_pending = true;
			p->tx_wait = false;
			backend_watch(w, p);
		}
		break;
	}
}

static void run_rx(struct wrk *w, struct wrk_port *p)
{
	int r = vnet_handle_rx(p->qp);

	p->rx_pending = r == VNET_MORE;
	if (r == VNET_WAIT_GUEST || r < 0 || !p->qp->rx.ready) {
		/* Stop reading: the kernel's TAP queue holds (or drops) frames meanwhile. */
		p->rx_paused = true;
		backend_watch(w, p);
	}
}

static void run_tx(struct wrk *w, struct wrk_port *p)
{
	int r = vnet_handle_tx(p->qp);

	p->tx_pending = r == VNET_MORE;
	if (r == VNET_WAIT_BACKEND) {
		p->tx_wait = true;
		backend_watch(w, p);
	}
}

/* Frames a pair has moved or dropped so far: progress, for the busy-poll idle test. */
static uint64_t qp_progress(const struct vnet_qp *qp)
{
	const struct vnet_stats *s = &qp->stats;

	return s->rx_packets + s->tx_packets + s->rx_drop_too_big + s->tx_drop_bad_hdr +
	       s->tx_drop_backend + s->rx_drop_backend;
}

/* Run every pending handler once. Returns whether any is still pending; *moved is set when
 * some frame moved. */
static bool run_pending(struct wrk *w, bool *moved)
{
	unsigned n = w->nports;
	bool more = false;

	*moved = false;
	/* Round-robin start point: with many busy pairs, none is always first. */
	for (unsigned k = 0; k < n && k < w->nports; k++) {
		struct wrk_port *p = w->ports[(w->rr + k) % w->nports];
		uint64_t before = qp_progress(p->qp);

		if (p->tx_pending)
			run_tx(w, p);
		if (p->rx_pending)
			run_rx(w, p);
		more |= p->rx_pending || p->tx_pending;
		*moved |= qp_progress(p->qp) != before;
	}
	if (w->nports)
		w->rr = (w->rr + 1) % w->nports;
	return more;
}

/* Enter or leave busy polling. Leaving re-arms every ring's kicks and the backend watch;
 * returns true if work showed up while re-arming (then the caller keeps polling). */
static bool set_polling(struct wrk *w, bool on)
{
	bool work = false;

	for (unsigned i = 0; i < w->nports; i++) {
		struct wrk_port *p = w->ports[i];
		struct vnet_qp *qp = p->qp;

		qp->poll_mode = on;
		if (on) {
			vq_disable_notify(&qp->rx);
			vq_disable_notify(&qp->tx);
			continue;
		}
		work |= vq_enable_notify(&qp->tx);
		work |= vq_enable_notify(&qp->rx);
		if (p->rx_paused && qp->rx.ready && !vq_is_broken(&qp->rx)) {
			p->rx_paused = false;
			backend_watch(w, p);
		}
	}
	w->polling = on;
	w->idle_spins = 0;
	w->last_work_ns = mono_ns();
	if (work)
		return set_polling(w, true), true;
	return false;
}

/* One polling round: every ready pair is serviced whether or not anything signalled. */
static void poll_all(struct wrk *w)
{
	for (unsigned i = 0; i < w->nports; i++) {
		struct wrk_port *p = w->ports[i];

		p->tx_pending |= p->qp->tx.ready && !vq_is_broken(&p->qp->tx);
		p->rx_pending |= p->qp->rx.ready && !vq_is_broken(&p->qp->rx);
	}
}

static void *wrk_main(void *arg)
{
	struct wrk *w = arg;
	struct epoll_event evs[64];
	bool more = false, moved, registered;
	unsigned spin = 0;

	/* This thread signals and drains the frontends' eventfds: never for longer than the
	 * watchdog allows (pfd.h). Without it (no thread left for the watchdog) peer I/O here is
	 * unguarded, which the log says. */
	registered = pfd_thread_enter(w->name) == 1;
	while (!w->stop) {
		int n = 0;

		/* While polling, look at the fds (control, stray kicks) only every 64 rounds. */
		if (!w->polling || (spin++ & 63) == 0) {
			n = epoll_wait(w->ep, evs, 64, (more || w->polling) ? 0 : -1);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				vt_err("%s: epoll_wait: %s", w->name, strerror(errno));
				break;
			}
			for (int i = 0; i < n && !w->stop; i++) {
				struct wrk_src *s = evs[i].data.ptr;

				dispatch(w, s, evs[i].events);
				/* A command may have removed a pair and freed its sources, which
				 * later events of this batch still point at. Every fd is
				 * level-triggered: what is left is reported again next round. */
				if (s == &w->ctl)
					break;
			}
			if (w->stop)
				break;
		}
		if (w->polling)
			poll_all(w);
		more = run_pending(w, &moved);
		if (!w->poll_us)
			continue;
		if (!w->polling) {
			/* Traffic woke us: poll until it goes quiet again. */
			if (moved)
				set_polling(w, true);
			continue;
		}
		if (moved) {
			w->idle_spins = 0;
			continue;
		}
		if ((++w->idle_spins & 63) == 0) {
			long long now = mono_ns();

			if (w->idle_spins == 64)
				w->last_work_ns = now;
			else if (now - w->last_work_ns > (long long)w->poll_us * 1000)
				more = set_polling(w, false);
		}
	}
	if (registered)
		pfd_thread_leave();
	return NULL;
}

int wrk_start(struct wrk *w)
{
	int err;

	if (w->running)
		return -EALREADY;
	w->stop = false;
	err = -pthread_create(&w->tid, NULL, wrk_main, w);
	if (err) {
		vt_err("%s: cannot start thread: %s", w->name, strerror(-err));
		return err;
	}
	pthread_setname_np(w->tid, w->name);
	w->running = true;
	return 0;
}

void wrk_stop(struct wrk *w)
{
	struct wrk_cmd c = {.kind = CMD_STOP};

	if (!w->running)
		return;
	submit(w, &c);
	pthread_join(w->tid, NULL);
	w->running = false;
}

void wrk_destroy(struct wrk *w)
{
	if (!w)
		return;
	wrk_stop(w);
	while (w->nports) {
		struct wrk_cmd c = {.kind = CMD_REMOVE, .qp = w->ports[0]->qp};

		run_cmd(w, &c);
	}
	close(w->ctl.fd);
	close(w->ep);
	pthread_mutex_destroy(&w->lock);
	pthread_mutex_destroy(&w->call_lock);
	pthread_cond_destroy(&w->cond);
	free(w);
}

int wrk_add(struct wrk *w, struct vnet_qp *qp)
{
	struct wrk_cmd c = {.kind = CMD_ADD, .qp = qp};

	return submit(w, &c);
}

int wrk_remove(struct wrk *w, struct vnet_qp *qp, uint16_t *rx_base, uint16_t *tx_base)
{
	struct wrk_cmd c = {.kind = CMD_REMOVE, .qp = qp};
	int err = submit(w, &c);

	if (!err && rx_base)
		*rx_base = c.rx_base;
	if (!err && tx_base)
		*tx_base = c.tx_base;
	return err;
}

int wrk_call(struct wrk *w, void (*fn)(void *), void *arg)
{
	struct wrk_cmd c = {.kind = CMD_CALL, .fn = fn, .arg = arg};

	return submit(w, &c);
}

struct poll_cfg {
	struct wrk *w;
	unsigned idle_us;
};

static void apply_poll_cfg(void *arg)
{
	struct poll_cfg *c = arg;

	c->w->poll_us = c->idle_us;
	if (!c->idle_us && c->w->polling)
		set_polling(c->w, false);
}

int wrk_set_busy_poll(struct wrk *w, unsigned idle_us)
{
	struct poll_cfg c = {w, idle_us};

	return wrk_call(w, apply_poll_cfg, &c);
}

bool wrk_is_polling(const struct wrk *w)
{
	return __atomic_load_n(&w->polling, __ATOMIC_RELAXED);
}

int wrk_refresh(struct wrk *w, struct vnet_qp *qp)
{
	struct wrk_cmd c = {.kind = CMD_REFRESH, .qp = qp};

	return submit(w, &c);
}
