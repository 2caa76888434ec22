// SPDX-License-Identifier: MIT
/*
 * Peer fd I/O (src/base/pfd.c): a frontend shares the open file description of every eventfd it
 * passes, so it can make one blocking and preload it. A registered thread's write to a blocking
 * eventfd at its maximum count, and its read of a blocking empty one, must come back with
 * -ETIMEDOUT within a few watchdog ticks instead of sleeping for ever; a call that does not
 * sleep must never be interrupted (many guarded calls under a busy watchdog all succeed), and
 * other file kinds are not taken for eventfds.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "netns.h"
#include "virtap/pfd.h"

#define FULL 0xfffffffffffffffeull /* the most an eventfd counter holds */

struct job {
	int fd;
	bool wr;
	int result;
	long long ms;
	bool done; /* atomic */
};

static void *run_job(void *arg)
{
	struct job *j = arg;
	long long t0;
	uint64_t v = 1;

	REQUIRE(pfd_thread_enter("test-pfd") == 1);
	t0 = th_now_ms();
	j->result = j->wr ? pfd_write_u64(j->fd, v) : pfd_read_u64(j->fd, &v);
	j->ms = th_now_ms() - t0;
	pfd_thread_leave();
	__atomic_store_n(&j->done, true, __ATOMIC_RELEASE);
	return NULL;
}

/* Run one guarded call on a thread of its own; if it is still blocked after 3 s, unblock it
 * by hand (so that a failing test still ends) and fail. */
static void blocked_call(int fd, bool wr, const char *what)
{
	struct job j = {.fd = fd, .wr = wr, .result = 1};
	long long end = th_now_ms() + 3000;
	pthread_t t;
	uint64_t v = 1;

	REQUIRE(pthread_create(&t, NULL, run_job, &j) == 0);
	while (!__atomic_load_n(&j.done, __ATOMIC_ACQUIRE) && th_now_ms() < end)
		usleep(1000);
	if (!__atomic_load_n(&j.done, __ATOMIC_ACQUIRE)) {
		fprintf(stderr, "%s: still blocked after 3 s\n", what);
		CHECK(false);
		if (wr)
			CHECK(read(fd, &v, sizeof(v)) == sizeof(v));
		else
			CHECK(write(fd, &v, sizeof(v)) == sizeof(v));
	}
	pthread_join(t, NULL);
	printf("%s: %d after %lld ms\n", what, j.result, j.ms);
	CHECK(j.result == -ETIMEDOUT);
	CHECK(j.ms <= 10 * PFD_TICK_MS);
}

static void test_blocking_write(void)
{
	int fd = eventfd(0, EFD_CLOEXEC); /* blocking, as a hostile frontend leaves it */
	uint64_t v = FULL;

	REQUIRE(fd >= 0 && write(fd, &v, sizeof(v)) == sizeof(v));
	blocked_call(fd, true, "write to a full blocking eventfd");
	close(fd);
}

static void test_blocking_read(void)
{
	int fd = eventfd(0, EFD_CLOEXEC);

	REQUIRE(fd >= 0);
	blocked_call(fd, false, "read of an empty blocking eventfd");
	close(fd);
}

/* What does not sleep is never cut short: 200000 calls while the watchdog ticks. */
static void test_no_false_alarm(void)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	unsigned bad = 0;
	uint64_t v;

	REQUIRE(fd >= 0 && pfd_thread_enter("test-main") == 1);
	CHECK(pfd_thread_enter("test-main") == 0); /* once is enough */
	for (unsigned i = 0; i < 100000; i++) {
		bad += pfd_write_u64(fd, 1) != 0;
		bad += pfd_read_u64(fd, &v) != 0 || v != 1;
	}
	CHECK(bad == 0);
	/* Non-blocking at the limits: -EAGAIN, never a timeout. */
	v = FULL;
	REQUIRE(write(fd, &v, sizeof(v)) == sizeof(v));
	CHECK(pfd_write_u64(fd, 1) == -EAGAIN);
	CHECK(pfd_read_u64(fd, &v) == 0 && v == FULL);
	CHECK(pfd_read_u64(fd, &v) == -EAGAIN);
	pfd_thread_leave();
	close(fd);
}

static void test_kinds(void)
{
	int p[2], e = eventfd(0, 0), ep = epoll_create1(0);

	REQUIRE(pipe(p) == 0 && e >= 0 && ep >= 0);
	CHECK(pfd_is_eventfd(e));
	CHECK(!pfd_is_eventfd(p[0]) && !pfd_is_eventfd(p[1]) && !pfd_is_eventfd(ep));
	CHECK(!pfd_is_eventfd(-1));
	close(p[0]);
	close(p[1]);
	close(e);
	close(ep);
}

int main(void)
{
	test_blocking_write();
	test_blocking_read();
	test_no_false_alarm();
	test_kinds();
	return th_done("pfd");
}
