/*
 * counter: the simplest workload. A counter goes up by one every ~10 ms and is
 * printed as "count N" every 10 steps (~100 ms). The count depends on loop
 * iterations, not on wall-clock time, so across a checkpoint the printed
 * sequence must go on exactly +10 per line: no reset, no gap. The e2e test
 * checks that sequence in the log.
 *
 * The target checks it too, against a record that no image holds: every step
 * writes the count to counter.state (a file beside the trigger, whose
 * contents stay on disk, outside the image) and the next step first reads it
 * back. A process restored exactly resumes where it was frozen, finishes the
 * step it was in, and finds its count equal to the file's; a restore that
 * brought back other memory (a reset, a lost page, an image older than the
 * last step the process took) finds them apart.
 *
 * Without a trigger argument (the demo) it counts forever and keeps no file.
 */
#include "common.h"

static volatile uint64_t count;
static uint64_t count_at_ready;

static int state_fd = -1;
/* The first step at which memory and file disagreed, or an I/O error. */
static int state_bad;
static uint64_t bad_count, bad_file;
static char bad_io[128];

static void state_io(const char *what)
{
	if (!state_bad) {
		state_bad = 1;
		snprintf(bad_io, sizeof(bad_io), "%s counter.state: %s", what, strerror(errno));
	}
}

/* state_matches compares the count with what the last step wrote. */
static void state_matches(void)
{
	uint64_t seen;
	if (state_fd < 0)
		return;
	if (pread(state_fd, &seen, sizeof(seen), 0) != (ssize_t)sizeof(seen)) {
		state_io("pread");
		return;
	}
	if (seen != count && !state_bad) {
		state_bad = 1;
		bad_count = count;
		bad_file = seen;
	}
}

static void step(void)
{
	state_matches();
	count++;
	if (state_fd >= 0 && pwrite(state_fd, (const void *)&count, sizeof(count), 0) != (ssize_t)sizeof(count))
		state_io("pwrite");
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
	char path[4096];
	snprintf(path, sizeof(path), "%s/counter.state", work_dir);
	state_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (state_fd < 0 || pwrite(state_fd, (const void *)&count, sizeof(count), 0) != (ssize_t)sizeof(count))
		die("counter.state");
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
	state_matches();
	if (bad_io[0])
		check("count-continues", 0, "%s", bad_io);
	else
		check("count-continues", !state_bad,
		      "count %" PRIu64 " in memory, but the last step wrote %" PRIu64
		      " to counter.state: the count was reset or jumped (it was %" PRIu64 " at READY)",
		      bad_count, bad_file, count_at_ready);
	return finish();
}
