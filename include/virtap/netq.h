/* SPDX-License-Identifier: MIT */
/*
 * The net queue (what QEMU's net layer calls its queue): frames that were read from the backend but
 * could not be delivered because the guest had too few RX buffers. Bounded in frames; while it
 * holds anything the device stops reading the backend, so backpressure stays in the kernel's TAP
 * queue.
 */
#ifndef VIRTAP_NETQ_H
#define VIRTAP_NETQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct netq_frame {
	uint32_t len;
	uint8_t *data; /* header + frame */
};

struct netq {
	unsigned cap;
	unsigned head;
	unsigned count;
	struct netq_frame *ring;
};

int netq_init(struct netq *q, unsigned cap);
void netq_destroy(struct netq *q);
/* Copy len bytes gathered from iov onto the tail. -ENOBUFS when full, -ENOMEM. */
int netq_push(struct netq *q, const struct iovec *iov, unsigned n, size_t len);
/* Oldest frame, or NULL. */
const struct netq_frame *netq_peek(const struct netq *q);
void netq_pop(struct netq *q);
void netq_purge(struct netq *q);

#endif
