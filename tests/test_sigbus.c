// SPDX-License-Identifier: MIT
/*
 * A frontend that shrinks memory it shares with the daemon (VT_BIN, two echo ports A and B).
 * vhost-user hands the backend fds to map; a file that cannot be sealed (a tmpfs or hugetlbfs
 * file, or a memfd made without MFD_ALLOW_SEALING, like the test driver's guest RAM) can be
 * truncated after the daemon mapped it, and the daemon's next access there raises SIGBUS. The
 * SIGBUS guard (src/virtio/gmem_guard.c) must turn that into one broken port:
 *   a. guest RAM: B's frontend passes traffic, then queues TX frames, cuts the file below their
 *      buffers and publishes them; the daemon survives, logs one line naming the region, drops
 *      B's connection; A's traffic passes before, right after and later;
 *   b. the inflight area (SET_INFLIGHT_FD with our own unsealable file), cut to nothing while
 *      traffic runs: the same;
 *   c. after each, B serves a new frontend byte-exact, the daemon holds the fds it held before,
 *      and at the end it stops cleanly (exit 0; under ASan also LeakSanitizer-clean).
 * Under ASan the daemon's guard replaces ASan's SIGBUS handler (ASan lets a program install its
 * own by default, allow_user_segv_handler=1) and forwards every fault that is not its own to it;
 * the daemon warns if the guard did not stick, which this test checks.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "netns.h"
#include "rig.h"
#include "virtap/vq.h"
#include "vtproc.h"
#include "vufe.h"

#define MEM	    (2u << 20)
#define BROKEN_LINE "shrank memory it shares with us"

static char dir[64], log_path[108], sock_a[108], sock_b[108];
static pid_t vt = -1;
static struct vufe fa;
static uint32_t a_sent, a_rcvd;

static bool a_rounds(unsigned n)
{
	bool ok = true;

	for (unsigned i = 0; i < n && ok; i++)
		ok = vufe_echo_round(&fa, &a_sent, &a_rcvd);
	return ok;
}

static long log_count(const char *needle)
{
	return vtproc_log_count(log_path, needle, false);
}

static bool daemon_alive(void)
{
	int st;

	return waitpid(vt, &st, WNOHANG) == 0;
}

/* A new frontend on B passes traffic byte-exact. The echo backend belongs to the port, not the
 * connection: frames the broken frontend sent and it had not handed back yet come first, as a
 * TAP's queued frames would; they are taken before the check. */
static bool b_serves(void)
{
	static struct vufe fb;
	static uint8_t got[VUFE_BUF];
	struct vufe_opts o = {.qsize = 256, .open_wait_ms = 5000};
	uint32_t sent = 0, rcvd = 0;
	unsigned stale = 0;
	bool ok;

	if (vufe_connect_opts(&fb, sock_b, MEM, &o) != 0) {
		vufe_close(&fb);
		return false;
	}
	ok = vufe_post_rx(&fb, 128, VUFE_BUF) == 128;
	while (ok && stale < 1024 && vufe_recv_q(&fb, 0, got, sizeof(got), 200) > 0) {
		stale++;
		vufe_post_rx(&fb, 1, VUFE_BUF);
	}
	if (stale)
		printf("  (B's new frontend first took %u frames left from the broken session)\n",
		       stale);
	for (int i = 0; i < 4 && ok; i++)
		ok = vufe_echo_round(&fb, &sent, &rcvd);
	vufe_close(&fb);
	return ok;
}

/* ---- a. guest RAM cut under queued TX frames ------------------------------------------------ */

static void test_guest_ram(int fds_base)
{
	static struct vufe fb;
	struct vufe_opts o = {.qsize = 256};
	uint32_t sent = 0, rcvd = 0;
	uint64_t cut;
	long before = log_count(BROKEN_LINE);
	bool ok = true;

	REQUIRE(vufe_connect_opts(&fb, sock_b, MEM, &o) == 0);
	REQUIRE(vufe_post_rx(&fb, 128, VUFE_BUF) == 128);
	for (int i = 0; i < 8 && ok; i++)
		ok = vufe_echo_round(&fb, &sent, &rcvd) && a_rounds(1);
	CHECK(ok);
	/* The test driver lays out RX ring, RX buffers, TX ring, TX buffers: cut the file at the
	 * first page boundary after the TX ring, so rings stay and TX buffers go. */
	cut = (fb.buf[1][0] - FG_GPA_BASE + 4095) & ~4095ull;
	REQUIRE(cut < fb.g.size);
	vufe_reap_tx(&fb, 0);
	vufe_batch(&fb, true);
	for (unsigned k = 0; k < 32; k++) {
		static uint8_t frame[VUFE_BUF];

		make_frame(frame, 1000, k);
		REQUIRE(vufe_send(&fb, frame, 1000) >= 0);
	}
	/* From here on this process must not touch fb's memory past the cut either. */
	REQUIRE(ftruncate(fb.g.memfd, (off_t)cut) == 0);
	vufe_batch(&fb, false); /* avail index (below the cut) and a kick */
	CHECK(vufe_peer_closed(fb.sock, 5000));
	CHECK(daemon_alive());
	CHECK(a_rounds(4));
	CHECK(log_count(BROKEN_LINE) == before + 1);
	CHECK(log_count("SIGBUS in guest memory region gpa 0x40000000") == 1);
	printf("guest RAM cut to %llu of %llu bytes under 32 queued TX frames: daemon alive, B "
	       "dropped with one log line, A echoed %u frames so far\n",
	       (unsigned long long)cut, (unsigned long long)fb.g.size, a_sent);
	vufe_close(&fb); /* unmaps without touching */
	CHECK(vtproc_nfds_settle(vt, fds_base, VUFE_WAIT_MS) == fds_base);
	CHECK(b_serves());
	CHECK(a_rounds(2));
}

/* ---- b. the inflight area cut to nothing while traffic runs ------------------------------- */

static void test_inflight_area(int fds_base)
{
	static struct vufe fb;
	struct vufe_opts o = {.qsize = 256, .inflight = true};
	uint32_t sent = 0, rcvd = 0;
	size_t size;
	long before = log_count(BROKEN_LINE);
	bool ok = true;
	void *m;
	int fd;

	REQUIRE(vufe_init(&fb, MEM, &o) == 0);
	/* Our own area instead of asking GET_INFLIGHT_FD (whose memfd the daemon seals): a file
	 * that cannot be sealed, handed over with SET_INFLIGHT_FD as a frontend may. */
	size = 2 * vq_inflight_size(256);
	fd = memfd_create("inflight", MFD_CLOEXEC);
	REQUIRE(fd >= 0 && ftruncate(fd, (off_t)size) == 0);
	m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	REQUIRE(m != MAP_FAILED);
	fb.infl_fd = fd;
	fb.infl = m;
	fb.infl_size = size;
	REQUIRE(vufe_start(&fb, sock_b) == 0);
	REQUIRE(vufe_post_rx(&fb, 128, VUFE_BUF) == 128);
	for (int i = 0; i < 4 && ok; i++)
		ok = vufe_echo_round(&fb, &sent, &rcvd) && a_rounds(1);
	CHECK(ok);
	REQUIRE(ftruncate(fd, 0) == 0);
	/* The daemon marks each chain it takes in the area: the next frames fault there. */
	(void)vufe_echo_round(&fb, &sent, &rcvd);
	CHECK(vufe_peer_closed(fb.sock, 5000));
	CHECK(daemon_alive());
	CHECK(a_rounds(4));
	CHECK(log_count(BROKEN_LINE) == before + 1);
	CHECK(log_count("SIGBUS in the inflight area") == 1);
	printf(
	    "inflight area cut to 0 of %zu bytes under traffic: daemon alive, B dropped with one "
	    "log line, A echoed %u frames so far\n",
	    size, a_sent);
	vufe_close(&fb);
	CHECK(vtproc_nfds_settle(vt, fds_base, VUFE_WAIT_MS) == fds_base);
	CHECK(b_serves());
	CHECK(a_rounds(2));
}

int main(void)
{
	char arg[2][200];
	const char *args[] = {"--port", arg[0], "--port", arg[1], NULL};
	struct vufe_opts o = {.qsize = 256, .open_wait_ms = 5000};
	int st, fds_base;

	signal(SIGPIPE, SIG_IGN);
	vtproc_bin(); /* SKIP early without a daemon to run */
	snprintf(dir, sizeof(dir), "/tmp/vt-sigbus-XXXXXX");
	REQUIRE(mkdtemp(dir));
	snprintf(log_path, sizeof(log_path), "%s/virtap.log", dir);
	snprintf(sock_a, sizeof(sock_a), "%s/a.sock", dir);
	snprintf(sock_b, sizeof(sock_b), "%s/b.sock", dir);
	snprintf(arg[0], sizeof(arg[0]), "name=pa,socket=%s,backend=echo", sock_a);
	snprintf(arg[1], sizeof(arg[1]), "name=pb,socket=%s,backend=echo", sock_b);
	vt = vtproc_start(log_path, args);
	REQUIRE(vt > 0);
	REQUIRE(vtproc_wait_path(sock_a, true, 10000) && vtproc_wait_path(sock_b, true, 10000));
	/* The guard must be in place (a sanitizer could have kept SIGBUS to itself). */
	CHECK(log_count("SIGBUS guard not installed") == 0);

	REQUIRE(vufe_connect_opts(&fa, sock_a, MEM, &o) == 0);
	REQUIRE(vufe_post_rx(&fa, 128, VUFE_BUF) == 128);
	CHECK(a_rounds(4));
	fds_base = vtproc_nfds(vt);

	test_guest_ram(fds_base);
	test_inflight_area(fds_base);

	CHECK(a_rounds(4));
	vufe_close(&fa);
	vtproc_log_count(log_path, BROKEN_LINE, true);
	st = vtproc_stop(vt, SIGTERM, 10000);
	CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (th_failures) {
		fprintf(stderr, "--- daemon log (%s)\n", log_path);
		vtproc_tail(log_path, 60);
	} else {
		unlink(log_path);
		rmdir(dir);
	}
	return th_done("sigbus");
}
