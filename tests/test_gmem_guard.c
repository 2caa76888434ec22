// SPDX-License-Identifier: MIT
/*
 * The SIGBUS guard (src/virtio/gmem_guard.c), in-process: a guarded mapping of a file that
 * shrinks under it reads zeros past the new end instead of killing us, its owner is counted and
 * woken, and the part still inside the file is untouched; an unguarded one, a removed one and a
 * SIGBUS sent with kill(2) still kill the process (checked in children), so the guard takes no
 * fault that is not its own. Also through gmem_add_fd / gmem_log_map, and a full table.
 *
 * Under ASan the guard replaces ASan's SIGBUS handler (ASan's allow_user_segv_handler is on by
 * default) and hands it every fault that is not ours: a child killed by an unguarded fault then
 * exits through ASan's report (exit code 1) rather than by the signal; both count as "died".
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "netns.h"
#include "virtap/gmem.h"
#include "virtap/gmem_guard.h"

#define PAGE 4096u

/* A file that cannot be sealed, as a frontend may hand us (tmpfs file, plain memfd). */
static int plain_file(size_t size, uint8_t fill)
{
	int fd = memfd_create("guard-test", MFD_CLOEXEC); /* no MFD_ALLOW_SEALING */
	uint8_t *p;

	REQUIRE(fd >= 0 && ftruncate(fd, (off_t)size) == 0);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	REQUIRE(p != MAP_FAILED);
	memset(p, fill, size);
	munmap(p, size);
	return fd;
}

/* Run fn in a child; true if the child died of it (signal, or a sanitizer's report). */
static bool child_dies(void (*fn)(void))
{
	pid_t pid;
	int st;

	fflush(NULL);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		fn();
		_exit(0);
	}
	REQUIRE(waitpid(pid, &st, 0) == pid);
	if (WIFSIGNALED(st))
		return WTERMSIG(st) == SIGBUS;
	return WIFEXITED(st) && WEXITSTATUS(st) != 0;
}

static volatile uint8_t sink;

static void touch_unguarded(void)
{
	int fd = plain_file(4 * PAGE, 1);
	volatile uint8_t *m = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (m == MAP_FAILED || ftruncate(fd, PAGE) < 0)
		_exit(0); /* "survived": fails the check */
	sink = m[2 * PAGE];
}

static void touch_removed(void)
{
	int fd = plain_file(4 * PAGE, 1);
	volatile uint8_t *m = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (m == MAP_FAILED || gmem_guard_add((void *)m, 4 * PAGE, fd, NULL) ||
	    ftruncate(fd, PAGE) < 0)
		_exit(0);
	gmem_guard_remove((void *)m);
	sink = m[3 * PAGE];
}

static void send_sigbus(void)
{
	kill(getpid(), SIGBUS);
}

static void test_patch(void)
{
	struct gmem_guard_owner o;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), fd = plain_file(8 * PAGE, 0xab);
	volatile uint8_t *m = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	void *at = (void *)&o;
	uint64_t n = 0;
	bool same = true;

	REQUIRE(efd >= 0 && m != MAP_FAILED);
	gmem_guard_owner_init(&o, efd);
	CHECK(gmem_guard_add((void *)m, 8 * PAGE, fd, &o) == 0);
	CHECK(gmem_guard_take(&o, &at) == 0 && at == NULL);
	REQUIRE(ftruncate(fd, 3 * PAGE + 100) == 0); /* pages 0-3 stay, 4-7 are gone */
	/* A read past the end: zeros, not a dead process; then writes there stick (our memory). */
	CHECK(m[5 * PAGE + 7] == 0);
	m[6 * PAGE] = 0x5a;
	CHECK(m[6 * PAGE] == 0x5a);
	CHECK(m[7 * PAGE + PAGE - 1] == 0);
	/* One patch covered the rest of the mapping: the first fault is the only one. */
	CHECK(gmem_guard_take(&o, &at) == 1);
	CHECK(at == &m[5 * PAGE + 7]);
	CHECK(read(efd, &n, sizeof(n)) == sizeof(n) && n == 1);
	CHECK(gmem_guard_take(&o, &at) == 0);
	/* The part still inside the file is still the file. */
	for (unsigned i = 0; i < 3 * PAGE + 100; i++)
		same &= m[i] == 0xab;
	CHECK(same);
	/* The page below the patch, partly past the end, faults on its own. */
	CHECK(m[4 * PAGE] == 0);
	CHECK(gmem_guard_take(&o, &at) == 1 && at == &m[4 * PAGE]);
	gmem_guard_remove((void *)m);
	munmap((void *)m, 8 * PAGE);
	close(fd);
	close(efd);
}

static void test_gmem_paths(void)
{
	struct gmem_guard_owner o;
	struct gmem gm;
	struct gmem_log log = {0};
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), fd = plain_file(16 * PAGE, 0x11);
	int lfd = plain_file(2 * PAGE, 0);
	volatile uint8_t *p;
	void *at;

	REQUIRE(efd >= 0);
	gmem_guard_owner_init(&o, efd);
	gmem_init(&gm);
	gm.owner = &o;
	REQUIRE(gmem_add_fd(&gm, 0x100000, 16 * PAGE, 0x7000000000, dup(fd), 0) == 0);
	p = gmem_ptr(&gm, 0x100000 + 12 * PAGE, 8, GMEM_READ);
	REQUIRE(p);
	REQUIRE(ftruncate(fd, 8 * PAGE) == 0);
	CHECK(p[0] == 0);
	CHECK(gmem_guard_take(&o, &at) == 1 && at == p);
	gmem_clear(&gm); /* unguards, unmaps and closes its fd */
	close(fd);

	log.owner = &o;
	REQUIRE(gmem_log_map(&log, dup(lfd), 2 * PAGE, 0) == 0); /* takes the fd it maps */
	REQUIRE(ftruncate(lfd, 0) == 0);
	gmem_log_mark(&log, 0, 4096); /* bit 0 of byte 0: past the end now */
	CHECK(gmem_guard_take(&o, &at) == 1 && at == log.bits);
	gmem_log_unmap(&log);
	CHECK(log.owner == &o);
	close(lfd);
	close(efd);
}

static void test_full(void)
{
	uintptr_t base = 0x10000000;
	int err = 0;

	for (unsigned i = 0; i < GMEM_GUARD_MAX && !err; i++)
		err = gmem_guard_add((void *)(base + (uintptr_t)i * PAGE), PAGE, -1, NULL);
	/* The earlier tests removed theirs: every slot is ours. */
	CHECK(err == 0);
	CHECK(gmem_guard_add((void *)(base - PAGE), PAGE, -1, NULL) == -ENOSPC);
	gmem_guard_remove((void *)(base + 77 * PAGE));
	CHECK(gmem_guard_add((void *)(base - PAGE), PAGE, -1, NULL) == 0);
	gmem_guard_remove((void *)(base - PAGE));
	for (unsigned i = 0; i < GMEM_GUARD_MAX; i++)
		gmem_guard_remove((void *)(base + (uintptr_t)i * PAGE));
	CHECK(gmem_guard_add((void *)base, PAGE, -1, NULL) == 0);
	gmem_guard_remove((void *)base);
}

int main(void)
{
	CHECK(gmem_guard_install() == 0);
	CHECK(gmem_guard_install() == 0); /* idempotent */
	test_patch();
	test_gmem_paths();
	test_full();
	/* Not ours: still fatal. */
	CHECK(child_dies(touch_unguarded));
	CHECK(child_dies(touch_removed));
	CHECK(child_dies(send_sigbus));
	return th_done("gmem_guard");
}
