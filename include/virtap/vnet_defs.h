/* SPDX-License-Identifier: MIT */
/*
 * virtio-net wire definitions (VIRTIO 1.2 section 5.1) that every layer may use: feature bits and
 * the header layout. Definitions only, no code. Taken from the kernel UAPI where it has them, with
 * the bits Debian 12's headers predate (USO) filled in.
 */
#ifndef VIRTAP_VNET_DEFS_H
#define VIRTAP_VNET_DEFS_H

#include <linux/virtio_net.h>
#include <stdint.h>

#ifndef VIRTIO_NET_F_GUEST_USO4
#define VIRTIO_NET_F_GUEST_USO4 54
#endif
#ifndef VIRTIO_NET_F_GUEST_USO6
#define VIRTIO_NET_F_GUEST_USO6 55
#endif
#ifndef VIRTIO_NET_F_HOST_USO
#define VIRTIO_NET_F_HOST_USO 56
#endif
#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5
#endif

#define VNET_BIT(b) (1ull << (b))

/* The header the device and driver exchange; 10 bytes (legacy) or 12 (num_buffers present). */
struct vnet_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len; /* little-endian on the wire */
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers; /* only with VERSION_1 or MRG_RXBUF */
} __attribute__((packed));

#define VNET_HDR_LEN_LEGACY 10
#define VNET_HDR_LEN_V1	    12

/* Largest frame the TAP hands us with GSO on: 64 KiB of IP plus an Ethernet + VLAN header. */
#define VNET_MAX_FRAME (65535 + 14 + 4)

#endif
