/* SPDX-License-Identifier: MIT */
/*
 * TAP backend: a Linux TAP queue opened with IFF_VNET_HDR so virtio-net headers (checksum and
 * segmentation offloads) pass through untouched, the way vhost-net uses it. One struct tap is one
 * queue (one fd) of a possibly multiqueue device.
 */
#ifndef VIRTAP_TAP_H
#define VIRTAP_TAP_H

#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>

#include "virtap/backend.h"

enum {
	TAP_F_MULTI_QUEUE = 1, /* IFF_MULTI_QUEUE: one fd per queue pair */
	TAP_F_NO_CREATE = 2,   /* attach only; fail if the device does not exist */
};

struct tap {
	int fd;
	char ifname[IF_NAMESIZE];
	unsigned tun_offloads; /* TUN_F_* bits the kernel accepted when probed */
	int hdr_len;
	bool detached; /* multiqueue: this queue takes no frames from the kernel */
	/* Bursts: an io_uring made on first use by the one thread that serves this queue; NULL
	 * until then, or for good once making it failed (then every frame is one syscall). */
	void *uring;
	bool uring_failed;
	uint8_t *rx_stage; /* RX staging buffer (tap_be_rx), made on first use */
};

/* Open (creating if needed) TAP queue `name`. Logs one clear reason on failure. */
int tap_open(struct tap *t, const char *name, unsigned flags);
void tap_close(struct tap *t);
int tap_set_hdr_len(struct tap *t, int len);
/* TUN_F_* offloads we accept from the kernel, derived from the guest's GUEST_* features. */
int tap_set_offloads(struct tap *t, uint64_t guest_features);
uint64_t tap_features(const struct tap *t);
/* Multiqueue TAP: attach or detach this queue (TUNSETQUEUE), so the kernel steers flows only to
 * queues whose guest ring is in use. */
int tap_set_queue_attached(struct tap *t, bool attached);
/* Interface helpers (ioctl on a socket in the caller's network namespace). */
int tap_set_link(const char *ifname, bool up);
int tap_set_mtu(const char *ifname, unsigned mtu);
int tap_exists(const char *ifname);

extern const struct be_ops tap_be_ops;

#endif
