/*
 * stopped — processes in a group stop, for the job-control tests. Every
 * process here has a second thread, so a stop is a whole thread group's.
 * Started as `stopped TRIGGER MODE`:
 *
 *   root          the root stops itself with SIGSTOP after READY. The test
 *                 sees it stopped before and after restore, continues it,
 *                 then fires the trigger; the root checks it was continued
 *                 once and its threads ran on.
 *   child         the root SIGSTOPs a child and collects neither the stop
 *                 report nor the SIGCHLD: after restore both must still be
 *                 there, exactly (si_code, si_status, si_pid). Signals sent
 *                 to the stopped child, one to the process and one to its
 *                 second thread, stay pending and are handled once it is
 *                 continued, each once, the second by that thread.
 *   child-reaped  the same, but the root collected the report with
 *                 waitpid(WUNTRACED) and the SIGCHLD with sigwaitinfo: after
 *                 restore neither may be there again.
 *   continued     the root stops a child, collects that, continues it, and
 *                 collects neither the continue report nor its SIGCHLD:
 *                 after restore the child runs, both are there, and the
 *                 child's SIGCONT handler has still run only once.
 *   group         the root SIGTSTPs the process group of a child A and A's
 *                 child B; it collects A's report, and A (stopped) cannot
 *                 collect B's: after restore the root finds nothing to
 *                 collect of A, and A, once continued, finds B's SIGCHLD of
 *                 the SIGTSTP stop pending and B's continue to collect.
 *
 * Stopped processes must not run between READY and the trigger: their
 * threads count in shared memory, and the counts must not move.
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

struct shared {
	volatile uint64_t count[2][2]; /* [process A/child, B][thread] */
	volatile int result[2];        /* 0 pending, 1 pass, 2 fail */
	volatile int b_go;             /* A has looked at B's continue: B may exit */
	volatile int go;               /* continued: the root has checked, the child may exit */
	volatile pid_t worker[2];      /* the second thread of each process */
	char detail[2][512];
};

static struct shared *sh;
static volatile int conts;
static const char *mode;

static void on_cont(int sig)
{
	(void)sig;
	conts++;
}

struct worker {
	int proc;
};

static volatile int usr1, usr2;
static volatile pid_t usr2_tid;

static void on_usr(int sig)
{
	if (sig == SIGUSR1)
		usr1++;
	else {
		usr2++;
		usr2_tid = sys_gettid();
	}
}

/* usr_verify: the signals sent while the process was stopped were each
 * handled once, SIGUSR2 by the thread it was sent to. */
static int usr_verify(char *why, size_t cap)
{
	for (int i = 0; i < 1000 && (!usr1 || !usr2); i++)
		msleep(1);
	if (usr1 != 1 || usr2 != 1 || usr2_tid != sh->worker[0]) {
		snprintf(why, cap, "SIGUSR1 handled %d times, SIGUSR2 %d times by %d; want once each, SIGUSR2 by %d", usr1, usr2,
			 usr2_tid, sh->worker[0]);
		return 0;
	}
	return 1;
}

static void *counter(void *arg)
{
	int p = ((struct worker *)arg)->proc;
	sh->worker[p] = sys_gettid();
	for (;;) {
		__atomic_add_fetch(&sh->count[p][1], 1, __ATOMIC_SEQ_CST);
		msleep(1);
	}
	return NULL;
}

static void start_counter(int p)
{
	static struct worker w[2];
	pthread_t t;
	w[p].proc = p;
	if (pthread_create(&t, NULL, counter, &w[p]))
		die("pthread_create");
}

/* stopped_state reads the state letter of every thread of pid into buf
 * ("TT" for two stopped threads). */
static void thread_states(pid_t pid, char *buf, size_t cap)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	size_t n = 0;
	buf[0] = 0;
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) && n + 1 < cap) {
		if (e->d_name[0] == '.')
			continue;
		char stat[512], spath[320];
		snprintf(spath, sizeof(spath), "/proc/%d/task/%s/stat", pid, e->d_name);
		if (read_file(spath, stat, sizeof(stat)) < 0)
			continue;
		char *rp = strrchr(stat, ')');
		if (rp && rp[1] && rp[2])
			buf[n++] = rp[2];
	}
	buf[n] = 0;
	closedir(d);
}

static int all_stopped(pid_t pid)
{
	char st[64];
	thread_states(pid, st, sizeof(st));
	if (strlen(st) != 2)
		return 0;
	return st[0] == 'T' && st[1] == 'T';
}

/* report returns what waitid(WNOWAIT) tells of pid for which
 * (WSTOPPED/WCONTINUED): the si_code, 0 if nothing; status gets si_status. */
static int report(pid_t pid, int which, int *status)
{
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, pid, &si, which | WNOHANG | WNOWAIT) < 0)
		return -errno;
	if (si.si_pid != pid)
		return 0;
	*status = si.si_status;
	return si.si_code;
}

static int sigchld_pending(void)
{
	sigset_t s;
	sigpending(&s);
	return sigismember(&s, SIGCHLD);
}

/* take_sigchld collects a pending SIGCHLD; returns its si_code, or 0. */
static int take_sigchld(siginfo_t *si)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGCHLD);
	struct timespec zero = {0, 0};
	memset(si, 0, sizeof(*si));
	if (sigtimedwait(&s, si, &zero) != SIGCHLD)
		return 0;
	return si->si_code;
}

static void block_sigchld(void)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGCHLD);
	sigprocmask(SIG_BLOCK, &s, NULL);
}

static void wait_stopped(pid_t pid)
{
	siginfo_t si;
	for (int i = 0; i < 2000; i++) {
		if (all_stopped(pid))
			break;
		msleep(1);
	}
	memset(&si, 0, sizeof(si));
	waitid(P_PID, pid, &si, WSTOPPED | WNOWAIT);
}

/* A stopped child's life after SIGCONT: record the check, then exit. */
static void child_after_cont(int p, pid_t pid, pid_t ppid, int (*verify)(char *, size_t))
{
	while (!conts)
		msleep(1);
	/* B stays until A has collected its continue: a zombie has none. */
	while (p == 1 && !sh->b_go)
		msleep(1);
	char why[512] = "";
	int ok = getpid() == pid && getppid() == ppid && conts == 1;
	if (!ok)
		snprintf(why, sizeof(why), "pid %d ppid %d conts %d, were %d %d 1", getpid(), getppid(), conts, pid, ppid);
	if (ok && verify)
		ok = verify(why, sizeof(why));
	snprintf(sh->detail[p], sizeof(sh->detail[p]), "%s", why);
	sh->result[p] = ok ? 1 : 2;
	_exit(0);
}

static pid_t kid_b;

/* A's check after its group was continued: B's stop SIGCHLD is pending
 * (A was stopped when B stopped), and B's continue is there to collect. */
static int a_verify(char *why, size_t cap)
{
	siginfo_t si;
	int code = take_sigchld(&si);
	if (code != CLD_STOPPED || si.si_pid != kid_b || si.si_status != SIGTSTP) {
		snprintf(why, cap, "SIGCHLD of B: code %d pid %d status %d, want CLD_STOPPED %d SIGTSTP", code, si.si_pid,
			 si.si_status, kid_b);
		return 0;
	}
	int st = 0;
	for (int i = 0; i < 2000 && (code = report(kid_b, WCONTINUED, &st)) == 0; i++)
		msleep(1);
	if (code != CLD_CONTINUED) {
		sh->b_go = 1;
		snprintf(why, cap, "B's continue: waitid code %d, want CLD_CONTINUED", code);
		return 0;
	}
	waitpid(kid_b, &st, WCONTINUED);
	sh->b_go = 1;
	for (int i = 0; i < 5000 && !sh->result[1]; i++)
		msleep(1);
	if (sh->result[1] != 1) {
		snprintf(why, cap, "B: %s", sh->result[1] ? sh->detail[1] : "no result");
		return 0;
	}
	if (waitpid(kid_b, &st, 0) != kid_b || !WIFEXITED(st)) {
		snprintf(why, cap, "B did not exit");
		return 0;
	}
	return 1;
}

static void setup_cont_handler(void)
{
	struct sigaction sa = {.sa_handler = on_cont};
	sigaction(SIGCONT, &sa, NULL);
}

static uint64_t counts_at_ready[2][2];

static int counts_frozen(int procs, char *why, size_t cap)
{
	for (int p = 0; p < procs; p++)
		for (int t = 0; t < 2; t++)
			if (sh->count[p][t] != counts_at_ready[p][t]) {
				snprintf(why, cap, "process %d thread %d counted %" PRIu64 " -> %" PRIu64 " while stopped", p, t,
					 counts_at_ready[p][t], sh->count[p][t]);
				return 0;
			}
	return 1;
}

static void mode_child(int reaped)
{
	block_sigchld();
	pid_t parent = getpid();
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		setup_cont_handler();
		struct sigaction sa = {.sa_handler = on_usr};
		sigaction(SIGUSR1, &sa, NULL);
		sigaction(SIGUSR2, &sa, NULL);
		start_counter(0);
		child_after_cont(0, getpid(), parent, usr_verify);
	}
	report_child("stopped", c);
	while (!sh->worker[0])
		msleep(1);
	kill(c, SIGSTOP);
	wait_stopped(c);
	kill(c, SIGUSR1);
	syscall(SYS_tgkill, c, sh->worker[0], SIGUSR2);
	/* A stop signal sent to a stopped process stays pending (no thread
	 * wants it) until SIGCONT flushes it. */
	kill(c, SIGSTOP);
	siginfo_t si;
	int st;
	if (reaped) {
		if (waitpid(c, &st, WUNTRACED) != c || !WIFSTOPPED(st))
			die("waitpid WUNTRACED");
		if (take_sigchld(&si) != CLD_STOPPED)
			die("sigtimedwait SIGCHLD");
	} else {
		for (int i = 0; i < 2000 && !sigchld_pending(); i++)
			msleep(1);
	}
	memcpy(counts_at_ready, (void *)sh->count, sizeof(counts_at_ready));
	ready();
	wait_trigger(NULL);
	check_identity();
	char why[512] = "";
	check("child-stopped", all_stopped(c), "thread states of %d are not all T", c);
	check("child-frozen", counts_frozen(1, why, sizeof(why)), "%s", why);
	int code = report(c, WSTOPPED, &st);
	if (reaped) {
		check("stop-report-collected", code == 0, "waitid(WSTOPPED) finds code %d status %d: already collected", code, st);
		check("sigchld-collected", !sigchld_pending(), "SIGCHLD pending again");
	} else {
		check("stop-report", code == CLD_STOPPED && st == SIGSTOP, "waitid(WSTOPPED): code %d status %d, want CLD_STOPPED SIGSTOP", code, st);
		code = take_sigchld(&si);
		check("sigchld-stopped", code == CLD_STOPPED && si.si_pid == c && si.si_status == SIGSTOP,
		      "SIGCHLD: code %d pid %d status %d, want CLD_STOPPED %d SIGSTOP", code, si.si_pid, si.si_status, c);
		check("stop-collect", waitpid(c, &st, WUNTRACED | WNOHANG) == c && WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP,
		      "waitpid WUNTRACED did not collect the stop");
	}
	kill(c, SIGCONT);
	for (int i = 0; i < 5000 && !sh->result[0]; i++)
		msleep(1);
	check("child-after-cont", sh->result[0] == 1, "%s", sh->result[0] ? sh->detail[0] : "no result");
	check("child-exit", waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
}

static void mode_continued(void)
{
	block_sigchld();
	pid_t parent = getpid();
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		setup_cont_handler();
		start_counter(0);
		while (!sh->go)
			msleep(1);
		char why[512] = "";
		int ok = getppid() == parent && conts == 1;
		if (!ok)
			snprintf(why, sizeof(why), "ppid %d conts %d, want %d 1", getppid(), conts, parent);
		snprintf(sh->detail[0], sizeof(sh->detail[0]), "%s", why);
		sh->result[0] = ok ? 1 : 2;
		_exit(0);
	}
	report_child("continued", c);
	msleep(20);
	kill(c, SIGSTOP);
	wait_stopped(c);
	int st;
	siginfo_t si;
	if (waitpid(c, &st, WUNTRACED) != c || !WIFSTOPPED(st))
		die("waitpid WUNTRACED");
	take_sigchld(&si);
	kill(c, SIGCONT);
	for (int i = 0; i < 2000 && report(c, WCONTINUED, &st) != CLD_CONTINUED; i++)
		msleep(1);
	for (int i = 0; i < 2000 && !sigchld_pending(); i++)
		msleep(1);
	ready();
	wait_trigger(NULL);
	check_identity();
	check("child-runs", !all_stopped(c), "child %d is stopped", c);
	int code = report(c, WSTOPPED, &st);
	check("no-stop-report", code == 0, "waitid(WSTOPPED) finds code %d status %d", code, st);
	code = report(c, WCONTINUED, &st);
	check("continue-report", code == CLD_CONTINUED && st == SIGCONT, "waitid(WCONTINUED): code %d status %d, want CLD_CONTINUED SIGCONT", code, st);
	code = take_sigchld(&si);
	check("sigchld-continued", code == CLD_CONTINUED && si.si_pid == c && si.si_status == SIGCONT,
	      "SIGCHLD: code %d pid %d status %d, want CLD_CONTINUED %d SIGCONT", code, si.si_pid, si.si_status, c);
	check("continue-collect", waitpid(c, &st, WCONTINUED | WNOHANG) == c && WIFCONTINUED(st), "waitpid WCONTINUED did not collect the continue");
	sh->go = 1;
	for (int i = 0; i < 5000 && !sh->result[0]; i++)
		msleep(1);
	check("child-after", sh->result[0] == 1, "%s", sh->result[0] ? sh->detail[0] : "no result");
	check("child-exit", waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
}

static void mode_group(void)
{
	block_sigchld();
	pid_t root = getpid();
	pid_t a = fork();
	if (a < 0)
		die("fork");
	if (a == 0) {
		setpgid(0, 0);
		setup_cont_handler();
		pid_t me = getpid();
		kid_b = fork();
		if (kid_b == 0) {
			start_counter(1);
			child_after_cont(1, getpid(), me, NULL);
		}
		start_counter(0);
		child_after_cont(0, me, root, a_verify);
	}
	setpgid(a, a);
	report_child("a", a);
	msleep(50);
	kill(-a, SIGTSTP);
	wait_stopped(a);
	int st;
	siginfo_t si;
	if (waitpid(a, &st, WUNTRACED) != a || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGTSTP)
		die("waitpid WUNTRACED");
	take_sigchld(&si);
	char pids[64];
	snprintf(pids, sizeof(pids), "/proc/%d/task/%d/children", a, a);
	char kids[64] = "";
	read_file(pids, kids, sizeof(kids));
	pid_t b = atoi(kids);
	if (b > 0)
		wait_stopped(b);
	report_child("b", b);
	memcpy(counts_at_ready, (void *)sh->count, sizeof(counts_at_ready));
	ready();
	wait_trigger(NULL);
	check_identity();
	char why[512] = "";
	check("a-stopped", all_stopped(a), "thread states of %d are not all T", a);
	check("b-stopped", b > 0 && all_stopped(b), "thread states of %d are not all T", b);
	check("group-frozen", counts_frozen(2, why, sizeof(why)), "%s", why);
	int code = report(a, WSTOPPED, &st);
	check("a-report-collected", code == 0, "waitid(WSTOPPED) finds code %d status %d: already collected", code, st);
	check("sigchld-collected", !sigchld_pending(), "SIGCHLD pending again");
	kill(-a, SIGCONT);
	for (int i = 0; i < 5000 && !sh->result[0]; i++)
		msleep(1);
	check("a-after-cont", sh->result[0] == 1, "%s", sh->result[0] ? sh->detail[0] : "no result");
	check("a-exit", waitpid(a, &st, 0) == a && WIFEXITED(st) && WEXITSTATUS(st) == 0, "a status %#x", st);
}

static void *root_counter(void *arg)
{
	(void)arg;
	for (;;) {
		__atomic_add_fetch(&sh->count[0][1], 1, __ATOMIC_SEQ_CST);
		msleep(1);
	}
	return NULL;
}

static void mode_root(void)
{
	setup_cont_handler();
	pthread_t t;
	if (pthread_create(&t, NULL, root_counter, NULL))
		die("pthread_create");
	ready();
	raise(SIGSTOP);
	wait_trigger(NULL);
	check_identity();
	check("root-continued-once", conts == 1, "SIGCONT handler ran %d times, want 1", conts);
	uint64_t c0 = sh->count[0][1];
	msleep(30);
	check("root-thread-runs", sh->count[0][1] > c0, "the counting thread stands still");
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	mode = argc > 2 ? argv[2] : "child";
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	if (!strcmp(mode, "root"))
		mode_root();
	else if (!strcmp(mode, "child"))
		mode_child(0);
	else if (!strcmp(mode, "child-reaped"))
		mode_child(1);
	else if (!strcmp(mode, "continued"))
		mode_continued();
	else if (!strcmp(mode, "group"))
		mode_group();
	else {
		out("SETUP-ERROR unknown mode %s\n", mode);
		return 2;
	}
	return finish();
}
