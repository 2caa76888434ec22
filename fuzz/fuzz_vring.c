// SPDX-License-Identifier: MIT
/*
 * Fuzz the split ring and the virtio-net handlers: the input becomes the whole of a small guest
 * memory (descriptor table, avail ring, indirect tables, buffers), the negotiated features and the
 * frames a stub backend delivers; then TX and RX run over it as a worker would. ASan/UBSan catch
 * any access outside the map; the handlers must return, never hang.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "virtap/log.h"
#include "virtap/vnet.h"

#define MEM_GPA	 0x10000ull
#define MEM_SIZE (64u << 10)

static uint8_t mem[MEM_SIZE] __attribute__((aligned(4096)));

struct stub_be {
	const uint8_t *data;
	size_t len;
	unsigned frames;
};

/* Frames come from the tail of the input: 2-byte length, then bytes. */
static ssize_t stub_rx(void *be, const struct iovec *iov, int n)
{
	struct stub_be *s = be;
	size_t len, done = 0;

	if (s->len < 2 || s->frames >= 8)
		return -EAGAIN;
	len = (size_t)(s->data[0] | s->data[1] << 8);
	s->data += 2;
	s->len -= 2;
	if (len > s->len)
		len = s->len;
	for (int i = 0; i < n && done < len; i++) {
		size_t c = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;

		memcpy(iov[i].iov_base, s->data + done, c);
		done += c;
	}
	s->data += len;
	s->len -= len;
	s->frames++;
	return (ssize_t)len;
}

static ssize_t stub_tx(void *be, const struct iovec *iov, int n)
{
	size_t total = 0;
	volatile uint8_t sink = 0;

	(void)be;
	for (int i = 0; i < n; i++) {
		/* Touch every byte, as the kernel's copy would. */
		for (size_t k = 0; k < iov[i].iov_len; k++)
			sink ^= ((const uint8_t *)iov[i].iov_base)[k];
		total += iov[i].iov_len;
	}
	(void)sink;
	return (ssize_t)total;
}

static int stub_fd(void *be)
{
	(void)be;
	return -1;
}

static int stub_hdr(void *be, int len)
{
	(void)be;
	(void)len;
	return 0;
}

static int stub_off(void *be, uint64_t f)
{
	(void)be;
	(void)f;
	return 0;
}

static uint64_t stub_features(void *be)
{
	(void)be;
	return ~0ull;
}

static const struct be_ops stub_ops = {"stub",	 stub_rx,  stub_tx,	 stub_fd,
				       stub_hdr, stub_off, stub_features};

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	static struct gmem gm;
	static struct vnet_qp qp;
	static bool init;
	struct stub_be be;
	uint64_t features;
	uint16_t num;
	size_t body;

	if (n < 16)
		return 0;
	if (!init) {
		vt_log_set_level(-1);
		gmem_init(&gm);
		gmem_add_host(&gm, MEM_GPA, MEM_SIZE, MEM_GPA, mem, GMEM_READ | GMEM_WRITE);
		init = true;
	}
	/* Header: queue size exponent, feature bits, rx_cover, pad flag. */
	num = (uint16_t)(1u << (d[0] % 9)); /* 1..256: rings fit in the map */
	features = 0;
	memcpy(&features, d + 1, 8);
	features &= (1ull << VQ_F_INDIRECT_DESC) | (1ull << VQ_F_EVENT_IDX) |
		    (1ull << VQ_F_VERSION_1) | (1ull << VIRTIO_NET_F_MRG_RXBUF) |
		    (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_HOST_TSO4) |
		    (1ull << VIRTIO_NET_F_HOST_ECN) | (1ull << VIRTIO_NET_F_HOST_UFO);
	struct vnet_config cfg;
	vnet_config_default(&cfg);
	cfg.rx_cover = 1 + (unsigned)(d[9] | d[10] << 8) % 4096;
	cfg.pad_short = d[11] & 1;
	cfg.rx_budget_pkts = cfg.tx_budget_pkts = 64;
	d += 16;
	n -= 16;
	/* Guest memory from the input (the rest stays from earlier runs: also fine, also hostile).
	 */
	body = n < MEM_SIZE ? n : MEM_SIZE;
	memcpy(mem, d, body);
	be = (struct stub_be){.data = d + body, .len = n - body};
	if (!qp.rx_iov && vnet_qp_init(&qp, 0, &cfg, &stub_ops, &be))
		return 0;
	qp.cfg = cfg;
	qp.be = &be;
	vnet_qp_set_features(&qp, features);
	/* RX rings at the start, TX rings after: descriptor tables are 16-aligned. */
	if (vq_setup(&qp.rx, &gm, "rx", num, MEM_GPA, MEM_GPA + 0x1000, MEM_GPA + 0x2000,
		     features) ||
	    vq_setup(&qp.tx, &gm, "tx", num, MEM_GPA + 0x4000, MEM_GPA + 0x5000, MEM_GPA + 0x6000,
		     features))
		return 0;
	for (int round = 0; round < 3; round++) {
		vnet_handle_tx(&qp);
		vnet_handle_rx(&qp);
	}
	netq_purge(&qp.hold);
	return 0;
}
