// SPDX-License-Identifier: MIT
/*
 * virtio-net queue pair. TX: pop a chain, check the header it starts with, hand our checked copy
 * of the header plus the guest's frame bytes to the backend in one writev. RX: pop guest buffers
 * for a burst of frames, have the backend read into them (the TAP reads into a staging buffer
 * of its own and scatters the frame into them; the tail of a frame larger than the buffers
 * gathered lands in a bounce buffer and is copied into more buffers), fix up
 * num_buffers last, push the used entries and signal once per batch. When the guest is out of
 * buffers, hold what was already read (the net queue) and stop reading the backend.
 * Must never trust a length, count or header field the guest wrote without checking it here.
 */
#include <errno.h>
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "virtap/log.h"
#include "virtap/vnet.h"

#define BOUNCE_SIZE (VNET_MAX_FRAME + 256)
#define ETH_ZLEN_   60

/*
 * Burst scratch: headers, frames and iovecs of up to VNET_BURST chains at once. Every count that
 * indexes it comes from the guest, so each array states its bound here and txb_fill enforces it:
 * - chain, hdr, msg, msg_of: one entry per chain, at most VNET_BURST chains per burst;
 * - iov: each chain takes one free slot (our header copy goes in front of its segments) plus its
 *   nout + nin segments; a chain is popped only into the room left, so the slots never run
 *   past the array. The first chain of a burst always has VQ_MAX_IOV + 1 slots (the most a
 *   chain can map to, vq_pop), so a burst never stalls on a chain it cannot hold.
 */
#define TXB_IOV (VQ_MAX_IOV + 2 * VNET_BURST)
_Static_assert(TXB_IOV >= VQ_MAX_IOV + 1, "the first chain of a burst must always fit");
struct vnet_burst {
	struct vnet_hdr hdr[VNET_BURST];
	struct be_msg msg[VNET_BURST];
	int msg_of[VNET_BURST]; /* chain k's frame is msg[msg_of[k]]; -1: dropped, not sent */
	struct vq_chain chain[VNET_BURST];
	struct iovec iov[TXB_IOV];
};

void vnet_config_default(struct vnet_config *cfg)
{
	/* 128 frames per handler run: a run publishes its used entries once, at its end, so a
	 * longer run holds its first frames back from the driver for longer, a shorter one pays
	 * the publish and the notify more often; 128 measured best between the two
	 * (BENCHMARKS.md). run_budget keeps it under half the ring. */
	*cfg = (struct vnet_config){
	    .rx_budget_pkts = 128,
	    .rx_budget_bytes = 512 * 1024,
	    .tx_budget_pkts = 128,
	    .tx_budget_bytes = 512 * 1024,
	    .hold_frames = 32,
	    .rx_cover = 1536,
	    .pad_short = false,
	};
}

unsigned vnet_hdr_len(uint64_t f)
{
	/* VIRTIO 1.2 5.1.6: num_buffers is present with VERSION_1 or MRG_RXBUF. */
	if (f & (VNET_BIT(VQ_F_VERSION_1) | VNET_BIT(VIRTIO_NET_F_MRG_RXBUF)))
		return VNET_HDR_LEN_V1;
	return VNET_HDR_LEN_LEGACY;
}

/*
 * IN_ORDER (VIRTIO 1.2 2.7.9: the device uses buffers in the order they were made available)
 * costs us nothing to promise: every handler here completes chains in the order it popped them,
 * and chains it gives back (vq_discard: backend full, too few RX buffers, a held frame) are the
 * newest ones, popped again before anything later. A driver that knows it can drop its free-list
 * bookkeeping (DPDK's virtio PMD then takes its in-order paths).
 */
uint64_t vnet_offered_features(uint64_t be)
{
	return be | VNET_BIT(VIRTIO_NET_F_MRG_RXBUF) | VNET_BIT(VQ_F_VERSION_1) |
	       VNET_BIT(VQ_F_INDIRECT_DESC) | VNET_BIT(VQ_F_EVENT_IDX) | VNET_BIT(VQ_F_IN_ORDER);
}

int vnet_qp_init(struct vnet_qp *qp, unsigned index, const struct vnet_config *cfg,
		 const struct be_ops *ops, void *be)
{
	memset(qp, 0, sizeof(*qp));
	qp->index = index;
	snprintf(qp->name, sizeof(qp->name), "qp%u", index);
	if (cfg)
		qp->cfg = *cfg;
	else
		vnet_config_default(&qp->cfg);
	if (!qp->cfg.rx_budget_pkts || !qp->cfg.tx_budget_pkts || !qp->cfg.rx_budget_bytes ||
	    !qp->cfg.tx_budget_bytes)
		return -EINVAL;
	qp->be_ops = ops;
	qp->be = be;
	vq_init(&qp->rx);
	vq_init(&qp->tx);
	snprintf(qp->rx.name, sizeof(qp->rx.name), "rx%u", index);
	snprintf(qp->tx.name, sizeof(qp->tx.name), "tx%u", index);
	qp->hdr_len = VNET_HDR_LEN_LEGACY;
	qp->rx_iov = calloc(VQ_MAX_IOV + 1, sizeof(*qp->rx_iov));
	qp->tx_iov = calloc(VQ_MAX_IOV + 1, sizeof(*qp->tx_iov));
	qp->rx_bufs = calloc(VQ_MAX_IOV, sizeof(*qp->rx_bufs));
	qp->bounce = malloc(BOUNCE_SIZE);
	if (ops && ops->tx_burst)
		qp->burst = calloc(1, sizeof(*qp->burst));
	if (!qp->rx_iov || !qp->tx_iov || !qp->rx_bufs || !qp->bounce ||
	    (ops && ops->tx_burst && !qp->burst) || netq_init(&qp->hold, qp->cfg.hold_frames)) {
		vnet_qp_destroy(qp);
		return -ENOMEM;
	}
	return 0;
}

void vnet_qp_destroy(struct vnet_qp *qp)
{
	netq_destroy(&qp->hold);
	free(qp->rx_iov);
	free(qp->tx_iov);
	free(qp->rx_bufs);
	free(qp->bounce);
	free(qp->burst);
	qp->burst = NULL;
	qp->rx_iov = qp->tx_iov = NULL;
	qp->rx_bufs = NULL;
	qp->bounce = NULL;
}

int vnet_qp_set_features(struct vnet_qp *qp, uint64_t f)
{
	int err;

	qp->features = f;
	qp->hdr_len = vnet_hdr_len(f);
	qp->mergeable = f & VNET_BIT(VIRTIO_NET_F_MRG_RXBUF);
	if (!qp->be_ops)
		return 0;
	err = qp->be_ops->set_hdr_len(qp->be, (int)qp->hdr_len);
	if (!err)
		err = qp->be_ops->set_offloads(qp->be, f);
	return err;
}

int vnet_hdr_check(const struct vnet_hdr *h, size_t frame_len, uint64_t f, const char **why)
{
	uint8_t gso = h->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
	uint16_t start = le16toh(h->csum_start), off = le16toh(h->csum_offset);
	uint16_t gso_size = le16toh(h->gso_size), hlen = le16toh(h->hdr_len);
	uint64_t need = 0;

	if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
		/* 5.1.6.2.1: NEEDS_CSUM only with VIRTIO_NET_F_CSUM. */
		if (!(f & VNET_BIT(VIRTIO_NET_F_CSUM))) {
			*why = "NEEDS_CSUM without VIRTIO_NET_F_CSUM";
			return -EINVAL;
		}
		/* 5.1.6.2: the checksum field lies at csum_start + csum_offset, inside the frame.
		 */
		if ((size_t)start + off + 2 > frame_len) {
			*why = "csum_start + csum_offset past the end of the frame";
			return -EINVAL;
		}
	}
	switch (gso) {
	case VIRTIO_NET_HDR_GSO_NONE:
		if (h->gso_type & VIRTIO_NET_HDR_GSO_ECN) {
			*why = "ECN bit on a non-GSO frame";
			return -EINVAL;
		}
		return 0;
	case VIRTIO_NET_HDR_GSO_TCPV4:
		need = VNET_BIT(VIRTIO_NET_F_HOST_TSO4);
		break;
	case VIRTIO_NET_HDR_GSO_TCPV6:
		need = VNET_BIT(VIRTIO_NET_F_HOST_TSO6);
		break;
	case VIRTIO_NET_HDR_GSO_UDP:
		need = VNET_BIT(VIRTIO_NET_F_HOST_UFO);
		break;
	case VIRTIO_NET_HDR_GSO_UDP_L4:
		need = VNET_BIT(VIRTIO_NET_F_HOST_USO);
		break;
	default:
		*why = "unknown gso_type";
		return -EINVAL;
	}
	/* 5.1.6.2.1: a GSO type only when its HOST_* feature was negotiated. */
	if (!(f & need)) {
		*why = "gso_type whose HOST_* feature was not negotiated";
		return -EINVAL;
	}
	if ((h->gso_type & VIRTIO_NET_HDR_GSO_ECN) && !(f & VNET_BIT(VIRTIO_NET_F_HOST_ECN))) {
		*why = "ECN without VIRTIO_NET_F_HOST_ECN";
		return -EINVAL;
	}
	/* 5.1.6.2.1: a GSO frame also needs NEEDS_CSUM, and a non-zero segment size. */
	if (!(h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) || gso_size == 0) {
		*why = "GSO frame without NEEDS_CSUM or with gso_size 0";
		return -EINVAL;
	}
	if (hlen > frame_len) {
		*why = "hdr_len larger than the frame";
		return -EINVAL;
	}
	return 0;
}

/* ---- TX ---------------------------------------------------------------------------------- */

/* Check a popped chain and lay out its frame in m: our checked copy of the header (in h, which
 * must live until the frame is sent), then the guest's bytes after the header. 1: ready to
 * send; 0: dropped (counted); -EIO: the queue is broken. */
static int tx_prepare(struct vnet_qp *qp, const struct vq_chain *c, struct vnet_hdr *h,
		      struct be_msg *m)
{
	struct iovec *iov = c->iov;
	size_t skip = qp->hdr_len;
	const char *why = "";
	unsigned i = 0;

	if (c->nin) {
		vq_mark_broken(&qp->tx,
			       "TX chain has %u device-writable segments (VIRTIO 1.2 "
			       "5.1.6.2: transmit buffers are device-readable)",
			       c->nin);
		return -EIO;
	}
	if (c->out_len < qp->hdr_len) {
		vq_mark_broken(&qp->tx,
			       "TX chain of %u bytes is shorter than the %u-byte "
			       "virtio-net header (VIRTIO 1.2 5.1.6.2)",
			       c->out_len, qp->hdr_len);
		return -EIO;
	}
	/* One read of the header; the backend gets this checked copy, never the guest's bytes
	 * again (a guest rewriting the header under us changes nothing). */
	memset(h, 0, sizeof(*h));
	if (iov[0].iov_len >= VNET_HDR_LEN_V1 && qp->hdr_len == VNET_HDR_LEN_V1)
		memcpy(h, iov[0].iov_base, VNET_HDR_LEN_V1); /* the usual layout, inlined */
	else
		vq_iov_to_buf(iov, c->nout, 0, h, qp->hdr_len);
	if (vnet_hdr_check(h, c->out_len - qp->hdr_len, qp->features, &why)) {
		qp->stats.tx_drop_bad_hdr++;
		vt_debug("%s: dropped TX frame: %s", qp->name, why);
		return 0;
	}
	while (i < c->nout && skip >= iov[i].iov_len)
		skip -= iov[i++].iov_len;
	if (i < c->nout) {
		iov[i].iov_base = (uint8_t *)iov[i].iov_base + skip;
		iov[i].iov_len -= skip;
	}
	/* c->iov starts one slot into the caller's array, so slot i - 1 relative to it is free. */
	iov[(int)i - 1].iov_base = h;
	iov[(int)i - 1].iov_len = qp->hdr_len;
	m->iov = &iov[(int)i - 1];
	m->niov = (int)(c->nout - i + 1);
	return 1;
}

/* Count what the backend said about one frame. -EAGAIN: backend full, nothing sent. */
static int tx_result(struct vnet_qp *qp, ssize_t n, size_t frame_len)
{
	if (n == -EAGAIN)
		return -EAGAIN;
	if (n < 0) {
		qp->stats.tx_drop_backend++;
		vt_debug("%s: backend refused a %zu-byte frame: %s", qp->name, frame_len,
			 strerror((int)-n));
		return 0;
	}
	qp->stats.tx_packets++;
	qp->stats.tx_bytes += frame_len;
	return 0;
}

/* Send one popped chain. 0: consumed (sent or dropped), -EAGAIN: backend full, -EIO: broken. */
static int tx_one(struct vnet_qp *qp, const struct vq_chain *c)
{
	struct vnet_hdr h;
	struct be_msg m;
	int r = tx_prepare(qp, c, &h, &m);

	if (r <= 0)
		return r;
	return tx_result(qp, qp->be_ops->tx(qp->be, m.iov, m.niov), c->out_len - qp->hdr_len);
}

/*
 * The ring looked empty. Outside poll mode, ask for a kick and look again: a chain the driver
 * added before it saw the request would otherwise wait for a kick that never comes (VIRTIO 1.2
 * 2.7.10). True: chains arrived after all (kicks are off again), go on processing.
 */
static bool ring_dry_recheck(struct vnet_qp *qp, struct vq *vq)
{
	if (qp->poll_mode || !vq_enable_notify(vq))
		return false;
	vq_disable_notify(vq);
	return true;
}

void vnet_qp_peer_stuck(struct vnet_qp *qp)
{
	struct vnet_owner *o = qp->owner;

	if (o && !__atomic_exchange_n(&o->halted, true, __ATOMIC_ACQ_REL) && o->stuck)
		o->stuck(o);
}

/* Common start of a handler. False: nothing to do, return *status. */
static bool handler_enter(struct vnet_qp *qp, struct vq *vq, int *status)
{
	*status = vq_is_broken(vq) ? -EIO : VNET_IDLE;
	if (vq_is_broken(vq) || !vq->ready || vnet_qp_halted(qp))
		return false;
	if (!qp->poll_mode) /* kicks are noise while we are draining the ring anyway */
		vq_disable_notify(vq);
	return true;
}

/*
 * Frames one handler run may move: the configured budget, but at most half the ring. A run that
 * takes every buffer the driver has out before publishing any makes the two sides take turns
 * instead of overlapping (testpmd io round trip, 64 B, ring of 128: budget 64 15.8 Mpps,
 * budget 128 10.4).
 */
static unsigned run_budget(const struct vq *vq, unsigned budget)
{
	unsigned half = vq->num / 2 ? vq->num / 2 : 1;

	return budget < half ? budget : half;
}

static int handle_tx_single(struct vnet_qp *qp)
{
	struct vq *vq = &qp->tx;
	unsigned pkts = 0, budget = run_budget(vq, qp->cfg.tx_budget_pkts);
	size_t bytes = 0;
	int status = VNET_IDLE;

	for (;;) {
		struct vq_chain c;
		int r;

		if (pkts >= budget || bytes >= qp->cfg.tx_budget_bytes) {
			status = VNET_MORE;
			break;
		}
		r = vq_pop(vq, &c, qp->tx_iov + 1, VQ_MAX_IOV);
		if (r < 0) {
			status = -EIO;
			break;
		}
		if (r == 0) {
			if (ring_dry_recheck(qp, vq))
				continue;
			break;
		}
		r = tx_one(qp, &c);
		if (r == -EAGAIN) {
			vq_discard(vq, 1);
			qp->stats.tx_blocked++;
			status = VNET_WAIT_BACKEND;
			break;
		}
		if (r < 0) {
			status = -EIO;
			break;
		}
		vq_push(vq, c.head, 0);
		pkts++;
		bytes += c.out_len;
	}
	return status;
}

/* ---- TX in bursts: one backend call for up to VNET_BURST frames --------------------------- */

/*
 * Pop up to VNET_BURST chains, then prepare them. Two passes so that the cache misses overlap:
 * the descriptors and frames are lines the driver wrote on another CPU, and checking a header
 * right after its pop would wait for each miss in turn; popping first starts every header's load
 * (a prefetch) while the next descriptors are read. *n chains popped, *nsend frames to send;
 * returns VNET_IDLE (ring empty), VNET_MORE (burst or budget full) or -EIO.
 */
static int txb_fill(struct vnet_qp *qp, unsigned budget, size_t budget_bytes, unsigned *n,
		    unsigned *nsend)
{
	struct vnet_burst *b = qp->burst;
	struct vq *vq = &qp->tx;
	unsigned used = 0; /* iov slots taken: used <= TXB_IOV always */
	size_t bytes = 0;
	int status = VNET_MORE;

	*n = *nsend = 0;
	while (*n < VNET_BURST && *n < budget && bytes < budget_bytes) {
		struct vq_chain *c = &b->chain[*n];
		unsigned left = TXB_IOV - used, max;
		int r;

		if (left < 2) /* no room for a header slot and one segment: the burst is full */
			break;
		max = left - 1 < VQ_MAX_IOV ? left - 1 : VQ_MAX_IOV;
		r = vq_pop(vq, c, b->iov + used + 1, max);
		if (r == -ENOBUFS) /* a long chain: it leads the next burst, which has room */
			break;
		if (r < 0)
			return -EIO;
		if (r == 0) {
			if (ring_dry_recheck(qp, vq))
				continue;
			status = VNET_IDLE;
			break;
		}
		if (c->nout)
			__builtin_prefetch(c->iov[0].iov_base);
		(*n)++;
		used += 1 + c->nout + c->nin; /* <= 1 + max, so still <= TXB_IOV */
		bytes += c->out_len;
	}
	for (unsigned k = 0; k < *n; k++) {
		const struct vq_chain *c = &b->chain[k];
		int r = tx_prepare(qp, c, &b->hdr[*nsend], &b->msg[*nsend]);

		if (r < 0)
			return -EIO;
		b->msg_of[k] = r ? (int)(*nsend)++ : -1;
	}
	return status;
}

/* Send the prepared frames; the backend's burst call, or one call per frame if it has none. */
static void txb_send(struct vnet_qp *qp, unsigned nsend)
{
	struct be_msg *m = qp->burst->msg;
	bool full = false;

	if (!nsend)
		return;
	if (qp->be_ops->tx_burst(qp->be, m, (int)nsend) == (int)nsend)
		return;
	for (unsigned i = 0; i < nsend; i++) {
		m[i].res = full ? -EAGAIN : qp->be_ops->tx(qp->be, m[i].iov, m[i].niov);
		full |= m[i].res == -EAGAIN;
	}
}

static int handle_tx_burst(struct vnet_qp *qp)
{
	struct vnet_burst *b = qp->burst;
	struct vq *vq = &qp->tx;
	unsigned pkts = 0, budget = run_budget(vq, qp->cfg.tx_budget_pkts);
	size_t bytes = 0;
	int status = VNET_MORE;

	while (status == VNET_MORE) {
		unsigned n, nsend, keep;

		if (pkts >= budget || bytes >= qp->cfg.tx_budget_bytes)
			break;
		status = txb_fill(qp, budget - pkts, qp->cfg.tx_budget_bytes - bytes, &n, &nsend);
		/* Broken mid-burst: msg_of[] holds only the chains prepared before the break (the
		 * rest is stale). A broken queue is dead until the driver resets it (VIRTIO 1.2
		 * 2.1.2: DEVICE_NEEDS_RESET), so nothing of this burst is sent or completed. */
		if (status < 0)
			break;
		txb_send(qp, nsend);
		/* Chains up to the last one the backend took are done; a backend-full tail goes
		 * back to the ring, to be popped again when the backend is writable. */
		keep = n;
		while (keep &&
		       (b->msg_of[keep - 1] < 0 || b->msg[b->msg_of[keep - 1]].res == -EAGAIN))
			keep--;
		if (keep < n && nsend && b->msg[nsend - 1].res == -EAGAIN) {
			for (unsigned k = keep; k < n; k++)
				if (b->msg_of[k] < 0)
					qp->stats
					    .tx_drop_bad_hdr--; /* counted again when re-popped */
			vq_discard(vq, n - keep);
			qp->stats.tx_blocked++;
			status = VNET_WAIT_BACKEND;
		} else {
			keep = n;
		}
		for (unsigned k = 0; k < keep; k++) {
			if (b->msg_of[k] >= 0) {
				ssize_t res = b->msg[b->msg_of[k]].res;

				/* -EAGAIN before a frame the backend took: it cannot go back in
				 * order, so it counts as a backend drop. */
				(void)tx_result(qp, res == -EAGAIN ? -ENOBUFS : res,
						b->chain[k].out_len - qp->hdr_len);
			}
			vq_push(vq, b->chain[k].head, 0);
			bytes += b->chain[k].out_len;
		}
		pkts += keep;
	}
	return status;
}

int vnet_handle_tx(struct vnet_qp *qp)
{
	struct vq *vq = &qp->tx;
	int status;

	if (!handler_enter(qp, vq, &status))
		return status;
	status = qp->burst && qp->be_ops->tx_burst ? handle_tx_burst(qp) : handle_tx_single(qp);
	vq_notify(vq);
	if (vq->fd_stuck) {
		vnet_qp_peer_stuck(qp);
		return -EIO;
	}
	return status;
}

/* ---- RX ---------------------------------------------------------------------------------- */

enum { GATHER_OK = 0, GATHER_EMPTY = 1, GATHER_NEVER = 2 };

/*
 * The RX buffers popped in this handler run and not used yet: qp->rx_bufs[at, n), their iovecs
 * in qp->rx_iov[0, niov) in pop order. Frames take buffers from `at` on, in ring order; a run
 * that is moving a stream pops a burst of them before reading the first frame, so the loads of
 * the guest's descriptors (cache misses: the driver wrote them on another CPU) overlap. What is
 * left at the end of the run goes back to the ring (the newest chains: vq_discard).
 */
struct rx_pool {
	unsigned at, n, niov;
};

/* A frame's buffers: qp->rx_bufs[b0, b0 + nb), always starting at the pool's `at`. */
struct gather {
	unsigned b0, nb;
	unsigned iov0; /* first iovec in qp->rx_iov */
	unsigned niov; /* iovecs of the nb buffers */
	size_t cap;    /* writable bytes in them */
};

static void window_start(const struct vnet_qp *qp, struct rx_pool *p, struct gather *g)
{
	if (p->at == p->n) /* everything popped is used: start the scratch arrays over */
		p->at = p->n = p->niov = 0;
	*g = (struct gather){.b0 = p->at, .iov0 = p->at < p->n ? qp->rx_bufs[p->at].iov_at : 0};
}

/* Move the unused buffers to the front of the scratch arrays, to make room for more iovecs. */
static void pool_compact(struct vnet_qp *qp, struct rx_pool *p, struct gather *g)
{
	unsigned nb = p->n - p->at, iov0 = nb ? qp->rx_bufs[p->at].iov_at : p->niov;

	memmove(qp->rx_bufs, qp->rx_bufs + p->at, nb * sizeof(*qp->rx_bufs));
	memmove(qp->rx_iov, qp->rx_iov + iov0, (p->niov - iov0) * sizeof(*qp->rx_iov));
	for (unsigned k = 0; k < nb; k++)
		qp->rx_bufs[k].iov_at -= iov0;
	p->n = nb;
	p->niov -= iov0;
	p->at = 0;
	g->b0 = 0;
	g->iov0 = 0;
}

/* Pop one more RX buffer into the pool. */
static int pool_pop(struct vnet_qp *qp, struct rx_pool *p, struct gather *g)
{
	struct vq *vq = &qp->rx;
	struct vnet_rxbuf *b;
	struct vq_chain c;
	int r;

	if (p->n >= VQ_MAX_IOV || p->niov >= VQ_MAX_IOV) {
		if (!p->at)
			return GATHER_NEVER;
		pool_compact(qp, p, g);
	}
	r = vq_pop(vq, &c, qp->rx_iov + p->niov, VQ_MAX_IOV - p->niov);
	if (r == -ENOBUFS && p->at) { /* more segments than the room left: make room, retry */
		pool_compact(qp, p, g);
		r = vq_pop(vq, &c, qp->rx_iov + p->niov, VQ_MAX_IOV - p->niov);
	}
	if (r == -ENOBUFS)
		return GATHER_NEVER;
	if (r < 0)
		return -EIO;
	if (r == 0)
		return GATHER_EMPTY;
	if (c.nout) {
		vq_mark_broken(vq,
			       "RX buffer has %u device-readable segments (VIRTIO 1.2 "
			       "5.1.6.3: receive buffers are device-writable)",
			       c.nout);
		return -EIO;
	}
	if (c.in_len < qp->hdr_len) {
		vq_mark_broken(vq,
			       "RX buffer of %u bytes cannot hold the %u-byte header "
			       "(VIRTIO 1.2 5.1.6.3.1)",
			       c.in_len, qp->hdr_len);
		return -EIO;
	}
	/* The frame's first line, after the header, for the copy a few frames later (io 64 B:
	 * see be_scatter_frame). */
	if (qp->rx_iov[p->niov].iov_len > qp->hdr_len)
		vq_prefetch_w(vq, (const uint8_t *)qp->rx_iov[p->niov].iov_base + qp->hdr_len);
	b = &qp->rx_bufs[p->n++];
	b->head = c.head;
	b->len = c.in_len;
	b->iov_at = p->niov;
	b->niov = c.nin;
	p->niov += c.nin;
	return GATHER_OK;
}

/* Pop up to n buffers ahead, for the frames of a burst. */
static int pool_fill(struct vnet_qp *qp, struct rx_pool *p, struct gather *g, unsigned n)
{
	while (p->n - p->at < n) {
		int r = pool_pop(qp, p, g);

		if (r < 0)
			return r;
		if (r != GATHER_OK)
			break;
	}
	return 0;
}

/* Grow the frame's buffers until they hold `need` bytes: the pool's next ones, then new pops. */
static int rx_gather(struct vnet_qp *qp, struct rx_pool *p, struct gather *g, size_t need)
{
	while (g->cap < need) {
		const struct vnet_rxbuf *b;

		/* Without MRG_RXBUF a frame goes into exactly one chain (VIRTIO 1.2 5.1.6.3). */
		if (g->nb && !qp->mergeable)
			return GATHER_NEVER;
		if (g->nb >= qp->rx.num)
			return GATHER_NEVER;
		if (g->b0 + g->nb == p->n) {
			int r = pool_pop(qp, p, g);

			if (r != GATHER_OK)
				return r;
		}
		b = &qp->rx_bufs[g->b0 + g->nb++];
		g->niov += b->niov;
		g->cap += b->len;
	}
	return GATHER_OK;
}

/* VIRTIO 1.2 5.1.6.4: num_buffers = buffers used (1 without MRG_RXBUF). Written after the frame
 * and before the used index publishes it, as vhost-net does. */
static void rx_set_num_buffers(struct vnet_qp *qp, const struct gather *g, unsigned k)
{
	uint16_t nb = htole16((uint16_t)k);
	const struct iovec *iov = qp->rx_iov + g->iov0;
	size_t at = offsetof(struct vnet_hdr, num_buffers);

	if (iov[0].iov_len >= at + sizeof(nb)) {
		uint8_t *dst = (uint8_t *)iov[0].iov_base + at;
		uint16_t was;

		/* Not stored when unchanged: the line may stay shared (be_scatter_frame). */
		memcpy(&was, dst, sizeof(was));
		if (was != nb)
			memcpy(dst, &nb, sizeof(nb));
	} else
		vq_iov_from_buf(iov, qp->rx_bufs[g->b0].niov, at, &nb, sizeof(nb));
}

/*
 * Live migration: mark the pages of the frame's first nb buffers dirty. Only after the last
 * write to them (num_buffers): the frontend may collect and clear a mark and copy the page at
 * any moment, and a write after the mark it consumed would never reach the destination.
 */
static void rx_log_frame(struct vnet_qp *qp, const struct gather *g, unsigned nb, size_t len)
{
	const struct vnet_rxbuf *b = qp->rx_bufs + g->b0;

	for (unsigned k = 0; k < nb && len; k++) {
		size_t part = b[k].len < len ? b[k].len : len;

		gmem_log_iov(qp->rx.log, qp->rx.gm, qp->rx_iov + b[k].iov_at, b[k].niov, part);
		len -= part;
	}
}

/*
 * Live migration: a frame read into buffers it then does not use (dropped, or held until more
 * come) has still changed their pages. vhost-user asks the back-end to log every write to guest
 * memory, not only the buffers it returns; the audit in tests/test_migration.c checks that.
 */
static void rx_log_unused(struct vnet_qp *qp, const struct gather *g, unsigned niov, size_t len)
{
	if (qp->rx.log)
		gmem_log_iov(qp->rx.log, qp->rx.gm, qp->rx_iov + g->iov0, niov, len);
}

/* The frame (len bytes, header first) is in the gathered buffers: push the used entries for the
 * ones it filled and fix up num_buffers. Returns the buffers used; the rest stay in the pool. */
static unsigned rx_commit(struct vnet_qp *qp, const struct gather *g, size_t len)
{
	const struct vnet_rxbuf *b = qp->rx_bufs + g->b0;
	size_t left = len;
	unsigned k = 0;

	qp->stats.rx_packets++;
	qp->stats.rx_bytes += len - qp->hdr_len;
	if (len <= b[0].len && !qp->rx.log) {
		/* The common case: the frame filled part of one buffer. */
		vq_push(&qp->rx, b[0].head, (uint32_t)len);
		if (qp->hdr_len == VNET_HDR_LEN_V1)
			rx_set_num_buffers(qp, g, 1);
		return 1;
	}
	/* Used entries first into the ring (unpublished until vq_flush), counting buffers. */
	while (left && k < g->nb) {
		uint32_t part = b[k].len < left ? b[k].len : (uint32_t)left;

		vq_push(&qp->rx, b[k].head, part);
		left -= part;
		k++;
	}
	if (qp->hdr_len == VNET_HDR_LEN_V1)
		rx_set_num_buffers(qp, g, qp->mergeable ? k : 1);
	if (qp->rx.log)
		rx_log_frame(qp, g, k, len);
	return k;
}

/* Zero [from, to) of the frame laid out over iov. */
static void iov_zero(const struct iovec *iov, unsigned n, size_t from, size_t to)
{
	static const uint8_t zeros[ETH_ZLEN_];

	if (to > from)
		vq_iov_from_buf(iov, n, from, zeros, to - from);
}

/* Deliver the oldest held frame. 1 delivered or dropped, 0 not enough buffers, -EIO. */
static int rx_flush_one(struct vnet_qp *qp, struct rx_pool *p)
{
	const struct netq_frame *f = netq_peek(&qp->hold);
	struct gather g;
	int r;

	window_start(qp, p, &g);
	r = rx_gather(qp, p, &g, f->len);
	if (r < 0)
		return r;
	if (r == GATHER_EMPTY)
		return 0; /* the buffers stay in the pool for the next try */
	if (r == GATHER_NEVER) {
		qp->stats.rx_drop_too_big++;
	} else {
		vq_iov_from_buf(qp->rx_iov + g.iov0, g.niov, 0, f->data, f->len);
		p->at += rx_commit(qp, &g, f->len);
	}
	netq_pop(&qp->hold);
	return 1;
}

enum { READ_DONE = 1, READ_EMPTY = 0, READ_NOBUF = 2 };

/* Hold a frame that is half in the first `n` iovecs of g, half in the bounce buffer. */
static void rx_hold(struct vnet_qp *qp, const struct gather *g, unsigned n, size_t cap, size_t len)
{
	struct iovec *iov = qp->rx_iov + g->iov0;
	struct iovec saved = iov[n]; /* a later buffer's: restored, the buffer stays in the pool */
	int err;

	iov[n].iov_base = qp->bounce;
	iov[n].iov_len = len - cap;
	err = netq_push(&qp->hold, iov, n + 1, len);
	iov[n] = saved;
	if (err)
		qp->stats.rx_drop_hold_full++;
	else
		qp->stats.rx_held++;
}

/* Have the backend read one frame into guest buffers; `ahead`: buffers to pop first. */
static int rx_read_one(struct vnet_qp *qp, struct rx_pool *p, unsigned ahead)
{
	size_t want = qp->mergeable ? qp->cfg.rx_cover : 1, len, first_cap;
	size_t min_len = qp->hdr_len + (qp->cfg.pad_short ? ETH_ZLEN_ : 0);
	unsigned first_niov;
	struct iovec *iov, saved;
	struct gather g;
	ssize_t n;
	int r;

	if (want < min_len)
		want = min_len;
	if (qp->be_ops->rx_empty && qp->be_ops->rx_empty(qp->be))
		return READ_EMPTY;
	window_start(qp, p, &g);
	if (ahead > 1 && p->at == p->n) {
		r = pool_fill(qp, p, &g, ahead);
		if (r < 0)
			return r;
	}
	r = rx_gather(qp, p, &g, want);
	if (r < 0)
		return r;
	if (g.nb == 0)
		return READ_NOBUF;
	/* The bounce buffer goes after the frame's iovecs, over the next buffer's first one. */
	iov = qp->rx_iov + g.iov0;
	saved = iov[g.niov];
	iov[g.niov].iov_base = qp->bounce;
	iov[g.niov].iov_len = BOUNCE_SIZE;
	n = qp->be_ops->rx(qp->be, iov, (int)g.niov + 1);
	len = (size_t)n;
	/* Pad a short frame to ETH_ZLEN (pad-short), as QEMU's net layer does. */
	if (n >= 0 && len >= qp->hdr_len && len < min_len) {
		iov_zero(iov, g.niov + 1, len, min_len);
		len = min_len;
	}
	iov[g.niov] = saved;
	if (n < 0) {
		if (n != -EAGAIN && n != -EINTR) {
			qp->stats.rx_drop_backend++;
			vt_debug("%s: backend read: %s", qp->name, strerror((int)-n));
		}
		return READ_EMPTY;
	}
	if (len < qp->hdr_len || len >= g.cap + BOUNCE_SIZE) {
		/* No room for a header, or possibly truncated: never deliver a cut frame. */
		qp->stats.rx_drop_too_big++;
		rx_log_unused(qp, &g, g.niov, len < g.cap ? len : g.cap);
		return READ_DONE;
	}
	if (len <= g.cap) {
		p->at += rx_commit(qp, &g, len);
		return READ_DONE;
	}
	/* The tail is in the bounce buffer: find more buffers for it. */
	first_niov = g.niov;
	first_cap = g.cap;
	r = rx_gather(qp, p, &g, len);
	if (r < 0)
		return r;
	if (r == GATHER_OK) {
		vq_iov_from_buf(qp->rx_iov + g.iov0, g.niov, first_cap, qp->bounce,
				len - first_cap);
		p->at += rx_commit(qp, &g, len);
		return READ_DONE;
	}
	rx_log_unused(qp, &g, first_niov, first_cap);
	if (r == GATHER_NEVER) {
		qp->stats.rx_drop_too_big++;
		return READ_DONE;
	}
	/* Not enough buffers yet: hold the frame and stop reading until the guest refills. */
	rx_hold(qp, &g, first_niov, first_cap, len);
	return READ_NOBUF;
}

/* Give back the buffers popped and not used. */
static void pool_release(struct vnet_qp *qp, struct rx_pool *p)
{
	if (p->n > p->at)
		vq_discard(&qp->rx, p->n - p->at);
	p->at = p->n = p->niov = 0;
}

int vnet_handle_rx(struct vnet_qp *qp)
{
	struct vq *vq = &qp->rx;
	uint64_t pkts0 = qp->stats.rx_packets, bytes0 = qp->stats.rx_bytes;
	struct rx_pool pool = {0};
	unsigned loops = 0, moved, budget;
	int status;

	if (!handler_enter(qp, vq, &status))
		return status;
	budget = run_budget(vq, qp->cfg.rx_budget_pkts);
	for (;;) {
		unsigned left = budget - loops;
		int r;

		if (loops++ >= budget || qp->stats.rx_bytes - bytes0 >= qp->cfg.rx_budget_bytes) {
			status = VNET_MORE;
			break;
		}
		if (qp->hold.count)
			r = rx_flush_one(qp, &pool) == 0 ? READ_NOBUF : READ_DONE;
		else
			r = rx_read_one(qp, &pool, qp->rx_ahead < left ? qp->rx_ahead : left);
		if (r < 0) {
			status = -EIO;
			break;
		}
		if (r == READ_DONE)
			continue;
		if (r == READ_EMPTY)
			break;
		/* Out of guest buffers: wait for a refill, unless one raced with us. */
		if (ring_dry_recheck(qp, vq))
			continue;
		if (!qp->poll_mode)
			qp->stats.rx_paused++;
		status = VNET_WAIT_GUEST;
		break;
	}
	pool_release(qp, &pool);
	/* Pop as many buffers ahead as the last run moved frames: a stream gets bursts, a trickle
	 * (or an empty backend that cannot say so without a read) pops one at a time. */
	moved = (unsigned)(qp->stats.rx_packets - pkts0);
	qp->rx_ahead = moved < 1 ? 1 : moved > VNET_BURST ? VNET_BURST : moved;
	if (moved)
		vq_notify(vq);
	if (vq->fd_stuck)
		vnet_qp_peer_stuck(qp);
	return vq_is_broken(vq) ? -EIO : status;
}

int vnet_rx_frame(struct vnet_qp *qp, const void *frame, size_t len)
{
	struct iovec iov = {.iov_base = (void *)frame, .iov_len = len};
	uint64_t pkts0 = qp->stats.rx_packets;
	struct rx_pool pool = {0};
	int err;

	if (len < qp->hdr_len || len > BOUNCE_SIZE)
		return -EINVAL;
	if (vnet_qp_halted(qp))
		return -EIO;
	err = netq_push(&qp->hold, &iov, 1, len);
	if (err) {
		qp->stats.rx_drop_hold_full++;
		return err;
	}
	qp->stats.rx_held++;
	while (netq_peek(&qp->hold) && rx_flush_one(qp, &pool) > 0)
		;
	pool_release(qp, &pool);
	if (qp->stats.rx_packets != pkts0)
		vq_notify(&qp->rx);
	if (qp->rx.fd_stuck)
		vnet_qp_peer_stuck(qp);
	return 0;
}
