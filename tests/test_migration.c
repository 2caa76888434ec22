// SPDX-License-Identifier: MIT
/*
 * virtap's side of a live migration, exact and independent of QEMU: the real daemon, real TAP
 * devices in the test's network namespace, and the test frontend (tests/lib/vufe.c) sending what
 * QEMU sends.
 *
 *   a. The dirty-log audit. The frontend snapshots guest memory, turns logging on the way QEMU
 *      does (SET_LOG_BASE, SET_FEATURES with LOG_ALL, SET_VRING_ADDR with the log flag), and
 *      moves traffic both ways: frames from the namespace into the TAP (sizes 60..1514, many
 *      flows, RX buffers of assorted sizes, the ring left dry now and then so frames are held),
 *      frames from the guest out through the TAP. Then it stops the rings with GET_VRING_BASE
 *      and checks, page by page, that every page the device changed is marked in the log, and
 *      that no mark and no change fell on a page the device has no business writing. Then, for
 *      a second, frames keep arriving on the TAP, the frontend keeps adding chains and kicking,
 *      and no page the device could write changes, nor does the log: once GET_VRING_BASE has
 *      answered, the source device must leave the guest alone (vhost-user: "stop ring").
 *      Every combination of mergeable RX buffers on/off, EVENT_IDX on/off, a worker of the
 *      port's own or a shared busy-polling one, one or two queue pairs.
 *   b. The handoff. What GET_VRING_BASE reports resumes on another port (SET_VRING_BASE, as the
 *      destination QEMU sends it) with no buffer used twice and none lost: RX buffers popped
 *      ahead and frames held when the source stopped (TAP ports), TX chains published but not
 *      yet taken, and a TX burst the backend took only half of (echo ports, whose queue fills).
 *      The test reads both TAPs and the guest's rings and compares them with what it sent.
 *
 * The audit tells device pages from driver pages by layout: vufe puts each ring's buffers on
 * pages of their own, so a page holds driver-written data (descriptors, avail ring, TX buffers)
 * or device-written data (used ring, RX buffers), never both; the audit checks that first.
 */
#include <endian.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/vhost/vu_proto.h"
#include "netns.h"
#include "rig.h"
#include "vtproc.h"
#include "vufe.h"

#define QSIZE 256
#define MEM   (4u << 20)
/* The audit's rings: a used ring of 1024 entries spans three pages, so a used entry left out
 * of the log shows even when the used index's own mark covers the first page. */
#define AQSIZE	 1024
#define AMEM	 (16u << 20)
#define PAGE	 4096u
#define UDP_PORT 4789 /* the destination port marks the test's own RX frames */

enum port_id { OWN, SHARED, ECHO_OWN, ECHO_SHARED, NPORTS };

static const char *const port_name[NPORTS] = {"own", "sh", "eown", "esh"};
static const char *const tap_name[2] = {"vtmig0", "vtmig1"};
static char dir[64], log_path[128], sock[NPORTS][108];
static pid_t vt = -1;
static int inj[2] = {-1, -1}; /* AF_PACKET on each TAP: frames into it, the guest's out of it */
/* RX frame numbers run on across runs: a frame still in a TAP from an earlier run is told apart. */
static uint32_t rx_seq_next;

/* ---- the daemon and the namespace side -------------------------------------------------- */

static void daemon_start(void)
{
	static char spec[NPORTS][256];
	const char *args[2 * NPORTS + 1];

	/* Both TAP ports offer two queue pairs; "sh" and "esh" share the busy-polling pmd0. */
	snprintf(spec[OWN], sizeof(spec[OWN]), "name=own,socket=%s,tap=%s,queues=2", sock[OWN],
		 tap_name[0]);
	snprintf(spec[SHARED], sizeof(spec[SHARED]),
		 "name=sh,socket=%s,tap=%s,queues=2,worker=pmd0,busy-poll=200", sock[SHARED],
		 tap_name[1]);
	snprintf(spec[ECHO_OWN], sizeof(spec[ECHO_OWN]), "name=eown,socket=%s,backend=echo",
		 sock[ECHO_OWN]);
	snprintf(spec[ECHO_SHARED], sizeof(spec[ECHO_SHARED]),
		 "name=esh,socket=%s,backend=echo,worker=pmd0,busy-poll=200", sock[ECHO_SHARED]);
	for (unsigned i = 0; i < NPORTS; i++) {
		args[2 * i] = "--port";
		args[2 * i + 1] = spec[i];
	}
	args[2 * NPORTS] = NULL;
	vt = vtproc_start(log_path, args);
	REQUIRE(vt > 0);
	for (unsigned i = 0; i < NPORTS; i++)
		REQUIRE(vtproc_wait_path(sock[i], true, 5000));
	for (unsigned t = 0; t < 2; t++) {
		for (int k = 0; k < 100 && !if_nametoindex(tap_name[t]); k++)
			usleep(20000);
		REQUIRE(if_nametoindex(tap_name[t]) != 0);
		inj[t] = pkt_socket(tap_name[t], false);
		REQUIRE(inj[t] >= 0);
	}
}

/*
 * A frame for the guest: IPv4/UDP from one of 64 flows (the TAP spreads flows over its queues),
 * len bytes, every byte after the headers derived from seq, which it carries.
 */
static size_t rx_len(uint32_t seq)
{
	return 60 + (seq * 2246822519u >> 9) % 1455u;
}

static void rx_frame(uint8_t *f, uint32_t seq)
{
	static const uint8_t hdr[34] = {
	    0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x02, 0, 0, 0,  0,	 0x01, 0x08, 0,	 0x45, 0, 0,
	    0,	  0,	0, 0x40, 0,    64,   17,   0, 0, 10, 77, 0,    1,    10, 77,   0, 2};
	size_t len = rx_len(seq), ip = len - 14, udp = len - 34;

	memcpy(f, hdr, sizeof(hdr));
	f[16] = (uint8_t)(ip >> 8);
	f[17] = (uint8_t)ip;
	f[34] = (uint8_t)(0x80 | (seq % 64) >> 8); /* source port: the flow */
	f[35] = (uint8_t)(seq % 64);
	f[36] = UDP_PORT >> 8;
	f[37] = UDP_PORT & 0xff;
	f[38] = (uint8_t)(udp >> 8);
	f[39] = (uint8_t)udp;
	f[40] = f[41] = 0;
	memcpy(f + 42, &seq, 4);
	for (size_t i = 46; i < len; i++)
		f[i] = (uint8_t)(i * 13 + seq * 7);
}

static void inject(unsigned tap, uint32_t seq)
{
	uint8_t f[1514];

	rx_frame(f, seq);
	/* The socket's buffer is 4 MiB: a send that finds it full drops the frame, like a link. */
	(void)send(inj[tap], f, rx_len(seq), MSG_DONTWAIT);
}

/* A frame the guest received: one of ours, byte-exact? Its seq, or -1 (noise: -2). */
static long rx_check(const uint8_t *got, long n)
{
	uint8_t want[1514];
	uint32_t seq;

	if (n < 46 || got[12] != 0x08 || got[13] != 0 || got[23] != 17 ||
	    (got[36] << 8 | got[37]) != UDP_PORT)
		return -2;
	memcpy(&seq, got + 42, 4);
	if ((size_t)n != rx_len(seq))
		return -1;
	rx_frame(want, seq);
	return memcmp(got, want, (size_t)n) ? -1 : (long)seq;
}

/* The guest's TX frames: make_frame's, seq = pair << 16 | n. */
static size_t tx_len(uint32_t seq)
{
	return 60 + (seq * 2654435761u >> 7) % 1455u;
}

static int tx_send(struct vufe *fe, unsigned qp, uint32_t seq)
{
	uint8_t f[1514];

	make_frame(f, tx_len(seq), seq);
	return vufe_send_q(fe, qp, f, tx_len(seq));
}

/* Take every guest frame waiting on a TAP, counting each seq in seen[] (pair << 16 | n,
 * n < 1024); frames not ours are skipped. False if one was not byte-exact. */
static bool tap_collect(unsigned tap, uint8_t seen[2][1024], int ms)
{
	uint8_t f[2048], want[2048];
	bool ok = true;
	long n;

	while ((n = pkt_recv_marked(inj[tap], f, sizeof(f), ms, 0)) > 0) {
		uint32_t seq;

		if (f[12] != TEST_ETHERTYPE >> 8 || f[13] != (TEST_ETHERTYPE & 0xff))
			continue;
		memcpy(&seq, f + 14, 4);
		make_frame(want, tx_len(seq), seq);
		if ((seq >> 16) > 1 || (seq & 0xffff) >= 1024 || (size_t)n != tx_len(seq) ||
		    memcmp(f, want, (size_t)n)) {
			fprintf(stderr, "  TAP %s: a guest frame came out wrong (%ld bytes)\n",
				tap_name[tap], n);
			ok = false;
			continue;
		}
		if (seen[seq >> 16][seq & 0xffff] < 255)
			seen[seq >> 16][seq & 0xffff]++;
		ms = 50;
	}
	return ok;
}

/* Forget what the TAPs carried before (earlier runs' guest frames). */
static void tap_flush(unsigned tap)
{
	uint8_t f[2048];

	while (recv(inj[tap], f, sizeof(f), MSG_DONTWAIT) > 0)
		;
}

/* ---- the audit -------------------------------------------------------------------------- */

enum { PG_NONE, PG_DRIVER, PG_DEVICE };

struct audit {
	unsigned npages;
	uint8_t *cls;  /* page -> who may write it */
	uint8_t *snap; /* guest memory as it was */
	uint8_t *log;  /* the log as it was */
};

static bool classify(struct audit *a, uint64_t gpa, uint64_t len, int who)
{
	for (uint64_t pg = (gpa - FG_GPA_BASE) / PAGE; pg <= (gpa + len - 1 - FG_GPA_BASE) / PAGE;
	     pg++) {
		if (pg >= a->npages || (a->cls[pg] && a->cls[pg] != who))
			return false;
		a->cls[pg] = (uint8_t)who;
	}
	return true;
}

static void audit_init(struct audit *a, const struct vufe *fe)
{
	bool ok = true;

	a->npages = (unsigned)(fe->g.size / PAGE);
	a->cls = calloc(a->npages, 1);
	a->snap = malloc(fe->g.size);
	a->log = malloc(fe->log_size ? fe->log_size : 1);
	REQUIRE(a->cls && a->snap && a->log);
	for (unsigned r = 0; r < fe->nrings; r++) {
		const struct fg_vq *q = &fe->q[r];

		ok &= classify(a, q->desc, 16ull * q->num, PG_DRIVER);
		ok &= classify(a, q->avail, 6 + 2ull * q->num, PG_DRIVER);
		ok &= classify(a, q->used, 6 + 8ull * q->num, PG_DEVICE);
		for (unsigned d = 0; d < q->num; d++)
			ok &= classify(a, fe->buf[r][d], VUFE_BUF, r % 2 ? PG_DRIVER : PG_DEVICE);
	}
	/* The audit means nothing if a page could be written by both sides. */
	REQUIRE(ok);
}

static void audit_snap(struct audit *a, const struct vufe *fe)
{
	memcpy(a->snap, fe->g.mem, fe->g.size);
	if (fe->log)
		memcpy(a->log, fe->log, fe->log_size);
}

static void audit_fini(struct audit *a)
{
	free(a->cls);
	free(a->snap);
	free(a->log);
}

/*
 * Every device page that changed since the snapshot is marked; nothing changed on pages nobody
 * writes; marks fall only on device pages. Returns how many device pages changed.
 */
static unsigned audit_log(const struct audit *a, const struct vufe *fe, const char *what)
{
	unsigned changed = 0, missed = 0, stray = 0, wrong = 0;

	for (unsigned pg = 0; pg < a->npages; pg++) {
		uint64_t gpa = FG_GPA_BASE + (uint64_t)pg * PAGE;
		bool ch = memcmp(fe->g.mem + (size_t)pg * PAGE, a->snap + (size_t)pg * PAGE, PAGE);
		bool mk = vufe_log_marked(fe, gpa);

		if (a->cls[pg] == PG_DEVICE && ch) {
			changed++;
			if (!mk && missed++ < 3)
				fprintf(stderr, "  %s: page %#llx changed and is not in the log\n",
					what, (unsigned long long)gpa);
		}
		if (a->cls[pg] == PG_NONE && ch && stray++ < 3)
			fprintf(stderr, "  %s: page %#llx outside rings and buffers changed\n",
				what, (unsigned long long)gpa);
		if (mk && a->cls[pg] != PG_DEVICE && wrong++ < 3)
			fprintf(stderr, "  %s: page %#llx is marked, the device never writes it\n",
				what, (unsigned long long)gpa);
	}
	CHECK(missed == 0);
	CHECK(stray == 0);
	CHECK(wrong == 0);
	return changed;
}

/* Since the snapshot, no page the device could write has changed, and the log has not. */
static void audit_quiet(const struct audit *a, const struct vufe *fe, const char *what)
{
	unsigned changed = 0;

	for (unsigned pg = 0; pg < a->npages; pg++)
		if (a->cls[pg] != PG_DRIVER &&
		    memcmp(fe->g.mem + (size_t)pg * PAGE, a->snap + (size_t)pg * PAGE, PAGE) &&
		    changed++ < 3)
			fprintf(stderr, "  %s: page %#llx changed after GET_VRING_BASE answered\n",
				what, (unsigned long long)(FG_GPA_BASE + (uint64_t)pg * PAGE));
	CHECK(changed == 0);
	CHECK(memcmp(fe->log, a->log, fe->log_size) == 0);
}

struct flow {
	uint32_t rx_seq, tx_n[2];
	unsigned rx_frames[2], rx_bad;
	/* with seen set: frames rx_base.. of this run are counted there, a second copy in rx_dup */
	uint8_t *seen;
	uint32_t rx_base;
	unsigned rx_dup;
};

#define FLOW_SEEN 8192

/* RX buffer sizes the driver posts, round after round: with mergeable buffers frames span
 * several (and run out mid-frame: held); without, a small one cannot take a frame (dropped). */
static uint32_t rx_size(const struct vufe *fe, unsigned round)
{
	static const uint32_t mrg[] = {VUFE_BUF, 700, 256, 1500, 128, VUFE_BUF};

	if (fe->o.nomrg)
		return round % 16 == 5 ? 256 : VUFE_BUF;
	return mrg[round % (sizeof(mrg) / sizeof(mrg[0]))];
}

static void drain_rx(struct vufe *fe, unsigned qp, struct flow *fl)
{
	uint8_t got[VUFE_BUF * 8];
	long n;

	while ((n = vufe_recv_q(fe, qp, got, sizeof(got), 0)) != 0) {
		long s = n < 0 ? -1 : rx_check(got, n);

		if (s >= 0)
			fl->rx_frames[qp]++;
		else if (s == -1)
			fl->rx_bad++;
		if (fl->seen && s >= (long)fl->rx_base && s - fl->rx_base < FLOW_SEEN &&
		    fl->seen[s - fl->rx_base]++)
			fl->rx_dup++;
	}
}

/* Traffic both ways on every pair for rounds rounds, into tap. */
static void traffic(struct vufe *fe, unsigned tap, unsigned rounds, struct flow *fl)
{
	for (unsigned round = 0; round < rounds; round++) {
		for (unsigned k = 0; k < 6; k++)
			inject(tap, fl->rx_seq++);
		for (unsigned qp = 0; qp < fe->o.pairs; qp++) {
			vufe_reap_tx(fe, qp);
			for (unsigned k = 0; k < 3; k++)
				if (tx_send(fe, qp, qp << 16 | (fl->tx_n[qp] & 0x3ff)) >= 0)
					fl->tx_n[qp]++;
		}
		usleep(300);
		for (unsigned qp = 0; qp < fe->o.pairs; qp++) {
			drain_rx(fe, qp, fl);
			/* Every eighth round the ring runs dry: frames wait (held, or in the TAP).
			 */
			if (round % 8 != 7)
				vufe_post_rx_q(fe, qp, 12, rx_size(fe, round));
		}
	}
	usleep(20000);
	for (unsigned qp = 0; qp < fe->o.pairs; qp++) {
		drain_rx(fe, qp, fl);
		vufe_reap_tx(fe, qp);
	}
}

/*
 * Frames into the TAP until the guest has every RX buffer it posted back. Minimum-size ones,
 * which fit any buffer; a frame held for want of buffers (mergeable: the ones left are too
 * few for it) gets one full-size buffer more whenever the ring stops moving.
 */
static void rx_consume_all(struct vufe *fe, unsigned tap, struct flow *fl)
{
	long long end = th_now_ms() + 5000;
	unsigned was[2] = {~0u, ~0u};
	bool left = true;

	while (left && th_now_ms() < end) {
		for (unsigned k = 0; k < 8; fl->rx_seq++)
			if (rx_len(fl->rx_seq) < 100) {
				inject(tap, fl->rx_seq);
				k++;
			}
		usleep(2000);
		left = false;
		for (unsigned qp = 0; qp < fe->o.pairs; qp++) {
			drain_rx(fe, qp, fl);
			if (fe->nowned[2 * qp] && fe->used[2 * qp] == was[qp])
				vufe_post_rx_q(fe, qp, 1, VUFE_BUF);
			was[qp] = fe->used[2 * qp];
			left |= fe->nowned[2 * qp] != 0;
		}
	}
	REQUIRE(!left);
}

/* Large frames, from many flows, into buffers too small for them: each is read into the buffers
 * and then dropped (no mergeable buffers) or held for more (mergeable). */
static void rx_unfit(struct vufe *fe, unsigned tap, struct flow *fl)
{
	for (unsigned qp = 0; qp < fe->o.pairs; qp++)
		REQUIRE(vufe_post_rx_q(fe, qp, 2, fe->o.nomrg ? 256 : 128) == 2);
	for (unsigned k = 0; k < 32; fl->rx_seq++)
		if (rx_len(fl->rx_seq) > 1200) {
			inject(tap, fl->rx_seq);
			k++;
		}
	usleep(30000);
}

/* QEMU's dirty sync: take the marks (clearing them), then copy the pages. */
static void log_sync(struct audit *a, struct vufe *fe)
{
	memset(fe->log, 0, fe->log_size);
	audit_snap(a, fe);
}

static void run_audit(enum port_id port, bool mrg, bool eidx, unsigned pairs)
{
	struct vufe_opts o = {
	    .pairs = pairs, .qsize = AQSIZE, .event_idx = eidx, .nomrg = !mrg, .log = true};
	unsigned tap = port == OWN ? 0 : 1, changed, unfit, used_changed = 0;
	struct flow fl = {0};
	struct audit a;
	struct vufe fe;
	char what[96];
	long long end;

	snprintf(what, sizeof(what), "audit %s mrg=%d event_idx=%d pairs=%u", port_name[port], mrg,
		 eidx, pairs);
	fl.rx_seq = rx_seq_next;
	REQUIRE(vufe_init(&fe, AMEM, &o) == 0);
	REQUIRE(vufe_start(&fe, sock[port]) == 0);
	/* Running before migration starts, as a guest is. */
	traffic(&fe, tap, 20, &fl);
	REQUIRE(vufe_log_start(&fe) == 0);
	audit_init(&a, &fe);
	/* First pass: traffic both ways. */
	log_sync(&a, &fe);
	traffic(&fe, tap, 150, &fl);
	changed = audit_log(&a, &fe, what);
	for (unsigned r = 0; r < fe.nrings; r++) {
		uint64_t u = fe.q[r].used;

		/* Not vacuous: every used ring was written, and logged. */
		used_changed += memcmp(fe.g.mem + (u - FG_GPA_BASE), a.snap + (u - FG_GPA_BASE),
				       6 + 8 * AQSIZE) != 0;
		CHECK(vufe_log_marked(&fe, u));
	}
	CHECK(used_changed == fe.nrings);
	for (unsigned qp = 0; qp < pairs; qp++)
		CHECK(fl.rx_frames[qp] > 20 && fl.tx_n[qp] > 100);
	CHECK(fl.rx_bad == 0 && fe.bad_used == 0 && fe.bad_rx == 0);
	/* Second pass, ending in frames that do not fit the buffers; then the rings stop. */
	rx_consume_all(&fe, tap, &fl);
	log_sync(&a, &fe);
	rx_unfit(&fe, tap, &fl);
	CHECK(vufe_stop(&fe) == 0);
	unfit = audit_log(&a, &fe, what);
	CHECK(unfit >= pairs); /* not vacuous: each pair's small buffers were written */
	/* Stopped: frames keep coming, the driver keeps adding chains and kicking. */
	audit_snap(&a, &fe);
	end = th_now_ms() + 1000;
	for (unsigned round = 0; th_now_ms() < end; round++) {
		for (unsigned k = 0; k < 4; k++)
			inject(tap, fl.rx_seq++);
		for (unsigned qp = 0; qp < pairs; qp++) {
			if (round % 10 == 0) {
				vufe_post_rx_q(&fe, qp, 4, rx_size(&fe, round));
				tx_send(&fe, qp, qp << 16 | 1023);
			}
		}
		for (unsigned r = 0; r < fe.nrings; r++)
			(void)!write(fe.q[r].kick_fd, &(uint64_t){1}, 8);
		usleep(5000);
	}
	audit_quiet(&a, &fe, what);
	rx_seq_next = fl.rx_seq;
	printf("  %s: %u device pages changed, all logged, %u+%u frames in, %u+%u out; %u pages "
	       "written by frames that did not fit, logged; still for 1 s after the stop\n",
	       what, changed, fl.rx_frames[0], fl.rx_frames[1], fl.tx_n[0], fl.tx_n[1], unfit);
	audit_fini(&a);
	vufe_close(&fe);
}

static void test_audit(void)
{
	for (unsigned c = 0; c < 16; c++)
		run_audit(c & 8 ? SHARED : OWN, !(c & 1), c & 2, c & 4 ? 2 : 1);
}

/* ---- the handoff -------------------------------------------------------------------------- */

/* Every ring stopped where the guest sees it: nothing taken and kept (GET_VRING_BASE is the
 * next chain the destination takes; one behind the used index would be a chain lost). */
static bool bases_at_used(struct vufe *fe)
{
	bool ok = true;

	for (unsigned r = 0; r < fe->nrings; r++)
		if (fe->base[r] != vufe_used_idx(fe, r)) {
			fprintf(stderr, "  ring %u: GET_VRING_BASE %u, used index %u\n", r,
				fe->base[r], vufe_used_idx(fe, r));
			ok = false;
		}
	return ok;
}

/* Pair qp's RX ring has used every buffer up to avail index `to` (a pair not in use has). */
static bool rx_past(struct vufe *fe, unsigned qp, uint16_t to)
{
	return qp >= fe->o.pairs || (uint16_t)(vufe_used_idx(fe, 2 * qp) - to) < 0x8000;
}

/* An echo port's backend keeps the frames of its last frontend: hand them to a guest. */
static void echo_drain(enum port_id port)
{
	uint8_t got[VUFE_BUF];
	struct vufe fe;

	REQUIRE(vufe_connect(&fe, sock[port], MEM) == 0);
	vufe_post_rx(&fe, QSIZE, VUFE_BUF);
	while (vufe_recv_q(&fe, 0, got, sizeof(got), 100) > 0)
		vufe_post_rx(&fe, 1, VUFE_BUF);
	vufe_close(&fe);
}

/* TX chains published without a kick (QEMU migrates a guest whose kick may not have come). */
static void tx_unkicked(struct vufe *fe, unsigned qp, uint32_t from, unsigned n)
{
	vufe_batch(fe, true);
	for (unsigned k = 0; k < n; k++)
		REQUIRE(tx_send(fe, qp, qp << 16 | (from + k)) >= 0);
	fe->batching = false;
	fg_publish(&fe->q[2 * qp + 1], false);
}

/*
 * TAP ports: the source stops with RX buffers popped ahead, a frame held and more waiting in
 * its TAP, and TX chains published but not kicked; the destination resumes from GET_VRING_BASE.
 */
static void run_handoff_tap(enum port_id src, bool mrg, bool eidx, unsigned pairs)
{
	struct vufe_opts o = {
	    .pairs = pairs, .qsize = QSIZE, .event_idx = eidx, .nomrg = !mrg, .log = true};
	enum port_id dst = src == OWN ? SHARED : OWN;
	unsigned ts = src == OWN ? 0 : 1, td = 1 - ts;
	static uint8_t seen_tx[2][1024], seen_rx[FLOW_SEEN];
	struct flow fl = {.seen = seen_rx};
	bool tx_ok = true;
	struct vufe fe;
	uint16_t posted[2] = {0, 0};
	long long end;
	char what[96];

	snprintf(what, sizeof(what), "handoff %s->%s mrg=%d event_idx=%d pairs=%u", port_name[src],
		 port_name[dst], mrg, eidx, pairs);
	memset(seen_tx, 0, sizeof(seen_tx));
	memset(seen_rx, 0, sizeof(seen_rx));
	tap_flush(0);
	tap_flush(1);
	fl.rx_seq = fl.rx_base = rx_seq_next;
	REQUIRE(vufe_init(&fe, MEM, &o) == 0);
	REQUIRE(vufe_start(&fe, sock[src]) == 0);
	REQUIRE(vufe_log_start(&fe) == 0);
	for (unsigned qp = 0; qp < pairs; qp++) {
		for (uint32_t k = 0; k < 20; k++)
			REQUIRE(tx_send(&fe, qp, qp << 16 | k) >= 0);
		CHECK(vufe_tx_drain(&fe, qp, VUFE_WAIT_MS));
		tx_unkicked(&fe, qp, 20, 30);
		/* Few, small buffers: a stream of large frames outruns them. */
		vufe_post_rx_q(&fe, qp, 24, mrg ? 512 : VUFE_BUF);
	}
	for (unsigned k = 0; k < 120; k++) {
		inject(ts, fl.rx_seq++);
		if (k % 20 == 0)
			usleep(1000);
	}
	usleep(50000);
	CHECK(vufe_stop(&fe) == 0);
	CHECK(bases_at_used(&fe));
	/* What the source delivered before it stopped. */
	for (unsigned qp = 0; qp < pairs; qp++)
		drain_rx(&fe, qp, &fl);
	for (unsigned qp = 0; qp < pairs; qp++)
		posted[qp] = fe.q[2 * qp].avail_idx;
	vufe_disconnect(&fe);
	/* The destination: SET_VRING_BASE from what the source reported, no log. */
	fe.o.log = false;
	REQUIRE(vufe_start(&fe, sock[dst]) == 0);
	for (unsigned qp = 0; qp < pairs; qp++)
		CHECK(vufe_tx_drain(&fe, qp, VUFE_WAIT_MS));
	/* Frames on the destination's TAP, and fresh buffers behind the old ones, until every RX
	 * buffer posted before the handoff is used (the device takes them in ring order). */
	end = th_now_ms() + 5000;
	while (th_now_ms() < end && !(rx_past(&fe, 0, posted[0]) && rx_past(&fe, 1, posted[1]))) {
		for (unsigned k = 0; k < 8; k++)
			inject(td, fl.rx_seq++);
		usleep(2000);
		for (unsigned qp = 0; qp < pairs; qp++) {
			vufe_post_rx_q(&fe, qp, 4, VUFE_BUF);
			drain_rx(&fe, qp, &fl);
		}
	}
	rx_seq_next = fl.rx_seq;
	for (unsigned qp = 0; qp < pairs; qp++) {
		struct fg_vq *q = &fe.q[2 * qp];

		if (!rx_past(&fe, qp, posted[qp]))
			fprintf(
			    stderr,
			    "  %s: pair %u: RX buffers posted before the handoff never came back "
			    "(posted %u, used %u, base %u, now avail %u)\n",
			    what, qp, posted[qp], vufe_used_idx(&fe, 2 * qp), fe.base[2 * qp],
			    q->avail_idx);
		CHECK(rx_past(&fe, qp, posted[qp])); /* no RX buffer lost */
	}
	CHECK(fl.rx_dup == 0 && fl.rx_bad == 0 && fe.bad_used == 0 && fe.bad_rx == 0);
	/* Every TX frame out exactly once, through one TAP or the other. */
	tx_ok &= tap_collect(ts, seen_tx, 200);
	tx_ok &= tap_collect(td, seen_tx, 200);
	CHECK(tx_ok);
	for (unsigned qp = 0; qp < pairs; qp++)
		for (unsigned k = 0; k < 50; k++)
			if (seen_tx[qp][k] != 1) {
				fprintf(stderr, "  %s: TX frame %u of pair %u went out %u times\n",
					what, k, qp, seen_tx[qp][k]);
				CHECK(seen_tx[qp][k] == 1);
				break;
			}
	printf("  %s: bases at the used indices, every chain used once\n", what);
	vufe_close(&fe);
}

/*
 * Echo ports: the backend holds 256 frames. With no RX buffers posted the guest's 300 frames
 * fill it; the burst that meets the full queue is sent in part and its tail goes back to the
 * ring. The destination must send exactly that tail.
 */
static void run_handoff_echo(enum port_id src, bool eidx)
{
	struct vufe_opts o = {.pairs = 1, .qsize = QSIZE, .event_idx = eidx, .log = true};
	enum port_id dst = src == ECHO_OWN ? ECHO_SHARED : ECHO_OWN;
	uint8_t got[VUFE_BUF], want[VUFE_BUF];
	uint16_t taken;
	struct vufe fe;
	char what[96];
	uint32_t seq;
	long n;

	snprintf(what, sizeof(what), "handoff %s->%s (half-sent burst) event_idx=%d",
		 port_name[src], port_name[dst], eidx);
	echo_drain(src);
	echo_drain(dst);
	REQUIRE(vufe_init(&fe, MEM, &o) == 0);
	REQUIRE(vufe_start(&fe, sock[src]) == 0);
	REQUIRE(vufe_log_start(&fe) == 0);
	for (seq = 0; seq < 200; seq++)
		REQUIRE(tx_send(&fe, 0, seq) >= 0);
	CHECK(vufe_tx_drain(&fe, 0, VUFE_WAIT_MS));
	for (; seq < 300; seq++)
		REQUIRE(tx_send(&fe, 0, seq) >= 0);
	/* The backend takes 56 more and refuses the rest: wait for the used index to get there. */
	for (int k = 0; k < 200 && vufe_used_idx(&fe, 1) < 256; k++)
		usleep(5000);
	usleep(50000);
	vufe_reap_tx(&fe, 0);
	taken = vufe_used_idx(&fe, 1);
	CHECK(taken == 256);
	CHECK(fe.nowned[1] == 300u - taken);
	CHECK(vufe_stop(&fe) == 0);
	CHECK(bases_at_used(&fe));
	vufe_disconnect(&fe);
	fe.o.log = false;
	REQUIRE(vufe_start(&fe, sock[dst]) == 0);
	CHECK(vufe_tx_drain(&fe, 0, VUFE_WAIT_MS));
	vufe_post_rx(&fe, 128, VUFE_BUF);
	/* The destination's echo gives back exactly the chains the source left: in order, once. */
	for (seq = taken; seq < 300; seq++) {
		n = vufe_recv_q(&fe, 0, got, sizeof(got), VUFE_WAIT_MS);
		make_frame(want, tx_len(seq), seq);
		if (n != (long)tx_len(seq) || memcmp(got, want, (size_t)n)) {
			fprintf(stderr, "  %s: frame %u: got %ld bytes, want %zu\n", what, seq, n,
				tx_len(seq));
			CHECK(!"the destination sent what the source left");
			break;
		}
	}
	CHECK(vufe_recv_q(&fe, 0, got, sizeof(got), 200) == 0); /* and nothing more */
	CHECK(fe.bad_used == 0 && fe.bad_rx == 0 && fe.nowned[1] == 0);
	printf("  %s: %u frames taken by the source, the other %u by the destination\n", what,
	       taken, 300u - taken);
	vufe_close(&fe);
}

static void test_handoff(void)
{
	/* Both directions between a worker of the port's own and the shared busy-polling one,
	 * mergeable or not, one or two pairs; EVENT_IDX on in half of them. */
	for (unsigned c = 0; c < 8; c++)
		run_handoff_tap(c & 1 ? SHARED : OWN, !(c & 2), (c ^ c >> 1 ^ c >> 2) & 1,
				c & 4 ? 2 : 1);
	run_handoff_echo(ECHO_OWN, false);
	run_handoff_echo(ECHO_SHARED, true);
}

int main(void)
{
	th_private_netns();
	th_sh("sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1");
	snprintf(dir, sizeof(dir), "/tmp/vt-mig.XXXXXX");
	REQUIRE(mkdtemp(dir));
	snprintf(log_path, sizeof(log_path), "%s/virtap.log", dir);
	for (unsigned i = 0; i < NPORTS; i++)
		snprintf(sock[i], sizeof(sock[i]), "%s/%s.sock", dir, port_name[i]);
	daemon_start();
	test_audit();
	test_handoff();
	CHECK(vtproc_stop(vt, SIGTERM, 5000) == 0);
	if (th_failures)
		vtproc_tail(log_path, 40);
	th_sh("rm -rf %s", dir);
	return th_done("migration");
}
