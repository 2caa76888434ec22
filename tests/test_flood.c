// SPDX-License-Identifier: MIT
/*
 * Floods against the real daemon (VT_BIN) with three ports (echo backend): A carries a frontend
 * whose traffic runs byte-exact in a thread of its own the whole time, B takes the floods, C is
 * a probe of the control loop. Issue 5, "floods of connections and of messages":
 *   a. connections to B: thousands connected and closed at once, hundreds held at the same
 *      time (one is served, every other one is closed by the daemon at once), half a message
 *      then gone; then the same while B serves a real frontend, which keeps its traffic;
 *   b. messages: one connection sends valid and invalid requests (bogus ring indices, unknown
 *      requests, features never offered, fds that must be closed) as fast as the socket takes
 *      them while C must still answer a new frontend within a second, then garbage;
 *   c. afterwards the daemon holds exactly the fds it held before, its anonymous memory is
 *      within a slack of where it was (means of three samples), and B serves a real frontend.
 * During every flood A's frames must keep moving (no second without one), and the daemon's log
 * grows by a bounded number of lines however many connections or bad messages there were.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/vhost/vu_proto.h"
#include "netns.h"
#include "rig.h"
#include "vtproc.h"
#include "vufe.h"

#define F(b) (1ull << (b))
#define MEM  (2u << 20)
#if defined(__SANITIZE_ADDRESS__)
/* The daemon is built with ASan too: freed memory sits in ASan's quarantine, so resident memory
 * measures the quarantine; LeakSanitizer at the daemon's exit measures leaks (exit status). */
#define ANON_SLACK_KB (64 * 1024)
#else
#define ANON_SLACK_KB 2048
#endif
#define MAX_GAP_MS    1000 /* longest time A may go without a frame during a flood */
#define FLOOD_MS      2500 /* how long each timed flood runs at most */
#define FLOOD_MIN_MS  1000 /* and at least: long enough to see A move during it */
#define HOLD	      256  /* connections held at once */
#define LOG_MAX_FLOOD 120  /* log lines one flood may add, however big */

static char dir[64], log_path[108], sock_a[108], sock_b[108], sock_c[108];
static pid_t vt = -1;
static long long t_start;

/* ---- A: byte-exact echo traffic in a thread -------------------------------------------- */

struct traffic {
	struct vufe fe;
	pthread_t tid;
	unsigned frames; /* echoed byte-exact (atomic) */
	unsigned bad;	 /* lost, wrong or malformed (atomic) */
	bool stop;	 /* atomic */
	uint32_t sent, rcvd;
};

static struct traffic ta;

static void *traffic_main(void *arg)
{
	struct traffic *t = arg;

	while (!__atomic_load_n(&t->stop, __ATOMIC_RELAXED)) {
		if (!vufe_echo_round(&t->fe, &t->sent, &t->rcvd)) {
			__atomic_fetch_add(&t->bad, 1, __ATOMIC_RELAXED);
			break; /* the sequence is lost: stop rather than count every frame after */
		}
		__atomic_fetch_add(&t->frames, 16, __ATOMIC_RELAXED);
	}
	return NULL;
}

static unsigned a_frames(void)
{
	return __atomic_load_n(&ta.frames, __ATOMIC_RELAXED);
}

/* Watching A during a flood: the longest time without a frame. */
struct watch {
	long long t0, t_last;
	unsigned f0, f_last;
	long long max_gap;
};

static void watch_start(struct watch *w)
{
	w->t0 = w->t_last = th_now_ms();
	w->f0 = w->f_last = a_frames();
	w->max_gap = 0;
}

static void watch_tick(struct watch *w)
{
	long long now = th_now_ms();
	unsigned f = a_frames();

	if (f != w->f_last) {
		w->f_last = f;
		w->t_last = now;
	} else if (now - w->t_last > w->max_gap) {
		w->max_gap = now - w->t_last;
	}
}

/* A moved during the flood, never stalling for MAX_GAP_MS. */
static void watch_check(struct watch *w, const char *what)
{
	watch_tick(w);
	printf("  %s: A echoed %u frames in %lld ms (longest pause %lld ms)\n", what,
	       w->f_last - w->f0, th_now_ms() - w->t0, w->max_gap);
	CHECK(w->f_last - w->f0 >= 64);
	CHECK(w->max_gap < MAX_GAP_MS);
	CHECK(__atomic_load_n(&ta.bad, __ATOMIC_RELAXED) == 0);
}

/* ---- the daemon ------------------------------------------------------------------------------ */

struct usage {
	int fds;
	long anon; /* kB, mean of three samples */
};

static void usage_take(struct usage *u)
{
	long sum = 0;

	u->fds = vtproc_nfds(vt);
	for (int i = 0; i < 3; i++) {
		sum += vtproc_status_kb(vt, "RssAnon");
		usleep(100000);
	}
	u->anon = sum / 3;
}

static long log_count(const char *needle)
{
	return vtproc_log_count(log_path, needle, false);
}

/* ---- raw connections ---------------------------------------------------------------------- */

/* Connect without blocking on a full backlog: retry while the daemon works through it. */
static int flood_connect(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	long long end = th_now_ms() + VUFE_WAIT_MS;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	for (;;) {
		int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

		if (s < 0)
			return -1;
		if (connect(s, (struct sockaddr *)&a, sizeof(a)) == 0)
			return s;
		close(s);
		if (errno != EAGAIN || th_now_ms() > end)
			return -1;
		usleep(200);
	}
}

/* The peer closed s within ms (EOF or reset). */
static bool closed_within(int s, int ms)
{
	return vufe_peer_closed(s, ms);
}

/* A round trip on a new connection to C: milliseconds, or -1. */
static long long probe_c(void)
{
	long long t0 = th_now_ms();
	int s = vufe_open(sock_c, NULL, 1500);

	if (s < 0)
		return -1;
	close(s);
	return th_now_ms() - t0;
}

/* ---- a. connection floods ------------------------------------------------------------------ */

static void flood_connect_close(const char *what, unsigned max)
{
	struct watch w;
	unsigned n = 0, failed = 0;
	long long end = th_now_ms() + FLOOD_MS, min_end = end - FLOOD_MS + FLOOD_MIN_MS;

	watch_start(&w);
	while ((n < max || th_now_ms() < min_end) && th_now_ms() < end) {
		int s = flood_connect(sock_b);

		if (s < 0)
			failed++;
		else
			close(s);
		n++;
		if (!(n % 32))
			watch_tick(&w);
	}
	printf("%s: %u connections opened and closed, %u failed to connect\n", what, n, failed);
	CHECK(n >= 500);
	CHECK(failed == 0);
	watch_check(&w, what);
}

static void flood_half_messages(void)
{
	struct vu_hdr h = {.request = VU_SET_VRING_NUM, .flags = VU_VERSION, .size = 8};
	uint8_t msg[sizeof(h) + 8];
	struct watch w;
	unsigned n = 0, failed = 0, refused = 0;
	long long end = th_now_ms() + FLOOD_MS, min_end = end - FLOOD_MS + FLOOD_MIN_MS;

	memcpy(msg, &h, sizeof(h));
	memset(msg + sizeof(h), 0, 8);
	watch_start(&w);
	while ((n < 2000 || th_now_ms() < min_end) && th_now_ms() < end) {
		int s = flood_connect(sock_b);
		/* Half a header, a whole header without its payload, or most of the payload. */
		size_t cut = n % 3 == 0 ? sizeof(h) / 2 : n % 3 == 1 ? sizeof(h) : sizeof(msg) - 1;

		/* A send can fail when the daemon was still serving the connection before (it
		 * has not seen that hang-up yet) and refused this one. */
		if (s < 0)
			failed++;
		else if (send(s, msg, cut, MSG_NOSIGNAL) != (ssize_t)cut)
			refused++;
		if (s >= 0)
			close(s);
		n++;
		if (!(n % 32))
			watch_tick(&w);
	}
	printf("half messages: %u connections sent part of a message and hung up (%u found "
	       "themselves refused first), %u failed to connect\n",
	       n, refused, failed);
	CHECK(n >= 300);
	CHECK(failed == 0);
	watch_check(&w, "half messages");
}

/* HOLD connections at once while B has no frontend: the first is served, the rest are closed
 * by the daemon straight away and cost it no fd. */
static void flood_hold_idle(int fds_base)
{
	static int s[HOLD];
	unsigned closed = 0;
	uint64_t f = 0;
	int fds_held;
	struct watch w;
	int served = -1;

	watch_start(&w);
	for (unsigned i = 0; i < HOLD; i++) {
		s[i] = flood_connect(sock_b);
		REQUIRE(s[i] >= 0);
	}
	/* Usually the first; a later one if the daemon had not yet seen the last hang-up of the
	 * flood before. */
	for (unsigned i = 0; i < HOLD; i++) {
		if (closed_within(s[i], served < 0 ? 300 : VUFE_WAIT_MS))
			closed++;
		else if (served < 0)
			served = (int)i;
		if (!(i % 16))
			watch_tick(&w);
	}
	/* The one left open is B's frontend now: it gets answers. */
	CHECK(served >= 0);
	if (served >= 0) {
		int fl = fcntl(s[served], F_GETFL);

		fcntl(s[served], F_SETFL, fl & ~O_NONBLOCK);
		CHECK(vufe_get_u64(s[served], VU_GET_FEATURES, &f) == 0 && (f & F(VQ_F_VERSION_1)));
	}
	fds_held = vtproc_nfds(vt);
	printf("hold: %u connections at once; the daemon served #%d, closed %u of the other %u; "
	       "its fds %d (idle %d)\n",
	       HOLD, served, closed, HOLD - 1, fds_held, fds_base);
	CHECK(closed == HOLD - 1);
	CHECK(fds_held == fds_base + 1);
	for (unsigned i = 0; i < HOLD; i++)
		close(s[i]);
	CHECK(vtproc_nfds_settle(vt, fds_base, VUFE_WAIT_MS) == fds_base);
	watch_check(&w, "hold");
}

/* B serves a real frontend: a flood of connections (closed and held) is refused, the frontend
 * keeps its traffic, and the log says so a bounded number of times. */
static void flood_busy_port(void)
{
	static int s[HOLD / 2];
	static struct vufe fb;
	struct vufe_opts o = {.qsize = 256};
	uint32_t sent = 0, rcvd = 0;
	unsigned n = 0, refused = 0;
	long lines0 = log_count(NULL), refusals;
	long long end, min_end;
	struct watch w;

	REQUIRE(vufe_connect_opts(&fb, sock_b, MEM, &o) == 0);
	REQUIRE(vufe_post_rx(&fb, 128, VUFE_BUF) == 128);
	CHECK(vufe_echo_round(&fb, &sent, &rcvd));
	watch_start(&w);
	end = th_now_ms() + FLOOD_MS;
	min_end = end - FLOOD_MS + FLOOD_MIN_MS;
	while ((n < 3000 || th_now_ms() < min_end) && th_now_ms() < end) {
		int c = flood_connect(sock_b);

		if (c >= 0) {
			refused += closed_within(c, VUFE_WAIT_MS);
			close(c);
		}
		n++;
		if (!(n % 64)) {
			watch_tick(&w);
			/* B's own frontend is never disturbed by the others. */
			CHECK(vufe_echo_round(&fb, &sent, &rcvd));
		}
	}
	for (unsigned i = 0; i < HOLD / 2; i++)
		s[i] = flood_connect(sock_b);
	for (unsigned i = 0; i < HOLD / 2; i++) {
		refused += s[i] >= 0 && closed_within(s[i], VUFE_WAIT_MS);
		if (s[i] >= 0)
			close(s[i]);
	}
	n += HOLD / 2;
	CHECK(vufe_echo_round(&fb, &sent, &rcvd));
	refusals = log_count("refused another frontend");
	printf("busy port: %u connections while B served a frontend, %u refused at once; B's "
	       "frontend echoed %u frames meanwhile; log: +%ld lines (%ld refusal lines since the "
	       "start, %lld s ago)\n",
	       n, refused, sent, log_count(NULL) - lines0, refusals,
	       (th_now_ms() - t_start) / 1000);
	CHECK(refused == n);
	/* Refusals are logged with a running total once per 10 s interval. */
	CHECK(refusals >= 1 && refusals <= 1 + (th_now_ms() - t_start) / 10000);
	CHECK(log_count(NULL) - lines0 <= LOG_MAX_FLOOD);
	watch_check(&w, "busy port");
	vufe_close(&fb);
}

/* ---- b. message flood ------------------------------------------------------------------------ */

struct drain {
	int s;
	bool stop;		  /* atomic */
	unsigned long long bytes; /* atomic */
	bool eof;		  /* atomic */
};

static void *drain_main(void *arg)
{
	struct drain *d = arg;
	static uint8_t buf[65536];

	while (!__atomic_load_n(&d->stop, __ATOMIC_RELAXED)) {
		struct pollfd p = {.fd = d->s, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, 50) != 1)
			continue;
		n = recv(d->s, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			__atomic_store_n(&d->eof, true, __ATOMIC_RELAXED);
			break;
		}
		if (n > 0)
			__atomic_fetch_add(&d->bytes, (unsigned long long)n, __ATOMIC_RELAXED);
	}
	return NULL;
}

struct sender {
	int s, efd;
	struct drain *d;
	bool stop; /* atomic */
	unsigned long long msgs, replies, with_fd;
	bool failed;
};

/*
 * Batches of requests as fast as the socket takes them: most answered with a 20-byte reply (a
 * u64 or an ack), some valid ones without a reply. At most WINDOW replies outstanding: the
 * daemon never queues replies (a frontend that does not read them is dropped once the socket
 * is full, which is not what this flood is about).
 */
#define WINDOW 128

static void *sender_main(void *arg)
{
	struct sender *sd = arg;
	uint8_t batch[1024];

	while (!__atomic_load_n(&sd->stop, __ATOMIC_RELAXED)) {
		struct vu_vring_state bogus_num = {999, 256}, bad_enable = {0, 7},
				      bad_base = {77, 1};
		struct vu_vring_state num0 = {0, 256}, base0 = {0, 0};
		uint64_t never = F(63), call = 99;
		uint32_t ack = VU_VERSION | VU_FLAG_NEED_REPLY;
		size_t len = 0;
		unsigned k = 0;

		while (sd->replies - __atomic_load_n(&sd->d->bytes, __ATOMIC_RELAXED) / 20 >
			   WINDOW &&
		       !__atomic_load_n(&sd->d->eof, __ATOMIC_RELAXED) &&
		       !__atomic_load_n(&sd->stop, __ATOMIC_RELAXED))
			usleep(20);

		len += vufe_msg_put(batch + len, VU_GET_FEATURES, VU_VERSION, NULL, 0), k++;
		len += vufe_msg_put(batch + len, VU_SET_VRING_NUM, ack, &bogus_num, 8), k++;
		len += vufe_msg_put(batch + len, VU_SET_VRING_ENABLE, ack, &bad_enable, 8), k++;
		len += vufe_msg_put(batch + len, VU_SET_VRING_BASE, ack, &bad_base, 8), k++;
		len += vufe_msg_put(batch + len, VU_GET_QUEUE_NUM, VU_VERSION, NULL, 0), k++;
		len += vufe_msg_put(batch + len, 200 /* unknown */, ack, NULL, 0), k++;
		len += vufe_msg_put(batch + len, VU_SET_FEATURES, ack, &never, 8), k++;
		len += vufe_msg_put(batch + len, VU_GET_PROTOCOL_FEATURES, VU_VERSION, NULL, 0),
		    k++;
		len += vufe_msg_put(batch + len, VU_GET_MAX_MEM_SLOTS, VU_VERSION, NULL, 0), k++;
		/* valid, no reply: ring 0 is not started, so its size and base may change */
		len += vufe_msg_put(batch + len, VU_SET_VRING_NUM, VU_VERSION, &num0, 8);
		len += vufe_msg_put(batch + len, VU_SET_VRING_BASE, VU_VERSION, &base0, 8);
		len += vufe_msg_put(batch + len, VU_SET_OWNER, VU_VERSION, NULL, 0);
		if (vufe_send_raw(sd->s, batch, len, NULL, 0) ||
		    /* an fd on a ring that does not exist: refused, and the fd closed */
		    vufe_send_msg(sd->s, VU_SET_VRING_CALL, ack, &call, 8, &sd->efd, 1)) {
			sd->failed = true;
			break;
		}
		sd->msgs += k + 4;
		sd->replies += k + 1;
		sd->with_fd++;
	}
	return NULL;
}

static void flood_messages(int fds_base)
{
	struct drain d = {0};
	struct sender sd = {0};
	pthread_t dt, st;
	uint64_t pf = F(VU_PF_REPLY_ACK);
	long long worst = 0, end, t;
	unsigned probes = 0, probes_failed = 0;
	long lines0 = log_count(NULL), lines;
	struct usage u0, u1;
	struct watch w;

	usage_take(&u0);
	sd.d = &d;
	d.s = sd.s = vufe_sock_connect(sock_b);
	REQUIRE(d.s >= 0);
	sd.efd = eventfd(0, EFD_CLOEXEC);
	REQUIRE(sd.efd >= 0);
	REQUIRE(vufe_send_msg(sd.s, VU_SET_PROTOCOL_FEATURES, VU_VERSION, &pf, 8, NULL, 0) == 0);
	REQUIRE(pthread_create(&dt, NULL, drain_main, &d) == 0);
	REQUIRE(pthread_create(&st, NULL, sender_main, &sd) == 0);
	watch_start(&w);
	end = th_now_ms() + FLOOD_MS;
	/* While B floods: C answers a new frontend within a second, again and again. */
	while ((t = th_now_ms()) < end) {
		long long ms = probe_c();

		probes++;
		if (ms < 0)
			probes_failed++;
		else if (ms > worst)
			worst = ms;
		watch_tick(&w);
		usleep(100000);
	}
	__atomic_store_n(&sd.stop, true, __ATOMIC_RELAXED);
	pthread_join(st, NULL);
	/* Every request answered, in one piece: the connection survived its own flood. */
	t = th_now_ms() + 5000;
	while (__atomic_load_n(&d.bytes, __ATOMIC_RELAXED) < sd.replies * 20 &&
	       !__atomic_load_n(&d.eof, __ATOMIC_RELAXED) && th_now_ms() < t)
		usleep(10000);
	__atomic_store_n(&d.stop, true, __ATOMIC_RELAXED);
	pthread_join(dt, NULL);
	lines = log_count(NULL) - lines0;
	printf("message flood: %llu requests (%llu carrying an fd) in %d ms, %llu reply bytes of "
	       "%llu expected; C answered %u probes, worst %lld ms, %u failed; log +%ld lines\n",
	       sd.msgs, sd.with_fd, FLOOD_MS, d.bytes, sd.replies * 20, probes - probes_failed,
	       worst, probes_failed, lines);
	CHECK(!sd.failed);
	CHECK(sd.msgs >= 10000);
	CHECK(d.bytes == sd.replies * 20);
	CHECK(!d.eof);
	CHECK(probes >= 10 && probes_failed == 0 && worst < 1000);
	CHECK(lines <= LOG_MAX_FLOOD);
	watch_check(&w, "message flood");
	close(sd.s);
	close(sd.efd);
	CHECK(vtproc_nfds_settle(vt, fds_base, VUFE_WAIT_MS) == fds_base);
	usage_take(&u1);
	printf("  daemon RssAnon around the message flood: %ld -> %ld kB\n", u0.anon, u1.anon);
	CHECK(u1.anon <= u0.anon + ANON_SLACK_KB);
}

/* Random bytes from many connections: each one is dropped on its first bad header. */
static void flood_garbage(void)
{
	uint8_t junk[512];
	unsigned n = 0, closed = 0;
	long long end = th_now_ms() + FLOOD_MS, min_end = end - FLOOD_MS + FLOOD_MIN_MS;
	struct watch w;

	srand(5);
	watch_start(&w);
	while ((n < 500 || th_now_ms() < min_end) && th_now_ms() < end) {
		int s = flood_connect(sock_b);

		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)rand();
		if (s >= 0) {
			/* The daemon may hang up before it has read all of it. */
			(void)!send(s, junk, sizeof(junk), MSG_NOSIGNAL);
			closed += closed_within(s, VUFE_WAIT_MS);
			close(s);
		}
		n++;
		if (!(n % 16))
			watch_tick(&w);
	}
	printf("garbage: %u connections sent %zu random bytes, %u dropped by the daemon\n", n,
	       sizeof(junk), closed);
	CHECK(n >= 100 && closed == n);
	watch_check(&w, "garbage");
}

/* ---- c. afterwards ------------------------------------------------------------------------- */

static void frontend_after(void)
{
	static struct vufe fb;
	struct vufe_opts o = {.qsize = 256, .open_wait_ms = 5000};
	uint32_t sent = 0, rcvd = 0;
	bool ok = true;

	REQUIRE(vufe_connect_opts(&fb, sock_b, MEM, &o) == 0);
	REQUIRE(vufe_post_rx(&fb, 128, VUFE_BUF) == 128);
	for (int i = 0; i < 8; i++)
		ok &= vufe_echo_round(&fb, &sent, &rcvd);
	CHECK(ok);
	printf("afterwards: a new frontend on B echoed %u frames byte-exact\n", sent);
	vufe_close(&fb);
}

/* The daemon's open file limit, soft and hard, from /proc (-1 if unreadable). */
static void nofile_of(pid_t pid, long long *soft, long long *hard)
{
	char path[64], line[256];
	FILE *f;

	*soft = *hard = -1;
	snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
	f = fopen(path, "re");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Max open files %lld %lld", soft, hard) == 2)
			break;
	if (f)
		fclose(f);
}

int main(void)
{
	char arg[3][200];
	struct rlimit nofile, low;
	long long soft, hard;
	const char *args[] = {"--port", arg[0], "--port", arg[1], "--port", arg[2], NULL};
	struct usage base, end;
	struct vufe_opts o = {.qsize = 256, .open_wait_ms = 5000};
	int st;

	signal(SIGPIPE, SIG_IGN);
	vtproc_bin(); /* SKIP early without a daemon to run */
	snprintf(dir, sizeof(dir), "/tmp/vt-flood-XXXXXX");
	REQUIRE(mkdtemp(dir));
	snprintf(log_path, sizeof(log_path), "%s/virtap.log", dir);
	snprintf(sock_a, sizeof(sock_a), "%s/a.sock", dir);
	snprintf(sock_b, sizeof(sock_b), "%s/b.sock", dir);
	snprintf(sock_c, sizeof(sock_c), "%s/c.sock", dir);
	snprintf(arg[0], sizeof(arg[0]), "name=pa,socket=%s,backend=echo", sock_a);
	snprintf(arg[1], sizeof(arg[1]), "name=pb,socket=%s,backend=echo", sock_b);
	snprintf(arg[2], sizeof(arg[2]), "name=pc,socket=%s,backend=echo", sock_c);
	t_start = th_now_ms();
	/* Started with the usual soft limit of 1024 fds under a higher hard one, the daemon takes
	 * the hard one: fds are what every frontend spends. */
	REQUIRE(getrlimit(RLIMIT_NOFILE, &nofile) == 0);
	low = nofile;
	low.rlim_cur = 1024;
	if (low.rlim_max != RLIM_INFINITY && low.rlim_max < 4096)
		low.rlim_max = 4096; /* as root we may */
	REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
	vt = vtproc_start(log_path, args);
	REQUIRE(setrlimit(RLIMIT_NOFILE, &nofile) == 0);
	REQUIRE(vt > 0);
	REQUIRE(vtproc_wait_path(sock_a, true, 10000) && vtproc_wait_path(sock_b, true, 10000) &&
		vtproc_wait_path(sock_c, true, 10000));
	nofile_of(vt, &soft, &hard);
	printf("daemon's open file limit: %lld (hard %lld), started with %llu\n", soft, hard,
	       (unsigned long long)low.rlim_cur);
	CHECK(soft == hard && hard > 1024);

	REQUIRE(vufe_connect_opts(&ta.fe, sock_a, MEM, &o) == 0);
	REQUIRE(vufe_post_rx(&ta.fe, 128, VUFE_BUF) == 128);
	REQUIRE(pthread_create(&ta.tid, NULL, traffic_main, &ta) == 0);
	usleep(300000);
	CHECK(a_frames() > 0);
	/* Warm-up: one real session on B first (its worker thread's stack and malloc arena stay
	 * cached in the process afterwards, as they would after any first guest). */
	frontend_after();
	usleep(200000);
	usage_take(&base);
	printf("baseline (A passing traffic, B and C idle): %d fds, RssAnon %ld kB\n", base.fds,
	       base.anon);

	flood_connect_close("connect/close", 5000);
	flood_half_messages();
	flood_hold_idle(base.fds);
	flood_busy_port();
	CHECK(vtproc_nfds_settle(vt, base.fds, VUFE_WAIT_MS) == base.fds);
	flood_messages(base.fds);
	flood_garbage();
	frontend_after();

	CHECK(vtproc_nfds_settle(vt, base.fds, VUFE_WAIT_MS) == base.fds);
	usage_take(&end);
	printf("after the floods: %d fds (baseline %d), RssAnon %ld kB (baseline %ld, %+ld); A "
	       "echoed %u frames byte-exact in all\n",
	       end.fds, base.fds, end.anon, base.anon, end.anon - base.anon, a_frames());
	CHECK(end.fds == base.fds);
	CHECK(end.anon <= base.anon + ANON_SLACK_KB);

	__atomic_store_n(&ta.stop, true, __ATOMIC_RELAXED);
	pthread_join(ta.tid, NULL);
	CHECK(ta.bad == 0);
	vufe_close(&ta.fe);
	st = vtproc_stop(vt, SIGTERM, 10000);
	CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (th_failures) {
		fprintf(stderr, "--- daemon log (%s)\n", log_path);
		vtproc_tail(log_path, 80);
	} else {
		unlink(log_path);
		rmdir(dir);
	}
	return th_done("flood");
}
