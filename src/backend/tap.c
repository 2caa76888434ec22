// SPDX-License-Identifier: MIT
/*
 * TAP backend. Opens /dev/net/tun as IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (and IFF_MULTI_QUEUE on
 * request), non-blocking. Frames are read and written with the virtio-net header in front, so the
 * guest's checksum and segmentation offloads pass straight through the kernel. Never touches guest
 * rings; the iovecs it is given may point into guest memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef VIRTAP_HAVE_URING
#include <liburing.h>
#endif

#include "iov_copy.h"
#include "virtap/log.h"
#include "virtap/tap.h"
#include "virtap/vnet_defs.h"

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

#ifdef VIRTAP_HAVE_URING
/* Entries in a queue's io_uring: the most frames one burst may carry. */
#define TAP_BURST_MAX 64
/* Frames up to this size (header included) are written from a staging copy with one buffer. */
#define TAP_STAGE 512

/*
 * A queue's ring and its staging area. A frame of a burst that fits a stage slot is copied there
 * behind its header and written as one buffer (IORING_OP_WRITE): the kernel then takes it as a
 * plain user buffer, where a writev of header + frame costs an iovec import and an iovec walk
 * per frame, more than copying a small frame (measured, 64 B: 2.8 -> 3.0 Mpps). At 1518 B
 * the copy costs more than it saves (2.66 -> 2.60 Mpps), so larger frames keep their writev.
 */
struct tap_ring {
	struct io_uring r;
	uint8_t stage[TAP_BURST_MAX][TAP_STAGE];
};
#endif

/* Probe which offloads this kernel accepts, most first; USO appeared in Linux 6.2. */
static void probe_offloads(struct tap *t)
{
	static const unsigned tries[] = {
	    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO | TUN_F_USO4 |
		TUN_F_USO6,
	    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO,
	    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
	    TUN_F_CSUM,
	};

	t->tun_offloads = 0;
	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		if (ioctl(t->fd, TUNSETOFFLOAD, (unsigned long)tries[i]) == 0) {
			t->tun_offloads = tries[i];
			break;
		}
	}
	/* Until the guest negotiates, the kernel must hand us only plain frames. */
	ioctl(t->fd, TUNSETOFFLOAD, 0ul);
}

static int open_error(const char *name, const char *what, int err)
{
	switch (err) {
	case EPERM:
	case EACCES:
		vt_err("tap %s: %s: permission denied (needs CAP_NET_ADMIN, or a persistent TAP "
		       "owned by this user)",
		       name, what);
		break;
	case ENOENT:
	case ENODEV:
		vt_err("tap %s: %s: /dev/net/tun is missing (modprobe tun)", name, what);
		break;
	case EINVAL:
		vt_err("tap %s: %s: rejected; the interface exists but is not a TAP with matching "
		       "flags (TUN instead of TAP, or multi_queue differs)",
		       name, what);
		break;
	case EBUSY:
		vt_err("tap %s: %s: device busy (already attached with different flags, or all "
		       "queues in use)",
		       name, what);
		break;
	default:
		vt_err("tap %s: %s: %s", name, what, strerror(err));
	}
	return -err;
}

int tap_open(struct tap *t, const char *name, unsigned flags)
{
	unsigned features = 0;
	struct ifreq ifr;
	int fd, hdr = VNET_HDR_LEN_V1;

	memset(t, 0, sizeof(*t));
	t->fd = -1;
	if (!name || !*name || strlen(name) >= IF_NAMESIZE) {
		vt_err("tap: interface name '%s' is empty or longer than %d characters",
		       name ? name : "", IF_NAMESIZE - 1);
		return -EINVAL;
	}
	if ((flags & TAP_F_NO_CREATE) && tap_exists(name) != 1) {
		vt_err("tap %s: no such interface (and creating it was not allowed)", name);
		return -ENODEV;
	}
	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return open_error(name, "open /dev/net/tun", errno);
	if (ioctl(fd, TUNGETFEATURES, &features) == 0 && !(features & IFF_VNET_HDR)) {
		close(fd);
		vt_err("tap %s: this kernel's TUN driver has no IFF_VNET_HDR support", name);
		return -EOPNOTSUPP;
	}
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (flags & TAP_F_MULTI_QUEUE)
		ifr.ifr_flags |= IFF_MULTI_QUEUE;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int err = errno;

		close(fd);
		return open_error(name, "TUNSETIFF", err);
	}
	/* The kernel may have refused IFF_VNET_HDR silently on an odd device: check it stuck. */
	if (ioctl(fd, TUNGETIFF, &ifr) == 0 && !(ifr.ifr_flags & IFF_VNET_HDR)) {
		close(fd);
		vt_err("tap %s: the device does not keep IFF_VNET_HDR", name);
		return -EOPNOTSUPP;
	}
	if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		int err = errno;

		close(fd);
		return open_error(name, "TUNSETVNETHDRSZ", err);
	}
	t->fd = fd;
	t->hdr_len = hdr;
	snprintf(t->ifname, sizeof(t->ifname), "%s", ifr.ifr_name);
	probe_offloads(t);
	return 0;
}

void tap_close(struct tap *t)
{
#ifdef VIRTAP_HAVE_URING
	if (t->uring) {
		io_uring_queue_exit(&((struct tap_ring *)t->uring)->r);
		free(t->uring);
		t->uring = NULL;
	}
#endif
	free(t->rx_stage);
	t->rx_stage = NULL;
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
}

int tap_set_hdr_len(struct tap *t, int len)
{
	if (len != VNET_HDR_LEN_LEGACY && len != VNET_HDR_LEN_V1)
		return -EINVAL;
	if (ioctl(t->fd, TUNSETVNETHDRSZ, &len) < 0) {
		int err = errno;

		vt_err("tap %s: TUNSETVNETHDRSZ %d: %s", t->ifname, len, strerror(err));
		return -err;
	}
	t->hdr_len = len;
	return 0;
}

int tap_set_offloads(struct tap *t, uint64_t f)
{
	unsigned long off = 0;

	if (f & VNET_BIT(VIRTIO_NET_F_GUEST_CSUM)) {
		/* TSO/UFO/USO towards the guest only make sense with partial checksums. */
		off |= TUN_F_CSUM;
		if (f & VNET_BIT(VIRTIO_NET_F_GUEST_TSO4))
			off |= TUN_F_TSO4;
		if (f & VNET_BIT(VIRTIO_NET_F_GUEST_TSO6))
			off |= TUN_F_TSO6;
		if ((f & VNET_BIT(VIRTIO_NET_F_GUEST_ECN)) && (off & (TUN_F_TSO4 | TUN_F_TSO6)))
			off |= TUN_F_TSO_ECN;
		if (f & VNET_BIT(VIRTIO_NET_F_GUEST_UFO))
			off |= TUN_F_UFO;
		if (f & VNET_BIT(VIRTIO_NET_F_GUEST_USO4))
			off |= TUN_F_USO4;
		if (f & VNET_BIT(VIRTIO_NET_F_GUEST_USO6))
			off |= TUN_F_USO6;
	}
	off &= t->tun_offloads;
	if (ioctl(t->fd, TUNSETOFFLOAD, off) < 0) {
		int err = errno;

		vt_err("tap %s: TUNSETOFFLOAD %#lx: %s", t->ifname, off, strerror(err));
		return -err;
	}
	return 0;
}

uint64_t tap_features(const struct tap *t)
{
	/* The kernel accepts checksum and segmentation offloads from us (the HOST_* side) on any
	 * TAP with IFF_VNET_HDR; what it can produce for the guest is what the probe found. */
	uint64_t f = VNET_BIT(VIRTIO_NET_F_CSUM) | VNET_BIT(VIRTIO_NET_F_HOST_TSO4) |
		     VNET_BIT(VIRTIO_NET_F_HOST_TSO6) | VNET_BIT(VIRTIO_NET_F_HOST_ECN) |
		     VNET_BIT(VIRTIO_NET_F_HOST_UFO);

	if (t->tun_offloads & TUN_F_CSUM)
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_CSUM);
	if (t->tun_offloads & TUN_F_TSO4)
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_TSO4);
	if (t->tun_offloads & TUN_F_TSO6)
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_TSO6);
	if (t->tun_offloads & TUN_F_TSO_ECN)
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_ECN);
	if (t->tun_offloads & TUN_F_UFO)
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_UFO);
	if (t->tun_offloads & TUN_F_USO4)
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_USO4) | VNET_BIT(VIRTIO_NET_F_HOST_USO);
	if (t->tun_offloads & TUN_F_USO6)
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_USO6);
	return f;
}

int tap_set_queue_attached(struct tap *t, bool attached)
{
	struct ifreq ifr;

	if (t->fd < 0 || t->detached == !attached)
		return 0;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = attached ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
	if (ioctl(t->fd, TUNSETQUEUE, &ifr) < 0) {
		int err = errno;

		vt_err("tap %s: cannot %s a queue: %s", t->ifname, attached ? "attach" : "detach",
		       strerror(err));
		return -err;
	}
	t->detached = !attached;
	return 0;
}

static int ifreq_ioctl(const char *ifname, unsigned long req, struct ifreq *ifr)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), err = 0;

	if (s < 0)
		return -errno;
	snprintf(ifr->ifr_name, sizeof(ifr->ifr_name), "%s", ifname);
	if (ioctl(s, req, ifr) < 0)
		err = -errno;
	close(s);
	return err;
}

int tap_exists(const char *ifname)
{
	struct ifreq ifr;
	int err;

	memset(&ifr, 0, sizeof(ifr));
	err = ifreq_ioctl(ifname, SIOCGIFFLAGS, &ifr);
	if (err == -ENODEV)
		return 0;
	return err ? err : 1;
}

int tap_set_link(const char *ifname, bool up)
{
	struct ifreq ifr;
	int err;

	memset(&ifr, 0, sizeof(ifr));
	err = ifreq_ioctl(ifname, SIOCGIFFLAGS, &ifr);
	if (err)
		return err;
	if (up)
		ifr.ifr_flags |= IFF_UP;
	else
		ifr.ifr_flags &= ~IFF_UP;
	err = ifreq_ioctl(ifname, SIOCSIFFLAGS, &ifr);
	if (err)
		vt_err("tap %s: cannot bring the link %s: %s", ifname, up ? "up" : "down",
		       strerror(-err));
	return err;
}

int tap_set_mtu(const char *ifname, unsigned mtu)
{
	struct ifreq ifr;
	int err;

	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_mtu = (int)mtu;
	err = ifreq_ioctl(ifname, SIOCSIFMTU, &ifr);
	if (err)
		vt_err("tap %s: cannot set MTU %u: %s", ifname, mtu, strerror(-err));
	return err;
}

/*
 * RX reads into a staging buffer with read(), then copies into the guest's buffers. The kernel
 * takes one plain buffer where a readv into guest buffer + bounce costs an iovec import and walk
 * per frame; the copy it replaces is from a buffer still in cache (TAP -> guest ring, 64 B,
 * queued batches: 2.07 -> 2.16 Mpps; 1518 B unchanged). Room for any frame the TAP can hand us,
 * header included, and one byte more: a read that fills it may be cut, and like a frame longer
 * than iov it comes back as the iov's whole length, which the device treats as possibly
 * truncated (and drops).
 */
#define TAP_RX_STAGE (VNET_MAX_FRAME + VNET_HDR_LEN_V1 + 1)

static ssize_t tap_be_rx(void *be, const struct iovec *iov, int n)
{
	struct tap *t = be;
	size_t len;
	ssize_t r;

	if (!t->rx_stage && n > 1)
		t->rx_stage = malloc(TAP_RX_STAGE);
	if (n == 1 || !t->rx_stage) {
		r = readv(t->fd, iov, n);
		return r < 0 ? -errno : r;
	}
	r = read(t->fd, t->rx_stage, TAP_RX_STAGE);
	if (r < 0)
		return -errno;
	len = (size_t)r;
	if (len == TAP_RX_STAGE) {
		/* Larger than any frame we expect: it may have been cut here. Say it filled the
		 * caller's whole iov, which the caller takes as possibly truncated (and drops). */
		return (ssize_t)be_iov_len(iov, n);
	}
	return (ssize_t)be_scatter_frame(iov, n, t->rx_stage, len, (size_t)t->hdr_len);
}

static ssize_t tap_be_tx(void *be, const struct iovec *iov, int n)
{
	struct tap *t = be;
	ssize_t r = writev(t->fd, iov, n);

	return r < 0 ? -errno : r;
}

#ifdef VIRTAP_HAVE_URING
/* The queue's io_uring, made on first use. A kernel without io_uring (or with it disabled, or a
 * seccomp filter that refuses it) gets one warning and per-frame syscalls from then on. */
static struct tap_ring *tap_uring(struct tap *t)
{
	struct tap_ring *r;
	int err;

	if (t->uring || t->uring_failed)
		return t->uring;
	r = calloc(1, sizeof(*r));
	if (!r) {
		t->uring_failed = true;
		return NULL;
	}
	/* The fd is not registered with the ring: a registered file stays referenced until the
	 * kernel's deferred ring teardown, and the TAP queue would look busy after tap_close. */
	err = io_uring_queue_init(TAP_BURST_MAX, &r->r, 0);
	if (err) {
		free(r);
		t->uring_failed = true;
		vt_warn("tap %s: no io_uring (%s): one system call per frame", t->ifname,
			strerror(-err));
		return NULL;
	}
	t->uring = r;
	return r;
}

/* Copy frame m into stage slot dst; its length, or 0 if it does not fit. */
static size_t tap_stage(uint8_t *dst, const struct be_msg *m)
{
	if (be_iov_len(m->iov, m->niov) > TAP_STAGE)
		return 0;
	return be_gather(dst, TAP_STAGE, m->iov, m->niov);
}

/*
 * One io_uring_enter for n writes: with the TAP's default (unlimited) send buffer a write never
 * waits, the kernel takes or drops the frame, so each completes inline, in order. Reads would
 * not: io_uring ignores O_NONBLOCK on a file that can poll and parks a read of an empty queue
 * (it would need RWF_NOWAIT). RX stays one read() per frame (measured: BENCHMARKS.md).
 */
static int tap_be_tx_burst(void *be, struct be_msg *m, int n)
{
	struct tap *t = be;
	struct tap_ring *tr = tap_uring(t);
	struct io_uring *r = tr ? &tr->r : NULL;
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0;
	int err;

	if (!r)
		return -ENOSYS;
	if (n > TAP_BURST_MAX)
		n = TAP_BURST_MAX;
	for (int i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(r);
		size_t len = tap_stage(tr->stage[i], &m[i]);

		if (len)
			io_uring_prep_write(sqe, t->fd, tr->stage[i], (unsigned)len, 0);
		else
			io_uring_prep_writev(sqe, t->fd, m[i].iov, (unsigned)m[i].niov, 0);
		io_uring_sqe_set_data64(sqe, (uint64_t)i);
		m[i].res = -EAGAIN;
	}
	do {
		err = io_uring_submit_and_wait(r, (unsigned)n);
	} while (err == -EINTR);
	if (err < 0) {
		/* Nothing was submitted: give the entries back and let the caller go one by one. */
		io_uring_queue_exit(r);
		free(tr);
		t->uring = NULL;
		t->uring_failed = true;
		vt_warn("tap %s: io_uring submit: %s: one system call per frame", t->ifname,
			strerror(-err));
		return err;
	}
	io_uring_for_each_cqe(r, head, cqe)
	{
		uint64_t i = io_uring_cqe_get_data64(cqe);

		if (i < (uint64_t)n)
			m[i].res = cqe->res;
		seen++;
	}
	io_uring_cq_advance(r, seen);
	return n;
}
#endif

static int tap_be_fd(void *be)
{
	return ((struct tap *)be)->fd;
}

static int tap_be_set_hdr_len(void *be, int len)
{
	return tap_set_hdr_len(be, len);
}

static int tap_be_set_offloads(void *be, uint64_t f)
{
	return tap_set_offloads(be, f);
}

static uint64_t tap_be_features(void *be)
{
	return tap_features(be);
}

const struct be_ops tap_be_ops = {
    .name = "tap",
    .rx = tap_be_rx,
    .tx = tap_be_tx,
    .fd = tap_be_fd,
    .set_hdr_len = tap_be_set_hdr_len,
    .set_offloads = tap_be_set_offloads,
    .features = tap_be_features,
#ifdef VIRTAP_HAVE_URING
    .tx_burst = tap_be_tx_burst,
#endif
};
