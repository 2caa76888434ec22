/* SPDX-License-Identifier: MIT */
/*
 * Copies between one flat buffer and a frame's iovecs, shared by the backends that stage frames
 * (the TAP's RX and TX staging buffers, the echo ring). Private to src/backend.
 */
#ifndef VT_BACKEND_IOV_COPY_H
#define VT_BACKEND_IOV_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

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
