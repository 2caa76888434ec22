// SPDX-License-Identifier: MIT
/*
 * The in-memory backends on their own. The echo ring must hand every frame back intact and in
 * order whatever the mix of sizes, up to the largest, with its fd unwritable exactly while the
 * ring refuses frames (the worker waits for writability after "full").
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netns.h"
#include "virtap/membe.h"
#include "virtap/vnet_defs.h"

/* CHECK with the reason printed; the condition is evaluated once (it often does the work). */
#define CHECKF(cond, ...)                                                                          \
	do {                                                                                       \
		bool ok_ = (cond);                                                                 \
		if (!ok_) {                                                                        \
			fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                            \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
		}                                                                                  \
		CHECK(ok_);                                                                        \
	} while (0)

/* The largest frame the echo ring takes: the largest frame and its header. */
#define BIGGEST (VNET_MAX_FRAME + VNET_HDR_LEN_V1)

static short fd_events(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};

	return poll(&p, 1, 0) == 1 ? p.revents : 0;
}

/* Frame number seq of len bytes: header of zeros, then bytes derived from (seq, offset). */
static void make_frame(uint8_t *buf, size_t len, unsigned seq)
{
	memset(buf, 0, VNET_HDR_LEN_V1);
	for (size_t i = VNET_HDR_LEN_V1; i < len; i++)
		buf[i] = (uint8_t)(seq * 31 + i);
}

static ssize_t echo_send(struct membe *m, size_t len, unsigned seq)
{
	static uint8_t frame[BIGGEST + 1]; /* + 1: the oversize check */
	/* two pieces, as the device hands them: its header copy, then the guest's frame */
	struct iovec iov[2] = {{frame, VNET_HDR_LEN_V1}, {frame + VNET_HDR_LEN_V1, 0}};

	make_frame(frame, len, seq);
	iov[1].iov_len = len - VNET_HDR_LEN_V1;
	return membe_ops.tx(m, iov, 2);
}

/* Receive one frame and check it is frame seq of len bytes. */
static int echo_recv_check(struct membe *m, size_t len, unsigned seq)
{
	static uint8_t want[VNET_MAX_FRAME + VNET_HDR_LEN_V1], got[VNET_MAX_FRAME + 256];
	/* a small first buffer, as a guest's header-sized first segment */
	struct iovec iov[2] = {{got, 40}, {got + 40, sizeof(got) - 40}};
	ssize_t n = membe_ops.rx(m, iov, 2);

	make_frame(want, len, seq);
	if (n != (ssize_t)len || memcmp(want, got, len)) {
		fprintf(stderr, "  frame %u: got %zd bytes, want %zu%s\n", seq, n, len,
			n == (ssize_t)len ? " (content differs)" : "");
		return -1;
	}
	return 0;
}

static void test_echo_small_fills_by_count(void)
{
	struct membe m;
	unsigned sent = 0, bad = 0;

	CHECKF(membe_init(&m, MEMBE_ECHO, 0, 64) == 0, "init");
	CHECKF(membe_ops.rx(&m, &(struct iovec){NULL, 0}, 0) == -EAGAIN, "empty ring reads EAGAIN");
	while (echo_send(&m, 76, sent) == 76)
		sent++;
	CHECKF(sent == 64, "64-deep ring took %u small frames", sent);
	CHECKF(echo_send(&m, 76, 999) == -EAGAIN, "a full ring says EAGAIN");
	CHECKF((fd_events(membe_ops.fd(&m)) & (POLLIN | POLLOUT)) == POLLIN,
	       "full ring: fd readable, not writable (events %#x)", fd_events(membe_ops.fd(&m)));
	for (unsigned k = 0; k < sent; k++)
		bad += echo_recv_check(&m, 76, k) != 0;
	CHECKF(!bad, "%u of %u frames came back wrong", bad, sent);
	CHECKF(fd_events(membe_ops.fd(&m)) & POLLOUT, "drained ring: fd writable again");
	membe_destroy(&m);
}

/* The largest frames; then mixed sizes, with the ring kept between nearly full and full. */
static void test_echo_bytes_and_wrap(void)
{
	static const size_t sizes[] = {76, 1530, 9000, BIGGEST, 200, 4000, 61};
	const size_t nsizes = sizeof(sizes) / sizeof(sizes[0]);
	struct membe m;
	unsigned sent = 0, recvd = 0, bad = 0, full_seen = 0, fd_wrong = 0;

	CHECKF(membe_init(&m, MEMBE_ECHO, 0, 64) == 0, "init");
	while (echo_send(&m, BIGGEST, sent) > 0)
		sent++;
	CHECKF(sent > 0 && sent <= 64, "the ring took %u of the largest frames", sent);
	CHECKF(!(fd_events(membe_ops.fd(&m)) & POLLOUT), "ring full: fd not writable");
	while (recvd < sent)
		bad += echo_recv_check(&m, BIGGEST, recvd++) != 0;
	CHECKF(!bad, "%u large frames came back wrong", bad);

	/* Mixed sizes: keep the ring nearly full, so it wraps again and again. */
	sent = recvd = 0;
	for (unsigned round = 0; round < 3000; round++) {
		ssize_t r = echo_send(&m, sizes[sent % nsizes], sent);

		if (r > 0) {
			sent++;
			continue;
		}
		if (r != -EAGAIN) {
			CHECKF(0, "send of frame %u: %zd", sent, r);
			break;
		}
		full_seen++;
		fd_wrong += (fd_events(membe_ops.fd(&m)) & POLLOUT) != 0;
		for (unsigned k = 0; k < 5 && recvd < sent; k++, recvd++)
			bad += echo_recv_check(&m, sizes[recvd % nsizes], recvd) != 0;
	}
	while (recvd < sent) {
		bad += echo_recv_check(&m, sizes[recvd % nsizes], recvd) != 0;
		recvd++;
	}
	CHECKF(sent > 1000, "mixed sizes: %u frames went round", sent);
	CHECKF(full_seen > 10, "the ring filled %u times", full_seen);
	CHECKF(!fd_wrong, "fd writable while the ring refused a frame (%u times)", fd_wrong);
	CHECKF(!bad, "%u mixed frames came back wrong", bad);
	CHECKF(membe_ops.rx(&m, &(struct iovec){NULL, 0}, 0) == -EAGAIN, "drained ring is empty");
	CHECKF(echo_send(&m, BIGGEST + 1, 0) == -EMSGSIZE, "a frame above the largest is refused");
	membe_destroy(&m);
}

static void test_source(void)
{
	struct membe m;
	uint8_t buf[256];
	struct iovec iov = {buf, sizeof(buf)};

	CHECKF(membe_init(&m, MEMBE_SOURCE, 64, 0) == 0, "init");
	CHECKF(membe_ops.rx(&m, &iov, 1) == 64 + VNET_HDR_LEN_V1, "source frame length");
	CHECKF(buf[VNET_HDR_LEN_V1] == 0xff && buf[VNET_HDR_LEN_V1 + 12] == 0x88,
	       "source frame is the broadcast template");
	CHECKF(membe_ops.set_hdr_len(&m, VNET_HDR_LEN_LEGACY) == 0, "10-byte header");
	CHECKF(membe_ops.rx(&m, &iov, 1) == 64 + VNET_HDR_LEN_LEGACY, "legacy header length");
	CHECKF(buf[VNET_HDR_LEN_LEGACY] == 0xff, "frame follows the 10-byte header");
	membe_destroy(&m);
}

/* A frame into a guest buffer that holds a stale header (one buffer, the fast path): the
 * backend leaves header bytes alone only where they already hold the new values, so whatever
 * was there before, the guest reads the frame's header; num_buffers is the device's. */
static void test_echo_header_over_stale_buffer(void)
{
	static const uint8_t hdr[VNET_HDR_LEN_V1] = {1, 0, 54, 0, 0, 0, 34, 0, 16, 0, 9, 9};
	uint8_t frame[VNET_HDR_LEN_V1 + 64], buf[256];
	struct iovec tx[2] = {{frame, VNET_HDR_LEN_V1}, {frame + VNET_HDR_LEN_V1, 64}};
	struct iovec rx = {buf, sizeof(buf)};
	struct membe m;

	memcpy(frame, hdr, sizeof(hdr));
	for (size_t i = VNET_HDR_LEN_V1; i < sizeof(frame); i++)
		frame[i] = (uint8_t)(i * 7);
	CHECKF(membe_init(&m, MEMBE_ECHO, 0, 16) == 0, "init");
	for (unsigned round = 0; round < 3; round++) {
		/* stale bytes, then the same header (the usual case), then one field changed */
		if (round == 0)
			memset(buf, 0xa5, sizeof(buf));
		if (round == 2)
			frame[6] = 40; /* csum_start */
		memset(buf + VNET_HDR_LEN_V1, 0xa5, sizeof(buf) - VNET_HDR_LEN_V1);
		CHECKF(membe_ops.tx(&m, tx, 2) == (ssize_t)sizeof(frame), "echo takes the frame");
		CHECKF(membe_ops.rx(&m, &rx, 1) == (ssize_t)sizeof(frame), "echo gives it back");
		CHECKF(memcmp(buf, frame, VNET_HDR_LEN_LEGACY) == 0, "header fields as sent");
		CHECKF(memcmp(buf + VNET_HDR_LEN_V1, frame + VNET_HDR_LEN_V1, 64) == 0,
		       "frame as sent");
		CHECKF(buf[VNET_HDR_LEN_V1 + 64] == 0xa5, "nothing written past the frame");
	}
	membe_destroy(&m);
}

int main(void)
{
	test_echo_header_over_stale_buffer();
	test_echo_small_fills_by_count();
	test_echo_bytes_and_wrap();
	test_source();
	return th_done("membe");
}
