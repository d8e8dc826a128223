/*
 * counter: the simplest workload. A counter goes up by one every ~10 ms and is
 * printed as "count N" every 10 steps (~100 ms). The count depends on loop
 * iterations, not on wall-clock time, so across a checkpoint the printed
 * sequence must go on exactly +10 per line: no reset, no gap. The e2e test
 * checks that sequence in the log; the target checks its own identity.
 *
 * Without a trigger argument (the demo) it counts forever.
 */
#include "common.h"

static volatile uint64_t count;
static uint64_t count_at_ready;

static void step(void)
{
	count++;
	if (count % 10 == 0)
		out("count %" PRIu64 "\n", count);
	msleep(10);
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	if (!trigger_path) {
		for (;;)
			step();
	}
	for (int i = 0; i < 10; i++)
		step();
	count_at_ready = count;
	ready();
	while (!triggered())
		step();
	/* Count on a little after the trigger, so that the log shows the
	 * sequence continuing after a restore. */
	for (int i = 0; i < 30; i++)
		step();
	out("VERIFY pid=%d\n", getpid());
	check_identity();
	check("count-continues", count >= count_at_ready + 30,
	      "count %" PRIu64 ", was %" PRIu64 " at READY", count, count_at_ready);
	return finish();
}
