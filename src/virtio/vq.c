// SPDX-License-Identifier: MIT
/*
 * Split virtqueue, device side. The rings live in memory the guest can change at any moment, so:
 * every ring field is loaded exactly once into a local, validated, and only the local is used
 * (no double fetch); every guest address goes through gmem_map; every index is bounded before it
 * indexes anything. A rule broken by the driver marks the queue broken, logs the rule once, and
 * makes every later call a no-op: the queue never crashes, spins or touches memory outside the map.
 */
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "virtap/log.h"
#include "virtap/pfd.h"
#include "virtap/vq.h"

#define DESC_F_NEXT	     1
#define DESC_F_WRITE	     2
#define DESC_F_INDIRECT	     4
#define AVAIL_F_NO_INTERRUPT 1
#define USED_F_NO_NOTIFY     1
#define DESC_SIZE	     16
#define MAX_TABLE_PIECES     8

/* A descriptor after its single load from guest memory; fields already in host order. */
struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static inline uint16_t ld16(const volatile uint8_t *p, int order)
{
	return le16toh(__atomic_load_n((const volatile uint16_t *)p, order));
}

static inline void st16(volatile uint8_t *p, uint16_t v, int order)
{
	__atomic_store_n((volatile uint16_t *)p, htole16(v), order);
}

/* Decode 16 raw little-endian descriptor bytes. */
static struct desc desc_decode(uint64_t lo, uint64_t hi)
{
	struct desc d;

	lo = le64toh(lo);
	hi = le64toh(hi);
	d.addr = lo;
	d.len = (uint32_t)hi;
	d.flags = (uint16_t)(hi >> 32);
	d.next = (uint16_t)(hi >> 48);
	return d;
}

/* The one load of descriptor i of the ring's own table. */
static struct desc desc_read(const struct vq *vq, unsigned i)
{
	const volatile uint64_t *p = (const volatile uint64_t *)(vq->desc + (size_t)i * DESC_SIZE);

	return desc_decode(__atomic_load_n(p, __ATOMIC_RELAXED),
			   __atomic_load_n(p + 1, __ATOMIC_RELAXED));
}

/* Lines a driver or frontend can cause again and again (GET_VRING_BASE and a new kick restart a
 * ring it broke): at most VQ_LOG_BURST per VQ_LOG_INTERVAL_MS per ring, through vq->rl. */
#define VQ_LOG_BURST	   2
#define VQ_LOG_INTERVAL_MS 10000

static void vq_err(const struct vq *vq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void vq_err(const struct vq *vq, const char *fmt, ...)
{
	unsigned missed = 0;
	va_list ap;

	if (vq->rl && !vt_ratelimit(vq->rl, VQ_LOG_BURST, VQ_LOG_INTERVAL_MS, &missed))
		return;
	if (missed)
		vt_err("%s: %u more lines about this queue left out", vq->name, missed);
	va_start(ap, fmt);
	vt_vlog(VT_LOG_ERR, fmt, ap);
	va_end(ap);
}

void vq_mark_broken(struct vq *vq, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	if (vq->broken)
		return;
	vq->broken = true;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	vq_err(vq, "%s: queue broken: %s", vq->name, why);
}

void vq_init(struct vq *vq)
{
	memset(vq, 0, sizeof(*vq));
	vq->kick_fd = -1;
	vq->call_fd = -1;
	snprintf(vq->name, sizeof(vq->name), "vq");
}

/* PREFETCHW: CPUID 0x80000001, ECX bit 8. Asked once per queue setup (not on the datapath). */
static bool cpu_has_prefetchw(void)
{
#if defined(__x86_64__)
	unsigned a, b, c = 0, d;

	return __get_cpuid(0x80000001, &a, &b, &c, &d) && (c & (1u << 8));
#else
	return false;
#endif
}

static bool is_pow2(unsigned v)
{
	return v && !(v & (v - 1));
}

int vq_setup(struct vq *vq, const struct gmem *gm, const char *name, uint16_t num,
	     uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa, uint64_t features)
{
	int kick = vq->kick_fd, call = vq->call_fd;
	struct vt_ratelimit *rl = vq->rl;

	memset(vq, 0, sizeof(*vq));
	vq->kick_fd = kick;
	vq->call_fd = call;
	vq->rl = rl;
	snprintf(vq->name, sizeof(vq->name), "%s", name ? name : "vq");
	vq->prefetchw = cpu_has_prefetchw();
	/* VIRTIO 1.2 2.7: queue size is a power of 2, at most 32768. */
	if (!is_pow2(num) || num > VQ_MAX_SIZE) {
		vq_err(vq, "%s: queue size %u is not a power of two <= %u", vq->name, num,
		       VQ_MAX_SIZE);
		return -EINVAL;
	}
	/* VIRTIO 1.2 2.7 "Virtqueue Alignment": descriptors 16, available 2, used 4. */
	if ((desc_gpa & 15) || (avail_gpa & 1) || (used_gpa & 3)) {
		vq_err(vq, "%s: misaligned rings desc=%#llx avail=%#llx used=%#llx", vq->name,
		       (unsigned long long)desc_gpa, (unsigned long long)avail_gpa,
		       (unsigned long long)used_gpa);
		return -EINVAL;
	}
	vq->desc = gmem_ptr(gm, desc_gpa, (uint64_t)DESC_SIZE * num, GMEM_READ);
	vq->avail = gmem_ptr(gm, avail_gpa, 6 + 2ull * num, GMEM_READ);
	vq->used = gmem_ptr(gm, used_gpa, 6 + 8ull * num, GMEM_READ | GMEM_WRITE);
	if (!vq->desc || !vq->avail || !vq->used) {
		vq_err(vq, "%s: a ring is not inside one guest memory region", vq->name);
		return -EFAULT;
	}
	vq->gm = gm;
	vq->num = num;
	vq->event_idx = features & (1ull << VQ_F_EVENT_IDX);
	vq->indirect = features & (1ull << VQ_F_INDIRECT_DESC);
	vq->max_chain_bytes = VQ_DEFAULT_MAX_CHAIN_BYTES;
	vq->ready = true;
	return 0;
}

void vq_set_log(struct vq *vq, struct gmem_log *log, uint64_t used_gpa, bool used_gpa_valid)
{
	vq->log = log;
	vq->log_used_gpa = used_gpa;
	vq->log_used = log && used_gpa_valid;
}

/* Mark len bytes at offset off of the used ring dirty (live migration). */
static inline void log_used(struct vq *vq, uint64_t off, uint64_t len)
{
	if (vq->log_used)
		gmem_log_mark(vq->log, vq->log_used_gpa + off, len);
}

void vq_set_base(struct vq *vq, uint16_t last_avail)
{
	vq->last_avail = last_avail;
	vq->avail_shadow = last_avail;
	/* The driver's used idx continues from where the previous owner left it. */
	vq->used_idx = vq->used ? ld16(vq->used + 2, __ATOMIC_ACQUIRE) : last_avail;
	vq->signalled_valid = false;
}

/* ---- inflight tracking (vhost-user "Inflight I/O tracking", split rings) ------------------ */

/* QueueRegionSplit header fields and DescStateSplit entries (byte offsets). */
#define INFL_VERSION	 8
#define INFL_DESC_NUM	 10
#define INFL_LAST_BATCH	 12
#define INFL_USED_IDX	 14
#define INFL_HDR	 16
#define INFL_DESC	 16 /* bytes per DescStateSplit */
#define INFL_D_INFLIGHT	 0
#define INFL_D_NEXT	 6
#define INFL_D_COUNTER	 8
#define INFL_VERSION_CUR 1

struct infl_ent {
	uint64_t counter;
	uint16_t head;
};

static inline volatile uint8_t *infl_desc(const struct vq_inflight *in, unsigned head)
{
	return in->region + INFL_HDR + (size_t)INFL_DESC * (head & (in->num - 1u));
}

static inline void infl_mark(const struct vq_inflight *in, unsigned head, uint8_t v)
{
	/* release: a set flag is never seen before the counter written ahead of it (and a clear
	 * one never before the used index that made it so); pairs with the acquire load of the
	 * flag in vq_set_inflight, run by a later device (another process after a crash). */
	__atomic_store_n(infl_desc(in, head) + INFL_D_INFLIGHT, v, __ATOMIC_RELEASE);
}

size_t vq_inflight_size(uint16_t num)
{
	return ((size_t)INFL_HDR + (size_t)INFL_DESC * num + 63) & ~(size_t)63;
}

void vq_inflight_free(struct vq_inflight *in)
{
	free(in->resubmit);
	free(in->popped);
	free(in->batch);
	free(in->scratch);
	memset(in, 0, sizeof(*in));
}

int vq_inflight_init(struct vq_inflight *in, volatile void *region, uint16_t num)
{
	memset(in, 0, sizeof(*in));
	if (!is_pow2(num) || num > VQ_MAX_SIZE)
		return -EINVAL;
	in->region = region;
	in->num = num;
	in->counter = 1;
	in->resubmit = calloc(num, sizeof(*in->resubmit));
	in->popped = calloc(num, sizeof(*in->popped));
	in->batch = calloc(num, sizeof(*in->batch));
	in->scratch = calloc(num, sizeof(struct infl_ent));
	if (!in->resubmit || !in->popped || !in->batch || !in->scratch) {
		vq_inflight_free(in);
		return -ENOMEM;
	}
	return 0;
}

static int infl_cmp(const void *a, const void *b)
{
	const struct infl_ent *x = a, *y = b;

	return x->counter < y->counter ? -1 : x->counter > y->counter;
}

/* vhost-user inflight, "When reconnecting" step 1: the previous device may have died between
 * publishing a used batch and clearing its flags. The batch is as long as the used index moved
 * past the region's copy; its heads are a list from last_batch_head through next. */
static void infl_settle_batch(struct vq *vq, struct vq_inflight *in)
{
	volatile uint8_t *r = in->region;
	uint16_t used = vq->used_idx, seen = ld16(r + INFL_USED_IDX, __ATOMIC_ACQUIRE);
	uint16_t n = (uint16_t)(used - seen), i = ld16(r + INFL_LAST_BATCH, __ATOMIC_RELAXED);

	if (!n)
		return;
	/* A batch never holds more than the queue (each head once); the list is the frontend's
	 * memory, so its length and every index are bounded here. */
	for (unsigned k = 0; k < n && k < in->num && i < in->num; k++) {
		volatile uint8_t *d = infl_desc(in, i);

		infl_mark(in, i, 0);
		i = ld16(d + INFL_D_NEXT, __ATOMIC_RELAXED);
	}
	st16(r + INFL_USED_IDX, used, __ATOMIC_RELEASE);
}

int vq_set_inflight(struct vq *vq, struct vq_inflight *in)
{
	volatile uint8_t *r = in->region;
	struct infl_ent *ent = in->scratch;
	uint16_t version, desc_num;
	unsigned n = 0;

	vq->infl = NULL;
	if (!vq->ready || !r || in->num != vq->num)
		return -EINVAL;
	version = ld16(r + INFL_VERSION, __ATOMIC_ACQUIRE);
	desc_num = ld16(r + INFL_DESC_NUM, __ATOMIC_RELAXED);
	if (version == 0) {
		/* vhost-user inflight: version 0 is an uninitialized area (GET_INFLIGHT_FD gave it
		 * zeroed); nothing is in flight. desc_num is the queue size. */
		st16(r + INFL_DESC_NUM, vq->num, __ATOMIC_RELAXED);
		st16(r + INFL_LAST_BATCH, 0, __ATOMIC_RELAXED);
		st16(r + INFL_USED_IDX, vq->used_idx, __ATOMIC_RELAXED);
		st16(r + INFL_VERSION, INFL_VERSION_CUR, __ATOMIC_RELEASE);
	} else if (version != INFL_VERSION_CUR || desc_num != vq->num) {
		vq_err(
		    vq,
		    "%s: inflight area version %u for %u descriptors does not fit this ring of "
		    "%u (vhost-user inflight: version 1, desc_num is the queue size); not tracked",
		    vq->name, version, desc_num, vq->num);
		return -EINVAL;
	} else {
		infl_settle_batch(vq, in);
		/* Step 2: what is still marked in flight was taken and never used. */
		for (unsigned i = 0; i < vq->num; i++) {
			volatile uint8_t *d = infl_desc(in, i);

			if (!__atomic_load_n(d + INFL_D_INFLIGHT, __ATOMIC_ACQUIRE))
				continue;
			ent[n].head = (uint16_t)i;
			ent[n].counter = le64toh(__atomic_load_n(
			    (volatile uint64_t *)(d + INFL_D_COUNTER), __ATOMIC_RELAXED));
			n++;
		}
		/* ...handed out again in the order they were first taken. */
		qsort(ent, n, sizeof(*ent), infl_cmp);
		for (unsigned k = 0; k < n; k++) {
			in->resubmit[k] = ent[k].head;
			if (ent[k].counter >= in->counter)
				in->counter = ent[k].counter + 1;
		}
	}
	in->nresubmit = n;
	in->resubmit_at = 0;
	in->npopped = 0;
	in->nbatch = 0;
	in->last_batch_head = ld16(r + INFL_LAST_BATCH, __ATOMIC_RELAXED);
	/* Every chain the driver made available before this point was either used (used index) or
	 * is in flight: the next one to take from the avail ring comes after both. */
	vq->last_avail = vq->avail_shadow = (uint16_t)(vq->used_idx + n);
	vq->infl = in;
	return (int)n;
}

/* A chain was taken: from the avail ring (mark it, with its fetch order) or the resubmit list
 * (marked already). Remembered so that vq_discard can give it back. */
static void infl_take(struct vq *vq, uint16_t head, bool resub)
{
	struct vq_inflight *in = vq->infl;

	if (!resub) {
		__atomic_store_n((volatile uint64_t *)(infl_desc(in, head) + INFL_D_COUNTER),
				 htole64(in->counter++), __ATOMIC_RELAXED);
		infl_mark(in, head, 1);
	}
	in->popped[in->npopped++ & (in->num - 1u)] = (uint16_t)(head | (resub ? VQ_INFL_RESUB : 0));
}

uint16_t vq_stop(struct vq *vq)
{
	vq->ready = false;
	return vq->last_avail;
}

/* Re-read avail->idx. VIRTIO 1.2 2.7.6/2.7.13: the driver adds at most queue-size chains ahead. */
static int avail_refresh(struct vq *vq)
{
	/* acquire: pairs with the driver's write barrier before it stores avail->idx, so the ring
	 * entries and descriptors we read next are the ones it published. */
	uint16_t idx = ld16(vq->avail + 2, __ATOMIC_ACQUIRE);
	uint16_t pending = (uint16_t)(idx - vq->last_avail);

	if (pending > vq->num) {
		vq_mark_broken(vq,
			       "avail idx %u is %u ahead of %u, more than the queue size %u "
			       "(VIRTIO 1.2 2.7.13: at most queue size buffers outstanding)",
			       idx, pending, vq->last_avail, vq->num);
		return -EIO;
	}
	vq->avail_shadow = idx;
	return pending;
}

unsigned vq_avail_count(struct vq *vq)
{
	int n;

	if (vq->broken || !vq->ready)
		return 0;
	n = avail_refresh(vq);
	if (n < 0)
		return 0;
	if (vq->infl)
		n += (int)(vq->infl->nresubmit - vq->infl->resubmit_at);
	return (unsigned)n;
}

/* Walk state of one chain, kept apart from the queue until the chain is accepted. */
struct walk {
	struct iovec tbl[MAX_TABLE_PIECES]; /* indirect table, mapped */
	int tbl_pieces;
	unsigned tbl_n;	   /* entries in the indirect table, 0 if not in one */
	unsigned tbl_seen; /* entries visited in it */
	unsigned ndesc;	   /* ring descriptors visited */
	uint64_t total;	   /* bytes in the chain */
	bool seen_write;
};

static int table_read(struct walk *w, unsigned i, struct desc *d)
{
	uint64_t raw[2];

	if (vq_iov_to_buf(w->tbl, (unsigned)w->tbl_pieces, (size_t)i * DESC_SIZE, raw,
			  sizeof(raw)) != sizeof(raw))
		return -EFAULT;
	*d = desc_decode(raw[0], raw[1]);
	return 0;
}

/* Enter an indirect table described by d. VIRTIO 1.2 2.7.5.3.1 driver requirements. */
static int walk_indirect(struct vq *vq, struct walk *w, const struct desc *d)
{
	if (!vq->indirect) {
		vq_mark_broken(vq, "INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC "
				   "(VIRTIO 1.2 2.7.5.3.1)");
		return -EIO;
	}
	if (w->tbl_n) {
		vq_mark_broken(vq, "nested indirect table (VIRTIO 1.2 2.7.5.3.1: no INDIRECT "
				   "inside an indirect table)");
		return -EIO;
	}
	if (d->flags & DESC_F_NEXT) {
		vq_mark_broken(vq, "descriptor has both INDIRECT and NEXT (VIRTIO 1.2 2.7.5.3.1)");
		return -EIO;
	}
	if (d->len == 0 || d->len % DESC_SIZE) {
		vq_mark_broken(vq,
			       "indirect table length %u is not a non-zero multiple of 16 "
			       "(VIRTIO 1.2 2.7.5.3)",
			       d->len);
		return -EIO;
	}
	if (d->len / DESC_SIZE > VQ_MAX_IOV) {
		vq_mark_broken(vq, "indirect table of %u entries exceeds the limit of %u",
			       d->len / DESC_SIZE, VQ_MAX_IOV);
		return -EIO;
	}
	w->tbl_pieces = gmem_map(vq->gm, d->addr, d->len, GMEM_READ, w->tbl, MAX_TABLE_PIECES);
	if (w->tbl_pieces < 0) {
		vq_mark_broken(vq, "indirect table at %#llx+%u is outside guest memory",
			       (unsigned long long)d->addr, d->len);
		return -EIO;
	}
	w->tbl_n = d->len / DESC_SIZE;
	w->tbl_seen = 0;
	return 0;
}

/* Map one data descriptor into the chain's iovecs; total is the chain's byte count so far,
 * this descriptor included. Shared by the one-descriptor fast path and the full walk. */
static int map_data(struct vq *vq, const struct desc *d, uint64_t total, struct vq_chain *c,
		    struct iovec *iov, unsigned max_iov)
{
	bool wr = d->flags & DESC_F_WRITE;
	unsigned used = c->nout + c->nin;
	int n;

	if (d->len == 0) {
		vq_mark_broken(vq, "zero-length descriptor at %#llx", (unsigned long long)d->addr);
		return -EIO;
	}
	if (total > vq->max_chain_bytes) {
		vq_mark_broken(vq, "chain longer than %u bytes", vq->max_chain_bytes);
		return -EIO;
	}
	n = gmem_map_hint(vq->gm, &vq->gm_hint, d->addr, d->len, wr ? GMEM_WRITE : GMEM_READ,
			  iov + used, (int)(max_iov - used));
	if (n == -ENOBUFS) {
		if (max_iov < VQ_MAX_IOV)
			return -ENOBUFS; /* the caller's array is short, not the guest's fault */
		vq_mark_broken(vq, "chain maps to more than %u segments", VQ_MAX_IOV);
		return -EIO;
	}
	if (n < 0) {
		vq_mark_broken(vq, "descriptor %#llx+%u is outside guest memory%s",
			       (unsigned long long)d->addr, d->len, wr ? " (or not writable)" : "");
		return -EIO;
	}
	if (wr) {
		c->nin += (unsigned)n;
		c->in_len += d->len;
	} else {
		c->nout += (unsigned)n;
		c->out_len += d->len;
	}
	return 0;
}

/* A lone descriptor that is non-empty, within the chain limit and wholly inside the region of the
 * last mapping, with the right permission: map it without a call. False sends the caller to
 * map_data, which handles every other case and says what is wrong. */
static inline bool map_lone_fast(struct vq *vq, const struct desc *d, struct vq_chain *c,
				 struct iovec *iov)
{
	unsigned perm = d->flags & DESC_F_WRITE ? GMEM_WRITE : GMEM_READ;
	void *p;

	if (d->len > vq->max_chain_bytes)
		return false;
	p = gmem_hint_ptr(vq->gm, vq->gm_hint, d->addr, d->len, perm);
	if (!p)
		return false;
	iov[0].iov_base = p;
	iov[0].iov_len = d->len;
	if (perm == GMEM_WRITE) {
		c->nin = 1;
		c->in_len = d->len;
	} else {
		c->nout = 1;
		c->out_len = d->len;
	}
	return true;
}

/* Add one data descriptor of a multi-descriptor chain. */
static int walk_data(struct vq *vq, struct walk *w, const struct desc *d, struct vq_chain *c,
		     struct iovec *iov, unsigned max_iov)
{
	bool wr = d->flags & DESC_F_WRITE;

	/* VIRTIO 1.2 2.7.4.2: device-writable descriptors come after all device-readable ones. */
	if (!wr && w->seen_write) {
		vq_mark_broken(vq, "device-readable descriptor after a device-writable one "
				   "(VIRTIO 1.2 2.7.4.2)");
		return -EIO;
	}
	w->seen_write |= wr;
	w->total += d->len;
	return map_data(vq, d, w->total, c, iov, max_iov);
}

static int walk_chain(struct vq *vq, uint16_t head, struct vq_chain *c, struct iovec *iov,
		      unsigned max_iov)
{
	struct walk w; /* the mapped-table iovecs need no zeroing: tbl_n == 0 keeps them unused */
	unsigned i = head;
	struct desc d;
	int err;

	w.tbl_pieces = 0;
	w.tbl_n = w.tbl_seen = w.ndesc = 0;
	w.total = 0;
	w.seen_write = false;
	for (;;) {
		if (w.tbl_n) {
			/* VIRTIO 1.2 2.7.5.3.1: no chain longer than its table. */
			if (++w.tbl_seen > w.tbl_n) {
				vq_mark_broken(vq, "indirect chain loops (more than %u entries)",
					       w.tbl_n);
				return -EIO;
			}
			if (table_read(&w, i, &d)) {
				vq_mark_broken(vq, "indirect entry %u unreadable", i);
				return -EIO;
			}
		} else {
			/* VIRTIO 1.2 2.7.5.2: a chain longer than the queue size is a loop. */
			if (++w.ndesc > vq->num) {
				vq_mark_broken(vq,
					       "chain from head %u is longer than the queue "
					       "size %u (loop)",
					       head, vq->num);
				return -EIO;
			}
			d = desc_read(vq, i);
			c->ndesc++;
		}
		if (d.flags & DESC_F_INDIRECT) {
			err = walk_indirect(vq, &w, &d);
			if (err)
				return err;
			i = 0;
			continue;
		}
		err = walk_data(vq, &w, &d, c, iov, max_iov);
		if (err)
			return err;
		if (!(d.flags & DESC_F_NEXT))
			return 0;
		i = d.next;
		if (i >= (w.tbl_n ? w.tbl_n : vq->num)) {
			vq_mark_broken(vq, "descriptor next %u is past the %s of %u entries", i,
				       w.tbl_n ? "indirect table" : "ring",
				       w.tbl_n ? w.tbl_n : vq->num);
			return -EIO;
		}
	}
}

/* Pop the next chain still in flight from a previous device. */
static int infl_pop(struct vq *vq, struct vq_chain *c, struct iovec *iov, unsigned max_iov)
{
	struct vq_inflight *in = vq->infl;
	uint16_t head = in->resubmit[in->resubmit_at];
	int err;

	*c = (struct vq_chain){.head = head, .iov = iov};
	err = walk_chain(vq, head, c, iov, max_iov);
	if (err)
		return err;
	in->resubmit_at++;
	infl_take(vq, head, true);
	vq->stats.chains++;
	return 1;
}

/* The head the driver put in the avail ring at our next slot (VIRTIO 1.2 2.7.6), unchecked. */
static inline uint16_t avail_head(const struct vq *vq)
{
	return ld16(vq->avail + 4 + 2u * (vq->last_avail & (vq->num - 1)), __ATOMIC_RELAXED);
}

/*
 * Start loading the descriptor of the next published chain while the caller works on this one:
 * the driver wrote it on another CPU, so the first touch is a cache miss. Only a hint: the head
 * is masked into the table (a prefetch never faults) and read again, and checked, when popped.
 */
static inline void prefetch_next(const struct vq *vq)
{
	uint16_t next;

	if (vq->last_avail == vq->avail_shadow)
		return;
	next = avail_head(vq);
	__builtin_prefetch((const void *)(vq->desc + (size_t)(next & (vq->num - 1)) * DESC_SIZE));
}

int vq_pop(struct vq *vq, struct vq_chain *c, struct iovec *iov, unsigned max_iov)
{
	struct desc d;
	uint16_t head;
	int err;

	if (vq->broken || !vq->ready)
		return vq->broken ? -EIO : 0;
	if (max_iov > VQ_MAX_IOV) /* the per-chain segment bound holds whatever the caller has */
		max_iov = VQ_MAX_IOV;
	if (vq->infl && vq->infl->resubmit_at < vq->infl->nresubmit)
		return infl_pop(vq, c, iov, max_iov);
	if (vq->last_avail == vq->avail_shadow) {
		err = avail_refresh(vq);
		if (err <= 0)
			return err;
	}
	head = avail_head(vq);
	/* VIRTIO 1.2 2.7.6: the available ring holds descriptor heads, each < queue size. */
	if (head >= vq->num) {
		vq_mark_broken(vq, "avail ring entry %u holds head %u >= queue size %u",
			       vq->last_avail, head, vq->num);
		return -EIO;
	}
	*c = (struct vq_chain){.head = head, .iov = iov};
	d = desc_read(vq, head);
	if (!(d.flags & (DESC_F_NEXT | DESC_F_INDIRECT))) {
		/* The common chain of one descriptor: no walk state, same checks (a lone
		 * descriptor cannot loop, misorder or nest). */
		c->ndesc = 1;
		err = max_iov && map_lone_fast(vq, &d, c, iov)
			  ? 0
			  : map_data(vq, &d, d.len, c, iov, max_iov);
	} else {
		err = walk_chain(vq, head, c, iov, max_iov);
	}
	if (err)
		return err;
	if (vq->infl)
		infl_take(vq, head, false);
	vq->last_avail++;
	vq->stats.chains++;
	prefetch_next(vq);
	return 1;
}

/* Inflight: undo the last n takes, newest first. A chain from the avail ring is unmarked and
 * its slot taken again later; one from the resubmit list goes back on it. */
static void infl_discard(struct vq *vq, unsigned n)
{
	struct vq_inflight *in = vq->infl;

	for (unsigned k = 0; k < n && in->npopped; k++) {
		uint16_t h = in->popped[--in->npopped & (in->num - 1u)];

		if (h & VQ_INFL_RESUB) {
			in->resubmit_at--;
		} else {
			infl_mark(in, h, 0);
			vq->last_avail--;
		}
	}
}

void vq_discard(struct vq *vq, unsigned n)
{
	if (vq->infl)
		infl_discard(vq, n);
	else
		vq->last_avail = (uint16_t)(vq->last_avail - n);
	vq->stats.chains -= n;
}

/* Inflight, "When supplying used buffers": chain the head into the batch list (desc[i].next =
 * last_batch_head, last_batch_head = i) before the used index can publish it. */
static void infl_push(struct vq *vq, uint16_t head)
{
	struct vq_inflight *in = vq->infl;

	if (in->nbatch == in->num)
		vq_flush(vq); /* a batch holds each head at most once; settle this one first */
	st16(infl_desc(in, head) + INFL_D_NEXT, in->last_batch_head, __ATOMIC_RELAXED);
	in->last_batch_head = head & (in->num - 1u);
	st16(in->region + INFL_LAST_BATCH, in->last_batch_head, __ATOMIC_RELAXED);
	in->batch[in->nbatch++] = head;
}

/* ...and once the used index is out: clear the batch's flags, then record that index. */
static void infl_flush(struct vq *vq)
{
	struct vq_inflight *in = vq->infl;

	for (unsigned k = 0; k < in->nbatch; k++)
		infl_mark(in, in->batch[k], 0);
	in->nbatch = 0;
	/* release: after the cleared flags; pairs with the acquire in infl_settle_batch. */
	st16(in->region + INFL_USED_IDX, vq->used_idx, __ATOMIC_RELEASE);
}

void vq_push_tracked(struct vq *vq, uint16_t head, uint32_t len)
{
	if (vq->broken)
		return;
	if (vq->infl)
		infl_push(vq, head);
	log_used(vq, vq_used_store(vq, head, len), 8);
	vq->used_idx++;
}

void vq_flush(struct vq *vq)
{
	if (vq->broken || !vq->used)
		return;
	/* release: the used entries above become visible before the index; pairs with the
	 * driver's read barrier after it loads used->idx. */
	st16(vq->used + 2, vq->used_idx, __ATOMIC_RELEASE);
	log_used(vq, 2, 2);
	if (vq->infl && vq->infl->nbatch)
		infl_flush(vq);
}

static bool need_notify(struct vq *vq)
{
	uint16_t new = vq->used_idx, old = vq->signalled_used;
	bool valid = vq->signalled_valid;

	/* Full barrier: our used->idx store must be visible before we read the driver's
	 * suppression state; pairs with the driver's barrier between writing used_event (or
	 * clearing NO_INTERRUPT) and re-checking used->idx. Without it both sides can sleep. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	vq->signalled_used = new;
	vq->signalled_valid = true;
	if (vq->event_idx) {
		/* VIRTIO 1.2 2.7.7.2: notify when used idx passes used_event. */
		uint16_t ev = ld16(vq->avail + 4 + 2u * vq->num, __ATOMIC_RELAXED);

		return !valid || (uint16_t)(new - ev - 1) < (uint16_t)(new - old);
	}
	/* VIRTIO 1.2 2.7.7.2: without EVENT_IDX, flags bit 0 asks us not to interrupt. */
	return !(ld16(vq->avail, __ATOMIC_RELAXED) & AVAIL_F_NO_INTERRUPT);
}

bool vq_notify(struct vq *vq)
{
	if (vq->broken || !vq->ready)
		return false;
	vq_flush(vq);
	if (vq->signalled_valid && vq->signalled_used == vq->used_idx)
		return false; /* nothing new since the last decision */
	if (!need_notify(vq)) {
		vq->stats.notifies_suppressed++;
		return false;
	}
	vq->stats.notifies++;
	if (vq->call_fd < 0)
		return true;
	/* -EAGAIN: the counter is full, so the driver is signalled already. */
	if (pfd_write_u64(vq->call_fd, 1) == -ETIMEDOUT) {
		vq->fd_stuck = true;
		vq_mark_broken(vq, "the call eventfd blocked (the frontend made it blocking and "
				   "full; vhost-user: call fds are the backend's to signal)");
	}
	return true;
}

void vq_disable_notify(struct vq *vq)
{
	if (vq->broken || !vq->ready || vq->event_idx)
		return; /* with EVENT_IDX, not moving avail_event is what suppresses kicks */
	st16(vq->used, USED_F_NO_NOTIFY, __ATOMIC_RELAXED);
	log_used(vq, 0, 2);
}

bool vq_enable_notify(struct vq *vq)
{
	if (vq->broken || !vq->ready)
		return false;
	if (vq->event_idx) { /* VIRTIO 1.2 2.7.10: kick when avail idx moves past avail_event */
		st16(vq->used + 4 + 8u * vq->num, vq->avail_shadow, __ATOMIC_RELAXED);
		log_used(vq, 4 + 8u * vq->num, 2);
	} else {
		st16(vq->used, 0, __ATOMIC_RELAXED);
		log_used(vq, 0, 2);
	}
	/* Full barrier: publish the request before re-checking avail->idx; pairs with the
	 * driver's barrier between storing avail->idx and reading our suppression state. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return ld16(vq->avail + 2, __ATOMIC_ACQUIRE) != vq->avail_shadow;
}

size_t vq_iov_from_buf(const struct iovec *iov, unsigned n, size_t off, const void *buf, size_t len)
{
	const uint8_t *src = buf;
	size_t done = 0;

	for (unsigned i = 0; i < n && done < len; i++) {
		size_t chunk;

		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		chunk = iov[i].iov_len - off;
		if (chunk > len - done)
			chunk = len - done;
		memcpy((uint8_t *)iov[i].iov_base + off, src + done, chunk);
		done += chunk;
		off = 0;
	}
	return done;
}

size_t vq_iov_to_buf(const struct iovec *iov, unsigned n, size_t off, void *buf, size_t len)
{
	uint8_t *dst = buf;
	size_t done = 0;

	for (unsigned i = 0; i < n && done < len; i++) {
		size_t chunk;

		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		chunk = iov[i].iov_len - off;
		if (chunk > len - done)
			chunk = len - done;
		memcpy(dst + done, (const uint8_t *)iov[i].iov_base + off, chunk);
		done += chunk;
		off = 0;
	}
	return done;
}
