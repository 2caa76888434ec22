// SPDX-License-Identifier: MIT
/*
 * vt_udp_rr: UDP request/response round-trip time, one request outstanding at a time.
 *
 *   vt_udp_rr server [--port P]
 *       echo every datagram back to its sender, until killed
 *   vt_udp_rr client ADDR [--port P] [--count N] [--warmup N] [--size B] [--timeout-ms T]
 *                         [--raw FILE]
 *       send N requests of B bytes to ADDR (numeric IPv4), each after the previous reply came
 *       back (or timed out), time each round trip with CLOCK_MONOTONIC and print one line:
 *       count=... timeouts=... stale=... min_us=... median_us=... p90_us=... p99_us=... max_us=...
 *
 * Each request carries its sequence number (in its first min(B, 8) bytes); a reply with another
 * number (the late answer to a request that timed out) is counted as stale and ignored. The first
 * --warmup round trips (default 100) are not counted. --raw writes every sample, in microseconds,
 * one per line. Exit status 0 if at least one round trip completed. Built for the host by CMake
 * and statically, for the test guest, by scripts/guest.sh.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

#define MAX_SIZE 65507

struct opts {
	const char *addr, *raw;
	unsigned port, size, timeout_ms;
	unsigned long count, warmup;
};

static void usage(FILE *f)
{
	fputs(
	    "usage: vt_udp_rr server [--port P]\n"
	    "       vt_udp_rr client ADDR [--port P] [--count N] [--warmup N] [--size B]\n"
	    "                 [--timeout-ms T] [--raw FILE]\n"
	    "  --port P        UDP port (default 7777)\n"
	    "  --count N       round trips measured (default 10000)\n"
	    "  --warmup N      round trips before those, not counted (default 100)\n"
	    "  --size B        request payload bytes, 1-65507 (default 64); the reply is the same\n"
	    "  --timeout-ms T  give up on a reply after T ms and send the next request (default "
	    "500)\n"
	    "  --raw FILE      also write every sample (microseconds) to FILE\n",
	    f);
}

static int udp_socket(unsigned port, int do_bind)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		perror("vt_udp_rr: socket");
		return -1;
	}
	if (do_bind && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		perror("vt_udp_rr: bind");
		close(fd);
		return -1;
	}
	return fd;
}

static int server(const struct opts *o)
{
	static uint8_t buf[MAX_SIZE];
	int fd = udp_socket(o->port, 1);

	if (fd < 0)
		return 1;
	for (;;) {
		struct sockaddr_storage from;
		socklen_t flen = sizeof(from);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("vt_udp_rr: recvfrom");
			return 1;
		}
		if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen) < 0 &&
		    errno != ENOBUFS && errno != EAGAIN)
			perror("vt_udp_rr: sendto");
	}
}

static void put_seq(uint8_t *p, unsigned size, uint64_t seq)
{
	for (unsigned i = 0; i < size && i < 8; i++)
		p[i] = (uint8_t)(seq >> (8 * i));
}

static int same_seq(const uint8_t *a, const uint8_t *b, unsigned size)
{
	return memcmp(a, b, size < 8 ? size : 8) == 0;
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of n sorted samples, in microseconds. */
static double pct_us(const long long *v, unsigned long n, double p)
{
	unsigned long k = (unsigned long)(p * (double)n + 0.999999);

	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return (double)v[k - 1] / 1000.0;
}

/* Wait for the reply to the request in req; its round-trip time in ns, 0 on timeout, -1 on error.
 */
static long long await_reply(int fd, const struct opts *o, const uint8_t *req, uint8_t *rsp,
			     long long t0, unsigned long *stale)
{
	long long deadline = t0 + (long long)o->timeout_ms * 1000000ll;

	for (;;) {
		long long now = now_ns(), left = deadline - now;
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t n;
		int r;

		if (left <= 0)
			return 0;
		r = poll(&pfd, 1, (int)((left + 999999) / 1000000));
		if (r < 0 && errno != EINTR) {
			perror("vt_udp_rr: poll");
			return -1;
		}
		if (r <= 0)
			continue;
		n = recv(fd, rsp, MAX_SIZE, MSG_DONTWAIT);
		now = now_ns();
		if (n < 0) {
			/* ECONNREFUSED: an ICMP port unreachable, nobody listens (yet) */
			if (errno == EAGAIN || errno == EINTR || errno == ECONNREFUSED)
				continue;
			perror("vt_udp_rr: recv");
			return -1;
		}
		if ((unsigned)n == o->size && same_seq(req, rsp, o->size))
			return now - t0 > 0 ? now - t0 : 1;
		(*stale)++;
	}
}

static int client(const struct opts *o)
{
	static uint8_t req[MAX_SIZE], rsp[MAX_SIZE];
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
	unsigned long total = o->warmup + o->count, done = 0, timeouts = 0, stale = 0;
	long long *ns = calloc(o->count ? o->count : 1, sizeof(*ns));
	int fd, rc = 1;

	if (!ns) {
		fputs("vt_udp_rr: out of memory\n", stderr);
		return 1;
	}
	if (inet_pton(AF_INET, o->addr, &sin.sin_addr) != 1) {
		fprintf(stderr, "vt_udp_rr: not a numeric IPv4 address: %s\n", o->addr);
		goto out_free;
	}
	fd = udp_socket(0, 0);
	if (fd < 0)
		goto out_free;
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		perror("vt_udp_rr: connect");
		goto out;
	}
	for (unsigned i = 8; i < o->size; i++)
		req[i] = (uint8_t)i;
	for (unsigned long seq = 0; seq < total; seq++) {
		long long t0, rtt;

		put_seq(req, o->size, seq);
		t0 = now_ns();
		if (send(fd, req, o->size, 0) < 0 && errno != ECONNREFUSED && errno != ENOBUFS) {
			perror("vt_udp_rr: send");
			goto out;
		}
		rtt = await_reply(fd, o, req, rsp, t0, &stale);
		if (rtt < 0)
			goto out;
		if (seq < o->warmup)
			continue;
		if (rtt == 0)
			timeouts++;
		else
			ns[done++] = rtt;
	}
	if (o->raw) {
		FILE *f = fopen(o->raw, "w");

		if (!f) {
			perror("vt_udp_rr: --raw");
			goto out;
		}
		for (unsigned long i = 0; i < done; i++)
			fprintf(f, "%.3f\n", (double)ns[i] / 1000.0);
		fclose(f);
	}
	if (!done) {
		printf("count=0 timeouts=%lu stale=%lu\n", timeouts, stale);
		goto out;
	}
	qsort(ns, done, sizeof(*ns), cmp_ll);
	printf("count=%lu timeouts=%lu stale=%lu size=%u min_us=%.1f median_us=%.1f p90_us=%.1f "
	       "p99_us=%.1f max_us=%.1f\n",
	       done, timeouts, stale, o->size, pct_us(ns, done, 0.0), pct_us(ns, done, 0.5),
	       pct_us(ns, done, 0.9), pct_us(ns, done, 0.99), pct_us(ns, done, 1.0));
	rc = 0;
out:
	close(fd);
out_free:
	free(ns);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"port", required_argument, NULL, 'p'},
	    {"count", required_argument, NULL, 'n'},
	    {"warmup", required_argument, NULL, 'w'},
	    {"size", required_argument, NULL, 's'},
	    {"timeout-ms", required_argument, NULL, 't'},
	    {"raw", required_argument, NULL, 'r'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct opts o = {
	    .port = 7777, .size = 64, .timeout_ms = 500, .count = 10000, .warmup = 100};
	const char *mode;
	unsigned long v;
	int c;

	while ((c = getopt_long(argc, argv, "p:n:w:s:t:r:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (parse_ulong(optarg, 1, 65535, &v))
				goto bad;
			o.port = (unsigned)v;
			break;
		case 'n':
			if (parse_ulong(optarg, 1, 100000000, &o.count))
				goto bad;
			break;
		case 'w':
			if (parse_ulong(optarg, 0, 100000000, &o.warmup))
				goto bad;
			break;
		case 's':
			if (parse_ulong(optarg, 1, MAX_SIZE, &v))
				goto bad;
			o.size = (unsigned)v;
			break;
		case 't':
			if (parse_ulong(optarg, 1, 3600000, &v))
				goto bad;
			o.timeout_ms = (unsigned)v;
			break;
		case 'r':
			o.raw = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (optind >= argc)
		goto bad;
	mode = argv[optind++];
	if (!strcmp(mode, "server") && optind == argc)
		return server(&o);
	if (!strcmp(mode, "client") && optind == argc - 1) {
		o.addr = argv[optind];
		return client(&o);
	}
bad:
	usage(stderr);
	return 2;
}
