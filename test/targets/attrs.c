/*
 * attrs — task attributes beside the credentials, for the attribute tests.
 * The root has four threads, each with a scheduling policy, nice value,
 * priority, CPU affinity, I/O priority, timer slack (and default slack),
 * machine-check kill policy and name of its own; a child process has a
 * parent-death signal, is not dumpable, denies write+execute memory (MDWE),
 * has THP disabled and holds membarrier registrations; a second child runs
 * as nobody and set its parent-death signal and dumpability after changing
 * its uids (which resets both). On the trigger every
 * thread checks its own state with the getters (sched_getattr,
 * sched_getaffinity, ioprio_get, PR_GET_*), and the root collects the
 * results.
 */
#include "common.h"

#include <linux/membarrier.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif
#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif

struct sched_attr_ {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
};

static int sched_setattr_(pid_t tid, struct sched_attr_ *a) { return (int)syscall(SYS_sched_setattr, tid, a, 0); }
static int sched_getattr_(pid_t tid, struct sched_attr_ *a)
{
	return (int)syscall(SYS_sched_getattr, tid, a, sizeof(*a), 0);
}
static int ioprio_get_(void) { return (int)syscall(SYS_ioprio_get, 1, 0); }
static int ioprio_set_(int v) { return (int)syscall(SYS_ioprio_set, 1, 0, v); }
#define IOPRIO(class, level) ((class) << 13 | (level))

/* What one thread sets and later checks. */
struct want {
	const char *name;
	uint32_t policy;
	uint64_t flags; /* SCHED_FLAG_RESET_ON_FORK */
	int nice;
	uint32_t prio;
	uint64_t runtime; /* fair custom slice; 0: the kernel's */
	int cpu;          /* -1: every CPU */
	int ioprio;
	unsigned long slack, def_slack; /* def_slack 0: not checked */
	int mce;                        /* PR_MCE_KILL_GET value; -1: default */
};

enum { MAIN, RT, IDLE, RR, NT };
static struct want want[NT] = {
	[MAIN] = {"attrs", SCHED_BATCH, SCHED_FLAG_RESET_ON_FORK, 5, 0, 2500000, 0, IOPRIO(2, 6), 77777, 0, -1},
	[RT] = {"rt-worker", SCHED_FIFO, 0, -3, 10, 0, 1, IOPRIO(1, 2), 0, 0, -1},
	[IDLE] = {"idle-worker", SCHED_IDLE, 0, 7, 0, 0, -1, IOPRIO(3, 0), 300000, 200000, PR_MCE_KILL_EARLY},
	[RR] = {"rr-worker", SCHED_RR, SCHED_FLAG_RESET_ON_FORK, 0, 3, 0, -1, 0, 0, 0, PR_MCE_KILL_LATE},
};

struct shared {
	volatile int go;
	volatile int result[NT + 2]; /* the children's at NT, NT+1 */
	char detail[NT + 2][512];
};
static struct shared *sh;
static int ncpus;
static uint64_t base_slice;
static pthread_barrier_t setup_done;

/* apply sets thread i's attributes on the calling thread. */
static void apply(int i)
{
	struct want *w = &want[i];
	prctl(PR_SET_NAME, w->name);
	if (w->slack)
		prctl(PR_SET_TIMERSLACK, w->slack);
	if (w->mce >= 0 && prctl(PR_MCE_KILL, PR_MCE_KILL_SET, w->mce, 0, 0))
		die("PR_MCE_KILL");
	if (w->ioprio && ioprio_set_(w->ioprio))
		die("ioprio_set");
	if (w->cpu >= 0 && w->cpu < ncpus) {
		cpu_set_t s;
		CPU_ZERO(&s);
		CPU_SET(w->cpu, &s);
		if (sched_setaffinity(0, sizeof(s), &s))
			die("sched_setaffinity");
	}
	/* nice first, with a fair policy: a real-time thread keeps it. */
	struct sched_attr_ a = {.size = sizeof(a), .policy = SCHED_OTHER, .nice = w->nice};
	if (sched_setattr_(0, &a))
		die("sched_setattr nice");
	a = (struct sched_attr_){.size = sizeof(a), .policy = w->policy, .flags = w->flags, .nice = w->nice, .priority = w->prio,
				 .runtime = w->runtime};
	if (sched_setattr_(0, &a))
		die("sched_setattr");
}

/* verify checks thread i's attributes from inside. */
static int verify(int i, char *why, size_t cap)
{
	struct want *w = &want[i];
	struct sched_attr_ a;
	memset(&a, 0, sizeof(a));
	if (sched_getattr_(0, &a)) {
		snprintf(why, cap, "sched_getattr: %s", strerror(errno));
		return 0;
	}
	uint64_t runtime = w->runtime ? w->runtime : base_slice;
	int rt = w->policy == SCHED_FIFO || w->policy == SCHED_RR;
	/* sched_getattr shows no nice value of a real-time thread, which
	 * keeps one all the same. */
	errno = 0;
	int nice = getpriority(PRIO_PROCESS, sys_gettid());
	if (rt)
		a.nice = nice;
	if (a.policy != w->policy || (a.flags & SCHED_FLAG_RESET_ON_FORK) != w->flags || a.nice != w->nice ||
	    a.priority != w->prio || (!rt && a.runtime != runtime)) {
		snprintf(why, cap, "sched policy %u flags %#" PRIx64 " nice %d prio %u runtime %" PRIu64 ", want %u %#" PRIx64 " %d %u %" PRIu64,
			 a.policy, a.flags, a.nice, a.priority, a.runtime, w->policy, w->flags, w->nice, w->prio, runtime);
		return 0;
	}
	cpu_set_t s;
	if (sched_getaffinity(0, sizeof(s), &s)) {
		snprintf(why, cap, "sched_getaffinity: %s", strerror(errno));
		return 0;
	}
	int n = CPU_COUNT(&s);
	if (w->cpu >= 0 && w->cpu < ncpus ? (n != 1 || !CPU_ISSET(w->cpu, &s)) : n != ncpus) {
		snprintf(why, cap, "affinity: %d CPUs, want %s %d", n, w->cpu >= 0 ? "only CPU" : "all", w->cpu >= 0 ? w->cpu : ncpus);
		return 0;
	}
	int io = ioprio_get_();
	if (io != w->ioprio) {
		snprintf(why, cap, "ioprio %#x, want %#x", io, w->ioprio);
		return 0;
	}
	long slack = prctl(PR_GET_TIMERSLACK);
	unsigned long want_slack = rt ? 0 : w->slack ? w->slack : 50000;
	if ((unsigned long)slack != want_slack) {
		snprintf(why, cap, "timer slack %ld, want %lu", slack, want_slack);
		return 0;
	}
	if (w->def_slack) {
		prctl(PR_SET_TIMERSLACK, 0);
		long def = prctl(PR_GET_TIMERSLACK);
		prctl(PR_SET_TIMERSLACK, slack);
		if ((unsigned long)def != w->def_slack) {
			snprintf(why, cap, "default timer slack %ld, want %lu", def, w->def_slack);
			return 0;
		}
	}
	int mce = prctl(PR_MCE_KILL_GET, 0, 0, 0, 0);
	int want_mce = w->mce >= 0 ? w->mce : PR_MCE_KILL_DEFAULT;
	if (mce != want_mce) {
		snprintf(why, cap, "PR_MCE_KILL_GET %d, want %d", mce, want_mce);
		return 0;
	}
	char comm[64];
	read_comm(sys_gettid(), comm, sizeof(comm));
	comm[strcspn(comm, "\n")] = 0;
	if (strcmp(comm, w->name)) {
		snprintf(why, cap, "name %s, want %s", comm, w->name);
		return 0;
	}
	return 1;
}

static void *worker(void *arg)
{
	int i = (int)(intptr_t)arg;
	apply(i);
	report_tid(want[i].name, sys_gettid());
	pthread_barrier_wait(&setup_done);
	while (!sh->go)
		msleep(2);
	char why[512] = "";
	int ok = verify(i, why, sizeof(why));
	snprintf(sh->detail[i], sizeof(sh->detail[i]), "%s", why);
	sh->result[i] = ok ? 1 : 2;
	return NULL;
}

static volatile int pdeath_fired;
static void on_usr2(int sig)
{
	(void)sig;
	pdeath_fired++;
}

static void child(void)
{
	struct sigaction sa = {.sa_handler = on_usr2};
	sigaction(SIGUSR2, &sa, NULL);
	prctl(PR_SET_NAME, "attrs-child");
	if (prctl(PR_SET_PDEATHSIG, SIGUSR2))
		die("PR_SET_PDEATHSIG");
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		die("PR_SET_THP_DISABLE");
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) ||
	    syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0))
		die("membarrier register");
	long regs = syscall(SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0);
	if (prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0))
		die("PR_SET_MDWE");
	if (prctl(PR_SET_DUMPABLE, 0))
		die("PR_SET_DUMPABLE");
	while (!sh->go)
		msleep(2);
	char why[512] = "";
	int ok = 0;
	long v;
	int sig = 0;
	prctl(PR_GET_PDEATHSIG, &sig);
	if (sig != SIGUSR2)
		snprintf(why, sizeof(why), "PR_GET_PDEATHSIG %d, want SIGUSR2", sig);
	else if (pdeath_fired)
		snprintf(why, sizeof(why), "the parent-death signal fired %d times", pdeath_fired);
	else if ((v = prctl(PR_GET_DUMPABLE)) != 0)
		snprintf(why, sizeof(why), "PR_GET_DUMPABLE %ld, want 0", v);
	else if ((v = prctl(PR_GET_MDWE, 0, 0, 0, 0)) != PR_MDWE_REFUSE_EXEC_GAIN)
		snprintf(why, sizeof(why), "PR_GET_MDWE %ld, want %d", v, PR_MDWE_REFUSE_EXEC_GAIN);
	else if ((v = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0)) != 1)
		snprintf(why, sizeof(why), "PR_GET_THP_DISABLE %ld, want 1", v);
	else if ((v = syscall(SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0)) != regs)
		snprintf(why, sizeof(why), "membarrier registrations %#lx, want %#lx", v, regs);
	else if (mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED)
		snprintf(why, sizeof(why), "MDWE let a writable, executable mapping through");
	else
		ok = 1;
	snprintf(sh->detail[NT], sizeof(sh->detail[NT]), "%s", why);
	sh->result[NT] = ok ? 1 : 2;
	_exit(0);
}

/* user_child changed its uids, then set what that change resets. */
static void user_child(void)
{
	struct sigaction sa = {.sa_handler = on_usr2};
	sigaction(SIGUSR2, &sa, NULL);
	prctl(PR_SET_NAME, "attrs-nobody");
	if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
		die("setresuid nobody");
	if (prctl(PR_SET_PDEATHSIG, SIGUSR2) || prctl(PR_SET_DUMPABLE, 1))
		die("prctl after setresuid");
	while (!sh->go)
		msleep(2);
	char why[512] = "";
	int sig = 0;
	long d = prctl(PR_GET_DUMPABLE);
	prctl(PR_GET_PDEATHSIG, &sig);
	if (sig != SIGUSR2 || d != 1 || pdeath_fired)
		snprintf(why, sizeof(why), "PR_GET_PDEATHSIG %d, PR_GET_DUMPABLE %ld, fired %d; want SIGUSR2, 1, 0", sig, d, pdeath_fired);
	snprintf(sh->detail[NT + 1], sizeof(sh->detail[NT + 1]), "%s", why);
	sh->result[NT + 1] = why[0] ? 2 : 1;
	_exit(0);
}

static char loginuid[32], sessionid[32];

int main(int argc, char **argv)
{
	target_init(argc, argv);
	ncpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpus < 2)
		want[RT].cpu = -1;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	struct sched_attr_ a = {0};
	sched_getattr_(0, &a);
	base_slice = a.runtime;
	/* loginuid=N: set the audit login uid first (which makes a new audit
	 * session, unless N is -1: none). */
	if (argc > 2 && !strncmp(argv[2], "loginuid=", 9)) {
		int fd = open("/proc/self/loginuid", O_WRONLY);
		if (fd < 0 || write(fd, argv[2] + 9, strlen(argv[2] + 9)) < 0)
			die("write /proc/self/loginuid");
		close(fd);
	}
	/* root-pdeath: the root itself has a parent-death signal. */
	int root_pdeath = argc > 2 && !strcmp(argv[2], "root-pdeath");
	if (root_pdeath && prctl(PR_SET_PDEATHSIG, SIGUSR2))
		die("PR_SET_PDEATHSIG");
	read_file("/proc/self/loginuid", loginuid, sizeof(loginuid));
	read_file("/proc/self/sessionid", sessionid, sizeof(sessionid));
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0)
		child();
	report_child("child", c);
	pid_t u = fork();
	if (u < 0)
		die("fork");
	if (u == 0)
		user_child();
	report_child("user-child", u);
	pthread_barrier_init(&setup_done, NULL, NT);
	pthread_t t[NT];
	for (int i = 1; i < NT; i++) {
		/* A thread's default slack is its creator's slack now. */
		prctl(PR_SET_TIMERSLACK, i == IDLE ? want[IDLE].def_slack : 50000);
		if (pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i))
			die("pthread_create");
	}
	pthread_barrier_wait(&setup_done);
	apply(MAIN);
	msleep(20);
	ready();
	wait_trigger(NULL);
	check_identity();
	sh->go = 1;
	char why[512] = "";
	check("main", verify(MAIN, why, sizeof(why)), "%s", why);
	for (int i = 1; i <= NT + 1; i++) {
		for (int n = 0; n < 5000 && !sh->result[i]; n++)
			msleep(1);
		const char *name = i < NT ? want[i].name : i == NT ? "child" : "user-child";
		check(name, sh->result[i] == 1, "%s", sh->result[i] ? sh->detail[i] : "no result");
	}
	if (root_pdeath) {
		int sig = 0;
		prctl(PR_GET_PDEATHSIG, &sig);
		check("root-pdeathsig", sig == SIGUSR2, "PR_GET_PDEATHSIG %d, want SIGUSR2", sig);
	}
	char l[32], s[32];
	read_file("/proc/self/loginuid", l, sizeof(l));
	read_file("/proc/self/sessionid", s, sizeof(s));
	check("loginuid", !strcmp(l, loginuid), "loginuid %s, was %s", l, loginuid);
	check("sessionid", !strcmp(s, sessionid), "sessionid %s, was %s", s, sessionid);
	int st;
	check("child-exit", waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
	check("user-child-exit", waitpid(u, &st, 0) == u && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
	return finish();
}
