/* SPDX-License-Identifier: MIT */
/*
 * A daemon's echo ports as the tests that run the real binary see them: a set of ports written
 * into a config file (one [port] section each, backend echo), the daemon reloaded with SIGHUP,
 * a vhost-user frontend (vufe.h) per port, and traffic numbered per port so that every frame
 * must come back in order and byte-exact. Shared by test_many_ports and test_shared_worker.
 */
#ifndef VT_ECHOPORT_H
#define VT_ECHOPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vufe.h"

struct ep {
	char name[16];
	char sock[108];
	char extra[96]; /* more lines for its [port] section ("worker = w0\n"...) */
	bool present;	/* in the config file */
	bool connected; /* our frontend has a session */
	unsigned id;	/* in the frames' sequence numbers: its index in the set */
	struct vufe fe;
	uint32_t sent, rcvd; /* the next sequence number to send, to expect */
};

struct ep_set {
	struct ep *p;
	unsigned n;
	char dir[64], cfg[108], cfg_tmp[112], log[108];
	pid_t vt; /* the daemon, once the test has started it */
};

/* A fresh directory /tmp/vt-TAG-XXXXXX for the config, the log and the sockets of n ports at p
 * (zeroed here); names with ep_name. Exits the test if the directory cannot be made. */
void ep_set_init(struct ep_set *s, struct ep *p, unsigned n, const char *tag);
/* Name port i (its socket is DIR/NAME.sock). */
void ep_name(struct ep_set *s, unsigned i, const char *name);
/* Write the config with the present ports, atomically (the daemon reads whole files). */
void ep_write_config(struct ep_set *s);
/* Write the config, SIGHUP the daemon, wait until every socket is there or gone as it should. */
bool ep_reload(struct ep_set *s);
/* The daemon started on the config file; false if it did not start or its sockets did not
 * appear. */
bool ep_daemon_start(struct ep_set *s);
/* Connect port i's frontend (a 256-entry ring, 128 RX buffers posted); counters reset. */
bool ep_up(struct ep_set *s, unsigned i);
void ep_down(struct ep_set *s, unsigned i);
/* n frames out on port i (sizes 60..1514), without waiting for them. */
bool ep_send(struct ep_set *s, unsigned i, unsigned n);
/* Every frame sent on port i and not yet received comes back, in order, byte-exact; RX refilled,
 * TX drained, no bad ring entry. A line on stderr says which frame failed. */
bool ep_recv_all(struct ep_set *s, unsigned i);
/* n frames each way on every connected port, all at once: how many ports passed; *tried (if
 * not NULL) how many were connected. */
unsigned ep_traffic(struct ep_set *s, unsigned n, unsigned *tried);
/* Hang up every frontend; remove the config, the log and the directory. */
void ep_set_fini(struct ep_set *s);

#endif
