/* SPDX-License-Identifier: MIT */
/*
 * A small event loop for the control plane (vhost-user sockets, signals, reconnect timers): fds
 * with callbacks, one-shot timers, a stop flag. The datapath never runs here; it runs in workers.
 */
#ifndef VIRTAP_EVL_H
#define VIRTAP_EVL_H

#include <stdint.h>

struct evl;
typedef void (*evl_fd_fn)(void *arg, int fd, unsigned events);
typedef void (*evl_timer_fn)(void *arg);

int evl_create(struct evl **out);
void evl_destroy(struct evl *l);
/* Watch fd for events (EPOLLIN...); one registration per fd. */
int evl_add(struct evl *l, int fd, unsigned events, evl_fd_fn fn, void *arg);
int evl_mod(struct evl *l, int fd, unsigned events);
void evl_del(struct evl *l, int fd);
/* Call fn(arg) once after ms milliseconds; returns a timer id > 0. */
long evl_timer(struct evl *l, unsigned ms, evl_timer_fn fn, void *arg);
void evl_timer_cancel(struct evl *l, long id);
/* One pass: wait at most timeout_ms (0: not at all) for events, dispatch them and due timers. */
int evl_poll(struct evl *l, int timeout_ms);
/* Run until evl_stop; returns 0 or -errno. */
int evl_run(struct evl *l);
void evl_stop(struct evl *l);

#endif
