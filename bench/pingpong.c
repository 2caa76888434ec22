// SPDX-License-Identifier: MIT
/*
 * vt_pingpong: how far apart two CPUs are. Two threads, pinned to CPU A and CPU B, bounce one
 * cache line: A writes an odd count and spins until B has answered with the next even one. The
 * time per round trip is two cache-line transfers between the cores. On this project's 2-vCPU
 * machines it comes out near 30 ns ("near": the vCPUs share a cache) or near 160 ns ("far"),
 * and vhost-user throughput follows it by up to 3x, so every benchmark run records it.
 *
 * Prints one line starting with the median time of several batches, in ns per round trip.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

#define MAX_BATCHES 32

struct shared {
	_Alignas(64) atomic_ulong ball;
	_Alignas(64) unsigned long rounds;
	unsigned batches;
	int cpu_a, cpu_b;
	pthread_barrier_t start;
	double ns[MAX_BATCHES];
};

/* B: answer every odd value with the next even one. */
static void *side_b(void *arg)
{
	struct shared *s = arg;
	unsigned long total = s->rounds * s->batches, v = 1;

	if (pin_thread(s->cpu_b)) {
		fprintf(stderr, "vt_pingpong: cannot pin to CPU %d\n", s->cpu_b);
		exit(1);
	}
	pthread_barrier_wait(&s->start);
	for (unsigned long i = 0; i < total; i++, v += 2) {
		while (atomic_load_explicit(&s->ball, memory_order_acquire) != v)
			;
		atomic_store_explicit(&s->ball, v + 1, memory_order_release);
	}
	return NULL;
}

/* A: serve, wait for the return, time each batch. */
static void side_a(struct shared *s)
{
	unsigned long v = 1;

	pthread_barrier_wait(&s->start);
	for (unsigned b = 0; b < s->batches; b++) {
		long long t0 = now_ns();

		for (unsigned long i = 0; i < s->rounds; i++, v += 2) {
			atomic_store_explicit(&s->ball, v, memory_order_release);
			while (atomic_load_explicit(&s->ball, memory_order_acquire) != v + 1)
				;
		}
		s->ns[b] = (double)(now_ns() - t0) / (double)s->rounds;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vt_pingpong [--rounds N] [--batches N] [--cpus A,B]\n"
		"\n"
		"Bounces a cache line between a thread on CPU A and one on CPU B and prints the\n"
		"median over the batches of the time per round trip, in ns, first on its line.\n"
		"\n"
		"  --rounds N    round trips per batch (default 100000)\n"
		"  --batches N   batches, 1..32 (default 7)\n"
		"  --cpus A,B    the two CPUs (default 0,1)\n");
}

int main(int argc, char **argv)
{
	static struct shared s = {.rounds = 100000, .batches = 7, .cpu_a = 0, .cpu_b = 1};
	double sorted[MAX_BATCHES];
	pthread_t tb;
	int err;

	/* Every option takes a value: step over both. */
	for (int i = 1; i < argc; i += 2) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end = NULL;

		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--rounds") && v) {
			s.rounds = strtoul(v, &end, 10);
			if (*end || !s.rounds)
				goto bad;
		} else if (!strcmp(argv[i], "--batches") && v) {
			s.batches = (unsigned)strtoul(v, &end, 10);
			if (*end || !s.batches || s.batches > MAX_BATCHES)
				goto bad;
		} else if (!strcmp(argv[i], "--cpus") && v) {
			if (sscanf(v, "%d,%d", &s.cpu_a, &s.cpu_b) != 2 || s.cpu_a < 0 ||
			    s.cpu_b < 0 || s.cpu_a >= CPU_SETSIZE || s.cpu_b >= CPU_SETSIZE)
				goto bad;
		} else {
			goto bad;
		}
	}
	if (pin_thread(s.cpu_a)) {
		fprintf(stderr, "vt_pingpong: cannot pin to CPU %d\n", s.cpu_a);
		return 1;
	}
	pthread_barrier_init(&s.start, NULL, 2);
	err = pthread_create(&tb, NULL, side_b, &s);
	if (err) {
		fprintf(stderr, "vt_pingpong: pthread_create: %s\n", strerror(err));
		return 1;
	}
	side_a(&s);
	pthread_join(tb, NULL);
	memcpy(sorted, s.ns, s.batches * sizeof(sorted[0]));
	qsort(sorted, s.batches, sizeof(sorted[0]), cmp_double);
	printf("%.1f ns per round trip between CPU %d and CPU %d (median of %u batches of %lu; "
	       "min %.1f, max %.1f)\n",
	       sorted[s.batches / 2], s.cpu_a, s.cpu_b, s.batches, s.rounds, sorted[0],
	       sorted[s.batches - 1]);
	return 0;
bad:
	usage(stderr);
	return 2;
}
