// SPDX-License-Identifier: MIT
/* vhost-user server (src/vhost/vu.c) vs an in-process fake frontend: sessions with traffic,
 * malformed messages, fd hygiene, isolation, a second frontend, disconnects, client mode. */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "../src/vhost/vu_proto.h"
#include "netns.h"
#include "rig.h"
#include "virtap/evl.h"
#include "virtap/log.h"
#include "virtap/vu.h"
#include "vufe.h"

#define F(b)	(1ull << (b))
#define QNUM	256
#define RXBUF	2048
#define WAIT_MS 2000
#define WANT_F	(F(VQ_F_VERSION_1) | F(VIRTIO_NET_F_MRG_RXBUF) | F(VU_F_PROTOCOL_FEATURES))
#define NSTEPS	18 /* messages in vufe's start sequence for one queue pair */

static char dir[64], sock0[108], sock1[108], sock2[108];
static struct evl *loop;
static uint8_t frame[RXBUF], got[4096];

/* ---- the fake frontend (tests/lib/vufe.c) with this test's conventions ------------------ */

/* Connect and ask GET_FEATURES (retried while the port still serves the previous frontend). */
static int fe_open(const char *path, uint64_t *features)
{
	int s = vufe_open(path, features, WAIT_MS);

	REQUIRE(s >= 0);
	return s;
}

static int fe_connect(const char *path)
{
	int s = vufe_sock_connect(path);

	REQUIRE(s >= 0);
	return s;
}

static bool rejected(long r)
{
	return r == 1 || r == -1;
}

static bool closed_by_peer(int s)
{
	return vufe_peer_closed(s, WAIT_MS);
}

/* Return once the port is done with every earlier frontend: ours is accepted (so the earlier
 * ones were dropped and cleaned up), then dropped by virtap itself with no state to free. */
static void port_idle(const char *path)
{
	struct vu_hdr h = {.request = VU_GET_FEATURES, .flags = 0x2};
	int s = fe_open(path, NULL);

	REQUIRE(vufe_send_raw(s, &h, sizeof(h), NULL, 0) == 0 && closed_by_peer(s));
	close(s);
}

/* A fresh connection with REPLY_ACK negotiated, so a failed request answers with ack 1. */
static int fe_fresh(const char *path)
{
	int s = fe_open(path, NULL);
	uint64_t pf = F(VU_PF_REPLY_ACK);

	REQUIRE(vufe_send_msg(s, VU_SET_PROTOCOL_FEATURES, VU_VERSION, &pf, 8, NULL, 0) == 0);
	return s;
}

static struct vufe *guest_new(void)
{
	struct vufe *gu = calloc(1, sizeof(*gu));

	REQUIRE(gu && vufe_init(gu, 16u << 20, &(struct vufe_opts){.qsize = QNUM}) == 0);
	return gu;
}

static void guest_free(struct vufe *gu)
{
	vufe_fini(gu); /* closes the session's socket too */
	free(gu);
}

/* A whole session on gu->sock: connect, negotiate, map memory, start both rings; one check per
 * message. Returns the socket (owned by gu). */
static int session_open(const char *path, struct vufe *gu)
{
	REQUIRE(vufe_open_session(gu, path) == 0);
	REQUIRE(vufe_nsteps(gu) == NSTEPS);
	for (unsigned k = 0; k < NSTEPS; k++) {
		bool ok = vufe_step(gu, k);

		CHECK(ok);
		if (!ok)
			fprintf(stderr, "  session step %u failed\n", k);
	}
	return gu->sock;
}

static void rx_post(struct vufe *gu, unsigned n)
{
	REQUIRE(vufe_post_rx(gu, n, RXBUF) == (int)n);
}

/* Guest -> namespace: one TX chain (zero header + frame) arrives byte-exact on the TAP and the
 * chain comes back used. */
static bool tx_one(struct vufe *gu, int pkt, size_t len, uint32_t seq)
{
	uint32_t id, ulen;
	long n;

	make_frame(frame, len, seq);
	if (vufe_send(gu, frame, len) < 0)
		return false;
	n = pkt_recv_marked(pkt, got, sizeof(got), WAIT_MS, 0);
	if (n != (long)len || memcmp(got, frame, len) != 0) {
		fprintf(stderr, "  TX frame %u: got %ld bytes, want %zu\n", seq, n, len);
		return false;
	}
	return vufe_take_used(gu, 1, &id, &ulen, WAIT_MS) == 1 && id < QNUM && ulen == 0;
}

/* Namespace -> guest: a frame sent into the TAP lands byte-exact in an RX buffer. */
static bool rx_one(struct vufe *gu, int pkt, size_t len, uint32_t seq)
{
	static const uint8_t zero[10];
	uint16_t nb;
	long n;

	make_frame(frame, len, seq);
	if (send(pkt, frame, len, 0) != (ssize_t)len)
		return false;
	n = vufe_recv_q(gu, 0, got, sizeof(got), WAIT_MS);
	if (n <= 0) {
		fprintf(stderr, "  RX frame %u: nothing arrived\n", seq);
		return false;
	}
	memcpy(&nb, gu->last_hdr + 10, 2);
	return n == (long)len && memcmp(gu->last_hdr, zero, 10) == 0 && le16toh(nb) == 1 &&
	       memcmp(got, frame, len) == 0;
}

/* ---- fds ------------------------------------------------------------------------------- */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d) {
		perror("/proc/self/fd");
		exit(1);
	}
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own fd */
}

/* Our fd count once virtap's loop has caught up with our closes (it should reach want). */
static int settle_fds(int want)
{
	long long end = th_now_ms() + WAIT_MS;
	int n;

	while ((n = count_fds()) != want && th_now_ms() < end)
		usleep(5000);
	usleep(100000);
	return count_fds();
}

/* ---- a. the QEMU-like session ------------------------------------------------------------ */

static bool traffic(struct vufe *gu, int pkt, uint32_t n, uint32_t seq)
{
	bool ok = true;

	for (uint32_t i = 0; i < n; i++) {
		ok &= tx_one(gu, pkt, 60 + 200 * i, seq + i);
		ok &= rx_one(gu, pkt, 60 + 180 * i, seq + 100 + i);
	}
	return ok;
}

/* Restart a stopped ring where it stopped (QEMU's vm stop/cont): NUM, BASE and ADDR pipelined in
 * one write, each acked in order; then KICK, CALL, ENABLE. */
static void ring_restart(int s, struct vufe *gu, uint32_t i, uint32_t base)
{
	struct fg_vq *q = &gu->q[i];
	struct vu_vring_state num = {i, QNUM}, b = {i, base};
	struct vu_vring_addr a = {.index = i,
				  .desc_user_addr = vufe_uva(gu, q->desc),
				  .used_user_addr = vufe_uva(gu, q->used),
				  .avail_user_addr = vufe_uva(gu, q->avail)};
	static const uint32_t reqs[3] = {VU_SET_VRING_NUM, VU_SET_VRING_BASE, VU_SET_VRING_ADDR};
	const uint32_t fl = VU_VERSION | VU_FLAG_NEED_REPLY;
	uint8_t buf[3 * sizeof(struct vu_hdr) + 2 * sizeof(num) + sizeof(a)];
	size_t at = 0;
	uint64_t ack;

	at += vufe_msg_put(buf + at, VU_SET_VRING_NUM, fl, &num, sizeof(num));
	at += vufe_msg_put(buf + at, VU_SET_VRING_BASE, fl, &b, sizeof(b));
	at += vufe_msg_put(buf + at, VU_SET_VRING_ADDR, fl, &a, sizeof(a));
	CHECK(vufe_send_raw(s, buf, at, NULL, 0) == 0);
	for (unsigned k = 0; k < 3; k++)
		CHECK(vufe_recv_reply(s, reqs[k], &ack, sizeof(ack), NULL) == 8 && ack == 0);
	CHECK(vufe_call_vring_fd(s, VU_SET_VRING_KICK, i, q->kick_fd) == 0);
	CHECK(vufe_call_vring_fd(s, VU_SET_VRING_CALL, i, q->call_fd) == 0);
	CHECK(vufe_call_state(s, VU_SET_VRING_ENABLE, i, 1) == 0);
}

static void test_session(void)
{
	struct vufe *gu = guest_new();
	uint64_t f = 0;
	int s = fe_open(sock0, &f), pkt = pkt_socket("vtu0", false);

	REQUIRE(pkt >= 0);
	CHECK(f & F(VQ_F_VERSION_1));
	CHECK(f & F(VIRTIO_NET_F_MRG_RXBUF));
	CHECK(f & F(VU_F_PROTOCOL_FEATURES));
	close(s);
	s = session_open(sock0, gu);
	rx_post(gu, 32);
	CHECK(traffic(gu, pkt, 8, 0));
	/* The memory table again, as on memory hotplug: the rings follow it, traffic goes on. */
	CHECK(vufe_set_mem_table(gu) == 0);
	CHECK(traffic(gu, pkt, 2, 10));
	/* The rings stop where the guest is: the number of chains consumed, asked twice. */
	CHECK(gu->used[0] == 10 && gu->used[1] == 10);
	for (uint32_t i = 0; i < 2; i++) {
		CHECK(vufe_get_vring_base(s, i) == gu->used[i]);
		CHECK(vufe_get_vring_base(s, i) == gu->used[i]);
	}
	/* Restarted there, with RX buffers still posted from before the stop. */
	ring_restart(s, gu, 0, gu->used[0]);
	ring_restart(s, gu, 1, gu->used[1]);
	CHECK(traffic(gu, pkt, 3, 20));
	CHECK(vufe_get_vring_base(s, 0) == 13 && vufe_get_vring_base(s, 1) == 13);
	close(pkt);
	guest_free(gu);
}

/* ---- b + c. malformed messages, fd hygiene ------------------------------------------------ */

static struct vufe *vg; /* guest memory for the cases that need a memory table */

static int new_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC);

	REQUIRE(fd >= 0);
	return fd;
}

static void v_bad_version(int s)
{
	CHECK(vufe_send_msg(s, VU_GET_FEATURES, 0x2, NULL, 0, NULL, 0) == 0);
	CHECK(closed_by_peer(s));
}

static void v_too_big(int s)
{
	struct vu_hdr h = {.request = VU_SET_OWNER, .flags = VU_VERSION, .size = 4096};

	CHECK(vufe_send_raw(s, &h, sizeof(h), NULL, 0) == 0);
	CHECK(closed_by_peer(s));
}

static void v_size_below_table(int s)
{
	uint32_t idx = 0;

	CHECK(vufe_call(s, VU_SET_VRING_NUM, &idx, 4, NULL, 0) == -1);
}

static void v_vring_num_6(int s)
{
	CHECK(rejected(vufe_call_state(s, VU_SET_VRING_NUM, 0, 6)));
}

static void v_vring_num_65536(int s)
{
	CHECK(rejected(vufe_call_state(s, VU_SET_VRING_NUM, 0, 65536)));
}

static void v_vring_num_0(int s)
{
	CHECK(rejected(vufe_call_state(s, VU_SET_VRING_NUM, 0, 0)));
}

static void v_ring_index(int s)
{
	CHECK(rejected(vufe_call_state(s, VU_SET_VRING_NUM, 200, QNUM)));
}

static void v_ring_index_get_base(int s)
{
	struct vu_vring_state st = {200, 0};

	CHECK(rejected(vufe_call(s, VU_GET_VRING_BASE, &st, sizeof(st), NULL, 0)));
}

static void v_ring_index_kick(int s)
{
	int fd = new_eventfd();

	CHECK(rejected(vufe_call_vring_fd(s, VU_SET_VRING_KICK, 200, fd)));
	close(fd);
}

static void v_addr_outside(int s)
{
	struct vu_vring_addr a = {.index = 0,
				  .desc_user_addr = vufe_uva(vg, FG_GPA_BASE) + vg->g.size,
				  .used_user_addr = vufe_uva(vg, vg->q[0].used),
				  .avail_user_addr = vufe_uva(vg, vg->q[0].avail)};

	CHECK(vufe_set_mem_table(vg) == 0);
	CHECK(vufe_call_state(s, VU_SET_VRING_NUM, 0, QNUM) == 0);
	CHECK(rejected(vufe_call(s, VU_SET_VRING_ADDR, &a, sizeof(a), NULL, 0)));
}

static void v_addr_across_end(int s)
{
	/* Starts inside the table, ends past it. */
	struct vu_vring_addr a = {.index = 1,
				  .desc_user_addr = vufe_uva(vg, vg->q[1].desc),
				  .used_user_addr = vufe_uva(vg, FG_GPA_BASE) + vg->g.size - 64,
				  .avail_user_addr = vufe_uva(vg, vg->q[1].avail)};

	CHECK(vufe_set_mem_table(vg) == 0);
	CHECK(vufe_call_state(s, VU_SET_VRING_NUM, 1, QNUM) == 0);
	CHECK(rejected(vufe_call(s, VU_SET_VRING_ADDR, &a, sizeof(a), NULL, 0)));
}

static void v_mem_regions_vs_fds(int s)
{
	struct vu_mem_table t = {.nregions = 2};
	uint64_t half = vg->g.size / 2;

	t.regions[0] = (struct vu_mem_region){FG_GPA_BASE, half, vufe_uva(vg, FG_GPA_BASE), 0};
	t.regions[1] = (struct vu_mem_region){FG_GPA_BASE + half, half,
					      vufe_uva(vg, FG_GPA_BASE) + half, half};
	CHECK(rejected(
	    vufe_call(s, VU_SET_MEM_TABLE, &t, 8 + 2 * sizeof(t.regions[0]), &vg->g.memfd, 1)));
}

static void v_mem_fds_vs_regions(int s)
{
	struct vu_mem_table t = {.nregions = 1};
	int fds[2] = {vg->g.memfd, vg->g.memfd};

	t.regions[0] =
	    (struct vu_mem_region){FG_GPA_BASE, vg->g.size, vufe_uva(vg, FG_GPA_BASE), 0};
	CHECK(rejected(vufe_call(s, VU_SET_MEM_TABLE, &t, 8 + sizeof(t.regions[0]), fds, 2)));
}

static void v_mem_overlap(int s)
{
	struct vu_mem_table t = {.nregions = 2};
	uint64_t half = vg->g.size / 2;
	int fds[2] = {vg->g.memfd, vg->g.memfd};

	t.regions[0] = (struct vu_mem_region){FG_GPA_BASE, half, vufe_uva(vg, FG_GPA_BASE), 0};
	t.regions[1] = (struct vu_mem_region){FG_GPA_BASE + half / 2, half,
					      vufe_uva(vg, FG_GPA_BASE) + half, half};
	CHECK(rejected(vufe_call(s, VU_SET_MEM_TABLE, &t, 8 + 2 * sizeof(t.regions[0]), fds, 2)));
}

static void v_mem_zero_regions(int s)
{
	struct vu_mem_table t = {.nregions = 0};

	CHECK(rejected(
	    vufe_call(s, VU_SET_MEM_TABLE, &t, 8 + sizeof(t.regions[0]), &vg->g.memfd, 1)));
}

static void v_features_not_offered(int s)
{
	uint64_t f = 0;

	CHECK(vufe_get_u64(s, VU_GET_FEATURES, &f) == 0);
	CHECK(!(f & F(VIRTIO_NET_F_GUEST_ANNOUNCE)));
	CHECK(rejected(
	    vufe_call_u64(s, VU_SET_FEATURES, (f & WANT_F) | F(VIRTIO_NET_F_GUEST_ANNOUNCE))));
}

static void v_protocol_features_not_offered(int s)
{
	CHECK(rejected(vufe_call_u64(s, VU_SET_PROTOCOL_FEATURES, F(VU_PF_REPLY_ACK) | F(63))));
}

static void v_unknown_request(int s)
{
	CHECK(vufe_send_msg(s, 999, VU_VERSION, NULL, 0, NULL, 0) == 0);
	CHECK(closed_by_peer(s));
}

static void v_unknown_request_ack(int s)
{
	uint64_t f;
	int fd = new_eventfd();

	/* Failed, fd closed, and the connection still answers. */
	CHECK(vufe_call(s, 999, NULL, 0, &fd, 1) == 1);
	/* A request of the protocol we do not serve (CREATE_CRYPTO_SESSION) fails the same way. */
	CHECK(vufe_call(s, 26, NULL, 0, NULL, 0) == 1);
	close(fd);
	CHECK(vufe_get_u64(s, VU_GET_FEATURES, &f) == 0);
}

static void v_kick_nofd_with_fd(int s)
{
	uint64_t v = 0 | VU_VRING_NOFD;
	int fd = new_eventfd();

	CHECK(rejected(vufe_call(s, VU_SET_VRING_KICK, &v, 8, &fd, 1)));
	close(fd);
}

static void v_kick_fd_missing(int s)
{
	uint64_t v = 0;

	CHECK(rejected(vufe_call(s, VU_SET_VRING_KICK, &v, 8, NULL, 0)));
}

static void v_call_unknown_bits(int s)
{
	uint64_t v = 1 | (1ull << 40);
	int fd = new_eventfd();

	CHECK(rejected(vufe_call(s, VU_SET_VRING_CALL, &v, 8, &fd, 1)));
	close(fd);
}

static void v_fd_not_expected(int s)
{
	struct vu_vring_state st = {0, QNUM};
	int fd = new_eventfd();

	CHECK(vufe_call(s, VU_SET_VRING_NUM, &st, sizeof(st), &fd, 1) == -1);
	close(fd);
}

static void many_fds(int s, unsigned n)
{
	int fds[VUFE_MAX_FDS];

	for (unsigned i = 0; i < n; i++)
		fds[i] = new_eventfd();
	CHECK(vufe_call(s, VU_SET_OWNER, NULL, 0, fds, n) == -1);
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

static void v_ten_fds(int s)
{
	many_fds(s, 10);
}

static void v_thirty_fds(int s)
{
	many_fds(s, 30); /* more than virtap's control buffer holds: truncated by the kernel */
}

static void v_get_vring_base_twice(int s)
{
	for (unsigned k = 1; k < NSTEPS; k++)
		CHECK(vufe_step(vg, k));
	for (uint32_t i = 0; i < 2; i++) {
		long b = vufe_get_vring_base(s, i);

		CHECK(b >= 0);
		CHECK(vufe_get_vring_base(s, i) == b);
	}
	CHECK(vufe_call_state(s, VU_SET_VRING_NUM, 0, QNUM) == 0);
}

static void v_set_num_while_started(int s)
{
	for (unsigned k = 1; k < NSTEPS; k++)
		CHECK(vufe_step(vg, k));
	CHECK(rejected(vufe_call_state(s, VU_SET_VRING_NUM, 0, 64)));
}

static void v_half_header(int s)
{
	struct vu_hdr h = {.request = VU_GET_FEATURES, .flags = VU_VERSION};

	CHECK(vufe_send_raw(s, &h, 6, NULL, 0) == 0);
}

static void v_half_payload(int s)
{
	struct {
		struct vu_hdr h;
		uint8_t p[3];
	} __attribute__((packed)) m = {{VU_SET_VRING_KICK, VU_VERSION, 8}, {0}};
	int fd = new_eventfd();

	CHECK(vufe_send_raw(s, &m, sizeof(m), &fd, 1) == 0);
	close(fd);
}

/* vhost-user: kick and call fds are eventfds. A pipe at EOF stays readable for ever (the worker
 * spun on it), a full pipe blocks the signalling write, an epoll fd never drains. */
static void vring_fd_refused(int s, uint32_t req, int fd)
{
	CHECK(rejected(vufe_call(s, req, &(uint64_t){0}, 8, &fd, 1)));
	close(fd);
}

static void v_kick_pipe(int s)
{
	int p[2];

	REQUIRE(pipe(p) == 0);
	close(p[1]);
	vring_fd_refused(s, VU_SET_VRING_KICK, p[0]);
}

static void v_call_pipe(int s)
{
	int p[2];

	REQUIRE(pipe(p) == 0);
	close(p[0]);
	vring_fd_refused(s, VU_SET_VRING_CALL, p[1]);
}

static void v_kick_epoll(int s)
{
	vring_fd_refused(s, VU_SET_VRING_KICK, epoll_create1(0));
}

/* ADD_MEM_REG only with CONFIGURE_MEM_SLOTS negotiated (fe_fresh acks REPLY_ACK alone). */
static void v_add_mem_reg_unnegotiated(int s)
{
	struct vu_mem_reg_msg m = {
	    .region = {FG_GPA_BASE, vg->g.size, vufe_uva(vg, FG_GPA_BASE), 0}};

	CHECK(rejected(vufe_call(s, VU_ADD_MEM_REG, &m, sizeof(m), &vg->g.memfd, 1)));
}

/* NET_SET_MTU only with NET_MTU negotiated: any peer could set the host TAP's MTU otherwise. */
static void v_set_mtu_unnegotiated(int s)
{
	long long mtu = if_stat("vtu0", "../mtu");

	CHECK(rejected(vufe_call_u64(s, VU_NET_SET_MTU, 1280)));
	CHECK(if_stat("vtu0", "../mtu") == mtu);
}

/* A memory region's fd is closed once mapped: one frontend must not hold hundreds of ours. */
static void v_mem_fd_closed(int s)
{
	int before = count_fds();

	(void)s;
	CHECK(vufe_set_mem_table(vg) == 0);
	CHECK(count_fds() == before);
}

struct vcase {
	const char *name;
	void (*fn)(int s);
	bool raw; /* a bare connection, no REPLY_ACK */
};

static const struct vcase vcases[] = {
    {"bad version", v_bad_version, true},
    {"payload too big", v_too_big, true},
    {"payload below the table's size", v_size_below_table, false},
    {"SET_VRING_NUM 6", v_vring_num_6, false},
    {"SET_VRING_NUM 65536", v_vring_num_65536, false},
    {"SET_VRING_NUM 0", v_vring_num_0, false},
    {"ring index 200", v_ring_index, false},
    {"GET_VRING_BASE ring 200", v_ring_index_get_base, false},
    {"SET_VRING_KICK ring 200", v_ring_index_kick, false},
    {"SET_VRING_ADDR outside memory", v_addr_outside, false},
    {"SET_VRING_ADDR across the end", v_addr_across_end, false},
    {"SET_MEM_TABLE 2 regions 1 fd", v_mem_regions_vs_fds, false},
    {"SET_MEM_TABLE 1 region 2 fds", v_mem_fds_vs_regions, false},
    {"SET_MEM_TABLE overlapping", v_mem_overlap, false},
    {"SET_MEM_TABLE 0 regions", v_mem_zero_regions, false},
    {"SET_FEATURES not offered", v_features_not_offered, false},
    {"SET_PROTOCOL_FEATURES not offered", v_protocol_features_not_offered, false},
    {"unknown request", v_unknown_request, true},
    {"unknown request with NEED_REPLY", v_unknown_request_ack, false},
    {"SET_VRING_KICK NOFD with an fd", v_kick_nofd_with_fd, false},
    {"SET_VRING_KICK fd missing", v_kick_fd_missing, false},
    {"SET_VRING_CALL unknown bits", v_call_unknown_bits, false},
    {"fd on a message without fds", v_fd_not_expected, false},
    {"10 fds", v_ten_fds, false},
    {"30 fds", v_thirty_fds, false},
    {"GET_VRING_BASE twice", v_get_vring_base_twice, false},
    {"SET_VRING_NUM while started", v_set_num_while_started, false},
    {"half a header", v_half_header, true},
    {"half a payload", v_half_payload, true},
    {"SET_VRING_KICK with a pipe", v_kick_pipe, false},
    {"SET_VRING_CALL with a pipe", v_call_pipe, false},
    {"SET_VRING_KICK with an epoll fd", v_kick_epoll, false},
    {"ADD_MEM_REG without CONFIGURE_MEM_SLOTS", v_add_mem_reg_unnegotiated, false},
    {"NET_SET_MTU without NET_MTU", v_set_mtu_unnegotiated, false},
    {"SET_MEM_TABLE keeps no fd", v_mem_fd_closed, false},
};

static void test_validation(void)
{
	int fds0, n;

	vg = guest_new();
	port_idle(sock0);
	fds0 = count_fds();
	for (size_t i = 0; i < sizeof(vcases) / sizeof(vcases[0]); i++) {
		const struct vcase *v = &vcases[i];
		int before = count_fds(), fails = th_failures;
		int s = v->raw ? fe_open(sock0, NULL) : fe_fresh(sock0);

		/* The cases that need a memory table or ring steps use vg's on this socket. */
		vg->sock = s;
		vg->dev_features = WANT_F;
		v->fn(s);
		vg->sock = -1;
		close(s);
		/* Whatever came with the message was closed; nothing of the session is left. */
		n = settle_fds(before);
		CHECK(n == before);
		if (th_failures != fails)
			fprintf(stderr, "  ^ case '%s' (fds %d -> %d)\n", v->name, before, n);
	}
	/* The port still serves a frontend afterwards. */
	close(fe_open(sock0, NULL));
	n = settle_fds(fds0);
	CHECK(n == fds0);
	guest_free(vg);
}

/* ---- e. what a frontend makes us log ------------------------------------------------------ */

/* Lines of the log that contain `needle` (counted by a sink in front of stderr). */
static const char *log_needles[3] = {"queue broken", "dirty page log", "inflight area"};
static unsigned log_hits[3];

static void count_sink(void *ctx, int level, const char *msg)
{
	(void)ctx;
	(void)level;
	for (unsigned i = 0; i < 3; i++)
		if (strstr(msg, log_needles[i]))
			__atomic_fetch_add(&log_hits[i], 1, __ATOMIC_RELAXED);
	fprintf(stderr, "%s\n", msg);
}

/*
 * A frontend that repeats what makes us log must not flood the log (README, security model):
 * a TX ring broken again after every GET_VRING_BASE and new kick, the dirty log and the inflight
 * area set up over and over. 40 rounds each used to write 40 lines each.
 */
static void test_log_limits(void)
{
	enum { ROUNDS = 40 };
	struct vufe *gu = guest_new();
	int s = session_open(sock0, gu);
	struct fg_vq *tx = &gu->q[1];
	uint64_t pf = gu->pfeatures | F(VU_PF_LOG_SHMFD) | F(VU_PF_INFLIGHT_SHMFD);
	struct vu_inflight in = {.num_queues = 2, .queue_size = QNUM};
	unsigned hits[3];
	int level = vt_log_get_level();

	vt_log_set_level(VT_LOG_INFO); /* the dirty log and inflight lines are informational */
	vt_log_set_sink(count_sink, NULL);
	CHECK(vufe_call(s, VU_SET_PROTOCOL_FEATURES, &pf, 8, NULL, 0) == 0);
	/* A TX chain whose descriptor points outside guest memory breaks ring 1 at every start. */
	fg_raw_desc(tx, 0, 1ull << 40, 64, 0, 0);
	fg_raw_avail(tx, tx->avail_idx++, 0);
	fg_publish(tx, true);
	for (unsigned r = 0; r < ROUNDS; r++) {
		int log = memfd_create("log", MFD_CLOEXEC), in_fd = -1;
		uint64_t lb[2] = {4096, 0};

		REQUIRE(log >= 0 && ftruncate(log, 4096) == 0);
		/* With LOG_SHMFD the answer is an empty reply, not an ack. */
		CHECK(vufe_send_msg(s, VU_SET_LOG_BASE, VU_VERSION, lb, sizeof(lb), &log, 1) == 0);
		CHECK(vufe_recv_reply(s, VU_SET_LOG_BASE, lb, sizeof(lb), NULL) == 0);
		close(log);
		CHECK(vufe_send_msg(s, VU_GET_INFLIGHT_FD, VU_VERSION, &in, sizeof(in), NULL, 0) ==
		      0);
		CHECK(vufe_recv_reply(s, VU_GET_INFLIGHT_FD, &in, sizeof(in), &in_fd) ==
		      (int)sizeof(in));
		if (in_fd >= 0)
			close(in_fd);
		CHECK(vufe_get_vring_base(s, 1) >= 0);
		CHECK(vufe_call_vring_fd(s, VU_SET_VRING_KICK, 1, tx->kick_fd) == 0);
	}
	CHECK(vufe_get_vring_base(s, 1) >= 0); /* the last start has run its handler */
	vt_log_set_sink(NULL, NULL);
	vt_log_set_level(level);
	for (unsigned i = 0; i < 3; i++)
		hits[i] = __atomic_load_n(&log_hits[i], __ATOMIC_RELAXED);
	printf("%u rounds: %u 'queue broken', %u 'dirty page log', %u 'inflight area' lines\n",
	       ROUNDS, hits[0], hits[1], hits[2]);
	CHECK(hits[0] >= 1 && hits[0] <= 2);
	/* The port's limit for such lines, 20 per 10 s, shared with its connect lines (so the
	 * earlier tests' connections may have used it up already). */
	CHECK(hits[1] + hits[2] <= 20);
	guest_free(gu);
}

/* ---- f. out of fds -------------------------------------------------------------------------- */

/*
 * A connection arrives while the process has no fd left: accept() fails with EMFILE and the
 * connection stays in the backlog, so the listening socket stays readable. The level-triggered
 * loop used to call us again at once, for ever (a core at 100 %, every other port's messages
 * waiting behind it). It must cost a log line and a pause, and the connection must be served
 * once fds are free again.
 */
static void test_emfile(void)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	struct rlimit was, low;
	long long c0, used;
	uint64_t f = 0;
	int c, lowest;

	port_idle(sock0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock0);
	c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	lowest = dup(0); /* the fd number accept() would get */
	REQUIRE(c >= 0 && lowest >= 0 && getrlimit(RLIMIT_NOFILE, &was) == 0);
	close(lowest);
	low = was;
	low.rlim_cur = (rlim_t)lowest;
	REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
	REQUIRE(connect(c, (struct sockaddr *)&a, sizeof(a)) == 0);
	usleep(50000);
	c0 = th_cpu_ms();
	usleep(400000);
	used = th_cpu_ms() - c0;
	REQUIRE(setrlimit(RLIMIT_NOFILE, &was) == 0);
	printf("no fd left for a connection: %lld ms of CPU in 400 ms\n", used);
	CHECK(used < 100);
	{
		struct timeval tv = {.tv_sec = WAIT_MS / 1000};

		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	CHECK(vufe_get_u64(c, VU_GET_FEATURES, &f) == 0 && (f & F(VQ_F_VERSION_1)));
	close(c);
}

/* ---- d. isolation --------------------------------------------------------------------------- */

static void bad_peer(int s, unsigned kind)
{
	struct vu_hdr h = {.request = VU_SET_OWNER, .flags = VU_VERSION};
	int fds[10];

	switch (kind % 4) {
	case 0:
		h.flags = 0;
		vufe_send_raw(s, &h, sizeof(h), NULL, 0);
		break;
	case 1:
		h.size = 4096;
		vufe_send_raw(s, &h, sizeof(h), NULL, 0);
		break;
	case 2:
		for (unsigned i = 0; i < 10; i++)
			fds[i] = new_eventfd();
		vufe_send_raw(s, &h, sizeof(h), fds, 10);
		for (unsigned i = 0; i < 10; i++)
			close(fds[i]);
		break;
	default:
		h.request = 999;
		vufe_send_raw(s, &h, sizeof(h), NULL, 0);
		break;
	}
}

static void test_isolation(void)
{
	struct vufe *gu = guest_new();
	int s = session_open(sock1, gu), pkt = pkt_socket("vtu1", false);
	unsigned ok = 0, dropped = 0;

	REQUIRE(pkt >= 0);
	rx_post(gu, 64);
	for (uint32_t i = 0; i < 20; i++) {
		int bad = fe_connect(sock0);

		bad_peer(bad, i);
		ok += tx_one(gu, pkt, 100 + i, i) && rx_one(gu, pkt, 120 + i, 1000 + i);
		dropped += closed_by_peer(bad);
		close(bad);
	}
	CHECK(ok == 20);
	CHECK(dropped == 20);
	CHECK(vufe_get_vring_base(s, 1) == 20);
	close(pkt);
	guest_free(gu);
}

/* ---- e. one frontend per port -------------------------------------------------------------- */

static void test_second_frontend(void)
{
	struct vufe *gu = guest_new();
	int s = session_open(sock0, gu), pkt = pkt_socket("vtu0", false), s2;
	uint64_t f = 0;

	REQUIRE(pkt >= 0);
	rx_post(gu, 8);
	CHECK(tx_one(gu, pkt, 200, 1));
	s2 = fe_connect(sock0);
	vufe_send_msg(s2, VU_GET_FEATURES, VU_VERSION, NULL, 0, NULL, 0);
	CHECK(closed_by_peer(s2));
	close(s2);
	CHECK(vufe_get_u64(s, VU_GET_FEATURES, &f) == 0 && (f & F(VQ_F_VERSION_1)));
	CHECK(tx_one(gu, pkt, 300, 2));
	CHECK(rx_one(gu, pkt, 400, 3));
	close(pkt);
	guest_free(gu);
}

/* ---- f. disconnect at any step frees everything; a new session starts clean ------------- */

static void test_disconnect_anytime(void)
{
	int pkt = pkt_socket("vtu0", false), fds0;
	struct vufe *gu;
	int s;

	REQUIRE(pkt >= 0);
	port_idle(sock0);
	fds0 = count_fds();
	for (unsigned k = 0; k <= NSTEPS; k++) {
		int n;

		gu = guest_new();
		REQUIRE(vufe_open_session(gu, sock0) == 0);
		for (unsigned j = 0; j < k; j++)
			CHECK(vufe_step(gu, j));
		if (k == NSTEPS) {
			/* Rings running, traffic passed, RX buffers still posted. */
			rx_post(gu, 16);
			CHECK(tx_one(gu, pkt, 500, 7));
			CHECK(rx_one(gu, pkt, 600, 8));
		}
		guest_free(gu); /* hangs up */
		n = settle_fds(fds0);
		CHECK(n == fds0);
		if (n != fds0)
			fprintf(stderr, "  disconnect after %u steps: fds %d -> %d\n", k, fds0, n);
	}
	gu = guest_new();
	s = session_open(sock0, gu);
	rx_post(gu, 16);
	for (uint32_t i = 0; i < 4; i++) {
		CHECK(tx_one(gu, pkt, 64 + i, i));
		CHECK(rx_one(gu, pkt, 1514 - i, i));
	}
	CHECK(vufe_get_vring_base(s, 0) == 4 && vufe_get_vring_base(s, 1) == 4);
	close(pkt);
	guest_free(gu);
}

/* ---- client mode: virtap connects to the frontend, and again after every disconnect ------- */

static int listen_fd = -1;

static int listen_on(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	REQUIRE(l >= 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	unlink(path);
	REQUIRE(bind(l, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(l, 4) == 0);
	return l;
}

/* The next connection virtap makes to us, or -1 after WAIT_MS. */
static int accept_port(void)
{
	struct pollfd p = {.fd = listen_fd, .events = POLLIN};
	struct timeval tv = {.tv_sec = WAIT_MS / 1000};
	int c;

	if (poll(&p, 1, WAIT_MS) != 1)
		return -1;
	c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (c >= 0)
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return c;
}

static void test_client_mode(void)
{
	struct vu_hdr h = {.request = VU_SET_OWNER, .flags = 0x2};
	uint64_t f = 0;
	int c = accept_port();

	/* Connected when the port was created; again after we hang up. */
	CHECK(c >= 0 && vufe_get_u64(c, VU_GET_FEATURES, &f) == 0 && (f & F(VQ_F_VERSION_1)));
	close(c);
	c = accept_port();
	/* Without REPLY_ACK negotiated, NEED_REPLY earns no ack: the next reply is GET_FEATURES'.
	 */
	CHECK(c >= 0 && vufe_send_msg(c, VU_SET_OWNER, VU_VERSION | VU_FLAG_NEED_REPLY, NULL, 0,
				      NULL, 0) == 0);
	CHECK(vufe_get_u64(c, VU_GET_FEATURES, &f) == 0);
	/* ...and after a protocol error of ours. */
	CHECK(vufe_send_raw(c, &h, sizeof(h), NULL, 0) == 0 && closed_by_peer(c));
	close(c);
	c = accept_port();
	CHECK(c >= 0 && vufe_get_u64(c, VU_GET_FEATURES, &f) == 0);
	/* Nobody listening for a while: virtap keeps retrying until we are back. */
	close(listen_fd);
	unlink(sock2);
	close(c);
	usleep(200000);
	listen_fd = listen_on(sock2);
	c = accept_port();
	CHECK(c >= 0 && vufe_get_u64(c, VU_GET_FEATURES, &f) == 0);
	close(c);
}

/* ---- the loop -------------------------------------------------------------------------------- */

static void on_stop(void *arg, int fd, unsigned events)
{
	uint64_t v;
	ssize_t n = read(fd, &v, sizeof(v));

	(void)n;
	(void)events;
	evl_stop(arg);
}

static int loop_result = -1;

static void *loop_main(void *arg)
{
	(void)arg;
	loop_result = evl_run(loop); /* read after pthread_join */
	return NULL;
}

static struct vu_port *port_new(const char *name, const char *sock, const char *tap, bool client)
{
	struct vu_port_config c;
	struct vu_port *p = NULL;

	vu_port_config_default(&c);
	c.client = client;
	c.reconnect_ms = 20;
	snprintf(c.name, sizeof(c.name), "%s", name);
	snprintf(c.socket, sizeof(c.socket), "%s", sock);
	snprintf(c.tap, sizeof(c.tap), "%s", tap);
	REQUIRE(vu_port_create(&p, &c, loop) == 0);
	return p;
}

int main(void)
{
	struct vu_port *p0, *p1, *p2;
	uint64_t one = 1;
	pthread_t tid;
	int stop_fd;

	th_private_netns();
	/* No IPv6 autoconf/MLD frames on the TAPs: only our frames cross them. */
	th_sh("sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1");
	snprintf(dir, sizeof(dir), "/tmp/vt-vu-XXXXXX");
	REQUIRE(mkdtemp(dir));
	snprintf(sock0, sizeof(sock0), "%s/vu0.sock", dir);
	snprintf(sock1, sizeof(sock1), "%s/vu1.sock", dir);
	/* The loop is not thread-safe: everything is registered before its thread starts. */
	REQUIRE(evl_create(&loop) == 0);
	snprintf(sock2, sizeof(sock2), "%s/fe2.sock", dir);
	p0 = port_new("vu0", sock0, "vtu0", false);
	p1 = port_new("vu1", sock1, "vtu1", false);
	listen_fd = listen_on(sock2);
	p2 = port_new("vu2", sock2, "vtu2", true);
	stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	REQUIRE(stop_fd >= 0 && evl_add(loop, stop_fd, EPOLLIN, on_stop, loop) == 0);
	REQUIRE(pthread_create(&tid, NULL, loop_main, NULL) == 0);

	test_session();
	test_second_frontend();
	test_disconnect_anytime();
	test_validation();
	test_log_limits();
	test_emfile();
	test_isolation();
	test_client_mode();

	REQUIRE(write(stop_fd, &one, sizeof(one)) == sizeof(one));
	pthread_join(tid, NULL);
	CHECK(loop_result == 0);
	vu_port_destroy(p0);
	vu_port_destroy(p1);
	vu_port_destroy(p2);
	close(listen_fd);
	unlink(sock2);
	evl_del(loop, stop_fd);
	close(stop_fd);
	evl_destroy(loop);
	rmdir(dir);
	return th_done("vu");
}
