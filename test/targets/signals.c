/*
 * signals: signal dispositions, masks, pending and queued signals, timers and
 * the rest of the per-process and per-thread kernel state that only the task
 * can see (umask, rlimits, comm, personality, oom_score_adj, no_new_privs,
 * seccomp, rseq, robust list, clear_child_tid).
 */
#include "common.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/audit.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <linux/futex.h>

#define SIG_RTQ (SIGRTMIN + 3)
#define SIG_TIMER (SIGRTMIN + 5)

struct ksigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	uint64_t mask;
};

static struct ksigaction act_before[65];
static char altstack[64 * 1024];
static stack_t ss_before;
static volatile int usr1_count, usr1_code, usr1_pid;
static volatile int rt_count, rt_vals[4], rt_codes[4];
static volatile int usr2_on_altstack = -1, usr2_count;
static volatile int hup_count, hup_nodefer_ok = -1;
static volatile int urg_count, urg_tid, urg_code;
static struct itimerval itv_before;
static timer_t timer_id;
static struct itimerspec its_before;
static char timers_before[4096];
static char status_main_before[4096], status_worker_before[4096];
static struct rlimit nofile_before, core_before;
static int personality_before;
static struct utsname uts_before;
static void *robust_before;
static size_t robust_len_before;
static void *worker_robust_before;

static pthread_t worker;
static pid_t worker_tid;
static volatile int worker_go, worker_done;
static char worker_comm[32];
static sigset_t worker_mask_before;
static void *worker_robust_after;
static int worker_mask_ok = -1, worker_pending_urg = -1, worker_acct_eperm = -1;

static void on_usr1(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)uc;
	usr1_count++;
	usr1_code = si->si_code;
	usr1_pid = si->si_pid;
}

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)uc;
	if (rt_count < 4) {
		rt_vals[rt_count] = si->si_value.sival_int;
		rt_codes[rt_count] = si->si_code;
	}
	rt_count++;
}

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)si, (void)uc;
	char here;
	usr2_count++;
	usr2_on_altstack = &here >= altstack && &here < altstack + sizeof(altstack);
}

static void on_hup(int sig)
{
	sigset_t cur;
	(void)sig;
	hup_count++;
	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	hup_nodefer_ok = !sigismember(&cur, SIGHUP);
}

static void on_urg(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)uc;
	urg_count++;
	urg_tid = sys_gettid();
	urg_code = si->si_code;
}

static void on_nothing(int sig) { (void)sig; }

/* mask_eq compares the 64 signals the kernel knows, not glibc's 1024 bits. */
static int mask_eq(const sigset_t *a, const sigset_t *b)
{
	for (int s = 1; s <= 64; s++)
		if (sigismember(a, s) != sigismember(b, s))
			return 0;
	return 1;
}

static void get_action(int sig, struct ksigaction *ka)
{
	memset(ka, 0, sizeof(*ka));
	syscall(SYS_rt_sigaction, sig, NULL, ka, 8);
}

static void set_action(int sig, void *fn, int flags, int masked)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	if (flags & SA_SIGINFO)
		sa.sa_sigaction = fn;
	else
		sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	if (masked)
		sigaddset(&sa.sa_mask, masked);
	if (sigaction(sig, &sa, NULL))
		die("sigaction");
}

/* signal_status keeps the signal lines of a thread's status file. */
static void signal_status(pid_t tid, char *dst, size_t cap)
{
	static char buf[8192];
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	dst[0] = 0;
	if (read_file(path, buf, sizeof(buf)) < 0)
		return;
	size_t n = 0;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
		if ((!strncmp(line, "Sig", 3) && strncmp(line, "SigQ", 4)) || !strncmp(line, "ShdPnd", 6) || !strncmp(line, "NoNewPrivs", 10) ||
		    !strncmp(line, "Seccomp", 7))
			n += (size_t)snprintf(dst + n, cap - n, "%s\n", line);
}

static struct rseq *rseq_area(void)
{
	if (!__rseq_size)
		return NULL;
	return (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
}

static void *worker_main(void *arg)
{
	(void)arg;
	worker_tid = sys_gettid();
	prctl(PR_SET_NAME, "sigworker");
	sigset_t m;
	pthread_sigmask(SIG_SETMASK, NULL, &m);
	sigaddset(&m, SIGTTIN);
	pthread_sigmask(SIG_SETMASK, &m, NULL);
	worker_mask_before = m;
	size_t len;
	syscall(SYS_get_robust_list, 0, &worker_robust_before, &len);
	while (!worker_go)
		msleep(5);
	/* After the trigger: verify from this thread's side. */
	sigset_t now, pend;
	pthread_sigmask(SIG_SETMASK, NULL, &now);
	worker_mask_ok = mask_eq(&now, &worker_mask_before);
	sigpending(&pend);
	worker_pending_urg = sigismember(&pend, SIGURG);
	errno = 0;
	worker_acct_eperm = syscall(SYS_acct, NULL) == -1 && errno == EPERM;
	read_comm(sys_gettid(), worker_comm, sizeof(worker_comm));
	syscall(SYS_get_robust_list, 0, &worker_robust_after, &len);
	sigset_t urg;
	sigemptyset(&urg);
	sigaddset(&urg, SIGURG);
	pthread_sigmask(SIG_UNBLOCK, &urg, NULL);
	worker_done = 1;
	return NULL;
}

static int install_seccomp(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_acct, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {sizeof(f) / sizeof(f[0]), f};
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

static int on_cpu(struct rseq *rs, int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		return -1;
	sched_yield();
	return (int)rs->cpu_id;
}

int main(int argc, char **argv)
{
	target_init(argc, argv);

	/* Dispositions with different flags and masks. */
	if (sigaltstack(&(stack_t){.ss_sp = altstack, .ss_size = sizeof(altstack)}, NULL))
		die("sigaltstack");
	set_action(SIGUSR1, on_usr1, SA_SIGINFO | SA_RESTART, SIGUSR2);
	set_action(SIGUSR2, on_usr2, SA_SIGINFO | SA_ONSTACK, 0);
	set_action(SIGHUP, on_hup, SA_NODEFER | SA_RESETHAND, SIGINT);
	set_action(SIG_RTQ, on_rt, SA_SIGINFO, 0);
	set_action(SIGURG, on_urg, SA_SIGINFO | SA_RESTART, 0);
	set_action(SIGALRM, on_nothing, 0, 0);
	set_action(SIG_TIMER, on_nothing, SA_RESTART, SIGALRM);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	/* Ignored SIGTRAP: the kernel resets an ignored signal it forces (an
	 * int3) to SIG_DFL, and restore's injections end on an int3. */
	signal(SIGTRAP, SIG_IGN);

	/* Blocked in every thread: SIGUSR1 (pending on main), SIGURG (pending on
	 * the worker), the RT signal (queued on the process). */
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	sigaddset(&m, SIGURG);
	sigaddset(&m, SIG_RTQ);
	sigaddset(&m, SIGWINCH);
	pthread_sigmask(SIG_SETMASK, &m, NULL);

	umask(027);
	getrlimit(RLIMIT_NOFILE, &nofile_before);
	nofile_before.rlim_cur = 777 < nofile_before.rlim_max ? 777 : nofile_before.rlim_max;
	core_before = (struct rlimit){12345 * 1024, RLIM_INFINITY};
	if (setrlimit(RLIMIT_NOFILE, &nofile_before) || setrlimit(RLIMIT_CORE, &core_before))
		die("setrlimit");
	prctl(PR_SET_NAME, "sigmain");
	read_comm(getpid(), saved_comm, sizeof(saved_comm));
	/* UNAME26 only changes what uname(2) reports: harmless for the test. */
	if (personality(PER_LINUX | UNAME26) < 0)
		die("personality");
	personality_before = personality(0xffffffff);
	uname(&uts_before);
	int fd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (fd < 0 || write(fd, "123", 3) != 3)
		die("oom_score_adj");
	close(fd);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || install_seccomp())
		die("seccomp");
	syscall(SYS_get_robust_list, 0, &robust_before, &robust_len_before);

	if (pthread_create(&worker, NULL, worker_main, NULL))
		die("pthread_create");
	while (!worker_tid)
		msleep(1);
	msleep(20);

	/* Pending signals: thread-directed on main and on the worker, and two
	 * queued RT signals on the process. */
	raise(SIGUSR1);
	syscall(SYS_tgkill, getpid(), worker_tid, SIGURG);
	sigqueue(getpid(), SIG_RTQ, (union sigval){.sival_int = 111});
	sigqueue(getpid(), SIG_RTQ, (union sigval){.sival_int = 222});

	/* Timers far in the future. */
	itv_before = (struct itimerval){{500, 0}, {1000, 0}};
	if (setitimer(ITIMER_REAL, &itv_before, NULL))
		die("setitimer");
	struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIG_TIMER};
	sev.sigev_value.sival_int = 4242;
	if (timer_create(CLOCK_MONOTONIC, &sev, &timer_id))
		die("timer_create");
	its_before = (struct itimerspec){{100, 0}, {2000, 0}};
	if (timer_settime(timer_id, 0, &its_before, NULL))
		die("timer_settime");
	getitimer(ITIMER_REAL, &itv_before);
	timer_gettime(timer_id, &its_before);
	read_file("/proc/self/timers", timers_before, sizeof(timers_before));

	for (int s = 1; s <= 64; s++)
		get_action(s, &act_before[s]);
	sigaltstack(NULL, &ss_before);
	signal_status(getpid(), status_main_before, sizeof(status_main_before));
	signal_status(worker_tid, status_worker_before, sizeof(status_worker_before));
	report_tid("sigworker", worker_tid);
	ready();
	wait_trigger(NULL);

	check_identity();
	char st[4096];
	signal_status(getpid(), st, sizeof(st));
	check("status-signals-main", !strcmp(st, status_main_before), "now:\n%s\nwas:\n%s", st,
	      status_main_before);
	signal_status(worker_tid, st, sizeof(st));
	check("status-signals-worker", !strcmp(st, status_worker_before), "now:\n%s\nwas:\n%s", st,
	      status_worker_before);

	int bad = 0;
	for (int s = 1; s <= 64; s++) {
		struct ksigaction ka;
		get_action(s, &ka);
		if (memcmp(&ka, &act_before[s], sizeof(ka)) && !bad)
			bad = s;
	}
	check("sigactions", !bad, "signal %d: handler/flags/restorer/mask changed", bad);
	stack_t ss;
	sigaltstack(NULL, &ss);
	check("sigaltstack", ss.ss_sp == ss_before.ss_sp && ss.ss_size == ss_before.ss_size &&
				     ss.ss_flags == ss_before.ss_flags,
	      "sp %p size %zu flags %d, was %p %zu %d", ss.ss_sp, ss.ss_size, ss.ss_flags, ss_before.ss_sp,
	      ss_before.ss_size, ss_before.ss_flags);

	sigset_t pend, cur;
	sigpending(&pend);
	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	check("mask-main", mask_eq(&cur, &m), "blocked mask changed");
	check("pending-main", sigismember(&pend, SIGUSR1) && sigismember(&pend, SIG_RTQ),
	      "SIGUSR1 pending %d, RT pending %d", sigismember(&pend, SIGUSR1), sigismember(&pend, SIG_RTQ));
	sigset_t one;
	sigemptyset(&one);
	sigaddset(&one, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &one, NULL);
	check("pending-sigusr1-delivered", usr1_count == 1 && usr1_code == SI_TKILL && usr1_pid == saved_pid,
	      "count %d si_code %d si_pid %d", usr1_count, usr1_code, usr1_pid);
	sigemptyset(&one);
	sigaddset(&one, SIG_RTQ);
	pthread_sigmask(SIG_UNBLOCK, &one, NULL);
	check("queued-rt-delivered", rt_count == 2 && rt_vals[0] == 111 && rt_vals[1] == 222 &&
					     rt_codes[0] == SI_QUEUE && rt_codes[1] == SI_QUEUE,
	      "count %d values %d,%d codes %d,%d", rt_count, rt_vals[0], rt_vals[1], rt_codes[0], rt_codes[1]);

	worker_go = 1;
	for (int i = 0; i < 500 && !worker_done; i++)
		msleep(10);
	check("worker-mask", worker_mask_ok == 1, "worker's blocked mask changed (%d)", worker_mask_ok);
	check("worker-pending-tgkill", worker_pending_urg == 1, "SIGURG pending on worker: %d", worker_pending_urg);
	check("worker-tgkill-delivered", urg_count == 1 && urg_tid == worker_tid && urg_code == SI_TKILL,
	      "count %d tid %d (worker %d) si_code %d", urg_count, urg_tid, worker_tid, urg_code);
	check("worker-comm", !strcmp(worker_comm, "sigworker\n"), "comm %s", worker_comm);
	check("worker-seccomp", worker_acct_eperm == 1, "acct in worker not EPERM (%d)", worker_acct_eperm);
	check("worker-robust-list", worker_robust_after == worker_robust_before, "head %p, was %p",
	      worker_robust_after, worker_robust_before);
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 5;
	int jerr = pthread_timedjoin_np(worker, NULL, &dl);
	check("join-clear-child-tid", jerr == 0, "pthread_timedjoin_np: %s", strerror(jerr));

	raise(SIGUSR2);
	check("sigaltstack-used", usr2_count == 1 && usr2_on_altstack == 1, "count %d on altstack %d",
	      usr2_count, usr2_on_altstack);
	raise(SIGHUP);
	struct sigaction now;
	sigaction(SIGHUP, NULL, &now);
	check("sa-nodefer-resethand", hup_count == 1 && hup_nodefer_ok == 1 && now.sa_handler == SIG_DFL,
	      "count %d nodefer %d reset %d", hup_count, hup_nodefer_ok, now.sa_handler == SIG_DFL);

	struct itimerval itv;
	getitimer(ITIMER_REAL, &itv);
	check("itimer-real", itv.it_interval.tv_sec == 500 && itv.it_interval.tv_usec == 0 &&
				     itv.it_value.tv_sec > 0 && itv.it_value.tv_sec <= itv_before.it_value.tv_sec,
	      "interval %ld.%06ld remaining %ld s (was %ld s)", (long)itv.it_interval.tv_sec,
	      (long)itv.it_interval.tv_usec, (long)itv.it_value.tv_sec, (long)itv_before.it_value.tv_sec);
	struct itimerspec its;
	int terr = timer_gettime(timer_id, &its);
	check("posix-timer", terr == 0 && its.it_interval.tv_sec == 100 && its.it_value.tv_sec > 0 &&
				     its.it_value.tv_sec <= its_before.it_value.tv_sec,
	      "timer_gettime(%p) = %d (%s) interval %ld remaining %ld (was %ld)", timer_id, terr,
	      terr ? strerror(errno) : "ok", (long)its.it_interval.tv_sec, (long)its.it_value.tv_sec,
	      (long)its_before.it_value.tv_sec);
	char timers[4096];
	read_file("/proc/self/timers", timers, sizeof(timers));
	check("proc-timers", !strcmp(timers, timers_before), "now:\n%s\nwas:\n%s", timers, timers_before);

	mode_t um = umask(0);
	umask(um);
	check("umask", um == 027, "umask %03o", um);
	struct rlimit rl, rc;
	getrlimit(RLIMIT_NOFILE, &rl);
	getrlimit(RLIMIT_CORE, &rc);
	check("rlimits", rl.rlim_cur == nofile_before.rlim_cur && rl.rlim_max == nofile_before.rlim_max &&
				 rc.rlim_cur == core_before.rlim_cur && rc.rlim_max == core_before.rlim_max,
	      "nofile %lu/%lu core %lu/%lu", (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max,
	      (unsigned long)rc.rlim_cur, (unsigned long)rc.rlim_max);
	struct utsname uts;
	uname(&uts);
	int pers = personality(0xffffffff);
	check("personality", pers == personality_before && !strcmp(uts.release, uts_before.release),
	      "personality %#x (was %#x) release %s (was %s)", pers, personality_before, uts.release,
	      uts_before.release);
	char oom[32] = "";
	read_file("/proc/self/oom_score_adj", oom, sizeof(oom));
	check("oom_score_adj", !strcmp(oom, "123\n"), "oom_score_adj %s", oom);
	check("no_new_privs", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "PR_GET_NO_NEW_PRIVS is 0");
	errno = 0;
	long ar = syscall(SYS_acct, NULL);
	check("seccomp-filter", ar == -1 && errno == EPERM, "acct returned %ld errno %d", ar, errno);

	void *rh;
	size_t rlen;
	syscall(SYS_get_robust_list, 0, &rh, &rlen);
	check("robust-list", rh == robust_before && rlen == robust_len_before, "head %p len %zu, was %p %zu", rh,
	      rlen, robust_before, robust_len_before);

	/* rseq: the kernel must still update cpu_id when we move between CPUs;
	 * a stale registration would keep the dumped value. */
	struct rseq *rs = rseq_area();
	if (!rs) {
		out("NOTE glibc did not register rseq; rseq not checked\n");
	} else {
		cpu_set_t orig;
		sched_getaffinity(0, sizeof(orig), &orig);
		int ncpu = CPU_COUNT(&orig), seen[2] = {-1, -1}, want[2] = {-1, -1}, k = 0;
		for (int c = 0; c < CPU_SETSIZE && k < 2; c++)
			if (CPU_ISSET(c, &orig)) {
				want[k] = c;
				seen[k] = on_cpu(rs, c);
				k++;
			}
		sched_setaffinity(0, sizeof(orig), &orig);
		check("rseq-cpu-id", (int)rs->cpu_id >= 0 && seen[0] == want[0] && (ncpu < 2 || seen[1] == want[1]),
		      "cpu_id %d; on cpu %d saw %d, on cpu %d saw %d", (int)rs->cpu_id, want[0], seen[0], want[1],
		      seen[1]);
	}
	return finish();
}
