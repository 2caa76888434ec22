/* SPDX-License-Identifier: MIT */
/*
 * vhost-user wire format (the vhost-user specification in QEMU's docs/interop): message header,
 * request codes and payloads as they travel on the Unix socket. Little-endian host assumed, as
 * the specification does ("native endianness" of the host both sides share).
 */
#ifndef VU_PROTO_H
#define VU_PROTO_H

#include <stdint.h>

enum vu_req {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_SEND_RARP = 19,
	VU_NET_SET_MTU = 20,
	VU_SET_BACKEND_REQ_FD = 21,
	VU_IOTLB_MSG = 22,
	VU_SET_VRING_ENDIAN = 23,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
	VU_GET_INFLIGHT_FD = 31,
	VU_SET_INFLIGHT_FD = 32,
	VU_GET_MAX_MEM_SLOTS = 36,
	VU_ADD_MEM_REG = 37,
	VU_REM_MEM_REG = 38,
	VU_REQ_MAX = 64,
};

/* Header flags. */
#define VU_VERSION	   0x1u
#define VU_VERSION_MASK	   0x3u
#define VU_FLAG_REPLY	   (1u << 2)
#define VU_FLAG_NEED_REPLY (1u << 3)

/* Protocol feature bits. */
enum {
	VU_PF_MQ = 0,
	VU_PF_LOG_SHMFD = 1,
	VU_PF_RARP = 2,
	VU_PF_REPLY_ACK = 3,
	VU_PF_MTU = 4,
	VU_PF_BACKEND_REQ = 5,
	VU_PF_CONFIG = 9,
	VU_PF_INFLIGHT_SHMFD = 12,
	VU_PF_CONFIGURE_MEM_SLOTS = 15,
};

/* Device feature bits that belong to vhost-user itself. */
#define VU_F_LOG_ALL	       26
#define VU_F_PROTOCOL_FEATURES 30

/* Fds per message: VHOST_MEMORY_BASELINE_NREGIONS. */
#define VU_MAX_FDS	   8
#define VU_MAX_MEM_REGIONS 8
/* Memory slots we accept with CONFIGURE_MEM_SLOTS (gmem's limit). */
#define VU_MAX_MEM_SLOTS  509
#define VU_VRING_IDX_MASK 0xffu
#define VU_VRING_NOFD	  (1ull << 8)

struct vu_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
} __attribute__((packed));

struct vu_vring_state {
	uint32_t index;
	uint32_t num;
} __attribute__((packed));

struct vu_vring_addr {
	uint32_t index;
	uint32_t flags;
	uint64_t desc_user_addr;
	uint64_t used_user_addr;
	uint64_t avail_user_addr;
	uint64_t log_guest_addr;
} __attribute__((packed));

struct vu_mem_region {
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t mmap_offset;
} __attribute__((packed));

struct vu_mem_table {
	uint32_t nregions;
	uint32_t padding;
	struct vu_mem_region regions[VU_MAX_MEM_REGIONS];
} __attribute__((packed));

struct vu_mem_reg_msg {
	uint64_t padding;
	struct vu_mem_region region;
} __attribute__((packed));

#define VU_CONFIG_MAX 256
struct vu_config {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;
	uint8_t region[VU_CONFIG_MAX];
} __attribute__((packed));

/* Inflight description (GET/SET_INFLIGHT_FD). QEMU's struct is not packed: 20 bytes of fields,
 * 24 with its tail padding, and that is what it sends and expects back. */
struct vu_inflight {
	uint64_t mmap_size;
	uint64_t mmap_offset;
	uint16_t num_queues;
	uint16_t queue_size;
	uint32_t padding;
} __attribute__((packed));
#define VU_INFLIGHT_MIN 20

/* Largest payload any request we accept carries. */
#define VU_MAX_PAYLOAD sizeof(struct vu_config)

#endif
