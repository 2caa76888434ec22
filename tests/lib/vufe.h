/* SPDX-License-Identifier: MIT */
/*
 * The test driver's vhost-user frontend: what QEMU does on the socket, in-process, driving a fake
 * guest (fakeguest.h) whose memory the backend maps. Two layers: raw messages on any socket (for
 * the tests that send malformed ones), and a session (struct vufe) that negotiates, shares the
 * guest's memory, starts queue pairs and moves frames through them, checking the rules a driver
 * relies on (no buffer returned twice or never given, num_buffers consistent). Shared by
 * test_vu, test_inflight and the echo ports (echoport.h); one frontend implementation for all
 * of them.
 */
#ifndef VT_VUFE_H
#define VT_VUFE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fakeguest.h"

#define VUFE_WAIT_MS   2000 /* nothing a test waits for may take longer */
#define VUFE_MAX_PAIRS 4
#define VUFE_MAX_RINGS (2 * VUFE_MAX_PAIRS)
#define VUFE_MAX_FDS   32   /* fds one test message may carry */
#define VUFE_BUF       2048 /* one buffer per descriptor, header included */

/* ---- raw messages ------------------------------------------------------------------------ */

/* A connected socket whose blocking reads give up after VUFE_WAIT_MS; exits the test if the
 * socket cannot connect. */
int vufe_sock_connect(const char *path);
/* One message (header + payload) written at buf; returns its length. */
size_t vufe_msg_put(uint8_t *buf, uint32_t req, uint32_t flags, const void *pl, uint32_t size);
/* Bytes (and fds) in one sendmsg: 0, or -1. */
int vufe_send_raw(int s, const void *buf, size_t len, const int *fds, unsigned nfds);
int vufe_send_msg(int s, uint32_t req, uint32_t flags, const void *pl, uint32_t size,
		  const int *fds, unsigned nfds);
/* One reply to req: its payload size, -1 if the backend closed the connection, -2 on a timeout or
 * a malformed reply. With fd non-NULL, an fd that came with it (else -1). */
int vufe_recv_reply(int s, uint32_t req, void *pl, size_t cap, int *fd);
/* A request with NEED_REPLY (REPLY_ACK negotiated): 0 acked with success, 1 acked with a
 * failure, -1 the backend closed the connection, -2 no valid answer. */
long vufe_call(int s, uint32_t req, const void *pl, uint32_t size, const int *fds, unsigned nfds);
long vufe_call_u64(int s, uint32_t req, uint64_t v);
long vufe_call_state(int s, uint32_t req, uint32_t idx, uint32_t num);
long vufe_call_vring_fd(int s, uint32_t req, uint64_t idx, int fd);
/* A request answered with a u64 (GET_FEATURES...): 0 with *out set, or -1. */
int vufe_get_u64(int s, uint32_t req, uint64_t *out);
/* GET_VRING_BASE: the ring's next avail index, or -1. */
long vufe_get_vring_base(int s, uint32_t idx);
/* True once the backend has closed this connection (a read sees the end within ms). */
bool vufe_peer_closed(int s, int ms);
/* Connect and ask GET_FEATURES, retrying for up to ms while the port still serves a previous
 * frontend (a second one is refused). The socket, or -1. */
int vufe_open(const char *path, uint64_t *features, int ms);

/* ---- a session ----------------------------------------------------------------------------- */

struct vufe_opts {
	unsigned pairs;	  /* queue pairs started, 1..VUFE_MAX_PAIRS */
	uint16_t qsize;	  /* ring size */
	bool event_idx;	  /* negotiate VIRTIO_RING_F_EVENT_IDX */
	bool inflight;	  /* INFLIGHT_SHMFD: GET_INFLIGHT_FD once, SET_INFLIGHT_FD every start */
	bool nomrg;	  /* do not negotiate MRG_RXBUF */
	bool log;	  /* negotiate LOG_SHMFD (vufe_log_start turns dirty logging on) */
	int open_wait_ms; /* vufe_start: how long to retry a busy or missing socket */
};

struct vufe {
	int sock;
	char path[108];
	struct vufe_opts o;
	struct fg g;
	unsigned nrings;
	struct fg_vq q[VUFE_MAX_RINGS]; /* vhost-user order: 2i RX, 2i + 1 TX of pair i */
	uint64_t *buf[VUFE_MAX_RINGS];	/* descriptor -> its VUFE_BUF buffer (gpa) */
	uint8_t *owned[VUFE_MAX_RINGS]; /* head -> 1 while the device owns the chain */
	unsigned nowned[VUFE_MAX_RINGS];
	unsigned used[VUFE_MAX_RINGS]; /* used entries taken */
	uint16_t base[VUFE_MAX_RINGS]; /* SET_VRING_BASE of the next start */
	uint64_t dev_features;	       /* GET_FEATURES */
	uint64_t features;	       /* the virtio features acked (SET_FEATURES) */
	uint64_t pfeatures;	       /* protocol features acked */
	uint8_t last_hdr[12];	       /* virtio-net header of the last frame received */
	/* the inflight area the backend gave us (GET_INFLIGHT_FD), kept across backend restarts */
	int infl_fd;
	uint8_t *infl;
	uint64_t infl_size;
	/* what the guest saw break: a used entry naming a head the device did not own (returned
	 * twice, or never given), a received frame whose num_buffers does not add up */
	unsigned bad_used, bad_rx;
	bool batching; /* vufe_batch: chains added but not published */
	/* the dirty log we shared (vufe_log_start): one bit per 4 KiB page from gpa 0 */
	uint8_t *log;
	uint64_t log_size;
	int log_fd;
	bool logging;
};

/* Guest memory (mem_size bytes) with rings and buffers; no socket yet. opts NULL: 1 pair, 256
 * entries, MRG_RXBUF, no EVENT_IDX, no inflight. */
int vufe_init(struct vufe *fe, uint64_t mem_size, const struct vufe_opts *opts);
/* Close the socket, unmap everything. */
void vufe_fini(struct vufe *fe);
/* Connect (fe->sock, fe->dev_features) without negotiating anything yet. 0 or -1. */
int vufe_open_session(struct vufe *fe, const char *path);
/* Messages in the start sequence, and step k of it (QEMU's order: protocol features, owner,
 * features, memory table, inflight area, then per ring NUM, BASE, ADDR, KICK, CALL, ENABLE).
 * Steps 0-5 and the ring steps come at the same indices with and without inflight. */
unsigned vufe_nsteps(const struct vufe *fe);
unsigned vufe_ring_step0(const struct vufe *fe);
bool vufe_step(struct vufe *fe, unsigned k);
/* vufe_open_session, then every step: 0, or -1 (the failed step is printed). */
int vufe_start(struct vufe *fe, const char *path);
/* vufe_init + vufe_start. */
int vufe_connect(struct vufe *fe, const char *sock_path, uint64_t mem_size);
int vufe_connect_opts(struct vufe *fe, const char *sock_path, uint64_t mem_size,
		      const struct vufe_opts *opts);
/* Hang up (the guest and its rings stay). */
void vufe_disconnect(struct vufe *fe);
/* A new connection to the same path, rings restarted where the guest is: SET_VRING_BASE from each
 * used ring's index, as QEMU does after losing its backend; the saved inflight area again. */
int vufe_reconnect(struct vufe *fe);
/* vufe_disconnect + vufe_fini. */
void vufe_close(struct vufe *fe);

/* Live migration as QEMU starts it on a running device (vhost_migration_log): SET_LOG_BASE with
 * a log covering all guest memory (LOG_SHMFD, the empty reply awaited), SET_FEATURES with
 * VHOST_F_LOG_ALL, then SET_VRING_ADDR with VHOST_VRING_F_LOG and the used ring's address for
 * every ring. Needs opts.log. 0, or -1 (the failed step is printed). */
int vufe_log_start(struct vufe *fe);
/* Whether the device has marked the page of gpa in the log. */
bool vufe_log_marked(const struct vufe *fe, uint64_t gpa);
/* Stop every ring as QEMU does before handing the guest over (vhost_virtqueue_stop):
 * GET_VRING_BASE ring by ring; the indices land in fe->base, ready for the next start (on this
 * port or another). 0, or -1. */
int vufe_stop(struct vufe *fe);

/* Frontend address of guest memory (ring addresses travel as frontend addresses). */
uint64_t vufe_uva(struct vufe *fe, uint64_t gpa);
long vufe_set_mem_table(struct vufe *fe);
long vufe_set_vring_addr(struct vufe *fe, uint32_t ring);
/* The used index the device has published on ring i. */
uint16_t vufe_used_idx(struct vufe *fe, unsigned ring);

/* Guest TX on pair 0 (or pair qp): a zero header and the frame in one descriptor, published and
 * kicked. The head, or -ENOSPC when the ring is full (reap first), -EMSGSIZE. */
int vufe_send(struct vufe *fe, const void *frame, size_t len);
int vufe_send_q(struct vufe *fe, unsigned qp, const void *frame, size_t len);
/* Batch: while on, vufe_send and vufe_post_rx add chains without publishing them; turning it
 * off publishes every ring with one index store and one kick each (a burst the device takes in
 * one run). */
void vufe_batch(struct vufe *fe, bool on);
/* Put n RX buffers of size bytes (<= VUFE_BUF) on pair 0 (or qp); returns how many fitted. */
int vufe_post_rx(struct vufe *fe, unsigned n, uint32_t size);
int vufe_post_rx_q(struct vufe *fe, unsigned qp, unsigned n, uint32_t size);
/* Take one used entry of ring i, waiting up to ms: 1 with *id and *len set, 0 if none came. A head
 * the device did not own is counted in bad_used and skipped (returns 1 with *id = 0xffffffff). */
int vufe_take_used(struct vufe *fe, unsigned ring, uint32_t *id, uint32_t *len, int ms);
/* Take every TX used entry of pair qp now; returns how many. */
unsigned vufe_reap_tx(struct vufe *fe, unsigned qp);
/* Wait until the device has returned every TX chain of pair qp; false after ms. */
bool vufe_tx_drain(struct vufe *fe, unsigned qp, int ms);
/* A received frame on pair 0 (no wait), or on qp (waiting up to ms), header stripped (kept in
 * last_hdr): its length, 0 if none, -1 if malformed (counted in bad_rx). */
long vufe_recv(struct vufe *fe, void *buf, size_t cap);
long vufe_recv_q(struct vufe *fe, unsigned qp, void *buf, size_t cap, int ms);

/* Echo traffic on queue pair 0. Frame seq has vufe_echo_len(seq) bytes (60..1514, scattered)
 * and contents from seq (make_frame). vufe_echo_send sends it (vufe_send's result);
 * vufe_echo_expect takes the next received frame, waiting up to VUFE_WAIT_MS, and checks it is
 * frame seq byte-exact (false with a line on stderr naming who and the frame if not);
 * vufe_echo_settle refills RX, waits for every TX chain back and checks no ring entry was bad. */
size_t vufe_echo_len(uint32_t seq);
int vufe_echo_send(struct vufe *fe, uint32_t seq);
bool vufe_echo_expect(struct vufe *fe, uint32_t seq, const char *who);
bool vufe_echo_settle(struct vufe *fe);
/* Against an echo backend on queue pair 0: 16 frames out (sequence numbers from *sent, sizes
 * 60..1514), the same 16 back in order and byte-exact, RX refilled, TX reaped. False on any
 * loss, difference or bad ring entry (a line on stderr says which frame). */
bool vufe_echo_round(struct vufe *fe, uint32_t *sent, uint32_t *rcvd);

#endif
