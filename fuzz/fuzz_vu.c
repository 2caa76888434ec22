// SPDX-License-Identifier: MIT
/*
 * Fuzz the vhost-user server through its real parser and handlers: the input is a series of
 * records (fd count and kind, length, bytes) written to a connected socket, each with that many
 * fds attached, of the record's kind: a 1 MiB memfd then eventfds (memory tables), eventfds as a
 * frontend makes them, eventfds left blocking, blocking ones preloaded to the most they hold,
 * epoll fds, which are no eventfds, or a memfd that cannot be sealed then eventfds, where the
 * memfd is truncated to nothing once the port has handled the record (what the port mapped from
 * it raises SIGBUS on the next touch, which the guard, gmem_guard.h, must turn into a dropped
 * connection); as a hostile frontend would. A memfd starts with the record's own bytes, zeros
 * after them: bytes that follow the message in the record (in a request the port skips, such as
 * SET_CONFIG) become guest memory, an inflight area or a dirty log, so rings there hold chains
 * the fuzzer wrote. The port serves a sink backend and has an MTU (NET_MTU is offered), so rings
 * that get started are real and run on worker threads, and a blocking call fd really blocks a
 * worker until the watchdog cuts it short (pfd.h). After each input the connection is dropped
 * and every fd must be back to the count before it: a leak traps.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "virtap/evl.h"
#include "virtap/gmem_guard.h"
#include "virtap/log.h"
#include "virtap/vu.h"

static struct evl *loop;
static struct vu_port *port;
static int baseline = -1;

/* Open fds of the kinds virtap handles (sockets, eventfds, epoll, memfds): libFuzzer's own
 * pipes and files come and go and are not ours to count. */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char path[300], target[256];
		ssize_t len;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = 0;
		if (!strncmp(target, "socket:", 7) || !strncmp(target, "anon_inode:", 11) ||
		    !strncmp(target, "/memfd:", 7))
			n++;
	}
	closedir(d);
	return n;
}

/* Lines are formatted (ASan sees every value a peer put in one) and dropped. */
static void drop_line(void *ctx, int level, const char *msg)
{
	(void)ctx;
	(void)level;
	(void)msg;
}

/* libFuzzer ends a run with exit(): the port is torn down as the daemon's are, under ASan. */
static void teardown(void)
{
	vu_port_destroy(port);
	evl_destroy(loop);
}

static void setup(void)
{
	struct vu_port_config cfg;

	/* Not debug: that has lines per dropped frame. What a peer causes above it is
	 * rate-limited per port, a few lines a second at most. */
	vt_log_set_sink(drop_line, NULL);
	vt_log_set_level(VT_LOG_INFO);
	/* As the daemon does: without the guard a truncated memfd's SIGBUS ends the run. */
	if (gmem_guard_install() || evl_create(&loop))
		__builtin_trap();
	vu_port_config_default(&cfg);
	snprintf(cfg.socket, sizeof(cfg.socket), "/tmp/vt-fuzz-vu-%d.sock", (int)getpid());
	snprintf(cfg.backend, sizeof(cfg.backend), "sink");
	snprintf(cfg.name, sizeof(cfg.name), "fz");
	cfg.queues = 2;
	cfg.mtu = 1500; /* offers NET_MTU; the sink backend has no MTU to set */
	if (vu_port_create(&port, &cfg, loop) || atexit(teardown))
		__builtin_trap();
}

enum fd_kind {
	FD_MEM,
	FD_EVENT,
	FD_EVENT_BLOCKING,
	FD_EVENT_FULL,
	FD_EPOLL,
	FD_MEM_SHRINK,
	FD_KINDS
};

static int make_fd(unsigned i, enum fd_kind kind, const uint8_t *data, size_t len)
{
	uint64_t full = 0xfffffffffffffffeull;
	int fd;

	if (i || (kind != FD_MEM && kind != FD_MEM_SHRINK)) {
		switch (kind) {
		case FD_EVENT_BLOCKING:
			return eventfd(0, EFD_CLOEXEC);
		case FD_EVENT_FULL:
			fd = eventfd(0, EFD_CLOEXEC);
			if (fd >= 0 && write(fd, &full, sizeof(full)) < 0) {
				close(fd);
				return -1;
			}
			return fd;
		case FD_EPOLL:
			return epoll_create1(EPOLL_CLOEXEC);
		default:
			return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		}
	}
	/* Without MFD_ALLOW_SEALING the port's F_SEAL_SHRINK fails, as on a tmpfs file. */
	fd = memfd_create("fz", MFD_CLOEXEC | (kind == FD_MEM ? MFD_ALLOW_SEALING : 0));
	if (fd >= 0 && (ftruncate(fd, 1 << 20) < 0 || pwrite(fd, data, len, 0) != (ssize_t)len)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send one record; returns the memfd to truncate once the port has handled it, or -1. */
static int send_record(int sock, const uint8_t *data, size_t len, unsigned nfds, enum fd_kind kind)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 12)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {(void *)data, len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	int fds[12];

	for (unsigned i = 0; i < nfds; i++)
		fds[i] = make_fd(i, kind, data, len);
	if (nfds) {
		struct cmsghdr *c;

		m.msg_control = ctl.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	if (sendmsg(sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		/* a full or closed socket: the port dropped us, which is a valid outcome */
	}
	for (unsigned i = kind == FD_MEM_SHRINK; i < nfds; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return kind == FD_MEM_SHRINK && nfds ? fds[0] : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	int sv[2];

	if (!loop)
		setup();
	if (baseline < 0)
		baseline = count_fds();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	if (vu_port_adopt(port, sv[1])) {
		close(sv[0]);
		return 0;
	}
	while (n >= 3) {
		unsigned nfds = d[0] % 11;
		enum fd_kind kind = (enum fd_kind)(d[0] / 11 % FD_KINDS);
		size_t len = (size_t)(d[1] | d[2] << 8);
		int shrink;

		d += 3;
		n -= 3;
		if (len > n)
			len = n;
		shrink = send_record(sv[0], d, len, nfds, kind);
		d += len;
		n -= len;
		evl_poll(loop, 0);
		if (shrink >= 0) {
			if (ftruncate(shrink, 0) < 0) {
				/* cannot happen to our own unsealed memfd */
			}
			close(shrink);
		}
		if (!vu_port_connected(port))
			break;
	}
	close(sv[0]);
	for (int i = 0; i < 100 && vu_port_connected(port); i++)
		evl_poll(loop, 10);
	if (vu_port_connected(port) || count_fds() != baseline)
		__builtin_trap(); /* a connection or an fd outlived its session */
	return 0;
}
