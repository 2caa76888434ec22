/* SPDX-License-Identifier: MIT */
/*
 * Copies between one flat buffer and a frame's iovecs, shared by the backends that stage frames
 * (the TAP's RX and TX staging buffers, the echo ring). Private to src/backend.
 */
#ifndef VT_BACKEND_IOV_COPY_H
#define VT_BACKEND_IOV_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include "virtap/vnet_defs.h"

/* Copy len bytes of src over iov[0, n); bytes copied (less than len when iov is shorter). */
static inline size_t be_scatter(const struct iovec *iov, int n, const uint8_t *src, size_t len)
{
	size_t done = 0;

	if (n && len <= iov[0].iov_len) { /* the frame fits the first guest buffer */
		memcpy(iov[0].iov_base, src, len);
		return len;
	}
	for (int i = 0; i < n && done < len; i++) {
		size_t c = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;

		memcpy(iov[i].iov_base, src + done, c);
		done += c;
	}
	return done;
}

/* Whether the first n bytes of a and b are equal; the 10 bytes of a header without num_buffers
 * in two loads each, not a call. */
static inline bool hdr_same(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint64_t a8, b8;
	uint16_t a2, b2;

	if (n != VNET_HDR_LEN_LEGACY)
		return memcmp(a, b, n) == 0;
	memcpy(&a8, a, 8);
	memcpy(&b8, b, 8);
	memcpy(&a2, a + 8, 2);
	memcpy(&b2, b + 8, 2);
	return a8 == b8 && a2 == b2;
}

/*
 * be_scatter for a frame that starts with its hdr-byte virtio-net header, into a guest's RX
 * buffers. Header bytes the buffer already holds are not stored again: a store takes the line
 * from the guest's vCPU, which read the previous frame's header there and will read this one.
 * A DPDK guest keeps each header on a line of its own (before the 128-byte headroom), and with
 * the header unchanged from the last frame (the usual case, no offloads) that line stays shared
 * (io 64 B, with the device taking the data line ahead: 12.7 -> 16.0 Mpps). num_buffers, the
 * last 2 bytes of a 12-byte header, is the device's to write (backend.h).
 */
static inline size_t be_scatter_frame(const struct iovec *iov, int n, const uint8_t *src,
				      size_t len, size_t hdr)
{
	size_t cmp = hdr > VNET_HDR_LEN_LEGACY ? VNET_HDR_LEN_LEGACY : hdr;
	uint8_t *dst;

	if (!n || len < hdr || len > iov[0].iov_len)
		return be_scatter(iov, n, src, len);
	dst = iov[0].iov_base;
	if (!hdr_same(dst, src, cmp))
		memcpy(dst, src, cmp);
	memcpy(dst + hdr, src + hdr, len - hdr);
	return len;
}

/* Copy iov[0, n) into dst, at most cap bytes; bytes copied. */
static inline size_t be_gather(uint8_t *dst, size_t cap, const struct iovec *iov, int n)
{
	size_t done = 0;

	if (n == 2 && iov[0].iov_len + iov[1].iov_len <= cap) {
		/* virtio-net TX: our header copy, then the guest's frame in one piece */
		memcpy(dst, iov[0].iov_base, iov[0].iov_len);
		memcpy(dst + iov[0].iov_len, iov[1].iov_base, iov[1].iov_len);
		return iov[0].iov_len + iov[1].iov_len;
	}
	for (int i = 0; i < n && done < cap; i++) {
		size_t c = iov[i].iov_len < cap - done ? iov[i].iov_len : cap - done;

		memcpy(dst + done, iov[i].iov_base, c);
		done += c;
	}
	return done;
}

/* Total length of iov[0, n). */
static inline size_t be_iov_len(const struct iovec *iov, int n)
{
	size_t len = 0;

	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	return len;
}

#endif
