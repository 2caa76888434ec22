/* SPDX-License-Identifier: MIT */
/*
 * In-memory backends, behind the same ops table as the TAP: a sink that drops every frame the
 * guest sends (the counterpart of testpmd's rxonly), a source that offers the guest an endless
 * stream of one frame (txonly), and an echo that hands every frame the guest sends back to its
 * RX queue (io forwarding on one port). They measure virtap's own datapath, without the TAP's
 * per-frame syscalls, against DPDK's vhost library; they also serve tests and embedders.
 */
#ifndef VIRTAP_MEMBE_H
#define VIRTAP_MEMBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtap/backend.h"

enum membe_mode { MEMBE_SINK, MEMBE_SOURCE, MEMBE_ECHO };

struct membe {
	enum membe_mode mode;
	int efd; /* readable when RX has a frame (source: always; echo: when queued); echo:
		    writable unless its ring is full */
	int hdr_len;
	size_t frame_len;	   /* source: frame bytes after the header */
	uint8_t *frame;		   /* source template, header included */
	unsigned cap, head, count; /* echo ring of frames */
	uint32_t *lens;
	uint8_t *slots; /* cap slots of slot_size bytes */
	size_t slot_size;
	bool efd_on;	     /* echo: the eventfd counter is (believed) non-zero */
	unsigned empty_seen; /* echo: times the device found the ring empty since the last frame */
	uint64_t tx_frames, tx_bytes, rx_frames, rx_bytes;
};

/* frame_len: source frame size (Ethernet bytes, >= 60); echo: queue depth in frames. */
int membe_init(struct membe *m, enum membe_mode mode, size_t frame_len, unsigned depth);
void membe_destroy(struct membe *m);
int membe_parse(const char *spec, enum membe_mode *mode, size_t *frame_len);

extern const struct be_ops membe_ops;

#endif
