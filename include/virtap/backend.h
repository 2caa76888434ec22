/* SPDX-License-Identifier: MIT */
/*
 * The backend ops table: what the virtio-net device needs from whatever carries frames on the host
 * side (a TAP queue today). A backend sees frames as iovecs that start with the virtio-net header;
 * it never sees rings or guest addresses.
 */
#ifndef VIRTAP_BACKEND_H
#define VIRTAP_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* One frame of a burst: its iovecs (header first) and, after the call, what rx/tx would have
 * returned for it alone. */
struct be_msg {
	const struct iovec *iov;
	int niov;
	ssize_t res;
};

struct be_ops {
	const char *name;
	/* Read one frame (header first) into iov. Bytes read, -EAGAIN when empty, -errno. A frame
	 * longer than iov is truncated by the backend, so callers offer room for the largest. The
	 * header's num_buffers (the last 2 bytes of a 12-byte header) is the device's: it writes it
	 * after rx returns, so the backend may leave those bytes as they were. */
	ssize_t (*rx)(void *be, const struct iovec *iov, int n);
	/* Write one frame (header first). Bytes written, -EAGAIN when full, -errno. */
	ssize_t (*tx)(void *be, const struct iovec *iov, int n);
	/* The fd to poll for readability (rx) and writability (tx). */
	int (*fd)(void *be);
	/* Size of the virtio-net header in front of every frame (10 or 12). */
	int (*set_hdr_len)(void *be, int len);
	/* Offloads the guest accepts, as virtio-net GUEST_* feature bits. */
	int (*set_offloads)(void *be, uint64_t guest_features);
	/* virtio-net feature bits this backend can honour (GUEST_* it can produce, HOST_* it can
	 * take). */
	uint64_t (*features)(void *be);
	/* Optional (NULL: not offered). Write n frames with one system call; each msg's
	 * res is what tx would have returned for it, and frames are taken in order, so
	 * after the first -EAGAIN every later one is -EAGAIN too. Returns n, or -errno when the
	 * burst as a whole could not be done (then the caller uses tx; nothing was moved). */
	int (*tx_burst)(void *be, struct be_msg *m, int n);
	/* Optional (NULL: unknown). True when rx would say -EAGAIN right now, known without a
	 * system call; the device then leaves the guest's RX ring alone instead of popping
	 * buffers only to give them back. */
	bool (*rx_empty)(void *be);
};

#endif
