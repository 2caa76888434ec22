// SPDX-License-Identifier: MIT
/*
 * The datapath against a real TAP device in a private network namespace: frames sent from the
 * namespace arrive byte-exact in guest buffers and guest TX frames arrive byte-exact in the
 * namespace, 60 B to 64 KiB (TSO), mergeable on and off, EVENT_IDX on and off, indirect
 * descriptors; then the net queue's hold/flush path, padding, oversize drops and TX header checks.
 */
#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "netns.h"
#include "rig.h"
#include "virtap/log.h"

#define F(b) (1ull << (b))
#define BASE (F(VQ_F_VERSION_1))
#define OFFL                                                                                       \
	(F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_HOST_TSO4) |           \
	 F(VIRTIO_NET_F_GUEST_TSO4))

static uint8_t sent[70000], got[140000];

/* Run the RX handler until n frames have been delivered or 2 s passed. */
static void pump_rx(struct rig *r, uint64_t n)
{
	long long end = th_now_ms() + 2000;

	while (r->qp.stats.rx_packets < n && th_now_ms() < end) {
		if (vnet_handle_rx(&r->qp) < 0)
			break;
		if (r->qp.stats.rx_packets < n)
			usleep(1000);
	}
}

static void send_plain(int s, const uint8_t *f, size_t len)
{
	REQUIRE(send(s, f, len, 0) == (ssize_t)len);
}

/* Namespace -> guest, byte-exact, for one feature combination. */
static void rx_case(uint64_t features, bool indirect, uint32_t bufsize, bool tso)
{
	static const size_t sizes[] = {60, 61, 1514, 9014};
	struct vnet_hdr vh;
	struct rig r;
	int s, sv;
	long n;

	REQUIRE(rig_init(&r, "vt0", features, NULL, 256) == 0);
	th_sh("ip link set vt0 mtu 9000");
	s = pkt_socket("vt0", false);
	sv = pkt_socket("vt0", true);
	REQUIRE(s >= 0 && sv >= 0);
	rig_post_rx(&r, 64, bufsize, indirect);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t before = r.qp.stats.rx_packets;

		make_frame(sent, sizes[i], (uint32_t)i);
		send_plain(s, sent, sizes[i]);
		pump_rx(&r, before + 1);
		n = rig_take_rx(&r, got, sizeof(got));
		CHECK(n == (long)(r.qp.hdr_len + sizes[i]));
		if (n != (long)(r.qp.hdr_len + sizes[i])) {
			fprintf(stderr, "  size %zu: got %ld (features %#llx)\n", sizes[i], n,
				(unsigned long long)features);
			continue;
		}
		/* The TAP's header for a plain frame: no offload flags. */
		memcpy(&vh, got, sizeof(vh));
		CHECK(vh.flags == 0 && vh.gso_type == 0);
		CHECK(memcmp(got + r.qp.hdr_len, sent, sizes[i]) == 0);
	}
	if (tso) {
		/* A 64 KiB TCP segment handed over whole (GSO), header fields intact. */
		size_t len = 65000;
		struct vnet_hdr h = {.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
				     .gso_type = VIRTIO_NET_HDR_GSO_TCPV4,
				     .hdr_len = htole16(54),
				     .gso_size = htole16(1448),
				     .csum_start = htole16(34),
				     .csum_offset = htole16(16)};
		uint64_t before = r.qp.stats.rx_packets;

		memcpy(sent, &h, 10);
		make_tcp_frame(sent + 10, len, 77);
		REQUIRE(send(sv, sent, 10 + len, 0) == (ssize_t)(10 + len));
		pump_rx(&r, before + 1);
		n = rig_take_rx(&r, got, sizeof(got));
		CHECK(n == (long)(r.qp.hdr_len + len));
		if (n == (long)(r.qp.hdr_len + len)) {
			memcpy(&vh, got, sizeof(vh));
			CHECK(vh.gso_type == VIRTIO_NET_HDR_GSO_TCPV4);
			CHECK(le16toh(vh.gso_size) == 1448);
			CHECK(vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
			CHECK(le16toh(vh.csum_start) == 34 && le16toh(vh.csum_offset) == 16);
			CHECK(memcmp(got + r.qp.hdr_len, sent + 10, len) == 0);
		}
	}
	CHECK(!vq_is_broken(&r.qp.rx));
	CHECK(r.qp.stats.rx_drop_too_big == 0);
	close(s);
	close(sv);
	rig_destroy(&r);
}

/* Guest -> namespace, byte-exact. piece: descriptor size (header split across descriptors). */
static void tx_case(uint64_t features, bool indirect, size_t piece, bool tso)
{
	static const size_t sizes[] = {60, 61, 1514, 9014};
	unsigned hl = vnet_hdr_len(features);
	struct rig r;
	long n;
	int s;

	REQUIRE(rig_init(&r, "vt0", features, NULL, 256) == 0);
	th_sh("ip link set vt0 mtu 9000");
	s = pkt_socket("vt0", false);
	REQUIRE(s >= 0);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		memset(sent, 0, hl);
		make_frame(sent + hl, sizes[i], (uint32_t)i);
		REQUIRE(rig_post_tx(&r, sent, hl + sizes[i], piece, indirect) >= 0);
		CHECK(vnet_handle_tx(&r.qp) == VNET_IDLE);
		n = pkt_recv_marked(s, got, sizeof(got), 1000, 0);
		CHECK(n == (long)sizes[i] && memcmp(got, sent + hl, sizes[i]) == 0);
	}
	if (tso) {
		size_t len = 65000;
		struct vnet_hdr h = {.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
				     .gso_type = VIRTIO_NET_HDR_GSO_TCPV4,
				     .hdr_len = htole16(54),
				     .gso_size = htole16(1448),
				     .csum_start = htole16(34),
				     .csum_offset = htole16(16)};

		memcpy(sent, &h, hl);
		make_tcp_frame(sent + hl, len, 5);
		REQUIRE(rig_post_tx(&r, sent, hl + len, piece < 4096 ? 4096 : piece, indirect) >=
			0);
		CHECK(vnet_handle_tx(&r.qp) == VNET_IDLE);
		n = pkt_recv_marked(s, got, sizeof(got), 1000, 0);
		CHECK(n == (long)len && memcmp(got, sent + hl, len) == 0);
	}
	/* Every chain came back used, with length 0 (the device writes nothing on TX). */
	uint32_t id, len, used = 0;
	while (fg_used(&r.ftx, &id, &len)) {
		CHECK(len == 0);
		used++;
	}
	CHECK(used == 4 + (tso ? 1 : 0));
	CHECK(r.qp.stats.tx_packets == used);
	CHECK(!vq_is_broken(&r.qp.tx));
	close(s);
	rig_destroy(&r);
}

static void test_both_directions(void)
{
	const uint64_t mrg = F(VIRTIO_NET_F_MRG_RXBUF), ev = F(VQ_F_EVENT_IDX);
	const uint64_t ind = F(VQ_F_INDIRECT_DESC);

	/* Mergeable: 1536-byte buffers, large frames span many of them. */
	rx_case(BASE | mrg | OFFL, false, 1536, true);
	rx_case(BASE | mrg | ev | OFFL, false, 1536, true);
	rx_case(BASE | mrg | ev, false, 2048, false);
	rx_case(F(VIRTIO_NET_F_MRG_RXBUF) | OFFL, false, 1536, true); /* legacy + mergeable */
	/* Non-mergeable big-packet layout: one chain holds a whole 64 KiB frame. */
	rx_case(BASE | OFFL, false, 65562, true);
	rx_case(BASE | ev | ind | OFFL, true, 65562, true);
	rx_case(OFFL, false, 65562, true); /* legacy 10-byte header */
	rx_case(ind, true, 65562, false);

	tx_case(BASE | mrg | OFFL, false, 4096, true);
	tx_case(BASE | mrg | ev | OFFL, false, 7, false); /* header split over descriptors */
	tx_case(BASE | ind | OFFL, true, 1000, true);
	tx_case(OFFL, false, 3, false); /* legacy header, 3-byte pieces */
	tx_case(BASE | ev | ind, true, 512, false);
}

/* No RX buffers: nothing read (frames stay in the TAP); buffers posted: all, in order. */
static void test_hold_no_buffers(void)
{
	struct rig r;
	int s;

	REQUIRE(rig_init(&r, "vt0", BASE | F(VIRTIO_NET_F_MRG_RXBUF), NULL, 256) == 0);
	s = pkt_socket("vt0", false);
	REQUIRE(s >= 0);
	for (uint32_t i = 0; i < 20; i++) {
		make_frame(sent, 100, i);
		send_plain(s, sent, 100);
	}
	CHECK(vnet_handle_rx(&r.qp) == VNET_WAIT_GUEST);
	CHECK(r.qp.stats.rx_packets == 0 && r.qp.stats.rx_paused == 1);
	CHECK(r.qp.hold.count == 0); /* nothing taken out of the kernel's queue */
	/* The device asked for a kick (EVENT_IDX off: used->flags cleared). */
	CHECK(fg_used_flags(&r.frx) == 0);
	rig_post_rx(&r, 32, 2048, false);
	pump_rx(&r, 20);
	CHECK(r.qp.stats.rx_packets == 20);
	for (uint32_t i = 0; i < 20; i++) {
		uint32_t seq = ~0u;
		long n = rig_take_rx(&r, got, sizeof(got));

		CHECK(n == 12 + 100);
		memcpy(&seq, got + 12 + 14, 4);
		CHECK(seq == i);
	}
	close(s);
	rig_destroy(&r);
}

/* Too few buffers for a big frame: the frame is held, the TAP is not read further; after the
 * guest refills, the held frame goes first, then the rest, in order. */
static void test_hold_partial(void)
{
	struct rig r;
	int s;

	REQUIRE(rig_init(&r, "vt0", BASE | F(VIRTIO_NET_F_MRG_RXBUF), NULL, 256) == 0);
	th_sh("ip link set vt0 mtu 9000");
	s = pkt_socket("vt0", false);
	REQUIRE(s >= 0);
	rig_post_rx(&r, 2, 2048, false);
	make_frame(sent, 9014, 0);
	send_plain(s, sent, 9014);
	for (uint32_t i = 1; i <= 5; i++) {
		make_frame(got, 200, i);
		send_plain(s, got, 200);
	}
	CHECK(vnet_handle_rx(&r.qp) == VNET_WAIT_GUEST);
	CHECK(r.qp.hold.count == 1 && r.qp.stats.rx_held == 1);
	CHECK(r.qp.stats.rx_packets == 0);
	CHECK(fg_used_pending(&r.frx) == 0); /* buffers given back, none consumed */
	/* Still waiting: running again without new buffers reads nothing more. */
	CHECK(vnet_handle_rx(&r.qp) == VNET_WAIT_GUEST);
	CHECK(r.qp.hold.count == 1);
	rig_post_rx(&r, 16, 2048, false);
	pump_rx(&r, 6);
	CHECK(r.qp.stats.rx_packets == 6 && r.qp.hold.count == 0);
	CHECK(rig_take_rx(&r, got, sizeof(got)) == 12 + 9014 && memcmp(got + 12, sent, 9014) == 0);
	for (uint32_t i = 1; i <= 5; i++) {
		uint32_t seq = ~0u;

		CHECK(rig_take_rx(&r, got, sizeof(got)) == 12 + 200);
		memcpy(&seq, got + 12 + 14, 4);
		CHECK(seq == i);
	}
	close(s);
	rig_destroy(&r);
}

/* Backpressure stays in the kernel: frames beyond the TAP's queue are the kernel's drops, none
 * are lost by us. */
static void test_backpressure_kernel_queue(void)
{
	struct rig r;
	long long drop0;
	unsigned got_n = 0;
	int s;

	REQUIRE(rig_init(&r, "vt0", BASE | F(VIRTIO_NET_F_MRG_RXBUF), NULL, 256) == 0);
	th_sh("ip link set vt0 txqueuelen 50");
	s = pkt_socket("vt0", false);
	REQUIRE(s >= 0);
	drop0 = if_stat("vt0", "tx_dropped");
	CHECK(vnet_handle_rx(&r.qp) == VNET_WAIT_GUEST);
	for (uint32_t i = 0; i < 200; i++) {
		make_frame(sent, 80, i);
		send_plain(s, sent, 80);
	}
	rig_post_rx(&r, 250, 2048, false);
	for (int k = 0; k < 20; k++) {
		vnet_handle_rx(&r.qp);
		usleep(1000);
	}
	while (rig_take_rx(&r, got, sizeof(got)) > 0)
		got_n++;
	CHECK(got_n > 0 && got_n < 200);
	fprintf(stderr, "  backpressure: delivered %u, kernel dropped %lld\n", got_n,
		if_stat("vt0", "tx_dropped") - drop0);
	CHECK(got_n + (if_stat("vt0", "tx_dropped") - drop0) == 200);
	close(s);
	rig_destroy(&r);
}

/* Short-frame padding and frames larger than the buffers offered. */
static void test_pad_and_too_big(void)
{
	struct vnet_config cfg;
	struct rig r;
	int s;

	vnet_config_default(&cfg);
	cfg.pad_short = true;
	REQUIRE(rig_init(&r, "vt0", BASE, &cfg, 64) == 0);
	th_sh("ip link set vt0 mtu 9000");
	s = pkt_socket("vt0", false);
	REQUIRE(s >= 0);
	rig_post_rx(&r, 2, 1526, false); /* the non-mergeable small-buffer layout */
	make_frame(sent, 42, 1);
	send_plain(s, sent, 42);
	pump_rx(&r, 1);
	CHECK(rig_take_rx(&r, got, sizeof(got)) == 12 + 60);
	CHECK(memcmp(got + 12, sent, 42) == 0);
	uint8_t zeros[18] = {0};
	CHECK(memcmp(got + 12 + 42, zeros, 18) == 0);
	{
		uint16_t nb;

		memcpy(&nb, got + 10, 2);
		CHECK(le16toh(nb) == 1); /* num_buffers is 1 without MRG_RXBUF */
	}
	/* A 9014-byte frame cannot fit a 1526-byte buffer: dropped and counted, never cut. */
	make_frame(sent, 9014, 2);
	send_plain(s, sent, 9014);
	make_frame(sent, 300, 3);
	send_plain(s, sent, 300);
	pump_rx(&r, 2);
	CHECK(r.qp.stats.rx_drop_too_big == 1);
	CHECK(r.qp.stats.rx_packets == 2);
	/* The small frame after it used the buffer the big one could not. */
	CHECK(rig_take_rx(&r, got, sizeof(got)) == 12 + 300 && memcmp(got + 12, sent, 300) == 0);
	CHECK(!vq_is_broken(&r.qp.rx));
	close(s);
	rig_destroy(&r);
}

/* TX header checks: bad headers are dropped and counted; the queue keeps running. */
static void test_tx_bad_headers(void)
{
	struct rig r;
	uint32_t id, len;
	int s;

	REQUIRE(rig_init(&r, "vt0", BASE | F(VIRTIO_NET_F_CSUM), NULL, 64) == 0);
	s = pkt_socket("vt0", false);
	REQUIRE(s >= 0);
	struct vnet_hdr bad[] = {
	    /* checksum field past the end of a 100-byte frame */
	    {.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
	     .csum_start = htole16(90),
	     .csum_offset = htole16(16)},
	    /* TSO without HOST_TSO4 negotiated */
	    {.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
	     .gso_type = VIRTIO_NET_HDR_GSO_TCPV4,
	     .gso_size = htole16(1000),
	     .csum_start = htole16(34),
	     .csum_offset = htole16(16)},
	    /* unknown GSO type */
	    {.gso_type = 9},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(sent, &bad[i], 12);
		make_frame(sent + 12, 100, 0);
		REQUIRE(rig_post_tx(&r, sent, 112, 4096, false) >= 0);
	}
	memset(sent, 0, 12);
	make_frame(sent + 12, 100, 42);
	REQUIRE(rig_post_tx(&r, sent, 112, 4096, false) >= 0);
	CHECK(vnet_handle_tx(&r.qp) == VNET_IDLE);
	CHECK(r.qp.stats.tx_drop_bad_hdr == 3 && r.qp.stats.tx_packets == 1);
	CHECK(pkt_recv_marked(s, got, sizeof(got), 1000, 0) == 100 &&
	      memcmp(got, sent + 12, 100) == 0);
	unsigned n = 0;
	while (fg_used(&r.ftx, &id, &len))
		n++;
	CHECK(n == 4);
	CHECK(!vq_is_broken(&r.qp.tx));
	close(s);
	rig_destroy(&r);
}

/* A TX chain shorter than the header, or with writable parts, breaks the TX queue only. */
static void test_tx_malformed_breaks(void)
{
	struct rig r;
	uint64_t gpa;

	th_log_capture();
	REQUIRE(rig_init(&r, "vt0", BASE, NULL, 64) == 0);
	gpa = fg_alloc(&r.g, 64, 64);
	REQUIRE(fg_add(&r.ftx, &(struct fg_buf){gpa, 8, false}, 1, false) >= 0);
	fg_publish(&r.ftx, false);
	CHECK(vnet_handle_tx(&r.qp) < 0);
	CHECK(vq_is_broken(&r.qp.tx) && !vq_is_broken(&r.qp.rx));
	CHECK(th_log_errors == 1 && strstr(th_log_last, "shorter than"));
	rig_destroy(&r);

	th_log_capture();
	REQUIRE(rig_init(&r, "vt0", BASE, NULL, 64) == 0);
	gpa = fg_alloc(&r.g, 256, 64);
	struct fg_buf b[2] = {{gpa, 100, false}, {gpa + 128, 64, true}};
	REQUIRE(fg_add(&r.ftx, b, 2, false) >= 0);
	fg_publish(&r.ftx, false);
	CHECK(vnet_handle_tx(&r.qp) < 0);
	CHECK(vq_is_broken(&r.qp.tx) && !vq_is_broken(&r.qp.rx));
	CHECK(th_log_errors == 1 && strstr(th_log_last, "device-writable"));
	rig_destroy(&r);

	/* An RX buffer with a device-readable part breaks RX only. */
	th_log_capture();
	REQUIRE(rig_init(&r, "vt0", BASE | F(VIRTIO_NET_F_MRG_RXBUF), NULL, 64) == 0);
	gpa = fg_alloc(&r.g, 4096, 64);
	struct fg_buf rb[2] = {{gpa, 100, false}, {gpa + 128, 2048, true}};
	REQUIRE(fg_add(&r.frx, rb, 2, false) >= 0);
	fg_publish(&r.frx, false);
	int s = pkt_socket("vt0", false);
	make_frame(sent, 100, 0);
	send_plain(s, sent, 100);
	usleep(10000);
	CHECK(vnet_handle_rx(&r.qp) < 0);
	CHECK(vq_is_broken(&r.qp.rx) && !vq_is_broken(&r.qp.tx));
	CHECK(th_log_errors == 1 && strstr(th_log_last, "device-readable"));
	close(s);
	rig_destroy(&r);
	vt_log_set_sink(NULL, NULL);
}

/* Clear errors for a person's mistakes. */
static void test_tap_errors(void)
{
	struct tap t;
	pid_t pid;
	int st;

	th_log_capture();
	CHECK(tap_open(&t, "vt-missing", TAP_F_NO_CREATE) == -ENODEV);
	CHECK(strstr(th_log_last, "no such interface") != NULL);
	CHECK(tap_open(&t, "this-name-is-too-long-for-linux", 0) == -EINVAL);
	REQUIRE(th_sh("ip tuntap add dev vtun0 mode tun") == 0);
	CHECK(tap_open(&t, "vtun0", 0) == -EINVAL);
	CHECK(strstr(th_log_last, "not a TAP") != NULL);
	/* Without CAP_NET_ADMIN: a clear permission error. */
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		struct tap c;

		if (setgid(65534) || setuid(65534))
			_exit(3);
		int err = tap_open(&c, "vt-noperm", 0);

		_exit((err == -EPERM || err == -EACCES) && strstr(th_log_last, "permission denied")
			  ? 0
			  : 1);
	}
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* Attaching to an existing TAP works and keeps the vnet header. */
	REQUIRE(th_sh("ip tuntap add dev vtap9 mode tap vnet_hdr") == 0);
	CHECK(tap_open(&t, "vtap9", TAP_F_NO_CREATE) == 0 && t.fd >= 0);
	CHECK(tap_features(&t) & F(VIRTIO_NET_F_GUEST_TSO4));
	tap_close(&t);
	vt_log_set_sink(NULL, NULL);
}

int main(void)
{
	th_private_netns();
	test_both_directions();
	test_hold_no_buffers();
	test_hold_partial();
	test_backpressure_kernel_queue();
	test_pad_and_too_big();
	test_tx_bad_headers();
	test_tx_malformed_breaks();
	test_tap_errors();
	return th_done("tap_datapath");
}
