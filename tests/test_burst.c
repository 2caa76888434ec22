// SPDX-License-Identifier: MIT
/*
 * TX in bursts (backends with tx_burst, such as the TAP over io_uring): a scripted backend takes
 * some frames of a burst and says "full" for the rest, fails a burst as a whole, or refuses single
 * frames. Every chain must be completed exactly once, in ring order on the backend side, and the
 * ones the backend did not take must come back on the next run; a chain with a bad header counts
 * as one drop however often the burst around it is retried. Also the TAP itself: frames written
 * in bursts reach the kernel, and a TAP whose io_uring cannot be made falls back per frame.
 * And VIRTIO_F_IN_ORDER, which virtap offers: the used ring must list the chains in exactly the
 * order the driver made them available, through partial bursts, mergeable RX frames that leave
 * buffers unused, and a frame held while the guest had too few buffers.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakeguest.h"
#include "netns.h"
#include "virtap/tap.h"
#include "virtap/vnet.h"

#define QSIZE	 64
#define NCHAIN	 48
#define BUF_SIZE 256

/* The scripted backend: takes up to `room` frames (each frame's first payload byte is recorded
 * in order), answers -EAGAIN after that; `burst_fail` makes tx_burst fail as a whole. */
struct script {
	int room;
	bool burst_fail;
	unsigned bursts, singles;
	unsigned got;
	uint8_t seq[256];
	const unsigned *rx_len;
	unsigned rx_n, rx_at;
};

static ssize_t sc_take(struct script *s, const struct iovec *iov, int n)
{
	size_t len = 0;

	if (s->room <= 0)
		return -EAGAIN;
	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	/* iov[0] is the header copy; the frame's first byte follows it */
	if (n > 1 && s->got < sizeof(s->seq))
		s->seq[s->got] = ((const uint8_t *)iov[1].iov_base)[0];
	s->got++;
	s->room--;
	return (ssize_t)len;
}

/* RX: frames of the lengths in rx_len (header included), then -EAGAIN. Each frame is a zero
 * header and then bytes counting from its index. */
static ssize_t sc_rx(void *be, const struct iovec *iov, int n)
{
	struct script *s = be;
	size_t len, done = 0;

	if (s->rx_at >= s->rx_n)
		return -EAGAIN;
	len = s->rx_len[s->rx_at];
	for (int i = 0; i < n && done < len; i++) {
		uint8_t *p = iov[i].iov_base;

		for (size_t k = 0; k < iov[i].iov_len && done < len; k++, done++)
			p[k] = done < VNET_HDR_LEN_V1 ? 0 : (uint8_t)(s->rx_at + done);
	}
	s->rx_at++;
	return (ssize_t)done;
}

static ssize_t sc_tx(void *be, const struct iovec *iov, int n)
{
	struct script *s = be;

	s->singles++;
	return sc_take(s, iov, n);
}

static int sc_tx_burst(void *be, struct be_msg *m, int n)
{
	struct script *s = be;

	if (s->burst_fail)
		return -ENOSYS;
	s->bursts++;
	for (int i = 0; i < n; i++)
		m[i].res = sc_take(s, m[i].iov, m[i].niov);
	return n;
}

static int sc_fd(void *be)
{
	(void)be;
	return -1;
}

static int sc_hdr(void *be, int len)
{
	(void)be, (void)len;
	return 0;
}

static int sc_off(void *be, uint64_t f)
{
	(void)be, (void)f;
	return 0;
}

static uint64_t sc_feat(void *be)
{
	(void)be;
	return 0;
}

static const struct be_ops script_ops = {
    .name = "script",
    .rx = sc_rx,
    .tx = sc_tx,
    .fd = sc_fd,
    .set_hdr_len = sc_hdr,
    .set_offloads = sc_off,
    .features = sc_feat,
    .tx_burst = sc_tx_burst,
};

struct rig {
	struct fg g;
	struct fg_vq rx, tx;
	struct vnet_qp qp;
	uint64_t pool;
};

static const uint64_t features = VNET_BIT(VQ_F_VERSION_1) | VNET_BIT(VIRTIO_NET_F_MRG_RXBUF);

static void rig_up_f(struct rig *r, const struct be_ops *ops, void *be, uint64_t f)
{
	memset(r, 0, sizeof(*r));
	REQUIRE(fg_init(&r->g, 8u << 20) == 0);
	REQUIRE(fg_vq_init(&r->g, &r->rx, QSIZE) == 0 && fg_vq_init(&r->g, &r->tx, QSIZE) == 0);
	r->pool = fg_alloc(&r->g, (uint64_t)NCHAIN * BUF_SIZE, 64);
	REQUIRE(vnet_qp_init(&r->qp, 0, NULL, ops, be) == 0);
	REQUIRE(fg_vq_attach(&r->rx, &r->qp.rx, "rx0", f) == 0);
	REQUIRE(fg_vq_attach(&r->tx, &r->qp.tx, "tx0", f) == 0);
	REQUIRE(vnet_qp_set_features(&r->qp, f) == 0);
}

static void rig_up(struct rig *r, const struct be_ops *ops, void *be)
{
	rig_up_f(r, ops, be, features);
}

static void rig_down(struct rig *r)
{
	vnet_qp_destroy(&r->qp);
	fg_vq_destroy(&r->rx);
	fg_vq_destroy(&r->tx);
	fg_destroy(&r->g);
}

/* Chain i: a 12-byte header then a 60-byte frame whose first byte is i; bad[i] gives it a header
 * the device refuses (an unknown gso_type). heads (if not NULL) gets each chain's head. */
static void post_heads(struct rig *r, unsigned n, const bool *bad, uint16_t *heads)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t gpa = r->pool + (uint64_t)i * BUF_SIZE;
		uint8_t *p = fg_va(&r->g, gpa);
		struct fg_buf b = {.gpa = gpa, .len = VNET_HDR_LEN_V1 + 60, .write = false};

		memset(p, 0, b.len);
		if (bad && bad[i])
			p[1] = 0x7f; /* gso_type */
		int h;

		p[VNET_HDR_LEN_V1] = (uint8_t)i;
		h = fg_add(&r->tx, &b, 1, false);
		REQUIRE(h >= 0);
		if (heads)
			heads[i] = (uint16_t)h;
	}
	fg_publish(&r->tx, false);
}

static void post(struct rig *r, unsigned n, const bool *bad)
{
	post_heads(r, n, bad, NULL);
}

static unsigned reap(struct rig *r, bool *seen, unsigned *dups)
{
	uint32_t id, len;
	unsigned n = 0;

	while (fg_used(&r->tx, &id, &len)) {
		if (id < QSIZE) {
			if (seen[id])
				(*dups)++;
			seen[id] = true;
		}
		n++;
	}
	return n;
}

/* Run the TX handler until it stops for a reason other than its budget (a ring of QSIZE takes
 * at most QSIZE / 2 chains a run); returns that status. */
static int tx_until_done(struct rig *r)
{
	int st, runs = 0;

	while ((st = vnet_handle_tx(&r->qp)) == VNET_MORE && ++runs < 16)
		;
	return st;
}

static void test_partial(void)
{
	struct script s = {.room = 20};
	bool seen[QSIZE] = {false}, bad[NCHAIN] = {false};
	unsigned dups = 0, done;
	struct rig r;
	int st;

	bad[25] = bad[30] = true; /* in the part the backend refuses at first */
	rig_up(&r, &script_ops, &s);
	CHECK(r.qp.burst != NULL);
	post(&r, NCHAIN, bad);
	st = vnet_handle_tx(&r.qp);
	CHECK(st == VNET_WAIT_BACKEND);
	done = reap(&r, seen, &dups);
	CHECK(done == 20);
	CHECK(s.got == 20 && s.bursts >= 1);
	CHECK(r.qp.stats.tx_packets == 20 && r.qp.stats.tx_blocked == 1);
	CHECK(r.qp.stats.tx_drop_bad_hdr == 0); /* 25 and 30 went back with the tail */

	s.room = 1000;
	st = vnet_handle_tx(&r.qp);
	CHECK(st == VNET_IDLE);
	done += reap(&r, seen, &dups);
	CHECK(done == NCHAIN && dups == 0);
	CHECK(s.got == NCHAIN - 2);
	CHECK(r.qp.stats.tx_packets == NCHAIN - 2 && r.qp.stats.tx_drop_bad_hdr == 2);
	/* ring order on the backend side, the two bad ones missing */
	for (unsigned i = 0, k = 0; i < NCHAIN; i++) {
		if (bad[i])
			continue;
		CHECK(s.seq[k] == i);
		k++;
	}
	CHECK(!vq_is_broken(&r.qp.tx));
	rig_down(&r);
}

static void test_fallback(void)
{
	struct script s = {.room = 10, .burst_fail = true};
	bool seen[QSIZE] = {false};
	unsigned dups = 0, done;
	struct rig r;

	rig_up(&r, &script_ops, &s);
	post(&r, NCHAIN, NULL);
	CHECK(vnet_handle_tx(&r.qp) == VNET_WAIT_BACKEND);
	done = reap(&r, seen, &dups);
	CHECK(done == 10 && s.bursts == 0 && s.singles == 11); /* the 11th said "full" */
	s.room = 1000;
	CHECK(tx_until_done(&r) == VNET_IDLE);
	done += reap(&r, seen, &dups);
	CHECK(done == NCHAIN && dups == 0 && s.got == NCHAIN);
	for (unsigned i = 0; i < NCHAIN; i++)
		CHECK(s.seq[i] == i);
	rig_down(&r);
}

/* Budget: a run stops after tx_budget_pkts chains even in the middle of a burst. */
static void test_budget(void)
{
	struct script s = {.room = 1000};
	bool seen[QSIZE] = {false};
	unsigned dups = 0;
	struct rig r;

	rig_up(&r, &script_ops, &s);
	r.qp.cfg.tx_budget_pkts = 20; /* under a burst, and under half the ring */
	post(&r, NCHAIN, NULL);
	CHECK(vnet_handle_tx(&r.qp) == VNET_MORE);
	CHECK(reap(&r, seen, &dups) == 20 && s.got == 20);
	CHECK(vnet_handle_tx(&r.qp) == VNET_MORE);
	CHECK(reap(&r, seen, &dups) == 20 && s.got == 40);
	CHECK(vnet_handle_tx(&r.qp) == VNET_IDLE);
	CHECK(reap(&r, seen, &dups) == NCHAIN - 40 && dups == 0 && s.got == NCHAIN);
	rig_down(&r);
	/* The byte budget holds inside a burst too: chains of 72 bytes, a budget of 5 of them. */
	memset(&s, 0, sizeof(s));
	s.room = 1000;
	memset(seen, 0, sizeof(seen));
	rig_up(&r, &script_ops, &s);
	r.qp.cfg.tx_budget_bytes = 5 * (VNET_HDR_LEN_V1 + 60);
	post(&r, NCHAIN, NULL);
	CHECK(vnet_handle_tx(&r.qp) == VNET_MORE);
	CHECK(reap(&r, seen, &dups) == 5 && s.got == 5);
	rig_down(&r);
}

static const uint64_t in_order_features = features | VNET_BIT(VQ_F_IN_ORDER);

/* Take every used entry of q into ids/lens (at most max); returns how many. */
static unsigned reap_ids(struct fg_vq *q, uint16_t *ids, uint32_t *lens, unsigned max)
{
	uint32_t id, len;
	unsigned n = 0;

	while (n < max && fg_used(q, &id, &len)) {
		ids[n] = (uint16_t)id;
		lens[n++] = len;
	}
	return n;
}

/* TX: a backend that takes 20 of 48 frames, then the rest; two bad headers in the tail. */
static void test_in_order_tx(void)
{
	struct script s = {.room = 20};
	bool bad[NCHAIN] = {false};
	uint16_t heads[NCHAIN], ids[NCHAIN];
	uint32_t lens[NCHAIN];
	unsigned n;
	struct rig r;

	CHECK(vnet_offered_features(0) & VNET_BIT(VQ_F_IN_ORDER));
	bad[21] = bad[40] = true;
	rig_up_f(&r, &script_ops, &s, in_order_features);
	post_heads(&r, NCHAIN, bad, heads);
	CHECK(vnet_handle_tx(&r.qp) == VNET_WAIT_BACKEND);
	n = reap_ids(&r.tx, ids, lens, NCHAIN);
	CHECK(n == 20);
	s.room = 1000;
	CHECK(vnet_handle_tx(&r.qp) == VNET_IDLE);
	n += reap_ids(&r.tx, ids + n, lens + n, NCHAIN - n);
	CHECK(n == NCHAIN);
	for (unsigned i = 0; i < n; i++)
		CHECK(ids[i] == heads[i]);
	CHECK(r.qp.stats.tx_drop_bad_hdr == 2 && !vq_is_broken(&r.qp.tx));
	rig_down(&r);
}

#define RXB_LEN 256

/* Post n device-writable buffers of RXB_LEN bytes; heads and gpas in avail order. */
static void post_rx(struct rig *r, unsigned n, uint16_t *heads, uint64_t *gpas)
{
	for (unsigned i = 0; i < n; i++) {
		struct fg_buf b = {
		    .gpa = fg_alloc(&r->g, RXB_LEN, 64), .len = RXB_LEN, .write = true};
		int h = fg_add(&r->rx, &b, 1, false);

		REQUIRE(h >= 0);
		heads[i] = (uint16_t)h;
		gpas[i] = b.gpa;
	}
	fg_publish(&r->rx, false);
}

/* Half the ring: with the default budget (128) on a ring of 64, a run stops after 32 frames in
 * either direction, so the driver sees used entries before its ring is drained. */
static void test_budget_half_ring(void)
{
	static const unsigned flen[NCHAIN] = {[0 ... NCHAIN - 1] = VNET_HDR_LEN_V1 + 60};
	struct script s = {.room = 1000, .rx_len = flen, .rx_n = NCHAIN};
	bool seen[QSIZE] = {false};
	uint16_t heads[NCHAIN], ids[NCHAIN];
	uint64_t gpas[NCHAIN];
	uint32_t lens[NCHAIN];
	unsigned dups = 0;
	struct rig r;

	rig_up_f(&r, &script_ops, &s, VNET_BIT(VQ_F_VERSION_1)); /* one buffer per RX frame */
	CHECK(r.qp.cfg.tx_budget_pkts == 128 && r.qp.cfg.rx_budget_pkts == 128);
	post(&r, NCHAIN, NULL);
	CHECK(vnet_handle_tx(&r.qp) == VNET_MORE);
	CHECK(reap(&r, seen, &dups) == QSIZE / 2 && s.got == QSIZE / 2);
	CHECK(vnet_handle_tx(&r.qp) == VNET_IDLE);
	CHECK(reap(&r, seen, &dups) == NCHAIN - QSIZE / 2 && dups == 0);

	post_rx(&r, NCHAIN, heads, gpas);
	CHECK(vnet_handle_rx(&r.qp) == VNET_MORE);
	CHECK(reap_ids(&r.rx, ids, lens, NCHAIN) == QSIZE / 2 && s.rx_at == QSIZE / 2);
	/* every buffer is used now, so the run ends waiting for the guest */
	CHECK(vnet_handle_rx(&r.qp) == VNET_WAIT_GUEST);
	CHECK(reap_ids(&r.rx, ids, lens, NCHAIN) == NCHAIN - QSIZE / 2 && s.rx_at == NCHAIN);
	CHECK(!vq_is_broken(&r.qp.rx) && !vq_is_broken(&r.qp.tx));
	rig_down(&r);
}

/*
 * RX with mergeable buffers of 256 bytes: the device takes 1536 bytes of buffers per frame
 * (rx_cover) and gives back what a frame did not fill; frame 5 needs 8 buffers when only 5 are
 * left, so it is held until the guest posts more. Buffers 0, 1-3, 4-9, 10, 11-18 in that order.
 */
static void test_in_order_rx(void)
{
	static const unsigned flen[] = {112, 612, 1412, 112, 2012};
	static const unsigned nbuf[] = {1, 3, 6, 1, 8};
	struct script s = {.room = 0, .rx_len = flen, .rx_n = 5};
	uint16_t heads[24], ids[24];
	uint64_t gpas[24];
	uint32_t lens[24];
	unsigned n, at = 0;
	struct rig r;

	rig_up_f(&r, &script_ops, &s, in_order_features);
	post_rx(&r, 16, heads, gpas);
	CHECK(vnet_handle_rx(&r.qp) == VNET_WAIT_GUEST);
	CHECK(r.qp.hold.count == 1 && r.qp.stats.rx_packets == 4);
	post_rx(&r, 8, heads + 16, gpas + 16);
	CHECK(vnet_handle_rx(&r.qp) == VNET_IDLE);
	CHECK(r.qp.stats.rx_packets == 5 && r.qp.hold.count == 0);
	n = reap_ids(&r.rx, ids, lens, 24);
	CHECK(n == 19);
	for (unsigned i = 0; i < n; i++)
		CHECK(ids[i] == heads[i]);
	/* each frame's buffers: full ones, then the rest, and num_buffers in its first one */
	for (unsigned f = 0; f < 5; f++) {
		const struct vnet_hdr *h = fg_va(&r.g, gpas[at]);
		const uint8_t *tail = fg_va(&r.g, gpas[at + nbuf[f] - 1]);
		unsigned left = flen[f];

		CHECK(le16toh(h->num_buffers) == nbuf[f]);
		/* the frame's last byte, in its last buffer: the pattern survived the hold */
		CHECK(tail[(flen[f] - 1) % RXB_LEN] == (uint8_t)(f + flen[f] - 1));
		for (unsigned k = 0; k < nbuf[f]; k++, at++) {
			unsigned part = left < RXB_LEN ? left : RXB_LEN;

			CHECK(at < n && lens[at] == part);
			left -= part;
		}
		CHECK(left == 0);
	}
	CHECK(at == 19 && !vq_is_broken(&r.qp.rx));
	rig_down(&r);
}

#define SEG_LEN	 8
#define SEGS	 40
#define POOL_BUF (SEG_LEN * SEGS)

/*
 * RX pops buffers ahead in bursts and keeps what a frame did not use for the next frame. With
 * chains of 40 small segments (indirect) the popped buffers' iovecs outgrow the scratch arrays
 * within a run, so the pool must move its unused buffers to the front and go on: every frame
 * arrives whole, two buffers each, and the used ring lists the buffers in avail order.
 */
static void test_rx_pool(void)
{
	enum { NFR1 = 4, NFR = 30, NPOST = 64 };
	unsigned flen[NFR];
	struct script s = {.room = 0, .rx_len = flen, .rx_n = NFR1};
	uint16_t heads[NPOST], ids[NPOST];
	uint64_t gpas[NPOST];
	uint32_t lens[NPOST];
	unsigned n, bad = 0;
	struct rig r;

	for (unsigned f = 0; f < NFR; f++)
		flen[f] = POOL_BUF + 100 + f; /* two buffers each */
	rig_up_f(&r, &script_ops, &s, in_order_features | VNET_BIT(VQ_F_INDIRECT_DESC));
	for (unsigned i = 0; i < NPOST; i++) {
		struct fg_buf seg[SEGS];
		int h;

		gpas[i] = fg_alloc(&r.g, POOL_BUF, 64);
		for (unsigned k = 0; k < SEGS; k++)
			seg[k] = (struct fg_buf){
			    .gpa = gpas[i] + k * SEG_LEN, .len = SEG_LEN, .write = true};
		h = fg_add(&r.rx, seg, SEGS, true);
		REQUIRE(h >= 0);
		heads[i] = (uint16_t)h;
	}
	fg_publish(&r.rx, false);
	/* a first run of 4 frames, popping one at a time; then 26 with buffers popped ahead */
	CHECK(vnet_handle_rx(&r.qp) == VNET_IDLE);
	CHECK(r.qp.stats.rx_packets == NFR1 && r.qp.rx_ahead == NFR1);
	s.rx_n = NFR;
	CHECK(vnet_handle_rx(&r.qp) == VNET_IDLE);
	CHECK(r.qp.stats.rx_packets == NFR && r.qp.stats.rx_drop_too_big == 0);
	n = reap_ids(&r.rx, ids, lens, NPOST);
	CHECK(n == 2 * NFR);
	for (unsigned i = 0; i < n; i++) {
		CHECK(ids[i] == heads[i]);
		CHECK(lens[i] == (i % 2 ? flen[i / 2] - POOL_BUF : POOL_BUF));
	}
	for (unsigned f = 0; f < NFR && 2 * f + 1 < n; f++) {
		const struct vnet_hdr *h = fg_va(&r.g, gpas[2 * f]);

		CHECK(le16toh(h->num_buffers) == 2);
		for (unsigned b = 0; b < flen[f]; b++) {
			const uint8_t *p = fg_va(&r.g, gpas[2 * f + b / POOL_BUF]);
			uint8_t want = b < VNET_HDR_LEN_V1 ? 0 : (uint8_t)(f + b);

			if (b >= VNET_HDR_LEN_V1 && p[b % POOL_BUF] != want)
				bad++;
		}
	}
	CHECK(bad == 0);
	/* the 4 buffers no frame used went back to the ring and are the next ones popped */
	CHECK(r.qp.rx.last_avail == 2 * NFR && !vq_is_broken(&r.qp.rx));
	rig_down(&r);
}

/*
 * The burst's iovec scratch filled to the last slot by guest-sized chains: an indirect table of
 * 1024 one-byte segments (1025 slots with the header's) and one of 62 (63) take all 1088, and
 * the next chain must wait for the next burst. The room handed to vq_pop used to wrap to
 * UINT_MAX there, and that chain's iovecs went past the end of the heap block (ASan: a
 * heap-buffer-overflow in map_data). Every frame must reach the backend whole and in order.
 */
static void post_segmented(struct rig *r, unsigned nseg, uint8_t tag)
{
	struct fg_buf *seg = calloc(nseg, sizeof(*seg));
	uint64_t gpa = fg_alloc(&r->g, nseg, 64);
	uint8_t *p = fg_va(&r->g, gpa);

	REQUIRE(seg && nseg > VNET_HDR_LEN_V1);
	memset(p, 0, nseg);
	p[VNET_HDR_LEN_V1] = tag; /* the frame's first byte: what the script records */
	for (unsigned k = 0; k < nseg; k++)
		seg[k] = (struct fg_buf){.gpa = gpa + k, .len = 1, .write = false};
	REQUIRE(fg_add(&r->tx, seg, nseg, true) >= 0);
	free(seg);
}

static void test_iov_fill(void)
{
	static const unsigned nseg[] = {1024, 62, 20, 1024, 62, 1024};
	enum { N = sizeof(nseg) / sizeof(nseg[0]) };
	struct script s = {.room = 1000};
	bool seen[QSIZE] = {false};
	unsigned dups = 0;
	struct rig r;

	rig_up_f(&r, &script_ops, &s, features | VNET_BIT(VQ_F_INDIRECT_DESC));
	for (unsigned i = 0; i < N; i++)
		post_segmented(&r, nseg[i], (uint8_t)i);
	fg_publish(&r.tx, false);
	CHECK(tx_until_done(&r) == VNET_IDLE);
	CHECK(reap(&r, seen, &dups) == N && dups == 0);
	CHECK(s.got == N && r.qp.stats.tx_packets == N);
	for (unsigned i = 0; i < N; i++)
		CHECK(s.seq[i] == i);
	CHECK(!vq_is_broken(&r.qp.tx));
	rig_down(&r);
}

/*
 * A queue that breaks in the middle of a burst, after an earlier burst filled the frame table:
 * the chains of the broken burst were never sent, so none may be counted as sent or completed.
 * The per-chain frame index (msg_of) used to be read for every popped chain although only the
 * ones prepared before the break had one: stale indices from the previous burst made the device
 * count (and complete) frames that never reached the backend.
 */
static void test_break_midburst(bool at_pop)
{
	struct script s = {.room = 1000};
	bool seen[QSIZE] = {false};
	unsigned dups = 0;
	struct rig r;

	rig_up(&r, &script_ops, &s);
	post(&r, 4, NULL);
	CHECK(tx_until_done(&r) == VNET_IDLE);
	CHECK(s.got == 4 && r.qp.stats.tx_packets == 4);
	reap(&r, seen, &dups);
	/* a good chain, then one that breaks the queue: a segment outside guest memory (vq_pop
	 * fails) or a device-writable one (VIRTIO 1.2 5.1.6.2: the header check fails) */
	post(&r, 1, NULL);
	{
		uint64_t gpa = fg_alloc(&r.g, 64, 64);
		struct fg_buf b = {.gpa = at_pop ? (1ull << 40) : gpa, .len = 64, .write = !at_pop};

		REQUIRE(fg_add(&r.tx, &b, 1, false) >= 0);
		fg_publish(&r.tx, false);
	}
	CHECK(vnet_handle_tx(&r.qp) == -EIO);
	CHECK(vq_is_broken(&r.qp.tx));
	CHECK(r.qp.stats.tx_packets == s.got);
	CHECK(fg_used_pending(&r.tx) == 0);
	rig_down(&r);
}

/* A real TAP: bursts through io_uring reach the kernel, counted on the TAP's rx side. */
static unsigned long long tap_rx_packets(const char *ifname)
{
	char path[128];
	unsigned long long v = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/rx_packets", ifname);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

static void test_tap(bool no_uring)
{
	bool seen[QSIZE] = {false};
	unsigned long long before;
	unsigned dups = 0;
	struct tap t;
	struct rig r;

	REQUIRE(tap_open(&t, "vtburst0", 0) == 0);
	REQUIRE(tap_set_link("vtburst0", true) == 0);
	t.uring_failed = no_uring; /* as if io_uring could not be made */
	rig_up(&r, &tap_be_ops, &t);
	before = tap_rx_packets("vtburst0");
	post(&r, NCHAIN, NULL);
	CHECK(tx_until_done(&r) == VNET_IDLE);
	CHECK(reap(&r, seen, &dups) == NCHAIN && dups == 0);
	CHECK(r.qp.stats.tx_packets == NCHAIN && r.qp.stats.tx_drop_backend == 0);
	CHECK(tap_rx_packets("vtburst0") - before == NCHAIN);
	CHECK((t.uring != NULL) == !no_uring || !tap_be_ops.tx_burst);
	rig_down(&r);
	tap_close(&t);
	/* closed means gone: the same queue can be opened again at once */
	REQUIRE(tap_open(&t, "vtburst0", 0) == 0);
	tap_close(&t);
	th_sh("ip link del vtburst0 2>/dev/null");
}

int main(void)
{
	test_partial();
	test_fallback();
	test_budget();
	test_budget_half_ring();
	test_in_order_tx();
	test_in_order_rx();
	test_rx_pool();
	test_iov_fill();
	test_break_midburst(true);
	test_break_midburst(false);
	th_private_netns();
	test_tap(false);
	test_tap(true);
	return th_done("burst");
}
