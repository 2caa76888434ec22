/* SPDX-License-Identifier: MIT */
/*
 * Guest memory map: the regions a frontend shares with us (guest physical address, size, the
 * frontend's own virtual address for it, and our host mapping). Every access to guest memory in
 * virtap goes through gmem_map() or gmem_ptr(); nothing else does arithmetic on guest addresses.
 * Must never hand out a pointer or iovec that reaches outside a mapped region.
 */
#ifndef VIRTAP_GMEM_H
#define VIRTAP_GMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* vhost-user's VHOST_USER_MAX_RAM_SLOTS: the most regions a frontend may hand over. */
#define GMEM_MAX_REGIONS 509

enum {
	GMEM_READ = 1,	/* device reads guest memory (driver->device buffer) */
	GMEM_WRITE = 2, /* device writes guest memory (device->driver buffer) */
};

struct gmem_region {
	uint64_t gpa;	/* guest physical start */
	uint64_t size;	/* bytes, > 0 */
	uint64_t uva;	/* frontend's virtual address (vhost-user ring addresses use it) */
	uint8_t *host;	/* our mapping of gpa */
	void *map_base; /* what munmap() needs, NULL if not ours */
	size_t map_len;
	unsigned perm; /* GMEM_READ | GMEM_WRITE */
};

struct gmem_guard_owner;

struct gmem {
	struct gmem_guard_owner *owner; /* told of SIGBUS in our mappings (gmem_guard.h), or NULL */
	unsigned nregions;
	struct gmem_region regions[GMEM_MAX_REGIONS]; /* sorted by gpa, non-overlapping */
};

/* An empty map; set owner afterwards to have its fd mappings report SIGBUS to it. */
void gmem_init(struct gmem *gm);
/* Map [offset, offset + size) of fd (shared) as guest range [gpa, gpa + size), guarded against
 * SIGBUS (gmem_guard.h) on behalf of gm->owner. On success fd is closed (the mapping holds the
 * file); on failure it is left to the caller. -EINVAL
 * on overlap, wrap, zero size or a range past the end of a regular file (its pages would
 * SIGBUS), -ENOSPC when full (or the guard's table is), -errno of mmap. */
int gmem_add_fd(struct gmem *gm, uint64_t gpa, uint64_t size, uint64_t uva, int fd,
		uint64_t offset);
/* Add a range the caller already mapped (an embedding VMM, or the test driver). Not unmapped. */
int gmem_add_host(struct gmem *gm, uint64_t gpa, uint64_t size, uint64_t uva, void *host,
		  unsigned perm);
/* Remove the region that starts at gpa with this size; -ENOENT if there is none. */
int gmem_remove(struct gmem *gm, uint64_t gpa, uint64_t size);
/* Unmap and close everything. */
void gmem_clear(struct gmem *gm);

/*
 * Translate [gpa, gpa + len) into host iovecs, one per region crossed, with permission perm.
 * Returns the number of iovecs written (>= 1), or -EFAULT (zero length, wrap-around, a byte not
 * mapped, permission missing) or -ENOBUFS (more than max pieces).
 */
int gmem_map(const struct gmem *gm, uint64_t gpa, uint64_t len, unsigned perm, struct iovec *iov,
	     int max);
/*
 * gmem_map with a caller-owned hint (the index of the region that served the last call): the
 * datapath's buffers nearly always sit in the same region, so the common case is one bounds
 * check instead of a search. Same results and checks as gmem_map.
 */
int gmem_map_slow(const struct gmem *gm, unsigned *hint, uint64_t gpa, uint64_t len, unsigned perm,
		  struct iovec *iov, int max);

/* The one-region case of gmem_map: [gpa, gpa + len) wholly inside the region *hint names, with
 * perm. NULL sends the caller to the full lookup, which also says what is wrong. */
static inline void *gmem_hint_ptr(const struct gmem *gm, unsigned hint, uint64_t gpa, uint64_t len,
				  unsigned perm)
{
	const struct gmem_region *r;
	uint64_t off;

	if (hint >= gm->nregions)
		return NULL;
	r = &gm->regions[hint];
	off = gpa - r->gpa; /* off < size also rejects gpa below the region (it wraps) */
	if (!len || off >= r->size || len > r->size - off || (r->perm & perm) != perm)
		return NULL;
	return r->host + off;
}

static inline int gmem_map_hint(const struct gmem *gm, unsigned *hint, uint64_t gpa, uint64_t len,
				unsigned perm, struct iovec *iov, int max)
{
	void *p = max > 0 ? gmem_hint_ptr(gm, *hint, gpa, len, perm) : NULL;

	if (p) {
		iov[0].iov_base = p;
		iov[0].iov_len = len;
		return 1;
	}
	return gmem_map_slow(gm, hint, gpa, len, perm, iov, max);
}

/* A contiguous host pointer for [gpa, gpa + len) or NULL if the range is not inside one region. */
void *gmem_ptr(const struct gmem *gm, uint64_t gpa, uint64_t len, unsigned perm);
/* Frontend virtual address -> guest physical, the whole [uva, uva + len) inside one region. */
int gmem_uva_to_gpa(const struct gmem *gm, uint64_t uva, uint64_t len, uint64_t *gpa);

/*
 * Dirty page log for live migration (vhost-user LOG_SHMFD): one bit per 4 KiB guest page, set
 * with an atomic OR because the frontend reads and clears it concurrently. Marks outside the
 * log's size are dropped, never written: the size is the frontend's word, not ours to trust.
 */
#define GMEM_LOG_PAGE 4096ull

struct gmem_log {
	uint8_t *bits;
	uint64_t size; /* bytes of bitmap */
	void *map_base;
	size_t map_len;
	uint64_t dropped;		/* marks that fell outside the bitmap */
	struct gmem_guard_owner *owner; /* set before gmem_log_map: told of SIGBUS in the log */
};

/* Map size bytes of fd at offset as the log, guarded against SIGBUS on behalf of log->owner
 * (takes fd on success); -EINVAL, -ENOSPC, -errno. */
int gmem_log_map(struct gmem_log *log, int fd, uint64_t size, uint64_t offset);
/* Unmap the log; owner is kept. */
void gmem_log_unmap(struct gmem_log *log);
void gmem_log_mark(struct gmem_log *log, uint64_t gpa, uint64_t len);
/* Mark the guest pages behind the first len bytes of iov (host addresses in gm's regions). */
void gmem_log_iov(struct gmem_log *log, const struct gmem *gm, const struct iovec *iov, unsigned n,
		  size_t len);

#endif
