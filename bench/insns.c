// SPDX-License-Identifier: MIT
/*
 * vt_insns: a fixed amount of datapath work for instruction counting (valgrind --tool=callgrind),
 * the one measure of a datapath change that this noisy 2-vCPU host repeats exactly. One thread:
 * a fake guest puts 32 TX chains on the ring, the TX handler sends them to the in-memory echo
 * backend (its tx_burst: the burst path), the RX handler brings them back into the guest's RX
 * buffers, the guest takes the used entries and refills. No TAP, no worker thread, no timing.
 *
 *   vt_insns [FRAMES [POLL [SIZE]]]      defaults 100000, 0 (notify mode), 64 bytes
 *   valgrind --tool=callgrind --callgrind-out-file=cg.out build/vt_insns 200000 0 64
 *   grep -m1 '^summary:' cg.out          # instructions of the whole run
 *
 * Instructions per frame: the run's total over FRAMES. The guest's side is the same code before
 * and after a datapath change, so the difference is the datapath's (the handlers themselves
 * are inlined into main by the link-time optimizer, so their own counts are not separable).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakeguest.h"
#include "virtap/membe.h"
#include "virtap/vnet.h"

#define QSIZE 256
#define BATCH 32
#define BUF   2048

int main(int argc, char **argv)
{
	unsigned frames = argc > 1 ? (unsigned)atoi(argv[1]) : 100000, done = 0;
	bool poll = argc > 2 && atoi(argv[2]);
	unsigned size = argc > 3 ? (unsigned)atoi(argv[3]) : 64;
	uint64_t f = VNET_BIT(VQ_F_VERSION_1) | VNET_BIT(VIRTIO_NET_F_MRG_RXBUF);
	struct fg g;
	struct fg_vq rx, tx;
	struct vnet_qp qp;
	struct membe m;
	uint64_t pool;
	uint32_t id, len;
	bool ok;

	if (size < 14 || size + VNET_HDR_LEN_V1 > BUF) {
		fprintf(stderr, "vt_insns: SIZE must be 14..%d\n", BUF - VNET_HDR_LEN_V1);
		return 2;
	}
	if (fg_init(&g, 16u << 20) || fg_vq_init(&g, &rx, QSIZE) || fg_vq_init(&g, &tx, QSIZE) ||
	    membe_init(&m, MEMBE_ECHO, 0, 256) || vnet_qp_init(&qp, 0, NULL, &membe_ops, &m) ||
	    fg_vq_attach(&rx, &qp.rx, "rx", f) || fg_vq_attach(&tx, &qp.tx, "tx", f) ||
	    vnet_qp_set_features(&qp, f)) {
		fprintf(stderr, "vt_insns: setup failed\n");
		return 1;
	}
	qp.poll_mode = poll;
	/* buffers 0..QSIZE-1 for RX (buffer i for head i), QSIZE.. for TX */
	pool = fg_alloc(&g, 2ull * QSIZE * BUF, 64);
	for (unsigned i = 0; i < QSIZE; i++)
		fg_add(&rx, &(struct fg_buf){pool + (uint64_t)i * BUF, BUF, true}, 1, false);
	fg_publish(&rx, false);
	while (done < frames) {
		for (unsigned k = 0; k < BATCH; k++) {
			uint64_t gpa = pool + (uint64_t)(QSIZE + (done + k) % QSIZE) * BUF;
			uint8_t *p = fg_va(&g, gpa);

			memset(p, 0, VNET_HDR_LEN_V1 + 1);
			p[VNET_HDR_LEN_V1] = (uint8_t)k;
			if (fg_add(&tx, &(struct fg_buf){gpa, VNET_HDR_LEN_V1 + size, false}, 1,
				   false) < 0)
				return 1;
		}
		fg_publish(&tx, false);
		vnet_handle_tx(&qp);
		vnet_handle_rx(&qp);
		while (fg_used(&tx, &id, &len))
			;
		while (fg_used(&rx, &id, &len))
			fg_add(&rx,
			       &(struct fg_buf){pool + (uint64_t)(id % QSIZE) * BUF, BUF, true}, 1,
			       false);
		fg_publish(&rx, false);
		done += BATCH;
	}
	ok = qp.stats.tx_packets == done && qp.stats.rx_packets == done;
	printf("frames: tx %llu rx %llu of %u\n", (unsigned long long)qp.stats.tx_packets,
	       (unsigned long long)qp.stats.rx_packets, done);
	vnet_qp_destroy(&qp);
	membe_destroy(&m);
	fg_vq_destroy(&rx);
	fg_vq_destroy(&tx);
	fg_destroy(&g);
	return ok ? 0 : 1;
}
