/*
 * nsinit — a tree in namespaces of its own, for the namespace tests. Started
 * in new UTS and IPC namespaces (the test's CLONE_NEWUTS|CLONE_NEWIPC), the
 * root sets a host and domain name and IPC sysctls there, makes a time
 * namespace with monotonic and boot-time offsets (unshare(CLONE_NEWTIME),
 * then setns into its time_for_children: its offsets can be set only until
 * a task is in it) and forks two children, in all three.
 *
 * Every process samples CLOCK_MONOTONIC and CLOCK_BOOTTIME every ~5 ms and
 * records any sample lower than the one before (a clock going back). On the
 * trigger each checks its host and domain name, the sysctls, that no clock
 * went back, that the offsets still show and that the monotonic clock went
 * no faster than the wall clock since start; children
 * exit with their verdict, which the root collects.
 *
 * In the IPC namespace the root makes, with chosen ids, a shared memory
 * segment it and its children attach, one nobody attaches, a semaphore set
 * and a message queue with a message; on the trigger it checks their ids,
 * contents, values and message.
 *
 * Modes (argv[2]): "unshared" only unshares a time namespace, without entering it; "split": the
 * second child has a UTS namespace of its own (with the same names).
 */
#include "common.h"

#include <sched.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

#define HOSTNAME "cryo-ns-host"
#define DOMAINNAME "cryo-ns.example"
#define MONO_OFF 100000L
#define BOOT_OFF 200000L
#define MSGMAX "12345"
#define SHMMNI "1234"

static struct timespec last_mono, last_boot;
static void write_or_die(const char *path, const char *v)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, v, strlen(v)) != (ssize_t)strlen(v))
		die(path);
	close(fd);
}

static struct timespec mono0, real0;
/* The System V objects, made with chosen ids (kernel.*_next_id). */
#define SHM_ID 77
#define SHM_DETACHED_ID 78
#define SEM_ID 88
#define MSG_ID 99
#define SHM_SIZE 8192
static unsigned char *shm_mem;
static const char detached_text[] = "nobody attaches me";
static const char msg_text[] = "a message in the namespace";

struct msgbuf_ns {
	long mtype;
	char mtext[64];
};

static void make_sysv(void)
{
	write_or_die("/proc/sys/kernel/shm_next_id", "77");
	if (shmget(IPC_PRIVATE, SHM_SIZE, IPC_CREAT | 0600) != SHM_ID)
		die("shmget 77");
	shm_mem = shmat(SHM_ID, NULL, 0);
	if (shm_mem == (void *)-1)
		die("shmat");
	fill_pattern(shm_mem, SHM_SIZE, 42);
	write_or_die("/proc/sys/kernel/shm_next_id", "78"); /* each next_id is used once */
	if (shmget(0x4e53, 4096, IPC_CREAT | 0640) != SHM_DETACHED_ID)
		die("shmget 78");
	char *d = shmat(SHM_DETACHED_ID, NULL, 0);
	if (d == (void *)-1)
		die("shmat 78");
	strcpy(d, detached_text);
	shmdt(d);
	write_or_die("/proc/sys/kernel/sem_next_id", "88");
	if (semget(IPC_PRIVATE, 3, IPC_CREAT | 0600) != SEM_ID)
		die("semget");
	for (int i = 0; i < 3; i++)
		if (semctl(SEM_ID, i, SETVAL, 7 + i) < 0)
			die("semctl SETVAL");
	write_or_die("/proc/sys/kernel/msg_next_id", "99");
	if (msgget(IPC_PRIVATE, IPC_CREAT | 0600) != MSG_ID)
		die("msgget");
	struct msgbuf_ns m = {.mtype = 5};
	strcpy(m.mtext, msg_text);
	if (msgsnd(MSG_ID, &m, sizeof(msg_text), IPC_NOWAIT) < 0)
		die("msgsnd");
}

static void check_sysv(void)
{
	unsigned char want[SHM_SIZE];
	fill_pattern(want, SHM_SIZE, 42);
	check("shm-contents", memcmp(shm_mem, want, SHM_SIZE) == 0, "segment %d differs", SHM_ID);
	struct shmid_ds ds;
	check("shm-id", shmctl(SHM_ID, IPC_STAT, &ds) == 0 && ds.shm_segsz == SHM_SIZE, "IPC_STAT of %d: %s", SHM_ID, strerror(errno));
	char *d = shmat(SHM_DETACHED_ID, NULL, SHM_RDONLY);
	check("shm-detached", d != (void *)-1 && strcmp(d, detached_text) == 0 && shmctl(SHM_DETACHED_ID, IPC_STAT, &ds) == 0 &&
				      ds.shm_perm.__key == 0x4e53 && (ds.shm_perm.mode & 0777) == 0640,
	      "segment %d: %s", SHM_DETACHED_ID, d == (void *)-1 ? strerror(errno) : d);
	int vals_ok = 1;
	for (int i = 0; i < 3; i++)
		vals_ok = vals_ok && semctl(SEM_ID, i, GETVAL) == 7 + i;
	check("sem-values", vals_ok, "set %d: %d %d %d", SEM_ID, semctl(SEM_ID, 0, GETVAL), semctl(SEM_ID, 1, GETVAL), semctl(SEM_ID, 2, GETVAL));
	struct msgbuf_ns m = {0};
	ssize_t n = msgrcv(MSG_ID, &m, sizeof(m.mtext), 0, IPC_NOWAIT);
	check("msg-message", n == sizeof(msg_text) && m.mtype == 5 && strcmp(m.mtext, msg_text) == 0, "msgrcv of %d: %zd %s", MSG_ID, n,
	      n < 0 ? strerror(errno) : m.mtext);
}
static int went_back;
static char went_back_detail[256];

static void sample(void)
{
	struct timespec m, b;
	clock_gettime(CLOCK_MONOTONIC, &m);
	clock_gettime(CLOCK_BOOTTIME, &b);
	if (!went_back && (m.tv_sec < last_mono.tv_sec || (m.tv_sec == last_mono.tv_sec && m.tv_nsec < last_mono.tv_nsec))) {
		went_back = 1;
		snprintf(went_back_detail, sizeof(went_back_detail), "monotonic %ld.%09ld after %ld.%09ld", m.tv_sec, m.tv_nsec,
			 last_mono.tv_sec, last_mono.tv_nsec);
	}
	if (!went_back && (b.tv_sec < last_boot.tv_sec || (b.tv_sec == last_boot.tv_sec && b.tv_nsec < last_boot.tv_nsec))) {
		went_back = 1;
		snprintf(went_back_detail, sizeof(went_back_detail), "boottime %ld.%09ld after %ld.%09ld", b.tv_sec, b.tv_nsec,
			 last_boot.tv_sec, last_boot.tv_nsec);
	}
	last_mono = m;
	last_boot = b;
}

static int sysctl_is(const char *path, const char *want, char *got, size_t cap)
{
	ssize_t n = read_file(path, got, cap);
	if (n <= 0)
		return 0;
	got[strcspn(got, "\n")] = 0;
	return strcmp(got, want) == 0;
}

/* checks runs every check of one process, prefixed by who. */
static void checks(const char *who)
{
	char name[64], buf[256];
	char h[256] = "", d[256] = "";
	gethostname(h, sizeof(h));
	getdomainname(d, sizeof(d));
	snprintf(name, sizeof(name), "%s-hostname", who);
	check(name, strcmp(h, HOSTNAME) == 0, "%s", h);
	snprintf(name, sizeof(name), "%s-domainname", who);
	check(name, strcmp(d, DOMAINNAME) == 0, "%s", d);
	snprintf(name, sizeof(name), "%s-msgmax", who);
	check(name, sysctl_is("/proc/sys/kernel/msgmax", MSGMAX, buf, sizeof(buf)), "kernel.msgmax %s", buf);
	snprintf(name, sizeof(name), "%s-shmmni", who);
	check(name, sysctl_is("/proc/sys/kernel/shmmni", SHMMNI, buf, sizeof(buf)), "kernel.shmmni %s", buf);
	sample();
	snprintf(name, sizeof(name), "%s-clocks-forward", who);
	check(name, !went_back, "%s", went_back_detail);
	/* The offsets still show, and the clocks went no faster than the
	 * wall clock since start (the time spent dumped does not pass in the
	 * namespace). */
	struct timespec real;
	clock_gettime(CLOCK_REALTIME, &real);
	snprintf(name, sizeof(name), "%s-monotonic-offset", who);
	check(name, last_mono.tv_sec >= MONO_OFF, "monotonic %ld", last_mono.tv_sec);
	snprintf(name, sizeof(name), "%s-boottime-offset", who);
	check(name, last_boot.tv_sec - last_mono.tv_sec >= BOOT_OFF - MONO_OFF - 1, "boottime %ld, monotonic %ld", last_boot.tv_sec,
	      last_mono.tv_sec);
	snprintf(name, sizeof(name), "%s-monotonic-rate", who);
	check(name, last_mono.tv_sec - mono0.tv_sec <= real.tv_sec - real0.tv_sec + 1, "monotonic +%lds, wall clock +%lds",
	      last_mono.tv_sec - mono0.tv_sec, real.tv_sec - real0.tv_sec);
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "";
	if (strcmp(mode, "unshared") == 0) {
		if (unshare(CLONE_NEWTIME) < 0)
			die("unshare(CLONE_NEWTIME)");
		ready();
		wait_trigger(NULL);
		check("alive", 1, NULL);
		return finish();
	}
	if (sethostname(HOSTNAME, strlen(HOSTNAME)) < 0 || setdomainname(DOMAINNAME, strlen(DOMAINNAME)) < 0)
		die("sethostname");
	write_or_die("/proc/sys/kernel/msgmax", MSGMAX);
	write_or_die("/proc/sys/kernel/shmmni", SHMMNI);
	make_sysv();
	if (unshare(CLONE_NEWTIME) < 0)
		die("unshare(CLONE_NEWTIME)");
	char offs[128];
	snprintf(offs, sizeof(offs), "monotonic %ld 0\nboottime %ld 0\n", MONO_OFF, BOOT_OFF);
	write_or_die("/proc/self/timens_offsets", offs);
	int tfd = open("/proc/self/ns/time_for_children", O_RDONLY);
	if (tfd < 0 || setns(tfd, CLONE_NEWTIME) < 0)
		die("setns(time_for_children)");
	close(tfd);
	sample();
	mono0 = last_mono;
	clock_gettime(CLOCK_REALTIME, &real0);
	pid_t kids[2];
	for (int i = 0; i < 2; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			die("fork");
		if (kids[i] == 0) {
			if (i == 1 && strcmp(mode, "split") == 0 && unshare(CLONE_NEWUTS) < 0)
				die("unshare(CLONE_NEWUTS)");
			char who[16];
			snprintf(who, sizeof(who), "child%d", i + 1);
			pid_t pid = getpid();
			while (!triggered()) { /* not wait_trigger: its VERIFY line is the root's */
				sample();
				msleep(5);
			}
			check(who, getpid() == pid, "getpid %d, was %d", getpid(), pid);
			checks(who);
			_exit(n_fail ? 1 : 0);
		}
		report_child(i ? "child2" : "child1", kids[i]);
	}
	ready();
	wait_trigger(sample);
	check_identity();
	checks("root");
	check_sysv();
	for (int i = 0; i < 2; i++) {
		int st = 0;
		pid_t w = waitpid(kids[i], &st, 0);
		char name[32];
		snprintf(name, sizeof(name), "child%d-passed", i + 1);
		check(name, w == kids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0, "waitpid %d status %#x", w, st);
	}
	return finish();
}
