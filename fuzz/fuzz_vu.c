// SPDX-License-Identifier: MIT
/*
 * Fuzz the vhost-user server through its real parser and handlers: the input is a series of
 * records (fd count and kind, length, bytes) written to a connected socket, each with that many
 * fds attached, of the record's kind: a 1 MiB memfd then eventfds (memory tables), eventfds as a
 * frontend makes them, eventfds left blocking, blocking ones preloaded to the most they hold, or
 * epoll fds, which are no eventfds; as a hostile frontend would. The port serves a sink backend, so
 * rings that get started are real and run on worker threads, and a blocking call fd really blocks a
 * worker until the watchdog cuts it short (pfd.h). After each input the connection is dropped
 * and every fd must be back to the count before it: a leak traps.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "virtap/evl.h"
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

static void setup(void)
{
	struct vu_port_config cfg;

	vt_log_set_level(-1);
	if (evl_create(&loop))
		__builtin_trap();
	vu_port_config_default(&cfg);
	snprintf(cfg.socket, sizeof(cfg.socket), "/tmp/vt-fuzz-vu-%d.sock", (int)getpid());
	snprintf(cfg.backend, sizeof(cfg.backend), "sink");
	snprintf(cfg.name, sizeof(cfg.name), "fz");
	cfg.queues = 2;
	if (vu_port_create(&port, &cfg, loop))
		__builtin_trap();
}

enum fd_kind { FD_MEM, FD_EVENT, FD_EVENT_BLOCKING, FD_EVENT_FULL, FD_EPOLL, FD_KINDS };

static int make_fd(unsigned i, enum fd_kind kind)
{
	uint64_t full = 0xfffffffffffffffeull;
	int fd;

	if (i || kind != FD_MEM) {
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
	fd = memfd_create("fz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd >= 0 && ftruncate(fd, 1 << 20) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void send_record(int sock, const uint8_t *data, size_t len, unsigned nfds, enum fd_kind kind)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 12)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {(void *)data, len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	int fds[12];

	for (unsigned i = 0; i < nfds; i++)
		fds[i] = make_fd(i, kind);
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
	for (unsigned i = 0; i < nfds; i++)
		if (fds[i] >= 0)
			close(fds[i]);
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

		d += 3;
		n -= 3;
		if (len > n)
			len = n;
		send_record(sv[0], d, len, nfds, kind);
		d += len;
		n -= len;
		evl_poll(loop, 0);
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
