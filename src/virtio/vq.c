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
#include <string.h>
#include <unistd.h>

#include "virtap/log.h"
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

static inline void st32(volatile uint8_t *p, uint32_t v)
{
	__atomic_store_n((volatile uint32_t *)p, htole32(v), __ATOMIC_RELAXED);
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
	vt_err("%s: queue broken: %s", vq->name, why);
}

void vq_init(struct vq *vq)
{
	memset(vq, 0, sizeof(*vq));
	vq->kick_fd = -1;
	vq->call_fd = -1;
	snprintf(vq->name, sizeof(vq->name), "vq");
}

static bool is_pow2(unsigned v)
{
	return v && !(v & (v - 1));
}

int vq_setup(struct vq *vq, const struct gmem *gm, const char *name, uint16_t num,
	     uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa, uint64_t features)
{
	int kick = vq->kick_fd, call = vq->call_fd;

	memset(vq, 0, sizeof(*vq));
	vq->kick_fd = kick;
	vq->call_fd = call;
	snprintf(vq->name, sizeof(vq->name), "%s", name ? name : "vq");
	/* VIRTIO 1.2 2.7: queue size is a power of 2, at most 32768. */
	if (!is_pow2(num) || num > VQ_MAX_SIZE) {
		vt_err("%s: queue size %u is not a power of two <= %u", vq->name, num, VQ_MAX_SIZE);
		return -EINVAL;
	}
	/* VIRTIO 1.2 2.7 "Virtqueue Alignment": descriptors 16, available 2, used 4. */
	if ((desc_gpa & 15) || (avail_gpa & 1) || (used_gpa & 3)) {
		vt_err("%s: misaligned rings desc=%#llx avail=%#llx used=%#llx", vq->name,
		       (unsigned long long)desc_gpa, (unsigned long long)avail_gpa,
		       (unsigned long long)used_gpa);
		return -EINVAL;
	}
	vq->desc = gmem_ptr(gm, desc_gpa, (uint64_t)DESC_SIZE * num, GMEM_READ);
	vq->avail = gmem_ptr(gm, avail_gpa, 6 + 2ull * num, GMEM_READ);
	vq->used = gmem_ptr(gm, used_gpa, 6 + 8ull * num, GMEM_READ | GMEM_WRITE);
	if (!vq->desc || !vq->avail || !vq->used) {
		vt_err("%s: a ring is not inside one guest memory region", vq->name);
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
	return n < 0 ? 0 : (unsigned)n;
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

/* Add one data descriptor to the chain. */
static int walk_data(struct vq *vq, struct walk *w, const struct desc *d, struct vq_chain *c,
		     struct iovec *iov, unsigned max_iov)
{
	bool wr = d->flags & DESC_F_WRITE;
	unsigned used = c->nout + c->nin;
	int n;

	if (d->len == 0) {
		vq_mark_broken(vq, "zero-length descriptor at %#llx", (unsigned long long)d->addr);
		return -EIO;
	}
	/* VIRTIO 1.2 2.7.4.2: device-writable descriptors come after all device-readable ones. */
	if (!wr && w->seen_write) {
		vq_mark_broken(vq, "device-readable descriptor after a device-writable one "
				   "(VIRTIO 1.2 2.7.4.2)");
		return -EIO;
	}
	w->seen_write |= wr;
	w->total += d->len;
	if (w->total > vq->max_chain_bytes) {
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

int vq_pop(struct vq *vq, struct vq_chain *c, struct iovec *iov, unsigned max_iov)
{
	uint16_t head;
	int err;

	if (vq->broken || !vq->ready)
		return vq->broken ? -EIO : 0;
	if (max_iov > VQ_MAX_IOV) /* the per-chain segment bound holds whatever the caller has */
		max_iov = VQ_MAX_IOV;
	if (vq->last_avail == vq->avail_shadow) {
		err = avail_refresh(vq);
		if (err <= 0)
			return err;
	}
	head = ld16(vq->avail + 4 + 2u * (vq->last_avail & (vq->num - 1)), __ATOMIC_RELAXED);
	/* VIRTIO 1.2 2.7.6: the available ring holds descriptor heads, each < queue size. */
	if (head >= vq->num) {
		vq_mark_broken(vq, "avail ring entry %u holds head %u >= queue size %u",
			       vq->last_avail, head, vq->num);
		return -EIO;
	}
	*c = (struct vq_chain){.head = head, .iov = iov};
	err = walk_chain(vq, head, c, iov, max_iov);
	if (err)
		return err;
	vq->last_avail++;
	vq->stats.chains++;
	return 1;
}

void vq_discard(struct vq *vq, unsigned n)
{
	vq->last_avail = (uint16_t)(vq->last_avail - n);
	vq->stats.chains -= n;
}

void vq_push(struct vq *vq, uint16_t head, uint32_t len)
{
	uint64_t off = 4 + 8u * (vq->used_idx & (vq->num - 1));
	volatile uint8_t *e = vq->used + off;

	if (vq->broken)
		return;
	st32(e, head);
	st32(e + 4, len);
	log_used(vq, off, 8);
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
	uint64_t one = 1;

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
	if (vq->call_fd >= 0 && write(vq->call_fd, &one, sizeof(one)) < 0) {
		/* eventfd only fails on counter overflow: the driver is already signalled. */
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
