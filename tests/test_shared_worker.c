// SPDX-License-Identifier: MIT
/*
 * Ports sharing one worker thread (worker=NAME): the real daemon (VT_BIN) with four echo ports
 * on one busy-polling worker and one port with a worker of its own, a fake frontend on each
 * (tests/lib/vufe.c). Traffic passes on all five while the daemon runs exactly one thread for
 * the four; a guest that breaks its ring stops only its own port; a reload that keeps some
 * ports of the worker and adds one keeps their sessions and their traffic on the same worker;
 * a reload that changes the worker's busy-poll restarts its ports on a new one, which replaces
 * the old one thread for thread. Last, a daemon started in a pids cgroup that allows it no
 * thread more: the shared worker cannot start, and its ports get a worker each.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "echoport.h"
#include "netns.h"
#include "vtproc.h"

#define NPORTS 6 /* s0..s4 on worker w0 (s4 comes with the first reload), o0 on its own */
#define OWN    5

static struct ep ports[NPORTS];
static struct ep_set set;
static unsigned w0_poll = 200;

/* s0..s4 on w0 with its busy-poll, o0 on a worker of its own. */
static void set_extra(void)
{
	for (unsigned i = 0; i < OWN; i++)
		snprintf(ports[i].extra, sizeof(ports[i].extra), "worker = w0\nbusy-poll = %u\n",
			 w0_poll);
}

/* n frames each way on every connected port at once, and all of them passed. */
static bool all_pass(unsigned n)
{
	unsigned tried, ok = ep_traffic(&set, n, &tried);

	return ok == tried;
}

/* Stats lines (SIGUSR1) of the log for port name, and how many of them say shared worker w0. */
static unsigned stats_lines(const char *name, unsigned *on_w0)
{
	char line[1024], head[32];
	unsigned n = 0;
	FILE *f = fopen(set.log, "re");

	*on_w0 = 0;
	snprintf(head, sizeof(head), "%s: up rx ", name);
	while (f && fgets(line, sizeof(line), f)) {
		if (!strstr(line, head) || !strstr(line, " paused "))
			continue;
		n++;
		*on_w0 += strstr(line, " paused ") < strstr(line, ", on shared worker w0\n");
	}
	if (f)
		fclose(f);
	return n;
}

/* The counters the daemon logs on SIGUSR1 say which ports are on the shared worker. */
static void check_stats_name_worker(void)
{
	long long end = th_now_ms() + 3000;
	unsigned n[NPORTS], w0[NPORTS];
	bool all;

	REQUIRE(kill(set.vt, SIGUSR1) == 0);
	do {
		all = true;
		for (unsigned i = 0; i < NPORTS; i++) {
			n[i] = ports[i].connected ? stats_lines(ports[i].name, &w0[i]) : 0;
			all &= !ports[i].connected || n[i] > 0;
		}
		if (!all)
			usleep(20000);
	} while (!all && th_now_ms() < end);
	for (unsigned i = 0; i < NPORTS; i++) {
		if (!ports[i].connected)
			continue;
		CHECK(n[i] == 1);
		CHECK(w0[i] == (i == OWN ? 0u : 1u));
	}
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
	long threads0, threads1;
	int socks[NPORTS];

	for (unsigned i = 0; i < NPORTS; i++)
		ports[i].present = i != 4;
	set_extra();
	REQUIRE(ep_daemon_start(&set));
	/* The shared worker exists from the start; a port's own worker once it has rings. */
	CHECK(vtproc_threads_named(set.vt, "vtw-w0") == 1);
	threads0 = vtproc_status_kb(set.vt, "Threads");
	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].present)
			CHECK(ep_up(&set, i));
	CHECK(all_pass(32));
	threads1 = vtproc_status_kb(set.vt, "Threads");
	CHECK(vtproc_threads_named(set.vt, "vtw-w0") == 1);
	CHECK(threads1 == threads0 + 1);
	check_stats_name_worker();
	printf(
	    "4 ports on worker w0 and 1 on its own: traffic on all 5, daemon threads %ld -> %ld\n",
	    threads0, threads1);

	/* A hostile guest on s1: its port breaks, the other three on w0 and o0 go on. */
	break_tx_ring(1);
	CHECK(vtproc_log_wait(set.log, "queue broken", 3000));
	ports[1].connected = false;
	CHECK(all_pass(32));
	ep_down(&set, 1);
	CHECK(ep_up(&set, 1));
	CHECK(all_pass(16));
	printf("s1 broke its TX ring: s0, s2, s3, o0 kept passing traffic; s1 reconnected and "
	       "passes again\n");

	/* Reload with frames in flight: s3 goes, s4 comes on w0; the rest keep their sessions. */
	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].connected)
			CHECK(ep_send(&set, i, 8));
	socks[3] = ports[3].fe.sock;
	ports[3].present = false;
	ports[4].present = true;
	CHECK(ep_reload(&set));
	CHECK(vufe_peer_closed(socks[3], VUFE_WAIT_MS));
	ep_down(&set, 3);
	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].connected)
			CHECK(ep_recv_all(&set, i));
	CHECK(ep_up(&set, 4));
	CHECK(all_pass(16));
	CHECK(vtproc_threads_named(set.vt, "vtw-w0") == 1);
	CHECK(vtproc_status_kb(set.vt, "Threads") == threads1);
	printf("reload: s3 removed, s4 added on w0; s0, s1, s2 and o0 kept their sessions\n");

	/* Reload with another busy-poll for w0: its ports restart on a new worker; o0 stays. */
	w0_poll = 0;
	set_extra();
	for (unsigned i = 0; i < OWN; i++)
		socks[i] = ports[i].connected ? ports[i].fe.sock : -1;
	CHECK(ep_reload(&set));
	for (unsigned i = 0; i < OWN; i++) {
		if (socks[i] < 0)
			continue;
		CHECK(vufe_peer_closed(socks[i], VUFE_WAIT_MS));
		ep_down(&set, i);
		CHECK(ep_up(&set, i));
	}
	CHECK(all_pass(16));
	CHECK(vtproc_threads_named(set.vt, "vtw-w0") == 1);
	CHECK(vtproc_status_kb(set.vt, "Threads") == threads1);
	printf(
	    "reload: w0 without busy-poll: s0, s1, s2, s4 restarted on a new w0, o0 untouched\n");
}

/* ---- a shared worker that cannot start ------------------------------------------------- */

/* A pids cgroup (v1 hierarchy, or v2 with the pids controller at the root) of our own. */
static char cg_dir[96], cg_root[64];

static bool cg_write(const char *dir, const char *file, const char *val)
{
	char path[160];
	FILE *f;
	bool ok;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	f = fopen(path, "we");
	if (!f)
		return false;
	ok = fputs(val, f) >= 0;
	return (fclose(f) == 0) && ok;
}

static bool cg_make(void)
{
	static const char *const roots[] = {"/sys/fs/cgroup/pids", "/sys/fs/cgroup"};

	for (unsigned i = 0; i < 2; i++) {
		snprintf(cg_dir, sizeof(cg_dir), "%s/vt-sw-%d", roots[i], (int)getpid());
		if (mkdir(cg_dir, 0755) == 0) {
			char probe[128];

			snprintf(probe, sizeof(probe), "%s/pids.max", cg_dir);
			if (access(probe, W_OK) == 0) {
				snprintf(cg_root, sizeof(cg_root), "%s", roots[i]);
				return true;
			}
			rmdir(cg_dir);
		}
	}
	cg_dir[0] = 0;
	return false;
}

/* Move this process into the cgroup at dir. */
static bool cg_move(const char *dir)
{
	char pid[16];

	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	return cg_write(dir, "cgroup.procs", pid);
}

/*
 * The daemon starts where it may not make one more thread: worker w0 cannot start, which the log
 * says once, and the daemon carries on; its ports then get a worker each when their frontends
 * connect (the limit is lifted by then), and pass traffic.
 */
static void test_shared_fallback(void)
{
	bool started;

	if (!cg_make()) {
		printf("no pids cgroup to limit threads with: the fallback is not exercised\n");
		return;
	}
	/* This process and the daemon it forks, no thread more. */
	if (!cg_move(cg_dir) || !cg_write(cg_dir, "pids.max", "2\n")) {
		CHECK(!"cannot put this test in its pids cgroup");
		cg_move(cg_root);
		return;
	}
	for (unsigned i = 0; i < NPORTS; i++)
		ports[i].present = i < 3;
	w0_poll = 200;
	set_extra();
	started = ep_daemon_start(&set);
	cg_move(cg_root);
	CHECK(cg_write(cg_dir, "pids.max", "max\n"));
	CHECK(started);
	if (!started)
		return;
	CHECK(vtproc_log_wait(set.log, "worker w0: cannot start it", 3000));
	CHECK(vtproc_threads_named(set.vt, "vtw-w0") == 0);
	for (unsigned i = 0; i < 3; i++)
		CHECK(ep_up(&set, i));
	CHECK(all_pass(16));
	for (unsigned i = 0; i < 3; i++) {
		char comm[16];

		snprintf(comm, sizeof(comm), "vt-%s-0", ports[i].name);
		CHECK(vtproc_threads_named(set.vt, comm) == 1);
	}
	printf("worker w0 could not start: the daemon logged it, and s0, s1, s2 passed traffic "
	       "on a worker each\n");
}

static void daemon_stop(void)
{
	int st;

	for (unsigned i = 0; i < NPORTS; i++)
		if (ports[i].connected)
			ep_down(&set, i);
	st = vtproc_stop(set.vt, SIGTERM, 10000);
	CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	set.vt = -1;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	vtproc_bin();
	ep_set_init(&set, ports, NPORTS, "sw");
	for (unsigned i = 0; i < NPORTS; i++) {
		char name[8];

		snprintf(name, sizeof(name), i == OWN ? "o0" : "s%u", i);
		ep_name(&set, i, name);
	}

	test_shared();
	daemon_stop();
	test_shared_fallback();
	if (set.vt > 0)
		daemon_stop();
	if (cg_dir[0])
		rmdir(cg_dir);
	if (th_failures) {
		fprintf(stderr, "--- daemon log (%s)\n", set.log);
		vtproc_tail(set.log, 60);
	}
	ep_set_fini(&set);
	return th_done("shared_worker");
}
