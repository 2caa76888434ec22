// SPDX-License-Identifier: MIT
/*
 * vhost-user net port: the protocol server for one socket. Threat model: the peer on the socket is
 * a separate, possibly compromised process (a frontend exposed to a hostile guest, or anything that
 * can reach the socket). Every message is size-, fd- and range-checked against a table before a
 * handler sees it; handlers check values (ring indices, queue sizes, addresses inside the memory
 * map). A bad message fails that message (REPLY_ACK) or drops this connection; it never touches
 * another port. Floods cost bounded work: a connection is served at most MSG_BUDGET messages per
 * wake-up, connections beyond the one frontend are closed at once, and what a peer makes us log
 * is rate-limited per port. A frontend that shrinks a file we mapped for it (SIGBUS) breaks its
 * own device only (gmem_guard.h). Ring state changes are applied with the ring's queue pair
 * detached from its worker, so the datapath never sees half-updated state and needs no locks.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "virtap/gmem.h"
#include "virtap/gmem_guard.h"
#include "virtap/log.h"
#include "virtap/membe.h"
#include "virtap/pfd.h"
#include "virtap/tap.h"
#include "virtap/vu.h"
#include "virtap/wrk.h"
#include "vu_proto.h"

#define NRINGS_MAX (2 * VNET_MAX_QUEUE_PAIRS)
#define F(b)	   (1ull << (b))
/* Messages handled per wake-up of one connection: a peer that writes as fast as we read must
 * not keep the control loop (and every other port on it) from running. */
#define MSG_BUDGET 64
/* Connections accepted per wake-up of the listening socket, for the same reason. */
#define ACCEPT_BUDGET 16
/* Log lines a peer can cause: at most LOG_BURST per LOG_INTERVAL_MS per port, then a count. */
#define LOG_BURST	20
#define LOG_INTERVAL_MS 10000
/* After dropping a frontend whose eventfd blocked a worker, refuse connections for this long:
 * each such frontend costs the worker (maybe shared with other ports) up to two watchdog ticks
 * (pfd.h), and a peer that reconnects at once must not turn that into a steady stall. */
#define STUCK_HOLDOFF_MS 1000
/* A listening socket that cannot accept (no fd left) is not watched for this long. */
#define EMFILE_PAUSE_MS 500

struct vu_vring {
	uint32_t num;
	struct vu_vring_addr addr;
	bool addr_set;
	uint16_t base;
	int kick_fd, call_fd, err_fd;
	bool started; /* has a kick fd (or was told to poll) and no GET_VRING_BASE since */
	bool enabled;
	bool running;  /* set up on a virtqueue and served by a worker */
	bool broken;   /* stays broken until the frontend stops and restarts the ring */
	bool resubmit; /* chains a previous device left in flight are to be taken again */
	struct vq_stats stats;
};

struct vu_port {
	struct vu_port_config cfg;
	struct evl *loop;
	int listen_fd, conn_fd;
	long reconnect_timer; /* client: the next connect; server: the end of a listen pause */
	/* SIGBUS in a mapping of this connection's fds (gmem_guard.h): counted by the handler,
	 * which wakes us through guard_fd. */
	struct gmem_guard_owner guard;
	int guard_fd;
	struct vt_ratelimit err_rl;		 /* errors the frontend causes */
	struct vt_ratelimit conn_rl;		 /* connects and disconnects */
	struct vt_ratelimit refuse_rl;		 /* refused connections: one line per interval */
	struct vt_ratelimit emfile_rl;		 /* accept failed for want of fds */
	struct vt_ratelimit ring_rl[NRINGS_MAX]; /* each ring's own lines (vq->rl), across
						    connections */
	/* The datapath's view of this port: halted when a frontend's fd blocked a worker; the
	 * worker then wakes us through guard_fd and we drop the frontend. */
	struct vnet_owner net_owner;
	long long holdoff_until_ms; /* refuse connections until then (STUCK_HOLDOFF_MS) */
	unsigned long long refused; /* connections refused while a frontend was being served */
	bool connect_failed_logged;
	bool listen_paused; /* out of fds: the listening socket is not watched for a while */
	unsigned nrings;
	struct tap taps[VNET_MAX_QUEUE_PAIRS];
	struct membe mems[VNET_MAX_QUEUE_PAIRS];
	bool mem_backend; /* sink/source/echo instead of the TAP */
	struct vnet_qp qps[VNET_MAX_QUEUE_PAIRS];
	struct wrk *wrk_of[VNET_MAX_QUEUE_PAIRS];
	struct wrk *wrks[VNET_MAX_QUEUE_PAIRS];
	struct gmem *mem;
	struct gmem_log log; /* live migration dirty log (SET_LOG_BASE) */
	/* Inflight I/O tracking (GET/SET_INFLIGHT_FD): the frontend's area, mapped, laid out as
	 * infl_nq queue regions for queues of infl_qsize entries; per ring our bookkeeping. */
	void *infl_map;
	size_t infl_map_len;
	uint8_t *infl_base;
	uint16_t infl_nq, infl_qsize;
	struct vq_inflight infl[NRINGS_MAX];
	uint64_t features, pfeatures;
	bool features_set, owner;
	struct vu_vring vr[NRINGS_MAX];
	/* the message being received */
	union {
		struct vu_hdr hdr;
		uint8_t bytes[sizeof(struct vu_hdr) + VU_MAX_PAYLOAD];
	} in;
	size_t have;
	int fds[VU_MAX_FDS];
	unsigned nfds;
	bool fds_overflow;
};

struct vu_ctx {
	struct vu_hdr hdr;
	const uint8_t *payload;
	int *fds;
	unsigned nfds;
	uint8_t reply[VU_MAX_PAYLOAD];
	uint32_t reply_size;
	bool has_reply;
	int reply_fd; /* sent with the reply (then closed), -1 if none */
};

typedef int (*vu_handler_fn)(struct vu_port *p, struct vu_ctx *c);

struct vu_rule {
	const char *name;
	uint16_t min_size, max_size;
	uint8_t min_fds, max_fds;
	vu_handler_fn fn;
};

static void port_disconnect(struct vu_port *p, const char *why);

/* A log line the frontend caused: rate-limited per port, so a peer flooding bad messages cannot
 * flood the log; the first line after a quiet spell says how many were left out. */
static void peer_log(struct vu_port *p, struct vt_ratelimit *rl, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void peer_log(struct vu_port *p, struct vt_ratelimit *rl, int level, const char *fmt, ...)
{
	unsigned missed;
	va_list ap;

	if (level > vt_log_get_level() || !vt_ratelimit(rl, LOG_BURST, LOG_INTERVAL_MS, &missed))
		return;
	if (missed)
		vt_log(level, "%s: %u more lines about the frontend left out (over %u in %u s)",
		       p->cfg.name, missed, LOG_BURST, LOG_INTERVAL_MS / 1000);
	va_start(ap, fmt);
	vt_vlog(level, fmt, ap);
	va_end(ap);
}

#define peer_err(p, ...)  peer_log((p), &(p)->err_rl, VT_LOG_ERR, __VA_ARGS__)
#define peer_warn(p, ...) peer_log((p), &(p)->err_rl, VT_LOG_WARN, __VA_ARGS__)
#define conn_info(p, ...) peer_log((p), &(p)->conn_rl, VT_LOG_INFO, __VA_ARGS__)

void vu_port_config_default(struct vu_port_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "port0");
	c->reconnect_ms = 1000;
	c->queues = 1;
	c->threads = VU_THREADS_PORT;
	vnet_config_default(&c->net);
}

const char *vu_port_name(const struct vu_port *p)
{
	return p->cfg.name;
}

bool vu_port_connected(const struct vu_port *p)
{
	return p->conn_fd >= 0;
}

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* ---- features -------------------------------------------------------------------------- */

static uint64_t offered_features(const struct vu_port *p)
{
	uint64_t f = vnet_offered_features(p->mem_backend ? membe_ops.features(NULL)
							  : tap_features(&p->taps[0]));

	f |= F(VU_F_PROTOCOL_FEATURES) | F(VU_F_LOG_ALL) |
	     F(27) /* ANY_LAYOUT: headers may share descriptors */;
	if (p->cfg.mtu)
		f |= F(VIRTIO_NET_F_MTU);
	if (p->cfg.queues > 1)
		f |= F(VIRTIO_NET_F_MQ);
	return f;
}

static uint64_t offered_pfeatures(const struct vu_port *p)
{
	/* Not CONFIG: virtio-net frontends own the config space (QEMU warns if offered). */
	uint64_t f = F(VU_PF_MQ) | F(VU_PF_REPLY_ACK) | F(VU_PF_RARP) |
		     F(VU_PF_CONFIGURE_MEM_SLOTS) | F(VU_PF_LOG_SHMFD) | F(VU_PF_INFLIGHT_SHMFD);

	if (p->cfg.mtu)
		f |= F(VU_PF_MTU);
	return f;
}

/* ---- rings: attach/detach queue pairs -------------------------------------------------- */

static struct wrk *worker_for(struct vu_port *p, unsigned qp)
{
	unsigned w = p->cfg.threads == VU_THREADS_QUEUE ? qp : 0;
	char name[16];

	if (p->cfg.worker)
		return p->cfg.worker;
	if (!p->wrks[w]) {
		snprintf(name, sizeof(name), "vt-%.6s-%u", p->cfg.name, w);
		if (wrk_create(&p->wrks[w], name))
			return NULL;
		if (wrk_start(p->wrks[w]) ||
		    (p->cfg.busy_poll_us && wrk_set_busy_poll(p->wrks[w], p->cfg.busy_poll_us))) {
			wrk_destroy(p->wrks[w]);
			p->wrks[w] = NULL;
		}
	}
	return p->wrks[w];
}

/* Take queue pair i away from its worker, remembering where its running rings stand. */
static void qp_detach(struct vu_port *p, unsigned i)
{
	struct vnet_qp *qp = &p->qps[i];
	struct vu_vring *rx = &p->vr[2 * i], *tx = &p->vr[2 * i + 1];
	uint16_t rb, tb;

	if (!p->wrk_of[i])
		return;
	wrk_remove(p->wrk_of[i], qp, &rb, &tb);
	p->wrk_of[i] = NULL;
	if (rx->running) {
		rx->base = rb;
		rx->broken |= vq_is_broken(&qp->rx);
		rx->stats = qp->rx.stats;
	}
	if (tx->running) {
		tx->base = tb;
		tx->broken |= vq_is_broken(&qp->tx);
		tx->stats = qp->tx.stats;
	}
	rx->running = tx->running = false;
	vq_init(&qp->rx);
	vq_init(&qp->tx);
}

/*
 * Inflight tracking for a ring being set up, if the frontend gave us an area that covers it. A
 * previous device's chains still in flight are taken again before new ones (vq_set_inflight).
 * Policy for net: a TX chain in flight is sent again (the frame may go out twice, which the
 * network tolerates, rather than never), an RX buffer in flight is simply filled again; either
 * way each head is used exactly once.
 */
static void ring_inflight(struct vu_port *p, unsigned idx, struct vq *vq)
{
	struct vq_inflight *in = &p->infl[idx];
	struct vu_vring *r = &p->vr[idx];
	uint16_t base = vq->last_avail;
	int n;

	r->resubmit = false;
	if (!p->infl_base || idx >= p->infl_nq)
		return;
	if (r->num != p->infl_qsize) {
		peer_warn(p,
			  "%s: ring %u has %u entries, the inflight area is laid out for %u; not "
			  "tracked",
			  p->cfg.name, idx, r->num, p->infl_qsize);
		return;
	}
	if (!in->region &&
	    vq_inflight_init(in, p->infl_base + idx * vq_inflight_size(p->infl_qsize),
			     p->infl_qsize)) {
		peer_err(p, "%s: ring %u: no memory for inflight tracking", p->cfg.name, idx);
		return;
	}
	n = vq_set_inflight(vq, in);
	if (n > 0)
		conn_info(p,
			  "%s: ring %u: %d chains were in flight when the previous device "
			  "stopped; taking them again (avail index %u, frontend said %u)",
			  p->cfg.name, idx, n, vq->last_avail, base);
	else if (n == 0 && vq->last_avail != base)
		conn_info(p,
			  "%s: ring %u: avail index %u from the used ring and inflight area "
			  "(frontend said %u)",
			  p->cfg.name, idx, vq->last_avail, base);
	r->resubmit = n > 0;
}

/* Set up one ring on its virtqueue if the frontend has given us everything it needs. */
static void ring_setup(struct vu_port *p, unsigned idx, struct vq *vq)
{
	struct vu_vring *r = &p->vr[idx];
	uint64_t d, a, u;
	char name[24];

	vq_init(vq);
	if (!r->started || !r->enabled || !r->addr_set || !r->num || r->broken || !p->mem)
		return;
	if (gmem_uva_to_gpa(p->mem, r->addr.desc_user_addr, 16ull * r->num, &d) ||
	    gmem_uva_to_gpa(p->mem, r->addr.avail_user_addr, 6 + 2ull * r->num, &a) ||
	    gmem_uva_to_gpa(p->mem, r->addr.used_user_addr, 6 + 8ull * r->num, &u)) {
		peer_err(p, "%s: ring %u addresses are outside the memory table; ring not started",
			 p->cfg.name, idx);
		return;
	}
	snprintf(name, sizeof(name), "%.10s:%s%u", p->cfg.name, idx & 1 ? "tx" : "rx", idx / 2);
	vq->kick_fd = r->kick_fd;
	vq->call_fd = r->call_fd;
	vq->rl = &p->ring_rl[idx];
	if (vq_setup(vq, p->mem, name, (uint16_t)r->num, d, a, u, p->features))
		return;
	vq_set_base(vq, r->base);
	vq->stats = r->stats;
	/* vhost-user: with VHOST_F_LOG_ALL every page the device writes is logged; the used
	 * ring's own writes at log_guest_addr when the ring's VHOST_VRING_F_LOG flag says so. */
	if ((p->features & F(VU_F_LOG_ALL)) && p->log.bits)
		vq_set_log(vq, &p->log, r->addr.log_guest_addr, r->addr.flags & 1);
	ring_inflight(p, idx, vq);
	r->running = true;
}

/*
 * Multiqueue TAP: the kernel hashes flows over every attached queue, so a queue whose RX ring the
 * guest has not enabled (fewer pairs in use, `ethtool -L`) must be detached or its flows are
 * lost. QEMU does this for its own TAP; behind vhost-user it is ours to do. Queue 0 stays.
 */
static void tap_queue_sync(struct vu_port *p, unsigned i)
{
	if (p->mem_backend || p->cfg.queues < 2 || i == 0)
		return;
	tap_set_queue_attached(&p->taps[i], p->vr[2 * i].enabled);
}

static void qp_attach(struct vu_port *p, unsigned i)
{
	struct vnet_qp *qp = &p->qps[i];
	struct wrk *w;

	tap_queue_sync(p, i);
	if (p->wrk_of[i])
		return;
	if (vnet_qp_set_features(qp, p->features))
		peer_warn(p, "%s: queue pair %u: backend refused the negotiated offloads",
			  p->cfg.name, i);
	ring_setup(p, 2 * i, &qp->rx);
	ring_setup(p, 2 * i + 1, &qp->tx);
	if (!p->vr[2 * i].running && !p->vr[2 * i + 1].running)
		return;
	w = worker_for(p, i);
	if (!w || wrk_add(w, qp)) {
		peer_err(p, "%s: queue pair %u: no worker to serve it", p->cfg.name, i);
		p->vr[2 * i].running = p->vr[2 * i + 1].running = false;
		return;
	}
	/* Chains taken again after a restart need no kick from the driver (it sent its kicks to
	 * the previous device): a worker runs every ready ring of a pair it is given at once. We
	 * never write the frontend's kick fd ourselves: it may block (pfd.h). */
	p->wrk_of[i] = w;
}

static void all_detach(struct vu_port *p)
{
	for (unsigned i = 0; i < p->cfg.queues; i++)
		qp_detach(p, i);
}

static void all_attach(struct vu_port *p)
{
	for (unsigned i = 0; i < p->cfg.queues; i++)
		qp_attach(p, i);
}

/* ---- handlers ---------------------------------------------------------------------------- */

static uint64_t get_u64(const struct vu_ctx *c)
{
	uint64_t v = 0;

	memcpy(&v, c->payload, c->hdr.size < 8 ? c->hdr.size : 8);
	return le64toh(v);
}

static void reply_u64(struct vu_ctx *c, uint64_t v)
{
	v = htole64(v);
	memcpy(c->reply, &v, 8);
	c->reply_size = 8;
	c->has_reply = true;
}

/* A ring index from a message; checked against the rings this port has. */
static int ring_index(struct vu_port *p, uint32_t idx)
{
	if (idx >= p->nrings) {
		peer_err(p, "%s: ring index %u out of range (port has %u rings)", p->cfg.name, idx,
			 p->nrings);
		return -EINVAL;
	}
	return (int)idx;
}

static int h_get_features(struct vu_port *p, struct vu_ctx *c)
{
	reply_u64(c, offered_features(p));
	return 0;
}

/*
 * vhost-user: the frontend acks a subset of what GET_FEATURES / GET_PROTOCOL_FEATURES offered
 * (VIRTIO 1.2, 2.2.1: "The driver MUST NOT accept a feature which the device did not offer").
 */
static int acked_subset(struct vu_port *p, const char *what, uint64_t acked, uint64_t offered)
{
	uint64_t extra = acked & ~offered;

	if (extra) {
		peer_err(p, "%s: frontend acked %sfeatures we never offered: %#llx", p->cfg.name,
			 what, (unsigned long long)extra);
		return -EINVAL;
	}
	return 0;
}

static int h_set_features(struct vu_port *p, struct vu_ctx *c)
{
	uint64_t f = get_u64(c);
	int err = acked_subset(p, "", f, offered_features(p));

	if (err)
		return err;
	all_detach(p);
	p->features = f;
	p->features_set = true;
	all_attach(p);
	return 0;
}

static int h_set_owner(struct vu_port *p, struct vu_ctx *c)
{
	(void)c;
	p->owner = true;
	return 0;
}

static void rings_reset(struct vu_port *p)
{
	all_detach(p);
	for (unsigned i = 0; i < NRINGS_MAX; i++) {
		struct vu_vring *r = &p->vr[i];

		close_fd(&r->kick_fd);
		close_fd(&r->call_fd);
		close_fd(&r->err_fd);
		memset(r, 0, sizeof(*r));
		r->kick_fd = r->call_fd = r->err_fd = -1;
	}
	for (unsigned i = 0; i < p->cfg.queues; i++) {
		netq_purge(&p->qps[i].hold);
		vnet_qp_set_features(&p->qps[i], 0);
		tap_queue_sync(p, i);
	}
}

static int h_reset_owner(struct vu_port *p, struct vu_ctx *c)
{
	(void)c;
	rings_reset(p);
	p->features = 0;
	p->features_set = false;
	p->owner = false;
	return 0;
}

static int mem_add(struct vu_port *p, struct gmem *gm, const struct vu_mem_region *r, int *fd)
{
	int err = gmem_add_fd(gm, r->guest_phys_addr, r->memory_size, r->userspace_addr, *fd,
			      r->mmap_offset);

	if (err) {
		peer_err(p, "%s: memory region gpa %#llx size %#llx offset %#llx rejected: %s",
			 p->cfg.name, (unsigned long long)r->guest_phys_addr,
			 (unsigned long long)r->memory_size, (unsigned long long)r->mmap_offset,
			 strerror(-err));
		return err;
	}
	*fd = -1; /* the map owns it now */
	return 0;
}

static int h_set_mem_table(struct vu_port *p, struct vu_ctx *c)
{
	struct vu_mem_table t = {0};
	struct gmem *gm;
	int err = 0;

	memcpy(&t, c->payload, c->hdr.size);
	if (t.nregions == 0 || t.nregions > VU_MAX_MEM_REGIONS ||
	    c->hdr.size != 8 + t.nregions * sizeof(struct vu_mem_region) || c->nfds != t.nregions) {
		peer_err(p,
			 "%s: SET_MEM_TABLE with %u regions, %u bytes and %u fds is inconsistent",
			 p->cfg.name, t.nregions, c->hdr.size, c->nfds);
		return -EINVAL;
	}
	gm = calloc(1, sizeof(*gm));
	if (!gm)
		return -ENOMEM;
	gmem_init(gm);
	gm->owner = &p->guard;
	for (unsigned i = 0; i < t.nregions && !err; i++)
		err = mem_add(p, gm, &t.regions[i], &c->fds[i]);
	if (err) {
		gmem_clear(gm);
		free(gm);
		return err;
	}
	/* Quiesce: no worker may hold a pointer into the old map while we swap it. */
	all_detach(p);
	if (p->mem) {
		gmem_clear(p->mem);
		free(p->mem);
	}
	p->mem = gm;
	all_attach(p);
	return 0;
}

/* vhost-user: ADD_MEM_REG and REM_MEM_REG only once CONFIGURE_MEM_SLOTS is negotiated (without
 * it a frontend describes its memory with SET_MEM_TABLE, at most 8 regions). */
static int need_mem_slots(struct vu_port *p, const char *what)
{
	if (p->pfeatures & F(VU_PF_CONFIGURE_MEM_SLOTS))
		return 0;
	peer_err(p, "%s: %s without CONFIGURE_MEM_SLOTS negotiated", p->cfg.name, what);
	return -EINVAL;
}

/* Answered whatever was negotiated: a question changes nothing (some frontends ask first). */
static int h_get_max_mem_slots(struct vu_port *p, struct vu_ctx *c)
{
	(void)p;
	reply_u64(c, VU_MAX_MEM_SLOTS);
	return 0;
}

/* The region already in the map with exactly this placement, or NULL. */
static const struct gmem_region *same_region(const struct gmem *gm, const struct vu_mem_region *r)
{
	for (unsigned i = 0; gm && i < gm->nregions; i++) {
		const struct gmem_region *g = &gm->regions[i];

		if (g->gpa == r->guest_phys_addr && g->size == r->memory_size &&
		    g->uva == r->userspace_addr)
			return g;
	}
	return NULL;
}

static int h_add_mem_reg(struct vu_port *p, struct vu_ctx *c)
{
	struct vu_mem_reg_msg m;
	int err = need_mem_slots(p, "ADD_MEM_REG");

	if (err)
		return err;
	memcpy(&m, c->payload, sizeof(m));
	/* QEMU keeps one memory view per queue pair and sends every pair's ADD_MEM_REG: the same
	 * region again is not an overlap, just a repeat (its fd is closed with the message). */
	if (same_region(p->mem, &m.region))
		return 0;
	if (!p->mem) {
		p->mem = calloc(1, sizeof(*p->mem));
		if (!p->mem)
			return -ENOMEM;
		gmem_init(p->mem);
		p->mem->owner = &p->guard;
	}
	all_detach(p);
	err = mem_add(p, p->mem, &m.region, &c->fds[0]);
	all_attach(p);
	return err;
}

static int h_rem_mem_reg(struct vu_port *p, struct vu_ctx *c)
{
	struct vu_mem_reg_msg m;
	int err = need_mem_slots(p, "REM_MEM_REG");

	if (err)
		return err;
	memcpy(&m, c->payload, sizeof(m));
	/* The repeat of an earlier removal (one per queue pair, as above) finds nothing to do. */
	if (!same_region(p->mem, &m.region)) {
		vt_debug("%s: REM_MEM_REG of a region not in the map (gpa %#llx): nothing to do",
			 p->cfg.name, (unsigned long long)m.region.guest_phys_addr);
		return 0;
	}
	all_detach(p);
	gmem_remove(p->mem, m.region.guest_phys_addr, m.region.memory_size);
	all_attach(p);
	return 0;
}

static int h_set_log_base(struct vu_port *p, struct vu_ctx *c)
{
	struct gmem_log log = {.owner = &p->guard};
	uint64_t v[2];
	int err;

	memcpy(v, c->payload, sizeof(v));
	if (!(p->pfeatures & F(VU_PF_LOG_SHMFD))) {
		peer_err(p, "%s: SET_LOG_BASE without LOG_SHMFD negotiated", p->cfg.name);
		return -EINVAL;
	}
	err = gmem_log_map(&log, c->fds[0], le64toh(v[0]), le64toh(v[1]));
	if (err) {
		peer_err(p, "%s: dirty log of %llu bytes at offset %llu rejected: %s", p->cfg.name,
			 (unsigned long long)le64toh(v[0]), (unsigned long long)le64toh(v[1]),
			 strerror(-err));
		return err;
	}
	c->fds[0] = -1;
	/* Swap with the rings detached: no worker may mark into the old mapping. */
	all_detach(p);
	gmem_log_unmap(&p->log);
	p->log = log;
	all_attach(p);
	conn_info(p, "%s: dirty page log of %llu bytes (guest memory up to %llu MiB)", p->cfg.name,
		  (unsigned long long)log.size,
		  (unsigned long long)(log.size * 8 * GMEM_LOG_PAGE >> 20));
	/* With LOG_SHMFD the frontend waits for an empty reply before it relies on the log. */
	c->reply_size = 0;
	c->has_reply = true;
	return 0;
}

static int h_set_log_fd(struct vu_port *p, struct vu_ctx *c)
{
	(void)p;
	(void)c; /* the fd (if any) is closed with the message: we never signal log changes */
	return 0;
}

/* ---- inflight I/O tracking (vhost-user INFLIGHT_SHMFD, split rings) ----------------------- */

/* Drop the area and our per-ring bookkeeping; the rings must be detached. */
static void inflight_unmap(struct vu_port *p)
{
	for (unsigned i = 0; i < NRINGS_MAX; i++)
		vq_inflight_free(&p->infl[i]);
	if (p->infl_map) {
		gmem_guard_remove(p->infl_map);
		munmap(p->infl_map, p->infl_map_len);
	}
	p->infl_map = NULL;
	p->infl_base = NULL;
	p->infl_map_len = 0;
	p->infl_nq = p->infl_qsize = 0;
}

/* Make a mapped area the one the rings track into, swapping it with the rings detached. */
static void inflight_install(struct vu_port *p, void *map, size_t len, size_t at, uint16_t nq,
			     uint16_t qsize)
{
	all_detach(p);
	inflight_unmap(p);
	p->infl_map = map;
	p->infl_map_len = len;
	p->infl_base = (uint8_t *)map + at;
	p->infl_nq = nq;
	p->infl_qsize = qsize;
	all_attach(p);
}

/* The inflight description's layout, checked before anything is sized or mapped from it. */
static int inflight_layout(struct vu_port *p, const struct vu_ctx *c, struct vu_inflight *in,
			   size_t *need)
{
	memset(in, 0, sizeof(*in));
	memcpy(in, c->payload, c->hdr.size);
	/* vhost-user: GET/SET_INFLIGHT_FD only once INFLIGHT_SHMFD is negotiated. */
	if (!(p->pfeatures & F(VU_PF_INFLIGHT_SHMFD))) {
		peer_err(p, "%s: %s without INFLIGHT_SHMFD negotiated", p->cfg.name,
			 c->hdr.request == VU_GET_INFLIGHT_FD ? "GET_INFLIGHT_FD"
							      : "SET_INFLIGHT_FD");
		return -EINVAL;
	}
	/* One queue region per virtqueue, each for split queues of queue_size entries: a power
	 * of two of at most 32768 (VIRTIO 1.2 2.7); no more queues than a port can have. */
	if (!in->num_queues || in->num_queues > NRINGS_MAX || !in->queue_size ||
	    (in->queue_size & (in->queue_size - 1)) || in->queue_size > VQ_MAX_SIZE) {
		peer_err(
		    p,
		    "%s: inflight area for %u queues of %u entries: want 1-%u queues of a power "
		    "of two <= %u entries",
		    p->cfg.name, in->num_queues, in->queue_size, NRINGS_MAX, VQ_MAX_SIZE);
		return -EINVAL;
	}
	*need = in->num_queues * vq_inflight_size(in->queue_size);
	return 0;
}

static int h_get_inflight_fd(struct vu_port *p, struct vu_ctx *c)
{
	struct vu_inflight in;
	size_t need;
	void *map;
	int fd, err = inflight_layout(p, c, &in, &need);

	if (err)
		return err;
	fd = memfd_create("virtap-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	/* Sealed at its size: the frontend cannot shrink it under our mapping (a SIGBUS here). */
	if (ftruncate(fd, (off_t)need) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	map = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		err = -errno;
		close(fd);
		return err;
	}
	/* A memfd starts zeroed: version 0, nothing in flight. Tracked from now on, as the
	 * frontend will hand it back with SET_INFLIGHT_FD (libvhost-user does the same). */
	inflight_install(p, map, need, 0, in.num_queues, in.queue_size);
	conn_info(p, "%s: inflight area of %zu bytes for %u queues of %u entries", p->cfg.name,
		  need, in.num_queues, in.queue_size);
	in.mmap_size = need;
	in.mmap_offset = 0;
	memcpy(c->reply, &in, c->hdr.size);
	c->reply_size = c->hdr.size;
	c->has_reply = true;
	c->reply_fd = fd;
	return 0;
}

static int h_set_inflight_fd(struct vu_port *p, struct vu_ctx *c)
{
	long page = sysconf(_SC_PAGESIZE);
	struct vu_inflight in;
	struct stat st = {0};
	size_t need, at;
	uint64_t off;
	void *map;
	int err = inflight_layout(p, c, &in, &need);

	if (err)
		return err;
	/* The queue regions must fit the area the frontend says it has, and that area the file:
	 * a mapping past the end of the file faults on first touch. The offset keeps the regions'
	 * u64 fields aligned (the atomic accesses need it). */
	if (in.mmap_size < need || in.mmap_offset > UINT64_MAX - in.mmap_size ||
	    (in.mmap_offset & 7) || fstat(c->fds[0], &st) < 0 ||
	    (uint64_t)st.st_size < in.mmap_offset + need) {
		peer_err(p,
			 "%s: inflight area of %llu bytes at offset %llu (file %lld bytes) cannot "
			 "hold %u queue regions of %zu bytes",
			 p->cfg.name, (unsigned long long)in.mmap_size,
			 (unsigned long long)in.mmap_offset, (long long)st.st_size, in.num_queues,
			 vq_inflight_size(in.queue_size));
		return -EINVAL;
	}
	off = in.mmap_offset & ~(uint64_t)(page - 1);
	at = (size_t)(in.mmap_offset - off);
	map = mmap(NULL, need + at, PROT_READ | PROT_WRITE, MAP_SHARED, c->fds[0], (off_t)off);
	if (map == MAP_FAILED) {
		err = -errno;
		peer_err(p, "%s: cannot map the inflight area: %s", p->cfg.name, strerror(-err));
		return err;
	}
	/* The frontend's file, maybe not sealed: shrinking it must break this device only. */
	err = gmem_guard_add(map, need + at, c->fds[0], &p->guard);
	if (err) {
		munmap(map, need + at);
		return err;
	}
	inflight_install(p, map, need + at, at, in.num_queues, in.queue_size);
	return 0;
}

static int h_not_supported(struct vu_port *p, struct vu_ctx *c)
{
	peer_warn(p, "%s: request %u is not supported (feature not offered)", p->cfg.name,
		  c->hdr.request);
	return -ENOTSUP;
}

static int h_set_vring_num(struct vu_port *p, struct vu_ctx *c)
{
	struct vu_vring_state s;
	int i;

	memcpy(&s, c->payload, sizeof(s));
	i = ring_index(p, s.index);
	if (i < 0)
		return i;
	/* VIRTIO 1.2 2.7: a split queue's size is a power of two, at most 32768. */
	if (!s.num || (s.num & (s.num - 1)) || s.num > VQ_MAX_SIZE) {
		peer_err(p, "%s: ring %d size %u is not a power of two <= %u", p->cfg.name, i,
			 s.num, VQ_MAX_SIZE);
		return -EINVAL;
	}
	if (p->vr[i].started) {
		peer_err(p, "%s: ring %d resized while started", p->cfg.name, i);
		return -EBUSY;
	}
	p->vr[i].num = s.num;
	return 0;
}

static int h_set_vring_addr(struct vu_port *p, struct vu_ctx *c)
{
	struct vu_vring_addr a;
	struct vu_vring *r;
	uint64_t gpa;
	int i;

	memcpy(&a, c->payload, sizeof(a));
	i = ring_index(p, a.index);
	if (i < 0)
		return i;
	r = &p->vr[i];
	if (a.flags & ~1u) {
		peer_err(p, "%s: ring %d address flags %#x unknown", p->cfg.name, i, a.flags);
		return -EINVAL;
	}
	/* The rings must lie inside the memory table we have (when we know both). */
	if (p->mem && r->num &&
	    (gmem_uva_to_gpa(p->mem, a.desc_user_addr, 16ull * r->num, &gpa) ||
	     gmem_uva_to_gpa(p->mem, a.avail_user_addr, 6 + 2ull * r->num, &gpa) ||
	     gmem_uva_to_gpa(p->mem, a.used_user_addr, 6 + 8ull * r->num, &gpa))) {
		peer_err(p,
			 "%s: ring %d addresses desc %#llx avail %#llx used %#llx are outside the "
			 "memory table",
			 p->cfg.name, i, (unsigned long long)a.desc_user_addr,
			 (unsigned long long)a.avail_user_addr,
			 (unsigned long long)a.used_user_addr);
		return -EFAULT;
	}
	qp_detach(p, (unsigned)i / 2);
	r->addr = a;
	r->addr_set = true;
	qp_attach(p, (unsigned)i / 2);
	return 0;
}

static int h_set_vring_base(struct vu_port *p, struct vu_ctx *c)
{
	struct vu_vring_state s;
	int i;

	memcpy(&s, c->payload, sizeof(s));
	i = ring_index(p, s.index);
	if (i < 0)
		return i;
	if (s.num > 0xffff) {
		peer_err(p, "%s: ring %d base %u does not fit a split ring index", p->cfg.name, i,
			 s.num);
		return -EINVAL;
	}
	if (p->vr[i].started) {
		peer_err(p, "%s: ring %d base set while started", p->cfg.name, i);
		return -EBUSY;
	}
	p->vr[i].base = (uint16_t)s.num;
	return 0;
}

static int h_get_vring_base(struct vu_port *p, struct vu_ctx *c)
{
	struct vu_vring_state s;
	struct vu_vring *r;
	int i;

	memcpy(&s, c->payload, sizeof(s));
	i = ring_index(p, s.index);
	if (i < 0)
		return i;
	r = &p->vr[i];
	qp_detach(p, (unsigned)i / 2);
	r->started = false;
	/* A stopped ring's next life starts clean: the driver resets it before restarting. */
	r->broken = false;
	close_fd(&r->kick_fd);
	if (i % 2 == 0)
		netq_purge(&p->qps[i / 2].hold);
	qp_attach(p, (unsigned)i / 2);
	s.num = r->base;
	memcpy(c->reply, &s, sizeof(s));
	c->reply_size = sizeof(s);
	c->has_reply = true;
	return 0;
}

/* SET_VRING_KICK/CALL/ERR payload: ring index in bits 0-7, bit 8 "no fd". */
static int vring_fd(struct vu_port *p, struct vu_ctx *c, int *idx, int *fd)
{
	uint64_t v = get_u64(c);
	bool nofd = v & VU_VRING_NOFD;

	if (v & ~(VU_VRING_IDX_MASK | VU_VRING_NOFD)) {
		peer_err(p, "%s: vring fd message with unknown bits %#llx", p->cfg.name,
			 (unsigned long long)v);
		return -EINVAL;
	}
	*idx = ring_index(p, (uint32_t)(v & VU_VRING_IDX_MASK));
	if (*idx < 0)
		return *idx;
	if (nofd != (c->nfds == 0)) {
		peer_err(p, "%s: vring fd message says %s but carries %u fds", p->cfg.name,
			 nofd ? "no fd" : "an fd", c->nfds);
		return -EINVAL;
	}
	/* vhost-user: kick and call fds are eventfds. Anything else (a pipe stays readable at
	 * EOF, a full pipe blocks a write) would spin or stall the worker serving this ring. */
	if (!nofd && c->hdr.request != VU_SET_VRING_ERR && !pfd_is_eventfd(c->fds[0])) {
		peer_err(p, "%s: ring %d: the %s fd is not an eventfd", p->cfg.name, *idx,
			 c->hdr.request == VU_SET_VRING_KICK ? "kick" : "call");
		return -EINVAL;
	}
	*fd = nofd ? -1 : c->fds[0];
	if (!nofd)
		c->fds[0] = -1;
	return 0;
}

static int h_set_vring_kick(struct vu_port *p, struct vu_ctx *c)
{
	int i, fd, err = vring_fd(p, c, &i, &fd);
	struct vu_vring *r;

	if (err)
		return err;
	r = &p->vr[i];
	qp_detach(p, (unsigned)i / 2);
	close_fd(&r->kick_fd);
	r->kick_fd = fd;
	if (fd >= 0)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	else
		peer_warn(p, "%s: ring %d has no kick fd (polling frontends are not served yet)",
			  p->cfg.name, i);
	r->started = true;
	/* vhost-user: without PROTOCOL_FEATURES a ring is enabled as soon as it starts. */
	if (!(p->features & F(VU_F_PROTOCOL_FEATURES)))
		r->enabled = true;
	qp_attach(p, (unsigned)i / 2);
	return 0;
}

static int h_set_vring_call(struct vu_port *p, struct vu_ctx *c)
{
	int i, fd, err = vring_fd(p, c, &i, &fd);

	if (err)
		return err;
	/* The worker may be signalling the old fd: swap it with the pair detached. */
	qp_detach(p, (unsigned)i / 2);
	close_fd(&p->vr[i].call_fd);
	p->vr[i].call_fd = fd;
	qp_attach(p, (unsigned)i / 2);
	return 0;
}

static int h_set_vring_err(struct vu_port *p, struct vu_ctx *c)
{
	int i, fd, err = vring_fd(p, c, &i, &fd);

	if (err)
		return err;
	close_fd(&p->vr[i].err_fd);
	p->vr[i].err_fd = fd;
	return 0;
}

static int h_get_protocol_features(struct vu_port *p, struct vu_ctx *c)
{
	reply_u64(c, offered_pfeatures(p));
	return 0;
}

static int h_set_protocol_features(struct vu_port *p, struct vu_ctx *c)
{
	uint64_t f = get_u64(c);
	int err = acked_subset(p, "protocol ", f, offered_pfeatures(p));

	if (err)
		return err;
	p->pfeatures = f;
	return 0;
}

static int h_get_queue_num(struct vu_port *p, struct vu_ctx *c)
{
	reply_u64(c, p->cfg.queues);
	return 0;
}

static int h_set_vring_enable(struct vu_port *p, struct vu_ctx *c)
{
	struct vu_vring_state s;
	int i;

	memcpy(&s, c->payload, sizeof(s));
	i = ring_index(p, s.index);
	if (i < 0)
		return i;
	if (s.num > 1) {
		peer_err(p, "%s: SET_VRING_ENABLE %u for ring %d is neither 0 nor 1", p->cfg.name,
			 s.num, i);
		return -EINVAL;
	}
	qp_detach(p, (unsigned)i / 2);
	p->vr[i].enabled = s.num;
	qp_attach(p, (unsigned)i / 2);
	return 0;
}

static int h_send_rarp(struct vu_port *p, struct vu_ctx *c)
{
	uint8_t f[12 + 60] = {0}, *e = f + 12;
	struct iovec iov = {.iov_base = f + 12 - p->taps[0].hdr_len,
			    .iov_len = (size_t)p->taps[0].hdr_len + 60};

	/* Announce the guest's MAC after migration: a broadcast RARP "request reverse". */
	memset(e, 0xff, 6);
	memcpy(e + 6, c->payload, 6);
	e[12] = 0x80;
	e[13] = 0x35;
	e[14] = 0x00, e[15] = 0x01, e[16] = 0x08, e[17] = 0x00, e[18] = 6, e[19] = 4;
	e[20] = 0x00, e[21] = 0x03;
	memcpy(e + 22, c->payload, 6);
	memcpy(e + 32, c->payload, 6);
	if (p->mem_backend || tap_be_ops.tx(&p->taps[0], &iov, 1) < 0)
		peer_warn(p, "%s: RARP announcement not sent", p->cfg.name);
	return 0;
}

static int h_net_set_mtu(struct vu_port *p, struct vu_ctx *c)
{
	uint64_t mtu = get_u64(c);

	/* vhost-user: NET_SET_MTU only with VHOST_USER_PROTOCOL_F_NET_MTU, which we offer only
	 * when the operator set an MTU; otherwise any socket peer could set the host TAP's. */
	if (!(p->pfeatures & F(VU_PF_MTU))) {
		peer_err(p, "%s: NET_SET_MTU without NET_MTU negotiated", p->cfg.name);
		return -EINVAL;
	}
	if (mtu < 68 || mtu > 65535) {
		peer_err(p, "%s: MTU %llu out of range", p->cfg.name, (unsigned long long)mtu);
		return -EINVAL;
	}
	if (p->mem_backend)
		return 0;
	return tap_set_mtu(p->cfg.tap, (unsigned)mtu);
}

static int h_get_config(struct vu_port *p, struct vu_ctx *c)
{
	struct vu_config cfg = {0};
	uint8_t space[12] = {0}; /* mac[6], status, max_virtqueue_pairs, mtu */
	uint16_t v;

	memcpy(&cfg, c->payload, c->hdr.size);
	if (cfg.size > VU_CONFIG_MAX || c->hdr.size != 12 + cfg.size ||
	    cfg.offset > sizeof(space) || cfg.size > sizeof(space) - cfg.offset) {
		peer_err(p, "%s: GET_CONFIG offset %u size %u outside the virtio-net config",
			 p->cfg.name, cfg.offset, cfg.size);
		return -EINVAL;
	}
	v = htole16(1); /* VIRTIO_NET_S_LINK_UP */
	memcpy(space + 6, &v, 2);
	v = htole16((uint16_t)p->cfg.queues);
	memcpy(space + 8, &v, 2);
	v = htole16((uint16_t)p->cfg.mtu);
	memcpy(space + 10, &v, 2);
	memset(cfg.region, 0, sizeof(cfg.region));
	memcpy(cfg.region, space + cfg.offset, cfg.size);
	memcpy(c->reply, &cfg, c->hdr.size);
	c->reply_size = c->hdr.size;
	c->has_reply = true;
	return 0;
}

#define RULE(req, fn_, min, max, fmin, fmax)                                                       \
	[VU_##req] = {.name = #req,                                                                \
		      .min_size = (min),                                                           \
		      .max_size = (max),                                                           \
		      .min_fds = (fmin),                                                           \
		      .max_fds = (fmax),                                                           \
		      .fn = (fn_)}

/* What every request may carry. Sizes in bytes of payload; fds attached. Checked before use. */
static const struct vu_rule rules[VU_REQ_MAX] = {
    RULE(GET_FEATURES, h_get_features, 0, 8, 0, 0),
    RULE(SET_FEATURES, h_set_features, 8, 8, 0, 0),
    RULE(SET_OWNER, h_set_owner, 0, 8, 0, 0),
    RULE(RESET_OWNER, h_reset_owner, 0, 8, 0, 0),
    RULE(SET_MEM_TABLE, h_set_mem_table, 8 + sizeof(struct vu_mem_region),
	 sizeof(struct vu_mem_table), 1, VU_MAX_MEM_REGIONS),
    RULE(SET_LOG_BASE, h_set_log_base, 16, 16, 1, 1),
    RULE(SET_LOG_FD, h_set_log_fd, 0, 8, 0, 1),
    RULE(SET_VRING_NUM, h_set_vring_num, 8, 8, 0, 0),
    RULE(SET_VRING_ADDR, h_set_vring_addr, sizeof(struct vu_vring_addr),
	 sizeof(struct vu_vring_addr), 0, 0),
    RULE(SET_VRING_BASE, h_set_vring_base, 8, 8, 0, 0),
    RULE(GET_VRING_BASE, h_get_vring_base, 8, 8, 0, 0),
    RULE(SET_VRING_KICK, h_set_vring_kick, 8, 8, 0, 1),
    RULE(SET_VRING_CALL, h_set_vring_call, 8, 8, 0, 1),
    RULE(SET_VRING_ERR, h_set_vring_err, 8, 8, 0, 1),
    RULE(GET_PROTOCOL_FEATURES, h_get_protocol_features, 0, 8, 0, 0),
    RULE(SET_PROTOCOL_FEATURES, h_set_protocol_features, 8, 8, 0, 0),
    RULE(GET_QUEUE_NUM, h_get_queue_num, 0, 8, 0, 0),
    RULE(SET_VRING_ENABLE, h_set_vring_enable, 8, 8, 0, 0),
    RULE(SEND_RARP, h_send_rarp, 8, 8, 0, 0),
    RULE(NET_SET_MTU, h_net_set_mtu, 8, 8, 0, 0),
    RULE(SET_VRING_ENDIAN, h_not_supported, 8, 8, 0, 0),
    /* Answered although CONFIG is not offered: some frontends ask regardless. */
    RULE(GET_CONFIG, h_get_config, 12, sizeof(struct vu_config), 0, 0),
    RULE(SET_CONFIG, h_not_supported, 12, sizeof(struct vu_config), 0, 0),
    RULE(GET_INFLIGHT_FD, h_get_inflight_fd, VU_INFLIGHT_MIN, sizeof(struct vu_inflight), 0, 0),
    RULE(SET_INFLIGHT_FD, h_set_inflight_fd, VU_INFLIGHT_MIN, sizeof(struct vu_inflight), 1, 1),
    RULE(GET_MAX_MEM_SLOTS, h_get_max_mem_slots, 0, 8, 0, 0),
    RULE(ADD_MEM_REG, h_add_mem_reg, sizeof(struct vu_mem_reg_msg), sizeof(struct vu_mem_reg_msg),
	 1, 1),
    RULE(REM_MEM_REG, h_rem_mem_reg, sizeof(struct vu_mem_reg_msg), sizeof(struct vu_mem_reg_msg),
	 0, 1),
};

/* ---- the connection -------------------------------------------------------------------- */

static int send_reply_fd(struct vu_port *p, uint32_t req, const void *payload, uint32_t size,
			 int fd)
{
	struct vu_hdr h = {.request = req, .flags = VU_VERSION | VU_FLAG_REPLY, .size = size};
	struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)payload, size}};
	struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;

	if (fd >= 0) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		m.msg_control = ctl.buf;
		m.msg_controllen = sizeof(ctl.buf);
		cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	if (sendmsg(p->conn_fd, &m, MSG_NOSIGNAL) != (ssize_t)(sizeof(h) + size))
		return -EIO;
	return 0;
}

static int send_reply(struct vu_port *p, uint32_t req, const void *payload, uint32_t size)
{
	return send_reply_fd(p, req, payload, size, -1);
}

/* Check one complete message against the table and run it. Returns false to disconnect. */
static bool dispatch(struct vu_port *p)
{
	struct vu_ctx c = {.hdr = p->in.hdr,
			   .payload = p->in.bytes + sizeof(struct vu_hdr),
			   .fds = p->fds,
			   .nfds = p->nfds,
			   .reply_fd = -1};
	const struct vu_rule *r = c.hdr.request < VU_REQ_MAX ? &rules[c.hdr.request] : NULL;
	bool want_ack = (c.hdr.flags & VU_FLAG_NEED_REPLY) && (p->pfeatures & F(VU_PF_REPLY_ACK));
	int err;

	if (!r || !r->fn) {
		peer_err(p, "%s: unknown request %u", p->cfg.name, c.hdr.request);
		if (!want_ack)
			return false;
		return send_reply(p, c.hdr.request, &(uint64_t){1}, 8) == 0;
	}
	if (c.hdr.size < r->min_size || c.hdr.size > r->max_size || c.nfds < r->min_fds ||
	    c.nfds > r->max_fds || p->fds_overflow) {
		peer_err(p, "%s: %s with %u bytes and %u fds (expected %u-%u bytes, %u-%u fds)",
			 p->cfg.name, r->name, c.hdr.size, c.nfds, r->min_size, r->max_size,
			 r->min_fds, r->max_fds);
		return false;
	}
	vt_debug("%s: %s", p->cfg.name, r->name);
	err = r->fn(p, &c);
	if (c.has_reply && !err) {
		err = send_reply_fd(p, c.hdr.request, c.reply, c.reply_size, c.reply_fd);
		close_fd(&c.reply_fd); /* the frontend has its own copy now */
		return err == 0;
	}
	if (want_ack) {
		uint64_t status = err ? 1 : 0;

		return send_reply(p, c.hdr.request, &status, 8) == 0;
	}
	if (err == -ENOTSUP)
		return true;
	if (err)
		peer_err(p, "%s: %s failed (%s); dropping the connection", p->cfg.name, r->name,
			 strerror(-err));
	return !err;
}

static void msg_reset(struct vu_port *p)
{
	for (unsigned i = 0; i < p->nfds; i++)
		close_fd(&p->fds[i]);
	p->nfds = 0;
	p->have = 0;
	p->fds_overflow = false;
}

/* Take the fds of one recvmsg; more than a message may carry are closed on the spot. */
static void take_fds(struct vu_port *p, struct msghdr *m)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
		size_t n;
		int *fds;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		fds = (int *)CMSG_DATA(cm);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, &fds[i], sizeof(fd));
			if (p->nfds < VU_MAX_FDS) {
				p->fds[p->nfds++] = fd;
			} else {
				close(fd);
				p->fds_overflow = true;
			}
		}
	}
	if (m->msg_flags & MSG_CTRUNC)
		p->fds_overflow = true;
}

static void conn_readable(void *arg, int fd, unsigned events)
{
	struct vu_port *p = arg;
	union {
		char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS * 2)];
		struct cmsghdr align;
	} ctl;

	(void)fd;
	(void)events;
	for (unsigned done = 0; done < MSG_BUDGET;) {
		size_t want =
		    sizeof(struct vu_hdr) + (p->have >= sizeof(struct vu_hdr) ? p->in.hdr.size : 0);
		struct iovec iov = {p->in.bytes + p->have, want - p->have};
		struct msghdr m = {.msg_iov = &iov,
				   .msg_iovlen = 1,
				   .msg_control = ctl.buf,
				   .msg_controllen = sizeof(ctl.buf)};
		ssize_t n = recvmsg(p->conn_fd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			port_disconnect(p, n == 0 ? "frontend closed the socket" : strerror(errno));
			return;
		}
		take_fds(p, &m);
		p->have += (size_t)n;
		if (p->have == sizeof(struct vu_hdr)) {
			/* vhost-user: version 1 in flags bits 0-1; payload bounded by our table. */
			if ((p->in.hdr.flags & VU_VERSION_MASK) != VU_VERSION ||
			    p->in.hdr.size > VU_MAX_PAYLOAD) {
				peer_err(p, "%s: bad message header (request %u flags %#x size %u)",
					 p->cfg.name, p->in.hdr.request, p->in.hdr.flags,
					 p->in.hdr.size);
				port_disconnect(p, "protocol error");
				return;
			}
		}
		if (p->have < sizeof(struct vu_hdr) ||
		    p->have < sizeof(struct vu_hdr) + p->in.hdr.size)
			continue;
		if (!dispatch(p)) {
			port_disconnect(p, "protocol error");
			return;
		}
		msg_reset(p);
		done++;
	}
	/* Budget spent: the socket is still readable and the loop calls us again after the
	 * other ports had their turn. */
}

static void port_reset(struct vu_port *p)
{
	rings_reset(p);
	for (unsigned i = 0; i < VNET_MAX_QUEUE_PAIRS; i++) {
		if (p->wrks[i])
			wrk_destroy(p->wrks[i]);
		p->wrks[i] = NULL;
	}
	if (p->mem) {
		gmem_clear(p->mem);
		free(p->mem);
		p->mem = NULL;
	}
	gmem_log_unmap(&p->log);
	inflight_unmap(p);
	p->features = p->pfeatures = 0;
	p->features_set = p->owner = false;
	msg_reset(p);
	/* Every mapping is gone: a fault counted now belongs to no one (the next connection
	 * starts clean; a wake-up still pending finds nothing). No worker serves a pair of ours
	 * any more, so the next frontend's pairs may run again. */
	gmem_guard_owner_init(&p->guard, p->guard_fd);
	__atomic_store_n(&p->net_owner.halted, false, __ATOMIC_RELEASE);
}

static void try_connect(void *arg);

static void port_disconnect(struct vu_port *p, const char *why)
{
	if (p->conn_fd < 0)
		return;
	conn_info(p, "%s: frontend disconnected (%s)", p->cfg.name, why);
	evl_del(p->loop, p->conn_fd);
	close_fd(&p->conn_fd);
	port_reset(p);
	if (p->cfg.client)
		p->reconnect_timer = evl_timer(p->loop, p->cfg.reconnect_ms, try_connect, p);
}

static int conn_start(struct vu_port *p, int fd)
{
	int err;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	p->conn_fd = fd;
	msg_reset(p);
	err = evl_add(p->loop, fd, EPOLLIN, conn_readable, p);
	if (err) {
		close_fd(&p->conn_fd);
		return err;
	}
	conn_info(p, "%s: frontend connected on %s", p->cfg.name, p->cfg.socket);
	return 0;
}

int vu_port_adopt(struct vu_port *p, int fd)
{
	if (p->conn_fd >= 0) {
		close(fd);
		return -EBUSY;
	}
	return conn_start(p, fd);
}

/*
 * A port serves one frontend at a time: a second one would fight over the same rings. Extra
 * connections are accepted and closed at once, so their peers learn it right away (rather than
 * hanging in connect() on a full backlog) and none of them holds an fd or memory of ours; a
 * flood of them costs one accept and one close each, a bounded number per wake-up, and a few
 * log lines per interval.
 */
static void listen_resume(void *arg)
{
	struct vu_port *p = arg;

	p->reconnect_timer = 0;
	p->listen_paused = false;
	evl_mod(p->loop, p->listen_fd, EPOLLIN);
}

/*
 * Out of fds (EMFILE, ENFILE): the pending connection stays in the backlog and the socket stays
 * readable, so a level-triggered watch would spin. Stop watching it for a moment instead; the
 * connection is taken when fds are free again. One line per interval.
 */
static void listen_pause(struct vu_port *p)
{
	if (vt_ratelimit(&p->emfile_rl, 1, LOG_INTERVAL_MS, &(unsigned){0}))
		vt_err("%s: cannot accept a connection: %s; not listening for %u ms", p->cfg.name,
		       strerror(errno), EMFILE_PAUSE_MS);
	if (p->listen_paused || evl_mod(p->loop, p->listen_fd, 0))
		return;
	p->listen_paused = true;
	p->reconnect_timer = evl_timer(p->loop, EMFILE_PAUSE_MS, listen_resume, p);
}

static void listen_readable(void *arg, int fd, unsigned events)
{
	struct vu_port *p = arg;

	(void)events;
	for (unsigned i = 0; i < ACCEPT_BUDGET; i++) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		const char *why = "another frontend connection: one frontend per port";

		if (c < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM)
				listen_pause(p);
			return;
		}
		if (p->conn_fd < 0 && mono_ms() >= p->holdoff_until_ms) {
			conn_start(p, c);
			continue;
		}
		if (p->conn_fd < 0)
			why = "a frontend connection: the last frontend's eventfd blocked a worker";
		close(c);
		p->refused++;
		/* One line per interval with the running total, whatever the rate. */
		if (vt_ratelimit(&p->refuse_rl, 1, LOG_INTERVAL_MS, &(unsigned){0}))
			vt_warn("%s: refused %s (%llu refused so far)", p->cfg.name, why,
				p->refused);
	}
}

/* Where a guarded fault hit, for the log: the port knows its own mappings. */
static void fault_where(const struct vu_port *p, const void *at, char *buf, size_t cap)
{
	const uint8_t *a = at;

	for (unsigned i = 0; p->mem && i < p->mem->nregions; i++) {
		const struct gmem_region *r = &p->mem->regions[i];

		if (r->map_base && a >= (const uint8_t *)r->map_base &&
		    a < (const uint8_t *)r->map_base + r->map_len) {
			snprintf(buf, cap, "guest memory region gpa %#llx size %#llx, offset %#llx",
				 (unsigned long long)r->gpa, (unsigned long long)r->size,
				 (unsigned long long)(a - (const uint8_t *)r->map_base));
			return;
		}
	}
	if (p->log.map_base && a >= (const uint8_t *)p->log.map_base &&
	    a < (const uint8_t *)p->log.map_base + p->log.map_len)
		snprintf(buf, cap, "the dirty log, offset %#llx",
			 (unsigned long long)(a - (const uint8_t *)p->log.map_base));
	else if (p->infl_map && a >= (const uint8_t *)p->infl_map &&
		 a < (const uint8_t *)p->infl_map + p->infl_map_len)
		snprintf(buf, cap, "the inflight area, offset %#llx",
			 (unsigned long long)(a - (const uint8_t *)p->infl_map));
	else
		snprintf(buf, cap, "a mapping of this port at %p", (const void *)a);
}

/* On the worker that found a frontend's eventfd blocking (vnet_owner): wake our control loop
 * through guard_fd, our own non-blocking eventfd. */
static void port_stuck(struct vnet_owner *o)
{
	struct vu_port *p = (struct vu_port *)((char *)o - offsetof(struct vu_port, net_owner));
	uint64_t one = 1;

	if (write(p->guard_fd, &one, sizeof(one)) < 0) {
		/* full: a wake-up is pending already */
	}
}

/*
 * The SIGBUS guard patched a fault in memory this frontend shares with us: it shrank the file
 * behind a mapping (vhost-user gives us its fds to map, and a mapping past the end of a file
 * cannot be read or written). What the device saw there since is zeros, not the guest's data,
 * so the device is broken beyond repair by us: drop the connection, which unmaps everything;
 * the port then waits for a frontend with memory that holds still. Other ports never notice.
 */
static void guard_readable(void *arg, int fd, unsigned events)
{
	struct vu_port *p = arg;
	uint64_t n;
	void *at;
	unsigned faults;
	char where[128];

	(void)events;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		return;
	/* A worker found one of the frontend's eventfds blocking (port_stuck): every pair of
	 * ours is halted already; drop the frontend, and hold the next one off for a while. */
	if (__atomic_load_n(&p->net_owner.halted, __ATOMIC_ACQUIRE) && p->conn_fd >= 0) {
		p->holdoff_until_ms = mono_ms() + STUCK_HOLDOFF_MS;
		port_disconnect(p, "an eventfd of the frontend blocked a worker; refusing "
				   "connections for a second");
		return;
	}
	faults = gmem_guard_take(&p->guard, &at);
	if (!faults || p->conn_fd < 0)
		return;
	fault_where(p, at, where, sizeof(where));
	vt_err("%s: the frontend shrank memory it shares with us (SIGBUS in %s); device broken, "
	       "dropping the connection",
	       p->cfg.name, where);
	port_disconnect(p, "shared memory truncated");
}

static void try_connect(void *arg)
{
	struct vu_port *p = arg;
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	p->reconnect_timer = 0;
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", p->cfg.socket);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    conn_start(p, fd) == 0) {
		p->connect_failed_logged = false;
		return;
	}
	if (!p->connect_failed_logged)
		vt_info("%s: cannot connect to %s (%s); retrying every %u ms", p->cfg.name,
			p->cfg.socket, strerror(errno), p->cfg.reconnect_ms);
	p->connect_failed_logged = true;
	if (fd >= 0)
		close(fd);
	p->reconnect_timer = evl_timer(p->loop, p->cfg.reconnect_ms, try_connect, p);
}

static int listen_start(struct vu_port *p)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	struct stat st;
	int err;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", p->cfg.socket);
	/* A socket left by an earlier run is ours to replace; anything else is not. */
	if (lstat(p->cfg.socket, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			vt_err("%s: %s exists and is not a socket", p->cfg.name, p->cfg.socket);
			return -EEXIST;
		}
		unlink(p->cfg.socket);
	}
	p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(p->listen_fd, 4) < 0) {
		err = -errno;
		vt_err("%s: cannot listen on %s: %s", p->cfg.name, p->cfg.socket, strerror(-err));
		return err;
	}
	return evl_add(p->loop, p->listen_fd, EPOLLIN, listen_readable, p);
}

static int open_backends(struct vu_port *p)
{
	unsigned flags = p->cfg.queues > 1 ? TAP_F_MULTI_QUEUE : 0;
	enum membe_mode mode;
	size_t len;
	int err;

	if (p->cfg.backend[0] && strcmp(p->cfg.backend, "tap") != 0) {
		err = membe_parse(p->cfg.backend, &mode, &len);
		if (err) {
			vt_err("%s: unknown backend '%s'", p->cfg.name, p->cfg.backend);
			return err;
		}
		p->mem_backend = true;
		for (unsigned i = 0; i < p->cfg.queues; i++) {
			err = membe_init(&p->mems[i], mode, len, 256);
			if (err)
				return err;
		}
		return 0;
	}

	for (unsigned i = 0; i < p->cfg.queues; i++) {
		err = tap_open(&p->taps[i], p->cfg.tap, flags);
		if (err)
			return err;
	}
	if (p->cfg.mtu && (err = tap_set_mtu(p->cfg.tap, p->cfg.mtu)))
		return err;
	return tap_set_link(p->cfg.tap, true);
}

int vu_port_create(struct vu_port **out, const struct vu_port_config *cfg, struct evl *loop)
{
	struct vu_port *p;
	int err;

	bool tap = !cfg->backend[0] || !strcmp(cfg->backend, "tap");

	if (!cfg->socket[0] || (tap && !cfg->tap[0]) || cfg->queues < 1 ||
	    cfg->queues > VNET_MAX_QUEUE_PAIRS) {
		vt_err("%s: a port needs a socket path, a TAP name and 1-%d queue pairs", cfg->name,
		       VNET_MAX_QUEUE_PAIRS);
		return -EINVAL;
	}
	if (cfg->worker && cfg->threads != VU_THREADS_PORT) {
		vt_err("%s: a shared worker serves whole ports: it needs threads=port", cfg->name);
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->cfg = *cfg;
	p->loop = loop;
	p->listen_fd = p->conn_fd = -1;
	p->nrings = 2 * cfg->queues;
	p->guard_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	gmem_guard_owner_init(&p->guard, p->guard_fd);
	p->net_owner.stuck = port_stuck;
	/* This thread runs our control loop, and tearing a pair down may signal its call fds
	 * here (wrk_destroy): guard them as a worker's (pfd.h). */
	pfd_thread_enter("vt-control");
	for (unsigned i = 0; i < VNET_MAX_QUEUE_PAIRS; i++)
		p->taps[i].fd = -1;
	for (unsigned i = 0; i < NRINGS_MAX; i++)
		p->vr[i].kick_fd = p->vr[i].call_fd = p->vr[i].err_fd = -1;
	for (unsigned i = 0; i < VU_MAX_FDS; i++)
		p->fds[i] = -1;
	for (unsigned i = 0; i < VNET_MAX_QUEUE_PAIRS; i++)
		p->mems[i].efd = -1;
	err = p->guard_fd < 0 ? -errno : evl_add(loop, p->guard_fd, EPOLLIN, guard_readable, p);
	if (!err)
		err = open_backends(p);
	for (unsigned i = 0; !err && i < cfg->queues; i++) {
		err = vnet_qp_init(&p->qps[i], i, &cfg->net,
				   p->mem_backend ? &membe_ops : &tap_be_ops,
				   p->mem_backend ? (void *)&p->mems[i] : (void *)&p->taps[i]);
		if (!err)
			snprintf(p->qps[i].name, sizeof(p->qps[i].name), "%.20s:qp%u", cfg->name,
				 i);
		p->qps[i].owner = &p->net_owner;
	}
	for (unsigned i = 0; !err && i < cfg->queues; i++)
		tap_queue_sync(p, i);
	if (!err)
		err = cfg->client ? 0 : listen_start(p);
	if (err) {
		vu_port_destroy(p);
		return err;
	}
	if (cfg->client)
		try_connect(p);
	*out = p;
	return 0;
}

void vu_port_destroy(struct vu_port *p)
{
	if (!p)
		return;
	if (p->conn_fd >= 0) {
		evl_del(p->loop, p->conn_fd);
		close_fd(&p->conn_fd);
	}
	port_reset(p);
	if (p->reconnect_timer > 0)
		evl_timer_cancel(p->loop, p->reconnect_timer);
	if (p->listen_fd >= 0) {
		evl_del(p->loop, p->listen_fd);
		close_fd(&p->listen_fd);
		unlink(p->cfg.socket);
	}
	if (p->guard_fd >= 0) {
		evl_del(p->loop, p->guard_fd);
		close_fd(&p->guard_fd);
	}
	for (unsigned i = 0; i < VNET_MAX_QUEUE_PAIRS; i++) {
		if (p->qps[i].rx_iov)
			vnet_qp_destroy(&p->qps[i]);
		tap_close(&p->taps[i]);
		membe_destroy(&p->mems[i]);
	}
	free(p);
}

void vu_port_stats(const struct vu_port *p, struct vnet_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (unsigned i = 0; i < p->cfg.queues; i++) {
		const uint64_t *src = (const uint64_t *)&p->qps[i].stats;
		uint64_t *dst = (uint64_t *)st;

		for (size_t k = 0; k < sizeof(*st) / sizeof(uint64_t); k++)
			dst[k] += src[k];
	}
}

void vu_port_qp_stats(const struct vu_port *p, unsigned qp, struct vnet_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (qp < p->cfg.queues)
		*st = p->qps[qp].stats;
}

unsigned vu_port_queues(const struct vu_port *p)
{
	return p->cfg.queues;
}
