/* SPDX-License-Identifier: MIT */
/*
 * virtio-net device, one queue pair at a time (VIRTIO 1.2 section 5.1): guest TX chains go to the
 * backend with their header, backend frames go into the guest's RX buffers (mergeable or not),
 * with a net queue in between (netq.h). No threads and no sockets: a worker (src/core) or an
 * embedding VMM calls the handlers when the kick eventfds or the backend fd are ready.
 */
#ifndef VIRTAP_VNET_H
#define VIRTAP_VNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtap/backend.h"
#include "virtap/netq.h"
#include "virtap/vnet_defs.h"
#include "virtap/vq.h"

#define VNET_MAX_QUEUE_PAIRS 16
/* Frames per backend burst call (backends with tx_burst). */
#define VNET_BURST 32

struct vnet_config {
	unsigned rx_budget_pkts; /* frames per RX handler run, at most half the ring (QEMU: 50) */
	size_t rx_budget_bytes;	 /* bytes per RX handler run */
	unsigned tx_budget_pkts; /* chains per TX handler run, at most half the ring */
	size_t tx_budget_bytes;	 /* bytes per TX handler run */
	unsigned hold_frames;	 /* net queue bound, frames */
	unsigned rx_cover;	 /* guest bytes gathered before the backend's read; the rest of a
				    larger frame lands in a bounce buffer and is copied */
	bool pad_short;		 /* pad frames under 60 bytes with zeros */
};

/* Defaults: 128 frames and 512 KiB per handler run (vhost-net weighs a run in packets and bytes
 * the same way), a hold of 32 frames, 1536 bytes gathered per frame, no padding. */
void vnet_config_default(struct vnet_config *cfg);

struct vnet_stats {
	uint64_t rx_packets, rx_bytes;
	uint64_t tx_packets, tx_bytes;
	uint64_t rx_drop_too_big;   /* frame larger than the buffers the guest offers */
	uint64_t rx_drop_hold_full; /* net queue full */
	uint64_t rx_drop_backend;   /* backend read error */
	uint64_t rx_held;	    /* frames that went through the net queue */
	uint64_t rx_paused;	    /* times reading stopped because the guest had no buffers */
	uint64_t tx_drop_bad_hdr;   /* header the device refuses (vnet_hdr_check) */
	uint64_t tx_drop_backend;   /* backend write error other than "full" */
	uint64_t tx_blocked;	    /* times the backend said "full" */
};

/* What a handler wants next from whoever drives it. */
enum vnet_status {
	VNET_IDLE = 0,	      /* nothing left; wait for the next event */
	VNET_MORE = 1,	      /* budget used up with work left; call again after the others */
	VNET_WAIT_GUEST = 2,  /* RX: no guest buffers; stop polling the backend until RX kick */
	VNET_WAIT_BACKEND = 3 /* TX: backend full; poll it for writability */
};

struct vnet_rxbuf {
	uint16_t head;
	uint32_t len;	 /* writable bytes in the chain */
	unsigned iov_at; /* first iovec in qp->rx_iov */
	unsigned niov;
};

/*
 * The owner of one or more queue pairs (a vhost-user port), as the datapath sees it. When a
 * descriptor the frontend passed blocks a thread of ours (pfd.h), every pair of that owner stops
 * at once, on whatever worker it is, and the owner is told (on that worker's thread) so that it
 * can drop the frontend.
 */
struct vnet_owner {
	void (*stuck)(struct vnet_owner *o);
	bool halted; /* read by the handlers; set once by vnet_qp_peer_stuck */
};

struct vnet_qp {
	unsigned index;
	char name[40];
	struct vq rx; /* virtqueue 2 * index */
	struct vq tx; /* virtqueue 2 * index + 1 */
	const struct be_ops *be_ops;
	void *be;
	struct vnet_config cfg;
	uint64_t features;
	unsigned hdr_len;
	bool mergeable;
	/* Set by a busy-polling worker: handlers neither ask for kicks when a ring runs dry nor
	 * turn them off on entry; the worker does both when it switches modes. */
	bool poll_mode;
	unsigned rx_ahead; /* RX buffers to pop ahead of a burst (frames the last run moved) */
	struct vnet_owner *owner; /* NULL: none (an embedder's pair that nothing halts) */
	struct netq hold;
	struct vnet_stats stats;
	/*
	 * Scratch, allocated once. Guest-derived counts index all of it; the bounds, and where
	 * they are enforced (vnet.c):
	 * - rx_iov, VQ_MAX_IOV + 1: the RX pool's buffers' iovecs, at most VQ_MAX_IOV (pool_pop
	 *   pops into the room left, compacting or stopping first), plus one slot after a frame's
	 *   last iovec for the bounce buffer (rx_read_one, rx_hold);
	 * - rx_bufs, VQ_MAX_IOV: one per pooled buffer (pool_pop stops at VQ_MAX_IOV);
	 * - tx_iov, VQ_MAX_IOV + 1: one chain of at most VQ_MAX_IOV segments (vq_pop's bound)
	 *   after one slot for our header copy (tx_prepare);
	 * - burst: see struct vnet_burst (txb_fill).
	 */
	struct iovec *rx_iov;
	struct vnet_rxbuf *rx_bufs;
	struct iovec *tx_iov;
	uint8_t *bounce;	  /* VNET_MAX_FRAME + header */
	struct vnet_burst *burst; /* burst scratch, if the backend has burst calls */
};

int vnet_qp_init(struct vnet_qp *qp, unsigned index, const struct vnet_config *cfg,
		 const struct be_ops *ops, void *be);
void vnet_qp_destroy(struct vnet_qp *qp);
/* Apply negotiated features: header size, mergeable buffers, backend offloads. */
int vnet_qp_set_features(struct vnet_qp *qp, uint64_t features);

/* A descriptor of this pair's frontend blocked us: halt every pair of the owner and tell it
 * (once). */
void vnet_qp_peer_stuck(struct vnet_qp *qp);
static inline bool vnet_qp_halted(const struct vnet_qp *qp)
{
	return qp->owner && __atomic_load_n(&qp->owner->halted, __ATOMIC_ACQUIRE);
}

/* Guest TX: pop chains and write them to the backend. */
int vnet_handle_tx(struct vnet_qp *qp);
/* Guest RX: flush held frames, then read the backend into guest buffers. */
int vnet_handle_rx(struct vnet_qp *qp);
/* Deliver a frame from elsewhere (an embedding VMM): header + frame; held if no buffers. */
int vnet_rx_frame(struct vnet_qp *qp, const void *frame, size_t len);

/* Header size for a feature set: 12 with VERSION_1 or MRG_RXBUF, 10 otherwise. */
unsigned vnet_hdr_len(uint64_t features);
/* Device features virtio-net offers on top of a backend's: the rings' and ours. */
uint64_t vnet_offered_features(uint64_t backend_features);
/*
 * Check a header the driver sent with a frame of frame_len bytes (VIRTIO 1.2 5.1.6.2.1).
 * Pure: a fuzzer calls it directly. 0 if acceptable, -EINVAL with *why set otherwise.
 */
int vnet_hdr_check(const struct vnet_hdr *h, size_t frame_len, uint64_t features, const char **why);

#endif
