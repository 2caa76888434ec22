// SPDX-License-Identifier: MIT
/*
 * SIGBUS guard (gmem_guard.h). The table is written by control threads under a mutex and read by
 * the signal handler without one: each slot is a seqlock (odd sequence while a writer changes
 * it), so the handler either sees a whole slot or skips it. Removal waits until no handler is
 * between its lookup and its patch, so a patch can never land on an address that has been
 * unmapped and reused. The handler uses only atomics, the raw mmap system call and write(2),
 * all async-signal-safe; it must never take a lock, allocate or log.
 */
#include <errno.h>
#include <linux/magic.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "virtap/gmem_guard.h"

struct guard_slot {
	unsigned seq;	      /* seqlock: odd while a writer changes the slot */
	uintptr_t start, end; /* [start, end), whole granules; start 0: free */
	uintptr_t granule;    /* patches are aligned to it (a huge page on hugetlbfs) */
	struct gmem_guard_owner *owner;
};

static struct guard_slot slots[GMEM_GUARD_MAX];
static unsigned high;	/* slots below this may be in use */
static unsigned hint;	/* no free slot below this (writers only, under lock) */
static unsigned active; /* handlers between their lookup and their patch */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* writers */
static struct sigaction prev;				 /* the SIGBUS action before ours */
static bool installed;

void gmem_guard_owner_init(struct gmem_guard_owner *o, int wake_fd)
{
	o->wake_fd = wake_fd;
	__atomic_store_n(&o->first_addr, NULL, __ATOMIC_RELAXED);
	__atomic_store_n(&o->faults, 0, __ATOMIC_RELEASE);
}

unsigned gmem_guard_take(struct gmem_guard_owner *o, void **first_addr)
{
	/* Acquire pairs with the handler's release increment, which follows its first_addr CAS. */
	unsigned n = __atomic_exchange_n(&o->faults, 0, __ATOMIC_ACQUIRE);

	*first_addr = n ? __atomic_exchange_n(&o->first_addr, NULL, __ATOMIC_RELAXED) : NULL;
	return n;
}

static void slot_write(struct guard_slot *s, uintptr_t start, uintptr_t end, uintptr_t granule,
		       struct gmem_guard_owner *owner)
{
	unsigned q = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);

	__atomic_store_n(&s->seq, q + 1, __ATOMIC_RELAXED);
	/* Release fence: the odd sequence is visible before any field changes (pairs with the
	 * handler's acquire fence before it reads the sequence again). */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n(&s->start, start, __ATOMIC_RELAXED);
	__atomic_store_n(&s->end, end, __ATOMIC_RELAXED);
	__atomic_store_n(&s->granule, granule, __ATOMIC_RELAXED);
	__atomic_store_n(&s->owner, owner, __ATOMIC_RELAXED);
	/* Release: the fields are visible before the even sequence (pairs with the handler's
	 * acquire load of the sequence). */
	__atomic_store_n(&s->seq, q + 2, __ATOMIC_RELEASE);
}

int gmem_guard_add(void *base, size_t len, int fd, struct gmem_guard_owner *owner)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), granule = page, start, end;
	struct statfs sf;
	struct stat st;
	unsigned i, n;

	if (!base || !len)
		return -EINVAL;
	/* hugetlbfs mappings can only be split at huge page boundaries; its st_blksize is the
	 * huge page size. */
	if (fd >= 0 && fstatfs(fd, &sf) == 0 && sf.f_type == HUGETLBFS_MAGIC &&
	    fstat(fd, &st) == 0 && (uintptr_t)st.st_blksize > page &&
	    !((uintptr_t)st.st_blksize & ((uintptr_t)st.st_blksize - 1)))
		granule = (uintptr_t)st.st_blksize;
	start = (uintptr_t)base;
	end = (start + len + granule - 1) & ~(granule - 1); /* the mapping covers whole granules */
	pthread_mutex_lock(&lock);
	n = __atomic_load_n(&high, __ATOMIC_RELAXED);
	for (i = hint; i < n && __atomic_load_n(&slots[i].start, __ATOMIC_RELAXED); i++)
		;
	if (i == GMEM_GUARD_MAX) {
		pthread_mutex_unlock(&lock);
		return -ENOSPC;
	}
	slot_write(&slots[i], start, end, granule, owner);
	hint = i + 1;
	if (i == n) /* release: the slot is complete before the handler scans that far */
		__atomic_store_n(&high, n + 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&lock);
	return 0;
}

void gmem_guard_remove(void *base)
{
	unsigned n;

	if (!base)
		return;
	pthread_mutex_lock(&lock);
	n = __atomic_load_n(&high, __ATOMIC_RELAXED);
	for (unsigned i = 0; i < n; i++) {
		if (__atomic_load_n(&slots[i].start, __ATOMIC_RELAXED) == (uintptr_t)base) {
			slot_write(&slots[i], 0, 0, 0, NULL);
			if (i < hint)
				hint = i;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
	/* Full fence: the cleared slot is visible before we read `active` (pairs with the
	 * handler's seq_cst increment before its lookup); a handler that found the slot before
	 * it was cleared is counted, and we wait for it to finish its patch. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	while (__atomic_load_n(&active, __ATOMIC_SEQ_CST))
		sched_yield();
}

/* In the handler: patch the guarded mapping that holds the faulting address. False if none does. */
static bool patch(void *fault)
{
	uintptr_t addr = (uintptr_t)fault;
	unsigned n = __atomic_load_n(&high, __ATOMIC_ACQUIRE);

	for (unsigned i = 0; i < n; i++) {
		struct guard_slot *s = &slots[i];
		unsigned q = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
		uintptr_t start = __atomic_load_n(&s->start, __ATOMIC_RELAXED);
		uintptr_t end = __atomic_load_n(&s->end, __ATOMIC_RELAXED);
		uintptr_t granule = __atomic_load_n(&s->granule, __ATOMIC_RELAXED);
		struct gmem_guard_owner *o = __atomic_load_n(&s->owner, __ATOMIC_RELAXED);
		uintptr_t from;
		uint64_t one = 1;
		long r;

		/* Acquire fence: the fields are read before the sequence is checked again (pairs
		 * with slot_write's release fence). */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if ((q & 1) || __atomic_load_n(&s->seq, __ATOMIC_RELAXED) != q || !start ||
		    addr < start || addr >= end)
			continue;
		/* Everything from the faulting granule to the end of the mapping: a file shrinks
		 * from its end, so the rest of the mapping lies past it too. Zero memory of our own
		 * lets the access (and the ones after it) complete; the owner is told the device
		 * is broken. The raw system call: a sanitizer's mmap interceptor is not meant to
		 * run in a signal handler. */
		from = addr & ~(granule - 1);
		if (from < start)
			from = start;
		r = syscall(SYS_mmap, from, end - from, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
		if (r == -1)
			return false;
		if (o) {
			void *none = NULL;

			__atomic_compare_exchange_n(&o->first_addr, &none, fault, false,
						    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
			/* Release: first_addr is set before the count (gmem_guard_take). */
			__atomic_fetch_add(&o->faults, 1, __ATOMIC_RELEASE);
			if (o->wake_fd >= 0 && write(o->wake_fd, &one, sizeof(one)) < 0) {
				/* The count is what matters; the eventfd is only a wake-up. */
			}
		}
		return true;
	}
	return false;
}

/* A SIGBUS that is not ours: whoever handled it before, or death by it as before. */
static void forward(int sig, siginfo_t *si, void *uc)
{
	struct sigaction dfl;

	if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction) {
		prev.sa_sigaction(sig, si, uc);
		return;
	}
	if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler != SIG_DFL &&
	    prev.sa_handler != SIG_IGN) {
		prev.sa_handler(sig);
		return;
	}
	if (prev.sa_handler == SIG_IGN && si->si_code <= 0)
		return; /* sent with kill(2) and ignored before: still ignored */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	sigaction(SIGBUS, &dfl, NULL);
	/* A fault re-executes the access on return and dies of it with the original siginfo; a
	 * signal someone sent is raised again (pending until this handler returns). */
	if (si->si_code <= 0)
		raise(sig);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	bool ours;

	/* seq_cst: counted before the lookup (pairs with gmem_guard_remove's fence). */
	__atomic_fetch_add(&active, 1, __ATOMIC_SEQ_CST);
	/* si_code > 0: raised by the kernel for an access (BUS_ADRERR...), si_addr is valid.
	 * (SA_SIGINFO: the kernel always passes si.) */
	ours = si->si_code > 0 && patch(si->si_addr);
	__atomic_fetch_sub(&active, 1, __ATOMIC_SEQ_CST);
	errno = saved;
	if (!ours)
		forward(sig, si, uc);
}

int gmem_guard_install(void)
{
	struct sigaction sa, cur;
	int err = 0;

	pthread_mutex_lock(&lock);
	if (installed)
		goto out;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	/* ONSTACK: a sanitizer's alternate signal stack, if the thread has one. */
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &prev) < 0) {
		err = -errno;
		goto out;
	}
	/* A sanitizer may keep SIGBUS to itself and ignore ours (allow_user_segv_handler=0). */
	if (sigaction(SIGBUS, NULL, &cur) < 0 || !(cur.sa_flags & SA_SIGINFO) ||
	    cur.sa_sigaction != on_sigbus) {
		err = -EBUSY;
		goto out;
	}
	installed = true;
out:
	pthread_mutex_unlock(&lock);
	return err;
}
