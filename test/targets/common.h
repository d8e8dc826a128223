/*
 * common.h — the protocol shared by every C test target of cryo's e2e tests.
 *
 * A target is started as `NAME TRIGGER [ARGS...]`. It sets its state up, records
 * what it must later verify, prints "PID <pid>", one "TID <name> <tid>" line per
 * thread and one "CHILD <name> <pid>" line per child process it wants the test
 * to know about, then "READY", and keeps working while
 * polling for the TRIGGER file (access(2) every ~5 ms). Between READY and the
 * trigger the test may checkpoint it, kill it and restore it, any number of
 * times. On the trigger the target checks everything it recorded, prints one
 * "PASS name" or "FAIL name: detail" line per check and a final
 * "RESULT <n> passed, <m> failed" line, and exits 0 only if every check passed.
 *
 * The same checks must all pass when the trigger comes with no checkpoint in
 * between: that is how the targets themselves are tested.
 *
 * Everything here is static: each target is one translation unit.
 */
#ifndef CRYO_TEST_COMMON_H
#define CRYO_TEST_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static const char *trigger_path;
static int n_pass, n_fail;
static pid_t saved_pid, saved_sid, saved_pgid;
static char saved_comm[64];
/* work_dir: the trigger's directory (the test's temp dir), or /tmp. */
static char work_dir[2048] = "/tmp";

static inline pid_t sys_gettid(void) { return (pid_t)syscall(SYS_gettid); }

static inline void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void out(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

/* check prints one PASS/FAIL line; detail is only printed on failure. */
static inline int check(const char *name, int ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline int check(const char *name, int ok, const char *fmt, ...)
{
	if (ok) {
		n_pass++;
		out("PASS %s\n", name);
		return 1;
	}
	n_fail++;
	char detail[1024] = "";
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(detail, sizeof(detail), fmt, ap);
		va_end(ap);
	}
	out("FAIL %s: %s\n", name, detail);
	return 0;
}

static inline void die(const char *what)
{
	out("SETUP-ERROR %s: %s\n", what, strerror(errno));
	exit(2);
}

static inline void msleep(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	/* EINTR just shortens the nap; callers loop anyway. */
	nanosleep(&ts, NULL);
}

static inline int triggered(void)
{
	return trigger_path && access(trigger_path, F_OK) == 0;
}

/* read_file reads a whole (small, /proc) file into buf with plain read(2):
 * no stdio, so no malloc and no new mapping appears while a target compares
 * its address space. Returns the length or -1. */
static inline ssize_t read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = 0;
	for (;;) {
		if (n + 1 >= cap) {
			close(fd);
			errno = EFBIG;
			return -1;
		}
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	buf[n] = 0;
	close(fd);
	return (ssize_t)n;
}

static inline uint64_t fnv1a(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* fnv1a_words hashes 8 bytes at a time: fast enough for hundreds of MiB. */
static inline uint64_t fnv1a_words(const void *p, size_t n)
{
	const uint64_t *w = p;
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n / 8; i++) {
		h ^= w[i];
		h *= 1099511628211ULL;
	}
	return h ^ fnv1a((const char *)p + (n & ~(size_t)7), n & 7);
}

static inline uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static inline void fill_pattern(void *p, size_t n, uint64_t seed)
{
	uint64_t s = seed | 1, *w = p;
	for (size_t i = 0; i < n / 8; i++)
		w[i] = xorshift64(&s);
}

/* first_diff_line returns the first line of a that differs from b, for FAIL
 * details. */
static inline void first_diff_line(const char *a, const char *b, char *dst, size_t cap)
{
	size_t i = 0, start = 0;
	while (a[i] && a[i] == b[i]) {
		if (a[i] == '\n')
			start = i + 1;
		i++;
	}
	const char *ea = strchr(a + start, '\n'), *eb = strchr(b + start, '\n');
	int la = ea ? (int)(ea - a - start) : (int)strlen(a + start);
	int lb = eb ? (int)(eb - b - start) : (int)strlen(b + start);
	snprintf(dst, cap, "before %.*s | after %.*s", la > 200 ? 200 : la, a + start,
		 lb > 200 ? 200 : lb, b + start);
}

static inline void read_comm(pid_t tid, char *dst, size_t cap)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", tid);
	if (read_file(path, dst, cap) < 0)
		snprintf(dst, cap, "?");
}

/* target_init parses argv and records the identity that must survive. */
static inline void target_init(int argc, char **argv)
{
	if (argc > 1 && argv[1][0]) {
		trigger_path = argv[1];
		snprintf(work_dir, sizeof(work_dir), "%s", trigger_path);
		char *slash = strrchr(work_dir, '/');
		if (slash && slash != work_dir)
			*slash = 0;
		else
			snprintf(work_dir, sizeof(work_dir), "%s", slash ? "/" : ".");
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	saved_pid = getpid();
	saved_sid = getsid(0);
	saved_pgid = getpgrp();
	read_comm(saved_pid, saved_comm, sizeof(saved_comm));
	/* Warm up stdio now, so that its buffer exists before a target saves
	 * its memory map. */
	out("PID %d\n", saved_pid);
}

static inline void report_tid(const char *name, pid_t tid) { out("TID %s %d\n", name, tid); }

static inline void report_child(const char *name, pid_t pid) { out("CHILD %s %d\n", name, pid); }

static inline void ready(void) { out("READY\n"); }

/* wait_trigger polls for the trigger file, calling work() between polls. */
static inline void wait_trigger(void (*work)(void))
{
	while (!triggered()) {
		if (work)
			work();
		msleep(5);
	}
	out("VERIFY pid=%d\n", getpid());
}

/* check_identity compares what every restored process must keep. */
static inline void check_identity(void)
{
	char comm[64];
	check("pid", getpid() == saved_pid, "getpid %d, was %d", getpid(), saved_pid);
	check("tid-main", sys_gettid() == saved_pid, "gettid %d, was %d", sys_gettid(), saved_pid);
	check("sid", getsid(0) == saved_sid, "getsid %d, was %d", getsid(0), saved_sid);
	check("pgid", getpgrp() == saved_pgid, "getpgrp %d, was %d", getpgrp(), saved_pgid);
	read_comm(getpid(), comm, sizeof(comm));
	check("comm", strcmp(comm, saved_comm) == 0, "comm %s, was %s", comm, saved_comm);
}

static inline int finish(void)
{
	out("RESULT %d passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}

#endif
