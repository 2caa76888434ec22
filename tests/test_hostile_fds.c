// SPDX-License-Identifier: MIT
/*
 * A frontend that hands the daemon hostile notification fds. The kick and call fds of a ring are
 * the frontend's, shared with us file description and all: it can clear O_NONBLOCK after we set
 * it, preload an eventfd's counter so that our next write() would overflow it, or pass something
 * that is no eventfd at all (a pipe that stays readable at EOF, an epoll fd that stays readable,
 * a full pipe). None of that may cost more than the hostile port itself: a worker that blocks in
 * a peer's write() or read() would stall every port it serves (a shared worker), and the next
 * detach, which waits for that worker on the one event-loop thread, would freeze every port's
 * control messages and the signals; a worker that spins on a kick that never drains burns a core.
 *
 * The real daemon (VT_BIN) with echo ports: "hostile" (H), "shared" (S, on worker w0), "own" (O,
 * a worker of its own), and "reload" (R, added by a SIGHUP). Each run starts a fresh daemon, puts
 * H on w0 with S or on a worker of its own (or on a busy-polling w0), connects S and O, then H
 * with one attack, and asserts only outcomes:
 *   - S and O move byte-exact echo traffic during the attack and after it, and a GET_FEATURES on
 *     their sessions is answered (the control loop is not frozen);
 *   - H is refused at the message that carries the fd (failed REPLY_ACK, or the connection
 *     closed), or the daemon closes H's connection within 2 s of the attack (for the kick
 *     eventfd race, where the worker may never lose a race, H may instead still serve);
 *   - after H hangs up, fresh connections to S and O answer GET_FEATURES within 2 s, H accepts
 *     a well-behaved frontend that passes traffic, the log says at most a few lines about H;
 *   - with a pipe or an epoll fd as kick, the daemon uses well under one core;
 *   - SIGHUP still reloads (port R appears), S and O and H pass traffic after it;
 *   - SIGTERM ends the daemon within 2 s with status 0, also (the "term" runs) while H's worker
 *     is stuck on H's fds and H is still connected.
 * Every wait is bounded; a watchdog kills the daemon and fails the test if anything hangs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/vhost/vu_proto.h"
#include "echoport.h"
#include "netns.h"
#include "vtproc.h"

enum { H, S, O, R, NPORTS };

#define EVFD_MAX   0xfffffffffffffffeull /* the most an eventfd counter holds */
#define H_MEM	   (2u << 20)
#define ATTACK_MS  1500 /* traffic on S and O while H attacks */
#define AFTER_MS   500	/* and after it */
#define DROP_MS	   2000 /* H must be refused or dropped within this of the attack */
#define LOG_LINES  5	/* lines about H from its attack to its hang-up */
#define CPU_MAX	   0.5	/* cores the daemon may use while a kick never drains */
#define STUCK_MS   100	/* a thread in read()/write() this long is stuck there */
#define WATCHDOG_S 170

enum attack {
	CALL_EVFD,  /* blocking call eventfds at the maximum count: signalling them blocks */
	KICK_EVFD,  /* blocking kick eventfds preloaded, drained by us in a race with the worker */
	KICK_PIPE,  /* a pipe at EOF as kick: readable forever, never drained */
	KICK_EPOLL, /* an epoll fd with a ready event as kick: readable forever, read() fails */
	CALL_PIPE,  /* a full blocking pipe as call: the signalling write blocks */
};

enum place {
	ON_W0,	   /* H on the shared worker w0 with S */
	OWN_WRK,   /* H on a worker of its own */
	ON_W0_POLL /* H and S on w0, which busy-polls */
};

struct run {
	enum attack a;
	enum place pl;
	bool term; /* SIGTERM while H holds its fds and may be stuck, instead of the full check */
};

static const char *const attack_name[] = {
    "blocking call eventfd at the maximum", "blocking kick eventfd drained in a race",
    "pipe at EOF as kick", "epoll fd as kick", "full blocking pipe as call"};
static const char *const place_name[] = {"on shared worker w0", "on its own worker",
					 "on busy-polling shared worker w0"};

static struct ep ports[NPORTS];
static struct ep_set set;

/* ---- cleanup, whatever happens ------------------------------------------------------------ */

static void remove_files(void)
{
	for (unsigned i = 0; i < NPORTS; i++)
		unlink(ports[i].sock);
	unlink(set.cfg);
	unlink(set.cfg_tmp);
	unlink(set.log);
	rmdir(set.dir);
}

static void kill_daemon(void)
{
	if (set.vt > 0) {
		kill(set.vt, SIGKILL);
		waitpid(set.vt, NULL, 0);
		set.vt = -1;
	}
}

/* exit() from a REQUIRE: no daemon or file may outlive the test. */
static void at_exit(void)
{
	kill_daemon();
	remove_files();
}

/* Async-signal-safe: the daemon's last words, then everything removed. */
static void on_alarm(int sig)
{
	static const char msg[] = "\ntest_hostile_fds: HANG: watchdog fired; daemon log tail:\n";
	char buf[4096];
	int fd = open(set.log, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	if (fd >= 0) {
		off_t end = lseek(fd, 0, SEEK_END);

		lseek(fd, end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0, SEEK_SET);
		n = read(fd, buf, sizeof(buf));
		if (n > 0 && write(2, buf, (size_t)n) < 0)
			_exit(1);
		close(fd);
	}
	if (set.vt > 0) {
		kill(set.vt, SIGKILL);
		waitpid(set.vt, NULL, 0);
	}
	for (unsigned i = 0; i < NPORTS; i++)
		unlink(ports[i].sock);
	unlink(set.cfg);
	unlink(set.log);
	rmdir(set.dir);
	_exit(1);
}

/* ---- small tools -------------------------------------------------------------------------- */

static void set_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0 && (fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

/* A blocking eventfd holding v. */
static int evfd_loaded(uint64_t v)
{
	int fd = eventfd(0, EFD_CLOEXEC);

	REQUIRE(fd >= 0);
	REQUIRE(write(fd, &v, 8) == 8);
	return fd;
}

/* Add 1 to a hostile eventfd, only if that cannot block us (it is blocking, and full while the
 * daemon has not read the preload). */
static void evfd_poke(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	uint64_t one = 1;

	if (poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) && write(fd, &one, 8) != 8) {
		/* another writer filled it between poll and write: cannot happen, nobody else
		 * writes a kick fd */
	}
}

/* True once the daemon has closed s (now, or within ms). */
static bool closed_by_peer(int s, int ms)
{
	return s >= 0 && vufe_peer_closed(s, ms > 1 ? ms : 1);
}

/* The daemon's CPU time (every thread), in seconds. */
static double cpu_s(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long ut = 0, st = 0;
	const char *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')');
	if (!p ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * Over one second: the daemon's CPU time per second of wall time (*cores), and the largest
 * share of samples (every 10 ms) in which one of its threads was runnable (*runnable). A
 * thread that spins is runnable in every sample even when other processes keep it off the
 * CPU, so the second figure does not depend on how loaded the machine is. -1 if unreadable.
 */
static void idle_check(double *cores, double *runnable)
{
	enum { NSAMP = 100, NTASK = 64 };
	int tid[NTASK], hits[NTASK], ntask = 0;
	double c0 = cpu_s(set.vt), c1;
	long long w0 = th_now_ms(), w1;

	*runnable = 0;
	for (unsigned k = 0; k < NSAMP; k++) {
		char path[64];
		struct dirent *e;
		DIR *d;

		snprintf(path, sizeof(path), "/proc/%d/task", (int)set.vt);
		d = opendir(path);
		if (!d) {
			*runnable = -1;
			break;
		}
		while ((e = readdir(d))) {
			char buf[512];
			const char *p;
			int t = atoi(e->d_name), i;
			FILE *f;
			size_t n;

			if (t <= 0)
				continue;
			snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)set.vt, t);
			f = fopen(path, "re");
			if (!f)
				continue;
			n = fread(buf, 1, sizeof(buf) - 1, f);
			fclose(f);
			buf[n] = 0;
			p = strrchr(buf, ')');
			if (!p || p[1] != ' ')
				continue;
			for (i = 0; i < ntask && tid[i] != t; i++)
				;
			if (i == ntask) {
				if (ntask == NTASK)
					continue;
				tid[ntask] = t;
				hits[ntask++] = 0;
			}
			hits[i] += p[2] == 'R';
		}
		closedir(d);
		usleep(10000);
	}
	for (int i = 0; i < ntask && *runnable >= 0; i++)
		if ((double)hits[i] / NSAMP > *runnable)
			*runnable = (double)hits[i] / NSAMP;
	c1 = cpu_s(set.vt);
	w1 = th_now_ms();
	*cores = c0 < 0 || c1 < 0 ? -1 : (c1 - c0) * 1000.0 / (double)(w1 - w0);
}

/*
 * Wait up to ms until a thread of the daemon other than its event loop (the main thread, which
 * writes the log) has sat in system call nr (read or write) for hold ms in a row: a worker stuck
 * on one of H's fds, since nothing of the daemon's own blocks in either. While no thread is in nr,
 * poke (if not NULL) adds 1 to H's two kick eventfds, each poke a new race between our drainers and
 * the worker. How long it waited, -1 if no thread stayed, -2 as soon as the daemon has closed sock
 * (if >= 0): it dealt with the stuck worker.
 */
static long long wait_stuck(long nr, int hold, int ms, const int *poke, int sock)
{
	enum { NTASK = 64 };
	int tid[NTASK], ntask = 0;
	long long since[NTASK], t0 = th_now_ms();

	while (th_now_ms() < t0 + ms) {
		char path[64];
		bool any = false;
		struct dirent *e;
		DIR *d;

		snprintf(path, sizeof(path), "/proc/%d/task", (int)set.vt);
		d = opendir(path);
		if (!d)
			return -1;
		while ((e = readdir(d))) {
			char buf[64];
			int t = atoi(e->d_name), i;
			FILE *f;
			bool in;

			if (t <= 0 || t == (int)set.vt)
				continue;
			snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)set.vt, t);
			f = fopen(path, "re");
			if (!f)
				continue;
			in = fgets(buf, sizeof(buf), f) && buf[0] >= '0' && buf[0] <= '9' &&
			     strtol(buf, NULL, 10) == nr;
			fclose(f);
			for (i = 0; i < ntask && tid[i] != t; i++)
				;
			if (i == ntask) {
				if (ntask == NTASK)
					continue;
				tid[ntask++] = t;
				since[i] = -1;
			}
			if (!in) {
				since[i] = -1;
				continue;
			}
			any = true;
			if (since[i] < 0)
				since[i] = th_now_ms();
			if (th_now_ms() - since[i] >= hold) {
				closedir(d);
				return th_now_ms() - t0;
			}
		}
		closedir(d);
		if (sock >= 0 && closed_by_peer(sock, 1))
			return -2;
		if (!any && poke) {
			evfd_poke(poke[0]);
			evfd_poke(poke[1]);
		}
		usleep(2000);
	}
	return -1;
}

/* ---- H: a frontend with hostile fds ----------------------------------------------------- */

static struct vufe hfe;
static bool hfe_init;
static uint32_t h_sent, h_rcvd;

enum hres {
	H_TOOK,	   /* every message acked */
	H_REFUSED, /* a message carrying a hostile fd was refused (failed ack, or hang-up) */
	H_DROPPED, /* the daemon hung up later in the start sequence */
	H_BROKEN,  /* no answer at all, or a step without a hostile fd failed */
};

/* H's start sequence (vufe_step's), with kick[ring] / call[ring] (>= 0) passed in place of the
 * frontend's own eventfds. Every fd H passes stays open here: the peer keeps its side. */
static enum hres hostile_start(const int *kick, const int *call)
{
	struct vufe_opts o = {.qsize = 256, .open_wait_ms = 5000};
	unsigned r0, nsteps;

	REQUIRE(vufe_init(&hfe, H_MEM, &o) == 0);
	hfe_init = true;
	h_sent = h_rcvd = 0;
	if (vufe_open_session(&hfe, ports[H].sock))
		return H_BROKEN;
	r0 = vufe_ring_step0(&hfe);
	nsteps = vufe_nsteps(&hfe);
	for (unsigned k = 0; k < nsteps; k++) {
		unsigned ring = k < r0 ? 0 : (k - r0) / 6, what = k < r0 ? 0 : (k - r0) % 6;
		int fd = k < r0 ? -1 : what == 3 ? kick[ring] : what == 4 ? call[ring] : -1;
		long r;

		if (fd < 0) {
			if (vufe_step(&hfe, k))
				continue;
			if (closed_by_peer(hfe.sock, 100))
				return H_DROPPED;
			fprintf(stderr, "  hostile: start step %u failed\n", k);
			return H_BROKEN;
		}
		r = vufe_call_vring_fd(hfe.sock, what == 3 ? VU_SET_VRING_KICK : VU_SET_VRING_CALL,
				       ring, fd);
		if (r == 1 || r == -1) {
			printf("  H refused at SET_VRING_%s of ring %u (%s)\n",
			       what == 3 ? "KICK" : "CALL", ring,
			       r == 1 ? "failed ack" : "hang-up");
			return H_REFUSED;
		}
		if (r != 0) {
			fprintf(stderr, "  hostile: no answer to SET_VRING_%s of ring %u\n",
				what == 3 ? "KICK" : "CALL", ring);
			return H_BROKEN;
		}
		/* The daemon may have set O_NONBLOCK on it: the description is ours too. */
		set_blocking(fd);
	}
	return H_TOOK;
}

/*
 * The same fd on a session without REPLY_ACK: the daemon cannot say no, so it must hang up. The
 * start sequence by hand (vufe_step asks for acks), a GET_FEATURES round trip first so that the
 * hostile message is the only thing the daemon can object to. True if it hung up within 2 s.
 */
static bool noack_refused(int fd, bool kick)
{
	struct vufe fe;
	struct vufe_opts o = {.qsize = 256, .open_wait_ms = 5000};
	uint64_t pf = 1ull << VU_PF_MQ, f, v;
	struct vu_mem_table t = {.nregions = 1};
	struct vu_vring_state st = {0, 256};
	struct vu_vring_addr a = {.index = 0};
	int s, mfd, r = -2;
	bool ok = false;

	REQUIRE(vufe_init(&fe, H_MEM, &o) == 0);
	if (vufe_open_session(&fe, ports[H].sock))
		goto out;
	s = fe.sock;
	f = fe.dev_features & ((1ull << VQ_F_VERSION_1) | (1ull << VU_F_PROTOCOL_FEATURES));
	t.regions[0] =
	    (struct vu_mem_region){FG_GPA_BASE, fe.g.size, vufe_uva(&fe, FG_GPA_BASE), 0};
	a.desc_user_addr = vufe_uva(&fe, fe.q[0].desc);
	a.used_user_addr = vufe_uva(&fe, fe.q[0].used);
	a.avail_user_addr = vufe_uva(&fe, fe.q[0].avail);
	mfd = fe.g.memfd;
	if (vufe_send_msg(s, VU_SET_PROTOCOL_FEATURES, VU_VERSION, &pf, 8, NULL, 0) ||
	    vufe_send_msg(s, VU_SET_OWNER, VU_VERSION, NULL, 0, NULL, 0) ||
	    vufe_send_msg(s, VU_SET_FEATURES, VU_VERSION, &f, 8, NULL, 0) ||
	    vufe_send_msg(s, VU_SET_MEM_TABLE, VU_VERSION, &t, 8 + sizeof(t.regions[0]), &mfd, 1) ||
	    vufe_send_msg(s, VU_SET_VRING_NUM, VU_VERSION, &st, sizeof(st), NULL, 0) ||
	    vufe_send_msg(s, VU_SET_VRING_BASE, VU_VERSION, &(struct vu_vring_state){0, 0},
			  sizeof(st), NULL, 0) ||
	    vufe_send_msg(s, VU_SET_VRING_ADDR, VU_VERSION, &a, sizeof(a), NULL, 0) ||
	    vufe_get_u64(s, VU_GET_FEATURES, &v)) {
		fprintf(stderr, "  no-ack session: the start sequence failed\n");
		goto out;
	}
	v = 0; /* ring 0, with an fd */
	if (vufe_send_msg(s, kick ? VU_SET_VRING_KICK : VU_SET_VRING_CALL, VU_VERSION, &v, 8, &fd,
			  1) == 0 &&
	    vufe_send_msg(s, VU_GET_FEATURES, VU_VERSION, NULL, 0, NULL, 0) == 0)
		r = vufe_recv_reply(s, VU_GET_FEATURES, &v, 8, NULL);
	else
		r = -1; /* it hung up before our next message */
	ok = r == -1;
	if (!ok)
		fprintf(stderr, "  no-ack session: SET_VRING_%s with a %s %s\n",
			kick ? "KICK" : "CALL", kick ? "pipe at EOF" : "full pipe",
			r >= 0 ? "was taken (GET_FEATURES after it answered)" : "got no answer");
out:
	vufe_close(&fe);
	return ok;
}

/* H's echo frames come back, with its kicks on the hostile kick eventfds. */
static bool h_echo_kicked(const int *kick)
{
	for (unsigned k = 0; k < 16; k++)
		if (vufe_echo_send(&hfe, 0x7f000000u | h_sent++) < 0)
			return false;
	evfd_poke(kick[0]);
	evfd_poke(kick[1]);
	while (h_rcvd != h_sent)
		if (!vufe_echo_expect(&hfe, 0x7f000000u | h_rcvd++, "hostile"))
			return false;
	return true;
}

/* ---- the kick eventfd race ---------------------------------------------------------------- */

struct drainer {
	pthread_t tid;
	int fd;
	bool on;
	atomic_bool stop;
};

/* Two per kick fd: the more readers wait, the likelier one of ours wins each race. */
static struct drainer drainers[4];

/* Blocking reads that race the worker's: whenever we win, the worker's read finds 0. They have
 * no timeout of their own: drainers_stop ends them by writing, within 2 s or the test fails. */
static void *drain_main(void *arg)
{
	struct drainer *d = arg;
	uint64_t v;

	while (!atomic_load(&d->stop)) {
		set_blocking(d->fd);
		if (read(d->fd, &v, 8) < 0 && errno == EAGAIN)
			usleep(1000); /* someone set O_NONBLOCK again; clear it next round */
	}
	return NULL;
}

static void drainers_start(const int *fds)
{
	for (unsigned i = 0; i < 4; i++) {
		struct drainer *d = &drainers[i];

		d->fd = fds[i / 2];
		atomic_store(&d->stop, false);
		REQUIRE(pthread_create(&d->tid, NULL, drain_main, d) == 0);
		d->on = true;
	}
}

/* A drainer blocked in read() wakes up with our next write; the worker or another drainer may
 * take it first, so keep writing until every thread is gone. */
static void drainers_stop(void)
{
	long long end = th_now_ms() + 2000;

	for (unsigned i = 0; i < 4; i++)
		atomic_store(&drainers[i].stop, true);
	for (unsigned i = 0; i < 4; i++) {
		struct drainer *d = &drainers[i];

		while (d->on && pthread_tryjoin_np(d->tid, NULL) != 0) {
			REQUIRE(th_now_ms() < end);
			evfd_poke(d->fd);
			usleep(1000);
		}
		d->on = false;
	}
}

/* ---- SIGTERM the moment a worker blocks ------------------------------------------------ */

/* A daemon that cuts a blocked call short leaves a few milliseconds in which the worker sits in
 * H's fd: a thread of ours watches for the first sighting and sends SIGTERM right then. */
struct termer {
	pthread_t tid;
	long nr;
	const int *poke;
	long long sent; /* when SIGTERM went */
	bool seen;	/* a thread was in nr then */
};

static void *term_main(void *arg)
{
	struct termer *t = arg;

	t->seen = wait_stuck(t->nr, 0, 3000, t->poke, -1) >= 0;
	t->sent = th_now_ms();
	kill(set.vt, SIGTERM);
	return NULL;
}

/* ---- one run ------------------------------------------------------------------------------ */

/* Traffic on every connected echo port (S and O, later H too): all of them passed. */
static bool traffic(void)
{
	unsigned tried, ok = ep_traffic(&set, 16, &tried);

	return tried && ok == tried;
}

static void configure(enum place pl)
{
	const char *w0 = pl == ON_W0_POLL ? "worker = w0\nbusy-poll = 200\n" : "worker = w0\n";

	for (unsigned i = 0; i < NPORTS; i++) {
		ports[i].present = i != R;
		ports[i].connected = false;
		ports[i].extra[0] = 0;
	}
	snprintf(ports[S].extra, sizeof(ports[S].extra), "%s", w0);
	if (pl != OWN_WRK)
		snprintf(ports[H].extra, sizeof(ports[H].extra), "%s", w0);
}

/* The fds H passes (per ring; -1: its own eventfd) and everything else of the attack we hold. */
struct arms {
	int kick[2], call[2];
	int held[4];
};

static void arm(enum attack a, struct arms *m)
{
	int p[2], efd;

	for (unsigned i = 0; i < 2; i++)
		m->kick[i] = m->call[i] = -1;
	for (unsigned i = 0; i < 4; i++)
		m->held[i] = -1;
	switch (a) {
	case CALL_EVFD:
		for (unsigned i = 0; i < 2; i++)
			m->held[i] = m->call[i] = evfd_loaded(EVFD_MAX);
		break;
	case KICK_EVFD:
		for (unsigned i = 0; i < 2; i++)
			m->held[i] = m->kick[i] = evfd_loaded(EVFD_MAX);
		break;
	case KICK_PIPE:
		REQUIRE(pipe2(p, O_CLOEXEC) == 0);
		close(p[1]); /* EOF forever */
		m->held[0] = m->kick[0] = m->kick[1] = p[0];
		break;
	case KICK_EPOLL:
		m->held[0] = m->kick[0] = m->kick[1] = epoll_create1(EPOLL_CLOEXEC);
		m->held[1] = efd = eventfd(1, EFD_CLOEXEC);
		REQUIRE(m->held[0] >= 0 && efd >= 0);
		REQUIRE(epoll_ctl(m->held[0], EPOLL_CTL_ADD, efd,
				  &(struct epoll_event){.events = EPOLLIN}) == 0);
		break;
	case CALL_PIPE: {
		static char junk[65536];

		REQUIRE(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
		for (size_t chunk = sizeof(junk); chunk; chunk /= 16)
			while (write(p[1], junk, chunk) > 0)
				;
		REQUIRE(errno == EAGAIN);
		set_blocking(p[1]);
		m->held[0] = p[0]; /* kept open: a reader gone would turn the block into EPIPE */
		m->held[1] = m->call[0] = m->call[1] = p[1];
		break;
	}
	}
}

static void disarm(struct arms *m)
{
	drainers_stop();
	for (unsigned i = 0; i < 4; i++)
		if (m->held[i] >= 0)
			close(m->held[i]);
}

/* SIGTERM: gone within 2 s, exit status 0. */
static void check_term(long long sent)
{
	long long t0 = sent >= 0 ? sent : th_now_ms();
	int left = (int)(t0 + 2000 - th_now_ms());
	int st = vtproc_stop(set.vt, sent >= 0 ? 0 : SIGTERM, left > 1 ? left : 1);

	set.vt = -1;
	if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		printf("  SIGTERM: exit 0 after %lld ms\n", th_now_ms() - t0);
		return;
	}
	CHECK(!"SIGTERM ends the daemon within 2 s with status 0");
	if (st < 0)
		fprintf(stderr, "  SIGTERM: still running after 2 s (killed)\n");
	else
		fprintf(stderr, "  SIGTERM: wait status %#x\n", st);
}

/* Fresh connections to S and O are answered: their frontends hang up and connect again. False
 * (checks failed) if the event loop no longer serves them. */
static bool check_fresh_sessions(void)
{
	for (unsigned i = S; i <= O; i++) {
		long long t0 = th_now_ms();
		int s;

		ep_down(&set, i);
		s = vufe_open(ports[i].sock, NULL, 2000);
		if (s < 0) {
			CHECK(!"a fresh connection to S / O answers GET_FEATURES within 2 s");
			fprintf(stderr,
				"  %s: no GET_FEATURES answer on a fresh connection: the event "
				"loop is frozen\n",
				ports[i].name);
			return false;
		}
		close(s);
		printf("  %s: fresh connection answered in %lld ms\n", ports[i].name,
		       th_now_ms() - t0);
	}
	return true;
}

static void run(const struct run *r)
{
	int fails0 = th_failures;
	long log_run, log0, hlines;
	long long t_attack, t_race, t_drop = -1;
	struct termer term = {0};
	struct arms m;
	enum hres hr = H_BROKEN;
	bool so_ok = true, h_served = false, stuck = false;

	printf("--- %s, H %s%s\n", attack_name[r->a], place_name[r->pl],
	       r->term ? ", SIGTERM while it holds them" : "");
	configure(r->pl);
	for (unsigned i = 0; i < NPORTS; i++)
		unlink(ports[i].sock);
	log_run = vtproc_log_count(set.log, NULL, false);
	if (log_run < 0)
		log_run = 0;
	if (!ep_daemon_start(&set)) {
		CHECK(!"daemon started");
		goto out_daemon;
	}
	CHECK(ep_up(&set, S));
	CHECK(ep_up(&set, O));
	if (!ports[S].connected || !ports[O].connected || !traffic()) {
		CHECK(!"S and O pass traffic before the attack");
		goto out_daemon;
	}

	/* Without REPLY_ACK the daemon cannot refuse an fd but by hanging up. */
	if (!r->term && r->pl == OWN_WRK && (r->a == KICK_PIPE || r->a == CALL_PIPE)) {
		arm(r->a, &m);
		CHECK(noack_refused(r->a == KICK_PIPE ? m.kick[0] : m.call[0], r->a == KICK_PIPE));
		disarm(&m);
	}

	arm(r->a, &m);
	log0 = vtproc_log_count(set.log, NULL, false);
	if (r->term) {
		term.nr = r->a == KICK_EVFD ? SYS_read : SYS_write;
		term.poke = r->a == KICK_EVFD ? m.kick : NULL;
		REQUIRE(pthread_create(&term.tid, NULL, term_main, &term) == 0);
	}
	hr = hostile_start(m.kick, m.call);
	t_attack = th_now_ms();
	/* A daemon that stops answering here has frozen its event loop on H's fds already (a
	 * detach waiting for a stuck worker): the checks below say what that costs. */
	CHECK(hr != H_BROKEN && "the daemon answers H's start sequence, or refuses its fds");
	if (hr == H_DROPPED)
		t_drop = t_attack;
	if (hr == H_TOOK) {
		/* Make the worker signal (call attacks) or read its kicks (kick attacks). */
		vufe_post_rx(&hfe, 128, VUFE_BUF);
		for (unsigned k = 0; k < 16; k++)
			vufe_echo_send(&hfe, 0x7f000000u | h_sent++);
		if (r->a == KICK_EVFD)
			drainers_start(m.kick);
		t_attack = th_now_ms();
	}

	if (r->term) {
		/* SIGTERM went (or goes) with H connected and every fd of the attack open. */
		pthread_join(term.tid, NULL);
		printf("  SIGTERM sent %s\n",
		       term.seen ? (r->a == KICK_EVFD ? "while a daemon thread was in read()"
						      : "while a daemon thread was in write()")
				 : "3 s into the attack (no daemon thread seen in a blocked call)");
		check_term(term.sent);
		goto out_arms;
	}

	if (r->a == KICK_PIPE || r->a == KICK_EPOLL) {
		/* S and O idle, no busy-poll anywhere: whatever the daemon burns is H's doing. */
		double cores, runnable;

		idle_check(&cores, &runnable);
		printf("  daemon with H's kick fd in place: %.2f cores, busiest thread runnable "
		       "%.0f %% of the time\n",
		       cores, 100 * runnable);
		CHECK(cores >= 0 && cores < CPU_MAX);
		CHECK(runnable >= 0 && runnable < CPU_MAX);
	}

	/* During the attack: S and O keep passing traffic; the kick race goes on. */
	while (th_now_ms() < t_attack + ATTACK_MS) {
		if (r->a == KICK_EVFD) {
			evfd_poke(m.kick[0]);
			evfd_poke(m.kick[1]);
		}
		if (!traffic()) {
			so_ok = false;
			break;
		}
		if (t_drop < 0 && (hr == H_TOOK || hr == H_BROKEN) && closed_by_peer(hfe.sock, 1))
			t_drop = th_now_ms();
		usleep(2000);
	}
	CHECK(so_ok && "S and O pass traffic during the attack");
	t_race = t_attack;
	if (r->a == KICK_EVFD && hr == H_TOOK && t_drop < 0) {
		/* Race on until the worker loses one and stays in its read(); the daemon must
		 * drop H within DROP_MS of that. */
		long long w = wait_stuck(SYS_read, STUCK_MS, 2000, m.kick, hfe.sock);

		stuck = w >= 0;
		if (w == -2)
			t_drop = t_attack = th_now_ms(); /* while the race was on: what we want */
		else
			printf("  %s\n",
			       stuck ? "the worker lost a race and is stuck in read() "
				       "on H's kick"
				     : "the worker never stayed stuck in read() on H's kick");
		if (stuck)
			t_attack = th_now_ms();
	}
	for (long long end = th_now_ms() + AFTER_MS; so_ok && th_now_ms() < end; usleep(2000)) {
		so_ok = traffic();
		CHECK(so_ok && "S and O pass traffic after the attack");
		if (t_drop < 0 && (hr == H_TOOK || hr == H_BROKEN) && closed_by_peer(hfe.sock, 1))
			t_drop = th_now_ms();
	}
	/* The control loop still answers the sessions it has, with H's fds in place. */
	for (unsigned i = S; i <= O; i++) {
		uint64_t f;

		if (vufe_get_u64(ports[i].fe.sock, VU_GET_FEATURES, &f)) {
			CHECK(!"S / O sessions answer GET_FEATURES with H's fds in place");
			fprintf(stderr, "  %s: no answer to GET_FEATURES on its session\n",
				ports[i].name);
			break; /* one event loop serves them all */
		}
	}

	/* H: refused at the message, or dropped within DROP_MS of the attack. */
	if ((hr == H_TOOK || hr == H_BROKEN) && t_drop < 0 &&
	    closed_by_peer(hfe.sock, (int)(t_attack + DROP_MS - th_now_ms())))
		t_drop = th_now_ms();
	if (hr == H_TOOK && t_drop < 0 && r->a == KICK_EVFD && !stuck) {
		/* The worker won every race (or never blocks in a read): then H must be served
		 * as ever, once nothing steals its kicks. */
		drainers_stop();
		h_served = h_echo_kicked(m.kick);
	}
	if (hr == H_REFUSED)
		printf("  H: refused at the message\n");
	else if (t_drop >= 0 && t_drop <= t_attack)
		printf("  H: the daemon hung up %lld ms after the attack began\n", t_drop - t_race);
	else if (t_drop >= 0)
		printf("  H: the daemon hung up %lld ms after the attack%s\n", t_drop - t_attack,
		       stuck ? " had the worker stuck" : "");
	else if (h_served)
		printf("  H: still connected and served\n");
	else
		fprintf(stderr, "  H: still connected %d ms after the attack, and not served\n",
			DROP_MS);
	CHECK(hr == H_REFUSED || (t_drop >= 0 && t_drop - t_attack <= DROP_MS) || h_served);

	/* H hangs up; its fds stay open here. The daemon's detach must not wait on a stuck
	 * worker: fresh sessions on S and O are answered. */
	vufe_disconnect(&hfe);
	if (!check_fresh_sessions())
		goto out_term;
	/* Rate-limited: a few lines about H's fds, not one per failed call or per ring. */
	printf("  log: lines about H from its attack to its hang-up:\n");
	hlines = vtproc_log_count_range(set.log, ports[H].name, log0,
					vtproc_log_count(set.log, NULL, false), true);
	CHECK(hlines >= 0 && hlines <= LOG_LINES);
	/* H recovers: a well-behaved frontend is served (the daemon may refuse connections
	 * for a moment after dropping H; ep_up retries for 5 s). */
	CHECK(ep_up(&set, S));
	CHECK(ep_up(&set, O));
	CHECK(ep_up(&set, H));
	CHECK(traffic() && "H, S, O pass traffic after H hung up");

	/* SIGHUP: the config is read again (R appears) and the ports go on. */
	ports[R].present = true;
	CHECK(ep_reload(&set) && "SIGHUP adds port R");
	CHECK(traffic() && "H, S, O pass traffic after the reload");

out_term:
	check_term(-1);
out_arms:
	disarm(&m);
	if (hfe_init)
		vufe_close(&hfe);
	hfe_init = false;
out_daemon:
	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].connected)
			ep_down(&set, i);
	kill_daemon();
	if (th_failures != fails0) {
		fprintf(stderr, "  FAILED; daemon log of this run:\n");
		fflush(stdout);
		vtproc_log_count_range(set.log, NULL, log_run, -1, true);
	}
	fflush(stdout);
}

int main(void)
{
	static const struct run runs[] = {
	    {CALL_EVFD, ON_W0, false},	    {CALL_EVFD, OWN_WRK, false},
	    {CALL_EVFD, ON_W0_POLL, false}, {KICK_EVFD, ON_W0, false},
	    {KICK_EVFD, OWN_WRK, false},    {KICK_PIPE, ON_W0, false},
	    {KICK_PIPE, OWN_WRK, false},    {KICK_EPOLL, OWN_WRK, false},
	    {CALL_PIPE, ON_W0, false},	    {CALL_PIPE, OWN_WRK, false},
	    {CALL_EVFD, ON_W0, true},	    {CALL_EVFD, OWN_WRK, true},
	    {KICK_EVFD, ON_W0, true},
	};
	static const char *const names[NPORTS] = {"hostile", "shared", "own", "reload"};
	long long t0 = th_now_ms();
	/* VT_HF_RUN=N: only run N (0-based), to look at one attack. */
	const char *only = getenv("VT_HF_RUN");

	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	vtproc_bin();
	ep_set_init(&set, ports, NPORTS, "hf");
	for (unsigned i = 0; i < NPORTS; i++)
		ep_name(&set, i, names[i]);
	atexit(at_exit);
	alarm(WATCHDOG_S);

	for (unsigned i = 0; i < sizeof(runs) / sizeof(runs[0]); i++)
		if (!only || atoi(only) == (int)i)
			run(&runs[i]);

	alarm(0);
	printf("%zu runs in %lld ms\n", sizeof(runs) / sizeof(runs[0]), th_now_ms() - t0);
	ep_set_fini(&set);
	remove_files();
	return th_done("hostile_fds");
}
