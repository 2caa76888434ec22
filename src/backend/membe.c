// SPDX-License-Identifier: MIT
/*
 * In-memory backends. Single-threaded by design: the worker that serves a queue pair calls both
 * rx and tx, so the echo ring needs no locks. The readiness eventfd is touched only when the echo
 * ring goes from empty to non-empty and back, or from full to not full and back (a full ring makes
 * the fd unwritable), not per frame. Even "empty" is lazy: the fd is cleared only when the device
 * finds the ring empty a second time in a row. A device that drains the ring and is refilled
 * before it looks again (a busy-polling worker reflecting a steady stream) then makes no system
 * call at all, where clearing at once cost a read and a write per burst; a sleeping worker pays
 * one more wake-up, in which it finds the ring empty again and the fd is cleared.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "iov_copy.h"
#include "virtap/membe.h"
#include "virtap/vnet_defs.h"

#define ECHO_SLOT (VNET_MAX_FRAME + VNET_HDR_LEN_V1)

static void efd_set(struct membe *m)
{
	uint64_t one = 1;

	if (write(m->efd, &one, sizeof(one)) < 0) {
		/* only fails when the counter is saturated: it is readable already */
	}
	m->efd_on = true;
}

static void efd_clear(struct membe *m)
{
	uint64_t v;

	if (read(m->efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: already clear */
	}
	m->efd_on = false;
}

/* The device found the echo ring empty; the second time in a row, stop being readable. */
static void echo_seen_empty(struct membe *m)
{
	if (m->efd_on && ++m->empty_seen >= 2) {
		efd_clear(m);
		m->empty_seen = 0;
	}
}

/*
 * The echo ring is full (the counter is 1): raise the counter to its maximum, 2^64 - 2, where an
 * eventfd stays readable but stops being writable. The worker polls this fd for writability after
 * tx said -EAGAIN; an fd that always looked writable made it spin until the guest posted RX
 * buffers, which a guest need never do.
 */
static void efd_set_full(struct membe *m)
{
	uint64_t v = 0xfffffffffffffffdull;

	if (write(m->efd, &v, sizeof(v)) < 0) {
		/* cannot happen with the counter at 1 */
	}
}

int membe_init(struct membe *m, enum membe_mode mode, size_t frame_len, unsigned depth)
{
	memset(m, 0, sizeof(*m));
	m->mode = mode;
	m->hdr_len = VNET_HDR_LEN_V1;
	m->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->efd < 0)
		return -errno;
	if (mode == MEMBE_SOURCE) {
		if (frame_len < 60 || frame_len > VNET_MAX_FRAME)
			return -EINVAL;
		m->frame_len = frame_len;
		m->frame = calloc(1, VNET_HDR_LEN_V1 + frame_len);
		if (!m->frame)
			return -ENOMEM;
		/* Broadcast frame, local experimental ethertype 0x88b5, counting payload. */
		memset(m->frame + VNET_HDR_LEN_V1, 0xff, 6);
		m->frame[VNET_HDR_LEN_V1 + 6] = 0x02;
		m->frame[VNET_HDR_LEN_V1 + 12] = 0x88;
		m->frame[VNET_HDR_LEN_V1 + 13] = 0xb5;
		for (size_t i = 14; i < frame_len; i++)
			m->frame[VNET_HDR_LEN_V1 + i] = (uint8_t)i;
		efd_set(m); /* always something to read */
	} else if (mode == MEMBE_ECHO) {
		/* A power of two: ring positions wrap with a mask. */
		for (m->cap = 16; m->cap < (depth ? depth : 256) && m->cap < 65536;)
			m->cap *= 2;
		m->slot_size = ECHO_SLOT;
		m->lens = calloc(m->cap, sizeof(*m->lens));
		m->slots = malloc(m->cap * m->slot_size);
		if (!m->lens || !m->slots)
			return -ENOMEM;
	}
	return 0;
}

void membe_destroy(struct membe *m)
{
	if (m->efd >= 0)
		close(m->efd);
	m->efd = -1;
	free(m->frame);
	free(m->lens);
	free(m->slots);
	m->frame = NULL;
	m->lens = NULL;
	m->slots = NULL;
}

int membe_parse(const char *spec, enum membe_mode *mode, size_t *frame_len)
{
	char *end;

	*frame_len = 64;
	if (!strcmp(spec, "sink")) {
		*mode = MEMBE_SINK;
	} else if (!strcmp(spec, "echo")) {
		*mode = MEMBE_ECHO;
	} else if (!strncmp(spec, "source", 6)) {
		*mode = MEMBE_SOURCE;
		if (spec[6] == ':') {
			unsigned long v = strtoul(spec + 7, &end, 10);

			if (*end || v < 60 || v > VNET_MAX_FRAME)
				return -EINVAL;
			*frame_len = v;
		} else if (spec[6]) {
			return -EINVAL;
		}
	} else {
		return -EINVAL;
	}
	return 0;
}

static ssize_t membe_rx(void *be, const struct iovec *iov, int n)
{
	struct membe *m = be;
	size_t len, got;
	bool full;

	switch (m->mode) {
	case MEMBE_SOURCE:
		len = (size_t)m->hdr_len + m->frame_len;
		/* The template's header is v1-sized; a 10-byte header is its first 10 bytes. */
		got = be_scatter_frame(iov, n, m->frame + (VNET_HDR_LEN_V1 - m->hdr_len), len,
				       (size_t)m->hdr_len);
		break;
	case MEMBE_ECHO:
		if (!m->count) {
			echo_seen_empty(m);
			return -EAGAIN;
		}
		len = m->lens[m->head];
		got = be_scatter_frame(iov, n, m->slots + (size_t)m->head * m->slot_size, len,
				       (size_t)m->hdr_len);
		m->head = (m->head + 1) & (m->cap - 1);
		full = m->count-- == m->cap;
		/* Was full: the counter was saturated (efd_set_full); bring it back to 1, so the fd
		 * is writable again and still readable (empty or not: emptiness is cleared lazily).
		 */
		if (full) {
			efd_clear(m);
			efd_set(m);
		}
		break;
	default:
		return -EAGAIN;
	}
	m->rx_frames++;
	m->rx_bytes += got;
	return (ssize_t)got;
}

static ssize_t membe_tx(void *be, const struct iovec *iov, int n)
{
	struct membe *m = be;
	size_t len = be_iov_len(iov, n);

	if (m->mode == MEMBE_ECHO) {
		unsigned slot;

		if (m->count == m->cap)
			return -EAGAIN;
		if (len > m->slot_size)
			return -EMSGSIZE;
		slot = (m->head + m->count) & (m->cap - 1);
		m->lens[slot] = (uint32_t)be_gather(m->slots + (size_t)slot * m->slot_size,
						    m->slot_size, iov, n);
		m->empty_seen = 0;
		if (m->count++ == 0 && !m->efd_on)
			efd_set(m);
		if (m->count == m->cap)
			efd_set_full(m);
	}
	m->tx_frames++;
	m->tx_bytes += len;
	return (ssize_t)len;
}

/* The burst call: the device then pops and checks a burst of chains before any frame is
 * copied, as it does for the TAP (the misses on the guest's lines overlap). */
static int membe_tx_burst(void *be, struct be_msg *m, int n)
{
	for (int i = 0; i < n; i++)
		m[i].res = membe_tx(be, m[i].iov, m[i].niov);
	return n;
}

static bool membe_rx_empty(void *be)
{
	struct membe *m = be;

	if (m->mode != MEMBE_ECHO)
		return m->mode != MEMBE_SOURCE;
	if (m->count)
		return false;
	echo_seen_empty(m);
	return true;
}

static int membe_fd(void *be)
{
	return ((struct membe *)be)->efd;
}

static int membe_set_hdr_len(void *be, int len)
{
	if (len != VNET_HDR_LEN_LEGACY && len != VNET_HDR_LEN_V1)
		return -EINVAL;
	((struct membe *)be)->hdr_len = len;
	return 0;
}

static int membe_set_offloads(void *be, uint64_t f)
{
	(void)be;
	(void)f;
	return 0;
}

static uint64_t membe_features(void *be)
{
	(void)be;
	/* No offloads: an echoed frame must be one the guest can receive whatever it negotiated. */
	return 0;
}

const struct be_ops membe_ops = {
    .name = "mem",
    .rx = membe_rx,
    .tx = membe_tx,
    .fd = membe_fd,
    .set_hdr_len = membe_set_hdr_len,
    .set_offloads = membe_set_offloads,
    .features = membe_features,
    .rx_empty = membe_rx_empty,
    .tx_burst = membe_tx_burst,
};
