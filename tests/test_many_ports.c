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

#include "echoport.h"
#include "netns.h"
#include "vtproc.h"

#define NBASE  32		    /* p0..p31 */
#define NCHURN 8		    /* c0..c7: ports added and removed during the soak */
#define NPORTS (NBASE + 1 + NCHURN) /* + p32, added by the first reload */
#if defined(__SANITIZE_ADDRESS__)
/* Built with ASan (the daemon too): freed memory waits in ASan's quarantine (up to 256 MiB)
 * before reuse, so resident memory measures the quarantine, not leaks; LeakSanitizer at the
 * daemon's exit does, and a leak fails its exit status, checked at the end. */
#define RSS_SLACK_KB (64 * 1024)
#else
#define RSS_SLACK_KB 2048
#endif
#define MAX_SAMPLES 512

static struct ep ports[NPORTS];
static struct ep_set set;

/* ---- many ports, reload ---------------------------------------------------------------------- */

static void test_many(void)
{
	unsigned tried, ok, up = 0;
	int sock5;

	for (unsigned i = 0; i < NBASE; i++)
		ports[i].present = true;
	REQUIRE(ep_daemon_start(&set));
	for (unsigned i = 0; i < NBASE; i++)
		up += ep_up(&set, i);
	CHECK(up == NBASE);
	ok = ep_traffic(&set, 16, &tried);
	CHECK(tried == NBASE && ok == NBASE);
	printf("%u ports: %u frontends connected, traffic passed on %u\n", NBASE, up, ok);

	/* A reload with frames in flight on every port: p5 goes, p32 comes; the other 31 keep
	 * their sessions (same sockets, no reconnect) and every frame they had sent comes back. */
	for (unsigned i = 0; i < NBASE; i++)
		CHECK(ep_send(&set, i, 8));
	sock5 = ports[5].fe.sock;
	ports[5].present = false;
	ports[NBASE].present = true;
	CHECK(ep_reload(&set));
	CHECK(vufe_peer_closed(sock5, VUFE_WAIT_MS));
	ep_down(&set, 5);
	ok = 0;
	for (unsigned i = 0; i < NBASE; i++)
		ok += i != 5 && ep_recv_all(&set, i);
	CHECK(ok == NBASE - 1);
	CHECK(ep_up(&set, NBASE));
	ok = ep_traffic(&set, 8, &tried);
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
	s->rss = vtproc_status_kb(set.vt, "VmRSS");
	s->anon = vtproc_status_kb(set.vt, "RssAnon");
	s->fds = vtproc_nfds(set.vt);
	s->threads = vtproc_status_kb(set.vt, "Threads");
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
		ok = ep_traffic(&set, 4, &tried);
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
			ep_down(&set, v);
		}
		ports[c].present = true;
		CHECK(ep_reload(&set));
		CHECK(ep_up(&set, c));
		ok = ep_traffic(&set, 4, &tried);
		CHECK(ok == tried && tried == NBASE - 3 + 1);
		for (unsigned k = 0; k < 3; k++)
			CHECK(ep_up(&set, victims[k]));
		ports[c].present = false;
		CHECK(ep_reload(&set));
		CHECK(vufe_peer_closed(ports[c].fe.sock, VUFE_WAIT_MS));
		ep_down(&set, c);
		reloads += 2;
		reconnects += 3;
		iters++;
	}
	/* Back in the base state once more for the final sample. */
	CHECK(ep_traffic(&set, 4, NULL) == NBASE);
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
	ep_set_init(&set, ports, NPORTS, "mp");
	for (unsigned i = 0; i < NPORTS; i++) {
		char name[16];

		if (i <= NBASE)
			snprintf(name, sizeof(name), "p%u", i);
		else
			snprintf(name, sizeof(name), "c%u", i - NBASE - 1);
		ep_name(&set, i, name);
	}

	test_many();
	if (!th_failures)
		test_soak();

	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].connected)
			ep_down(&set, i);
	/* A clean stop: exit 0, every listening socket removed. */
	st = vtproc_stop(set.vt, SIGTERM, 10000);
	CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	for (unsigned i = 0; i < NPORTS; i++)
		CHECK(access(ports[i].sock, F_OK) != 0);
	if (th_failures) {
		fprintf(stderr, "--- daemon log (%s)\n", set.log);
		vtproc_tail(set.log, 60);
	}
	ep_set_fini(&set);
	return th_done("many_ports");
}
