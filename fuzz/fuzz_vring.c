// SPDX-License-Identifier: MIT
/*
 * Fuzz the split ring and the virtio-net handlers in every configuration production runs. The
 * input picks the configuration (queue sizes, features, a backend with or without tx_burst and
 * rx_empty, busy-poll or notifications, inflight tracking, dirty logging, budgets, RX layout), then
 * a script of steps: a hostile guest writing its memory at any time (rings, descriptors, indirect
 * tables, buffers; also while the backend is being called, as a driver on another CPU would), a
 * frontend writing the inflight area, the frames the backend delivers and its answers to writes
 * (full, errors, partial bursts), the handlers, vnet_rx_frame, switches of poll mode, the owner
 * halting the pair, and device restarts (rings moved or resized, chains in flight recovered).
 * ASan/UBSan catch any access outside the map or the device's scratch arrays; the handlers must
 * return, never hang. Every run starts from zeroed memory and a fresh queue pair, so an input
 * always does the same thing.
 *
 * Input (little-endian; fuzz/make_corpus.py writes it):
 *   header, 24 bytes:
 *     0  u8  RX queue size 1 << (v % 9)          1  u8  TX queue size 1 << (v % 9)
 *     2  u64 features, masked to FUZZ_FEATURES   10 u8  flags, CF_* below
 *     11 u16 rx_cover                            13 u8  TX budget, frames (0: the default)
 *     14 u8  RX budget, frames (0: the default)  15 u8  hold frames (0: the default)
 *     16 u16 byte budgets / 64 (0: the default)  18 u16 RX avail base  20 u16 TX avail base
 *     22 u8  dirty log size, bytes (v % 9; 8 covers every mapped page)
 *     23 u8  flags, CF2_* below
 *   then steps until the input ends, each an opcode byte (v % OP_COUNT) and its operands, OP_*
 *   below. At most MAX_RUNS steps run a handler. The rings start (vq_setup, vq_set_base, the log,
 *   vq_set_inflight) just before the first step that needs them, so the memory and inflight area
 *   written before that are what the device finds at start. After the script, TX and RX run once
 *   more.
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "virtap/log.h"
#include "virtap/vnet.h"

/* Guest memory: region A (rings, tables, buffers), region B right after it in guest physical
 * addresses but in its own host buffer (a chain crossing the boundary maps to two iovecs, and an
 * overrun of either buffer hits an ASan redzone), region C after B, which the device may only
 * read (an RX buffer there is the guest's fault). */
#define MEM_GPA	   0x10000ull
#define MEM_SIZE   (64u << 10)
#define MEM2_GPA   (MEM_GPA + MEM_SIZE)
#define MEM2_SIZE  4096u
#define ROM_GPA	   (MEM2_GPA + MEM2_SIZE)
#define ROM_SIZE   4096u
#define GUEST_SIZE (MEM_SIZE + MEM2_SIZE + ROM_SIZE)

/* Ring offsets in region A, for queues of up to 256 entries. */
#define RX_DESC	 0x0000u
#define RX_AVAIL 0x1000u
#define RX_USED	 0x2000u
#define TX_DESC	 0x4000u
#define TX_AVAIL 0x5000u
#define TX_USED	 0x6000u

#define HDR_LEN	   24
#define MAX_FRAMES 64	 /* frames queued in the backend at once */
#define MAX_RUNS   48	 /* steps that run a handler, per input: keeps every input fast */
#define INFL_AREA  4160u /* vq_inflight_size(256), checked in once() */
#define LOG_BYTES  8u

/* flags (header byte 10) */
enum {
	CF_BURST = 1,	   /* the backend has tx_burst */
	CF_RX_EMPTY = 2,   /* the backend has rx_empty */
	CF_POLL = 4,	   /* start in busy-poll mode */
	CF_PAD_SHORT = 8,  /* cfg.pad_short */
	CF_INFL_RX = 16,   /* inflight tracking on the RX ring */
	CF_INFL_TX = 32,   /* ... and on the TX ring */
	CF_LOG = 64,	   /* dirty logging on both rings */
	CF_LOG_USED = 128, /* ... including the used rings' own writes */
};

/* flags (header byte 23) */
enum {
	CF2_OWNER = 1, /* the pair has an owner (vu.c's port: halted when a peer fd blocks) */
	CF2_RL = 2,    /* the rings log through rate limiters (vu.c's ring_rl) */
};

/* Steps. */
enum {
	OP_MEM,	    /* u24 offset from MEM_GPA (mod GUEST_SIZE), u16 len, bytes: guest writes */
	OP_TX,	    /* vnet_handle_tx */
	OP_RX,	    /* vnet_handle_rx */
	OP_RXQ,	    /* u8 kind, u16 len [, bytes]: queue a backend frame (FK_*) */
	OP_RXFRAME, /* u8 kind, u16 len [, bytes]: vnet_rx_frame (kind as OP_RXQ, errors: none) */
	OP_PLAN,    /* u8 len, bytes: the backend's answers to its next writes (tx_decide) */
	OP_AVAIL,   /* u8 ring (bit 0: TX), u8 count, u8 head: the guest publishes count chains,
		       heads head, head + 1, ... (mod the queue size) */
	OP_POLL,    /* toggle busy-poll mode as the worker does */
	OP_RESTART, /* u8 rings (RS_*), u16 base [, 3 x u24 desc, avail, used offsets] [, u16
		       queue size]: the device stops and starts again */
	OP_INFL,    /* u16 offset (mod the area), u8 len, bytes: the frontend writes the inflight
		       area */
	OP_ASYNC,   /* u8 calls, u8 len, bytes: OP_MEM, OP_AVAIL and OP_INFL steps the guest runs
		       when the backend has been called `calls` more times, as a driver on
		       another CPU would, mid-run */
	OP_HALT,    /* the owner halts every pair (another pair's peer fd blocked:
		       vnet_qp_peer_stuck), or, when halted, takes a new frontend (halted cleared) */
	OP_PEEK,    /* an embedder asks vq_avail_count of both rings */
	OP_COUNT
};

/* OP_RESTART's rings byte. */
enum {
	RS_RX = 1,
	RS_TX = 2,
	RS_BASE = 4,   /* start at the base given (the frontend's SET_VRING_BASE), else vq_stop's */
	RS_LAYOUT = 8, /* the rings move to the offsets given (mod the map plus a page past it: any
			  alignment, overlapping each other, read-only, outside the map) */
	RS_NUM = 16,   /* the queue size changes to the one given (any value: SET_VRING_NUM) */
};

/* Frame kinds (OP_RXQ, OP_RXFRAME): kind % 4, and bit 2 adds 64 KiB to the length. */
enum { FK_BYTES, FK_PATTERN, FK_EIO, FK_EINTR };

#define FUZZ_FEATURES                                                                              \
	(VNET_BIT(VQ_F_INDIRECT_DESC) | VNET_BIT(VQ_F_EVENT_IDX) | VNET_BIT(VQ_F_VERSION_1) |      \
	 VNET_BIT(VQ_F_IN_ORDER) | VNET_BIT(VIRTIO_NET_F_MRG_RXBUF) |                              \
	 VNET_BIT(VIRTIO_NET_F_CSUM) | VNET_BIT(VIRTIO_NET_F_HOST_TSO4) |                          \
	 VNET_BIT(VIRTIO_NET_F_HOST_TSO6) | VNET_BIT(VIRTIO_NET_F_HOST_ECN) |                      \
	 VNET_BIT(VIRTIO_NET_F_HOST_UFO) | VNET_BIT(VIRTIO_NET_F_HOST_USO))

static uint8_t mem[MEM_SIZE] __attribute__((aligned(4096)));
static uint8_t mem2[MEM2_SIZE] __attribute__((aligned(4096)));
static uint8_t rom[ROM_SIZE] __attribute__((aligned(4096)));
static uint8_t infl_area[2][INFL_AREA] __attribute__((aligned(64)));
static uint8_t log_bits[LOG_BYTES];
static uint8_t pattern[2 << 16]; /* FK_PATTERN frames: up to 128 KiB, past any buffer */
static struct gmem gm;
static int call_fd = -1;

/* The input, read front to back; reads past its end give zeros. */
struct cursor {
	const uint8_t *p;
	size_t n;
};

static unsigned take(struct cursor *c, unsigned bytes)
{
	unsigned v = 0;

	for (unsigned i = 0; i < bytes && c->n; i++, c->p++, c->n--)
		v |= (unsigned)*c->p << (8 * i);
	return v;
}

static const uint8_t *take_buf(struct cursor *c, size_t *len)
{
	const uint8_t *p = c->p;

	if (*len > c->n)
		*len = c->n;
	c->p += *len;
	c->n -= *len;
	return p;
}

/* ---- the backend ------------------------------------------------------------------------- */

struct fz_frame {
	const uint8_t *data;
	size_t len;
	int err; /* rx returns this instead, if non-zero */
};

struct fz_be {
	struct fz_frame q[MAX_FRAMES];
	unsigned head, count;
	struct cursor plan; /* answers to writes; when it runs out, every write succeeds */
};

static void concurrent_guest(struct fz_be *b);

static ssize_t fz_rx(void *opaque, const struct iovec *iov, int n)
{
	struct fz_be *b = opaque;
	struct fz_frame f;
	size_t done = 0;

	concurrent_guest(b);
	if (!b->count)
		return -EAGAIN;
	f = b->q[b->head];
	b->head = (b->head + 1) % MAX_FRAMES;
	b->count--;
	if (f.err)
		return f.err;
	/* A frame longer than the iovecs is cut, as a TAP read would cut it. */
	for (int i = 0; i < n && done < f.len; i++) {
		size_t c = iov[i].iov_len < f.len - done ? iov[i].iov_len : f.len - done;

		memcpy(iov[i].iov_base, f.data + done, c);
		done += c;
	}
	return (ssize_t)done;
}

static bool fz_rx_empty(void *opaque)
{
	concurrent_guest(opaque);
	return !((struct fz_be *)opaque)->count; /* an error entry is not "empty" */
}

/* Read every byte of a frame, as the kernel's copy would; the total. */
static size_t touch(const struct iovec *iov, int n)
{
	volatile uint8_t sink = 0;
	size_t total = 0;

	for (int i = 0; i < n; i++) {
		for (size_t k = 0; k < iov[i].iov_len; k++)
			sink ^= ((const uint8_t *)iov[i].iov_base)[k];
		total += iov[i].iov_len;
	}
	(void)sink;
	return total;
}

/* One answer of the plan for one frame: v % 8 = 0..3 written, 4 full, 5 -EIO, 6 -EMSGSIZE,
 * 7 written but 0 bytes reported. */
static ssize_t tx_decide(unsigned v, const struct iovec *iov, int n)
{
	switch (v % 8) {
	case 4:
		return -EAGAIN;
	case 5:
		return -EIO;
	case 6:
		return -EMSGSIZE;
	case 7:
		touch(iov, n);
		return 0;
	default:
		return (ssize_t)touch(iov, n);
	}
}

static ssize_t fz_tx(void *opaque, const struct iovec *iov, int n)
{
	struct fz_be *b = opaque;

	concurrent_guest(b);
	return tx_decide(b->plan.n ? take(&b->plan, 1) : 0, iov, n);
}

/*
 * The burst call, within the be_ops contract: one plan byte v per call. v % 8 = 0..2: all
 * written; 3: the first (v >> 3) % (n + 1) written, then full; 4: full at once; 5, 6: the whole
 * burst fails (-EIO, -ENOSYS: the device falls back to tx); 7: one more plan byte per frame
 * (tx_decide), and after the first "full" every later frame is full too.
 */
static int fz_tx_burst(void *opaque, struct be_msg *m, int n)
{
	struct fz_be *b = opaque;
	unsigned v = b->plan.n ? take(&b->plan, 1) : 0;
	int k = n;
	bool full = false;

	concurrent_guest(b);
	switch (v % 8) {
	case 3:
		k = (int)((v >> 3) % (unsigned)(n + 1));
		break;
	case 4:
		k = 0;
		break;
	case 5:
		return -EIO;
	case 6:
		return -ENOSYS;
	case 7:
		for (int i = 0; i < n; i++) {
			m[i].res =
			    full ? -EAGAIN : tx_decide(take(&b->plan, 1), m[i].iov, m[i].niov);
			full |= m[i].res == -EAGAIN;
		}
		return n;
	default:
		break;
	}
	for (int i = 0; i < n; i++)
		m[i].res = i < k ? (ssize_t)touch(m[i].iov, m[i].niov) : -EAGAIN;
	return n;
}

static int fz_fd(void *opaque)
{
	(void)opaque;
	return -1;
}

static int fz_hdr(void *opaque, int len)
{
	(void)opaque;
	return len == VNET_HDR_LEN_LEGACY || len == VNET_HDR_LEN_V1 ? 0 : -EINVAL;
}

static int fz_off(void *opaque, uint64_t f)
{
	(void)opaque;
	(void)f;
	return 0;
}

static uint64_t fz_features(void *opaque)
{
	(void)opaque;
	return ~0ull;
}

/* ---- one run ----------------------------------------------------------------------------- */

struct fz {
	struct vnet_qp qp;
	struct be_ops ops;
	struct fz_be be;
	struct vq_inflight infl[2];
	bool infl_on[2];
	struct gmem_log log;
	uint64_t features;
	uint16_t num[2], base[2];
	uint64_t desc[2], avail[2], used[2]; /* ring addresses (offsets from MEM_GPA) */
	unsigned flags, flags2;
	struct vnet_owner owner;
	unsigned stuck_calls; /* owner.stuck callbacks */
	struct vt_ratelimit rl[2];
	bool started;
	unsigned runs;
	struct cursor async;  /* OP_ASYNC steps still to run */
	unsigned async_calls; /* ... after this many more backend calls */
};

static struct vq *ring(struct fz *z, unsigned r)
{
	return r ? &z->qp.tx : &z->qp.rx;
}

/* Start ring r as vu.c's ring_setup does, then as the worker adds a port (do_add). */
static void ring_start(struct fz *z, unsigned r, uint16_t base)
{
	struct vq *vq = ring(z, r);

	vq_init(vq);
	vq->call_fd = call_fd;
	if (z->flags2 & CF2_RL)
		vq->rl = &z->rl[r];
	if (vq_setup(vq, &gm, r ? "tx" : "rx", z->num[r], MEM_GPA + z->desc[r],
		     MEM_GPA + z->avail[r], MEM_GPA + z->used[r], z->features))
		return; /* refused (a layout from OP_RESTART): the ring stays stopped */
	vq_set_base(vq, base);
	if (z->flags & CF_LOG)
		vq_set_log(vq, &z->log, MEM_GPA + z->used[r], z->flags & CF_LOG_USED);
	if (z->infl_on[r])
		(void)vq_set_inflight(vq, &z->infl[r]);
	if (z->qp.poll_mode)
		vq_disable_notify(vq);
}

static void start(struct fz *z)
{
	if (z->started)
		return;
	z->started = true;
	ring_start(z, 0, z->base[0]);
	ring_start(z, 1, z->base[1]);
}

/* The guest's view of its memory at off (from MEM_GPA): a pointer and the bytes left in that
 * region, or NULL past the end. */
static uint8_t *guest_ptr(uint64_t off, size_t *room)
{
	if (off < MEM_SIZE) {
		*room = MEM_SIZE - off;
		return mem + off;
	}
	if (off < MEM_SIZE + MEM2_SIZE) {
		*room = MEM_SIZE + MEM2_SIZE - off;
		return mem2 + (off - MEM_SIZE);
	}
	if (off < GUEST_SIZE) {
		*room = GUEST_SIZE - off;
		return rom + (off - MEM_SIZE - MEM2_SIZE);
	}
	return NULL;
}

/* The guest writes len bytes at off (the regions are contiguous in guest physical addresses),
 * up to the end of its memory. */
static void guest_write(uint64_t off, const uint8_t *p, size_t len)
{
	size_t room, n;
	uint8_t *dst;

	while (len && (dst = guest_ptr(off, &room))) {
		n = len < room ? len : room;
		memcpy(dst, p, n);
		off += n;
		p += n;
		len -= n;
	}
}

static void guest_st16(uint64_t off, uint16_t v)
{
	v = htole16(v);
	guest_write(off, (const uint8_t *)&v, 2);
}

/* The guest makes count more chains available on ring r (wherever its avail ring is now):
 * heads head, head + 1, ... */
static void guest_avail(struct fz *z, unsigned r, unsigned count, unsigned head)
{
	uint16_t idx = 0, mask = (uint16_t)(z->num[r] - 1);
	size_t room;
	const uint8_t *p = guest_ptr(z->avail[r] + 2, &room);

	if (!p || room < 2)
		return;
	memcpy(&idx, p, 2);
	idx = le16toh(idx);
	for (unsigned k = 0; k < count; k++)
		guest_st16(z->avail[r] + 4 + 2 * ((idx + k) & mask), (uint16_t)((head + k) & mask));
	guest_st16(z->avail[r] + 2, (uint16_t)(idx + count));
}

/* A frame from the input (FK_BYTES) or the pattern buffer (FK_PATTERN). */
static struct fz_frame frame_of(struct cursor *c)
{
	unsigned kind = take(c, 1);
	size_t len = take(c, 2) + (kind & 4 ? 0x10000u : 0);
	struct fz_frame f = {0};

	switch (kind % 4) {
	case FK_BYTES:
		f.data = take_buf(c, &len);
		break;
	case FK_PATTERN:
		f.data = pattern;
		break;
	case FK_EIO:
		f.err = -EIO;
		break;
	default:
		f.err = -EINTR;
		break;
	}
	f.len = len;
	return f;
}

/* Busy-poll on or off, as the worker's set_polling does. */
static void toggle_poll(struct fz *z)
{
	struct vnet_qp *qp = &z->qp;

	qp->poll_mode = !qp->poll_mode;
	if (qp->poll_mode) {
		vq_disable_notify(&qp->rx);
		vq_disable_notify(&qp->tx);
	} else {
		(void)vq_enable_notify(&qp->tx);
		(void)vq_enable_notify(&qp->rx);
	}
}

/* The device stops (the worker's do_remove) and starts again, as after a frontend reconnect. */
static void restart(struct fz *z, struct cursor *c)
{
	unsigned which = take(c, 1);
	uint16_t base = (uint16_t)take(c, 2);
	uint64_t at[3] = {0};
	uint16_t num = 0;

	if (which & RS_LAYOUT)
		for (unsigned i = 0; i < 3; i++)
			at[i] = take(c, 3) % (GUEST_SIZE + 0x1000);
	if (which & RS_NUM)
		num = (uint16_t)take(c, 2);
	start(z);
	for (unsigned r = 0; r < 2; r++) {
		uint16_t stopped;

		if (!(which & (r ? RS_TX : RS_RX)))
			continue;
		vq_notify(ring(z, r));
		stopped = vq_stop(ring(z, r));
		if (which & RS_LAYOUT) {
			z->desc[r] = at[0];
			z->avail[r] = at[1];
			z->used[r] = at[2];
		}
		if (which & RS_NUM)
			z->num[r] = num; /* the inflight area stays laid out for the old size */
		ring_start(z, r, which & RS_BASE ? base : stopped);
	}
}

static void step(struct fz *z, struct cursor *c);

/* The backend was called: the guest runs the OP_ASYNC steps it had queued (memory writes only;
 * a handler step ends them). */
static void concurrent_guest(struct fz_be *b)
{
	struct fz *z = (struct fz *)((char *)b - offsetof(struct fz, be));
	struct cursor c = z->async;

	if (!c.n)
		return;
	if (z->async_calls) {
		z->async_calls--;
		return;
	}
	z->async.n = 0;
	while (c.n) {
		unsigned op = *c.p % OP_COUNT;

		if (op != OP_MEM && op != OP_AVAIL && op != OP_INFL)
			break;
		step(z, &c);
	}
}

static void step(struct fz *z, struct cursor *c)
{
	unsigned op = take(c, 1) % OP_COUNT, a, b;
	struct fz_frame f;
	const uint8_t *p;
	size_t len;

	if ((op == OP_TX || op == OP_RX || op == OP_RXFRAME || op == OP_RESTART) &&
	    z->runs++ >= MAX_RUNS) {
		/* Over the limit: the operands are consumed, nothing runs. */
		if (op == OP_RXFRAME) {
			(void)frame_of(c);
		} else if (op == OP_RESTART) {
			a = take(c, 1);
			(void)take(c, 2);
			for (unsigned i = 0; i < 3 && (a & RS_LAYOUT); i++)
				(void)take(c, 3);
			if (a & RS_NUM)
				(void)take(c, 2);
		}
		return;
	}
	switch (op) {
	case OP_MEM:
		a = take(c, 3);
		len = take(c, 2);
		p = take_buf(c, &len);
		guest_write(a % GUEST_SIZE, p, len);
		break;
	case OP_TX:
		start(z);
		(void)vnet_handle_tx(&z->qp);
		break;
	case OP_RX:
		start(z);
		(void)vnet_handle_rx(&z->qp);
		break;
	case OP_RXQ:
		f = frame_of(c);
		if (z->be.count < MAX_FRAMES)
			z->be.q[(z->be.head + z->be.count++) % MAX_FRAMES] = f;
		break;
	case OP_RXFRAME:
		f = frame_of(c);
		start(z);
		if (f.data)
			(void)vnet_rx_frame(&z->qp, f.data, f.len);
		break;
	case OP_PLAN:
		len = take(c, 1);
		z->be.plan.p = take_buf(c, &len);
		z->be.plan.n = len;
		break;
	case OP_AVAIL:
		a = take(c, 1);
		b = take(c, 1);
		guest_avail(z, a & 1, b, take(c, 1));
		break;
	case OP_POLL:
		start(z);
		toggle_poll(z);
		break;
	case OP_RESTART:
		restart(z, c);
		break;
	case OP_INFL:
		a = take(c, 2) % sizeof(infl_area);
		len = take(c, 1);
		p = take_buf(c, &len);
		if (len > sizeof(infl_area) - a)
			len = sizeof(infl_area) - a;
		memcpy((uint8_t *)infl_area + a, p, len);
		break;
	case OP_HALT:
		start(z);
		if (vnet_qp_halted(&z->qp)) {
			__atomic_store_n(&z->owner.halted, false, __ATOMIC_RELEASE);
			break;
		}
		a = z->stuck_calls;
		vnet_qp_peer_stuck(&z->qp);
		/* With an owner: halted now, and the owner told exactly once. */
		if (z->qp.owner && (!vnet_qp_halted(&z->qp) || z->stuck_calls != a + 1))
			__builtin_trap();
		break;
	case OP_PEEK:
		start(z);
		(void)vq_avail_count(&z->qp.rx);
		(void)vq_avail_count(&z->qp.tx);
		break;
	case OP_ASYNC:
		z->async_calls = take(c, 1);
		len = take(c, 1);
		z->async.p = take_buf(c, &len);
		z->async.n = len;
		break;
	}
}

static void owner_stuck(struct vnet_owner *o)
{
	struct fz *z = (struct fz *)((char *)o - offsetof(struct fz, owner));

	z->stuck_calls++;
}

static void discard_log(void *ctx, int level, const char *msg)
{
	(void)ctx;
	(void)level;
	(void)msg;
}

static void once(void)
{
	/* Every message is formatted (a bad format argument shows up), none is printed. */
	vt_log_set_sink(discard_log, NULL);
	vt_log_set_level(VT_LOG_DEBUG);
	gmem_init(&gm);
	if (gmem_add_host(&gm, MEM_GPA, MEM_SIZE, MEM_GPA, mem, GMEM_READ | GMEM_WRITE) ||
	    gmem_add_host(&gm, MEM2_GPA, MEM2_SIZE, MEM2_GPA, mem2, GMEM_READ | GMEM_WRITE) ||
	    gmem_add_host(&gm, ROM_GPA, ROM_SIZE, ROM_GPA, rom, GMEM_READ))
		__builtin_trap();
	if (vq_inflight_size(256) > INFL_AREA)
		__builtin_trap();
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 131 + 7);
	/* The driver's interrupt: signalled on every notification, never read (a full counter
	 * only makes the write fail, which the device ignores). */
	call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	static const struct be_ops base_ops = {
	    .name = "fuzz",
	    .rx = fz_rx,
	    .tx = fz_tx,
	    .fd = fz_fd,
	    .set_hdr_len = fz_hdr,
	    .set_offloads = fz_off,
	    .features = fz_features,
	    .rx_empty = fz_rx_empty,
	    .tx_burst = fz_tx_burst,
	};
	static struct fz z; /* static: large, and every run starts it from zero anyway */
	struct cursor c = {d, n};
	struct vnet_config cfg;
	unsigned v;

	if (n < HDR_LEN)
		return 0;
	if (!gm.nregions)
		once();
	memset(&z, 0, sizeof(z));
	memset(mem, 0, sizeof(mem));
	memset(mem2, 0, sizeof(mem2));
	memset(rom, 0, sizeof(rom));
	memset(infl_area, 0, sizeof(infl_area));
	memset(log_bits, 0, sizeof(log_bits));

	z.num[0] = (uint16_t)(1u << (take(&c, 1) % 9)); /* 1..256: the rings fit */
	z.num[1] = (uint16_t)(1u << (take(&c, 1) % 9));
	z.features = ((uint64_t)take(&c, 4) | (uint64_t)take(&c, 4) << 32) & FUZZ_FEATURES;
	z.flags = take(&c, 1);
	vnet_config_default(&cfg);
	cfg.rx_cover = take(&c, 2);
	cfg.pad_short = z.flags & CF_PAD_SHORT;
	if ((v = take(&c, 1)))
		cfg.tx_budget_pkts = v;
	if ((v = take(&c, 1)))
		cfg.rx_budget_pkts = v;
	if ((v = take(&c, 1)))
		cfg.hold_frames = v;
	if ((v = take(&c, 2)))
		cfg.tx_budget_bytes = cfg.rx_budget_bytes = 64u * v;
	z.base[0] = (uint16_t)take(&c, 2);
	z.base[1] = (uint16_t)take(&c, 2);
	z.desc[0] = RX_DESC;
	z.avail[0] = RX_AVAIL;
	z.used[0] = RX_USED;
	z.desc[1] = TX_DESC;
	z.avail[1] = TX_AVAIL;
	z.used[1] = TX_USED;
	z.log = (struct gmem_log){.bits = log_bits, .size = take(&c, 1) % (LOG_BYTES + 1)};
	z.flags2 = take(&c, 1);

	z.ops = base_ops;
	if (!(z.flags & CF_BURST))
		z.ops.tx_burst = NULL;
	if (!(z.flags & CF_RX_EMPTY))
		z.ops.rx_empty = NULL;
	if (vnet_qp_init(&z.qp, 0, &cfg, &z.ops, &z.be))
		return 0;
	(void)vnet_qp_set_features(&z.qp, z.features);
	z.qp.poll_mode = z.flags & CF_POLL;
	z.owner.stuck = owner_stuck;
	if (z.flags2 & CF2_OWNER)
		z.qp.owner = &z.owner;
	for (unsigned r = 0; r < 2; r++)
		z.infl_on[r] = (z.flags & (r ? CF_INFL_TX : CF_INFL_RX)) &&
			       !vq_inflight_init(&z.infl[r], infl_area[r], z.num[r]);

	while (c.n)
		step(&z, &c);
	start(&z);
	(void)vnet_handle_tx(&z.qp);
	(void)vnet_handle_rx(&z.qp);

	vnet_qp_destroy(&z.qp);
	for (unsigned r = 0; r < 2; r++)
		if (z.infl_on[r])
			vq_inflight_free(&z.infl[r]);
	return 0;
}
