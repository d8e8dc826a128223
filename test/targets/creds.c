/*
 * creds: credentials that must come back exactly, per thread.
 *
 * Started as `creds TRIGGER [OPTION...]`, it first sets up what the options
 * ask, then records, for the main thread and a second thread, every
 * credential the kernel keeps per thread: real/effective/saved/filesystem
 * uids and gids, supplementary groups, the effective, permitted,
 * inheritable, ambient and bounding capability sets, securebits and
 * no_new_privs. It also execs `cat /proc/self/status` into
 * WORKDIR/exec-ready.status, so the test sees what a program it starts
 * would hold.
 *
 * Options (each applied in the thread named, main unless "thread-"):
 *   fsuid=N fsgid=N         setfsuid/setfsgid (raw syscalls: per thread)
 *   thread-fsuid=N          the same in the second thread only
 *   secbits=0xN             prctl(PR_SET_SECUREBITS)
 *   bnd-drop=N              prctl(PR_CAPBSET_DROP, N)
 *   ambient=N               capability N into inheritable, then ambient
 *   inh-drop-all            an empty inheritable set (drops ambient too)
 *
 * On the trigger it execs the same `cat` into WORKDIR/exec-verify.status,
 * and checks that every recorded credential of both threads is unchanged.
 */
#include "common.h"

#include <grp.h>
#include <linux/capability.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_IS_SET 1
#define PR_CAP_AMBIENT_RAISE 2
#endif

struct creds {
	uid_t uid[4];
	gid_t gid[4];
	int ngroups;
	gid_t groups[64];
	uint64_t eff, prm, inh, amb, bnd;
	int secbits, nnp;
};

static struct creds main_saved, thread_saved;
static int last_cap;
static volatile int thread_phase; /* 0 setting up, 1 recorded, 2 check, 3 checked */
static long thread_fsuid = -1;

static void read_creds(struct creds *c)
{
	memset(c, 0, sizeof(*c));
	getresuid(&c->uid[0], &c->uid[1], &c->uid[2]);
	getresgid(&c->gid[0], &c->gid[1], &c->gid[2]);
	/* An invalid id asks without changing anything. */
	c->uid[3] = (uid_t)syscall(SYS_setfsuid, -1);
	c->gid[3] = (gid_t)syscall(SYS_setfsgid, -1);
	c->ngroups = getgroups(64, c->groups);
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) != 0)
		die("capget");
	c->eff = d[0].effective | (uint64_t)d[1].effective << 32;
	c->prm = d[0].permitted | (uint64_t)d[1].permitted << 32;
	c->inh = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
	for (int i = 0; i <= last_cap; i++) {
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, i, 0, 0) == 1)
			c->amb |= 1ULL << i;
		if (prctl(PR_CAPBSET_READ, i, 0, 0, 0) == 1)
			c->bnd |= 1ULL << i;
	}
	c->secbits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	c->nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
}

/* compare_creds prints one check per field; returns the failures. */
static int compare_creds(const char *who, const struct creds *was, const struct creds *now)
{
	int fails = 0;
	char name[64];
#define FIELD(label, ok, fmt, ...)                                                   \
	do {                                                                         \
		snprintf(name, sizeof(name), "%s-%s", who, label);                   \
		fails += !check(name, ok, fmt, __VA_ARGS__);                         \
	} while (0)
	static const char *ids[4] = {"real", "effective", "saved", "fs"};
	for (int i = 0; i < 4; i++) {
		FIELD(ids[i], now->uid[i] == was->uid[i] && now->gid[i] == was->gid[i],
		      "%s uid/gid %u/%u, was %u/%u", ids[i], now->uid[i], now->gid[i], was->uid[i], was->gid[i]);
	}
	int same = now->ngroups == was->ngroups;
	for (int i = 0; same && i < now->ngroups; i++)
		same = now->groups[i] == was->groups[i];
	FIELD("groups", same, "%d groups (first %u), were %d (first %u)", now->ngroups,
	      now->ngroups > 0 ? now->groups[0] : 0, was->ngroups, was->ngroups > 0 ? was->groups[0] : 0);
	FIELD("cap-eff", now->eff == was->eff, "%#" PRIx64 ", was %#" PRIx64, now->eff, was->eff);
	FIELD("cap-prm", now->prm == was->prm, "%#" PRIx64 ", was %#" PRIx64, now->prm, was->prm);
	FIELD("cap-inh", now->inh == was->inh, "%#" PRIx64 ", was %#" PRIx64, now->inh, was->inh);
	FIELD("cap-amb", now->amb == was->amb, "%#" PRIx64 ", was %#" PRIx64, now->amb, was->amb);
	FIELD("cap-bnd", now->bnd == was->bnd, "%#" PRIx64 ", was %#" PRIx64, now->bnd, was->bnd);
	FIELD("secbits", now->secbits == was->secbits, "%#x, was %#x", now->secbits, was->secbits);
	FIELD("no-new-privs", now->nnp == was->nnp, "%d, was %d", now->nnp, was->nnp);
#undef FIELD
	return fails;
}

static void *second_thread(void *arg)
{
	(void)arg;
	if (thread_fsuid >= 0)
		syscall(SYS_setfsuid, (uid_t)thread_fsuid);
	read_creds(&thread_saved);
	thread_phase = 1;
	while (thread_phase != 2)
		msleep(5);
	struct creds now;
	read_creds(&now);
	compare_creds("thread", &thread_saved, &now);
	thread_phase = 3;
	return NULL;
}

/* open_status opens WORKDIR/name for exec_status, before the options
 * change the fsuid this process would create it with. */
static int open_status(const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", work_dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die(path);
	return fd;
}

/* exec_status runs cat /proc/self/status with its stdout on fd: what a
 * program this process starts would hold. */
static void exec_status(const char *name, int fd)
{
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		if (dup2(fd, 1) < 0)
			_exit(126);
		execl("/bin/cat", "cat", "/proc/self/status", (char *)NULL);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	check(name, WIFEXITED(st) && WEXITSTATUS(st) == 0, "cat exited with status %#x", st);
}

static void apply(const char *opt)
{
	long v;
	if (sscanf(opt, "fsuid=%ld", &v) == 1)
		syscall(SYS_setfsuid, (uid_t)v);
	else if (sscanf(opt, "fsgid=%ld", &v) == 1)
		syscall(SYS_setfsgid, (gid_t)v);
	else if (sscanf(opt, "thread-fsuid=%ld", &v) == 1)
		thread_fsuid = v;
	else if (sscanf(opt, "secbits=%li", &v) == 1) {
		if (prctl(PR_SET_SECUREBITS, v, 0, 0, 0) != 0)
			die("PR_SET_SECUREBITS");
	} else if (sscanf(opt, "bnd-drop=%ld", &v) == 1) {
		if (prctl(PR_CAPBSET_DROP, v, 0, 0, 0) != 0)
			die("PR_CAPBSET_DROP");
	} else if (sscanf(opt, "ambient=%ld", &v) == 1) {
		struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
		struct __user_cap_data_struct d[2];
		if (syscall(SYS_capget, &h, d) != 0)
			die("capget");
		d[v / 32].inheritable |= 1u << (v % 32);
		if (syscall(SYS_capset, &h, d) != 0)
			die("capset inheritable");
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, v, 0, 0) != 0)
			die("PR_CAP_AMBIENT_RAISE");
	} else if (strcmp(opt, "inh-drop-all") == 0) {
		struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
		struct __user_cap_data_struct d[2];
		if (syscall(SYS_capget, &h, d) != 0)
			die("capget");
		d[0].inheritable = d[1].inheritable = 0;
		if (syscall(SYS_capset, &h, d) != 0)
			die("capset inheritable");
	} else {
		errno = EINVAL;
		die(opt);
	}
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	char buf[64];
	last_cap = 40;
	if (read_file("/proc/sys/kernel/cap_last_cap", buf, sizeof(buf)) > 0)
		last_cap = atoi(buf);
	int ready_fd = open_status("exec-ready.status");
	int verify_fd = open_status("exec-verify.status");
	for (int i = 2; i < argc; i++)
		apply(argv[i]);
	read_creds(&main_saved);
	pthread_t th;
	if (pthread_create(&th, NULL, second_thread, NULL) != 0)
		die("pthread_create");
	while (thread_phase != 1)
		msleep(1);
	exec_status("exec-ready.status", ready_fd);
	ready();
	wait_trigger(NULL);
	check_identity();
	exec_status("exec-verify.status", verify_fd);
	struct creds now;
	read_creds(&now);
	compare_creds("main", &main_saved, &now);
	thread_phase = 2;
	while (thread_phase != 3)
		msleep(1);
	pthread_join(th, NULL);
	return finish();
}
