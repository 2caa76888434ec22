/* SPDX-License-Identifier: MIT */
/*
 * I/O on descriptors a peer controls (the kick and call eventfds a vhost-user frontend passes).
 * The peer shares the open file description of every fd it passes: it can clear O_NONBLOCK at any
 * moment and preload the counter, so a read or write we expect to return at once may sleep for
 * ever. A thread that serves several ports (a worker) must never sleep there. Such a thread
 * registers with pfd_thread_enter and does its peer I/O through pfd_read_u64 / pfd_write_u64; a
 * watchdog thread sees a call that has not returned after one to two ticks (PFD_TICK_MS) and
 * interrupts it with a signal whose handler does nothing and does not restart the call, so the
 * call returns -ETIMEDOUT and the caller drops that peer. The cost on the fast path is two stores
 * to this thread's own state; a call that does not block is never interrupted (the signal is only
 * sent to a thread seen inside the same call on two ticks, and a call that is running, not
 * sleeping, finishes before the handler runs).
 */
#ifndef VIRTAP_PFD_H
#define VIRTAP_PFD_H

#include <stdbool.h>
#include <stdint.h>

/* Watchdog period: a stuck call is interrupted after PFD_TICK_MS to 2 * PFD_TICK_MS. */
#define PFD_TICK_MS 20

/* Register the calling thread (name for the log): 1 if registered now, 0 if it was already, or
 * -errno if the watchdog cannot start (then peer I/O on this thread is not guarded and may
 * block). Whoever got 1 calls pfd_thread_leave before the thread ends. */
int pfd_thread_enter(const char *name);
/* Unregister the calling thread (before it exits). */
void pfd_thread_leave(void);

/* Write/read one 8-byte eventfd value. 0 on success; -EAGAIN (non-blocking and full/empty);
 * -ETIMEDOUT if the call slept and the watchdog interrupted it (the peer made the fd block);
 * -errno otherwise. */
int pfd_write_u64(int fd, uint64_t v);
int pfd_read_u64(int fd, uint64_t *v);

/* True if fd is an eventfd (the only kind of kick or call fd we accept), from /proc; without
 * /proc mounted, true for any open fd. */
bool pfd_is_eventfd(int fd);

#endif
