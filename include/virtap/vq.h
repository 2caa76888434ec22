/* SPDX-License-Identifier: MIT */
/*
 * Split virtqueue, device side (VIRTIO 1.2 section 2.7). Pops descriptor chains from the available
 * ring into host iovecs, pushes used entries in batches and decides when the driver must be
 * notified. Knows nothing about networking. Every value read from the ring is copied once, then
 * validated, then used; a violation marks the queue broken (sticky) and logs once.
 */
#ifndef VIRTAP_VQ_H
#define VIRTAP_VQ_H

#include <endian.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "virtap/gmem.h"
#include "virtap/log.h"

#define VQ_MAX_SIZE 32768
/* Most host segments one chain may map to (Linux vhost's UIO_MAXIOV). */
#define VQ_MAX_IOV 1024
/* Default cap on a chain's total length: far above any frame (64 KiB + header). */
#define VQ_DEFAULT_MAX_CHAIN_BYTES (1u << 20)

/* Feature bits the virtqueue itself cares about (VIRTIO 1.2 section 6). */
#define VQ_F_INDIRECT_DESC 28
#define VQ_F_EVENT_IDX	   29
#define VQ_F_VERSION_1	   32
#define VQ_F_IN_ORDER	   35

/*
 * Inflight I/O tracking for one split ring (vhost-user "Inflight I/O tracking", protocol feature
 * INFLIGHT_SHMFD). The frontend keeps an area shared with us that records which chains we took
 * and have not returned, so that a restarted device (after a crash or SIGKILL) can take them up
 * again instead of leaking them. region is this ring's QueueRegionSplit in that area: a 16-byte
 * header (features u64, version u16, desc_num u16, last_batch_head u16, used_idx u16) and one
 * 16-byte DescStateSplit per descriptor (inflight u8, 5 padding, next u16, counter u64). The
 * rest is our private bookkeeping; it outlives the vq it is attached to, because the vhost-user
 * layer sets rings up again on every reconfiguration. The area is the frontend's memory: every
 * value read from it is read once and bounded before use.
 */
struct vq_inflight {
	volatile uint8_t *region;
	uint16_t num;	      /* queue size the region was laid out for */
	uint64_t counter;     /* fetch order of the next chain we take */
	uint16_t *resubmit;   /* heads still to hand out again, oldest fetch first */
	unsigned nresubmit;   /* entries in resubmit */
	unsigned resubmit_at; /* next one to hand out */
	uint16_t *popped;     /* the last num takes (head | VQ_INFL_RESUB), to undo vq_discard */
	uint32_t npopped;     /* takes since vq_set_inflight */
	uint16_t *batch;      /* heads pushed since the last flush */
	unsigned nbatch;
	uint16_t last_batch_head;
	void *scratch; /* num entries for ordering the resubmissions */
};

#define VQ_INFL_RESUB 0x8000u /* in popped[]: the take came from the resubmit list */

struct vq_stats {
	uint64_t chains;	      /* chains popped and not given back */
	uint64_t kicks;		      /* driver notifications received */
	uint64_t notifies;	      /* used buffer notifications sent */
	uint64_t notifies_suppressed; /* skipped because the driver asked so */
};

struct vq {
	/* set up by vq_setup, fixed while the queue runs */
	const struct gmem *gm;
	uint16_t num;
	bool event_idx;
	bool indirect;
	bool prefetchw; /* the CPU has PREFETCHW (vq_prefetch_w) */
	uint32_t max_chain_bytes;
	int kick_fd; /* driver -> device, -1 if none */
	int call_fd; /* device -> driver, -1 if none */
	/* Lines this queue logs about the driver's or frontend's mistakes go through rl when set
	 * (the owner keeps it across vq_init, so a driver that breaks the queue over and over
	 * cannot flood the log); kept by vq_setup like the fds. */
	struct vt_ratelimit *rl;
	char name[32];
	volatile uint8_t *desc;	 /* 16 * num bytes */
	volatile uint8_t *avail; /* flags, idx, ring[num], used_event */
	volatile uint8_t *used;	 /* flags, idx, ring[num], avail_event */

	/* device state */
	uint16_t last_avail;	 /* next avail ring slot we consume */
	uint16_t avail_shadow;	 /* last avail->idx we read */
	uint16_t used_idx;	 /* next used slot we fill (published by vq_flush) */
	uint16_t signalled_used; /* used idx at the last notification */
	bool signalled_valid;
	bool ready;
	bool broken;
	/* The call fd slept (the frontend made its eventfd blocking and full): broken, and the
	 * owner should drop the frontend (pfd.h). */
	bool fd_stuck;
	unsigned gm_hint; /* gmem region of the last descriptor (gmem_map_hint) */
	/* Live migration: pages the device writes are marked in log (NULL: not logging); the
	 * used ring's own writes only when the frontend gave its guest address. */
	struct gmem_log *log;
	uint64_t log_used_gpa;
	bool log_used;
	/* Inflight tracking (NULL: off, and the datapath pays one pointer test). */
	struct vq_inflight *infl;
	struct vq_stats stats;
};

/* One popped chain: iov[0, nout) are device-readable, iov[nout, nout + nin) device-writable. */
struct vq_chain {
	uint16_t head;
	uint16_t ndesc;
	unsigned nout, nin;
	uint32_t out_len, in_len;
	struct iovec *iov;
};

/* Zero the queue, with no kick/call eventfds. Call once before vq_setup. */
void vq_init(struct vq *vq);
/*
 * Attach a queue to rings at the given guest physical addresses. Checks size (power of two,
 * <= 32768), alignment (VIRTIO 1.2 2.7: desc 16, avail 2, used 4) and that each ring lies inside
 * one mapped region. features are the negotiated device features. -EINVAL/-EFAULT on failure.
 */
int vq_setup(struct vq *vq, const struct gmem *gm, const char *name, uint16_t num,
	     uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa, uint64_t features);
/* Log device writes to guest memory in log; the used ring's too if used_gpa_valid. */
void vq_set_log(struct vq *vq, struct gmem_log *log, uint64_t used_gpa, bool used_gpa_valid);
/* Bytes of one ring's inflight region for a queue of num entries (64-byte aligned). */
size_t vq_inflight_size(uint16_t num);
/* Private bookkeeping for a region of a queue of num entries (power of two). 0 or -ENOMEM. */
int vq_inflight_init(struct vq_inflight *in, volatile void *region, uint16_t num);
void vq_inflight_free(struct vq_inflight *in);
/*
 * Track this (set up, based) queue's chains in in's region. A fresh region (version 0) is
 * initialized. A region with history (a previous device died with chains taken) is recovered as
 * the vhost-user specification says: the last used batch is settled against the used ring's
 * index, the chains still marked in flight will be popped again first, in the order they were
 * first taken, and the avail position becomes used index + chains in flight (every chain taken
 * is either used or in flight), whatever vq_set_base said. Returns how many chains will be
 * handed out again, or -EINVAL (region laid out for another queue size, or not a version we
 * know: not tracked).
 */
int vq_set_inflight(struct vq *vq, struct vq_inflight *in);
/* Start from a given avail index (vhost-user SET_VRING_BASE). */
void vq_set_base(struct vq *vq, uint16_t last_avail);
/* Stop the queue; returns the next avail index to process (vhost-user GET_VRING_BASE). */
uint16_t vq_stop(struct vq *vq);

/*
 * Pop the next available chain into iov (at most max_iov entries).
 * Returns 1 with *c filled, 0 if the ring is empty, -EIO if the queue is (now) broken, or
 * -ENOBUFS if max_iov < VQ_MAX_IOV and the chain needs more (nothing consumed, not broken).
 */
int vq_pop(struct vq *vq, struct vq_chain *c, struct iovec *iov, unsigned max_iov);
/* Number of chains the driver has made available that we have not popped (re-reads avail idx). */
unsigned vq_avail_count(struct vq *vq);
/* Give back the last n popped chains; they will be popped again. */
void vq_discard(struct vq *vq, unsigned n);
/* Write the used entry (VIRTIO 1.2 2.7.8: id, then len) at used_idx, unpublished; its offset in
 * the used ring. For vq_push and vq_push_tracked only. */
static inline uint64_t vq_used_store(struct vq *vq, uint16_t head, uint32_t len)
{
	uint64_t off = 4 + 8u * (vq->used_idx & (vq->num - 1));
	volatile uint32_t *e = (volatile uint32_t *)(vq->used + off);

	__atomic_store_n(e, htole32(head), __ATOMIC_RELAXED);
	__atomic_store_n(e + 1, htole32(len), __ATOMIC_RELAXED);
	return off;
}
/*
 * Ask for the line at p in exclusive state ahead of stores to it, on lines the driver's CPU
 * read last (used entries, RX buffers): the stores then find the line owned instead of waiting
 * for the other CPU to give it up, with every later store queued behind them. On x86 this is
 * PREFETCHW (__builtin_prefetch(p, 1) is a plain read prefetch there without -mprfchw, which
 * leaves the store its own ownership request); CPUs without it get the read prefetch. A hint:
 * it never faults, so p may be any address.
 */
static inline void vq_prefetch_w(const struct vq *vq, const volatile void *p)
{
#if defined(__x86_64__)
	if (vq->prefetchw) {
		__asm__ volatile("prefetchw %0" : : "m"(*(const volatile char *)p));
		return;
	}
#else
	(void)vq;
#endif
	__builtin_prefetch((const void *)p, 1);
}
/* vq_push for a queue with inflight tracking or a dirty log (or broken). */
void vq_push_tracked(struct vq *vq, uint16_t head, uint32_t len);
/* Stage a used entry; nothing is visible to the driver until vq_flush. Inline: it runs once
 * per frame and direction, and the plain case is two stores. */
static inline void vq_push(struct vq *vq, uint16_t head, uint32_t len)
{
	if (vq->broken || vq->infl || vq->log_used) {
		vq_push_tracked(vq, head, len);
		return;
	}
	vq_used_store(vq, head, len);
	/* Entering a new group of 8 entries (a line's worth): take the next group's line, which
	 * the driver last read a ring ago (io 64 B: 15.7 -> 16.4 Mpps). */
	if (!(vq->used_idx & 7))
		vq_prefetch_w(vq, vq->used + 4 + 8u * ((vq->used_idx + 8u) & (vq->num - 1u)));
	vq->used_idx++;
}
/* Publish staged used entries with one index store. */
void vq_flush(struct vq *vq);
/* vq_flush, then signal call_fd unless the driver suppressed it. Returns true if signalled. The
 * write is guarded (pfd.h): a call fd that sleeps breaks the queue and sets fd_stuck. */
bool vq_notify(struct vq *vq);
/* Ask the driver not to kick us (we are polling the ring anyway). */
void vq_disable_notify(struct vq *vq);
/* Ask for kicks again; returns true if buffers arrived meanwhile (caller must process them). */
bool vq_enable_notify(struct vq *vq);

/* Mark the queue broken (sticky) and log why, once (through vq->rl when set). */
void vq_mark_broken(struct vq *vq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool vq_is_broken(const struct vq *vq)
{
	return vq->broken;
}

/* Copy len bytes from a buffer into iov starting at byte off; returns bytes copied. */
size_t vq_iov_from_buf(const struct iovec *iov, unsigned n, size_t off, const void *buf,
		       size_t len);
/* Copy up to len bytes out of iov starting at byte off; returns bytes copied. */
size_t vq_iov_to_buf(const struct iovec *iov, unsigned n, size_t off, void *buf, size_t len);

#endif
