/*
 * seccomp — threads with seccomp filters shared the ways the kernel shares
 * them, and a thread in strict mode, for the seccomp tests. Started as
 * `seccomp TRIGGER MODE`:
 *
 *   tsync     two threads; the main thread installs a filter with
 *             SECCOMP_FILTER_FLAG_TSYNC, which gives every thread the very
 *             same filter. After restore both see its effect, and another
 *             TSYNC install still succeeds: it needs every other thread's
 *             filter to be one of the caller's own (is_ancestor).
 *   inherit   the main thread installs filter A, then makes a thread, which
 *             inherits A and adds B of its own. TSYNC from the new thread
 *             succeeds (A is its ancestor); from the main thread it fails,
 *             naming the new thread, whose B the main thread lacks.
 *   subset    a thread is made, then the main thread installs filter A and
 *             makes two more, which inherit A: two threads share A, the
 *             first has no filter. TSYNC from one of the two succeeds (the
 *             other's A is its own, a thread without filters takes any).
 *   strict    a thread enters SECCOMP_MODE_STRICT and serves requests over
 *             a pipe with read and write, all strict mode allows.
 *
 * The filters make uname(2) fail with an errno of their own, so that each
 * thread can tell which filters it has.
 */
#include "common.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/utsname.h>

/* filter_for builds a filter making uname fail with errno e (0: allow
 * everything); prog must hold 4 instructions. */
static void filter_for(struct sock_filter *f, int e)
{
	f[0] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	f[1] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, e ? SYS_uname : 0xffffff, 0, 1);
	f[2] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (e & SECCOMP_RET_DATA));
	f[3] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
}

static long install(int e, unsigned flags)
{
	struct sock_filter f[4];
	filter_for(f, e);
	struct sock_fprog prog = {.len = 4, .filter = f};
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static int uname_errno(void)
{
	struct utsname u;
	return uname(&u) == 0 ? 0 : errno;
}

static int filters_of(pid_t tid)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	if (read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	char *p = strstr(buf, "Seccomp_filters:");
	return p ? atoi(p + 16) : -1;
}

static volatile int go, done, leave;
static volatile pid_t worker_tid;
static char worker_why[512];
static volatile int worker_ok;
static const char *mode;
static int req[2], rep[2];

static void *worker(void *arg)
{
	(void)arg;
	worker_tid = sys_gettid();
	if (!strcmp(mode, "inherit") && install(22, 0))
		die("seccomp B");
	if (!strcmp(mode, "strict")) {
		if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
			die("strict");
		/* From here on: read, write, _exit, sigreturn. */
		for (;;) {
			char c;
			if (read(req[0], &c, 1) != 1)
				syscall(SYS_exit, 1);
			c++;
			if (write(rep[1], &c, 1) != 1)
				syscall(SYS_exit, 1);
			if (c == 'z' + 1)
				syscall(SYS_exit, 0);
		}
	}
	while (!go)
		msleep(2);
	/* Check from this thread. */
	int e = uname_errno();
	int want = !strcmp(mode, "tsync") ? 33 : 22;
	int nf = filters_of(sys_gettid());
	int want_nf = !strcmp(mode, "tsync") ? 1 : 2;
	if (e != want || nf != want_nf)
		snprintf(worker_why, sizeof(worker_why), "uname errno %d, filters %d; want %d, %d", e, nf, want, want_nf);
	else if (!strcmp(mode, "inherit")) {
		/* Its ancestor A is the main thread's very filter. */
		long r = install(0, SECCOMP_FILTER_FLAG_TSYNC);
		if (r != 0)
			snprintf(worker_why, sizeof(worker_why), "TSYNC from the thread that inherited A: %ld (errno %d), want 0", r,
				 errno);
		else
			worker_ok = 1;
	} else
		worker_ok = 1;
	done = 1;
	/* An exiting thread is no obstacle to TSYNC: stay for main's. */
	while (!leave)
		msleep(1);
	return NULL;
}

/* subset mode's threads: 0 made before A, 1 and 2 after. */
static volatile pid_t sub_tid[3];
static volatile int sub_done[3], sub_ok[3];
static char sub_why[3][256];

static void *sub_worker(void *arg)
{
	int k = (int)(intptr_t)arg;
	sub_tid[k] = sys_gettid();
	while (!go)
		msleep(2);
	/* One at a time: 0, then 1 (whose TSYNC gives every thread its
	 * chain), then 2. */
	while (k > 0 && !sub_done[k - 1])
		msleep(1);
	int e = uname_errno(), nf = filters_of(sys_gettid());
	int want = k == 0 ? 0 : 11, want_nf = k == 0 ? 0 : k == 2 ? 2 : 1;
	if (e != want || nf != want_nf)
		snprintf(sub_why[k], sizeof(sub_why[k]), "thread %d: uname errno %d, filters %d; want %d, %d", k, e, nf, want, want_nf);
	else if (k == 1) {
		long r = install(0, SECCOMP_FILTER_FLAG_TSYNC);
		if (r != 0)
			snprintf(sub_why[k], sizeof(sub_why[k]), "TSYNC from a thread sharing A: %ld (errno %d), want 0", r, errno);
		else
			sub_ok[k] = 1;
	} else
		sub_ok[k] = 1;
	sub_done[k] = 1;
	while (!leave)
		msleep(1);
	return NULL;
}

static int subset(void)
{
	pthread_t t[3];
	if (pthread_create(&t[0], NULL, sub_worker, (void *)0))
		die("pthread_create");
	while (!sub_tid[0])
		msleep(1);
	if (install(11, 0))
		die("seccomp A");
	for (int k = 1; k < 3; k++)
		if (pthread_create(&t[k], NULL, sub_worker, (void *)(intptr_t)k))
			die("pthread_create");
	while (!sub_tid[1] || !sub_tid[2])
		msleep(1);
	ready();
	wait_trigger(NULL);
	check_identity();
	go = 1;
	for (int k = 0; k < 3; k++) {
		while (k && !sub_done[k])
			msleep(1);
		if (k == 0)
			for (int i = 0; i < 5000 && !sub_done[0]; i++)
				msleep(1);
		check(k == 0 ? "thread-without" : k == 1 ? "thread-tsync" : "thread-synced", sub_ok[k], "%s",
		      sub_done[k] ? sub_why[k] : "no result");
	}
	leave = 1;
	for (int k = 0; k < 3; k++)
		pthread_join(t[k], NULL);
	return finish();
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	mode = argc > 2 ? argv[2] : "tsync";
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("no_new_privs");
	if (pipe(req) || pipe(rep))
		die("pipe");
	if (!strcmp(mode, "subset"))
		return subset();
	pthread_t t;
	if (!strcmp(mode, "inherit") && install(11, 0))
		die("seccomp A");
	if (pthread_create(&t, NULL, worker, NULL))
		die("pthread_create");
	while (!worker_tid)
		msleep(1);
	msleep(20);
	if (!strcmp(mode, "tsync") && install(33, SECCOMP_FILTER_FLAG_TSYNC))
		die("seccomp TSYNC");
	report_tid("worker", worker_tid);
	ready();
	wait_trigger(NULL);
	check_identity();
	if (!strcmp(mode, "strict")) {
		char path[64], buf[4096], *s;
		snprintf(path, sizeof(path), "/proc/self/task/%d/status", worker_tid);
		int strict = read_file(path, buf, sizeof(buf)) > 0 && (s = strstr(buf, "Seccomp:")) && atoi(s + 8) == 1;
		check("strict-mode", strict, "thread %d is not in strict mode", worker_tid);
		int ok = 1;
		for (char c = 'a'; c <= 'z' && ok; c++) {
			char r = 0;
			ok = write(req[1], &c, 1) == 1 && read(rep[0], &r, 1) == 1 && r == c + 1;
		}
		check("strict-serves", ok, "the strict thread did not answer");
		pthread_join(t, NULL);
		return finish();
	}
	if (!strcmp(mode, "inherit")) {
		/* The worker's B is no filter of the main thread's. */
		long r = install(0, SECCOMP_FILTER_FLAG_TSYNC);
		check("tsync-refused", r == worker_tid, "TSYNC from main: %ld, want %d (the worker, whose filter B it lacks)", r, worker_tid);
	}
	go = 1;
	for (int i = 0; i < 5000 && !done; i++)
		msleep(1);
	check("worker", worker_ok, "%s", done ? worker_why : "no result");
	int tsync = !strcmp(mode, "tsync");
	/* inherit: the worker's TSYNC gave main its chain, B' over B over A. */
	int e = uname_errno(), nf = filters_of(getpid());
	int want = tsync ? 33 : 22, want_nf = tsync ? 1 : 3;
	check("main-filters", e == want && nf == want_nf, "uname errno %d, filters %d; want %d, %d", e, nf, want, want_nf);
	if (tsync) {
		long r = install(0, SECCOMP_FILTER_FLAG_TSYNC);
		check("tsync-again", r == 0, "a second TSYNC install: %ld (errno %d), want 0: the threads no longer share one filter", r, errno);
	}
	leave = 1;
	pthread_join(t, NULL);
	return finish();
}
