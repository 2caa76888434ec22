// SPDX-License-Identifier: MIT
/*
 * Ports sharing one worker thread (worker=NAME): the real daemon (VT_BIN) with four echo ports
 * on one busy-polling worker and one port with a worker of its own, a fake frontend on each
 * (tests/lib/vufe.c). Traffic passes on all five while the daemon runs exactly one thread for
 * the four; a guest that breaks its ring stops only its own port; a reload that keeps some
 * ports of the worker and adds one keeps their sessions and their traffic on the same worker;
 * a reload that changes the worker's busy-poll restarts its ports on a new one, which replaces
 * the old one thread for thread.
 */
#include <dirent.h>
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

#define NPORTS 6 /* s0..s4 on worker w0 (s4 comes with the first reload), o0 on its own */
#define OWN    5
#define MEM    (2u << 20)

struct port {
	char name[8];
	char sock[108];
	bool present, connected;
	struct vufe fe;
	uint32_t sent, rcvd;
};

static char dir[64], cfg[108], cfg_tmp[112], log_path[108];
static struct port ports[NPORTS];
static unsigned w0_poll = 200;
static pid_t vt = -1;
static uint8_t frame[VUFE_BUF], got[VUFE_BUF];

static void write_config(void)
{
	FILE *f = fopen(cfg_tmp, "we");

	REQUIRE(f);
	fprintf(f, "log-level = info\n");
	for (unsigned i = 0; i < NPORTS; i++) {
		if (!ports[i].present)
			continue;
		fprintf(f, "\n[port %s]\nsocket = %s\nbackend = echo\n", ports[i].name,
			ports[i].sock);
		if (i != OWN)
			fprintf(f, "worker = w0\nbusy-poll = %u\n", w0_poll);
	}
	REQUIRE(fclose(f) == 0);
	REQUIRE(rename(cfg_tmp, cfg) == 0);
}

static bool reload(void)
{
	bool ok = true;

	write_config();
	REQUIRE(kill(vt, SIGHUP) == 0);
	for (unsigned i = 0; i < NPORTS; i++)
		ok &= vtproc_wait_path(ports[i].sock, ports[i].present, 5000);
	return ok;
}

/* Threads of the daemon whose name is comm. */
static int threads_named(const char *comm)
{
	char path[64], name[32];
	struct dirent *e;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)vt);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", (int)vt, e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(name, sizeof(name), f) && !strncmp(name, comm, strlen(comm)) &&
		    name[strlen(comm)] == '\n')
			n++;
		fclose(f);
	}
	closedir(d);
	return n;
}

/* Whether the daemon's log has line (waiting up to ms). */
static bool log_has(const char *line, int ms)
{
	long long end = th_now_ms() + ms;

	do {
		char buf[512];
		FILE *f = fopen(log_path, "re");
		bool found = false;

		while (f && !found && fgets(buf, sizeof(buf), f))
			found = strstr(buf, line) != NULL;
		if (f)
			fclose(f);
		if (found)
			return true;
		usleep(20000);
	} while (th_now_ms() < end);
	return false;
}

static size_t len_of(uint32_t seq)
{
	return 60 + (seq * 2654435761u >> 7) % 1455u;
}

static bool fe_up(unsigned i)
{
	struct port *p = &ports[i];
	struct vufe_opts o = {.qsize = 256, .open_wait_ms = 5000};

	p->sent = p->rcvd = 0;
	p->connected = vufe_connect_opts(&p->fe, p->sock, MEM, &o) == 0 &&
		       vufe_post_rx(&p->fe, 128, VUFE_BUF) == 128;
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
		uint32_t seq = (uint32_t)i << 24 | p->sent++;

		make_frame(frame, len_of(seq), seq);
		if (vufe_send(&p->fe, frame, len_of(seq)) < 0)
			return false;
	}
	return true;
}

/* Every frame sent and not yet received comes back in order, byte-exact. */
static bool recv_all(unsigned i)
{
	struct port *p = &ports[i];

	while (p->rcvd != p->sent) {
		uint32_t seq = (uint32_t)i << 24 | p->rcvd++;
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

/* n frames each way on every connected port at once; true if all of them passed. */
static bool traffic_all(unsigned n)
{
	bool sent[NPORTS], ok = true;

	for (unsigned i = 0; i < NPORTS; i++)
		sent[i] = ports[i].connected && send_n(i, n);
	for (unsigned i = 0; i < NPORTS; i++) {
		if (!ports[i].connected)
			continue;
		if (!sent[i] || !recv_all(i)) {
			fprintf(stderr, "  traffic failed on %s\n", ports[i].name);
			ok = false;
		}
	}
	return ok;
}

/* The driver breaks a rule: a TX head past the ring (VIRTIO 1.2 2.7.13.2: avail ring entries
 * name the head of a descriptor chain, below the queue size). */
static void break_tx_ring(unsigned i)
{
	struct fg_vq *q = &ports[i].fe.q[1];
	uint64_t one = 1;

	fg_raw_avail(q, q->avail_idx % q->num, q->num + 7);
	fg_raw_avail_idx(q, ++q->avail_idx);
	CHECK(write(q->kick_fd, &one, sizeof(one)) == sizeof(one));
}

static void test_shared(void)
{
	const char *args[] = {"--config", cfg, NULL};
	long threads0, threads1;
	int socks[NPORTS];

	for (unsigned i = 0; i < NPORTS; i++)
		ports[i].present = i != 4;
	write_config();
	vt = vtproc_start(log_path, args);
	REQUIRE(vt > 0);
	for (unsigned i = 0; i < NPORTS; i++)
		REQUIRE(vtproc_wait_path(ports[i].sock, ports[i].present, 10000));
	/* The shared worker exists from the start; a port's own worker once it has rings. */
	CHECK(threads_named("vtw-w0") == 1);
	threads0 = vtproc_status_kb(vt, "Threads");
	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].present)
			CHECK(fe_up(i));
	CHECK(traffic_all(32));
	threads1 = vtproc_status_kb(vt, "Threads");
	CHECK(threads_named("vtw-w0") == 1);
	CHECK(threads1 == threads0 + 1);
	printf(
	    "4 ports on worker w0 and 1 on its own: traffic on all 5, daemon threads %ld -> %ld\n",
	    threads0, threads1);

	/* A hostile guest on s1: its port breaks, the other three on w0 and o0 go on. */
	break_tx_ring(1);
	CHECK(log_has("queue broken", 3000));
	ports[1].connected = false;
	CHECK(traffic_all(32));
	fe_down(1);
	CHECK(fe_up(1));
	CHECK(traffic_all(16));
	printf("s1 broke its TX ring: s0, s2, s3, o0 kept passing traffic; s1 reconnected and "
	       "passes again\n");

	/* Reload with frames in flight: s3 goes, s4 comes on w0; the rest keep their sessions. */
	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].connected)
			CHECK(send_n(i, 8));
	socks[3] = ports[3].fe.sock;
	ports[3].present = false;
	ports[4].present = true;
	CHECK(reload());
	CHECK(vufe_peer_closed(socks[3], VUFE_WAIT_MS));
	fe_down(3);
	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].connected)
			CHECK(recv_all(i));
	CHECK(fe_up(4));
	CHECK(traffic_all(16));
	CHECK(threads_named("vtw-w0") == 1);
	CHECK(vtproc_status_kb(vt, "Threads") == threads1);
	printf("reload: s3 removed, s4 added on w0; s0, s1, s2 and o0 kept their sessions\n");

	/* Reload with another busy-poll for w0: its ports restart on a new worker; o0 stays. */
	w0_poll = 0;
	for (unsigned i = 0; i < OWN; i++)
		socks[i] = ports[i].connected ? ports[i].fe.sock : -1;
	CHECK(reload());
	for (unsigned i = 0; i < OWN; i++) {
		if (socks[i] < 0)
			continue;
		CHECK(vufe_peer_closed(socks[i], VUFE_WAIT_MS));
		fe_down(i);
		CHECK(fe_up(i));
	}
	CHECK(traffic_all(16));
	CHECK(threads_named("vtw-w0") == 1);
	CHECK(vtproc_status_kb(vt, "Threads") == threads1);
	printf(
	    "reload: w0 without busy-poll: s0, s1, s2, s4 restarted on a new w0, o0 untouched\n");
}

int main(void)
{
	int st;

	signal(SIGPIPE, SIG_IGN);
	vtproc_bin();
	snprintf(dir, sizeof(dir), "/tmp/vt-sw-XXXXXX");
	REQUIRE(mkdtemp(dir));
	snprintf(cfg, sizeof(cfg), "%s/virtap.conf", dir);
	snprintf(cfg_tmp, sizeof(cfg_tmp), "%s/virtap.conf.new", dir);
	snprintf(log_path, sizeof(log_path), "%s/virtap.log", dir);
	for (unsigned i = 0; i < NPORTS; i++) {
		snprintf(ports[i].name, sizeof(ports[i].name), i == OWN ? "o0" : "s%u", i);
		snprintf(ports[i].sock, sizeof(ports[i].sock), "%s/%s.sock", dir, ports[i].name);
		ports[i].fe.sock = -1;
	}

	test_shared();

	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].connected)
			fe_down(i);
	st = vtproc_stop(vt, SIGTERM, 10000);
	CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (th_failures) {
		fprintf(stderr, "--- daemon log (%s)\n", log_path);
		vtproc_tail(log_path, 60);
	}
	unlink(cfg);
	unlink(log_path);
	rmdir(dir);
	return th_done("shared_worker");
}
