// SPDX-License-Identifier: MIT
/*
 * Fake guest driver. Behaves like a virtio driver (free list, avail ring publishing with a
 * release store, used ring consumption with an acquire load) unless a test asks for raw writes.
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fakeguest.h"

#define F_NEXT	   1
#define F_WRITE	   2
#define F_INDIRECT 4

int fg_init(struct fg *g, uint64_t size)
{
	int dupfd, err;

	memset(g, 0, sizeof(*g));
	gmem_init(&g->gm);
	g->memfd = memfd_create("fakeguest", MFD_CLOEXEC);
	if (g->memfd < 0)
		return -errno;
	if (ftruncate(g->memfd, (off_t)size) < 0)
		return -errno;
	g->mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, g->memfd, 0);
	if (g->mem == MAP_FAILED)
		return -errno;
	g->size = size;
	g->brk = 4096; /* keep gpa FG_GPA_BASE itself unused */
	dupfd = dup(g->memfd);
	/* The device maps the same fd separately, at a different address, as vhost-user does. */
	err = gmem_add_fd(&g->gm, FG_GPA_BASE, size, 0x7f0000000000ull, dupfd, 0);
	if (err)
		close(dupfd);
	return err;
}

void fg_destroy(struct fg *g)
{
	gmem_clear(&g->gm);
	if (g->mem && g->mem != MAP_FAILED)
		munmap(g->mem, g->size);
	if (g->memfd >= 0)
		close(g->memfd);
	memset(g, 0, sizeof(*g));
	g->memfd = -1;
}

uint64_t fg_alloc(struct fg *g, uint64_t size, uint64_t align)
{
	uint64_t at = (g->brk + align - 1) & ~(align - 1);

	if (at + size > g->size)
		abort(); /* test bug: guest RAM too small */
	g->brk = at + size;
	memset(g->mem + at, 0, size);
	return FG_GPA_BASE + at;
}

void *fg_va(struct fg *g, uint64_t gpa)
{
	return g->mem + (gpa - FG_GPA_BASE);
}

static volatile uint16_t *u16p(struct fg *g, uint64_t gpa)
{
	return (volatile uint16_t *)fg_va(g, gpa);
}

int fg_vq_init(struct fg *g, struct fg_vq *q, uint16_t num)
{
	memset(q, 0, sizeof(*q));
	q->g = g;
	q->num = num;
	q->desc = fg_alloc(g, 16ull * num, 4096);
	q->avail = fg_alloc(g, 6 + 2ull * num, 2);
	q->used = fg_alloc(g, 6 + 8ull * num, 4096);
	q->free_next = calloc(num, sizeof(uint16_t));
	q->chain_len = calloc(num, sizeof(uint16_t));
	for (unsigned i = 0; i < num; i++)
		q->free_next[i] = (uint16_t)(i + 1);
	q->free_head = 0;
	q->nfree = num;
	q->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return (q->free_next && q->chain_len && q->kick_fd >= 0 && q->call_fd >= 0) ? 0 : -ENOMEM;
}

void fg_vq_destroy(struct fg_vq *q)
{
	free(q->free_next);
	free(q->chain_len);
	if (q->kick_fd >= 0)
		close(q->kick_fd);
	if (q->call_fd >= 0)
		close(q->call_fd);
	q->free_next = q->chain_len = NULL;
	q->kick_fd = q->call_fd = -1;
}

int fg_vq_attach(struct fg_vq *q, struct vq *vq, const char *name, uint64_t features)
{
	vq_init(vq);
	vq->kick_fd = q->kick_fd;
	vq->call_fd = q->call_fd;
	return vq_setup(vq, &q->g->gm, name, q->num, q->desc, q->avail, q->used, features);
}

void fg_raw_desc(struct fg_vq *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	uint8_t *d = fg_va(q->g, q->desc + 16ull * i);
	uint64_t a = htole64(addr);
	uint32_t l = htole32(len);
	uint16_t f = htole16(flags), n = htole16(next);

	memcpy(d, &a, 8);
	memcpy(d + 8, &l, 4);
	memcpy(d + 12, &f, 2);
	memcpy(d + 14, &n, 2);
}

void fg_raw_table(struct fg *g, uint64_t gpa, unsigned i, uint64_t addr, uint32_t len,
		  uint16_t flags, uint16_t next)
{
	uint8_t *d = fg_va(g, gpa + 16ull * i);
	uint64_t a = htole64(addr);
	uint32_t l = htole32(len);
	uint16_t f = htole16(flags), n = htole16(next);

	memcpy(d, &a, 8);
	memcpy(d + 8, &l, 4);
	memcpy(d + 12, &f, 2);
	memcpy(d + 14, &n, 2);
}

void fg_raw_avail(struct fg_vq *q, uint16_t slot, uint16_t head)
{
	*u16p(q->g, q->avail + 4 + 2ull * (slot % q->num)) = htole16(head);
}

void fg_raw_avail_idx(struct fg_vq *q, uint16_t idx)
{
	__atomic_store_n(u16p(q->g, q->avail + 2), htole16(idx), __ATOMIC_RELEASE);
}

int fg_add(struct fg_vq *q, const struct fg_buf *bufs, unsigned n, bool indirect)
{
	unsigned need = indirect ? 1 : n;
	uint16_t head = q->free_head, i = head;

	if (n == 0 || q->nfree < need)
		return -ENOSPC;
	if (indirect) {
		uint64_t tbl = fg_alloc(q->g, 16ull * n, 16);

		for (unsigned k = 0; k < n; k++)
			fg_raw_table(
			    q->g, tbl, k, bufs[k].gpa, bufs[k].len,
			    (uint16_t)((k + 1 < n ? F_NEXT : 0) | (bufs[k].write ? F_WRITE : 0)),
			    (uint16_t)(k + 1 < n ? k + 1 : 0));
		q->free_head = q->free_next[head];
		fg_raw_desc(q, head, tbl, 16 * n, F_INDIRECT, 0);
	} else {
		for (unsigned k = 0; k < n; k++) {
			uint16_t next = q->free_next[i];

			fg_raw_desc(
			    q, i, bufs[k].gpa, bufs[k].len,
			    (uint16_t)((k + 1 < n ? F_NEXT : 0) | (bufs[k].write ? F_WRITE : 0)),
			    next);
			if (k + 1 < n)
				i = next;
			else
				q->free_head = next;
		}
	}
	q->nfree = (uint16_t)(q->nfree - need);
	q->chain_len[head] = (uint16_t)need;
	fg_raw_avail(q, q->avail_idx++, head);
	return head;
}

void fg_publish(struct fg_vq *q, bool kick)
{
	uint64_t one = 1;

	/* release: ring entries and descriptors before the index (the device's acquire pairs). */
	fg_raw_avail_idx(q, q->avail_idx);
	if (kick && write(q->kick_fd, &one, sizeof(one)) < 0)
		abort();
}

unsigned fg_used_pending(struct fg_vq *q)
{
	uint16_t idx = le16toh(__atomic_load_n(u16p(q->g, q->used + 2), __ATOMIC_ACQUIRE));

	return (uint16_t)(idx - q->last_used);
}

int fg_used(struct fg_vq *q, uint32_t *id, uint32_t *len)
{
	uint8_t *e;
	uint32_t v;
	uint16_t head, i;

	if (!fg_used_pending(q))
		return 0;
	e = fg_va(q->g, q->used + 4 + 8ull * (q->last_used % q->num));
	memcpy(&v, e, 4);
	head = (uint16_t)le32toh(v);
	*id = head;
	memcpy(&v, e + 4, 4);
	*len = le32toh(v);
	q->last_used++;
	/* Return the chain's descriptors to the free list. */
	i = head;
	for (unsigned k = 1; k < q->chain_len[head]; k++) {
		uint16_t n;

		memcpy(&n, (uint8_t *)fg_va(q->g, q->desc + 16ull * i) + 14, 2);
		i = le16toh(n);
	}
	q->free_next[i] = q->free_head;
	q->free_head = head;
	q->nfree = (uint16_t)(q->nfree + q->chain_len[head]);
	return 1;
}

uint64_t fg_wait_call(struct fg_vq *q, int ms)
{
	struct pollfd p = {.fd = q->call_fd, .events = POLLIN};
	uint64_t v = 0;

	if (poll(&p, 1, ms) == 1 && read(q->call_fd, &v, sizeof(v)) == sizeof(v))
		return v;
	return 0;
}

void fg_set_used_event(struct fg_vq *q, uint16_t v)
{
	*u16p(q->g, q->avail + 4 + 2ull * q->num) = htole16(v);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void fg_set_avail_flags(struct fg_vq *q, uint16_t flags)
{
	*u16p(q->g, q->avail) = htole16(flags);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

uint16_t fg_used_flags(struct fg_vq *q)
{
	return le16toh(*u16p(q->g, q->used));
}

uint16_t fg_avail_event(struct fg_vq *q)
{
	return le16toh(*u16p(q->g, q->used + 4 + 8ull * q->num));
}
