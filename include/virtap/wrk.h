/* SPDX-License-Identifier: MIT */
/*
 * Workers: the vhost-net worker model in userspace. One thread per worker runs an epoll loop over
 * the kick eventfds and backend fds of the queue pairs it serves, plus a control eventfd.
 * Readiness queues RX or TX work for that pair; each handler run is budgeted and the pairs are
 * served round-robin, so one busy queue cannot starve the others. A worker can serve one queue
 * pair (per-queue-pair threading) or all pairs of one or more devices (per-device threading).
 */
#ifndef VIRTAP_WRK_H
#define VIRTAP_WRK_H

#include <stdbool.h>
#include <stdint.h>

#include "virtap/vnet.h"

/* Queue pairs one worker serves: a shared worker may take every pair of the daemon's 64 ports
 * at 16 pairs each. */
#define WRK_MAX_PORTS 1024

struct wrk;

int wrk_create(struct wrk **out, const char *name);
/* Stop the thread (if running) and free the worker; pairs still attached are detached. */
void wrk_destroy(struct wrk *w);
int wrk_start(struct wrk *w);
void wrk_stop(struct wrk *w);

/* Serve qp: its rings (qp->rx, qp->tx) must be set up or not ready yet. Synchronous. */
int wrk_add(struct wrk *w, struct vnet_qp *qp);
/* Stop serving qp; on return no handler of it runs or will run. Returns the rings' next avail
 * indices (vhost-user GET_VRING_BASE) if the pointers are non-NULL. */
int wrk_remove(struct wrk *w, struct vnet_qp *qp, uint16_t *rx_base, uint16_t *tx_base);
/* Run fn(arg) on the worker thread between handler runs and wait for it: the way to change
 * anything a handler reads (memory table, features) without locks on the datapath. */
int wrk_call(struct wrk *w, void (*fn)(void *), void *arg);
/* Ask the worker to look at qp again (after a ring became ready or fds changed). */
int wrk_refresh(struct wrk *w, struct vnet_qp *qp);
/*
 * Busy-poll mode: while traffic flows the worker polls its rings and backends without sleeping
 * and with guest kicks turned off; after idle_us microseconds without a packet it turns kicks
 * back on and sleeps in epoll until the next event. 0 (the default) never polls.
 */
int wrk_set_busy_poll(struct wrk *w, unsigned idle_us);
/* Whether the worker is currently polling (for tests and stats). */
bool wrk_is_polling(const struct wrk *w);

#endif
