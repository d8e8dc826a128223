/*
 * shortlived: exits by itself MS milliseconds after READY, while its threads
 * exit one by one before that, so that a dump races with thread and process
 * exit. Before it exits it checks its identity, so that a process restored
 * from an image that won the race proves it is the one that was dumped.
 *
 *   shortlived TRIGGER MS
 */
#include "common.h"

#include <pthread.h>

#define NTHREADS 4

static volatile uint64_t spins[NTHREADS];

static void *run(void *arg)
{
	long ms = (long)(intptr_t)arg;
	struct timespec end, now;
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_nsec += ms * 1000000L;
	end.tv_sec += end.tv_nsec / 1000000000L;
	end.tv_nsec %= 1000000000L;
	int i = (int)(ms % NTHREADS);
	do {
		spins[i]++;
		if (spins[i] % 4096 == 0)
			msleep(1);
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (now.tv_sec < end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec < end.tv_nsec));
	return NULL;
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	long ms = argc > 2 ? atol(argv[2]) : 10;
	uint64_t seed = (uint64_t)getpid() * 2654435761u;
	for (int i = 0; i < NTHREADS; i++) {
		pthread_t t;
		long life = ms > 0 ? (long)(xorshift64(&seed) % (uint64_t)ms) : 0;
		if (pthread_create(&t, NULL, run, (void *)(intptr_t)life))
			die("pthread_create");
		pthread_detach(t);
	}
	ready();
	msleep(ms);
	out("VERIFY pid=%d\n", getpid());
	check_identity();
	out("EXIT\n");
	exit(finish());
}
