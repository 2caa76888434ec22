// SPDX-License-Identifier: MIT
/*
 * The fake vhost-user frontend (vufe.h). Messages are built and parsed here with the backend's own
 * wire definitions (src/vhost/vu_proto.h); guest memory, rings and buffers are the fake guest's.
 * Every wait is bounded (VUFE_WAIT_MS or the caller's), so a backend that stops answering fails
 * a check instead of hanging the test. Test code: a broken backend is reported, never trusted.
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "../../src/vhost/vu_proto.h"
#include "netns.h"
#include "rig.h"
#include "virtap/vnet_defs.h"
#include "vufe.h"

#define F(b) (1ull << (b))

/* ---- raw messages ------------------------------------------------------------------------ */

int vufe_sock_connect(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = VUFE_WAIT_MS / 1000};
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -1;
	/* Nothing may hang the test: blocking reads give up after VUFE_WAIT_MS. */
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(s);
		return -1;
	}
	return s;
}

int vufe_send_raw(int s, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * VUFE_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {(void *)buf, len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

	if (nfds > VUFE_MAX_FDS)
		abort(); /* test bug */
	if (nfds) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		m.msg_control = ctl.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	return sendmsg(s, &m, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

size_t vufe_msg_put(uint8_t *buf, uint32_t req, uint32_t flags, const void *pl, uint32_t size)
{
	struct vu_hdr h = {.request = req, .flags = flags, .size = size};

	memcpy(buf, &h, sizeof(h));
	if (size)
		memcpy(buf + sizeof(h), pl, size);
	return sizeof(h) + size;
}

int vufe_send_msg(int s, uint32_t req, uint32_t flags, const void *pl, uint32_t size,
		  const int *fds, unsigned nfds)
{
	uint8_t buf[sizeof(struct vu_hdr) + 512];

	if (size > sizeof(buf) - sizeof(struct vu_hdr))
		abort(); /* test bug */
	return vufe_send_raw(s, buf, vufe_msg_put(buf, req, flags, pl, size), fds, nfds);
}

/* Keep the first fd that came with a reply in *keep (if asked), close every other one. */
static void reply_fds(struct msghdr *m, int *keep)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
		size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(fd));
			if (keep && *keep < 0)
				*keep = fd;
			else
				close(fd);
		}
	}
}

int vufe_recv_reply(int s, uint32_t req, void *pl, size_t cap, int *fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} ctl;
	struct pollfd p = {.fd = s, .events = POLLIN};
	struct vu_hdr h;
	struct iovec iov = {&h, sizeof(h)};
	struct msghdr m = {.msg_iov = &iov,
			   .msg_iovlen = 1,
			   .msg_control = ctl.buf,
			   .msg_controllen = sizeof(ctl.buf)};
	int keep = -1;
	ssize_t n;

	if (fd)
		*fd = -1;
	if (poll(&p, 1, VUFE_WAIT_MS) != 1)
		return -2;
	n = recvmsg(s, &m, MSG_WAITALL | MSG_CMSG_CLOEXEC);
	if (n == 0 || (n < 0 && errno == ECONNRESET))
		return -1;
	if (n > 0)
		reply_fds(&m, &keep);
	if (n != sizeof(h) || h.request != req || h.flags != (VU_VERSION | VU_FLAG_REPLY) ||
	    h.size > cap) {
		fprintf(stderr, "  bad reply to %u: %zd bytes, request %u flags %#x size %u\n", req,
			n, h.request, h.flags, h.size);
		goto bad;
	}
	if (h.size && recv(s, pl, h.size, MSG_WAITALL) != (ssize_t)h.size)
		goto bad;
	if (fd)
		*fd = keep;
	else if (keep >= 0)
		close(keep);
	return (int)h.size;
bad:
	if (keep >= 0)
		close(keep);
	return -2;
}

long vufe_call(int s, uint32_t req, const void *pl, uint32_t size, const int *fds, unsigned nfds)
{
	uint64_t ack;
	int n;

	if (vufe_send_msg(s, req, VU_VERSION | VU_FLAG_NEED_REPLY, pl, size, fds, nfds))
		return errno == EPIPE || errno == ECONNRESET ? -1 : -2;
	n = vufe_recv_reply(s, req, &ack, sizeof(ack), NULL);
	if (n < 0)
		return n;
	return n != 8 ? -2 : ack != 0;
}

long vufe_call_u64(int s, uint32_t req, uint64_t v)
{
	return vufe_call(s, req, &v, 8, NULL, 0);
}

long vufe_call_state(int s, uint32_t req, uint32_t idx, uint32_t num)
{
	struct vu_vring_state st = {idx, num};

	return vufe_call(s, req, &st, sizeof(st), NULL, 0);
}

long vufe_call_vring_fd(int s, uint32_t req, uint64_t idx, int fd)
{
	uint64_t v = idx | (fd < 0 ? VU_VRING_NOFD : 0);

	return vufe_call(s, req, &v, 8, &fd, fd >= 0 ? 1 : 0);
}

int vufe_get_u64(int s, uint32_t req, uint64_t *out)
{
	if (vufe_send_msg(s, req, VU_VERSION, NULL, 0, NULL, 0))
		return -1;
	return vufe_recv_reply(s, req, out, sizeof(*out), NULL) == 8 ? 0 : -1;
}

long vufe_get_vring_base(int s, uint32_t idx)
{
	struct vu_vring_state st = {idx, 0};

	if (vufe_send_msg(s, VU_GET_VRING_BASE, VU_VERSION, &st, sizeof(st), NULL, 0) ||
	    vufe_recv_reply(s, VU_GET_VRING_BASE, &st, sizeof(st), NULL) != sizeof(st) ||
	    st.index != idx)
		return -1;
	return st.num;
}

bool vufe_peer_closed(int s, int ms)
{
	uint8_t b[64];
	long long end = th_now_ms() + ms;

	for (;;) {
		struct pollfd p = {.fd = s, .events = POLLIN};
		long long left = end - th_now_ms();
		ssize_t n;

		if (left < 0 || poll(&p, 1, (int)left) != 1)
			return false;
		n = recv(s, b, sizeof(b), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n < 0 && errno != EAGAIN)
			return false;
	}
}

int vufe_open(const char *path, uint64_t *features, int ms)
{
	long long end = th_now_ms() + ms;
	uint64_t f;

	for (;;) {
		int s = vufe_sock_connect(path);

		if (s >= 0 && vufe_get_u64(s, VU_GET_FEATURES, features ? features : &f) == 0)
			return s;
		if (s >= 0)
			close(s);
		if (th_now_ms() > end) {
			fprintf(stderr, "%s: no frontend session within %d ms\n", path, ms);
			return -1;
		}
		usleep(10000);
	}
}

/* ---- a session ----------------------------------------------------------------------------- */

int vufe_init(struct vufe *fe, uint64_t mem_size, const struct vufe_opts *opts)
{
	int err;

	memset(fe, 0, sizeof(*fe));
	fe->sock = fe->infl_fd = fe->log_fd = fe->g.memfd = -1;
	if (opts)
		fe->o = *opts;
	if (!fe->o.pairs)
		fe->o.pairs = 1;
	if (!fe->o.qsize)
		fe->o.qsize = 256;
	if (!fe->o.open_wait_ms)
		fe->o.open_wait_ms = VUFE_WAIT_MS;
	if (fe->o.pairs > VUFE_MAX_PAIRS)
		return -EINVAL;
	/* Rings (with their alignment slack) and one buffer per descriptor must fit. */
	if ((uint64_t)2 * fe->o.pairs * fe->o.qsize * (VUFE_BUF + 64) + 64 * 4096 > mem_size)
		return -ENOMEM;
	err = fg_init(&fe->g, mem_size);
	if (err) {
		fg_destroy(&fe->g);
		return err;
	}
	for (unsigned i = 0; i < 2 * fe->o.pairs; i++) {
		struct fg_vq *q = &fe->q[i];

		err = fg_vq_init(&fe->g, q, fe->o.qsize);
		fe->nrings++; /* fg_vq_destroy copes with a partial init */
		fe->buf[i] = calloc(fe->o.qsize, sizeof(uint64_t));
		fe->owned[i] = calloc(fe->o.qsize, 1);
		if (err || !fe->buf[i] || !fe->owned[i]) {
			vufe_fini(fe);
			return err ? err : -ENOMEM;
		}
		/* Each ring's buffers start on a page of their own: a page is then written by the
		 * driver (rings it fills, TX buffers) or by the device (used rings, RX buffers),
		 * never both, which the dirty-log audit (test_dirty_audit) relies on. */
		for (unsigned d = 0; d < fe->o.qsize; d++)
			fe->buf[i][d] = fg_alloc(&fe->g, VUFE_BUF, d ? 64 : 4096);
	}
	return 0;
}

void vufe_fini(struct vufe *fe)
{
	if (fe->sock >= 0)
		close(fe->sock);
	fe->sock = -1;
	if (fe->infl)
		munmap(fe->infl, fe->infl_size);
	if (fe->infl_fd >= 0)
		close(fe->infl_fd);
	fe->infl = NULL;
	fe->infl_fd = -1;
	if (fe->log)
		munmap(fe->log, fe->log_size);
	if (fe->log_fd >= 0)
		close(fe->log_fd);
	fe->log = NULL;
	fe->log_fd = -1;
	fe->logging = false;
	for (unsigned i = 0; i < fe->nrings; i++) {
		fg_vq_destroy(&fe->q[i]);
		free(fe->buf[i]);
		free(fe->owned[i]);
		fe->buf[i] = NULL;
		fe->owned[i] = NULL;
	}
	fe->nrings = 0;
	fg_destroy(&fe->g);
}

uint64_t vufe_uva(struct vufe *fe, uint64_t gpa)
{
	return (uint64_t)(uintptr_t)fg_va(&fe->g, gpa);
}

long vufe_set_mem_table(struct vufe *fe)
{
	struct vu_mem_table t = {.nregions = 1};
	int fd = dup(fe->g.memfd);
	long r;

	if (fd < 0)
		return -2;
	t.regions[0] =
	    (struct vu_mem_region){FG_GPA_BASE, fe->g.size, vufe_uva(fe, FG_GPA_BASE), 0};
	r = vufe_call(fe->sock, VU_SET_MEM_TABLE, &t, 8 + sizeof(t.regions[0]), &fd, 1);
	close(fd);
	return r;
}

long vufe_set_vring_addr(struct vufe *fe, uint32_t ring)
{
	struct fg_vq *q = &fe->q[ring];
	struct vu_vring_addr a = {.index = ring,
				  .desc_user_addr = vufe_uva(fe, q->desc),
				  .used_user_addr = vufe_uva(fe, q->used),
				  .avail_user_addr = vufe_uva(fe, q->avail)};

	if (fe->logging) {
		a.flags = 1; /* VHOST_VRING_F_LOG: log the used ring's writes at log_guest_addr */
		a.log_guest_addr = q->used;
	}
	return vufe_call(fe->sock, VU_SET_VRING_ADDR, &a, sizeof(a), NULL, 0);
}

int vufe_log_start(struct vufe *fe)
{
	/* QEMU sizes the log for the highest guest address, in whole 64-bit words. */
	uint64_t pages = (FG_GPA_BASE + fe->g.size + 4095) / 4096;
	uint64_t pl[2] = {htole64((pages + 63) / 64 * 8), 0};
	void *p;

	if (!(fe->pfeatures & F(VU_PF_LOG_SHMFD)))
		return -1;
	if (!fe->log) { /* one log per guest, shared again with each session that logs */
		fe->log_size = le64toh(pl[0]);
		fe->log_fd = memfd_create("vufe-log", MFD_CLOEXEC);
		if (fe->log_fd < 0 || ftruncate(fe->log_fd, (off_t)fe->log_size))
			return -1;
		p = mmap(NULL, fe->log_size, PROT_READ | PROT_WRITE, MAP_SHARED, fe->log_fd, 0);
		if (p == MAP_FAILED)
			return -1;
		fe->log = p;
	}
	/* With LOG_SHMFD the backend answers SET_LOG_BASE with an empty reply (no NEED_REPLY). */
	if (vufe_send_msg(fe->sock, VU_SET_LOG_BASE, VU_VERSION, pl, sizeof(pl), &fe->log_fd, 1) ||
	    vufe_recv_reply(fe->sock, VU_SET_LOG_BASE, NULL, 0, NULL) != 0) {
		fprintf(stderr, "  %s: SET_LOG_BASE failed\n", fe->path);
		return -1;
	}
	fe->logging = true;
	fe->features |= F(VU_F_LOG_ALL);
	if (vufe_call_u64(fe->sock, VU_SET_FEATURES, fe->features)) {
		fprintf(stderr, "  %s: SET_FEATURES with LOG_ALL failed\n", fe->path);
		return -1;
	}
	for (unsigned i = 0; i < fe->nrings; i++)
		if (vufe_set_vring_addr(fe, i)) {
			fprintf(stderr, "  %s: SET_VRING_ADDR %u with the log flag failed\n",
				fe->path, i);
			return -1;
		}
	return 0;
}

bool vufe_log_marked(const struct vufe *fe, uint64_t gpa)
{
	uint64_t pg = gpa / 4096;

	return fe->log && pg / 8 < fe->log_size &&
	       (__atomic_load_n(fe->log + pg / 8, __ATOMIC_RELAXED) >> (pg % 8)) & 1;
}

int vufe_stop(struct vufe *fe)
{
	for (unsigned i = 0; i < fe->nrings; i++) {
		long b = vufe_get_vring_base(fe->sock, i);

		if (b < 0) {
			fprintf(stderr, "  %s: GET_VRING_BASE %u failed\n", fe->path, i);
			return -1;
		}
		fe->base[i] = (uint16_t)b;
	}
	return 0;
}

uint16_t vufe_used_idx(struct vufe *fe, unsigned ring)
{
	const uint16_t *p = fg_va(&fe->g, fe->q[ring].used + 2);

	return le16toh(__atomic_load_n(p, __ATOMIC_ACQUIRE));
}

/* GET_INFLIGHT_FD, once per guest (QEMU keeps the area across backend restarts). */
static bool inflight_get(struct vufe *fe)
{
	struct vu_inflight in = {.num_queues = (uint16_t)fe->nrings, .queue_size = fe->o.qsize};
	void *p;
	int fd;

	if (fe->infl_fd >= 0)
		return true;
	if (vufe_send_msg(fe->sock, VU_GET_INFLIGHT_FD, VU_VERSION, &in, sizeof(in), NULL, 0) ||
	    vufe_recv_reply(fe->sock, VU_GET_INFLIGHT_FD, &in, sizeof(in), &fd) != sizeof(in))
		return false;
	if (fd < 0 || !in.mmap_size) {
		fprintf(stderr, "  GET_INFLIGHT_FD: %llu bytes, fd %d\n",
			(unsigned long long)in.mmap_size, fd);
		if (fd >= 0)
			close(fd);
		return false;
	}
	p = mmap(NULL, in.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)in.mmap_offset);
	if (p == MAP_FAILED) {
		close(fd);
		return false;
	}
	fe->infl = p;
	fe->infl_size = in.mmap_size;
	fe->infl_fd = fd;
	return true;
}

static bool inflight_set(struct vufe *fe)
{
	struct vu_inflight in = {.mmap_size = fe->infl_size,
				 .num_queues = (uint16_t)fe->nrings,
				 .queue_size = fe->o.qsize};

	return fe->infl_fd >= 0 &&
	       vufe_call(fe->sock, VU_SET_INFLIGHT_FD, &in, sizeof(in), &fe->infl_fd, 1) == 0;
}

unsigned vufe_ring_step0(const struct vufe *fe)
{
	return fe->o.inflight ? 8 : 6;
}

unsigned vufe_nsteps(const struct vufe *fe)
{
	return vufe_ring_step0(fe) + 6 * fe->nrings;
}

bool vufe_step(struct vufe *fe, unsigned k)
{
	int s = fe->sock;
	uint64_t v = 0, want;
	unsigned r0 = vufe_ring_step0(fe);
	uint32_t ring;

	switch (k) {
	case 0:
		return vufe_get_u64(s, VU_GET_PROTOCOL_FEATURES, &v) == 0 &&
		       (v & F(VU_PF_REPLY_ACK)) &&
		       (!fe->o.inflight || (v & F(VU_PF_INFLIGHT_SHMFD))) &&
		       (!fe->o.log || (v & F(VU_PF_LOG_SHMFD)));
	case 1:
		fe->pfeatures = F(VU_PF_REPLY_ACK) | F(VU_PF_MQ);
		if (fe->o.inflight)
			fe->pfeatures |= F(VU_PF_INFLIGHT_SHMFD);
		if (fe->o.log)
			fe->pfeatures |= F(VU_PF_LOG_SHMFD);
		/* Without NEED_REPLY, as QEMU sends it: REPLY_ACK is not negotiated before. */
		return vufe_send_msg(s, VU_SET_PROTOCOL_FEATURES, VU_VERSION, &fe->pfeatures, 8,
				     NULL, 0) == 0;
	case 2:
		return vufe_call(s, VU_SET_OWNER, NULL, 0, NULL, 0) == 0;
	case 3:
		return vufe_get_u64(s, VU_GET_QUEUE_NUM, &v) == 0 && v >= fe->o.pairs;
	case 4:
		want = F(VQ_F_VERSION_1) | F(VU_F_PROTOCOL_FEATURES);
		if (!fe->o.nomrg)
			want |= F(VIRTIO_NET_F_MRG_RXBUF);
		if (fe->o.event_idx)
			want |= F(VQ_F_EVENT_IDX);
		fe->features = fe->dev_features & want;
		if (fe->logging)
			fe->features |= F(VU_F_LOG_ALL);
		return vufe_call_u64(s, VU_SET_FEATURES, fe->features) == 0;
	case 5:
		return vufe_set_mem_table(fe) == 0;
	}
	if (k < r0)
		return k == 6 ? inflight_get(fe) : inflight_set(fe);
	ring = (k - r0) / 6;
	if (ring >= fe->nrings)
		return false;
	switch ((k - r0) % 6) {
	case 0:
		return vufe_call_state(s, VU_SET_VRING_NUM, ring, fe->o.qsize) == 0;
	case 1:
		return vufe_call_state(s, VU_SET_VRING_BASE, ring, fe->base[ring]) == 0;
	case 2:
		return vufe_set_vring_addr(fe, ring) == 0;
	case 3:
		return vufe_call_vring_fd(s, VU_SET_VRING_KICK, ring, fe->q[ring].kick_fd) == 0;
	case 4:
		return vufe_call_vring_fd(s, VU_SET_VRING_CALL, ring, fe->q[ring].call_fd) == 0;
	default:
		return vufe_call_state(s, VU_SET_VRING_ENABLE, ring, 1) == 0;
	}
}

int vufe_open_session(struct vufe *fe, const char *path)
{
	if (path != fe->path)
		snprintf(fe->path, sizeof(fe->path), "%s", path);
	if (fe->sock >= 0)
		close(fe->sock);
	fe->logging = false; /* a new session logs once vufe_log_start says so */
	fe->sock = vufe_open(fe->path, &fe->dev_features, fe->o.open_wait_ms);
	return fe->sock >= 0 ? 0 : -1;
}

int vufe_start(struct vufe *fe, const char *path)
{
	if (vufe_open_session(fe, path))
		return -1;
	for (unsigned k = 0; k < vufe_nsteps(fe); k++) {
		if (!vufe_step(fe, k)) {
			fprintf(stderr, "  %s: session step %u failed\n", fe->path, k);
			return -1;
		}
	}
	return 0;
}

int vufe_connect_opts(struct vufe *fe, const char *sock_path, uint64_t mem_size,
		      const struct vufe_opts *opts)
{
	int err = vufe_init(fe, mem_size, opts);

	if (err)
		return err;
	return vufe_start(fe, sock_path);
}

int vufe_connect(struct vufe *fe, const char *sock_path, uint64_t mem_size)
{
	return vufe_connect_opts(fe, sock_path, mem_size, NULL);
}

void vufe_disconnect(struct vufe *fe)
{
	if (fe->sock >= 0)
		close(fe->sock);
	fe->sock = -1;
}

int vufe_reconnect(struct vufe *fe)
{
	vufe_disconnect(fe);
	/* QEMU, having lost the backend, cannot ask GET_VRING_BASE: it restarts each ring at the
	 * used index the device published (virtio_queue_restore_last_avail_idx). */
	for (unsigned i = 0; i < fe->nrings; i++)
		fe->base[i] = vufe_used_idx(fe, i);
	return vufe_start(fe, fe->path);
}

void vufe_close(struct vufe *fe)
{
	vufe_disconnect(fe);
	vufe_fini(fe);
}

/* ---- datapath ----------------------------------------------------------------------------- */

static void own(struct vufe *fe, unsigned ring, int head)
{
	fe->owned[ring][head] = 1;
	fe->nowned[ring]++;
}

int vufe_send_q(struct vufe *fe, unsigned qp, const void *frame, size_t len)
{
	unsigned r = 2 * qp + 1;
	struct fg_vq *q = &fe->q[r];
	uint64_t gpa;
	uint8_t *b;
	int head;

	if (qp >= fe->o.pairs)
		return -EINVAL;
	if (len + VNET_HDR_LEN_V1 > VUFE_BUF)
		return -EMSGSIZE;
	if (!q->nfree)
		return -ENOSPC;
	/* One-descriptor chains: the head is the next free descriptor, whose buffer we fill. */
	gpa = fe->buf[r][q->free_head];
	b = fg_va(&fe->g, gpa);
	memset(b, 0, VNET_HDR_LEN_V1);
	memcpy(b + VNET_HDR_LEN_V1, frame, len);
	head = fg_add(q, &(struct fg_buf){gpa, (uint32_t)(len + VNET_HDR_LEN_V1), false}, 1, false);
	if (head < 0)
		return head;
	own(fe, r, head);
	if (!fe->batching)
		fg_publish(q, true);
	return head;
}

int vufe_send(struct vufe *fe, const void *frame, size_t len)
{
	return vufe_send_q(fe, 0, frame, len);
}

int vufe_post_rx_q(struct vufe *fe, unsigned qp, unsigned n, uint32_t size)
{
	unsigned r = 2 * qp, done = 0;
	struct fg_vq *q = &fe->q[r];

	if (qp >= fe->o.pairs || size > VUFE_BUF)
		return -EINVAL;
	while (done < n && q->nfree) {
		uint64_t gpa = fe->buf[r][q->free_head];
		int head = fg_add(q, &(struct fg_buf){gpa, size, true}, 1, false);

		if (head < 0)
			break;
		own(fe, r, head);
		done++;
	}
	if (done && !fe->batching)
		fg_publish(q, true);
	return (int)done;
}

void vufe_batch(struct vufe *fe, bool on)
{
	fe->batching = on;
	if (on)
		return;
	for (unsigned i = 0; i < fe->nrings; i++) {
		struct fg_vq *q = &fe->q[i];
		const uint16_t *idx = fg_va(&fe->g, q->avail + 2);

		if (le16toh(*idx) != q->avail_idx)
			fg_publish(q, true);
	}
}

int vufe_post_rx(struct vufe *fe, unsigned n, uint32_t size)
{
	return vufe_post_rx_q(fe, 0, n, size);
}

int vufe_take_used(struct vufe *fe, unsigned ring, uint32_t *id, uint32_t *len, int ms)
{
	struct fg_vq *q = &fe->q[ring];
	long long end = th_now_ms() + ms;
	const uint8_t *e;
	uint32_t v, head;

	while (!fg_used_pending(q)) {
		long long left = end - th_now_ms();

		if (left <= 0)
			return 0;
		fg_wait_call(q, left < 20 ? (int)left : 20);
	}
	/* Look before fg_used frees the chain: a head we do not owe the device must not touch the
	 * free list (it would corrupt it), only be counted. */
	e = fg_va(&fe->g, q->used + 4 + 8ull * (q->last_used % q->num));
	memcpy(&v, e, 4);
	head = le32toh(v);
	memcpy(&v, e + 4, 4);
	fe->used[ring]++;
	if (head >= q->num || !fe->owned[ring][head]) {
		fprintf(stderr, "  ring %u: used entry %u names head %u the device does not own\n",
			ring, q->last_used, head);
		fe->bad_used++;
		q->last_used++;
		*id = 0xffffffffu;
		*len = le32toh(v);
	} else {
		fg_used(q, id, len);
		fe->owned[ring][head] = 0;
		fe->nowned[ring]--;
	}
	/* EVENT_IDX: ask to be called when the next entry lands (VIRTIO 1.2 2.7.10). */
	if (fe->o.event_idx)
		fg_set_used_event(q, q->last_used);
	return 1;
}

unsigned vufe_reap_tx(struct vufe *fe, unsigned qp)
{
	uint32_t id, len;
	unsigned n = 0;

	while (vufe_take_used(fe, 2 * qp + 1, &id, &len, 0))
		n++;
	return n;
}

bool vufe_tx_drain(struct vufe *fe, unsigned qp, int ms)
{
	long long end = th_now_ms() + ms;
	uint32_t id, len;

	while (fe->nowned[2 * qp + 1]) {
		long long left = end - th_now_ms();

		if (left <= 0 || !vufe_take_used(fe, 2 * qp + 1, &id, &len, (int)left))
			return false;
	}
	return true;
}

long vufe_recv_q(struct vufe *fe, unsigned qp, void *buf, size_t cap, int ms)
{
	unsigned r = 2 * qp;
	size_t got = 0;
	uint32_t id, len;
	uint16_t nb;

	if (!vufe_take_used(fe, r, &id, &len, ms))
		return 0;
	for (unsigned k = 0;; k++) {
		const uint8_t *b;
		size_t skip = k ? 0 : VNET_HDR_LEN_V1, n;

		if (id == 0xffffffffu || len > VUFE_BUF || len < skip) {
			fe->bad_rx++;
			return -1;
		}
		b = fg_va(&fe->g, fe->buf[r][id]);
		if (!k) {
			memcpy(fe->last_hdr, b, VNET_HDR_LEN_V1);
			memcpy(&nb, b + 10, 2);
			nb = le16toh(nb);
			/* VIRTIO 1.2 5.1.6.4: num_buffers >= 1; exactly 1 without MRG_RXBUF. */
			if (!nb || (fe->o.nomrg && nb != 1)) {
				fe->bad_rx++;
				return -1;
			}
		}
		n = len - skip;
		if (got + n > cap)
			n = cap > got ? cap - got : 0;
		memcpy((uint8_t *)buf + got, b + skip, n);
		got += n;
		if (k + 1 == nb)
			return (long)got;
		/* The rest of the frame was published with its first buffer. */
		if (!vufe_take_used(fe, r, &id, &len, VUFE_WAIT_MS)) {
			fe->bad_rx++;
			return -1;
		}
	}
}

long vufe_recv(struct vufe *fe, void *buf, size_t cap)
{
	return vufe_recv_q(fe, 0, buf, cap, 0);
}

size_t vufe_echo_len(uint32_t seq)
{
	return 60 + (seq * 2654435761u >> 7) % 1455u; /* 60..1514, scattered */
}

int vufe_echo_send(struct vufe *fe, uint32_t seq)
{
	static __thread uint8_t frame[VUFE_BUF];

	make_frame(frame, vufe_echo_len(seq), seq);
	return vufe_send(fe, frame, vufe_echo_len(seq));
}

bool vufe_echo_expect(struct vufe *fe, uint32_t seq, const char *who)
{
	static __thread uint8_t want[VUFE_BUF], got[VUFE_BUF];
	long n = vufe_recv_q(fe, 0, got, sizeof(got), VUFE_WAIT_MS);
	size_t len = vufe_echo_len(seq);

	make_frame(want, len, seq);
	if (n == (long)len && memcmp(got, want, len) == 0)
		return true;
	fprintf(stderr, "  %s: echo frame %#x: got %ld bytes, want %zu%s\n", who, seq, n, len,
		n == (long)len ? " (contents differ)" : "");
	return false;
}

bool vufe_echo_settle(struct vufe *fe)
{
	vufe_post_rx(fe, 256, VUFE_BUF);
	return vufe_tx_drain(fe, 0, VUFE_WAIT_MS) && !fe->bad_used && !fe->bad_rx;
}

bool vufe_echo_round(struct vufe *fe, uint32_t *sent, uint32_t *rcvd)
{
	vufe_reap_tx(fe, 0);
	for (unsigned k = 0; k < 16; k++)
		if (vufe_echo_send(fe, (*sent)++) < 0)
			return false;
	while (*rcvd != *sent)
		if (!vufe_echo_expect(fe, (*rcvd)++, fe->path))
			return false;
	return vufe_echo_settle(fe);
}
