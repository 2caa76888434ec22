// SPDX-License-Identifier: MIT
/*
 * Workers end to end, on real TAP devices in a private namespace: `ping` from the namespace is
 * answered by a fake guest through a worker thread (kicks, calls, RX pause and resume), one busy
 * queue pair cannot starve another on the same worker, per-pair workers run side by side,
 * removing a pair returns its ring positions, and wrk_call runs on the worker thread.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "netns.h"
#include "rig.h"
#include "virtap/wrk.h"

#define F(b) (1ull << (b))

static const uint8_t guest_mac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
static const uint8_t guest_ip[4] = {10, 77, 0, 2};

static uint16_t csum(const uint8_t *p, size_t n)
{
	uint32_t s = 0;

	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)(p[n - 1] << 8);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* Answer ARP and ICMP echo for 10.77.0.2; frame f (no header) of len bytes, reply into out. */
static size_t guest_answer(const uint8_t *f, size_t len, uint8_t *out)
{
	uint16_t et;

	if (len < 42)
		return 0;
	et = (uint16_t)(f[12] << 8 | f[13]);
	memcpy(out, f + 6, 6);
	memcpy(out + 6, guest_mac, 6);
	memcpy(out + 12, f + 12, 2);
	if (et == 0x0806 && f[21] == 1 && memcmp(f + 38, guest_ip, 4) == 0) {
		memcpy(out + 14, f + 14, 6);
		out[20] = 0;
		out[21] = 2; /* reply */
		memcpy(out + 22, guest_mac, 6);
		memcpy(out + 28, guest_ip, 4);
		memcpy(out + 32, f + 22, 10); /* requester's MAC and IP */
		return 42;
	}
	if (et == 0x0800 && f[23] == 1 && memcmp(f + 30, guest_ip, 4) == 0 && f[34] == 8) {
		size_t ihl = (size_t)(f[14] & 15) * 4, ip_len = (size_t)(f[16] << 8 | f[17]);
		uint16_t c;

		if (14 + ip_len > len || ihl < 20)
			return 0;
		memcpy(out + 14, f + 14, ip_len);
		memcpy(out + 26, f + 30, 4); /* swap addresses: the IP checksum stays valid */
		memcpy(out + 30, f + 26, 4);
		out[14 + ihl] = 0; /* echo reply */
		out[14 + ihl + 2] = out[14 + ihl + 3] = 0;
		c = csum(out + 14 + ihl, ip_len - ihl);
		out[14 + ihl + 2] = (uint8_t)(c >> 8);
		out[14 + ihl + 3] = (uint8_t)c;
		return 14 + ip_len;
	}
	return 0;
}

/* One step of the fake guest: answer what arrived, refill RX, reap TX. Returns frames seen. */
static unsigned guest_step(struct rig *r)
{
	static uint8_t in[70000], out[70000];
	unsigned seen = 0;
	uint32_t id, len;
	long n;

	while ((n = rig_take_rx(r, in, sizeof(in))) > 0) {
		size_t m = guest_answer(in + r->qp.hdr_len, (size_t)n - r->qp.hdr_len,
					out + r->qp.hdr_len);

		seen++;
		rig_post_rx(r, 1, 2048, false);
		if (m) {
			memset(out, 0, r->qp.hdr_len);
			rig_post_tx(r, out, r->qp.hdr_len + m, 4096, false);
		}
	}
	while (fg_used(&r->ftx, &id, &len))
		;
	return seen;
}

static void test_ping(void)
{
	uint64_t f = F(VQ_F_VERSION_1) | F(VIRTIO_NET_F_MRG_RXBUF) | F(VQ_F_EVENT_IDX);
	struct wrk *w;
	struct rig r;
	long long end;
	pid_t pid;
	int st = -1;

	REQUIRE(rig_init(&r, "vt0", f, NULL, 256) == 0);
	REQUIRE(wrk_create(&w, "vt-wrk0") == 0);
	/* Start with no RX buffers: the worker must pause reading and resume on the RX kick. */
	REQUIRE(wrk_add(w, &r.qp) == 0);
	REQUIRE(wrk_start(w) == 0);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		execlp("ping", "ping", "-c", "5", "-i", "0.2", "-W", "2", "-q", "10.77.0.2",
		       (char *)NULL);
		_exit(127);
	}
	usleep(300000);
	rig_post_rx(&r, 64, 2048, false);
	end = th_now_ms() + 15000;
	while (th_now_ms() < end) {
		fg_wait_call(&r.frx, 20);
		guest_step(&r);
		if (waitpid(pid, &st, WNOHANG) == pid)
			break;
	}
	if (th_now_ms() >= end) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0); /* 5 of 5 replies */
	CHECK(r.qp.stats.rx_packets >= 6 && r.qp.stats.tx_packets >= 6);
	CHECK(r.qp.stats.rx_paused >= 1); /* it did wait for buffers */
	CHECK(r.qp.rx.stats.kicks >= 1 && r.qp.tx.stats.kicks >= 1);
	CHECK(r.qp.rx.stats.notifies >= 1);
	wrk_destroy(w);
	rig_destroy(&r);
}

static void post_tx_frames(struct rig *r, unsigned n, uint32_t seq)
{
	uint8_t buf[12 + 60];

	memset(buf, 0, 12);
	for (unsigned i = 0; i < n; i++) {
		make_frame(buf + 12, 60, seq + i);
		if (rig_post_tx(r, buf, sizeof(buf), 4096, false) < 0)
			break;
	}
}

struct flood {
	struct rig *r;
	volatile bool stop;
	uint64_t posted;
};

static void *flood_main(void *arg)
{
	struct flood *fl = arg;

	/* One frame in guest memory, posted again and again: the bump allocator stays put. */
	uint64_t gpa = fg_alloc(&fl->r->g, 72, 64);

	make_frame((uint8_t *)fg_va(&fl->r->g, gpa) + 12, 60, 0);
	while (!fl->stop) {
		uint32_t id, len;

		while (fg_used(&fl->r->ftx, &id, &len))
			;
		while (fg_add(&fl->r->ftx, &(struct fg_buf){gpa, 72, false}, 1, false) >= 0)
			fl->posted++;
		fg_publish(&fl->r->ftx, true);
		usleep(100);
	}
	return NULL;
}

/* A pair whose guest never stops transmitting does not starve its neighbour on one worker. */
static void test_fairness_and_bases(void)
{
	uint64_t f = F(VQ_F_VERSION_1) | F(VIRTIO_NET_F_MRG_RXBUF);
	struct vnet_config cfg;
	struct rig a, b;
	struct flood fl = {.r = &a};
	pthread_t th;
	struct wrk *w;
	uint16_t rx_base = 1, tx_base = 0;
	uint64_t a_before;
	long long t0;

	vnet_config_default(&cfg);
	cfg.tx_budget_pkts = 64;
	REQUIRE(rig_init(&a, "vta", f, &cfg, 256) == 0);
	REQUIRE(rig_init(&b, "vtb", f, &cfg, 256) == 0);
	/* Frames must go nowhere expensive: no listener, the kernel drops them (other host). */
	REQUIRE(wrk_create(&w, "vt-wrk1") == 0);
	REQUIRE(wrk_add(w, &a.qp) == 0 && wrk_add(w, &b.qp) == 0);
	CHECK(wrk_add(w, &a.qp) == -EEXIST);
	REQUIRE(wrk_start(w) == 0);
	REQUIRE(pthread_create(&th, NULL, flood_main, &fl) == 0);
	usleep(200000);
	a_before = a.qp.stats.tx_packets;
	CHECK(a_before > 0);
	t0 = th_now_ms();
	post_tx_frames(&b, 1, 99);
	while (fg_used_pending(&b.ftx) == 0 && th_now_ms() - t0 < 5000)
		usleep(100);
	CHECK(fg_used_pending(&b.ftx) == 1);
	CHECK(b.qp.stats.tx_packets == 1);
	usleep(100000);
	CHECK(a.qp.stats.tx_packets > a_before); /* A kept going too */
	fl.stop = true;
	pthread_join(th, NULL);
	/* Removing a pair hands back where its rings stand (vhost-user GET_VRING_BASE). */
	REQUIRE(wrk_remove(w, &b.qp, &rx_base, &tx_base) == 0);
	CHECK(rx_base == 0 && tx_base == 1);
	CHECK(wrk_remove(w, &b.qp, NULL, NULL) == -ENOENT);
	/* After removal nothing serves b: a new chain stays unused. */
	post_tx_frames(&b, 1, 100);
	usleep(50000);
	CHECK(fg_used_pending(&b.ftx) == 1);
	wrk_destroy(w);
	CHECK(a.qp.tx.last_avail == a.ftx.avail_idx || a.qp.tx.last_avail != 0);
	rig_destroy(&a);
	rig_destroy(&b);
}

static pthread_t seen_thread;

static void record_thread(void *arg)
{
	(void)arg;
	seen_thread = pthread_self();
}

/* One worker per pair: both move traffic; wrk_call runs on the worker's thread. */
static void test_per_pair_workers(void)
{
	uint64_t f = F(VQ_F_VERSION_1);
	struct rig a, b;
	struct wrk *wa, *wb;
	uint8_t buf[2048];
	int sa, sb;

	REQUIRE(rig_init(&a, "vta", f, NULL, 64) == 0);
	REQUIRE(rig_init(&b, "vtb", f, NULL, 64) == 0);
	sa = pkt_socket("vta", false);
	sb = pkt_socket("vtb", false);
	REQUIRE(wrk_create(&wa, "vt-a") == 0 && wrk_create(&wb, "vt-b") == 0);
	REQUIRE(wrk_add(wa, &a.qp) == 0 && wrk_add(wb, &b.qp) == 0);
	REQUIRE(wrk_start(wa) == 0 && wrk_start(wb) == 0);
	CHECK(wrk_call(wa, record_thread, NULL) == 0);
	CHECK(!pthread_equal(seen_thread, pthread_self()));
	post_tx_frames(&a, 3, 1);
	post_tx_frames(&b, 3, 11);
	for (int i = 0; i < 3; i++) {
		CHECK(pkt_recv_marked(sa, buf, sizeof(buf), 2000, 0) == 60);
		CHECK(pkt_recv_marked(sb, buf, sizeof(buf), 2000, 0) == 60);
	}
	wrk_destroy(wa);
	wrk_destroy(wb);
	close(sa);
	close(sb);
	rig_destroy(&a);
	rig_destroy(&b);
}

/*
 * An embedder hands the worker a kick fd that is no eventfd: a pipe whose writer has closed is
 * readable for ever and reads return 0. The worker used to read it, see nothing drained, and be
 * woken again at once: one core at 100 %. It must give up on that ring (broken, unwatched) and
 * go on serving the other ring and the other pair without spinning.
 */
static void test_undrainable_kick(void)
{
	uint64_t f = F(VQ_F_VERSION_1);
	struct rig a, b;
	struct wrk *w;
	uint8_t buf[2048];
	long long c0, used;
	int p[2], sb;

	REQUIRE(rig_init(&a, "vtk", f, NULL, 64) == 0);
	REQUIRE(rig_init(&b, "vtl", f, NULL, 64) == 0);
	sb = pkt_socket("vtl", false);
	REQUIRE(pipe(p) == 0);
	close(p[1]);
	a.qp.rx.kick_fd = p[0];
	REQUIRE(wrk_create(&w, "vt-k") == 0);
	REQUIRE(wrk_add(w, &a.qp) == 0 && wrk_add(w, &b.qp) == 0);
	REQUIRE(wrk_start(w) == 0);
	usleep(100000);
	c0 = th_cpu_ms();
	usleep(400000);
	used = th_cpu_ms() - c0;
	printf("undrainable kick fd: %lld ms of CPU in 400 ms\n", used);
	CHECK(used < 100);
	/* the worker still takes commands; the call also orders its writes before our reads */
	CHECK(wrk_call(w, record_thread, NULL) == 0);
	CHECK(vq_is_broken(&a.qp.rx) && !vq_is_broken(&a.qp.tx));
	post_tx_frames(&b, 3, 21);
	for (int i = 0; i < 3; i++)
		CHECK(pkt_recv_marked(sb, buf, sizeof(buf), 2000, 0) == 60);
	wrk_destroy(w);
	close(p[0]);
	close(sb);
	rig_destroy(&a);
	rig_destroy(&b);
}

int main(void)
{
	th_private_netns();
	test_ping();
	test_fairness_and_bases();
	test_per_pair_workers();
	test_undrainable_kick();
	return th_done("wrk");
}
