// SPDX-License-Identifier: MIT
/*
 * Bounded FIFO of held frames. Memory is taken per frame and returned on pop, so an idle queue
 * costs only its ring of pointers; the bound is in frames, and frames are at most one max-size
 * frame each, so the worst case is cap * 64 KiB per RX queue.
 */
#include <errno.h>
#include <stdlib.h>

#include "virtap/netq.h"
#include "virtap/vq.h"

int netq_init(struct netq *q, unsigned cap)
{
	q->head = 0;
	q->count = 0;
	q->cap = cap ? cap : 1;
	q->ring = calloc(q->cap, sizeof(*q->ring));
	return q->ring ? 0 : -ENOMEM;
}

void netq_purge(struct netq *q)
{
	while (q->count)
		netq_pop(q);
}

void netq_destroy(struct netq *q)
{
	if (!q->ring)
		return;
	netq_purge(q);
	free(q->ring);
	q->ring = NULL;
}

int netq_push(struct netq *q, const struct iovec *iov, unsigned n, size_t len)
{
	struct netq_frame *f;
	uint8_t *data;

	if (q->count == q->cap)
		return -ENOBUFS;
	data = malloc(len ? len : 1);
	if (!data)
		return -ENOMEM;
	vq_iov_to_buf(iov, n, 0, data, len);
	f = &q->ring[(q->head + q->count) % q->cap];
	f->data = data;
	f->len = (uint32_t)len;
	q->count++;
	return 0;
}

const struct netq_frame *netq_peek(const struct netq *q)
{
	return q->count ? &q->ring[q->head] : NULL;
}

void netq_pop(struct netq *q)
{
	if (!q->count)
		return;
	free(q->ring[q->head].data);
	q->ring[q->head].data = NULL;
	q->head = (q->head + 1) % q->cap;
	q->count--;
}
