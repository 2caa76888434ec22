// SPDX-License-Identifier: MIT
/*
 * Adversarial guest suite (issue 5): the test driver plays a malicious guest against the whole
 * datapath, vnet queue pairs served by worker threads with in-memory backends, one test per attack
 * class. Every test asserts that nothing crashes; that nothing hangs (each operation is bounded in
 * wall-clock time, and a watchdog bounds each test); that nothing outside guest memory is touched
 * (a spy backend checks every iovec the device hands it against the memory map, the ASan build
 * checks our own heap and globals, and two guest regions are globals with redzones); that where
 * the class is a spec violation the offending queue is broken with exactly one error line naming
 * the rule; and that a neighbour port (on the same worker or its own) keeps moving frames through
 * an echo backend, byte-exact.
 *
 * What virtap does with a head the guest makes available twice while it is in flight (class 13):
 * like Linux vhost-net it keeps no record of heads in flight, so the chain is processed, and used,
 * once per time it was made available. Only the guest's own buffers suffer (an RX buffer filled
 * twice); nothing outside its memory map and no other queue is affected.
 */
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "fakeguest.h"
#include "netns.h"
#include "virtap/log.h"
#include "virtap/membe.h"
#include "virtap/vnet.h"
#include "virtap/wrk.h"

#define DF_NEXT	    1
#define DF_WRITE    2
#define DF_INDIRECT 4

#define F(b)	   (1ull << (b))
#define V1	   F(VQ_F_VERSION_1)
#define MRG	   F(VIRTIO_NET_F_MRG_RXBUF)
#define IND	   F(VQ_F_INDIRECT_DESC)
#define EVT	   F(VQ_F_EVENT_IDX)
#define CSUM	   F(VIRTIO_NET_F_CSUM)
#define TSO4	   F(VIRTIO_NET_F_HOST_TSO4)
#define HDR	   VNET_HDR_LEN_V1
#define NEEDS_CSUM VIRTIO_NET_HDR_F_NEEDS_CSUM

#define RAM_SIZE  (32ull << 20)
#define RAM_END	  (FG_GPA_BASE + RAM_SIZE)
#define DATA_SIZE (4ull << 20)
#define BOUND_MS  5000 /* an operation that takes longer than this is a hang */
#define MAXQ	  256

/* Extra regions of the memory map, for the region and address tests. */
#define B_GPA	RAM_END /* right after the RAM: a buffer may span both */
#define B_SIZE	(1ull << 20)
#define C_GPA	(RAM_END + (4ull << 20)) /* after a hole */
#define C_SIZE	(1ull << 20)
#define TOP_GPA (UINT64_MAX - 4095) /* the last page of the address space */

/* Host-mapped guest pages (globals, so ASan puts redzones around them). */
static uint8_t zero_page[4096] __attribute__((aligned(4096)));
static uint8_t top_page[4096] __attribute__((aligned(4096)));

static const char *cur_test = "";

/* ---- a spy backend: a membe that checks what the device hands it -------------------------- */

struct spy {
	struct membe m; /* first */
	const struct gmem *gm;
	const struct vnet_qp *qp;
	const uint8_t (*known)[HDR]; /* headers the guest writes (double-fetch test) */
	unsigned nknown;
	uint64_t tx_frames, tx_bad_hdr, tx_bad_iov, tx_unknown_hdr, rx_bad_iov;
	size_t last_len; /* frame bytes of the last TX frame, header excluded */
};

/* [p, p + len) lies inside one region of the device's mapping of guest memory. */
static bool in_map(const struct gmem *gm, const void *p, size_t len)
{
	uintptr_t a = (uintptr_t)p;

	for (unsigned i = 0; i < gm->nregions; i++) {
		uintptr_t h = (uintptr_t)gm->regions[i].host;
		uint64_t size = gm->regions[i].size;

		if (a >= h && a - h <= size && len <= size - (a - h))
			return true;
	}
	return false;
}

static ssize_t spy_tx(void *be, const struct iovec *iov, int n)
{
	struct spy *s = be;
	unsigned hl = s->qp->hdr_len, got = 0;
	uint8_t hb[HDR] = {0};
	struct vnet_hdr h;
	const char *why = "";
	size_t len = 0;

	for (int i = 0; i < n; i++) {
		const uint8_t *b = iov[i].iov_base;

		/* Guest bytes, or (first, exactly a header long) the device's checked copy. */
		if (!in_map(s->gm, b, iov[i].iov_len) && !(i == 0 && iov[i].iov_len == hl))
			s->tx_bad_iov++;
		for (size_t k = 0; k < iov[i].iov_len && got < hl; k++)
			hb[got++] = b[k];
		len += iov[i].iov_len;
	}
	memset(&h, 0, sizeof(h));
	memcpy(&h, hb, hl);
	if (len < hl || vnet_hdr_check(&h, len - hl, s->qp->features, &why))
		s->tx_bad_hdr++;
	if (s->nknown) {
		bool known = false;

		for (unsigned k = 0; k < s->nknown; k++)
			known |= memcmp(hb, s->known[k], hl) == 0;
		s->tx_unknown_hdr += !known;
	}
	s->last_len = len >= hl ? len - hl : 0;
	s->tx_frames++;
	return membe_ops.tx(&s->m, iov, n);
}

static ssize_t spy_rx(void *be, const struct iovec *iov, int n)
{
	struct spy *s = be;

	for (int i = 0; i < n; i++)
		if (iov[i].iov_base != s->qp->bounce &&
		    !in_map(s->gm, iov[i].iov_base, iov[i].iov_len))
			s->rx_bad_iov++;
	return membe_ops.rx(&s->m, iov, n);
}

static int spy_fd(void *be)
{
	return membe_ops.fd(&((struct spy *)be)->m);
}

static int spy_set_hdr_len(void *be, int len)
{
	return membe_ops.set_hdr_len(&((struct spy *)be)->m, len);
}

static int spy_set_offloads(void *be, uint64_t f)
{
	return membe_ops.set_offloads(&((struct spy *)be)->m, f);
}

static uint64_t spy_features(void *be)
{
	return membe_ops.features(&((struct spy *)be)->m);
}

static const struct be_ops spy_ops = {
    .name = "spy",
    .rx = spy_rx,
    .tx = spy_tx,
    .fd = spy_fd,
    .set_hdr_len = spy_set_hdr_len,
    .set_offloads = spy_set_offloads,
    .features = spy_features,
};

/* ---- the environment: an attacker port and a neighbour port in one guest ------------------ */

struct port_cfg {
	uint64_t features;
	uint16_t num;
	enum membe_mode mode;
	size_t frame_len; /* source: Ethernet bytes per frame */
};

struct port {
	struct fg_vq frx, ftx;
	struct vnet_qp qp;
	struct spy be;
	struct wrk *w;
	uint64_t features;
	char rxname[16], txname[16];
	uint64_t rx_gpa[MAXQ]; /* RX head -> its buffer (pieces contiguous in guest memory) */
	uint32_t rx_len[MAXQ];
};

/* An extra region of the map as the guest sees it. */
struct greg {
	uint64_t gpa, size;
	uint8_t *va;
	int fd; /* memfd we mapped, -1 for a host page */
};

struct env {
	struct fg g;
	struct greg reg[4];
	unsigned nreg;
	struct port a, n; /* attacker, neighbour */
	struct wrk *w[2];
	bool same_worker;
	uint64_t data;	     /* attacker's data area, DATA_SIZE bytes of RAM */
	uint64_t n_tx, n_rx; /* the neighbour's buffers */
	uint32_t n_seq;
	long long n_last_ms, max_call_ms;
};

static struct env env_store;

struct snap {
	bool rx_broken, tx_broken;
	struct vnet_stats st;
	unsigned hold;
	struct spy be;
};

struct snap_req {
	struct port *p;
	struct snap *s;
};

/* Runs on the worker thread: nothing there changes while we copy. */
static void snap_fn(void *arg)
{
	struct snap_req *r = arg;
	struct port *p = r->p;

	r->s->rx_broken = vq_is_broken(&p->qp.rx);
	r->s->tx_broken = vq_is_broken(&p->qp.tx);
	r->s->st = p->qp.stats;
	r->s->hold = p->qp.hold.count;
	r->s->be = p->be;
}

static void snap_take(struct env *e, struct port *p, struct snap *s)
{
	struct snap_req r = {p, s};
	long long t0 = th_now_ms(), t;

	memset(s, 0, sizeof(*s));
	if (wrk_call(p->w, snap_fn, &r) != 0)
		CHECK(!"wrk_call failed");
	t = th_now_ms() - t0;
	if (t > e->max_call_ms)
		e->max_call_ms = t;
}

static uint8_t *g_ptr(struct env *e, uint64_t gpa, uint64_t *room)
{
	if (gpa >= FG_GPA_BASE && gpa - FG_GPA_BASE < e->g.size) {
		*room = e->g.size - (gpa - FG_GPA_BASE);
		return e->g.mem + (gpa - FG_GPA_BASE);
	}
	for (unsigned i = 0; i < e->nreg; i++) {
		const struct greg *r = &e->reg[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size) {
			*room = r->size - (gpa - r->gpa);
			return r->va + (gpa - r->gpa);
		}
	}
	return NULL;
}

/* Copy between a buffer and guest memory, across regions as the guest sees them. */
static void g_copy(struct env *e, uint64_t gpa, void *buf, size_t len, bool to_guest)
{
	uint8_t *b = buf;

	while (len) {
		uint64_t room = 0;
		uint8_t *p = g_ptr(e, gpa, &room);
		size_t n;

		REQUIRE(p != NULL);
		n = len < room ? len : (size_t)room;
		if (to_guest)
			memcpy(p, b, n);
		else
			memcpy(b, p, n);
		gpa += n;
		b += n;
		len -= n;
	}
}

static void g_write(struct env *e, uint64_t gpa, const void *buf, size_t len)
{
	g_copy(e, gpa, (void *)buf, len, true);
}

static void g_read(struct env *e, uint64_t gpa, void *buf, size_t len)
{
	g_copy(e, gpa, buf, len, false);
}

static void g_fill(struct env *e, uint64_t gpa, uint8_t v, size_t len)
{
	static uint8_t b[4096];

	memset(b, v, sizeof(b));
	for (size_t n; len; len -= n, gpa += n) {
		n = len < sizeof(b) ? len : sizeof(b);
		g_write(e, gpa, b, n);
	}
}

static void port_init(struct env *e, struct port *p, unsigned idx, const char *tag,
		      const struct port_cfg *c)
{
	memset(p, 0, sizeof(*p));
	p->features = c->features;
	snprintf(p->rxname, sizeof(p->rxname), "%s-rx", tag);
	snprintf(p->txname, sizeof(p->txname), "%s-tx", tag);
	REQUIRE(fg_vq_init(&e->g, &p->frx, c->num) == 0);
	REQUIRE(fg_vq_init(&e->g, &p->ftx, c->num) == 0);
	REQUIRE(membe_init(&p->be.m, c->mode, c->frame_len ? c->frame_len : 100, 16) == 0);
	p->be.gm = &e->g.gm;
	p->be.qp = &p->qp;
	REQUIRE(vnet_qp_init(&p->qp, idx, NULL, &spy_ops, &p->be) == 0);
	REQUIRE(fg_vq_attach(&p->frx, &p->qp.rx, p->rxname, c->features) == 0);
	REQUIRE(fg_vq_attach(&p->ftx, &p->qp.tx, p->txname, c->features) == 0);
	REQUIRE(vnet_qp_set_features(&p->qp, c->features) == 0);
}

/* A fresh guest with the attacker's port (configured by ac) and a well-behaved neighbour. */
static struct env *env_init(const struct port_cfg *ac, bool same_worker)
{
	static const struct port_cfg nc = {V1 | MRG | IND, 64, MEMBE_ECHO, 0};
	struct env *e = &env_store;

	memset(e, 0, sizeof(*e));
	REQUIRE(fg_init(&e->g, RAM_SIZE) == 0);
	e->same_worker = same_worker;
	port_init(e, &e->a, 0, "evil", ac);
	port_init(e, &e->n, 1, "nb", &nc);
	e->data = fg_alloc(&e->g, DATA_SIZE, 4096);
	e->n_tx = fg_alloc(&e->g, 4096, 64);
	e->n_rx = fg_alloc(&e->g, 4096, 64);
	return e;
}

/* A second memfd region, mapped by the guest and (separately) by the device. */
static void env_add_memfd(struct env *e, uint64_t gpa, uint64_t size)
{
	struct greg *r = &e->reg[e->nreg++];
	int fd = memfd_create("adv-extra", MFD_CLOEXEC), dupfd;

	REQUIRE(fd >= 0 && ftruncate(fd, (off_t)size) == 0);
	r->va = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	REQUIRE(r->va != MAP_FAILED);
	r->gpa = gpa;
	r->size = size;
	r->fd = fd;
	dupfd = dup(fd);
	REQUIRE(gmem_add_fd(&e->g.gm, gpa, size, 0x7e0000000000ull + ((uint64_t)e->nreg << 30),
			    dupfd, 0) == 0);
}

static void env_add_host(struct env *e, uint64_t gpa, uint8_t *page, size_t size)
{
	struct greg *r = &e->reg[e->nreg++];

	memset(page, 0, size);
	*r = (struct greg){gpa, size, page, -1};
	REQUIRE(gmem_add_host(&e->g.gm, gpa, size, 0x7d0000000000ull + ((uint64_t)e->nreg << 30),
			      page, GMEM_READ | GMEM_WRITE) == 0);
}

static void neighbour_check(struct env *e);

static void env_start(struct env *e)
{
	REQUIRE(wrk_create(&e->w[0], "adv-w0") == 0);
	e->a.w = e->n.w = e->w[0];
	if (!e->same_worker) {
		REQUIRE(wrk_create(&e->w[1], "adv-w1") == 0);
		e->n.w = e->w[1];
	}
	REQUIRE(wrk_add(e->a.w, &e->a.qp) == 0);
	REQUIRE(wrk_add(e->n.w, &e->n.qp) == 0);
	th_log_capture();
	REQUIRE(wrk_start(e->w[0]) == 0);
	if (e->w[1])
		REQUIRE(wrk_start(e->w[1]) == 0);
	neighbour_check(e);
}

/* Invariants of every test, then everything freed. */
static void env_done(struct env *e)
{
	struct snap sa, sn;

	snap_take(e, &e->a, &sa);
	snap_take(e, &e->n, &sn);
	/* Nothing outside the map and no unchecked header ever reached a backend. */
	CHECK(sa.be.tx_bad_iov == 0 && sa.be.rx_bad_iov == 0 && sa.be.tx_bad_hdr == 0);
	CHECK(sn.be.tx_bad_iov == 0 && sn.be.rx_bad_iov == 0 && sn.be.tx_bad_hdr == 0);
	CHECK(!sn.rx_broken && !sn.tx_broken);
	/* The worker(s) always answered. */
	CHECK(e->max_call_ms < BOUND_MS);
	wrk_destroy(e->w[0]);
	wrk_destroy(e->w[1]);
	for (int i = 0; i < 2; i++) {
		struct port *p = i ? &e->n : &e->a;

		vnet_qp_destroy(&p->qp);
		membe_destroy(&p->be.m);
		fg_vq_destroy(&p->frx);
		fg_vq_destroy(&p->ftx);
	}
	fg_destroy(&e->g); /* also unmaps the device's view of the extra regions */
	for (unsigned i = 0; i < e->nreg; i++) {
		if (e->reg[i].fd >= 0) {
			munmap(e->reg[i].va, e->reg[i].size);
			close(e->reg[i].fd);
		}
	}
	vt_log_set_sink(NULL, NULL);
}

/* ---- guest helpers ------------------------------------------------------------------------ */

static void kick(struct fg_vq *q)
{
	uint64_t one = 1;

	if (write(q->kick_fd, &one, sizeof(one)) < 0) {
		/* only at counter overflow: the device has a kick pending anyway */
	}
}

/* Put head in the next avail slot, publish it and kick, without any of the driver's checks. */
static void raw_publish(struct fg_vq *q, uint16_t head)
{
	fg_raw_avail(q, q->avail_idx, head);
	q->avail_idx++;
	fg_publish(q, true);
}

static uint16_t used_idx(struct fg_vq *q)
{
	return le16toh(__atomic_load_n((uint16_t *)fg_va(q->g, q->used + 2), __ATOMIC_ACQUIRE));
}

static void used_elem(struct fg_vq *q, uint16_t slot, uint32_t *id, uint32_t *len)
{
	const uint8_t *u = fg_va(q->g, q->used + 4 + 8ull * (slot & (q->num - 1)));

	memcpy(id, u, 4);
	memcpy(len, u + 4, 4);
	*id = le32toh(*id);
	*len = le32toh(*len);
}

static bool wait_used(struct fg_vq *q, unsigned n)
{
	long long end = th_now_ms() + BOUND_MS;

	while (fg_used_pending(q) < n) {
		if (th_now_ms() > end)
			return false;
		usleep(100);
	}
	return true;
}

/* Wait for the attacker's rx or tx queue to be broken; ms it took, -1 after BOUND_MS. */
static long long wait_broken(struct env *e, bool rx)
{
	long long t0 = th_now_ms();
	struct snap s;

	do {
		snap_take(e, &e->a, &s);
		if (rx ? s.rx_broken : s.tx_broken)
			return th_now_ms() - t0;
		usleep(500);
	} while (th_now_ms() - t0 < BOUND_MS);
	return -1;
}

/*
 * One chain over [gpa, gpa + sum of pieces), cut into pieces, added the driver's way (free list)
 * and published with a kick. An RX buffer is remembered for take_rx.
 */
static int post(struct port *p, struct fg_vq *q, uint64_t gpa, const uint32_t *pieces, unsigned n,
		bool write, bool indirect)
{
	static struct fg_buf b[VQ_MAX_IOV];
	uint64_t at = gpa;
	uint32_t total = 0;
	int head;

	REQUIRE(n >= 1 && n <= VQ_MAX_IOV);
	for (unsigned i = 0; i < n; i++) {
		b[i] = (struct fg_buf){at, pieces[i], write};
		at += pieces[i];
		total += pieces[i];
	}
	head = fg_add(q, b, n, indirect);
	REQUIRE(head >= 0);
	if (write) {
		p->rx_gpa[head] = gpa;
		p->rx_len[head] = total;
	}
	fg_publish(q, true);
	return head;
}

static void post1(struct port *p, struct fg_vq *q, uint64_t gpa, uint32_t len, bool write)
{
	post(p, q, gpa, &len, 1, write, false);
}

/*
 * Take one frame the device delivered on p's RX ring (header included) into out, following
 * num_buffers with MRG_RXBUF; *nbufs: used entries it took. Bytes, or < 0 if malformed.
 */
static long take_rx(struct env *e, struct port *p, uint8_t *out, size_t cap, unsigned *nbufs)
{
	bool mrg = p->features & MRG;
	uint32_t id, len;
	uint16_t nb = 1;
	size_t at;

	*nbufs = 0;
	if (!wait_used(&p->frx, 1) || !fg_used(&p->frx, &id, &len))
		return -1;
	if (id >= p->frx.num || len > p->rx_len[id] || len > cap)
		return -2;
	g_read(e, p->rx_gpa[id], out, len);
	at = len;
	*nbufs = 1;
	if (mrg) {
		if (len < HDR)
			return -3;
		memcpy(&nb, out + 10, 2);
		nb = le16toh(nb);
		/* A frame's used entries are published together: all of them are there now. */
		if (nb == 0 || nb - 1u > fg_used_pending(&p->frx))
			return -4;
	}
	for (unsigned k = 1; k < nb; k++) {
		if (!fg_used(&p->frx, &id, &len))
			return -5;
		if (id >= p->frx.num || len > p->rx_len[id] || at + len > cap)
			return -6;
		g_read(e, p->rx_gpa[id], out + at, len);
		at += len;
		(*nbufs)++;
	}
	return (long)at;
}

/* A zero header (no offloads) of hl bytes and len frame bytes of a pattern. */
static void make_pkt(uint8_t *p, size_t hl, size_t len, uint32_t seed)
{
	memset(p, 0, hl);
	for (size_t i = 0; i < len; i++)
		p[hl + i] = (uint8_t)(seed + i * 13 + (i >> 7));
}

/* What the source backend sends after its header (membe.c). */
static void source_frame(uint8_t *f, size_t len)
{
	memset(f, 0, len);
	memset(f, 0xff, 6);
	f[6] = 0x02;
	f[12] = 0x88;
	f[13] = 0xb5;
	for (size_t i = 14; i < len; i++)
		f[i] = (uint8_t)i;
}

static uint8_t pkt_buf[70000], got_buf[140000];

/*
 * The attacker's port, behaving for once, with an echo backend: a frame of len bytes goes out as
 * a TX chain over tx_gpa cut into tx pieces (ntx == 0: one piece), comes back into the RX buffers
 * already posted, and must arrive byte-exact in nbufs buffers with num_buffers saying so.
 */
static void echo_roundtrip(struct env *e, uint64_t tx_gpa, const uint32_t *tx, unsigned ntx,
			   bool indirect, size_t len, unsigned nbufs, uint32_t seed)
{
	struct port *p = &e->a;
	unsigned hl = p->qp.hdr_len, nb = 0;
	uint32_t one = (uint32_t)(hl + len), id, ulen;
	uint16_t v;
	long n;

	make_pkt(pkt_buf, hl, len, seed);
	g_write(e, tx_gpa, pkt_buf, hl + len);
	post(p, &p->ftx, tx_gpa, ntx ? tx : &one, ntx ? ntx : 1, false, indirect);
	CHECK(wait_used(&p->ftx, 1));
	CHECK(fg_used(&p->ftx, &id, &ulen) == 1);
	n = take_rx(e, p, got_buf, sizeof(got_buf), &nb);
	CHECK(n == (long)(hl + len));
	CHECK(nb == nbufs);
	if (n != (long)(hl + len) || nb != nbufs) {
		fprintf(stderr, "  [%s] echo of %zu bytes: got %ld in %u buffers, wanted %u\n",
			cur_test, len, n, nb, nbufs);
		return;
	}
	CHECK(memcmp(got_buf + hl, pkt_buf + hl, len) == 0);
	CHECK(got_buf[0] == 0 && got_buf[1] == 0); /* flags, gso_type: as sent */
	if (hl == HDR) {
		memcpy(&v, got_buf + 10, 2);
		CHECK(le16toh(v) == nbufs);
	}
}

/* The neighbour moves one frame out and back through its echo backend, byte-exact, in time. */
static void neighbour_check(struct env *e)
{
	struct port *p = &e->n;
	size_t len = HDR + 100 + e->n_seq % 64;
	uint8_t frame[HDR + 200], got[HDR + 200];
	long long t0 = th_now_ms();
	uint32_t id, ulen, rid, rlen;
	uint16_t nb;
	int th, rh;
	bool done;

	make_pkt(frame, HDR, len - HDR, e->n_seq++);
	g_write(e, e->n_tx, frame, len);
	g_fill(e, e->n_rx, 0xee, 2048);
	rh = fg_add(&p->frx, &(struct fg_buf){e->n_rx, 2048, true}, 1, false);
	fg_publish(&p->frx, true);
	th = fg_add(&p->ftx, &(struct fg_buf){e->n_tx, (uint32_t)len, false}, 1, false);
	fg_publish(&p->ftx, true);
	CHECK(rh >= 0 && th >= 0);
	done = wait_used(&p->ftx, 1) && wait_used(&p->frx, 1);
	e->n_last_ms = th_now_ms() - t0;
	CHECK(done);
	CHECK(e->n_last_ms < BOUND_MS);
	if (!done) {
		fprintf(stderr, "  [%s] neighbour got no frame back\n", cur_test);
		return;
	}
	CHECK(fg_used(&p->ftx, &id, &ulen) == 1 && id == (uint32_t)th);
	CHECK(fg_used(&p->frx, &rid, &rlen) == 1 && rid == (uint32_t)rh && rlen == len);
	g_read(e, e->n_rx, got, len);
	CHECK(memcmp(got + HDR, frame + HDR, len - HDR) == 0);
	memcpy(&nb, got + 10, 2);
	CHECK(le16toh(nb) == 1);
}

/*
 * The attacker's queue (rx or tx) was handed a malformed shape and kicked: within BOUND_MS it is
 * broken, with exactly one error line naming the queue and the rule; more kicks change nothing the
 * guest can see and log nothing more; the worker answers; the neighbour still moves frames.
 */
static void expect_broken(struct env *e, bool rx, const char *rule)
{
	struct port *a = &e->a;
	struct fg_vq *q = rx ? &a->frx : &a->ftx;
	const char *name = rx ? a->rxname : a->txname;
	long long t = wait_broken(e, rx);
	struct snap s;
	uint16_t used;

	CHECK(t >= 0);
	CHECK(th_log_errors == 1);
	CHECK(strncmp(th_log_last, name, strlen(name)) == 0);
	CHECK(strstr(th_log_last, ": queue broken: ") != NULL);
	CHECK(strstr(th_log_last, rule) != NULL);
	if (t < 0 || th_log_errors != 1 || !strstr(th_log_last, rule))
		fprintf(stderr, "  [%s] wanted '%s' on %s: broken after %lld ms, %d errors, '%s'\n",
			cur_test, rule, name, t, th_log_errors, th_log_last);
	used = used_idx(q);
	for (int i = 0; i < 50; i++)
		kick(q);
	usleep(20000);
	snap_take(e, a, &s);
	CHECK(rx ? s.rx_broken : s.tx_broken);
	CHECK(used_idx(q) == used);
	CHECK(th_log_errors == 1);
	neighbour_check(e);
	CHECK(th_log_errors == 1);
}

/* CPU time the whole process uses over ms of wall-clock time in which this thread sleeps. */
static long long cpu_ms_during(int ms)
{
	struct timespec a, b;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
	usleep((useconds_t)ms * 1000);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
	return (long long)(b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
			break;
	fclose(f);
	return v;
}

static void on_alarm(int sig)
{
	static const char msg[] = "\ntest_adversarial: HANG: watchdog fired in ";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0 || write(2, cur_test, strlen(cur_test)) < 0 ||
	    write(2, "\n", 1) < 0) {
		/* nothing more to do */
	}
	_exit(1);
}

static void begin(const char *name)
{
	cur_test = name;
	fprintf(stderr, "--- %s\n", name);
	alarm(60);
}

/* Shorthands for malformed chains on the attacker's rings (always at descriptors 0 and 1). */
static void tx_hdr_then(struct env *e, uint64_t addr, uint32_t len, uint16_t flags)
{
	fg_raw_desc(&e->a.ftx, 0, e->data, HDR, DF_NEXT, 1);
	fg_raw_desc(&e->a.ftx, 1, addr, len, flags, 0);
	raw_publish(&e->a.ftx, 0);
}

static void one_desc(struct fg_vq *q, uint64_t addr, uint32_t len, uint16_t flags)
{
	fg_raw_desc(q, 0, addr, len, flags, 0);
	raw_publish(q, 0);
}

/* ---- 1. descriptor loops and chains longer than the ring ---------------------------------- */

static void test_loops(void)
{
	static const char *const rules[] = {
	    "chain from head 0 is longer than the queue size 8 (loop)",
	    "chain from head 5 is longer than the queue size 8 (loop)",
	    "chain from head 0 is longer than the queue size 256 (loop)",
	    "indirect chain loops (more than 4 entries)",
	};

	begin("1 loops");
	for (unsigned v = 0; v < 4; v++) {
		struct port_cfg c = {V1 | MRG | IND, v == 2 ? 256 : 8, MEMBE_SINK, 0};
		struct env *e = env_init(&c, v & 1);
		struct fg_vq *q = &e->a.ftx;
		struct snap s;

		env_start(e);
		if (v == 0) {
			/* The longest legal chain first: all 8 descriptors, header in the first. */
			for (uint16_t i = 0; i < 8; i++)
				fg_raw_desc(q, i, e->data + 256 * i, i ? 20 : HDR,
					    i < 7 ? DF_NEXT : 0, (uint16_t)(i + 1));
			raw_publish(q, 0);
			CHECK(wait_used(q, 1));
			snap_take(e, &e->a, &s);
			CHECK(s.be.tx_frames == 1 && s.be.last_len == 7 * 20 && !s.tx_broken);
			/* Then a two-descriptor cycle. */
			fg_raw_desc(q, 0, e->data, HDR, DF_NEXT, 1);
			fg_raw_desc(q, 1, e->data + 256, 64, DF_NEXT, 0);
			raw_publish(q, 0);
		} else if (v == 1) {
			/* A descriptor that points at itself, from a non-zero head. */
			fg_raw_desc(q, 5, e->data, 64, DF_NEXT, 5);
			raw_publish(q, 5);
		} else if (v == 2) {
			/* Through every descriptor of a 256-entry ring, then back to the start. */
			for (unsigned i = 0; i < 256; i++)
				fg_raw_desc(q, (uint16_t)i, e->data + 16 * i, 16, DF_NEXT,
					    (uint16_t)((i + 1) % 256));
			raw_publish(q, 0);
		} else {
			/* The same inside an indirect table: 0 -> 1 -> 2 -> 3 -> 1. */
			uint64_t t = e->data + 65536;

			for (unsigned i = 0; i < 4; i++)
				fg_raw_table(&e->g, t, i, e->data + 64 * i, 64, DF_NEXT,
					     (uint16_t)(i == 3 ? 1 : i + 1));
			fg_raw_desc(q, 0, t, 64, DF_INDIRECT, 0);
			raw_publish(q, 0);
		}
		expect_broken(e, false, rules[v]);
		snap_take(e, &e->a, &s);
		CHECK(s.be.tx_frames == (v == 0 ? 1u : 0u)); /* nothing of a loop was sent */
		env_done(e);
	}
}

/* ---- 2. indices past the ring, avail index jumps: RX with a source backend ----------------- */

static void test_rx_indices(void)
{
	enum { HEAD_NUM, HEAD_MAX, JUMP, JUMP_AFTER, NEXT_PAST, NV };
	static const char *const rules[NV] = {
	    "avail ring entry 0 holds head 8 >= queue size 8",
	    "avail ring entry 0 holds head 65535 >= queue size 8",
	    "avail idx 9 is 9 ahead of 0, more than the queue size 8",
	    "avail idx 32772 is 32768 ahead of 4, more than the queue size 8",
	    "descriptor next 8 is past the ring of 8 entries",
	};

	begin("2 rx indices");
	for (unsigned v = 0; v < NV; v++) {
		struct port_cfg c = {V1 | MRG, 8, MEMBE_SOURCE, 100};
		struct env *e = env_init(&c, v & 1);
		struct fg_vq *q = &e->a.frx;
		uint8_t want[100];
		struct snap s;
		long long cpu;

		env_start(e);
		switch (v) {
		case HEAD_NUM:
		case HEAD_MAX:
			fg_raw_desc(q, 0, e->data, 2048, DF_WRITE, 0);
			raw_publish(q, v == HEAD_NUM ? 8 : 0xffff);
			break;
		case JUMP:
			fg_raw_avail_idx(q, 9);
			kick(q);
			break;
		case JUMP_AFTER:
			/* Good traffic first: four frames land whole, then the guest jumps. */
			for (unsigned i = 0; i < 4; i++)
				post1(&e->a, q, e->data + 4096 * i, 2048, true);
			source_frame(want, sizeof(want));
			for (unsigned i = 0; i < 4; i++) {
				unsigned nb;

				CHECK(take_rx(e, &e->a, got_buf, sizeof(got_buf), &nb) ==
				      HDR + 100);
				CHECK(nb == 1 && got_buf[10] == 1 && got_buf[11] == 0);
				CHECK(memcmp(got_buf + HDR, want, sizeof(want)) == 0);
			}
			fg_raw_avail_idx(q, 4 + 0x8000);
			kick(q);
			break;
		case NEXT_PAST:
			fg_raw_desc(q, 0, e->data, 2048, DF_WRITE | DF_NEXT, 8);
			raw_publish(q, 0);
			break;
		}
		expect_broken(e, true, rules[v]);
		/* The source stays readable: a broken RX queue must not make the worker spin. */
		cpu = cpu_ms_during(200);
		CHECK(cpu < 100);
		snap_take(e, &e->a, &s);
		CHECK(s.be.m.rx_frames == (v == JUMP_AFTER ? 4u : 0u));
		CHECK(s.st.rx_packets == (v == JUMP_AFTER ? 4u : 0u));
		env_done(e);
	}
}

/* ---- 3. indirect tables of bad length, nested, huge: TX ------------------------------------ */

static void test_indirect(void)
{
	enum {
		LEN24,
		LEN0,
		LEN1,
		NESTED,
		HUGE_LEN,
		ENTRIES_1025,
		PARTLY_OUT,
		UNMAPPED,
		WITH_NEXT,
		NOT_NEGOTIATED,
		NEXT_PAST,
		NV
	};
	static const char *const rules[NV] = {
	    "indirect table length 24 is not a non-zero multiple of 16",
	    "indirect table length 0 is not a non-zero multiple of 16",
	    "indirect table length 1 is not a non-zero multiple of 16",
	    "nested indirect table",
	    "indirect table of 268435455 entries exceeds the limit of 1024",
	    "indirect table of 1025 entries exceeds the limit of 1024",
	    "is outside guest memory",
	    "indirect table at 0x1000+32 is outside guest memory",
	    "descriptor has both INDIRECT and NEXT",
	    "INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC",
	    "descriptor next 2 is past the indirect table of 2 entries",
	};
	static uint32_t ones[VQ_MAX_IOV];
	struct port_cfg good = {V1 | MRG | IND, 16, MEMBE_ECHO, 0};
	struct env *e;

	begin("3 indirect");
	/* Legal first: the largest table (1024 one-byte entries; the header spans 12 of them). */
	e = env_init(&good, false);
	env_start(e);
	for (unsigned i = 0; i < VQ_MAX_IOV; i++)
		ones[i] = 1;
	post1(&e->a, &e->a.frx, e->data + 65536, 2048, true);
	echo_roundtrip(e, e->data, ones, VQ_MAX_IOV, true, VQ_MAX_IOV - HDR, 1, 3);
	neighbour_check(e);
	CHECK(th_log_errors == 0);
	env_done(e);

	for (unsigned v = 0; v < NV; v++) {
		struct port_cfg c = {V1 | MRG | (v == NOT_NEGOTIATED ? 0 : IND), 8, MEMBE_SINK, 0};
		uint64_t t;
		struct fg_vq *q;
		struct snap s;

		e = env_init(&c, v & 1);
		q = &e->a.ftx;
		t = e->data + 65536;
		env_start(e);
		/* A good two-entry table: header, then 100 frame bytes. */
		fg_raw_table(&e->g, t, 0, e->data, HDR, DF_NEXT, 1);
		fg_raw_table(&e->g, t, 1, e->data + 4096, 100, 0, 0);
		switch (v) {
		case LEN24:
		case LEN0:
		case LEN1:
			one_desc(q, t, v == LEN24 ? 24 : v == LEN0 ? 0 : 1, DF_INDIRECT);
			break;
		case NESTED:
			fg_raw_table(&e->g, t, 1, t, 32, DF_INDIRECT, 0);
			one_desc(q, t, 32, DF_INDIRECT);
			break;
		case HUGE_LEN:
			one_desc(q, t, 0xfffffff0u, DF_INDIRECT);
			break;
		case ENTRIES_1025:
			one_desc(q, t, 16 * (VQ_MAX_IOV + 1), DF_INDIRECT);
			break;
		case PARTLY_OUT:
			one_desc(q, RAM_END - 16, 32, DF_INDIRECT);
			break;
		case UNMAPPED:
			one_desc(q, 0x1000, 32, DF_INDIRECT);
			break;
		case WITH_NEXT:
			fg_raw_desc(q, 1, e->data + 8192, 64, 0, 0);
			fg_raw_desc(q, 0, t, 32, DF_INDIRECT | DF_NEXT, 1);
			raw_publish(q, 0);
			break;
		case NOT_NEGOTIATED:
			one_desc(q, t, 32, DF_INDIRECT);
			break;
		case NEXT_PAST:
			fg_raw_table(&e->g, t, 1, e->data + 4096, 100, DF_NEXT, 2);
			one_desc(q, t, 32, DF_INDIRECT);
			break;
		}
		expect_broken(e, false, rules[v]);
		snap_take(e, &e->a, &s);
		CHECK(s.be.tx_frames == 0);
		env_done(e);
	}
}

/* ---- 4. descriptors spanning regions (legal) or running off the map ------------------------ */

static void regions_add(struct env *e)
{
	env_add_memfd(e, B_GPA, B_SIZE);
	env_add_memfd(e, C_GPA, C_SIZE);
}

static void test_regions(void)
{
	struct port_cfg good = {V1 | MRG | IND, 16, MEMBE_ECHO, 0};
	struct {
		bool rx;
		uint64_t gpa;
		uint32_t len;
		const char *rule;
	} bad[] = {
	    {false, C_GPA + C_SIZE - 100, 200, "+200 is outside guest memory"}, /* off the end */
	    {false, B_GPA + B_SIZE - 100, 200, "+200 is outside guest memory"}, /* into the hole */
	    {false, C_GPA - 50, 200, "+200 is outside guest memory"},		/* from the hole */
	    {false, FG_GPA_BASE - 16, 64, "+64 is outside guest memory"},	/* from below RAM */
	    {true, C_GPA + C_SIZE - 100, 2048, "+2048 is outside guest memory (or not writable)"},
	};
	static const uint32_t rx[1] = {256};
	struct env *e;

	begin("4 regions");
	e = env_init(&good, true);
	regions_add(e);
	env_start(e);
	/* One TX descriptor from the RAM into the adjacent region; one RX buffer likewise, with
	 * the header (and num_buffers) split between the two. */
	g_fill(e, RAM_END - 6, 0xff, 2048);
	post1(&e->a, &e->a.frx, RAM_END - 6, 2048, true);
	echo_roundtrip(e, RAM_END - 40, NULL, 0, false, 500, 1, 4);
	/* Header in the region after the hole, frame in the adjacent one; mergeable RX buffers
	 * that end exactly at the end of a region, before the hole and at the end of the map. */
	g_fill(e, C_GPA + C_SIZE - 256, 0xff, 256);
	post(&e->a, &e->a.frx, C_GPA + C_SIZE - 256, rx, 1, true, false);
	post1(&e->a, &e->a.frx, B_GPA + B_SIZE - 100, 100, true);
	make_pkt(pkt_buf, HDR, 300, 5);
	g_write(e, B_GPA + 5000, pkt_buf + HDR, 300);
	{
		struct fg_buf b[2] = {{C_GPA + 100, HDR, false}, {B_GPA + 5000, 300, false}};
		unsigned nb = 0;
		uint32_t id, len;

		g_write(e, C_GPA + 100, pkt_buf, HDR);
		CHECK(fg_add(&e->a.ftx, b, 2, false) >= 0);
		fg_publish(&e->a.ftx, true);
		CHECK(wait_used(&e->a.ftx, 1) && fg_used(&e->a.ftx, &id, &len) == 1);
		CHECK(take_rx(e, &e->a, got_buf, sizeof(got_buf), &nb) == HDR + 300);
		CHECK(nb == 2 && got_buf[10] == 2 && got_buf[11] == 0);
		CHECK(memcmp(got_buf + HDR, pkt_buf + HDR, 300) == 0);
	}
	CHECK(th_log_errors == 0);
	neighbour_check(e);
	env_done(e);

	for (unsigned v = 0; v < sizeof(bad) / sizeof(bad[0]); v++) {
		struct port_cfg c = {V1 | MRG, 8, bad[v].rx ? MEMBE_SOURCE : MEMBE_SINK, 100};

		e = env_init(&c, v & 1);
		regions_add(e);
		env_start(e);
		if (bad[v].rx)
			one_desc(&e->a.frx, bad[v].gpa, bad[v].len, DF_WRITE);
		else
			tx_hdr_then(e, bad[v].gpa, bad[v].len, 0);
		expect_broken(e, bad[v].rx, bad[v].rule);
		env_done(e);
	}
}

/* ---- 5. zero-length descriptors and wrap-around addresses: TX ------------------------------ */

static void zero_top_add(struct env *e)
{
	env_add_host(e, 0, zero_page, sizeof(zero_page));
	env_add_host(e, TOP_GPA, top_page, sizeof(top_page));
}

static void test_zero_wrap(void)
{
	enum {
		ZERO_2ND,
		ZERO_ONLY,
		ZERO_IN_TABLE,
		ZERO_RX,
		WRAP_TOP,
		WRAP_MAX,
		WRAP_IN_TABLE,
		TABLE_WRAPS,
		HUGE_LEN,
		NV
	};
	static const char *const rules[NV] = {
	    "zero-length descriptor",
	    "zero-length descriptor",
	    "zero-length descriptor",
	    "zero-length descriptor",
	    "0xfffffffffffff800+4096 is outside guest memory",
	    "0xffffffffffffffff+2 is outside guest memory",
	    "0xfffffffffffffff8+16 is outside guest memory",
	    "indirect table at 0xfffffffffffffff0+32 is outside guest memory",
	    "chain longer than 1048576 bytes",
	};
	struct port_cfg good = {V1 | MRG | IND, 8, MEMBE_ECHO, 0};
	struct env *e;

	begin("5 zero-length and wrap-around");
	/* Legal edges: a frame at guest address 0, received into the last bytes of the address
	 * space; then a frame ending at 2^64 - 1, received at the bottom. Both ends are mapped,
	 * which is what makes a wrap-around below dangerous. */
	e = env_init(&good, false);
	zero_top_add(e);
	env_start(e);
	post1(&e->a, &e->a.frx, UINT64_MAX - 2047, 2048, true);
	echo_roundtrip(e, 0, NULL, 0, false, 100, 1, 6);
	post1(&e->a, &e->a.frx, 2048, 2048, true);
	echo_roundtrip(e, UINT64_MAX - (HDR + 100) + 1, NULL, 0, false, 100, 1, 7);
	CHECK(th_log_errors == 0);
	env_done(e);

	for (unsigned v = 0; v < NV; v++) {
		struct port_cfg c = {V1 | MRG | IND, 8, v == ZERO_RX ? MEMBE_SOURCE : MEMBE_SINK,
				     100};
		uint64_t t;
		struct fg_vq *q;

		e = env_init(&c, v & 1);
		zero_top_add(e);
		q = &e->a.ftx;
		t = e->data + 65536;
		env_start(e);
		switch (v) {
		case ZERO_2ND:
			tx_hdr_then(e, e->data + 4096, 0, 0);
			break;
		case ZERO_ONLY:
			one_desc(q, e->data, 0, 0);
			break;
		case ZERO_IN_TABLE:
			fg_raw_table(&e->g, t, 0, e->data, HDR, DF_NEXT, 1);
			fg_raw_table(&e->g, t, 1, e->data + 4096, 0, 0, 0);
			one_desc(q, t, 32, DF_INDIRECT);
			break;
		case ZERO_RX:
			one_desc(&e->a.frx, e->data, 0, DF_WRITE);
			break;
		case WRAP_TOP:
			/* Starts in the top page, would wrap into the page at 0: both mapped. */
			tx_hdr_then(e, UINT64_MAX - 0x7ff, 0x1000, 0);
			break;
		case WRAP_MAX:
			one_desc(q, UINT64_MAX, 2, 0);
			break;
		case WRAP_IN_TABLE:
			fg_raw_table(&e->g, t, 0, e->data, HDR, DF_NEXT, 1);
			fg_raw_table(&e->g, t, 1, UINT64_MAX - 7, 16, 0, 0);
			one_desc(q, t, 32, DF_INDIRECT);
			break;
		case TABLE_WRAPS:
			one_desc(q, UINT64_MAX - 15, 32, DF_INDIRECT);
			break;
		case HUGE_LEN:
			tx_hdr_then(e, e->data + 4096, 0xffffffffu, 0);
			break;
		}
		expect_broken(e, v == ZERO_RX, rules[v]);
		env_done(e);
	}
}

/* ---- 6. writable-before-readable, in TX and RX ------------------------------------------- */

static void test_rw_order(void)
{
	enum { TX_R_W, TX_W_R, TX_W, TX_TABLE_W_R, RX_R, RX_R_W, RX_W_R_W, NV };
	static const char *const rules[NV] = {
	    "TX chain has 1 device-writable segments",
	    "device-readable descriptor after a device-writable one",
	    "TX chain has 1 device-writable segments",
	    "device-readable descriptor after a device-writable one",
	    "RX buffer has 1 device-readable segments",
	    "RX buffer has 1 device-readable segments",
	    "device-readable descriptor after a device-writable one",
	};

	begin("6 writable-before-readable");
	for (unsigned v = 0; v < NV; v++) {
		struct port_cfg c = {V1 | MRG | IND, 8, MEMBE_SOURCE, 100};
		struct env *e = env_init(&c, v & 1);
		struct fg_vq *q = v >= RX_R ? &e->a.frx : &e->a.ftx;
		uint64_t d = e->data, t = e->data + 65536;
		struct snap s;

		env_start(e);
		switch (v) {
		case TX_R_W:
			fg_raw_desc(q, 0, d, HDR + 100, DF_NEXT, 1);
			fg_raw_desc(q, 1, d + 4096, 64, DF_WRITE, 0);
			break;
		case TX_W_R:
			fg_raw_desc(q, 0, d, HDR, DF_WRITE | DF_NEXT, 1);
			fg_raw_desc(q, 1, d + 4096, 100, 0, 0);
			break;
		case TX_W:
			fg_raw_desc(q, 0, d, HDR + 100, DF_WRITE, 0);
			break;
		case TX_TABLE_W_R:
			fg_raw_table(&e->g, t, 0, d, HDR, DF_WRITE | DF_NEXT, 1);
			fg_raw_table(&e->g, t, 1, d + 4096, 100, 0, 0);
			fg_raw_desc(q, 0, t, 32, DF_INDIRECT, 0);
			break;
		case RX_R:
			fg_raw_desc(q, 0, d, 2048, 0, 0);
			break;
		case RX_R_W:
			fg_raw_desc(q, 0, d, HDR, DF_NEXT, 1);
			fg_raw_desc(q, 1, d + 4096, 2048, DF_WRITE, 0);
			break;
		case RX_W_R_W:
			fg_raw_desc(q, 0, d, HDR, DF_WRITE | DF_NEXT, 1);
			fg_raw_desc(q, 1, d + 4096, 100, DF_NEXT, 2);
			fg_raw_desc(q, 2, d + 8192, 2048, DF_WRITE, 0);
			break;
		}
		raw_publish(q, 0);
		expect_broken(e, v >= RX_R, rules[v]);
		snap_take(e, &e->a, &s);
		CHECK(s.be.tx_frames == 0 && s.st.rx_packets == 0);
		env_done(e);
	}
}

/* ---- 7. vnet header split across descriptors (legal) or longer than the chain -------------- */

static void test_hdr_split(void)
{
	struct port_cfg v1 = {V1 | MRG | IND, 32, MEMBE_ECHO, 0};
	struct port_cfg legacy = {IND, 32, MEMBE_ECHO, 0};
	static const uint32_t tx_a[] = {1, 3, 8, 1, 99}, rx_a[] = {11, 1, 2036};
	static const uint32_t tx_b[] = {2, 10, 100}, rx_b[] = {5, 7, 2036};
	static const uint32_t tx_l[] = {4, 6, 100}, rx_l[] = {3, 7, 2038};
	static const struct {
		bool legacy;
		uint32_t pieces[2];
		unsigned n;
		bool indirect;
		const char *rule;
	} bad[] = {
	    {false, {11}, 1, false, "TX chain of 11 bytes is shorter than the 12-byte virtio-net"},
	    {false, {4, 4}, 2, false, "TX chain of 8 bytes is shorter than the 12-byte virtio-net"},
	    {false, {6, 5}, 2, true, "TX chain of 11 bytes is shorter than the 12-byte virtio-net"},
	    {true, {9}, 1, false, "TX chain of 9 bytes is shorter than the 10-byte virtio-net"},
	};
	struct env *e;

	begin("7 header split / header longer than the chain");
	e = env_init(&v1, false);
	env_start(e);
	/* Header over three TX descriptors; num_buffers straddling two RX descriptors. */
	g_fill(e, e->data + 65536, 0xff, 2048);
	post(&e->a, &e->a.frx, e->data + 65536, rx_a, 3, true, false);
	echo_roundtrip(e, e->data, tx_a, 5, false, 100, 1, 8);
	/* The same shapes inside indirect tables. */
	g_fill(e, e->data + 65536, 0xff, 2048);
	post(&e->a, &e->a.frx, e->data + 65536, rx_b, 3, true, true);
	echo_roundtrip(e, e->data, tx_b, 3, true, 100, 1, 9);
	CHECK(th_log_errors == 0);
	env_done(e);

	/* A legacy 10-byte header, split as well. */
	e = env_init(&legacy, true);
	env_start(e);
	CHECK(e->a.qp.hdr_len == VNET_HDR_LEN_LEGACY);
	g_fill(e, e->data + 65536, 0xff, 2048);
	post(&e->a, &e->a.frx, e->data + 65536, rx_l, 3, true, false);
	echo_roundtrip(e, e->data, tx_l, 3, false, 100, 1, 10);
	CHECK(th_log_errors == 0);
	env_done(e);

	for (unsigned v = 0; v < sizeof(bad) / sizeof(bad[0]); v++) {
		struct port_cfg c = {bad[v].legacy ? IND : V1 | MRG | IND, 8, MEMBE_SINK, 0};
		struct snap s;

		e = env_init(&c, v & 1);
		env_start(e);
		post(&e->a, &e->a.ftx, e->data, bad[v].pieces, bad[v].n, false, bad[v].indirect);
		expect_broken(e, false, bad[v].rule);
		snap_take(e, &e->a, &s);
		CHECK(s.be.tx_frames == 0);
		env_done(e);
	}
}

/* ---- 8. bad offload fields: dropped and counted, the queue not broken ---------------------- */

struct hcase {
	const char *what;
	uint8_t flags, gso_type;
	uint16_t hdr_len, gso_size, csum_start, csum_offset;
	bool ok;
};

static void offload_cases(uint64_t features, const struct hcase *cs, unsigned n)
{
	struct port_cfg c = {features, 16, MEMBE_SINK, 0};
	struct env *e = env_init(&c, false);
	struct fg_vq *q = &e->a.ftx;
	uint64_t drops = 0, sent = 0;

	env_start(e);
	for (unsigned i = 0; i < n; i++) {
		struct vnet_hdr h = {
		    .flags = cs[i].flags,
		    .gso_type = cs[i].gso_type,
		    .hdr_len = htole16(cs[i].hdr_len),
		    .gso_size = htole16(cs[i].gso_size),
		    .csum_start = htole16(cs[i].csum_start),
		    .csum_offset = htole16(cs[i].csum_offset),
		    .num_buffers = 0xffff,
		};
		uint64_t gpa = e->data + 4096 * i;
		uint32_t id, len;
		struct snap s;

		make_pkt(pkt_buf, HDR, 100, i);
		memcpy(pkt_buf, &h, HDR);
		g_write(e, gpa, pkt_buf, HDR + 100);
		post1(&e->a, q, gpa, HDR + 100, false);
		CHECK(wait_used(q, 1) && fg_used(q, &id, &len) == 1 && len == 0);
		snap_take(e, &e->a, &s);
		drops += !cs[i].ok;
		sent += cs[i].ok;
		CHECK(s.st.tx_drop_bad_hdr == drops);
		CHECK(s.be.tx_frames == sent);
		CHECK(!s.tx_broken);
		if (s.st.tx_drop_bad_hdr != drops || s.be.tx_frames != sent)
			fprintf(stderr, "  [%s] '%s': %s, wanted %s\n", cur_test, cs[i].what,
				s.be.tx_frames == sent ? "dropped" : "sent",
				cs[i].ok ? "sent" : "dropped");
	}
	CHECK(th_log_errors == 0); /* the guest's header is not a ring fault: no error, no break */
	neighbour_check(e);
	env_done(e);
}

static void test_offloads(void)
{
	/* 100-byte frames; CSUM and HOST_TSO4 negotiated, nothing else. */
	const struct hcase with_offl[] = {
	    {"csum_start and csum_offset 0xffff", NEEDS_CSUM, 0, 0, 0, 0xffff, 0xffff, false},
	    {"csum field one byte past the end", NEEDS_CSUM, 0, 0, 0, 90, 9, false},
	    {"csum field ends at the last byte", NEEDS_CSUM, 0, 0, 0, 90, 8, true},
	    {"csum_offset past the end", NEEDS_CSUM, 0, 0, 0, 0, 0xffff, false},
	    {"csum_start past the end", NEEDS_CSUM, 0, 0, 0, 200, 0, false},
	    {"TCPv6 GSO without HOST_TSO6", NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 74, 1428, 54, 16,
	     false},
	    {"UDP GSO without HOST_UFO", NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP, 42, 1400, 34, 6,
	     false},
	    {"USO without HOST_USO", NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4, 42, 1400, 34, 6, false},
	    {"unknown gso_type 2", NEEDS_CSUM, 2, 54, 1448, 34, 16, false},
	    {"unknown gso_type 0x42", NEEDS_CSUM, 0x42, 54, 1448, 34, 16, false},
	    {"ECN on a non-GSO frame", 0, VIRTIO_NET_HDR_GSO_ECN, 0, 0, 0, 0, false},
	    {"TCPv4 + ECN without HOST_ECN", NEEDS_CSUM,
	     VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN, 54, 1448, 34, 16, false},
	    {"TCPv4 with gso_size 0", NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 0, 34, 16, false},
	    {"TCPv4 without NEEDS_CSUM", 0, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16, false},
	    {"TCPv4 hdr_len past the frame", NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 200, 1448, 34,
	     16, false},
	    {"valid TCPv4 GSO", NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16, true},
	    {"no offloads", 0, 0, 0, 0, 0, 0, true},
	};
	const struct hcase without[] = {
	    {"NEEDS_CSUM without VIRTIO_NET_F_CSUM", NEEDS_CSUM, 0, 0, 0, 14, 16, false},
	    {"TCPv4 GSO without HOST_TSO4", 0, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 0, 0, false},
	    {"no offloads", 0, 0, 0, 0, 0, 0, true},
	};

	begin("8 bad offload fields");
	offload_cases(V1 | MRG | CSUM | TSO4, with_offl, sizeof(with_offl) / sizeof(with_offl[0]));
	offload_cases(V1 | MRG, without, sizeof(without) / sizeof(without[0]));
}

/* ---- 9. num_buffers games ------------------------------------------------------------------ */

/* n RX buffers of the given pieces, each pre-filled with garbage (num_buffers 0xffff). */
static void post_garbage_rx(struct env *e, uint64_t gpa, unsigned n, const uint32_t *pieces,
			    unsigned np)
{
	uint32_t size = 0;

	for (unsigned i = 0; i < np; i++)
		size += pieces[i];
	for (unsigned i = 0; i < n; i++) {
		g_fill(e, gpa + (uint64_t)i * size, 0xff, size);
		post(&e->a, &e->a.frx, gpa + (uint64_t)i * size, pieces, np, true, false);
	}
}

static void test_num_buffers(void)
{
	struct port_cfg mrg = {V1 | MRG, 64, MEMBE_ECHO, 0};
	struct port_cfg v1 = {V1, 64, MEMBE_ECHO, 0};
	struct port_cfg legacy = {0, 64, MEMBE_ECHO, 0};
	static const uint32_t b256[] = {256}, split[] = {11, 245}, b12[] = {HDR}, b2k[] = {2048};
	static const struct {
		uint64_t features;
		uint32_t size;
		const char *rule;
	} bad[] = {
	    {V1 | MRG, 8, "RX buffer of 8 bytes cannot hold the 12-byte header"},
	    {V1, 11, "RX buffer of 11 bytes cannot hold the 12-byte header"},
	    {0, 9, "RX buffer of 9 bytes cannot hold the 10-byte header"},
	};
	uint64_t rxa;
	struct env *e;

	begin("9 num_buffers games");
	e = env_init(&mrg, false);
	rxa = e->data + (1 << 20);
	env_start(e);
	/* 1012 bytes over 256-byte buffers: 4 of them; then 1; then exactly the 3 left. */
	post_garbage_rx(e, rxa, 8, b256, 1);
	echo_roundtrip(e, e->data, NULL, 0, false, 1000, 4, 11);
	echo_roundtrip(e, e->data, NULL, 0, false, 60, 1, 12);
	echo_roundtrip(e, e->data, NULL, 0, false, 3 * 256 - HDR, 3, 13);
	/* num_buffers straddling two descriptors of each buffer. */
	post_garbage_rx(e, rxa, 6, split, 2);
	echo_roundtrip(e, e->data, NULL, 0, false, 600, 3, 14);
	echo_roundtrip(e, e->data, NULL, 0, false, 3 * 256 - HDR, 3, 15);
	/* Buffers exactly a header long: the first holds the header alone. */
	post_garbage_rx(e, rxa, 16, b12, 1);
	echo_roundtrip(e, e->data, NULL, 0, false, 60, 6, 16);
	echo_roundtrip(e, e->data, NULL, 0, false, 10 * HDR - HDR, 10, 17);
	CHECK(th_log_errors == 0);
	env_done(e);

	/* VERSION_1 without MRG_RXBUF: num_buffers is 1 whatever the guest left there. */
	e = env_init(&v1, true);
	env_start(e);
	post_garbage_rx(e, e->data + (1 << 20), 2, b2k, 1);
	echo_roundtrip(e, e->data, NULL, 0, false, 100, 1, 18);
	echo_roundtrip(e, e->data, NULL, 0, false, 1500, 1, 19);
	CHECK(th_log_errors == 0);
	env_done(e);

	/* Legacy 10-byte header: the two bytes after it are frame bytes, not num_buffers. */
	e = env_init(&legacy, false);
	env_start(e);
	post_garbage_rx(e, e->data + (1 << 20), 1, b2k, 1);
	echo_roundtrip(e, e->data, NULL, 0, false, 100, 1, 20);
	CHECK(th_log_errors == 0);
	env_done(e);

	/* RX buffers too small for the header. */
	for (unsigned v = 0; v < sizeof(bad) / sizeof(bad[0]); v++) {
		struct port_cfg c = {bad[v].features, 8, MEMBE_SOURCE, 100};
		struct snap s;

		e = env_init(&c, v & 1);
		env_start(e);
		post_garbage_rx(e, e->data, 1, &bad[v].size, 1);
		expect_broken(e, true, bad[v].rule);
		snap_take(e, &e->a, &s);
		CHECK(s.st.rx_packets == 0);
		env_done(e);
	}
}

/* ---- 10. a guest that never gives RX buffers: memory stays bounded ------------------------- */

static void test_no_rx_buffers(void)
{
	struct port_cfg c = {V1 | MRG, 256, MEMBE_SOURCE, 9000};
	struct env *e = env_init(&c, true);
	unsigned hold_max = e->a.qp.cfg.hold_frames, nb;
	static const uint32_t k1[] = {1024}, k2[] = {2048};
	long rss0, rss1;
	long long end, cpu;
	uint8_t *want;
	struct snap s;
	unsigned i = 0;

	begin("10 no RX buffers");
	env_start(e);
	rss0 = rss_kib();
	/* No buffers at all, and RX kicks anyway, with an endless source behind. */
	end = th_now_ms() + 500;
	while (th_now_ms() < end) {
		for (int k = 0; k < 20; k++)
			kick(&e->a.frx);
		if (++i % 100 == 0)
			neighbour_check(e);
		usleep(1000);
	}
	snap_take(e, &e->a, &s);
	CHECK(!s.rx_broken && s.hold <= hold_max);
	CHECK(s.be.m.rx_frames == 0); /* nothing read: nowhere to put it */
	CHECK(s.st.rx_paused >= 1);
	/* Two 1 KiB buffers: never enough for a 9000-byte frame, which is held, and kicks. */
	post_garbage_rx(e, e->data, 2, k1, 1);
	end = th_now_ms() + 400;
	while (th_now_ms() < end) {
		for (int k = 0; k < 20; k++)
			kick(&e->a.frx);
		if (++i % 100 == 0)
			neighbour_check(e);
		usleep(1000);
	}
	snap_take(e, &e->a, &s);
	CHECK(!s.rx_broken && s.hold <= hold_max && s.hold == 1);
	CHECK(s.be.m.rx_frames <= hold_max && s.st.rx_packets == 0);
	rss1 = rss_kib();
	CHECK(rss0 > 0 && rss1 - rss0 < 8192);
	fprintf(stderr, "  RSS %ld -> %ld KiB, held %u (bound %u), source read %llu frames\n", rss0,
		rss1, s.hold, hold_max, (unsigned long long)s.be.m.rx_frames);
	/* The source stays readable: a guest without buffers must not make the worker spin. */
	cpu = cpu_ms_during(200);
	CHECK(cpu < 100);
	/* Buffers at last: the held frame arrives whole over six of them. */
	post_garbage_rx(e, e->data + 65536, 8, k2, 1);
	want = malloc(9000);
	REQUIRE(want != NULL);
	source_frame(want, 9000);
	CHECK(take_rx(e, &e->a, got_buf, sizeof(got_buf), &nb) == HDR + 9000);
	CHECK(nb == 6 && got_buf[10] == 6 && got_buf[11] == 0);
	CHECK(memcmp(got_buf + HDR, want, 9000) == 0);
	free(want);
	neighbour_check(e);
	CHECK(th_log_errors == 0);
	env_done(e);
}

/*
 * The same guest with an echo backend, transmitting: the echo ring fills (its depth is 16), TX
 * waits for room that only RX buffers can make. Waiting must be sleeping, not spinning; once the
 * guest posts buffers, everything it sent comes back.
 */
static void test_no_rx_buffers_echo(void)
{
	struct port_cfg c = {V1 | MRG, 128, MEMBE_ECHO, 0};
	struct env *e = env_init(&c, true);
	static const uint32_t k2[] = {2048};
	long long cpu;
	struct snap s;

	begin("10b no RX buffers, echo backend");
	env_start(e);
	make_pkt(pkt_buf, HDR, 60, 30);
	g_write(e, e->data, pkt_buf, HDR + 60);
	for (unsigned i = 0; i < 64; i++)
		CHECK(fg_add(&e->a.ftx, &(struct fg_buf){e->data, HDR + 60, false}, 1, false) >= 0);
	fg_publish(&e->a.ftx, true);
	CHECK(wait_used(&e->a.ftx, 16));
	usleep(20000);
	cpu = cpu_ms_during(300);
	CHECK(cpu < 150);
	snap_take(e, &e->a, &s);
	fprintf(stderr, "  waiting for RX buffers: %lld ms CPU in 300 ms, TX blocked %llu times\n",
		cpu, (unsigned long long)s.st.tx_blocked);
	CHECK(s.st.tx_packets == 16 && fg_used_pending(&e->a.ftx) == 16);
	CHECK(s.st.tx_blocked < 100);
	neighbour_check(e);
	/* Buffers at last: all 64 frames come back and every TX chain completes. */
	post_garbage_rx(e, e->data + 65536, 64, k2, 1);
	for (unsigned i = 0; i < 64; i++) {
		unsigned nb;

		CHECK(take_rx(e, &e->a, got_buf, sizeof(got_buf), &nb) == HDR + 60);
		CHECK(memcmp(got_buf + HDR, pkt_buf + HDR, 60) == 0);
	}
	CHECK(wait_used(&e->a.ftx, 64));
	CHECK(th_log_errors == 0);
	env_done(e);
}

/* ---- 11. a guest that kicks in a tight loop ------------------------------------------------ */

struct storm {
	struct env *e;
	int stop;
	bool with_bufs;
	uint64_t frame;
	uint64_t kicks, posted;
};

static void *storm_main(void *arg)
{
	struct storm *st = arg;
	struct fg_vq *tx = &st->e->a.ftx, *rx = &st->e->a.frx;
	uint64_t one = 1;

	while (!__atomic_load_n(&st->stop, __ATOMIC_RELAXED)) {
		if (st->with_bufs) {
			uint32_t id, len;
			bool added = false;

			while (fg_used(tx, &id, &len))
				;
			while (fg_add(tx, &(struct fg_buf){st->frame, HDR + 60, false}, 1, false) >=
			       0) {
				st->posted++;
				added = true;
			}
			if (added)
				fg_publish(tx, false);
		}
		for (int i = 0; i < 64; i++) {
			if (write(tx->kick_fd, &one, sizeof(one)) < 0 ||
			    write(rx->kick_fd, &one, sizeof(one)) < 0)
				continue;
			st->kicks += 2;
		}
	}
	return NULL;
}

static void test_kick_storm(void)
{
	struct port_cfg c = {V1 | MRG, 256, MEMBE_SINK, 0};
	struct env *e = env_init(&c, true); /* the same worker for both: work budgets matter */
	struct storm st = {.e = e};
	struct snap s;

	begin("11 kick storm");
	env_start(e);
	/* RX buffers the sink never fills: every RX kick makes the worker look at them. */
	post_garbage_rx(e, e->data + (1 << 20), 64, (const uint32_t[]){2048}, 1);
	st.frame = e->data;
	make_pkt(pkt_buf, HDR, 60, 1);
	g_write(e, st.frame, pkt_buf, HDR + 60);
	for (int phase = 0; phase < 3; phase++) {
		pthread_t th;
		long long end, worst = 0;
		unsigned trips = 0;
		uint64_t frames0;

		snap_take(e, &e->a, &s);
		frames0 = s.be.tx_frames;
		st.with_bufs = phase > 0;
		st.kicks = 0;
		if (phase == 2) /* and once more with the worker busy-polling */
			CHECK(wrk_set_busy_poll(e->w[0], 1000) == 0);
		__atomic_store_n(&st.stop, 0, __ATOMIC_RELAXED);
		REQUIRE(pthread_create(&th, NULL, storm_main, &st) == 0);
		end = th_now_ms() + 500;
		while (th_now_ms() < end) {
			neighbour_check(e);
			trips++;
			if (e->n_last_ms > worst)
				worst = e->n_last_ms;
			usleep(2000);
		}
		__atomic_store_n(&st.stop, 1, __ATOMIC_RELAXED);
		pthread_join(th, NULL);
		snap_take(e, &e->a, &s);
		fprintf(stderr,
			"  phase %d: %llu kicks, %llu chains posted, neighbour %u round trips, "
			"worst %lld ms\n",
			phase, (unsigned long long)st.kicks, (unsigned long long)st.posted, trips,
			worst);
		CHECK(st.kicks >= 1000);
		CHECK(trips >= 10 && worst < 1000);
		CHECK(!s.tx_broken && !s.rx_broken);
		if (phase > 0)
			CHECK(s.be.tx_frames > frames0); /* the flooding guest is served too */
	}
	CHECK(wrk_set_busy_poll(e->w[0], 0) == 0);
	CHECK(th_log_errors == 0);
	env_done(e);
}

/* ---- 12. a guest changing descriptors and headers while they are processed ----------------- */

struct flip {
	struct env *e;
	int stop;
	uint64_t hdr, f1, f2, tbl;
	uint64_t published, flips;
	const uint8_t (*hdrs)[HDR]; /* header mode: rewrite the header among these */
	unsigned nhdrs;
};

static void st_desc(volatile uint8_t *d, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	__atomic_store_n((volatile uint64_t *)d, htole64(addr), __ATOMIC_RELAXED);
	__atomic_store_n((volatile uint32_t *)(d + 8), htole32(len), __ATOMIC_RELAXED);
	__atomic_store_n((volatile uint16_t *)(d + 12), htole16(flags), __ATOMIC_RELAXED);
	__atomic_store_n((volatile uint16_t *)(d + 14), htole16(next), __ATOMIC_RELAXED);
}

/* Publishes head 0 again and again, never more than the ring holds ahead of the device. */
static void *flip_publisher(void *arg)
{
	struct flip *f = arg;
	struct fg_vq *q = &f->e->a.ftx;

	while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
		if ((uint16_t)(q->avail_idx - used_idx(q)) >= q->num) {
			sched_yield();
			continue;
		}
		fg_raw_avail(q, q->avail_idx, 0);
		q->avail_idx++;
		fg_publish(q, true);
		f->published++;
	}
	return NULL;
}

/* Rewrites descriptors 0 and 1 (field by field, so reads can tear) among good and bad values. */
static void *flip_descs(void *arg)
{
	struct flip *f = arg;
	struct fg_vq *q = &f->e->a.ftx;
	volatile uint8_t *d0 = fg_va(q->g, q->desc), *d1 = d0 + 16;
	const struct {
		uint64_t addr;
		uint32_t len;
		uint16_t flags, next;
	} v0[] = {
	    {f->hdr, HDR, DF_NEXT, 1},		  /* good */
	    {f->hdr, HDR, DF_NEXT, 1},		  /* good */
	    {f->tbl, 32, DF_INDIRECT, 0},	  /* good: [header][frame] in a table */
	    {f->hdr, 0, DF_NEXT, 1},		  /* zero length */
	    {UINT64_MAX - 7, 16, DF_NEXT, 1},	  /* wraps */
	    {f->hdr, HDR, DF_NEXT, 0},		  /* loops onto itself */
	    {f->hdr, HDR, DF_NEXT, 0xffff},	  /* next past the ring */
	    {f->hdr, HDR, DF_NEXT | DF_WRITE, 1}, /* writable in TX */
	    {f->tbl, 24, DF_INDIRECT, 0},	  /* table length */
	    {RAM_END - 8, HDR, DF_NEXT, 1},	  /* partly outside */
	};
	const struct {
		uint64_t addr;
		uint32_t len;
		uint16_t flags, next;
	} v1[] = {
	    {f->f1, 100, 0, 0},		  /* good */
	    {f->f2, 1400, 0, 0},	  /* good */
	    {f->f1, 0x7fffffff, 0, 0},	  /* too long */
	    {f->f1, 100, DF_NEXT, 1},	  /* loops onto itself */
	    {f->f1, 100, DF_INDIRECT, 0}, /* table length */
	    {RAM_END - 50, 100, 0, 0},	  /* partly outside */
	};
	unsigned x = 12345;

	while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
		unsigned a, b;

		x = x * 1103515245u + 12345u;
		a = (x >> 8) % (sizeof(v0) / sizeof(v0[0]));
		b = (x >> 20) % (sizeof(v1) / sizeof(v1[0]));
		/* Mostly good chains, so that many get processed before the break. */
		if ((x >> 16) & 1) {
			a = (x >> 4) % 3;
			b = (x >> 12) % 2;
		}
		st_desc(d0, v0[a].addr, v0[a].len, v0[a].flags, v0[a].next);
		st_desc(d1, v1[b].addr, v1[b].len, v1[b].flags, v1[b].next);
		f->flips++;
	}
	return NULL;
}

/* Rewrites the header bytes, one byte at a time, among f->hdrs. */
static void *flip_hdrs(void *arg)
{
	struct flip *f = arg;
	volatile uint8_t *h = fg_va(&f->e->g, f->hdr);
	unsigned k = 0;

	while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
		const uint8_t *src = f->hdrs[k++ % f->nhdrs];

		for (unsigned i = 0; i < HDR; i++)
			h[i] = src[i];
		f->flips++;
	}
	return NULL;
}

/* Zero the attacker's rings and attach them again, as a device reset would. */
static void port_reset(struct env *e, struct port *p)
{
	struct fg_vq *qs[2] = {&p->frx, &p->ftx};

	REQUIRE(wrk_remove(p->w, &p->qp, NULL, NULL) == 0);
	for (int i = 0; i < 2; i++) {
		struct fg_vq *q = qs[i];

		memset(fg_va(&e->g, q->desc), 0, 16ull * q->num);
		memset(fg_va(&e->g, q->avail), 0, 6 + 2ull * q->num);
		memset(fg_va(&e->g, q->used), 0, 6 + 8ull * q->num);
		q->avail_idx = q->last_used = 0;
		for (unsigned k = 0; k < q->num; k++)
			q->free_next[k] = (uint16_t)(k + 1);
		q->free_head = 0;
		q->nfree = q->num;
	}
	REQUIRE(fg_vq_attach(&p->frx, &p->qp.rx, p->rxname, p->features) == 0);
	REQUIRE(fg_vq_attach(&p->ftx, &p->qp.tx, p->txname, p->features) == 0);
	REQUIRE(wrk_add(p->w, &p->qp) == 0);
}

static void test_double_fetch_desc(void)
{
	struct port_cfg c = {V1 | MRG | IND, 8, MEMBE_SINK, 0};
	struct env *e = env_init(&c, false);
	struct flip f = {.e = e};
	unsigned trials = 0, broken = 0;
	struct snap s;
	long long end;

	begin("12a double fetch: descriptors");
	f.hdr = e->data;
	f.f1 = e->data + 4096;
	f.f2 = e->data + 8192;
	f.tbl = e->data + 16384;
	make_pkt(pkt_buf, HDR, 1400, 21);
	g_write(e, f.hdr, pkt_buf, HDR);
	g_write(e, f.f1, pkt_buf + HDR, 1400);
	g_write(e, f.f2, pkt_buf + HDR, 1400);
	fg_raw_table(&e->g, f.tbl, 0, f.hdr, HDR, DF_NEXT, 1);
	fg_raw_table(&e->g, f.tbl, 1, f.f1, 100, 0, 0);
	env_start(e);
	end = th_now_ms() + 1500;
	while (th_now_ms() < end) {
		pthread_t pub, flp;
		long long stop_at = th_now_ms() + 100;

		__atomic_store_n(&f.stop, 0, __ATOMIC_RELAXED);
		REQUIRE(pthread_create(&flp, NULL, flip_descs, &f) == 0);
		REQUIRE(pthread_create(&pub, NULL, flip_publisher, &f) == 0);
		do {
			usleep(2000);
			snap_take(e, &e->a, &s);
		} while (!s.tx_broken && th_now_ms() < stop_at);
		__atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
		pthread_join(pub, NULL);
		pthread_join(flp, NULL);
		trials++;
		if (s.tx_broken) {
			broken++;
			port_reset(e, &e->a);
		}
	}
	snap_take(e, &e->a, &s);
	fprintf(stderr,
		"  %u trials: %u broke the queue; %llu chains published, %llu sent, %llu dropped "
		"(bad header), %llu flips\n",
		trials, broken, (unsigned long long)f.published,
		(unsigned long long)s.st.tx_packets, (unsigned long long)s.st.tx_drop_bad_hdr,
		(unsigned long long)f.flips);
	/* Each chain was processed as read once, or broke the queue: one error line per break. */
	CHECK(trials > 0 && s.st.tx_packets > 0);
	CHECK(th_log_errors == (int)broken);
	CHECK(s.be.tx_bad_iov == 0 && s.be.tx_bad_hdr == 0);
	neighbour_check(e);
	env_done(e);
}

static void test_double_fetch_hdr(void)
{
	struct port_cfg c = {V1 | MRG | CSUM, 8, MEMBE_SINK, 0};
	struct env *e = env_init(&c, true);
	struct flip f = {.e = e};
	uint8_t hdrs[4][HDR];
	struct vnet_hdr h;
	pthread_t pub, flp;
	long long t0;
	struct snap s;

	begin("12b double fetch: header");
	/* Two good headers, then two bad ones (csum past the end; GSO not negotiated). */
	memset(hdrs, 0, sizeof(hdrs));
	h = (struct vnet_hdr){
	    .flags = NEEDS_CSUM, .csum_start = htole16(14), .csum_offset = htole16(16)};
	memcpy(hdrs[1], &h, HDR);
	h.csum_start = htole16(0xfff0);
	h.csum_offset = htole16(0xff);
	memcpy(hdrs[2], &h, HDR);
	h = (struct vnet_hdr){.flags = NEEDS_CSUM,
			      .gso_type = VIRTIO_NET_HDR_GSO_TCPV4,
			      .hdr_len = htole16(54),
			      .gso_size = htole16(1448),
			      .csum_start = htole16(34),
			      .csum_offset = htole16(16)};
	memcpy(hdrs[3], &h, HDR);
	f.hdrs = (const uint8_t(*)[HDR])hdrs;
	f.nhdrs = 4;
	e->a.be.known = (const uint8_t(*)[HDR])hdrs;
	e->a.be.nknown = 2;
	f.hdr = e->data;
	f.f1 = e->data + 4096;
	make_pkt(pkt_buf, HDR, 100, 22);
	g_write(e, f.f1, pkt_buf + HDR, 100);
	fg_raw_desc(&e->a.ftx, 0, f.hdr, HDR, DF_NEXT, 1);
	fg_raw_desc(&e->a.ftx, 1, f.f1, 100, 0, 0);
	env_start(e);
	__atomic_store_n(&f.stop, 0, __ATOMIC_RELAXED);
	REQUIRE(pthread_create(&flp, NULL, flip_hdrs, &f) == 0);
	REQUIRE(pthread_create(&pub, NULL, flip_publisher, &f) == 0);
	usleep(1000 * 1000);
	__atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
	pthread_join(pub, NULL);
	pthread_join(flp, NULL);
	t0 = th_now_ms();
	while (used_idx(&e->a.ftx) != e->a.ftx.avail_idx && th_now_ms() - t0 < BOUND_MS)
		usleep(100);
	snap_take(e, &e->a, &s);
	fprintf(stderr,
		"  %llu chains: %llu sent (%llu with a torn but valid header), %llu dropped; "
		"%llu flips\n",
		(unsigned long long)f.published, (unsigned long long)s.st.tx_packets,
		(unsigned long long)s.be.tx_unknown_hdr, (unsigned long long)s.st.tx_drop_bad_hdr,
		(unsigned long long)f.flips);
	/* The backend only ever got headers that pass the check: the device checks its one copy. */
	CHECK(s.be.tx_bad_hdr == 0);
	CHECK(s.st.tx_packets + s.st.tx_drop_bad_hdr == f.published);
	CHECK(s.st.tx_packets > 0 && s.st.tx_drop_bad_hdr > 0);
	CHECK(!s.tx_broken && th_log_errors == 0);
	neighbour_check(e);
	env_done(e);
}

/* ---- 13. index games: avail backwards or flapping, used ring writes, heads twice ----------- */

struct flap {
	struct fg_vq *q;
	int stop;
};

static void *flap_main(void *arg)
{
	struct flap *fl = arg;

	for (uint16_t i = 0; !__atomic_load_n(&fl->stop, __ATOMIC_RELAXED); i++) {
		fg_raw_avail_idx(fl->q, i & 1);
		kick(fl->q);
	}
	return NULL;
}

static void test_index_games(void)
{
	struct port_cfg sink = {V1 | MRG | EVT, 8, MEMBE_SINK, 0};
	struct port_cfg echo = {V1 | MRG, 8, MEMBE_ECHO, 0};
	static const uint16_t garbage[] = {0x1234, 0, 0xffff, 7, 0x8000, 3};
	struct env *e;
	struct fg_vq *q;
	struct snap s;

	begin("13 index games");
	/* avail->idx backwards, after two chains went through. */
	e = env_init(&sink, false);
	q = &e->a.ftx;
	env_start(e);
	for (uint16_t i = 0; i < 2; i++) {
		fg_raw_desc(q, i, e->data + 4096 * i, HDR + 60, 0, 0);
		raw_publish(q, i);
	}
	CHECK(wait_used(q, 2));
	fg_raw_avail_idx(q, 1);
	kick(q);
	expect_broken(e, false, "avail idx 1 is 65535 ahead of 2, more than the queue size 8");
	env_done(e);

	/* avail->idx flapping between 0 and 1 (slot 0 holds a good chain): the chain goes out at
	 * most once, and the queue breaks as soon as the index is seen going back. */
	e = env_init(&sink, true);
	q = &e->a.ftx;
	env_start(e);
	fg_raw_desc(q, 0, e->data, HDR + 60, 0, 0);
	fg_raw_avail(q, 0, 0);
	{
		struct flap fl = {q, 0};
		pthread_t th;

		REQUIRE(pthread_create(&th, NULL, flap_main, &fl) == 0);
		usleep(300 * 1000);
		__atomic_store_n(&fl.stop, 1, __ATOMIC_RELAXED);
		pthread_join(th, NULL);
	}
	snap_take(e, &e->a, &s);
	CHECK(s.be.tx_frames <= 1);
	CHECK(th_log_errors == (s.tx_broken ? 1 : 0));
	if (s.tx_broken)
		CHECK(strstr(th_log_last, "more than the queue size 8") != NULL);
	fprintf(stderr, "  flapping avail idx: %s, %llu frame(s) sent\n",
		s.tx_broken ? "broken" : "not broken", (unsigned long long)s.be.tx_frames);
	neighbour_check(e);
	env_done(e);

	/* The guest scribbles over the used ring (idx, flags, entries, avail_event) between
	 * chains: the device never reads it back and keeps counting from its own index. */
	e = env_init(&sink, false);
	q = &e->a.ftx;
	env_start(e);
	for (uint16_t r = 0; r < 6; r++) {
		uint8_t *u = fg_va(&e->g, q->used);
		long long t0 = th_now_ms();
		uint32_t id = 0, len = 1;

		memset(u, 0xa5, 6 + 8ull * q->num);
		__atomic_store_n((uint16_t *)(u + 2), htole16(garbage[r]), __ATOMIC_RELEASE);
		fg_raw_desc(q, r, e->data + 4096 * r, HDR + 60, 0, 0);
		raw_publish(q, r);
		while (used_idx(q) != r + 1 && th_now_ms() - t0 < BOUND_MS)
			usleep(100);
		CHECK(used_idx(q) == r + 1);
		used_elem(q, r, &id, &len);
		CHECK(id == r && len == 0);
	}
	snap_take(e, &e->a, &s);
	CHECK(s.be.tx_frames == 6 && !s.tx_broken && th_log_errors == 0);
	neighbour_check(e);
	env_done(e);

	/* One head made available twice while in flight, on TX and on RX: processed and used
	 * twice (no in-flight tracking, as in vhost-net); the guest's buffer is filled twice. */
	e = env_init(&echo, true);
	q = &e->a.ftx;
	env_start(e);
	{
		struct fg_vq *rq = &e->a.frx;
		uint32_t id, len;
		uint16_t nb;

		fg_raw_desc(rq, 0, e->data + 65536, 2048, DF_WRITE, 0);
		for (uint16_t i = 0; i < 4; i++)
			fg_raw_avail(rq, i, 0);
		fg_raw_avail_idx(rq, 4);
		rq->avail_idx = 4;
		kick(rq);
		/* TX head 0 twice: a 100-byte frame, echoed twice into RX head 0. */
		make_pkt(pkt_buf, HDR, 100, 23);
		g_write(e, e->data, pkt_buf, HDR + 100);
		fg_raw_desc(q, 0, e->data, HDR + 100, 0, 0);
		fg_raw_avail(q, 0, 0);
		fg_raw_avail(q, 1, 0);
		q->avail_idx = 2;
		fg_publish(q, true);
		CHECK(wait_used(q, 2) && wait_used(rq, 2));
		for (uint16_t i = 0; i < 2; i++) {
			used_elem(q, i, &id, &len);
			CHECK(id == 0);
			used_elem(rq, i, &id, &len);
			CHECK(id == 0 && len == HDR + 100);
		}
		g_read(e, e->data + 65536, got_buf, HDR + 100);
		CHECK(memcmp(got_buf + HDR, pkt_buf + HDR, 100) == 0);
		/* A 3000-byte frame needs two RX buffers: both are head 0, overlapping. */
		make_pkt(pkt_buf, HDR, 3000, 24);
		g_write(e, e->data + 8192, pkt_buf, HDR + 3000);
		fg_raw_desc(q, 1, e->data + 8192, HDR + 3000, 0, 0);
		raw_publish(q, 1);
		CHECK(wait_used(q, 3) && wait_used(rq, 4));
		used_elem(rq, 2, &id, &len);
		CHECK(id == 0 && len == 2048);
		used_elem(rq, 3, &id, &len);
		CHECK(id == 0 && len == HDR + 3000 - 2048);
		g_read(e, e->data + 65536 + 10, &nb, 2);
		CHECK(le16toh(nb) == 2);
		snap_take(e, &e->a, &s);
		CHECK(s.be.tx_frames == 3 && s.st.rx_packets == 3);
		CHECK(!s.tx_broken && !s.rx_broken && th_log_errors == 0);
	}
	neighbour_check(e);
	env_done(e);

	/* Buffers laid over the rings themselves: the descriptor table goes out as a TX frame, and
	 * echoed frames land on the RX queue's own descriptor table and avail ring, then on its
	 * used ring. Whatever the device then reads there is checked like anything else: the queue
	 * breaks or carries on, and nothing else notices. */
	e = env_init(&echo, false);
	env_start(e);
	{
		struct fg_vq *rq = &e->a.frx;

		post1(&e->a, rq, rq->desc, 2048, true);
		post1(&e->a, rq, rq->used, 6 + 8 * rq->num, true);
		post1(&e->a, &e->a.ftx, e->a.ftx.desc, 16 * e->a.ftx.num, false);
		for (int i = 0; i < 4; i++) {
			make_pkt(pkt_buf, HDR, 200, 25 + i);
			g_write(e, e->data + 4096 * i, pkt_buf, HDR + 200);
			post1(&e->a, &e->a.ftx, e->data + 4096 * i, HDR + 200, false);
		}
		usleep(50000);
		snap_take(e, &e->a, &s);
		CHECK(th_log_errors == s.rx_broken + s.tx_broken);
		CHECK(!s.tx_broken);
		fprintf(stderr, "  rings as buffers: RX %s after %llu frames, %s\n",
			s.rx_broken ? "broken" : "fine", (unsigned long long)s.st.rx_packets,
			th_log_last);
	}
	neighbour_check(e);
	env_done(e);
}

int main(void)
{
	long long t0 = th_now_ms();

	signal(SIGALRM, on_alarm);
	test_loops();
	test_rx_indices();
	test_indirect();
	test_regions();
	test_zero_wrap();
	test_rw_order();
	test_hdr_split();
	test_offloads();
	test_num_buffers();
	test_no_rx_buffers();
	test_no_rx_buffers_echo();
	test_kick_storm();
	test_double_fetch_desc();
	test_double_fetch_hdr();
	test_index_games();
	alarm(0);
	fprintf(stderr, "total %lld ms\n", th_now_ms() - t0);
	return th_done("adversarial");
}
