/* SPDX-License-Identifier: MIT */
/*
 * A test rig: one virtio-net queue pair on a real TAP device inside the test's private network
 * namespace, with the fake guest's RX and TX rings, plus AF_PACKET helpers for the namespace side.
 */
#ifndef VT_RIG_H
#define VT_RIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fakeguest.h"
#include "virtap/tap.h"
#include "virtap/vnet.h"

struct rig {
	struct fg g;
	struct fg_vq frx, ftx;
	struct vnet_qp qp;
	struct tap tap;
	uint64_t features;
	uint64_t *rx_gpa; /* head -> buffer gpa (first piece) */
	uint32_t *rx_len; /* head -> buffer size */
	uint16_t num;
};

/* Create TAP `ifname` (10.77.0.1/24, up, no IPv6 chatter) and a qp with these features. */
int rig_init(struct rig *r, const char *ifname, uint64_t features, const struct vnet_config *cfg,
	     uint16_t num);
void rig_destroy(struct rig *r);
/* Post n RX buffers of size bytes; indirect splits each into header + rest in one table. */
void rig_post_rx(struct rig *r, unsigned n, uint32_t size, bool indirect);
/* Take one received frame (header included) into out; returns its length, 0 if none, <0 if
 * malformed (num_buffers inconsistent). */
long rig_take_rx(struct rig *r, uint8_t *out, size_t cap);
/* Put one TX chain (header + frame) split into pieces of at most piece bytes. */
int rig_post_tx(struct rig *r, const void *data, size_t len, size_t piece, bool indirect);

/* AF_PACKET socket on ifname; vnet_hdr: PACKET_VNET_HDR on. Non-blocking receive. */
int pkt_socket(const char *ifname, bool vnet_hdr);
/* Receive a frame with our test ethertype into buf; waits up to ms. Returns length or 0. */
long pkt_recv_marked(int fd, uint8_t *buf, size_t cap, int ms, size_t skip_hdr);
/* A test frame: dst, src, ethertype 0x88b5, seq and a pattern; len >= 20. */
void make_frame(uint8_t *f, size_t len, uint32_t seq);
/* An IPv4/TCP frame of len bytes (for GSO), dst 10.77.0.2 -> src 10.77.0.1. */
void make_tcp_frame(uint8_t *f, size_t len, uint32_t seq);
/* Read an interface statistic from sysfs. */
long long if_stat(const char *ifname, const char *stat);

#define TEST_ETHERTYPE 0x88b5

#endif
