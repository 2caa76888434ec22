// SPDX-License-Identifier: MIT
/* Guest memory map: translation, splitting and every rejection rule. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "netns.h"
#include "virtap/gmem.h"

static uint8_t backing[4][8192];

static void test_split_and_reject(void)
{
	static struct gmem gm;
	struct iovec iov[4];
	int n;

	gmem_init(&gm);
	/* Three adjacent regions [0x1000,0x3000) [0x3000,0x5000) [0x5000,0x7000), a hole, then one.
	 */
	REQUIRE(gmem_add_host(&gm, 0x3000, 0x2000, 0xa000, backing[1], GMEM_READ | GMEM_WRITE) ==
		0);
	REQUIRE(gmem_add_host(&gm, 0x1000, 0x2000, 0x8000, backing[0], GMEM_READ | GMEM_WRITE) ==
		0);
	REQUIRE(gmem_add_host(&gm, 0x5000, 0x2000, 0xc000, backing[2], GMEM_READ) == 0);
	REQUIRE(gmem_add_host(&gm, 0x10000, 0x2000, 0xe000, backing[3], GMEM_READ | GMEM_WRITE) ==
		0);
	CHECK(gm.nregions == 4 && gm.regions[0].gpa == 0x1000 && gm.regions[1].gpa == 0x3000);

	n = gmem_map(&gm, 0x1000, 16, GMEM_READ, iov, 4);
	CHECK(n == 1 && iov[0].iov_base == backing[0] && iov[0].iov_len == 16);
	/* Spans two regions: split in two iovecs. */
	n = gmem_map(&gm, 0x2ff0, 0x20, GMEM_READ, iov, 4);
	CHECK(n == 2 && iov[0].iov_base == backing[0] + 0x1ff0 && iov[0].iov_len == 0x10 &&
	      iov[1].iov_base == backing[1] && iov[1].iov_len == 0x10);
	/* Spans three. */
	n = gmem_map(&gm, 0x2000, 0x4000, GMEM_READ, iov, 4);
	CHECK(n == 3);
	/* Too many pieces for the caller's array. */
	CHECK(gmem_map(&gm, 0x2000, 0x4000, GMEM_READ, iov, 2) == -ENOBUFS);
	/* Partly mapped: runs off the end into the hole. */
	CHECK(gmem_map(&gm, 0x6ff0, 0x20, GMEM_READ, iov, 4) == -EFAULT);
	/* Unmapped entirely, below and between. */
	CHECK(gmem_map(&gm, 0x0, 8, GMEM_READ, iov, 4) == -EFAULT);
	CHECK(gmem_map(&gm, 0x8000, 8, GMEM_READ, iov, 4) == -EFAULT);
	/* Zero length and wrap-around. */
	CHECK(gmem_map(&gm, 0x1000, 0, GMEM_READ, iov, 4) == -EFAULT);
	CHECK(gmem_map(&gm, 0xfffffffffffffff0ull, 0x20, GMEM_READ, iov, 4) == -EFAULT);
	CHECK(gmem_map(&gm, 0x1000, UINT64_MAX, GMEM_READ, iov, 4) == -EFAULT);
	/* Permission: region 2 is read-only to the device. */
	CHECK(gmem_map(&gm, 0x5000, 8, GMEM_WRITE, iov, 4) == -EFAULT);
	CHECK(gmem_map(&gm, 0x5000, 8, GMEM_READ, iov, 4) == 1);
	/* Contiguous pointer only inside one region. */
	CHECK(gmem_ptr(&gm, 0x1000, 0x2000, GMEM_READ) == backing[0]);
	CHECK(gmem_ptr(&gm, 0x1000, 0x2001, GMEM_READ) == NULL);
	/* Frontend virtual addresses. */
	uint64_t gpa = 0;
	CHECK(gmem_uva_to_gpa(&gm, 0xa010, 0x10, &gpa) == 0 && gpa == 0x3010);
	CHECK(gmem_uva_to_gpa(&gm, 0xbff0, 0x20, &gpa) == -EFAULT);
	CHECK(gmem_uva_to_gpa(&gm, 0x1, 0x10, &gpa) == -EFAULT);

	/* Overlaps, zero size and wrapping regions are refused. */
	CHECK(gmem_add_host(&gm, 0x1800, 0x100, 0x20000, backing[0], GMEM_READ) == -EINVAL);
	CHECK(gmem_add_host(&gm, 0x0, 0x1001, 0x20000, backing[0], GMEM_READ) == -EINVAL);
	CHECK(gmem_add_host(&gm, 0x20000, 0, 0x20000, backing[0], GMEM_READ) == -EINVAL);
	CHECK(gmem_add_host(&gm, UINT64_MAX - 0x10, 0x100, 0x20000, backing[0], GMEM_READ) ==
	      -EINVAL);
	CHECK(gm.nregions == 4);
	CHECK(gmem_remove(&gm, 0x3000, 0x2000) == 0);
	CHECK(gmem_map(&gm, 0x3000, 8, GMEM_READ, iov, 4) == -EFAULT);
	CHECK(gmem_remove(&gm, 0x3000, 0x2000) == -ENOENT);
	gmem_clear(&gm);
}

static void test_max_regions_and_fd(void)
{
	static struct gmem gm;
	struct iovec iov[2];
	int fd = memfd_create("t", MFD_CLOEXEC);
	uint8_t *view;

	REQUIRE(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
	gmem_init(&gm);
	for (unsigned i = 0; i < GMEM_MAX_REGIONS; i++)
		REQUIRE(gmem_add_host(&gm, 0x100000ull * (i + 1), 0x1000, 0x100000ull * (i + 1),
				      backing[0], GMEM_READ) == 0);
	CHECK(gmem_add_host(&gm, 0x10, 0x10, 0x10, backing[0], GMEM_READ) == -ENOSPC);
	/* Binary search finds the last region as well as the first. */
	CHECK(gmem_map(&gm, 0x100000ull * GMEM_MAX_REGIONS + 0xff0, 0x10, GMEM_READ, iov, 2) == 1);
	CHECK(gmem_map(&gm, 0x100000ull * GMEM_MAX_REGIONS + 0xff0, 0x11, GMEM_READ, iov, 2) ==
	      -EFAULT);
	gmem_clear(&gm);

	/* An fd region at a non-page-aligned offset maps the right bytes. */
	view = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	REQUIRE(view != MAP_FAILED);
	memcpy(view + 0x1234, "virtap", 6);
	REQUIRE(gmem_add_fd(&gm, 0x80000000ull, 0x10000, 0x1000, dup(fd), 0x1000) == 0);
	CHECK(gmem_map(&gm, 0x80000234ull, 6, GMEM_WRITE, iov, 2) == 1 &&
	      memcmp(iov[0].iov_base, "virtap", 6) == 0);
	CHECK(gmem_map(&gm, 0x80000000ull + 0x10000 - 1, 2, GMEM_READ, iov, 2) == -EFAULT);
	/* A region reaching past the end of its file would SIGBUS on access: refused. */
	{
		int d = dup(fd);

		CHECK(gmem_add_fd(&gm, 0x90000000ull, 2 << 20, 0x2000000, d, 0) == -EINVAL);
		CHECK(gmem_add_fd(&gm, 0x90000000ull, 0x1000, 0x2000000, d, 1 << 20) == -EINVAL);
		CHECK(gmem_add_fd(&gm, 0x90000000ull, 0x2000, 0x2000000, d, (1 << 20) - 0x1000) ==
		      -EINVAL);
		CHECK(gm.nregions == 1); /* only the good region from above */
		close(d);
	}
	gmem_clear(&gm);
	munmap(view, 1 << 20);
	close(fd);
}

int main(void)
{
	test_split_and_reject();
	test_max_regions_and_fd();
	return th_done("gmem");
}
