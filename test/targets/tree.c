/*
 * tree — a process tree whose processes share kernel objects, for the tree
 * checkpoint tests. The root (a child subreaper, so orphans stay in the tree)
 * makes:
 *
 *   sharer    a child sharing an open file with the root (one offset) and a
 *             pipe on which the root writes a numbered byte stream; bytes are
 *             in flight in the pipe at every moment
 *   zombie    a child that exited with status 7 and is not reaped yet
 *   orphan    a grandchild in a process group whose leader has exited
 *   daemon    a grandchild in a session whose leader has exited (the classic
 *             double fork), re-parented to the root
 *
 * All of them increment a shared anonymous counter and record their own pid,
 * ppid, pgid and sid. On the trigger each process checks its identity and its
 * part of the shared state and posts its result in the shared page; the root
 * reaps the zombie (status 7 expected), collects every result, prints
 * PASS/FAIL lines and exits 0 only if all passed.
 */
#include "common.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

enum { SHARER, ORPHAN, DAEMON, NKIDS };
static const char *kid_names[NKIDS] = {"sharer", "orphan", "daemon"};

struct shared {
	volatile uint64_t counter;   /* incremented by everyone */
	volatile int go;             /* set by the root on the trigger */
	volatile pid_t pid[NKIDS];   /* each kid's pid, as it saw it */
	volatile int result[NKIDS];  /* 0 pending, 1 pass, 2 fail */
	char detail[NKIDS][256];
};

static struct shared *sh;
static int pipe_fd[2];
static int shared_file;
/* POSIX shared memory in /dev/shm: one object that keeps its name, one
 * unlinked once mapped; both written by the sharer, read by the root. */
static volatile uint64_t *posix_named, *posix_unlinked;
static char posix_name[64];
/* A FIFO: the root holds its read end (non-blocking), the sharer its write
 * end, with bytes written and not read at the checkpoint. */
static char fifo_path[4096];
static int fifo_rd;
static const char fifo_msg[] = "bytes in the fifo";

/* identity_ok compares a process's ids with what it recorded. */
static int identity_ok(pid_t pid, pid_t ppid, pid_t pgid, pid_t sid, char *why, size_t cap)
{
	if (getpid() != pid || getppid() != ppid || getpgrp() != pgid || getsid(0) != sid) {
		snprintf(why, cap, "pid/ppid/pgid/sid %d/%d/%d/%d, were %d/%d/%d/%d", getpid(), getppid(),
			 getpgrp(), getsid(0), pid, ppid, pgid, sid);
		return 0;
	}
	return 1;
}

/* kid_loop is the life of every non-root process: count, wait for go, check. */
static pid_t root_pid;

static void kid_loop(int k, int (*verify)(char *why, size_t cap))
{
	/* Orphans are re-parented to the root (a subreaper) when their parent
	 * exits: record the ids once that has happened. */
	while (getppid() != root_pid)
		msleep(1);
	pid_t pid = getpid(), ppid = getppid(), pgid = getpgrp(), sid = getsid(0);
	sh->pid[k] = pid;
	while (!sh->go) {
		__atomic_add_fetch(&sh->counter, 1, __ATOMIC_SEQ_CST);
		msleep(5);
	}
	char why[256] = "";
	int ok = identity_ok(pid, ppid, pgid, sid, why, sizeof(why));
	if (ok && verify)
		ok = verify(why, sizeof(why));
	snprintf(sh->detail[k], sizeof(sh->detail[k]), "%s", why);
	sh->result[k] = ok ? 1 : 2;
	_exit(0);
}

/* The sharer reads the root's numbered byte stream from the pipe: every
 * byte must be the next number, across the checkpoint. It also moves the
 * offset of the file it shares with the root. */
static uint8_t next_byte;
static long bytes_read;
static int sharer_verify(char *why, size_t cap)
{
	/* Drain what is left in the pipe: it must continue the sequence. */
	uint8_t b;
	fcntl(pipe_fd[0], F_SETFL, O_NONBLOCK);
	while (read(pipe_fd[0], &b, 1) == 1) {
		if (b != next_byte) {
			snprintf(why, cap, "pipe byte %ld is %u, want %u", bytes_read, b, next_byte);
			return 0;
		}
		next_byte++;
		bytes_read++;
	}
	/* Move the shared offset by 1000: the root checks it sees the move. */
	if (lseek(shared_file, 1000, SEEK_CUR) < 0) {
		snprintf(why, cap, "lseek: %s", strerror(errno));
		return 0;
	}
	return 1;
}

static void sharer(void)
{
	pid_t pid = getpid(), ppid = getppid(), pgid = getpgrp(), sid = getsid(0);
	close(pipe_fd[1]);
	close(fifo_rd);
	int fifo_wr = open(fifo_path, O_WRONLY);
	if (fifo_wr < 0 || write(fifo_wr, fifo_msg, sizeof(fifo_msg)) != sizeof(fifo_msg)) {
		snprintf(sh->detail[SHARER], sizeof(sh->detail[SHARER]), "fifo: %s", strerror(errno));
		sh->result[SHARER] = 2;
		_exit(1);
	}
	sh->pid[SHARER] = pid;
	/* Never block on the pipe: once the root stops writing (after the
	 * trigger) a blocking read of an empty pipe would never see go. */
	fcntl(pipe_fd[0], F_SETFL, O_NONBLOCK);
	while (!sh->go) {
		uint8_t b;
		/* Read slowly so that bytes stay in flight in the pipe. */
		if (read(pipe_fd[0], &b, 1) == 1) {
			if (b != next_byte) {
				snprintf(sh->detail[SHARER], sizeof(sh->detail[SHARER]), "pipe byte %ld is %u, want %u",
					 bytes_read, b, next_byte);
				sh->result[SHARER] = 2;
				_exit(1);
			}
			next_byte++;
			bytes_read++;
		}
		__atomic_add_fetch(&sh->counter, 1, __ATOMIC_SEQ_CST);
		__atomic_add_fetch(posix_named, 1, __ATOMIC_SEQ_CST);
		__atomic_add_fetch(posix_unlinked, 1, __ATOMIC_SEQ_CST);
		msleep(2);
	}
	char why[256] = "";
	int ok = identity_ok(pid, ppid, pgid, sid, why, sizeof(why)) && sharer_verify(why, sizeof(why));
	snprintf(sh->detail[SHARER], sizeof(sh->detail[SHARER]), "%s", why);
	sh->result[SHARER] = ok ? 1 : 2;
	_exit(0);
}

static void work(void)
{
	/* The root writes the byte stream faster than the sharer reads it; the
	 * pipe fills up and stays full (the write end is non-blocking), so
	 * bytes are in flight whenever the checkpoint comes. */
	static uint8_t next;
	for (int i = 0; i < 8; i++) {
		if (write(pipe_fd[1], &next, 1) != 1)
			break;
		next++;
	}
	__atomic_add_fetch(&sh->counter, 1, __ATOMIC_SEQ_CST);
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	root_pid = getpid();
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		die("PR_SET_CHILD_SUBREAPER");
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap shared");
	if (pipe(pipe_fd) < 0)
		die("pipe");
	fcntl(pipe_fd[1], F_SETFL, O_NONBLOCK);
	char path[4096];
	snprintf(path, sizeof(path), "%s/tree-shared.dat", work_dir);
	shared_file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (shared_file < 0 || ftruncate(shared_file, 1 << 20) < 0)
		die("shared file");
	lseek(shared_file, 4242, SEEK_SET);

	snprintf(posix_name, sizeof(posix_name), "/cryo-tree-%d", getpid());
	int pn = shm_open(posix_name, O_RDWR | O_CREAT | O_EXCL, 0600);
	char unlinked_name[64];
	snprintf(unlinked_name, sizeof(unlinked_name), "/cryo-tree-gone-%d", getpid());
	int pu = shm_open(unlinked_name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (pn < 0 || pu < 0 || ftruncate(pn, 4096) < 0 || ftruncate(pu, 4096) < 0)
		die("shm_open");
	posix_named = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, pn, 0);
	posix_unlinked = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, pu, 0);
	if (posix_named == MAP_FAILED || posix_unlinked == MAP_FAILED)
		die("mmap shm");
	close(pn);
	close(pu);
	shm_unlink(unlinked_name);

	snprintf(fifo_path, sizeof(fifo_path), "%s/tree.fifo", work_dir);
	unlink(fifo_path);
	if (mkfifo(fifo_path, 0600) < 0 || (fifo_rd = open(fifo_path, O_RDONLY | O_NONBLOCK)) < 0)
		die("fifo");

	if (fork() == 0)
		sharer();
	close(pipe_fd[0]);

	pid_t zombie = fork();
	if (zombie == 0)
		_exit(7);
	/* A second zombie, killed by a signal rather than exited. */
	pid_t killed = fork();
	if (killed == 0) {
		signal(SIGTERM, SIG_DFL);
		raise(SIGTERM);
		_exit(0);
	}

	/* Orphaned group: a child makes a group, puts a grandchild in it, and
	 * exits (reaped below): the grandchild's group has no leader. */
	pid_t leader = fork();
	if (leader == 0) {
		setpgid(0, 0);
		if (fork() == 0)
			kid_loop(ORPHAN, NULL);
		_exit(0);
	}
	waitpid(leader, NULL, 0);

	/* Daemon: fork, setsid, fork, exit: the grandchild is in a session whose
	 * leader is gone, and is re-parented to us (the subreaper). */
	pid_t mid = fork();
	if (mid == 0) {
		setsid();
		if (fork() == 0)
			kid_loop(DAEMON, NULL);
		_exit(0);
	}
	waitpid(mid, NULL, 0);

	/* Wait until every kid runs, then let the zombie be a zombie. */
	for (int i = 0; i < 2000; i++) {
		int all = 1;
		for (int k = 0; k < NKIDS; k++)
			all &= sh->pid[k] != 0;
		if (all)
			break;
		msleep(1);
	}
	for (int i = 0; i < 1000; i++) {
		char st[64], st2[64], p[64], p2[64];
		snprintf(p, sizeof(p), "/proc/%d/stat", zombie);
		snprintf(p2, sizeof(p2), "/proc/%d/stat", killed);
		if (read_file(p, st, sizeof(st)) > 0 && strstr(st, ") Z ") && read_file(p2, st2, sizeof(st2)) > 0 &&
		    strstr(st2, ") Z "))
			break;
		msleep(1);
	}
	/* The sharer's bytes must be in the FIFO before the checkpoint. */
	for (int i = 0; i < 2000; i++) {
		int avail = 0;
		if (ioctl(fifo_rd, FIONREAD, &avail) == 0 && avail == (int)sizeof(fifo_msg))
			break;
		msleep(1);
	}
	uint64_t before = sh->counter;
	uint64_t posix_before = *posix_named, gone_before = *posix_unlinked;
	/* The test checks how an image shows them. */
	report_child("zombie", zombie);
	report_child("zombie-killed", killed);
	ready();
	wait_trigger(work);

	check_identity();
	off_t off_before = lseek(shared_file, 0, SEEK_CUR);
	check("counter-continues", sh->counter > before, "shared counter %" PRIu64 ", was %" PRIu64,
	      (uint64_t)sh->counter, before);
	char fifo_got[64] = "";
	ssize_t n = read(fifo_rd, fifo_got, sizeof(fifo_got));
	check("fifo-data", n == (ssize_t)sizeof(fifo_msg) && !memcmp(fifo_got, fifo_msg, sizeof(fifo_msg)),
	      "read %zd bytes: %.*s", n, (int)(n > 0 ? n : 0), fifo_got);
	check("fifo-nonblock", fcntl(fifo_rd, F_GETFL) & O_NONBLOCK, "O_NONBLOCK lost");
	/* The sharer kept counting in both POSIX objects: the root sees it, so
	 * they are still shared after restore. */
	msleep(50);
	check("posix-shm-shared", *posix_named > posix_before, "named object %" PRIu64 ", was %" PRIu64,
	      (uint64_t)*posix_named, posix_before);
	check("posix-shm-unlinked-shared", *posix_unlinked > gone_before, "unlinked object %" PRIu64 ", was %" PRIu64,
	      (uint64_t)*posix_unlinked, gone_before);
	sh->go = 1;
	for (int i = 0; i < 5000; i++) {
		int done = 1;
		for (int k = 0; k < NKIDS; k++)
			done &= sh->result[k] != 0;
		if (done)
			break;
		msleep(1);
	}
	for (int k = 0; k < NKIDS; k++) {
		char name[64];
		snprintf(name, sizeof(name), "kid-%s", kid_names[k]);
		check(name, sh->result[k] == 1, "%s", sh->result[k] == 0 ? "no result" : sh->detail[k]);
	}
	off_t off_after = lseek(shared_file, 0, SEEK_CUR);
	check("shared-offset", off_after == off_before + 1000, "offset %lld, was %lld before the sharer moved it by 1000",
	      (long long)off_after, (long long)off_before);
	int status = 0;
	pid_t got = waitpid(zombie, &status, WNOHANG);
	check("zombie-status", got == zombie && WIFEXITED(status) && WEXITSTATUS(status) == 7,
	      "waitpid(%d) = %d, status %#x", zombie, got, status);
	got = waitpid(killed, &status, WNOHANG);
	check("zombie-killed-status", got == killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
	      "waitpid(%d) = %d, status %#x", killed, got, status);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	shm_unlink(posix_name);
	unlink(fifo_path);
	return finish();
}
