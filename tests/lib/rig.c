// SPDX-License-Identifier: MIT
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netns.h"
#include "rig.h"

int rig_init(struct rig *r, const char *ifname, uint64_t features, const struct vnet_config *cfg,
	     uint16_t num)
{
	int err;

	memset(r, 0, sizeof(*r));
	r->num = num;
	r->features = features;
	/* No IPv6 autoconf/MLD frames on the test TAP: only our frames cross it. */
	th_sh("sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1");
	err = tap_open(&r->tap, ifname, 0);
	if (err)
		return err;
	if (th_sh("ip addr add 10.77.0.1/24 dev %s && ip link set %s up", ifname, ifname))
		return -EIO;
	err = fg_init(&r->g, 256u << 20);
	if (err)
		return err;
	fg_vq_init(&r->g, &r->frx, num);
	fg_vq_init(&r->g, &r->ftx, num);
	r->rx_gpa = calloc(num, sizeof(*r->rx_gpa));
	r->rx_len = calloc(num, sizeof(*r->rx_len));
	err = vnet_qp_init(&r->qp, 0, cfg, &tap_be_ops, &r->tap);
	if (err)
		return err;
	err = fg_vq_attach(&r->frx, &r->qp.rx, "rx0", features);
	if (!err)
		err = fg_vq_attach(&r->ftx, &r->qp.tx, "tx0", features);
	if (!err)
		err = vnet_qp_set_features(&r->qp, features);
	return err;
}

void rig_destroy(struct rig *r)
{
	vnet_qp_destroy(&r->qp);
	fg_vq_destroy(&r->frx);
	fg_vq_destroy(&r->ftx);
	fg_destroy(&r->g);
	tap_close(&r->tap);
	free(r->rx_gpa);
	free(r->rx_len);
}

void rig_post_rx(struct rig *r, unsigned n, uint32_t size, bool indirect)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t gpa = fg_alloc(&r->g, size, 64);
		struct fg_buf b[2] = {{gpa, 12, true}, {gpa + 12, size - 12, true}};
		int head = indirect ? fg_add(&r->frx, b, 2, true)
				    : fg_add(&r->frx, &(struct fg_buf){gpa, size, true}, 1, false);

		if (head < 0)
			abort();
		r->rx_gpa[head] = gpa;
		r->rx_len[head] = size;
	}
	fg_publish(&r->frx, true);
}

long rig_take_rx(struct rig *r, uint8_t *out, size_t cap)
{
	bool mrg = r->qp.mergeable;
	uint32_t id, len;
	uint16_t nb = 1;
	size_t at = 0;

	if (!fg_used(&r->frx, &id, &len))
		return 0;
	if (id >= r->num || len > r->rx_len[id] || len > cap)
		return -1;
	memcpy(out, fg_va(&r->g, r->rx_gpa[id]), len);
	at = len;
	if (mrg) {
		memcpy(&nb, out + 10, 2);
		nb = le16toh(nb);
	}
	for (unsigned k = 1; k < nb; k++) {
		if (!fg_used(&r->frx, &id, &len))
			return -2;
		if (id >= r->num || len > r->rx_len[id] || at + len > cap)
			return -3;
		memcpy(out + at, fg_va(&r->g, r->rx_gpa[id]), len);
		at += len;
	}
	return (long)at;
}

int rig_post_tx(struct rig *r, const void *data, size_t len, size_t piece, bool indirect)
{
	uint64_t gpa = fg_alloc(&r->g, len, 64);
	struct fg_buf b[128];
	unsigned n = 0;
	int head;

	memcpy(fg_va(&r->g, gpa), data, len);
	/* Small pieces over the first 64 bytes (the header and Ethernet header split across
	 * descriptors), page-sized pieces after that. */
	for (size_t off = 0, step; off < len; off += step, n++) {
		step = off < 64 ? piece : 4096;
		if (step > len - off)
			step = len - off;
		if (n == 128)
			return -E2BIG;
		b[n] = (struct fg_buf){gpa + off, (uint32_t)step, false};
	}
	head = fg_add(&r->ftx, b, n, indirect);
	if (head >= 0)
		fg_publish(&r->ftx, true);
	return head;
}

int pkt_socket(const char *ifname, bool vnet_hdr)
{
	struct sockaddr_ll sll = {0};
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
	int one = 1, big = 4 << 20;

	if (fd < 0)
		return -errno;
	if (vnet_hdr && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = (int)if_nametoindex(ifname);
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		return -errno;
	return fd;
}

long pkt_recv_marked(int fd, uint8_t *buf, size_t cap, int ms, size_t skip_hdr)
{
	long long end = th_now_ms() + ms;

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		long left = (long)(end - th_now_ms());
		ssize_t n;

		if (left < 0 || poll(&p, 1, (int)left) <= 0)
			return 0;
		n = recvfrom(fd, buf, cap, 0, (struct sockaddr *)&from, &fl);
		if (n <= 0)
			continue;
		/* Only frames arriving from the TAP's user side (the guest), ours by marker. */
		if (from.sll_pkttype == PACKET_OUTGOING)
			continue;
		if ((size_t)n >= skip_hdr + 14) {
			uint16_t et = (uint16_t)(buf[skip_hdr + 12] << 8 | buf[skip_hdr + 13]);

			if (et == TEST_ETHERTYPE || et == 0x0800)
				return n;
		}
	}
}

void make_frame(uint8_t *f, size_t len, uint32_t seq)
{
	static const uint8_t dst[6] = {0x02, 0, 0, 0, 0, 0x02}, src[6] = {0x02, 0, 0, 0, 0, 0x01};

	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = TEST_ETHERTYPE >> 8;
	f[13] = TEST_ETHERTYPE & 0xff;
	memcpy(f + 14, &seq, 4);
	for (size_t i = 18; i < len; i++)
		f[i] = (uint8_t)(i * 7 + seq);
}

void make_tcp_frame(uint8_t *f, size_t len, uint32_t seq)
{
	size_t ip_len = len - 14;

	make_frame(f, len, seq);
	f[12] = 0x08;
	f[13] = 0x00;
	memset(f + 14, 0, 40);
	f[14] = 0x45;
	f[16] = (uint8_t)(ip_len >> 8);
	f[17] = (uint8_t)ip_len;
	f[22] = 64;
	f[23] = 6; /* TCP */
	memcpy(f + 26, (uint8_t[]){10, 77, 0, 1}, 4);
	memcpy(f + 30, (uint8_t[]){10, 77, 0, 2}, 4);
	f[34] = 0x30; /* ports 12345 -> 5201 */
	f[35] = 0x39;
	f[36] = 0x14;
	f[37] = 0x51;
	memcpy(f + 38, &seq, 4);
	f[46] = 0x50; /* data offset 5 words */
	f[47] = 0x18; /* PSH ACK */
	f[48] = 0xff;
	f[49] = 0xff;
}

long long if_stat(const char *ifname, const char *stat)
{
	char path[256];
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/%s", ifname, stat);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}
