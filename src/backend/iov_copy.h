/* SPDX-License-Identifier: MIT */
/*
 * Copies between one flat buffer and a frame's iovecs, shared by the backends that stage frames
 * (the TAP's RX staging buffer, the echo ring). Private to src/backend.
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

/* Total length of iov[0, n). */
static inline size_t be_iov_len(const struct iovec *iov, int n)
{
	size_t len = 0;

	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	return len;
}

#endif
