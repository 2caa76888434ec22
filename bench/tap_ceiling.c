// SPDX-License-Identifier: MIT
/*
 * vt_tap_ceiling: the most a per-frame-syscall TAP datapath can do on one core, the yardstick
 * for virtap's TAP side (vt_loopback's rx and tx modes). No virtap code: a TAP opened with
 * IFF_VNET_HDR and a 12-byte header, as virtap opens it, in a private network namespace.
 *
 *   write: one thread on one CPU write()s header + frame in a loop; counted on the kernel side
 *          (the TAP's rx counters), like vt_loopback's tx mode.
 *   read:  frames go into the TAP by AF_PACKET sendmmsg (the generator of vt_loopback's rx
 *          mode) from a thread on the other CPU, a batch at a time (256 by default, the TAP
 *          queues 2048) while the reader waits; then the reader, alone, read()s the batch on
 *          its CPU, and so on. Only the reading is timed: the per-frame cost of read() with
 *          nothing else touching the queue. (A generator running alongside a spinning reader
 *          was seen here to fall behind it, 30-70 % of read()s finding the queue empty: a
 *          ceiling must not depend on the feed.)
 *
 * Must never send a frame outside its own namespace.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define TAP_NAME  "vtceil0"
#define TAP_MTU	  9000
#define TAP_QLEN  2048
#define MAX_BATCH 1536 /* below the TAP's queue: no frame of a batch is dropped */
#define GEN_BATCH 64
#define HDR_LEN	  12 /* struct virtio_net_hdr_mrg_rxbuf */
#define MIN_FRAME 60
#define MAX_FRAME 9014
#define MAX_SIZES 8
#define SKIP	  77

enum mode { MODE_WRITE, MODE_READ, NMODES };

static const char *const mode_name[NMODES] = {"write", "read"};

struct run {
	enum mode mode;
	unsigned size;
	int tap_fd, pkt_fd;
	int cpu_io, cpu_gen;
	atomic_bool stop;
	atomic_uint_fast64_t frames;  /* written or read by the io thread */
	atomic_uint_fast64_t bytes;   /* frame bytes, header excluded */
	atomic_uint_fast64_t read_ns; /* read: time spent reading */
	atomic_uint_fast64_t lost;    /* read: frames sent that were not there to read */
	atomic_uint go, done;	      /* read: batch handshake, generator <-> reader */
	unsigned batch;		      /* read: frames queued for the reader, written before go */
	unsigned read_batch;	      /* read: frames per batch (--batch) */
	uint8_t frame[HDR_LEN + MAX_FRAME];
};

static int write_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "we");
	int err = 0;

	if (!f)
		return -errno;
	if (fputs(s, f) < 0)
		err = -EIO;
	if (fclose(f))
		err = -errno;
	return err;
}

/* Frames the TAP handed to the kernel (its "rx", from the fd's point of view), in our netns. */
static int tap_rx_stats(uint64_t *pkts, uint64_t *bytes)
{
	FILE *f = fopen("/proc/self/net/dev", "re");
	size_t n = strlen(TAP_NAME);
	char line[512];
	int err = -ENODEV;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long b, p;
		char *s = line;

		while (*s == ' ')
			s++;
		if (strncmp(s, TAP_NAME, n) || s[n] != ':')
			continue;
		if (sscanf(s + n + 1, "%llu %llu", &b, &p) == 2) {
			*bytes = b;
			*pkts = p;
			err = 0;
		}
		break;
	}
	fclose(f);
	return err;
}

static int ifreq_ioctl(unsigned long req, struct ifreq *ifr)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), err = 0;

	if (fd < 0)
		return -errno;
	snprintf(ifr->ifr_name, sizeof(ifr->ifr_name), "%s", TAP_NAME);
	if (ioctl(fd, req, ifr) < 0)
		err = -errno;
	close(fd);
	return err;
}

/* A private network namespace with the TAP in it: vnet header of 12 bytes, MTU 9000, up. */
static int tap_setup(struct run *r)
{
	struct ifreq ifr;
	int hdr = HDR_LEN, fd, err;

	if (unshare(CLONE_NEWNET) < 0) {
		fprintf(stderr, "SKIP: unshare(CLONE_NEWNET): %s (needs root)\n", strerror(errno));
		return SKIP;
	}
	/* Keep IPv6 (router solicitations, DAD) off the TAP: only our frames go through. */
	write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1\n");
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "SKIP: /dev/net/tun: %s\n", strerror(errno));
		return SKIP;
	}
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", TAP_NAME);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		err = -errno;
		goto err_close;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_mtu = TAP_MTU;
	err = ifreq_ioctl(SIOCSIFMTU, &ifr);
	if (err)
		goto err_close;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_qlen = TAP_QLEN;
	err = ifreq_ioctl(SIOCSIFTXQLEN, &ifr);
	if (err)
		goto err_close;
	memset(&ifr, 0, sizeof(ifr));
	err = ifreq_ioctl(SIOCGIFFLAGS, &ifr);
	if (err)
		goto err_close;
	ifr.ifr_flags |= IFF_UP;
	err = ifreq_ioctl(SIOCSIFFLAGS, &ifr);
	if (err)
		goto err_close;
	r->tap_fd = fd;
	return 0;
err_close:
	fprintf(stderr, "vt_tap_ceiling: TAP setup: %s\n", strerror(-err));
	close(fd);
	return 1;
}

/* A frame to a locally administered unicast address nobody has, local experimental ethertype:
 * the stack drops it at once, as it drops vt_loopback's. */
static void build_frame(uint8_t *f, unsigned size)
{
	static const uint8_t dst[6] = {0x02, 0, 0, 0, 0, 0x02}, src[6] = {0x02, 0, 0, 0, 0, 0x01};

	memset(f, 0, HDR_LEN); /* virtio-net header: no offloads, num_buffers 0 */
	f += HDR_LEN;
	memcpy(f, dst, sizeof(dst));
	memcpy(f + 6, src, sizeof(src));
	f[12] = 0x88;
	f[13] = 0xb5;
	for (unsigned i = 14; i < size; i++)
		f[i] = (uint8_t)i;
}

/* write: header + frame in a loop until told to stop. */
static void *write_thread(void *arg)
{
	struct run *r = arg;
	size_t len = HDR_LEN + r->size;
	uint64_t frames = 0, bytes = 0;

	if (pin_thread(r->cpu_io))
		fprintf(stderr, "vt_tap_ceiling: cannot pin to CPU %d\n", r->cpu_io);
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		ssize_t n = write(r->tap_fd, r->frame, len);

		if (n > HDR_LEN) {
			frames++;
			bytes += (uint64_t)n - HDR_LEN;
			atomic_store_explicit(&r->frames, frames, memory_order_relaxed);
			atomic_store_explicit(&r->bytes, bytes, memory_order_relaxed);
		} else if (n < 0 && errno != EINTR && errno != EAGAIN) {
			fprintf(stderr, "vt_tap_ceiling: write: %s\n", strerror(errno));
			break;
		}
	}
	return NULL;
}

/* read: wait for a batch, read it all, timed; repeat until told to stop. */
static void *read_thread(void *arg)
{
	struct run *r = arg;
	uint8_t buf[HDR_LEN + MAX_FRAME];
	uint64_t frames = 0, bytes = 0, ns = 0, lost = 0;
	unsigned seen = 0;

	if (pin_thread(r->cpu_io))
		fprintf(stderr, "vt_tap_ceiling: cannot pin to CPU %d\n", r->cpu_io);
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		unsigned go = atomic_load_explicit(&r->go, memory_order_acquire);
		long long t0;
		unsigned i;

		if (go == seen)
			continue;
		seen = go;
		t0 = now_ns();
		for (i = 0; i < r->batch; i++) {
			ssize_t n = read(r->tap_fd, buf, sizeof(buf));

			if (n > HDR_LEN) {
				frames++;
				bytes += (uint64_t)n - HDR_LEN;
			} else if (n < 0 && errno == EAGAIN) {
				break; /* the TAP dropped some of the batch */
			} else if (n < 0 && errno != EINTR) {
				fprintf(stderr, "vt_tap_ceiling: read: %s\n", strerror(errno));
				break;
			}
		}
		ns += (uint64_t)(now_ns() - t0);
		lost += r->batch - i;
		atomic_store_explicit(&r->frames, frames, memory_order_relaxed);
		atomic_store_explicit(&r->bytes, bytes, memory_order_relaxed);
		atomic_store_explicit(&r->read_ns, ns, memory_order_relaxed);
		atomic_store_explicit(&r->lost, lost, memory_order_relaxed);
		atomic_store_explicit(&r->done, seen, memory_order_release);
	}
	return NULL;
}

static int gen_open(struct run *r)
{
	struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = 0};
	int one = 1, fd;

	sll.sll_ifindex = (int)if_nametoindex(TAP_NAME);
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (!sll.sll_ifindex ||
	    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	r->pkt_fd = fd;
	return 0;
}

/* The generator, on the calling thread, until t_end: queue a batch, hand it to the reader, wait
 * until it has read it. */
static void gen_loop(struct run *r, long long t_end)
{
	struct iovec iov = {.iov_base = r->frame + HDR_LEN, .iov_len = r->size};
	struct mmsghdr msgs[GEN_BATCH];
	unsigned go = atomic_load(&r->go);

	for (unsigned i = 0; i < GEN_BATCH; i++)
		msgs[i].msg_hdr = (struct msghdr){.msg_iov = &iov, .msg_iovlen = 1};
	while (now_ns() < t_end) {
		unsigned sent = 0;

		while (sent < r->read_batch) {
			unsigned left = r->read_batch - sent;
			unsigned want = left < GEN_BATCH ? left : GEN_BATCH;
			int n = sendmmsg(r->pkt_fd, msgs, want, MSG_DONTWAIT);

			if (n > 0)
				sent += (unsigned)n;
			else if (n < 0 && errno != EAGAIN && errno != ENOBUFS && errno != EINTR)
				return;
		}
		r->batch = sent;
		atomic_store_explicit(&r->go, ++go, memory_order_release);
		while (atomic_load_explicit(&r->done, memory_order_acquire) != go)
			;
	}
}

struct result {
	double mpps, gbps, read_pct;
	uint64_t frames, kernel_frames, lost;
};

static int measure(struct run *r, double warmup, double secs, struct result *res)
{
	long long t0 = now_ns(), t_meas = t0 + (long long)(warmup * 1e9);
	long long t_end = t_meas + (long long)(secs * 1e9), m0, m1;
	uint64_t f0, b0, n0, l0, k0 = 0, kb0 = 0, k1 = 0, kb1 = 0, f1, b1, n1, l1;
	pthread_t io;
	int err;

	build_frame(r->frame, r->size);
	atomic_store(&r->stop, false);
	atomic_store(&r->frames, 0);
	atomic_store(&r->bytes, 0);
	atomic_store(&r->read_ns, 0);
	atomic_store(&r->lost, 0);
	err = pthread_create(&io, NULL, r->mode == MODE_WRITE ? write_thread : read_thread, r);
	if (err)
		return -err;
	if (r->mode == MODE_READ) {
		/* The generator runs here, pinned to the other CPU, for the whole run. */
		pin_thread(r->cpu_gen);
		gen_loop(r, t_meas);
	} else {
		wait_until(t_meas);
	}
	m0 = now_ns();
	f0 = atomic_load(&r->frames);
	b0 = atomic_load(&r->bytes);
	n0 = atomic_load(&r->read_ns);
	l0 = atomic_load(&r->lost);
	tap_rx_stats(&k0, &kb0);
	if (r->mode == MODE_READ)
		gen_loop(r, t_end);
	else
		wait_until(t_end);
	m1 = now_ns();
	f1 = atomic_load(&r->frames);
	b1 = atomic_load(&r->bytes);
	n1 = atomic_load(&r->read_ns);
	l1 = atomic_load(&r->lost);
	tap_rx_stats(&k1, &kb1);
	atomic_store(&r->stop, true);
	pthread_join(io, NULL);
	if (r->mode == MODE_READ) {
		/* Drain what is still queued so the next run starts empty. */
		uint8_t buf[HDR_LEN + MAX_FRAME];

		while (read(r->tap_fd, buf, sizeof(buf)) > 0)
			;
	}
	res->frames = f1 - f0;
	res->kernel_frames = k1 - k0;
	res->lost = l1 - l0;
	if (r->mode == MODE_WRITE) {
		/* Counted where the frames arrive: the kernel's side of the TAP. */
		secs = (double)(m1 - m0) / 1e9;
		res->mpps = (double)(k1 - k0) / secs / 1e6;
		res->gbps = (double)(kb1 - kb0) * 8 / secs / 1e9;
		res->read_pct = 0;
	} else {
		/* Over the time spent reading only. */
		secs = (double)(n1 - n0) / 1e9;
		res->mpps = secs > 0 ? (double)(f1 - f0) / secs / 1e6 : 0;
		res->gbps = secs > 0 ? (double)(b1 - b0) * 8 / secs / 1e9 : 0;
		res->read_pct = 100.0 * (double)(n1 - n0) / (double)(m1 - m0);
	}
	return res->frames ? 0 : -EIO;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: vt_tap_ceiling [--seconds N] [--warmup N] [--sizes 64,1518]\n"
	    "                      [--modes write,read] [--cpus IO,GEN] [--batch N]\n"
	    "\n"
	    "The raw per-frame-syscall TAP ceiling on one core: write() or read() of frames\n"
	    "with a 12-byte virtio-net header on a TAP in a private network namespace; read()\n"
	    "is timed over batches queued beforehand while the reader waits.\n"
	    "Prints one line per figure: MODE SIZE B: X Mpps Y Gbit/s. Needs root.\n"
	    "\n"
	    "  --seconds N   measured seconds per figure (default 3)\n"
	    "  --warmup N    seconds before measuring (default 0.5)\n"
	    "  --sizes LIST  Ethernet frame sizes, %d..%d (default 64,1518)\n"
	    "  --modes LIST  write: frames into the TAP; read: frames out of it (default both)\n"
	    "  --cpus IO,GEN CPU of the write()/read() thread and of read's generator\n"
	    "                (default 1,0)\n"
	    "  --batch N     read: frames queued per batch, 1..%d (default 256)\n"
	    "\n"
	    "Exit status: 0 success, 77 cannot run here, 1 failure.\n",
	    MIN_FRAME, MAX_FRAME, MAX_BATCH);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"seconds", required_argument, NULL, 's'}, {"warmup", required_argument, NULL, 'w'},
	    {"sizes", required_argument, NULL, 'z'},   {"modes", required_argument, NULL, 'm'},
	    {"cpus", required_argument, NULL, 'c'},    {"batch", required_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},	       {NULL, 0, NULL, 0},
	};
	static struct run r;
	unsigned sizes[MAX_SIZES] = {64, 1518}, nsizes = 2;
	bool on[NMODES] = {true, true};
	double secs = 3, warmup = 0.5;
	int c, err, failed = 0;
	char *end;

	r.cpu_io = 1;
	r.cpu_gen = 0;
	r.read_batch = 256;
	r.pkt_fd = -1;
	while ((c = getopt_long(argc, argv, "s:w:z:m:c:b:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			secs = strtod(optarg, &end);
			if (end == optarg || *end || !(secs >= 0.1 && secs <= 3600))
				goto bad;
			break;
		case 'w':
			warmup = strtod(optarg, &end);
			if (end == optarg || *end || !(warmup >= 0 && warmup <= 60))
				goto bad;
			break;
		case 'z':
			if (parse_list(optarg, sizes, &nsizes, MAX_SIZES, MIN_FRAME, MAX_FRAME))
				goto bad;
			break;
		case 'm':
			if (parse_names(optarg, mode_name, NMODES, on))
				goto bad;
			break;
		case 'b':
			r.read_batch = (unsigned)strtoul(optarg, &end, 10);
			if (end == optarg || *end || !r.read_batch || r.read_batch > MAX_BATCH)
				goto bad;
			break;
		case 'c':
			if (sscanf(optarg, "%d,%d", &r.cpu_io, &r.cpu_gen) != 2 || r.cpu_io < 0 ||
			    r.cpu_gen < 0 || r.cpu_io >= CPU_SETSIZE || r.cpu_gen >= CPU_SETSIZE)
				goto bad;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (optind != argc)
		goto bad;
	err = tap_setup(&r);
	if (err)
		return err;
	if (on[MODE_READ]) {
		err = gen_open(&r);
		if (err) {
			fprintf(stderr, "vt_tap_ceiling: AF_PACKET socket: %s\n", strerror(-err));
			return 1;
		}
		/* Non-blocking: a frame missing from a batch ends it instead of blocking. */
		fcntl(r.tap_fd, F_SETFL, fcntl(r.tap_fd, F_GETFL) | O_NONBLOCK);
	}
	printf(
	    "vt_tap_ceiling: TAP %s, IFF_VNET_HDR 12 B, MTU %d; write()/read() thread on CPU %d, "
	    "read's generator on CPU %d; %.1f s after %.1f s warm-up\n",
	    TAP_NAME, TAP_MTU, r.cpu_io, r.cpu_gen, secs, warmup);
	for (unsigned m = 0; m < NMODES; m++) {
		if (!on[m])
			continue;
		for (unsigned i = 0; i < nsizes; i++) {
			struct result res;

			r.mode = (enum mode)m;
			r.size = sizes[i];
			err = measure(&r, warmup, secs, &res);
			if (err) {
				printf("%-5s %5u B: failed (%s)\n", mode_name[m], sizes[i],
				       strerror(-err));
				failed = 1;
				continue;
			}
			printf("%-5s %5u B: %.3f Mpps %.3f Gbit/s", mode_name[m], sizes[i],
			       res.mpps, res.gbps);
			if (m == MODE_WRITE)
				printf(" (write() returned %llu, the TAP passed on %llu)\n",
				       (unsigned long long)res.frames,
				       (unsigned long long)res.kernel_frames);
			else
				printf(" (reading %.1f %% of the time, %llu frames lost)\n",
				       res.read_pct, (unsigned long long)res.lost);
			fflush(stdout);
		}
	}
	close(r.tap_fd);
	if (r.pkt_fd >= 0)
		close(r.pkt_fd);
	return failed;
bad:
	usage(stderr);
	return 2;
}
