// SPDX-License-Identifier: MIT
/*
 * Dirty page logging for live migration: every guest page the device writes (RX frame bytes, the
 * used ring) has its bit set, no other bit is, and a log smaller than guest memory is never
 * written past its end (the marks are dropped and counted).
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fakeguest.h"
#include "netns.h"
#include "virtap/membe.h"
#include "virtap/vnet.h"

#define F(b) (1ull << (b))

static int bit(const struct gmem_log *log, uint64_t gpa)
{
	uint64_t pg = gpa / GMEM_LOG_PAGE;

	return (log->bits[pg / 8] >> (pg % 8)) & 1;
}

static unsigned count_bits(const struct gmem_log *log)
{
	unsigned n = 0;

	for (uint64_t i = 0; i < log->size; i++)
		n += (unsigned)__builtin_popcount(log->bits[i]);
	return n;
}

static int log_fd(size_t size)
{
	int fd = memfd_create("log", MFD_CLOEXEC);

	REQUIRE(fd >= 0 && ftruncate(fd, (off_t)size) == 0);
	return fd;
}

static void test_rx_and_used_marked(void)
{
	uint64_t f = F(VQ_F_VERSION_1) | F(VIRTIO_NET_F_MRG_RXBUF);
	struct gmem_log log = {0};
	struct vnet_qp qp;
	struct membe be;
	struct fg g;
	struct fg_vq rx;
	uint64_t bufs[3];
	/* Bitmap for all of guest memory: gpa base 1 GiB + 16 MiB -> pages up to ~266k. */
	size_t size = (size_t)((FG_GPA_BASE + (16 << 20)) / GMEM_LOG_PAGE / 8 + 1);

	REQUIRE(fg_init(&g, 16 << 20) == 0);
	REQUIRE(fg_vq_init(&g, &rx, 64) == 0);
	REQUIRE(membe_init(&be, MEMBE_SOURCE, 3000, 0) == 0);
	REQUIRE(vnet_qp_init(&qp, 0, NULL, &membe_ops, &be) == 0);
	REQUIRE(fg_vq_attach(&rx, &qp.rx, "rx", f) == 0);
	REQUIRE(vnet_qp_set_features(&qp, f) == 0);
	REQUIRE(gmem_log_map(&log, log_fd(size), size, 0) == 0);
	vq_set_log(&qp.rx, &log, rx.used, true);
	/* Three 2 KiB buffers, far apart, so a 3000-byte frame touches exactly two of them. */
	for (int i = 0; i < 3; i++) {
		bufs[i] = fg_alloc(&g, 2048, 4096);
		fg_alloc(&g, 8192, 4096); /* a gap page that must stay clean */
		REQUIRE(fg_add(&rx, &(struct fg_buf){bufs[i], 2048, true}, 1, false) >= 0);
	}
	fg_publish(&rx, false);
	REQUIRE(count_bits(&log) == 0);
	/* One frame (budget 1): the source backend offers endless frames. */
	qp.cfg.rx_budget_pkts = 1;
	vnet_handle_rx(&qp);
	CHECK(qp.stats.rx_packets == 1);
	CHECK(bit(&log, bufs[0]) && bit(&log, bufs[1]));
	CHECK(!bit(&log, bufs[2]));	   /* not written */
	CHECK(!bit(&log, bufs[0] + 4096)); /* the gap after it */
	CHECK(bit(&log, rx.used));	   /* used ring written */
	CHECK(count_bits(&log) == 3);	   /* nothing else */
	CHECK(log.dropped == 0);
	vnet_qp_destroy(&qp);
	membe_destroy(&be);
	gmem_log_unmap(&log);
	fg_vq_destroy(&rx);
	fg_destroy(&g);
}

static void test_small_log_never_overflows(void)
{
	struct gmem_log log = {0};
	int fd = log_fd(4096);

	/* 16 bytes of bitmap cover 512 KiB of guest memory; marks beyond are dropped. */
	REQUIRE(gmem_log_map(&log, fd, 16, 0) == 0);
	gmem_log_mark(&log, 0, 4096);
	gmem_log_mark(&log, 127 * 4096ull, 1);
	gmem_log_mark(&log, 128 * 4096ull, 1);	     /* first page past the bitmap */
	gmem_log_mark(&log, UINT64_MAX - 10, 100);   /* wraps: ignored */
	gmem_log_mark(&log, 1ull << 50, 1ull << 20); /* far away */
	CHECK(log.bits[0] == 1 && log.bits[15] == 0x80);
	CHECK(log.dropped == 2);
	gmem_log_unmap(&log);
	/* A log that claims more than its file holds, or an absurd size, is refused. */
	fd = log_fd(4096);
	CHECK(gmem_log_map(&log, fd, 8192, 0) == -EINVAL);
	CHECK(gmem_log_map(&log, fd, 0, 0) == -EINVAL);
	CHECK(gmem_log_map(&log, fd, 1ull << 31, 0) == -EINVAL);
	CHECK(gmem_log_map(&log, fd, 4096, 1) == -EINVAL);
	close(fd);
}

int main(void)
{
	test_rx_and_used_marked();
	test_small_log_never_overflows();
	return th_done("dirty_log");
}
