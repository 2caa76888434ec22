// SPDX-License-Identifier: MIT
/*
 * Guest memory map. Regions are kept sorted by guest physical address so a lookup is a binary
 * search; a translation that crosses regions is split into one iovec per region. The map is
 * read-only while workers run: changes happen with every queue pair taken off its worker
 * (wrk_remove) first.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "virtap/gmem.h"
#include "virtap/gmem_guard.h"

void gmem_init(struct gmem *gm)
{
	gm->owner = NULL;
	gm->nregions = 0;
}

/* Last byte of [start, start + len); false when the range is empty or wraps past 2^64. */
static bool range_last(uint64_t start, uint64_t len, uint64_t *last)
{
	if (len == 0 || start + (len - 1) < start)
		return false;
	*last = start + (len - 1);
	return true;
}

/* Index of the region containing gpa, or -1. */
static int find_region(const struct gmem *gm, uint64_t gpa)
{
	unsigned lo = 0, hi = gm->nregions;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		const struct gmem_region *r = &gm->regions[mid];

		if (gpa < r->gpa)
			hi = mid;
		else if (gpa - r->gpa >= r->size)
			lo = mid + 1;
		else
			return (int)mid;
	}
	return -1;
}

static int insert_region(struct gmem *gm, const struct gmem_region *nr)
{
	uint64_t last, ulast;
	unsigned pos = 0;

	if (!range_last(nr->gpa, nr->size, &last) || !range_last(nr->uva, nr->size, &ulast))
		return -EINVAL;
	if (gm->nregions >= GMEM_MAX_REGIONS)
		return -ENOSPC;
	for (unsigned i = 0; i < gm->nregions; i++) {
		const struct gmem_region *r = &gm->regions[i];

		/* Overlapping guest ranges would make a translation ambiguous. */
		if (nr->gpa <= r->gpa + (r->size - 1) && r->gpa <= last)
			return -EINVAL;
		if (r->gpa < nr->gpa)
			pos = i + 1;
	}
	memmove(&gm->regions[pos + 1], &gm->regions[pos],
		(gm->nregions - pos) * sizeof(gm->regions[0]));
	gm->regions[pos] = *nr;
	gm->nregions++;
	return 0;
}

int gmem_add_host(struct gmem *gm, uint64_t gpa, uint64_t size, uint64_t uva, void *host,
		  unsigned perm)
{
	struct gmem_region r = {
	    .gpa = gpa,
	    .size = size,
	    .uva = uva,
	    .host = host,
	    .perm = perm,
	};

	if (!host || !(perm & (GMEM_READ | GMEM_WRITE)))
		return -EINVAL;
	return insert_region(gm, &r);
}

int gmem_add_fd(struct gmem *gm, uint64_t gpa, uint64_t size, uint64_t uva, int fd, uint64_t offset)
{
	long page = sysconf(_SC_PAGESIZE);
	uint64_t delta = offset % (uint64_t)page, last;
	struct gmem_region r;
	struct stat st;
	void *base;
	int err;

	if (fd < 0 || !range_last(gpa, size, &last) || !range_last(offset, size, &last) ||
	    size + delta < size || size > SIZE_MAX - (size_t)delta)
		return -EINVAL;
	if (gm->nregions >= GMEM_MAX_REGIONS)
		return -ENOSPC;
	/* Touching a mapping past the end of its file raises SIGBUS and would kill the daemon:
	 * the region must lie inside the file, and we ask the kernel to keep it that size (memfds
	 * that allow sealing; QEMU seals its own already). */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    ((uint64_t)st.st_size < offset || (uint64_t)st.st_size - offset < size))
		return -EINVAL;
	fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
	/* mmap wants a page-aligned offset; map from the page start and skip delta bytes. */
	base = mmap(NULL, size + delta, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd,
		    (off_t)(offset - delta));
	if (base == MAP_FAILED)
		return -errno;
	/* The seal above fails on tmpfs files and memfds made without MFD_ALLOW_SEALING: if the
	 * frontend shrinks one under us, the guard turns the SIGBUS into a broken device. */
	err = gmem_guard_add(base, size + delta, fd, gm->owner);
	if (err) {
		munmap(base, size + delta);
		return err;
	}
	r = (struct gmem_region){
	    .gpa = gpa,
	    .size = size,
	    .uva = uva,
	    .host = (uint8_t *)base + delta,
	    .map_base = base,
	    .map_len = size + delta,
	    .perm = GMEM_READ | GMEM_WRITE,
	};
	err = insert_region(gm, &r);
	if (err) {
		gmem_guard_remove(base);
		munmap(base, size + delta);
		return err;
	}
	/* The mapping keeps the file; an fd kept open per region would let one frontend (509
	 * regions with ADD_MEM_REG) eat the fds every other port needs. */
	close(fd);
	return 0;
}

static void release_region(struct gmem_region *r)
{
	if (r->map_base) {
		gmem_guard_remove(r->map_base);
		munmap(r->map_base, r->map_len);
	}
}

int gmem_remove(struct gmem *gm, uint64_t gpa, uint64_t size)
{
	for (unsigned i = 0; i < gm->nregions; i++) {
		struct gmem_region *r = &gm->regions[i];

		if (r->gpa != gpa || r->size != size)
			continue;
		release_region(r);
		memmove(r, r + 1, (gm->nregions - i - 1) * sizeof(*r));
		gm->nregions--;
		return 0;
	}
	return -ENOENT;
}

void gmem_clear(struct gmem *gm)
{
	for (unsigned i = 0; i < gm->nregions; i++)
		release_region(&gm->regions[i]);
	gm->nregions = 0;
}

int gmem_map_slow(const struct gmem *gm, unsigned *hint, uint64_t gpa, uint64_t len, unsigned perm,
		  struct iovec *iov, int max)
{
	uint64_t last;
	int n = 0;

	if (!range_last(gpa, len, &last))
		return -EFAULT;
	for (;;) {
		int i = find_region(gm, gpa);
		const struct gmem_region *r;
		uint64_t off, avail;

		if (i < 0)
			return -EFAULT;
		if (hint)
			*hint = (unsigned)i;
		r = &gm->regions[i];
		if ((r->perm & perm) != perm)
			return -EFAULT;
		if (n >= max)
			return -ENOBUFS;
		off = gpa - r->gpa;
		avail = r->size - off;
		iov[n].iov_base = r->host + off;
		if (len <= avail) {
			iov[n].iov_len = len;
			return n + 1;
		}
		iov[n].iov_len = avail;
		n++;
		gpa += avail;
		len -= avail;
	}
}

int gmem_map(const struct gmem *gm, uint64_t gpa, uint64_t len, unsigned perm, struct iovec *iov,
	     int max)
{
	return gmem_map_slow(gm, NULL, gpa, len, perm, iov, max);
}

void *gmem_ptr(const struct gmem *gm, uint64_t gpa, uint64_t len, unsigned perm)
{
	struct iovec iov;

	if (gmem_map(gm, gpa, len, perm, &iov, 1) != 1)
		return NULL;
	return iov.iov_base;
}

int gmem_uva_to_gpa(const struct gmem *gm, uint64_t uva, uint64_t len, uint64_t *gpa)
{
	uint64_t last;

	if (!range_last(uva, len, &last))
		return -EFAULT;
	for (unsigned i = 0; i < gm->nregions; i++) {
		const struct gmem_region *r = &gm->regions[i];

		if (uva < r->uva || uva - r->uva >= r->size)
			continue;
		if (last - r->uva >= r->size)
			return -EFAULT;
		*gpa = r->gpa + (uva - r->uva);
		return 0;
	}
	return -EFAULT;
}

int gmem_log_map(struct gmem_log *log, int fd, uint64_t size, uint64_t offset)
{
	long page = sysconf(_SC_PAGESIZE);
	uint64_t delta = offset % (uint64_t)page;
	struct stat st;
	void *base;
	int err;

	/* 1 GiB of bitmap covers 32 TiB of guest memory; anything larger is not a real log. */
	if (size == 0 || size > (1ull << 30) || offset > (1ull << 40))
		return -EINVAL;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    ((uint64_t)st.st_size < offset || (uint64_t)st.st_size - offset < size))
		return -EINVAL;
	base = mmap(NULL, size + delta, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		    (off_t)(offset - delta));
	if (base == MAP_FAILED)
		return -errno;
	err = gmem_guard_add(base, size + delta, fd, log->owner);
	if (err) {
		munmap(base, size + delta);
		return err;
	}
	close(fd);
	log->map_base = base;
	log->map_len = size + delta;
	log->bits = (uint8_t *)base + delta;
	log->size = size;
	log->dropped = 0;
	return 0;
}

void gmem_log_unmap(struct gmem_log *log)
{
	struct gmem_guard_owner *owner = log->owner;

	if (log->map_base) {
		gmem_guard_remove(log->map_base);
		munmap(log->map_base, log->map_len);
	}
	memset(log, 0, sizeof(*log));
	log->owner = owner;
}

void gmem_log_mark(struct gmem_log *log, uint64_t gpa, uint64_t len)
{
	uint64_t first, last;

	if (!log || !log->bits || !len || gpa + (len - 1) < gpa)
		return;
	first = gpa / GMEM_LOG_PAGE;
	last = (gpa + len - 1) / GMEM_LOG_PAGE;
	for (uint64_t pg = first; pg <= last; pg++) {
		if (pg / 8 >= log->size) {
			log->dropped++;
			return;
		}
		__atomic_fetch_or(&log->bits[pg / 8], (uint8_t)(1u << (pg % 8)), __ATOMIC_RELAXED);
	}
}

/* The guest physical address behind a host pointer into one of gm's regions. */
static int host_to_gpa(const struct gmem *gm, const uint8_t *host, uint64_t *gpa, uint64_t *room)
{
	for (unsigned i = 0; i < gm->nregions; i++) {
		const struct gmem_region *r = &gm->regions[i];

		if (host >= r->host && (uint64_t)(host - r->host) < r->size) {
			*gpa = r->gpa + (uint64_t)(host - r->host);
			*room = r->size - (uint64_t)(host - r->host);
			return 0;
		}
	}
	return -EFAULT;
}

void gmem_log_iov(struct gmem_log *log, const struct gmem *gm, const struct iovec *iov, unsigned n,
		  size_t len)
{
	for (unsigned i = 0; i < n && len; i++) {
		size_t part = iov[i].iov_len < len ? iov[i].iov_len : len;
		uint64_t gpa, room;

		/* An iovec never spans regions (gmem_map splits at region ends). */
		if (host_to_gpa(gm, iov[i].iov_base, &gpa, &room) == 0)
			gmem_log_mark(log, gpa, part < room ? part : room);
		len -= part;
	}
}
