// SPDX-License-Identifier: MIT
/*
 * Many VMs: one virtap daemon (the real binary, VT_BIN) with 32 ports from a config file (echo
 * backend: no TAP needed), 32 fake frontends (tests/lib/vufe.c) passing traffic on every port,
 * each frame echoed back byte-exact. Then ports added and removed with SIGHUP while the other
 * frontends keep their connections and their traffic; then a soak (VT_SOAK_SECONDS, default 60):
 * frontends hang up and come back, ports come and go, traffic runs on the rest, and the daemon's
 * resident memory, open fds and threads are sampled each time the same set of ports and
 * frontends is up again. They must stay flat: fds and threads exactly, memory (VmRSS, and its
 * anonymous part) within 2 MiB of where it stood after the warm-up. VmRSS also counts the guest
 * pages the daemon has touched, which vary by a megabyte from sample to sample with traffic and
 * new guests; both ends are the mean of three samples.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "netns.h"
#include "rig.h"
#include "vtproc.h"
#include "vufe.h"

#define NBASE  32		    /* p0..p31 */
#define NCHURN 8		    /* c0..c7: ports added and removed during the soak */
#define NPORTS (NBASE + 1 + NCHURN) /* + p32, added by the first reload */
#define MEM    (2u << 20)
#if defined(__SANITIZE_ADDRESS__)
/* Built with ASan (the daemon too): freed memory waits in ASan's quarantine (up to 256 MiB)
 * before reuse, so resident memory measures the quarantine, not leaks; LeakSanitizer at the
 * daemon's exit does, and a leak fails its exit status, checked at the end. */
#define RSS_SLACK_KB (64 * 1024)
#else
#define RSS_SLACK_KB 2048
#endif
#define MAX_SAMPLES 512

struct port {
	char name[16];
	char sock[108];
	bool present;	/* in the config file */
	bool connected; /* our frontend has a session */
	struct vufe fe;
	uint32_t sent, rcvd; /* frame counters: the next seq to send, to expect */
};

static char dir[64], cfg[108], cfg_tmp[112], log_path[108];
static struct port ports[NPORTS];
static pid_t vt = -1;
static uint8_t frame[VUFE_BUF], got[VUFE_BUF];

/* ---- the daemon and its config ------------------------------------------------------------- */

static void write_config(void)
{
	FILE *f = fopen(cfg_tmp, "we");

	REQUIRE(f);
	fprintf(f, "# written by test_many_ports\nlog-level = info\n");
	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].present)
			fprintf(f, "\n[port %s]\nsocket = %s\nbackend = echo\n", ports[i].name,
				ports[i].sock);
	REQUIRE(fclose(f) == 0);
	/* Atomically: the daemon reads whole files only. */
	REQUIRE(rename(cfg_tmp, cfg) == 0);
}

/* Rewrite the config, SIGHUP, and wait until every port's socket is there or gone as it
 * should be. */
static bool reload(void)
{
	bool ok = true;

	write_config();
	REQUIRE(kill(vt, SIGHUP) == 0);
	for (unsigned i = 0; i < NPORTS; i++)
		ok &= vtproc_wait_path(ports[i].sock, ports[i].present, 5000);
	return ok;
}

/* ---- frontends and traffic ------------------------------------------------------------------ */

static uint32_t seq_of(unsigned port, uint32_t n)
{
	return (uint32_t)port << 24 | (n & 0xffffff);
}

static size_t len_of(uint32_t seq)
{
	return 60 + (seq * 2654435761u >> 7) % 1455u; /* 60..1514 */
}

static bool fe_up(unsigned i)
{
	struct port *p = &ports[i];
	struct vufe_opts o = {.qsize = 256, .open_wait_ms = 5000};

	p->sent = p->rcvd = 0;
	p->connected = vufe_connect_opts(&p->fe, p->sock, MEM, &o) == 0;
	if (p->connected)
		p->connected = vufe_post_rx(&p->fe, 128, VUFE_BUF) == 128;
	if (!p->connected)
		vufe_close(&p->fe);
	return p->connected;
}

static void fe_down(unsigned i)
{
	vufe_close(&ports[i].fe);
	ports[i].connected = false;
}

static bool send_n(unsigned i, unsigned n)
{
	struct port *p = &ports[i];

	vufe_reap_tx(&p->fe, 0);
	for (unsigned k = 0; k < n; k++) {
		uint32_t seq = seq_of(i, p->sent++);

		make_frame(frame, len_of(seq), seq);
		if (vufe_send(&p->fe, frame, len_of(seq)) < 0)
			return false;
	}
	return true;
}

/* Every frame sent and not yet received comes back, in order, byte-exact. */
static bool recv_all(unsigned i)
{
	struct port *p = &ports[i];

	while (p->rcvd != p->sent) {
		uint32_t seq = seq_of(i, p->rcvd++);
		long n = vufe_recv_q(&p->fe, 0, got, sizeof(got), VUFE_WAIT_MS);

		make_frame(frame, len_of(seq), seq);
		if (n != (long)len_of(seq) || memcmp(got, frame, (size_t)n) != 0) {
			fprintf(stderr, "  %s: frame %u: got %ld bytes, want %zu\n", p->name,
				p->rcvd - 1, n, len_of(seq));
			return false;
		}
	}
	vufe_post_rx(&p->fe, 256, VUFE_BUF);
	return vufe_tx_drain(&p->fe, 0, VUFE_WAIT_MS) && !p->fe.bad_used && !p->fe.bad_rx;
}

/* n frames each way on every connected port, all ports at once; how many ports passed. */
static unsigned traffic_all(unsigned n, unsigned *tried)
{
	unsigned ok = 0, t = 0;
	bool sent[NPORTS];

	for (unsigned i = 0; i < NPORTS; i++)
		sent[i] = ports[i].connected && send_n(i, n);
	for (unsigned i = 0; i < NPORTS; i++) {
		if (!ports[i].connected)
			continue;
		t++;
		if (sent[i] && recv_all(i))
			ok++;
		else
			fprintf(stderr, "  traffic failed on %s\n", ports[i].name);
	}
	if (tried)
		*tried = t;
	return ok;
}

/* ---- many ports, reload ---------------------------------------------------------------------- */

static void test_many(void)
{
	const char *args[] = {"--config", cfg, NULL};
	unsigned tried, ok, up = 0;
	int sock5;

	for (unsigned i = 0; i < NBASE; i++)
		ports[i].present = true;
	write_config();
	vt = vtproc_start(log_path, args);
	REQUIRE(vt > 0);
	for (unsigned i = 0; i < NBASE; i++)
		REQUIRE(vtproc_wait_path(ports[i].sock, true, 10000));
	for (unsigned i = 0; i < NBASE; i++)
		up += fe_up(i);
	CHECK(up == NBASE);
	ok = traffic_all(16, &tried);
	CHECK(tried == NBASE && ok == NBASE);
	printf("%u ports: %u frontends connected, traffic passed on %u\n", NBASE, up, ok);

	/* A reload with frames in flight on every port: p5 goes, p32 comes; the other 31 keep
	 * their sessions (same sockets, no reconnect) and every frame they had sent comes back. */
	for (unsigned i = 0; i < NBASE; i++)
		CHECK(send_n(i, 8));
	sock5 = ports[5].fe.sock;
	ports[5].present = false;
	ports[NBASE].present = true;
	CHECK(reload());
	CHECK(vufe_peer_closed(sock5, VUFE_WAIT_MS));
	fe_down(5);
	ok = 0;
	for (unsigned i = 0; i < NBASE; i++)
		ok += i != 5 && recv_all(i);
	CHECK(ok == NBASE - 1);
	CHECK(fe_up(NBASE));
	ok = traffic_all(8, &tried);
	CHECK(tried == NBASE && ok == NBASE);
	printf("reload: p5 removed, p32 added; %u untouched sessions kept their traffic, %u of %u "
	       "ports pass\n",
	       NBASE - 1, ok, tried);
}

/* ---- soak --------------------------------------------------------------------------------------
 */

struct sample {
	long long t_ms;
	long rss, anon, fds, threads;
};

static void take_sample(struct sample *s, long long t0)
{
	s->t_ms = th_now_ms() - t0;
	s->rss = vtproc_status_kb(vt, "VmRSS");
	s->anon = vtproc_status_kb(vt, "RssAnon");
	s->fds = vtproc_nfds(vt);
	s->threads = vtproc_status_kb(vt, "Threads");
}

/* Mean VmRSS and RssAnon of up to three samples from index i. */
static void mean3(const struct sample *smp, unsigned n, unsigned i, long *rss, long *anon)
{
	unsigned k = 0;

	*rss = *anon = 0;
	for (; k < 3 && i + k < n; k++) {
		*rss += smp[i + k].rss;
		*anon += smp[i + k].anon;
	}
	*rss /= k ? (long)k : 1;
	*anon /= k ? (long)k : 1;
}

static void test_soak(void)
{
	static struct sample smp[MAX_SAMPLES];
	const char *env = getenv("VT_SOAK_SECONDS");
	long long secs = env ? atoll(env) : 60, t0 = th_now_ms(), end = t0 + secs * 1000;
	long long every = secs >= 60 ? secs * 1000 / 30 : 2000, next = t0, warm_end;
	unsigned nsmp = 0, iters = 0, reloads = 0, reconnects = 0, frames_ok = 0, frames_bad = 0;
	unsigned warm = 0;
	long rss0, anon0, rss1, anon1;

	/* malloc's free lists settle within about a minute of churn: warm up for a fifth of the
	 * run, at least half a minute (or half the run if shorter). */
	warm_end = t0 + 1000 * (secs / 5 > 30 ? secs / 5 : secs / 2 < 30 ? secs / 2 : 30);
	srand(42);
	while (th_now_ms() < end && th_failures < 10) {
		unsigned tried, ok, victims[3], c = NBASE + 1 + iters % NCHURN;

		/* The base set: 31 of p0..p31 and p32, each with its frontend. */
		ok = traffic_all(4, &tried);
		frames_ok += ok * 4;
		frames_bad += (tried - ok) * 4;
		CHECK(ok == tried && tried == NBASE);
		if (th_now_ms() >= next && nsmp < MAX_SAMPLES) {
			take_sample(&smp[nsmp], t0);
			if (th_now_ms() < warm_end || !warm)
				warm = nsmp + 1; /* the last sample of the warm-up, 1-based */
			nsmp++;
			next += every;
		}
		/* Churn: three frontends hang up; a port comes, gets a frontend and traffic; the
		 * rest keep passing traffic; the three come back as new guests; the port goes while
		 * its frontend is still connected. */
		for (unsigned k = 0; k < 3; k++) {
			unsigned v;

			do
				v = (unsigned)rand() % (NBASE + 1);
			while (v == 5 || !ports[v].connected);
			victims[k] = v;
			fe_down(v);
		}
		ports[c].present = true;
		CHECK(reload());
		CHECK(fe_up(c));
		ok = traffic_all(4, &tried);
		CHECK(ok == tried && tried == NBASE - 3 + 1);
		for (unsigned k = 0; k < 3; k++)
			CHECK(fe_up(victims[k]));
		ports[c].present = false;
		CHECK(reload());
		CHECK(vufe_peer_closed(ports[c].fe.sock, VUFE_WAIT_MS));
		fe_down(c);
		reloads += 2;
		reconnects += 3;
		iters++;
	}
	/* Back in the base state once more for the final sample. */
	CHECK(traffic_all(4, NULL) == NBASE);
	if (nsmp < MAX_SAMPLES)
		take_sample(&smp[nsmp++], t0);
	if (!warm)
		warm = 1;

	printf("soak: %lld s, %u iterations, %u reloads (SIGHUP), %u frontend reconnects, %u "
	       "frames echoed byte-exact, %u failed\n",
	       secs, iters, reloads, reconnects, frames_ok * 2, frames_bad);
	printf("  %6s %9s %9s %5s %7s   (VmRSS, RssAnon of virtap; base set of %d ports "
	       "connected)\n",
	       "t", "rss kB", "anon kB", "fds", "threads", NBASE);
	for (unsigned i = 0; i < nsmp; i++)
		printf("  %5llds %9ld %9ld %5ld %7ld%s\n", smp[i].t_ms / 1000, smp[i].rss,
		       smp[i].anon, smp[i].fds, smp[i].threads,
		       i + 1 == warm ? "   <- end of warm-up" : "");
	/* Flat: the same set of ports and frontends holds the same fds and threads, and memory
	 * does not grow past the warm-up by more than the slack. */
	for (unsigned i = 0; i < nsmp; i++) {
		CHECK(smp[i].fds == smp[0].fds);
		CHECK(smp[i].threads == smp[0].threads);
	}
	mean3(smp, nsmp, warm - 1, &rss0, &anon0);
	mean3(smp, nsmp, nsmp >= 3 ? nsmp - 3 : 0, &rss1, &anon1);
	CHECK(rss1 <= rss0 + RSS_SLACK_KB);
	CHECK(anon1 <= anon0 + RSS_SLACK_KB);
	printf("  after warm-up -> end (means of 3 samples): rss %ld -> %ld kB (%+ld), anon %ld -> "
	       "%ld kB (%+ld); fds %ld -> %ld; threads %ld -> %ld\n",
	       rss0, rss1, rss1 - rss0, anon0, anon1, anon1 - anon0, smp[0].fds, smp[nsmp - 1].fds,
	       smp[0].threads, smp[nsmp - 1].threads);
}

int main(void)
{
	int st;

	signal(SIGPIPE, SIG_IGN);
	vtproc_bin(); /* SKIP early without a daemon to run */
	snprintf(dir, sizeof(dir), "/tmp/vt-mp-XXXXXX");
	REQUIRE(mkdtemp(dir));
	snprintf(cfg, sizeof(cfg), "%s/virtap.conf", dir);
	snprintf(cfg_tmp, sizeof(cfg_tmp), "%s/virtap.conf.new", dir);
	snprintf(log_path, sizeof(log_path), "%s/virtap.log", dir);
	for (unsigned i = 0; i < NPORTS; i++) {
		struct port *p = &ports[i];

		if (i <= NBASE)
			snprintf(p->name, sizeof(p->name), "p%u", i);
		else
			snprintf(p->name, sizeof(p->name), "c%u", i - NBASE - 1);
		snprintf(p->sock, sizeof(p->sock), "%s/%s.sock", dir, p->name);
		p->fe.sock = -1;
	}

	test_many();
	if (!th_failures)
		test_soak();

	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].connected)
			fe_down(i);
	/* A clean stop: exit 0, every listening socket removed. */
	st = vtproc_stop(vt, SIGTERM, 10000);
	CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	for (unsigned i = 0; i < NPORTS; i++)
		CHECK(access(ports[i].sock, F_OK) != 0);
	if (th_failures) {
		fprintf(stderr, "--- daemon log (%s)\n", log_path);
		vtproc_tail(log_path, 60);
	}
	unlink(cfg);
	unlink(log_path);
	rmdir(dir);
	return th_done("many_ports");
}
