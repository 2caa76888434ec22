/* SPDX-License-Identifier: MIT */
/*
 * vhost-user net ports. A port is one vhost-user socket (server: we listen; client: we connect to
 * a frontend listening) bound to one TAP device (one TAP queue per queue pair). The port speaks the
 * vhost-user protocol on the control-plane event loop and hands the rings to worker threads.
 * Every message is validated before use; a bad one fails or drops that port's connection only.
 */
#ifndef VIRTAP_VU_H
#define VIRTAP_VU_H

#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

#include "virtap/evl.h"
#include "virtap/vnet.h"

struct wrk;

enum vu_threads {
	VU_THREADS_PORT = 0,  /* one worker thread for all queue pairs of the port */
	VU_THREADS_QUEUE = 1, /* one worker thread per queue pair */
};

struct vu_port_config {
	char name[32];
	char socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char tap[IF_NAMESIZE];
	bool client;	       /* connect to the frontend's socket instead of listening */
	unsigned reconnect_ms; /* client mode: retry interval */
	unsigned queues;       /* queue pairs offered, 1..VNET_MAX_QUEUE_PAIRS */
	unsigned mtu;	       /* 0: leave the TAP's MTU and do not offer VIRTIO_NET_F_MTU */
	enum vu_threads threads;
	unsigned busy_poll_us; /* >0: workers busy-poll, back to notifications after this idle */
	/*
	 * Non-NULL: every queue pair of the port runs on this worker, which other ports may share
	 * (one thread, and when it busy-polls one CPU, for many ports, the way one DPDK lcore
	 * serves many). The caller creates, starts and configures it (busy_poll_us is not applied
	 * to it) and destroys it only after every port on it. Needs threads == VU_THREADS_PORT.
	 */
	struct wrk *worker;
	char worker_name[16];	/* the daemon's name for that worker (worker=NAME), for logs */
	char backend[24];	/* "tap" (default), "sink", "source[:LEN]" or "echo" */
	struct vnet_config net; /* budgets, hold size, padding */
};

void vu_port_config_default(struct vu_port_config *c);

struct vu_port;

/* Open the TAP (creating it if needed, link up), then listen or start connecting. */
int vu_port_create(struct vu_port **out, const struct vu_port_config *cfg, struct evl *loop);
void vu_port_destroy(struct vu_port *p);
/* Serve a frontend on an already connected stream socket (an embedding VMM's socketpair, or a
 * fuzzer). Takes fd; -EBUSY if the port has a frontend already. */
int vu_port_adopt(struct vu_port *p, int fd);
bool vu_port_connected(const struct vu_port *p);
const char *vu_port_name(const struct vu_port *p);
/* Sum of every queue pair's counters. */
void vu_port_stats(const struct vu_port *p, struct vnet_stats *st);
/* One queue pair's counters (qp < queues), and how many pairs the port has. */
void vu_port_qp_stats(const struct vu_port *p, unsigned qp, struct vnet_stats *st);
unsigned vu_port_queues(const struct vu_port *p);

#endif
