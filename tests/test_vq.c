// SPDX-License-Identifier: MIT
/* Split virtqueue device side (src/virtio/vq.c) against the fake guest, incl. every guest fault. */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "fakeguest.h"
#include "netns.h"
#include "virtap/log.h"
#include "virtap/vq.h"

#define DF_NEXT	    1
#define DF_WRITE    2
#define DF_INDIRECT 4

#define F_INDIRECT  (1ull << VQ_F_INDIRECT_DESC)
#define F_EVENT_IDX (1ull << VQ_F_EVENT_IDX)

#define RAM_SIZE (16ull << 20)
#define RAM_END	 (FG_GPA_BASE + RAM_SIZE)
#define BUF_SIZE (256u << 10)

/* Extra host-mapped regions: one right after the fake guest's RAM, one read-only further up. */
#define ADJ_GPA RAM_END
#define RO_GPA	(RAM_END + 0x100000)
static uint8_t adj_ram[4096] __attribute__((aligned(4096)));
static uint8_t ro_ram[4096] __attribute__((aligned(4096)));

struct env {
	struct fg g;
	struct fg_vq fq[2]; /* [0] the queue under test, [1] a bystander in the same guest memory */
	struct vq vq[2];
	uint64_t buf; /* guest data area for descriptors to point at */
	struct iovec iov[VQ_MAX_IOV];
};

static struct env env_store;

static struct env *env_setup(uint16_t num, uint64_t features)
{
	struct env *e = &env_store;

	REQUIRE(fg_init(&e->g, RAM_SIZE) == 0);
	REQUIRE(fg_vq_init(&e->g, &e->fq[0], num) == 0);
	REQUIRE(fg_vq_init(&e->g, &e->fq[1], 8) == 0);
	REQUIRE(fg_vq_attach(&e->fq[0], &e->vq[0], "vq-test", features) == 0);
	REQUIRE(fg_vq_attach(&e->fq[1], &e->vq[1], "vq-bystander", features) == 0);
	e->buf = fg_alloc(&e->g, BUF_SIZE, 4096);
	th_log_capture();
	return e;
}

static void env_teardown(struct env *e)
{
	fg_vq_destroy(&e->fq[0]);
	fg_vq_destroy(&e->fq[1]);
	fg_destroy(&e->g);
}

/* Guest writes a recognisable pattern; the device checks it through its own mapping. */
static void fill(struct env *e, uint64_t gpa, size_t len, uint8_t seed)
{
	uint8_t *p = fg_va(&e->g, gpa);

	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

static bool iov_has_pattern(const struct iovec *iov, unsigned n, uint8_t seed)
{
	size_t k = 0;

	for (unsigned i = 0; i < n; i++)
		for (size_t j = 0; j < iov[i].iov_len; j++, k++)
			if (((const uint8_t *)iov[i].iov_base)[j] != (uint8_t)(seed + k * 7))
				return false;
	return true;
}

/* Publish head in avail slot 0 of the queue under test with raw writes. */
static void bad_publish(struct env *e, uint16_t head)
{
	fg_raw_avail(&e->fq[0], 0, head);
	fg_raw_avail_idx(&e->fq[0], 1);
}

/* The bystander queue in the same guest memory still moves a chain both ways. */
static void bystander_roundtrip(struct env *e)
{
	struct fg_vq *q = &e->fq[1];
	struct fg_buf b[2] = {
	    {.gpa = e->buf + BUF_SIZE - 8192, .len = 100, .write = false},
	    {.gpa = e->buf + BUF_SIZE - 4096, .len = 200, .write = true},
	};
	struct vq_chain c = {0};
	struct iovec iov[4];
	uint32_t id = 0, len = 0;
	int head;

	fill(e, b[0].gpa, b[0].len, 0x5a);
	head = fg_add(q, b, 2, false);
	REQUIRE(head >= 0);
	fg_publish(q, true);
	CHECK(vq_pop(&e->vq[1], &c, iov, 4) == 1);
	CHECK(c.head == head && c.nout == 1 && c.nin == 1 && c.out_len == 100 && c.in_len == 200);
	CHECK(iov_has_pattern(iov, 1, 0x5a));
	vq_push(&e->vq[1], c.head, 42);
	CHECK(vq_notify(&e->vq[1]));
	CHECK(fg_used(q, &id, &len) == 1 && id == (uint32_t)head && len == 42);
	CHECK(fg_wait_call(q, 100) == 1);
	CHECK(!vq_is_broken(&e->vq[1]));
}

/*
 * The queue under test has a bad shape published: the next pop breaks it, logs the rule once,
 * changes nothing the guest can see, stays broken, and leaves the bystander queue working.
 */
static void expect_broken(struct env *e, const char *rule)
{
	static const uint8_t zero[12];
	struct vq *vq = &e->vq[0];
	uint64_t chains = vq->stats.chains;
	uint16_t last_avail = vq->last_avail;
	struct vq_chain c;

	CHECK(!vq_is_broken(vq));
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == -EIO);
	CHECK(vq_is_broken(vq));
	CHECK(th_log_errors == 1);
	CHECK(strstr(th_log_last, "vq-test: queue broken: ") == th_log_last);
	CHECK(strstr(th_log_last, rule) != NULL);
	if (th_log_errors != 1 || !strstr(th_log_last, rule))
		fprintf(stderr, "  wanted one error with '%s', got %d, last '%s'\n", rule,
			th_log_errors, th_log_last);
	CHECK(vq->stats.chains == chains && vq->last_avail == last_avail);

	/* Sticky: every later call is a harmless no-op and nothing more is logged. */
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == -EIO);
	CHECK(vq_avail_count(vq) == 0);
	vq_push(vq, 0, 1234);
	vq_flush(vq);
	CHECK(!vq_notify(vq));
	vq_disable_notify(vq);
	CHECK(!vq_enable_notify(vq));
	CHECK(vq->stats.notifies == 0);
	/* used flags, idx and the first entry are untouched; no call was signalled */
	CHECK(memcmp(fg_va(&e->g, e->fq[0].used), zero, sizeof(zero)) == 0);
	CHECK(fg_used_pending(&e->fq[0]) == 0);
	CHECK(fg_wait_call(&e->fq[0], 0) == 0);
	vq_mark_broken(vq, "%s", "a second fault");
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == -EIO);
	CHECK(th_log_errors == 1);

	bystander_roundtrip(e);
	CHECK(th_log_errors == 1);
}

/* ---------------------------------------------------------------------------------------------
 * A. Functional
 */

static void test_simple_chain(void)
{
	struct env *e = env_setup(8, 0);
	struct fg_buf b[2] = {
	    {.gpa = e->buf, .len = 64, .write = false},
	    {.gpa = e->buf + 4096, .len = 128, .write = true},
	};
	struct vq *vq = &e->vq[0];
	struct vq_chain c = {0};
	uint32_t id = 0, len = 0;
	uint64_t kicks = 0;
	int head;

	fill(e, b[0].gpa, b[0].len, 0x11);
	CHECK(vq->num == 8 && !vq->event_idx && !vq->indirect);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 0); /* empty ring */
	CHECK(vq_avail_count(vq) == 0);
	head = fg_add(&e->fq[0], b, 2, false);
	CHECK(head == 0);
	CHECK(vq_avail_count(vq) == 0); /* added but not yet published */
	fg_publish(&e->fq[0], true);
	CHECK(read(vq->kick_fd, &kicks, sizeof(kicks)) == (ssize_t)sizeof(kicks) && kicks == 1);
	CHECK(vq_avail_count(vq) == 1);

	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1);
	CHECK(c.head == head && c.ndesc == 2 && c.iov == e->iov);
	CHECK(c.nout == 1 && c.nin == 1 && c.out_len == 64 && c.in_len == 128);
	CHECK(e->iov[0].iov_len == 64 && e->iov[1].iov_len == 128);
	/* The device's mapping is not the guest's, yet it sees the guest's bytes... */
	CHECK(e->iov[0].iov_base != fg_va(&e->g, b[0].gpa));
	CHECK(iov_has_pattern(e->iov, 1, 0x11));
	/* ...and the guest sees what the device writes. */
	memset(e->iov[1].iov_base, 0xab, 128);
	CHECK(((uint8_t *)fg_va(&e->g, b[1].gpa))[0] == 0xab);
	CHECK(((uint8_t *)fg_va(&e->g, b[1].gpa))[127] == 0xab);
	CHECK(((uint8_t *)fg_va(&e->g, b[1].gpa))[128] == 0);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 0);
	CHECK(vq->stats.chains == 1);

	vq_push(vq, (uint16_t)head, 128);
	CHECK(fg_used_pending(&e->fq[0]) == 0); /* staged only */
	CHECK(vq_notify(vq));
	CHECK(vq->stats.notifies == 1 && vq->stats.notifies_suppressed == 0);
	CHECK(fg_used(&e->fq[0], &id, &len) == 1 && id == (uint32_t)head && len == 128);
	CHECK(fg_wait_call(&e->fq[0], 100) == 1);
	CHECK(!vq_notify(vq)); /* nothing new since the last notification */
	CHECK(fg_wait_call(&e->fq[0], 0) == 0);

	/* The descriptors went back to the guest's free list and are reused. */
	CHECK(fg_add(&e->fq[0], b, 2, false) >= 0);
	fg_publish(&e->fq[0], false);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.ndesc == 2);
	CHECK(th_log_errors == 0);
	env_teardown(e);
}

static void test_indirect(void)
{
	struct env *e = env_setup(8, F_INDIRECT);
	struct fg_buf b[3] = {
	    {.gpa = e->buf, .len = 32, .write = false},
	    {.gpa = e->buf + 4096, .len = 16, .write = true},
	    {.gpa = e->buf + 8192, .len = 200, .write = true},
	};
	struct vq *vq = &e->vq[0];
	struct vq_chain c = {0};
	uint32_t id = 0, len = 0;
	int head;

	CHECK(vq->indirect);
	fill(e, b[0].gpa, b[0].len, 0x22);
	head = fg_add(&e->fq[0], b, 3, true);
	REQUIRE(head >= 0);
	CHECK(e->fq[0].nfree == 7); /* one ring descriptor for the whole chain */
	fg_publish(&e->fq[0], false);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1);
	CHECK(c.head == head && c.ndesc == 1 && c.nout == 1 && c.nin == 2);
	CHECK(c.out_len == 32 && c.in_len == 216);
	CHECK(e->iov[0].iov_len == 32 && e->iov[1].iov_len == 16 && e->iov[2].iov_len == 200);
	CHECK(iov_has_pattern(e->iov, 1, 0x22));
	memset(e->iov[2].iov_base, 0xcd, 200);
	CHECK(((uint8_t *)fg_va(&e->g, b[2].gpa))[199] == 0xcd);
	vq_push(vq, c.head, 216);
	CHECK(vq_notify(vq));
	CHECK(fg_used(&e->fq[0], &id, &len) == 1 && id == (uint32_t)head && len == 216);
	CHECK(e->fq[0].nfree == 8);

	/* A direct chain and an indirect one side by side. */
	CHECK(fg_add(&e->fq[0], b, 2, false) >= 0);
	CHECK(fg_add(&e->fq[0], b, 3, true) >= 0);
	fg_publish(&e->fq[0], false);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.ndesc == 2 && c.nin == 1);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.ndesc == 1 && c.nin == 2);
	CHECK(th_log_errors == 0);
	env_teardown(e);
}

static void test_batching(void)
{
	struct env *e = env_setup(8, 0);
	struct vq *vq = &e->vq[0];
	struct vq_chain c = {0};
	int heads[5];

	for (unsigned i = 0; i < 5; i++) {
		struct fg_buf b = {.gpa = e->buf + 4096 * i, .len = 1500, .write = true};

		heads[i] = fg_add(&e->fq[0], &b, 1, false);
		REQUIRE(heads[i] >= 0);
	}
	fg_publish(&e->fq[0], false);
	CHECK(vq_avail_count(vq) == 5);
	for (unsigned i = 0; i < 5; i++) {
		CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == heads[i]);
		vq_push(vq, c.head, 100 + i);
	}
	CHECK(fg_used_pending(&e->fq[0]) == 0);
	vq_flush(vq);
	CHECK(fg_used_pending(&e->fq[0]) == 5);
	CHECK(fg_wait_call(&e->fq[0], 0) == 0); /* flush publishes, it does not signal */
	CHECK(vq_notify(vq));
	CHECK(fg_wait_call(&e->fq[0], 100) == 1); /* one signal for the batch */
	for (unsigned i = 0; i < 5; i++) {
		uint32_t id = 0, len = 0;

		CHECK(fg_used(&e->fq[0], &id, &len) == 1);
		CHECK(id == (uint32_t)heads[i] && len == 100 + i);
	}
	CHECK(fg_used_pending(&e->fq[0]) == 0);
	CHECK(vq->stats.chains == 5 && vq->stats.notifies == 1);
	env_teardown(e);
}

static void test_discard(void)
{
	struct env *e = env_setup(8, 0);
	struct vq *vq = &e->vq[0];
	struct vq_chain c = {0};
	int heads[3];

	for (unsigned i = 0; i < 3; i++) {
		struct fg_buf b = {.gpa = e->buf + 4096 * i, .len = 64, .write = true};

		heads[i] = fg_add(&e->fq[0], &b, 1, false);
	}
	fg_publish(&e->fq[0], false);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == heads[0]);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == heads[1]);
	CHECK(vq->stats.chains == 2);
	vq_discard(vq, 1);
	CHECK(vq->stats.chains == 1 && vq->last_avail == 1);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == heads[1]);
	vq_discard(vq, 2);
	CHECK(vq->stats.chains == 0);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == heads[0]);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == heads[1]);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == heads[2]);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 0);
	CHECK(vq->stats.chains == 3 && th_log_errors == 0);
	env_teardown(e);
}

/* Add and publish one device-writable chain on the queue under test; returns its head. */
static int add_one(struct env *e, unsigned k)
{
	struct fg_buf b = {.gpa = e->buf + 4096 * (k % 32), .len = 256, .write = true};
	int head = fg_add(&e->fq[0], &b, 1, false);

	REQUIRE(head >= 0);
	fg_publish(&e->fq[0], false);
	return head;
}

/* Pop one chain, give it straight back as used. */
static void pop_push(struct env *e)
{
	struct vq_chain c = {0};

	add_one(e, 0);
	CHECK(vq_pop(&e->vq[0], &c, e->iov, VQ_MAX_IOV) == 1);
	vq_push(&e->vq[0], c.head, 1);
}

static void test_notify_flags(void)
{
	struct env *e = env_setup(8, 0);
	struct fg_vq *q = &e->fq[0];
	struct vq *vq = &e->vq[0];
	struct vq_chain c = {0};
	uint32_t id, len;

	/* VIRTQ_AVAIL_F_NO_INTERRUPT: used entries are published, the call is skipped. */
	fg_set_avail_flags(q, 1);
	pop_push(e);
	CHECK(!vq_notify(vq));
	CHECK(vq->stats.notifies_suppressed == 1 && vq->stats.notifies == 0);
	CHECK(fg_used_pending(q) == 1 && fg_wait_call(q, 0) == 0);
	CHECK(fg_used(q, &id, &len) == 1);

	fg_set_avail_flags(q, 0);
	pop_push(e);
	CHECK(vq_notify(vq));
	CHECK(vq->stats.notifies_suppressed == 1 && vq->stats.notifies == 1);
	CHECK(fg_wait_call(q, 100) == 1);
	CHECK(fg_used(q, &id, &len) == 1);
	CHECK(!vq_notify(vq)); /* nothing new: neither a call nor a suppression */
	CHECK(vq->stats.notifies_suppressed == 1 && vq->stats.notifies == 1);

	/* Kick suppression: VIRTQ_USED_F_NO_NOTIFY. */
	CHECK(fg_used_flags(q) == 0);
	vq_disable_notify(vq);
	CHECK(fg_used_flags(q) == 1);
	CHECK(!vq_enable_notify(vq)); /* ring drained, nothing new */
	CHECK(fg_used_flags(q) == 0);

	/* The race: the guest publishes while kicks are off; enable must report it. */
	vq_disable_notify(vq);
	add_one(e, 1);
	CHECK(vq_enable_notify(vq));
	CHECK(fg_used_flags(q) == 0);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 0);
	CHECK(!vq_enable_notify(vq));
	/* A chain the device already counted (vq_avail_count looked) is not "new". */
	add_one(e, 2);
	CHECK(vq_avail_count(vq) == 1);
	CHECK(!vq_enable_notify(vq));
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1);
	CHECK(th_log_errors == 0);
	env_teardown(e);
}

static void test_event_idx(void)
{
	struct env *e = env_setup(8, F_EVENT_IDX);
	struct fg_vq *q = &e->fq[0];
	struct vq *vq = &e->vq[0];
	struct vq_chain c = {0};
	uint32_t id, len;

	CHECK(vq->event_idx);
	/* used_event starts at 0: the first entry (used idx 0 -> 1) must be signalled. */
	pop_push(e);
	CHECK(vq_notify(vq) && fg_wait_call(q, 100) == 1);
	/* used_event = 3: signal only when used idx passes 3, i.e. when it becomes 4. */
	fg_set_used_event(q, 3);
	pop_push(e); /* -> 2 */
	CHECK(!vq_notify(vq));
	pop_push(e); /* -> 3 */
	CHECK(!vq_notify(vq));
	CHECK(vq->stats.notifies_suppressed == 2 && fg_wait_call(q, 0) == 0);
	CHECK(fg_used_pending(q) == 3); /* published nonetheless */
	pop_push(e);			/* -> 4: crosses */
	CHECK(vq_notify(vq) && fg_wait_call(q, 100) == 1);
	pop_push(e); /* -> 5: already past, the guest has not moved used_event */
	CHECK(!vq_notify(vq));
	while (fg_used(q, &id, &len))
		;
	/* A batch that jumps over used_event (5 -> 8 with used_event 6) still signals once. */
	fg_set_used_event(q, 6);
	pop_push(e);
	pop_push(e);
	pop_push(e);
	CHECK(vq_notify(vq) && fg_wait_call(q, 100) == 1);
	CHECK(vq->stats.notifies == 3 && vq->stats.notifies_suppressed == 3);
	while (fg_used(q, &id, &len))
		;

	/* Kick suppression with EVENT_IDX: no flags, avail_event instead. */
	vq_disable_notify(vq);
	CHECK(fg_used_flags(q) == 0);
	CHECK(!vq_enable_notify(vq));
	CHECK(fg_avail_event(q) == 8 && vq->avail_shadow == 8);
	add_one(e, 9);
	CHECK(vq_enable_notify(vq)); /* guest published 9 after the device looked at 8 */
	CHECK(fg_avail_event(q) == 8);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 0);
	CHECK(!vq_enable_notify(vq));
	CHECK(fg_avail_event(q) == 9);
	CHECK(th_log_errors == 0);
	env_teardown(e);
}

/* Both 16-bit indices wrap: avail from 0xfffe to 2, used likewise, with EVENT_IDX arithmetic. */
static void test_index_wrap(void)
{
	struct env *e = env_setup(8, F_EVENT_IDX);
	struct fg_vq *q = &e->fq[0];
	struct vq *vq = &e->vq[0];
	struct vq_chain c = {0};
	uint16_t start = htole16(0xfffe);
	uint32_t id, len;
	int heads[4];

	q->avail_idx = 0xfffe;
	q->last_used = 0xfffe;
	memcpy(fg_va(&e->g, q->used + 2), &start, 2);
	fg_raw_avail_idx(q, 0xfffe);
	vq_set_base(vq, 0xfffe);
	CHECK(vq->used_idx == 0xfffe && vq_avail_count(vq) == 0);
	for (unsigned i = 0; i < 4; i++) {
		struct fg_buf b = {.gpa = e->buf + 4096 * i, .len = 64, .write = true};

		heads[i] = fg_add(q, &b, 1, false);
	}
	fg_publish(q, false);
	CHECK(vq_avail_count(vq) == 4);
	for (unsigned i = 0; i < 4; i++)
		CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == heads[i]);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 0 && vq->last_avail == 2);

	vq_push(vq, (uint16_t)heads[0], 1); /* used -> 0xffff */
	CHECK(vq_notify(vq));
	fg_set_used_event(q, 0);
	vq_push(vq, (uint16_t)heads[1], 2); /* -> 0 */
	CHECK(!vq_notify(vq));
	vq_push(vq, (uint16_t)heads[2], 3); /* -> 1: passes used_event 0 */
	CHECK(vq_notify(vq));
	vq_push(vq, (uint16_t)heads[3], 4); /* -> 2 */
	CHECK(!vq_notify(vq));
	for (unsigned i = 0; i < 4; i++)
		CHECK(fg_used(q, &id, &len) == 1 && id == (uint32_t)heads[i] && len == i + 1);
	CHECK(fg_wait_call(q, 100) == 2);
	CHECK(th_log_errors == 0 && !vq_is_broken(vq));
	env_teardown(e);
}

static void test_set_base_stop(void)
{
	static struct vq vq2;
	struct env *e = env_setup(8, 0);
	struct fg_vq *q = &e->fq[0];
	struct vq *vq = &e->vq[0];
	struct vq_chain c = {0};
	int heads[5];

	for (unsigned i = 0; i < 5; i++) {
		struct fg_buf b = {.gpa = e->buf + 4096 * i, .len = 64, .write = true};

		heads[i] = fg_add(q, &b, 1, false);
	}
	fg_publish(q, false);
	for (unsigned i = 0; i < 3; i++)
		CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == heads[i]);
	vq_push(vq, (uint16_t)heads[0], 10);
	vq_push(vq, (uint16_t)heads[1], 11);
	vq_flush(vq);
	CHECK(vq_stop(vq) == 3);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 0); /* stopped */
	CHECK(vq_avail_count(vq) == 0 && !vq_notify(vq));

	/* A new owner of the same rings carries on from the 4th chain and the 3rd used entry. */
	REQUIRE(fg_vq_attach(q, &vq2, "vq-test2", 0) == 0);
	vq_set_base(&vq2, 3);
	CHECK(vq2.used_idx == 2);
	CHECK(vq_avail_count(&vq2) == 2);
	CHECK(vq_pop(&vq2, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == heads[3]);
	vq_push(&vq2, (uint16_t)heads[2], 12);
	vq_push(&vq2, c.head, 13);
	CHECK(vq_notify(&vq2));
	CHECK(fg_used_pending(q) == 4);
	for (unsigned i = 0; i < 4; i++) {
		uint32_t id = 0, len = 0;

		CHECK(fg_used(q, &id, &len) == 1 && id == (uint32_t)heads[i] && len == 10 + i);
	}
	CHECK(vq_pop(&vq2, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == heads[4]);
	CHECK(vq_pop(&vq2, &c, e->iov, VQ_MAX_IOV) == 0);
	CHECK(vq_stop(&vq2) == 5);
	CHECK(th_log_errors == 0);
	env_teardown(e);
}

static void test_setup_checks(void)
{
	static struct vq vq;
	static struct fg_vq big;
	struct env *e = env_setup(8, 0);
	struct fg_vq *q = &e->fq[0];
	const struct gmem *gm = &e->g.gm;
	static const uint16_t bad_num[] = {0, 3, 6, 100, 32767, 65535};
	struct vq_chain c = {0};
	int errs = 0;

	for (unsigned i = 0; i < sizeof(bad_num) / sizeof(bad_num[0]); i++) {
		vq_init(&vq);
		CHECK(vq_setup(&vq, gm, "s", bad_num[i], q->desc, q->avail, q->used, 0) == -EINVAL);
		CHECK(th_log_errors == ++errs && strstr(th_log_last, "not a power of two"));
		CHECK(!vq.ready && vq_pop(&vq, &c, e->iov, VQ_MAX_IOV) == 0 && !vq_notify(&vq));
	}
	/* VIRTIO 1.2 2.7: desc 16, avail 2, used 4 byte alignment. */
	CHECK(vq_setup(&vq, gm, "s", 8, q->desc + 8, q->avail, q->used, 0) == -EINVAL);
	CHECK(vq_setup(&vq, gm, "s", 8, q->desc, q->avail + 1, q->used, 0) == -EINVAL);
	CHECK(vq_setup(&vq, gm, "s", 8, q->desc, q->avail, q->used + 2, 0) == -EINVAL);
	errs += 3;
	CHECK(th_log_errors == errs && strstr(th_log_last, "misaligned"));
	/* Each ring wholly inside one region. */
	CHECK(vq_setup(&vq, gm, "s", 8, 0x1000, q->avail, q->used, 0) == -EFAULT);
	CHECK(vq_setup(&vq, gm, "s", 8, q->desc, RAM_END + 0x1000, q->used, 0) == -EFAULT);
	CHECK(vq_setup(&vq, gm, "s", 8, q->desc, q->avail, RAM_END - 64, 0) == -EFAULT);
	CHECK(vq_setup(&vq, gm, "s", 8, RAM_END - 64, q->avail, q->used, 0) == -EFAULT);
	CHECK(vq_setup(&vq, gm, "s", 8, UINT64_MAX - 15, q->avail, q->used, 0) == -EFAULT);
	errs += 5;
	CHECK(th_log_errors == errs && strstr(th_log_last, "not inside one guest memory region"));
	CHECK(!vq.ready && vq_pop(&vq, &c, e->iov, VQ_MAX_IOV) == 0);
	/* The exact fit is fine: desc ends at the last byte of RAM. */
	CHECK(vq_setup(&vq, gm, "s", 8, RAM_END - 128, q->avail, q->used, 0) == 0);
	CHECK(vq.ready && vq.num == 8 && vq.max_chain_bytes == VQ_DEFAULT_MAX_CHAIN_BYTES);
	/* The device does not keep the rings of a failed setup. */
	CHECK(vq_setup(&vq, gm, "s", 8, q->desc, q->avail, q->used + 1, 0) == -EINVAL);
	CHECK(!vq.ready && !vq.desc);
	errs++;

	/* The largest queue, 32768, and its highest descriptor index. */
	REQUIRE(fg_vq_init(&e->g, &big, VQ_MAX_SIZE) == 0);
	REQUIRE(fg_vq_attach(&big, &vq, "big", 0) == 0);
	CHECK(vq.num == VQ_MAX_SIZE);
	fg_raw_desc(&big, VQ_MAX_SIZE - 1, e->buf, 64, DF_WRITE, 0);
	fg_raw_avail(&big, 0, VQ_MAX_SIZE - 1);
	fg_raw_avail(&big, 1, VQ_MAX_SIZE - 1);
	fg_raw_avail_idx(&big, 1);
	CHECK(vq_pop(&vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == VQ_MAX_SIZE - 1 &&
	      c.in_len == 64);
	vq_push(&vq, c.head, 64);
	CHECK(vq_notify(&vq) && fg_used_pending(&big) == 1);
	/* Avail idx may run exactly queue size ahead of the device. */
	fg_raw_avail_idx(&big, VQ_MAX_SIZE + 1);
	CHECK(vq_avail_count(&vq) == VQ_MAX_SIZE && !vq_is_broken(&vq));
	CHECK(th_log_errors == errs);
	fg_vq_destroy(&big);
	env_teardown(e);
}

/* One descriptor across two adjacent regions maps to two iovecs; a read-only region reads. */
static void test_cross_region(void)
{
	struct env *e = env_setup(8, 0);
	struct vq *vq = &e->vq[0];
	struct vq_chain c = {0};

	REQUIRE(gmem_add_host(&e->g.gm, ADJ_GPA, sizeof(adj_ram), 0x7f2000000000ull, adj_ram,
			      GMEM_READ | GMEM_WRITE) == 0);
	REQUIRE(gmem_add_host(&e->g.gm, RO_GPA, sizeof(ro_ram), 0x7f3000000000ull, ro_ram,
			      GMEM_READ) == 0);
	memset(fg_va(&e->g, RAM_END - 8), 0x77, 8);
	memset(adj_ram, 0x88, 8);
	ro_ram[0] = 0x99;
	fg_raw_desc(&e->fq[0], 0, RAM_END - 8, 16, DF_NEXT, 1);
	fg_raw_desc(&e->fq[0], 1, RO_GPA, 4096, DF_NEXT, 2);
	fg_raw_desc(&e->fq[0], 2, RAM_END - 8, 16, DF_WRITE, 0);
	bad_publish(e, 0);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1);
	CHECK(c.ndesc == 3 && c.nout == 3 && c.nin == 2 && c.out_len == 16 + 4096 &&
	      c.in_len == 16);
	CHECK(e->iov[0].iov_len == 8 && ((uint8_t *)e->iov[0].iov_base)[7] == 0x77);
	CHECK(e->iov[1].iov_base == adj_ram && e->iov[1].iov_len == 8);
	CHECK(e->iov[2].iov_base == ro_ram && e->iov[2].iov_len == 4096);
	CHECK(e->iov[4].iov_base == adj_ram && e->iov[4].iov_len == 8);
	CHECK(th_log_errors == 0);
	/* A caller array too short for the chain is the caller's problem, not a guest fault. */
	vq_discard(vq, 1);
	CHECK(vq_pop(vq, &c, e->iov, 4) == -ENOBUFS);
	CHECK(!vq_is_broken(vq) && th_log_errors == 0);
	CHECK(vq_pop(vq, &c, e->iov, 5) == 1);
	env_teardown(e);
}

static void test_iov_copy(void)
{
	uint8_t a[3], b[5], c[7], out[20];
	struct iovec iov[3] = {{a, sizeof(a)}, {b, sizeof(b)}, {c, sizeof(c)}};
	const uint8_t src[12] = "0123456789a";

	memset(a, '.', sizeof(a));
	memset(b, '.', sizeof(b));
	memset(c, '.', sizeof(c));
	CHECK(vq_iov_from_buf(iov, 3, 2, src, 10) == 10);
	CHECK(memcmp(a, "..0", 3) == 0 && memcmp(b, "12345", 5) == 0 &&
	      memcmp(c, "6789...", 7) == 0);
	CHECK(vq_iov_from_buf(iov, 3, 13, src, 10) == 2);
	CHECK(memcmp(c, "6789.01", 7) == 0);
	CHECK(vq_iov_from_buf(iov, 3, 15, src, 4) == 0);
	CHECK(vq_iov_to_buf(iov, 3, 1, out, sizeof(out)) == 14);
	CHECK(memcmp(out, ".0123456789.01", 14) == 0);
	CHECK(vq_iov_to_buf(iov, 3, 100, out, 4) == 0);
	CHECK(vq_iov_to_buf(iov, 2, 0, out, 20) == 8);
}

/* ---------------------------------------------------------------------------------------------
 * B. One malicious ring shape per rule. Unless said otherwise: queue size 8, bad chain at head 0.
 */

static void bad_head_out_of_range(void)
{
	static const uint16_t heads[] = {8, 9, 0xffff};

	for (unsigned i = 0; i < 3; i++) {
		struct env *e = env_setup(8, 0);

		fg_raw_desc(&e->fq[0], 0, e->buf, 64, 0, 0);
		bad_publish(e, heads[i]);
		expect_broken(e, "holds head");
		env_teardown(e);
	}
}

static void bad_next_out_of_range(void)
{
	struct env *e = env_setup(8, 0);

	fg_raw_desc(&e->fq[0], 0, e->buf, 64, DF_NEXT, 8);
	bad_publish(e, 0);
	expect_broken(e, "descriptor next 8 is past the ring");
	env_teardown(e);
}

static void bad_desc_loop(void)
{
	struct env *e = env_setup(8, 0);

	fg_raw_desc(&e->fq[0], 0, e->buf, 64, DF_NEXT, 1);
	fg_raw_desc(&e->fq[0], 1, e->buf, 64, DF_NEXT, 0);
	bad_publish(e, 0);
	expect_broken(e, "longer than the queue size 8 (loop)");
	env_teardown(e);

	/* A descriptor that points at itself; the loop is found from a non-zero head too. */
	e = env_setup(8, 0);
	fg_raw_desc(&e->fq[0], 5, e->buf, 64, DF_NEXT | DF_WRITE, 5);
	bad_publish(e, 5);
	expect_broken(e, "chain from head 5 is longer than the queue size");
	env_teardown(e);
}

static void bad_read_after_write(void)
{
	struct env *e = env_setup(8, 0);

	fg_raw_desc(&e->fq[0], 0, e->buf, 64, DF_NEXT, 1);
	fg_raw_desc(&e->fq[0], 1, e->buf + 64, 64, DF_WRITE | DF_NEXT, 2);
	fg_raw_desc(&e->fq[0], 2, e->buf + 128, 64, 0, 0);
	bad_publish(e, 0);
	expect_broken(e, "device-readable descriptor after a device-writable one");
	env_teardown(e);

	/* The same inside an indirect table. */
	e = env_setup(8, F_INDIRECT);
	fg_raw_table(&e->g, e->buf, 0, e->buf + 4096, 64, DF_WRITE | DF_NEXT, 1);
	fg_raw_table(&e->g, e->buf, 1, e->buf + 8192, 64, DF_NEXT, 2);
	fg_raw_table(&e->g, e->buf, 2, e->buf + 8192, 64, DF_WRITE, 0);
	fg_raw_desc(&e->fq[0], 0, e->buf, 48, DF_INDIRECT, 0);
	bad_publish(e, 0);
	expect_broken(e, "device-readable descriptor after a device-writable one");
	env_teardown(e);
}

/* Ring descriptor 0 points at a valid two-entry table at buf. */
static void good_table(struct env *e)
{
	fg_raw_table(&e->g, e->buf, 0, e->buf + 4096, 64, DF_NEXT, 1);
	fg_raw_table(&e->g, e->buf, 1, e->buf + 8192, 64, DF_WRITE, 0);
}

static void bad_indirect_not_negotiated(void)
{
	struct env *e = env_setup(8, F_EVENT_IDX);

	good_table(e);
	fg_raw_desc(&e->fq[0], 0, e->buf, 32, DF_INDIRECT, 0);
	bad_publish(e, 0);
	expect_broken(e, "INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC");
	env_teardown(e);
}

static void bad_indirect_len(void)
{
	static const uint32_t lens[] = {24, 1, 15, 17, 0};

	for (unsigned i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct env *e = env_setup(8, F_INDIRECT);

		good_table(e);
		fg_raw_desc(&e->fq[0], 0, e->buf, lens[i], DF_INDIRECT, 0);
		bad_publish(e, 0);
		expect_broken(e, "is not a non-zero multiple of 16");
		env_teardown(e);
	}
}

static void bad_indirect_nested(void)
{
	struct env *e = env_setup(8, F_INDIRECT);

	good_table(e);
	fg_raw_table(&e->g, e->buf, 1, e->buf, 32, DF_INDIRECT, 0);
	fg_raw_desc(&e->fq[0], 0, e->buf, 32, DF_INDIRECT, 0);
	bad_publish(e, 0);
	expect_broken(e, "nested indirect table");
	env_teardown(e);
}

static void bad_indirect_with_next(void)
{
	struct env *e = env_setup(8, F_INDIRECT);

	good_table(e);
	fg_raw_desc(&e->fq[0], 0, e->buf, 32, DF_INDIRECT | DF_NEXT, 1);
	fg_raw_desc(&e->fq[0], 1, e->buf + 4096, 64, DF_WRITE, 0);
	bad_publish(e, 0);
	expect_broken(e, "both INDIRECT and NEXT");
	env_teardown(e);
}

static void bad_indirect_huge(void)
{
	struct env *e = env_setup(8, F_INDIRECT);
	uint64_t tbl = fg_alloc(&e->g, 16ull * (VQ_MAX_IOV + 1), 16);
	struct vq_chain c = {0};

	/* Exactly VQ_MAX_IOV entries is fine. */
	for (unsigned i = 0; i <= VQ_MAX_IOV; i++)
		fg_raw_table(&e->g, tbl, i, e->buf + i, 1, DF_NEXT, (uint16_t)(i + 1));
	fg_raw_table(&e->g, tbl, VQ_MAX_IOV - 1, e->buf, 1, 0, 0);
	fg_raw_desc(&e->fq[0], 0, tbl, 16 * VQ_MAX_IOV, DF_INDIRECT, 0);
	bad_publish(e, 0);
	CHECK(vq_pop(&e->vq[0], &c, e->iov, VQ_MAX_IOV) == 1 && c.nout == VQ_MAX_IOV);
	/* One more entry is not. */
	fg_raw_desc(&e->fq[0], 1, tbl, 16 * (VQ_MAX_IOV + 1), DF_INDIRECT, 0);
	fg_raw_avail(&e->fq[0], 1, 1);
	fg_raw_avail_idx(&e->fq[0], 2);
	expect_broken(e, "indirect table of 1025 entries exceeds the limit of 1024");
	env_teardown(e);

	/* The largest length a descriptor can carry. */
	e = env_setup(8, F_INDIRECT);
	fg_raw_desc(&e->fq[0], 0, e->buf, 0xfffffff0u, DF_INDIRECT, 0);
	bad_publish(e, 0);
	expect_broken(e, "exceeds the limit");
	env_teardown(e);
}

static void bad_indirect_loop(void)
{
	struct env *e = env_setup(8, F_INDIRECT);

	fg_raw_table(&e->g, e->buf, 0, e->buf + 4096, 64, DF_NEXT, 1);
	fg_raw_table(&e->g, e->buf, 1, e->buf + 8192, 64, DF_NEXT, 0);
	fg_raw_desc(&e->fq[0], 0, e->buf, 32, DF_INDIRECT, 0);
	bad_publish(e, 0);
	expect_broken(e, "indirect chain loops");
	env_teardown(e);
}

static void bad_indirect_next_out_of_range(void)
{
	struct env *e = env_setup(8, F_INDIRECT);

	fg_raw_table(&e->g, e->buf, 0, e->buf + 4096, 64, DF_NEXT, 1);
	fg_raw_table(&e->g, e->buf, 1, e->buf + 8192, 64, DF_NEXT, 2);
	fg_raw_desc(&e->fq[0], 0, e->buf, 32, DF_INDIRECT, 0);
	bad_publish(e, 0);
	expect_broken(e, "descriptor next 2 is past the indirect table of 2 entries");
	env_teardown(e);
}

static void bad_indirect_outside(void)
{
	static const uint64_t addrs[] = {0x1000, RAM_END - 16, RAM_END, UINT64_MAX - 15};

	for (unsigned i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		struct env *e = env_setup(8, F_INDIRECT);

		fg_raw_desc(&e->fq[0], 0, addrs[i], 32, DF_INDIRECT, 0);
		bad_publish(e, 0);
		expect_broken(e, "is outside guest memory");
		CHECK(strstr(th_log_last, "indirect table at") != NULL);
		env_teardown(e);
	}
}

static void bad_avail_jump(void)
{
	struct env *e = env_setup(8, 0);
	struct vq_chain c = {0};

	/* Exactly queue size outstanding is allowed... */
	for (uint16_t i = 0; i < 8; i++) {
		fg_raw_desc(&e->fq[0], i, e->buf + 64 * i, 64, DF_WRITE, 0);
		fg_raw_avail(&e->fq[0], i, i);
	}
	fg_raw_avail_idx(&e->fq[0], 8);
	for (unsigned i = 0; i < 8; i++)
		CHECK(vq_pop(&e->vq[0], &c, e->iov, VQ_MAX_IOV) == 1 && c.head == i);
	CHECK(vq_pop(&e->vq[0], &c, e->iov, VQ_MAX_IOV) == 0);
	/* ...one more than that is not. */
	fg_raw_avail_idx(&e->fq[0], 8 + 8 + 1);
	expect_broken(e, "avail idx 17 is 9 ahead of 8, more than the queue size 8");
	env_teardown(e);

	/* From a fresh queue; found by vq_avail_count as well as by vq_pop. */
	e = env_setup(8, 0);
	fg_raw_avail_idx(&e->fq[0], 9);
	CHECK(vq_avail_count(&e->vq[0]) == 0 && vq_is_broken(&e->vq[0]));
	CHECK(th_log_errors == 1 && strstr(th_log_last, "more than the queue size"));
	bystander_roundtrip(e);
	env_teardown(e);
}

static void bad_avail_backwards(void)
{
	struct env *e = env_setup(8, 0);
	struct vq_chain c = {0};

	fg_raw_desc(&e->fq[0], 0, e->buf, 64, DF_WRITE, 0);
	bad_publish(e, 0);
	CHECK(vq_pop(&e->vq[0], &c, e->iov, VQ_MAX_IOV) == 1);
	CHECK(vq_pop(&e->vq[0], &c, e->iov, VQ_MAX_IOV) == 0);
	fg_raw_avail_idx(&e->fq[0], 0); /* 0 - 1 = 65535 chains ahead */
	expect_broken(e, "avail idx 0 is 65535 ahead of 1, more than the queue size");
	env_teardown(e);
}

static void bad_addr_partly_outside(void)
{
	static const uint32_t flags[] = {0, DF_WRITE};

	for (unsigned i = 0; i < 2; i++) {
		struct env *e = env_setup(8, 0);

		fg_raw_desc(&e->fq[0], 0, RAM_END - 8, 16, (uint16_t)flags[i], 0);
		bad_publish(e, 0);
		expect_broken(e, "+16 is outside guest memory");
		env_teardown(e);
	}
}

static void bad_addr_outside(void)
{
	static const uint64_t addrs[] = {0, 0x1000, FG_GPA_BASE - 16, RAM_END,
					 RAM_END + (1ull << 40)};

	for (unsigned i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		struct env *e = env_setup(8, 0);

		/* The second descriptor of a chain, so the first was already mapped. */
		fg_raw_desc(&e->fq[0], 0, e->buf, 64, DF_NEXT, 1);
		fg_raw_desc(&e->fq[0], 1, addrs[i], 16, DF_WRITE, 0);
		bad_publish(e, 0);
		expect_broken(e, "is outside guest memory (or not writable)");
		env_teardown(e);
	}
}

static void bad_write_to_readonly(void)
{
	struct env *e = env_setup(8, 0);
	struct vq_chain c = {0};

	REQUIRE(gmem_add_host(&e->g.gm, RO_GPA, sizeof(ro_ram), 0x7f3000000000ull, ro_ram,
			      GMEM_READ) == 0);
	fg_raw_desc(&e->fq[0], 0, RO_GPA, 64, 0, 0);
	fg_raw_desc(&e->fq[0], 1, RO_GPA, 64, DF_WRITE, 0);
	fg_raw_avail(&e->fq[0], 0, 0);
	fg_raw_avail(&e->fq[0], 1, 1);
	fg_raw_avail_idx(&e->fq[0], 2);
	CHECK(vq_pop(&e->vq[0], &c, e->iov, VQ_MAX_IOV) == 1 && c.nout == 1);
	expect_broken(e, "or not writable");
	env_teardown(e);
}

static void bad_zero_len(void)
{
	struct env *e = env_setup(8, 0);

	fg_raw_desc(&e->fq[0], 0, e->buf, 64, DF_NEXT, 1);
	fg_raw_desc(&e->fq[0], 1, e->buf + 64, 0, DF_WRITE, 0);
	bad_publish(e, 0);
	expect_broken(e, "zero-length descriptor");
	env_teardown(e);

	e = env_setup(8, F_INDIRECT);
	fg_raw_table(&e->g, e->buf, 0, e->buf + 4096, 0, 0, 0);
	fg_raw_desc(&e->fq[0], 0, e->buf, 16, DF_INDIRECT, 0);
	bad_publish(e, 0);
	expect_broken(e, "zero-length descriptor");
	env_teardown(e);
}

static void bad_addr_wrap(void)
{
	static const uint64_t addrs[] = {UINT64_MAX - 7, UINT64_MAX, UINT64_MAX - 0xfff};
	static const uint32_t lens[] = {16, 2, 0x2000};

	for (unsigned i = 0; i < 3; i++) {
		struct env *e = env_setup(8, 0);

		fg_raw_desc(&e->fq[0], 0, addrs[i], lens[i], 0, 0);
		bad_publish(e, 0);
		expect_broken(e, "is outside guest memory");
		env_teardown(e);
	}
}

static void bad_chain_bytes(void)
{
	struct env *e = env_setup(8, 0);
	struct vq_chain c = {0};

	e->vq[0].max_chain_bytes = 4096;
	/* 4000 + 96 is exactly the cap: fine. */
	fg_raw_desc(&e->fq[0], 0, e->buf, 4000, DF_NEXT, 1);
	fg_raw_desc(&e->fq[0], 1, e->buf + 8192, 96, DF_WRITE, 0);
	/* 4000 + 4000 is not. */
	fg_raw_desc(&e->fq[0], 2, e->buf, 4000, DF_NEXT, 3);
	fg_raw_desc(&e->fq[0], 3, e->buf + 8192, 4000, DF_WRITE, 0);
	fg_raw_avail(&e->fq[0], 0, 0);
	fg_raw_avail(&e->fq[0], 1, 2);
	fg_raw_avail_idx(&e->fq[0], 2);
	CHECK(vq_pop(&e->vq[0], &c, e->iov, VQ_MAX_IOV) == 1 && c.out_len + c.in_len == 4096);
	expect_broken(e, "chain longer than 4096 bytes");
	env_teardown(e);

	/* The default cap (1 MiB) holds against a single huge descriptor, even inside RAM. */
	e = env_setup(8, 0);
	fg_raw_desc(&e->fq[0], 0, FG_GPA_BASE, VQ_DEFAULT_MAX_CHAIN_BYTES + 1, 0, 0);
	bad_publish(e, 0);
	expect_broken(e, "chain longer than 1048576 bytes");
	env_teardown(e);
}

static void bad_too_many_segments(void)
{
	struct env *e = env_setup(2048, 0);
	struct fg_vq *q = &e->fq[0];
	struct vq_chain c = {0};

	/* VQ_MAX_IOV one-byte descriptors: the most a chain may map to. */
	for (uint16_t i = 0; i < VQ_MAX_IOV; i++)
		fg_raw_desc(q, i, e->buf + i, 1, i + 1 < VQ_MAX_IOV ? DF_NEXT : 0, i + 1);
	bad_publish(e, 0);
	CHECK(vq_pop(&e->vq[0], &c, e->iov, VQ_MAX_IOV) == 1);
	CHECK(c.ndesc == VQ_MAX_IOV && c.nout == VQ_MAX_IOV && c.out_len == VQ_MAX_IOV);
	CHECK(e->iov[VQ_MAX_IOV - 1].iov_len == 1);
	/* One more is a guest fault, once the caller offers the full VQ_MAX_IOV. */
	for (uint16_t i = 0; i <= VQ_MAX_IOV; i++)
		fg_raw_desc(q, i, e->buf + i, 1, i < VQ_MAX_IOV ? DF_NEXT : 0, i + 1);
	fg_raw_avail(q, 1, 0);
	fg_raw_avail_idx(q, 2);
	CHECK(vq_pop(&e->vq[0], &c, e->iov, 16) == -ENOBUFS);
	CHECK(!vq_is_broken(&e->vq[0]) && th_log_errors == 0 && e->vq[0].last_avail == 1);
	expect_broken(e, "chain maps to more than 1024 segments");
	env_teardown(e);
}

/* Copy-once: rewriting a popped chain's descriptor and avail slot changes nothing popped. */
static void test_copy_once(void)
{
	struct env *e = env_setup(8, 0);
	struct fg_buf b[2] = {
	    {.gpa = e->buf, .len = 300, .write = false},
	    {.gpa = e->buf + 4096, .len = 500, .write = true},
	};
	struct fg_vq *q = &e->fq[0];
	struct vq *vq = &e->vq[0];
	struct vq_chain c = {0}, saved;
	struct iovec saved_iov[2];
	int head;

	fill(e, b[0].gpa, b[0].len, 0x33);
	head = fg_add(q, b, 2, false);
	fg_publish(q, false);
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 1 && c.head == head);
	saved = c;
	memcpy(saved_iov, e->iov, sizeof(saved_iov));
	/* The guest turns the chain malicious after the device took it. */
	fg_raw_desc(q, (uint16_t)head, UINT64_MAX - 7, 0, DF_INDIRECT | DF_NEXT, 0xffff);
	fg_raw_desc(q, (uint16_t)(head + 1), 0x1000, 0xffffffffu, DF_NEXT, (uint16_t)head);
	fg_raw_avail(q, 0, 0xffff);
	CHECK(memcmp(&saved, &c, sizeof(c)) == 0);
	CHECK(memcmp(saved_iov, e->iov, sizeof(saved_iov)) == 0);
	CHECK(c.out_len == 300 && c.in_len == 500 && c.nout == 1 && c.nin == 1);
	CHECK(iov_has_pattern(e->iov, 1, 0x33));
	memset(e->iov[1].iov_base, 0xee, e->iov[1].iov_len);
	CHECK(((uint8_t *)fg_va(&e->g, b[1].gpa))[499] == 0xee);
	vq_push(vq, c.head, 500);
	CHECK(vq_notify(vq));
	CHECK(vq_pop(vq, &c, e->iov, VQ_MAX_IOV) == 0);
	CHECK(!vq_is_broken(vq) && th_log_errors == 0);
	/* Published; not consumed, as fg_used would follow the now bogus next links. */
	CHECK(fg_used_pending(q) == 1);
	env_teardown(e);
}

int main(void)
{
	/* A. functional */
	test_simple_chain();
	test_indirect();
	test_batching();
	test_discard();
	test_notify_flags();
	test_event_idx();
	test_index_wrap();
	test_set_base_stop();
	test_setup_checks();
	test_cross_region();
	test_iov_copy();
	test_copy_once();
	/* B. one guest fault per rule */
	bad_head_out_of_range();
	bad_next_out_of_range();
	bad_desc_loop();
	bad_read_after_write();
	bad_indirect_not_negotiated();
	bad_indirect_len();
	bad_indirect_nested();
	bad_indirect_with_next();
	bad_indirect_huge();
	bad_indirect_loop();
	bad_indirect_next_out_of_range();
	bad_indirect_outside();
	bad_avail_jump();
	bad_avail_backwards();
	bad_addr_partly_outside();
	bad_addr_outside();
	bad_write_to_readonly();
	bad_zero_len();
	bad_addr_wrap();
	bad_chain_bytes();
	bad_too_many_segments();
	vt_log_set_sink(NULL, NULL);
	return th_done("vq");
}
