/* SPDX-License-Identifier: MIT */
/*
 * SIGBUS guard for memory a frontend shares with us. A mapping of a frontend's fd (guest memory
 * regions, the dirty log, the inflight area) faults with SIGBUS once the frontend shrinks the
 * file under it (a tmpfs or hugetlbfs file, or a memfd created without MFD_ALLOW_SEALING, which
 * we cannot seal), or when a MAP_NORESERVE hugetlbfs mapping finds the pool empty. Without a
 * guard that signal kills the daemon and every port with it, for a fault only the frontend made.
 *
 * Every such mapping is registered here with its owner (one per vhost-user connection). The
 * process-wide SIGBUS handler (gmem_guard_install) looks the faulting address up in a lock-free
 * table; if a registered mapping holds it, the rest of that mapping from the faulting page on is
 * replaced with anonymous zero memory, so the access completes, and the owner is flagged and
 * woken through its eventfd: its control loop tears that device down. A SIGBUS at any other
 * address goes to the handler that was there before (a sanitizer's) or kills the process as it
 * always did. The handler never takes a lock, allocates or logs.
 */
#ifndef VIRTAP_GMEM_GUARD_H
#define VIRTAP_GMEM_GUARD_H

#include <stddef.h>
#include <stdint.h>

/* Mappings guarded at once: 64 ports with 509 regions, a log and an inflight area each. */
#define GMEM_GUARD_MAX 32768

/* One per device (vhost-user connection). The handler writes only through atomics and write(2). */
struct gmem_guard_owner {
	int wake_fd;	  /* an eventfd: 8 bytes written per patched fault, -1 for none */
	unsigned faults;  /* patched faults not yet taken (gmem_guard_take) */
	void *first_addr; /* the address of the first patched fault, NULL if none */
};

/* Set up an owner with no faults; wake_fd may be -1. */
void gmem_guard_owner_init(struct gmem_guard_owner *o, int wake_fd);
/* Patched faults since the last call (0 if none), and the first one's address; resets both.
 * Call with every mapping of the owner gone to start it afresh for a new device. */
unsigned gmem_guard_take(struct gmem_guard_owner *o, void **first_addr);

/*
 * Guard [base, base + len), a MAP_SHARED mapping of an fd (fd is only looked at: a hugetlbfs
 * file needs its patches aligned to its huge page size). owner may be NULL (the fault is patched,
 * nobody is told). -ENOSPC when the table is full: the caller should not map it.
 */
int gmem_guard_add(void *base, size_t len, int fd, struct gmem_guard_owner *owner);
/* Stop guarding the mapping that starts at base; call before munmap. On return no handler is
 * still working on it, so its address range may be reused. */
void gmem_guard_remove(void *base);

/*
 * Install the process-wide SIGBUS handler (idempotent). The daemon calls it at start; an
 * embedding program that has its own SIGBUS handler may call it after installing that one, which
 * then still sees every SIGBUS the guard does not own. -EBUSY if the handler did not stick (a
 * sanitizer run with allow_user_segv_handler=0 ignores it), -errno of sigaction.
 */
int gmem_guard_install(void);

#endif
