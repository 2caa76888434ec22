/* SPDX-License-Identifier: MIT */
/*
 * The test driver: a fake guest. Its RAM is a memfd mapped twice, once as "the guest" (this
 * driver's view) and once by gmem_add_fd as the device sees it, the way a vhost-user frontend
 * shares memory. It builds split rings and buffers the way a driver does, kicks and receives
 * calls through eventfds, and can also write any malformed ring shape an attacker would.
 * Shared by the unit tests, the fuzzers and the benchmarks.
 */
#ifndef VT_FAKEGUEST_H
#define VT_FAKEGUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "virtap/gmem.h"
#include "virtap/vq.h"

#define FG_GPA_BASE 0x40000000ull

struct fg {
	int memfd;
	uint8_t *mem; /* guest's own view */
	uint64_t size;
	uint64_t brk;	/* bump allocator, offset from FG_GPA_BASE */
	struct gmem gm; /* device's view */
};

struct fg_buf {
	uint64_t gpa;
	uint32_t len;
	bool write; /* device-writable */
};

struct fg_vq {
	struct fg *g;
	uint16_t num;
	uint64_t desc, avail, used; /* gpa */
	uint16_t avail_idx;	    /* next avail idx the guest publishes */
	uint16_t last_used;	    /* next used entry the guest reads */
	uint16_t *free_next;	    /* free descriptor list */
	uint16_t free_head, nfree;
	uint16_t *chain_len; /* descriptors per head, to free them */
	int kick_fd, call_fd;
};

int fg_init(struct fg *g, uint64_t size);
void fg_destroy(struct fg *g);
uint64_t fg_alloc(struct fg *g, uint64_t size, uint64_t align);
void *fg_va(struct fg *g, uint64_t gpa);

int fg_vq_init(struct fg *g, struct fg_vq *q, uint16_t num);
void fg_vq_destroy(struct fg_vq *q);
/* vq_init + vq_setup on the device side with this ring and its eventfds. */
int fg_vq_attach(struct fg_vq *q, struct vq *vq, const char *name, uint64_t features);
/* Build a chain (direct, or one indirect table) and put its head in the avail ring, unpublished.
 * Returns the head, or -ENOSPC when out of descriptors. */
int fg_add(struct fg_vq *q, const struct fg_buf *bufs, unsigned n, bool indirect);
/* Make added chains visible (avail->idx store) and, if kick, signal the kick eventfd. */
void fg_publish(struct fg_vq *q, bool kick);
/* Take one used entry; 1 if there was one. Frees the chain's descriptors. */
int fg_used(struct fg_vq *q, uint32_t *id, uint32_t *len);
/* Number of used entries waiting. */
unsigned fg_used_pending(struct fg_vq *q);
/* Wait (up to ms) for the call eventfd; returns its count, 0 on timeout. */
uint64_t fg_wait_call(struct fg_vq *q, int ms);
/* Guest-side suppression controls. */
void fg_set_used_event(struct fg_vq *q, uint16_t v);
void fg_set_avail_flags(struct fg_vq *q, uint16_t flags);
uint16_t fg_used_flags(struct fg_vq *q);
uint16_t fg_avail_event(struct fg_vq *q);

/* Raw ring writes for the malicious-guest tests. */
void fg_raw_desc(struct fg_vq *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next);
void fg_raw_avail(struct fg_vq *q, uint16_t slot, uint16_t head);
void fg_raw_avail_idx(struct fg_vq *q, uint16_t idx);
/* Write an indirect table at gpa. */
void fg_raw_table(struct fg *g, uint64_t gpa, unsigned i, uint64_t addr, uint32_t len,
		  uint16_t flags, uint16_t next);

#endif
