/*
 * pipeline — the two ends of a shell pipeline, for the tree tests:
 *
 *   sh -c 'pipeline produce | pipeline consume TRIGGER'
 *
 * The producer writes the byte sequence 0, 1, 2, ... 255, 0, ... as fast as
 * the pipe takes it; the consumer reads it slowly, so the pipe is full of
 * unread bytes whenever the checkpoint comes, and checks every byte. On the
 * trigger it reads 1 MiB more: any lost, repeated or reordered byte across
 * the checkpoint fails it. The pipeline's exit status is the consumer's.
 */
#include "common.h"

static int produce(void)
{
	unsigned char buf[4096];
	unsigned char next = 0;
	for (;;) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = next++;
		for (size_t off = 0; off < sizeof(buf);) {
			ssize_t n = write(1, buf + off, sizeof(buf) - off);
			if (n <= 0)
				return 0; /* the consumer is gone */
			off += (size_t)n;
		}
	}
}

static unsigned char expect;
static long long seen;

static int consume_some(size_t want, char *why, size_t cap)
{
	unsigned char buf[4096];
	for (size_t got = 0; got < want;) {
		ssize_t n = read(0, buf, want - got < sizeof(buf) ? want - got : sizeof(buf));
		if (n <= 0) {
			snprintf(why, cap, "read: %zd (%s) after %lld bytes", n, n < 0 ? strerror(errno) : "EOF", seen);
			return 0;
		}
		for (ssize_t i = 0; i < n; i++, seen++, expect++)
			if (buf[i] != expect) {
				snprintf(why, cap, "byte %lld is %u, want %u", seen, buf[i], expect);
				return 0;
			}
		got += (size_t)n;
	}
	return 1;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "produce") == 0)
		return produce();
	if (argc < 3 || strcmp(argv[1], "consume") != 0) {
		fprintf(stderr, "usage: pipeline produce | pipeline consume TRIGGER\n");
		return 2;
	}
	trigger_path = argv[2];
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* The test knows the pipeline by its shell, the root of the tree. */
	out("PID %d\n", getppid());
	char why[256] = "";
	if (!consume_some(64 << 10, why, sizeof(why)))
		die(why);
	ready();
	while (!triggered()) {
		if (!consume_some(256, why, sizeof(why))) { /* slowly: the pipe stays full */
			check("stream", 0, "%s", why);
			return finish();
		}
		msleep(5);
	}
	out("VERIFY pid=%d\n", getpid());
	check("stream", consume_some(1 << 20, why, sizeof(why)), "%s", why);
	return finish();
}
