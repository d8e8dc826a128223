/*
 * sigio — files whose readiness raises a signal (F_SETOWN, F_SETSIG,
 * O_ASYNC), as nginx's master has on the socketpairs to its workers.
 *
 *   sigio TRIGGER [outside]
 *
 * Four stream socketpairs; on the first end of each, O_ASYNC and:
 *   - proc:  the process as owner (F_SETOWN), signal SIGRTMIN+1 (F_SETSIG);
 *   - nobody: the process as owner, SIGRTMIN+3, but set while the thread
 *     ran with uid and euid 65534 (setresuid): the kernel records those ids
 *     and, as the process is uid 0, never delivers that signal;
 *   - thread: a thread as owner (F_SETOWN_EX F_OWNER_TID), plain SIGIO;
 *   - group: the process group as owner (F_SETOWN -pgid), SIGRTMIN+2.
 * And a UDP socket bound to 127.0.0.1, owned by the process with
 * SIGRTMIN+4 and no O_ASYNC (as a program wanting SIGURG sets it): only
 * its owner, signal and owner ids are checked.
 * outside: one more, owned by the parent (outside the tree): cryo must
 * refuse it.
 *
 * Every signal is blocked in every thread. On the trigger the process
 * checks that each file's owner, signal, owner ids and O_ASYNC are what
 * they were, then writes to the second end of each pair and checks, at
 * once (the kernel signals inside the write), what is pending: the
 * process's signal with si_fd naming the file, the group's, SIGIO pending
 * on the thread and not on the process, and no SIGRTMIN+3.
 */
#include "common.h"

#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#ifndef F_GETOWNER_UIDS
#define F_GETOWNER_UIDS 17
#endif

enum { PROC, NOBODY, THREAD, GROUP, OUTSIDE, NPAIR };
static const char *names[NPAIR] = {"proc", "nobody", "thread", "group", "outside"};

struct pair {
	int fd[2];
	int sig;
	struct f_owner_ex own;
	uid_t uids[2];
	int flags;
};

static struct pair pairs[NPAIR];
static int npair = OUTSIDE;
static pid_t thread_tid;
static volatile int stop;

static void *idle(void *arg)
{
	(void)arg;
	thread_tid = sys_gettid();
	while (!stop)
		msleep(5);
	return NULL;
}

static void make_pair(struct pair *p)
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, p->fd) < 0)
		die("socketpair");
}

static void setup_pair(struct pair *p, int sig, int type, pid_t who)
{
	if (!p->fd[0])
		make_pair(p);
	p->sig = sig;
	int fl = fcntl(p->fd[0], F_GETFL);
	if (fcntl(p->fd[0], F_SETFL, fl | O_ASYNC | O_NONBLOCK) < 0)
		die("F_SETFL O_ASYNC");
	if (sig && fcntl(p->fd[0], F_SETSIG, sig) < 0)
		die("F_SETSIG");
	struct f_owner_ex o = {.type = type, .pid = who};
	if (fcntl(p->fd[0], F_SETOWN_EX, &o) < 0)
		die("F_SETOWN_EX");
}

static void record(struct pair *p)
{
	if (fcntl(p->fd[0], F_GETOWN_EX, &p->own) < 0)
		die("F_GETOWN_EX");
	if (fcntl(p->fd[0], F_GETOWNER_UIDS, p->uids) < 0)
		die("F_GETOWNER_UIDS");
	p->flags = fcntl(p->fd[0], F_GETFL);
}

static int thread_pending(int sig)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", thread_tid);
	if (read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	char *l = strstr(buf, "\nSigPnd:");
	if (!l)
		return -1;
	unsigned long long m = strtoull(l + 8, NULL, 16);
	return (m >> (sig - 1)) & 1;
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	if (argc > 2 && strcmp(argv[2], "outside") == 0)
		npair = NPAIR;
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	pthread_t pt;
	if (pthread_create(&pt, NULL, idle, NULL) != 0)
		die("pthread_create");
	while (!thread_tid)
		msleep(1);
	report_tid("idle", thread_tid);

	setup_pair(&pairs[PROC], SIGRTMIN + 1, F_OWNER_PID, getpid());
	/* Made as root (as the process's own ids), owned as 65534. */
	make_pair(&pairs[NOBODY]);
	if (syscall(SYS_setresuid, 65534, 65534, -1) < 0)
		die("setresuid 65534");
	setup_pair(&pairs[NOBODY], SIGRTMIN + 3, F_OWNER_PID, getpid());
	if (syscall(SYS_setresuid, 0, 0, -1) < 0)
		die("setresuid back");
	setup_pair(&pairs[THREAD], 0, F_OWNER_TID, thread_tid);
	setup_pair(&pairs[GROUP], SIGRTMIN + 2, F_OWNER_PGRP, getpgrp());
	if (npair > OUTSIDE)
		setup_pair(&pairs[OUTSIDE], 0, F_OWNER_PID, getppid());
	for (int i = 0; i < npair; i++)
		record(&pairs[i]);
	struct pair udp = {0};
	udp.fd[0] = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (udp.fd[0] < 0 || bind(udp.fd[0], (struct sockaddr *)&sin, sizeof(sin)) < 0)
		die("udp");
	udp.sig = SIGRTMIN + 4;
	struct f_owner_ex uo = {.type = F_OWNER_PID, .pid = getpid()};
	if (fcntl(udp.fd[0], F_SETSIG, udp.sig) < 0 || fcntl(udp.fd[0], F_SETOWN_EX, &uo) < 0)
		die("udp owner");
	record(&udp);
	if (npair > OUTSIDE)
		out("OUTSIDE fd=%d owner=%d\n", pairs[OUTSIDE].fd[0], getppid());
	ready();
	wait_trigger(NULL);

	check_identity();
	for (int i = 0; i < npair; i++) {
		struct pair *p = &pairs[i], now = *p;
		char name[64];
		record(&now);
		snprintf(name, sizeof(name), "%s-owner", names[i]);
		check(name, now.own.type == p->own.type && now.own.pid == p->own.pid, "F_GETOWN_EX %d %d, was %d %d",
		      now.own.type, now.own.pid, p->own.type, p->own.pid);
		snprintf(name, sizeof(name), "%s-sig", names[i]);
		int sig = fcntl(p->fd[0], F_GETSIG);
		check(name, sig == p->sig, "F_GETSIG %d, was %d", sig, p->sig);
		snprintf(name, sizeof(name), "%s-owner-uids", names[i]);
		check(name, now.uids[0] == p->uids[0] && now.uids[1] == p->uids[1], "F_GETOWNER_UIDS %d %d, was %d %d",
		      now.uids[0], now.uids[1], p->uids[0], p->uids[1]);
		snprintf(name, sizeof(name), "%s-flags", names[i]);
		check(name, now.flags == p->flags, "F_GETFL %#x, was %#x", now.flags, p->flags);
	}

	struct pair unow = udp;
	record(&unow);
	check("udp-owner", unow.own.type == udp.own.type && unow.own.pid == udp.own.pid && fcntl(udp.fd[0], F_GETSIG) == udp.sig &&
	      unow.uids[0] == udp.uids[0] && unow.uids[1] == udp.uids[1] && unow.flags == udp.flags,
	      "F_GETOWN_EX %d %d (was %d %d), F_GETSIG %d (was %d), flags %#x (was %#x)", unow.own.type, unow.own.pid,
	      udp.own.type, udp.own.pid, fcntl(udp.fd[0], F_GETSIG), udp.sig, unow.flags, udp.flags);

	sigset_t pend;
	siginfo_t si;
	struct timespec zero = {0, 0};
	sigpending(&pend);
	check("nothing-pending-before", !sigismember(&pend, SIGRTMIN + 1) && !sigismember(&pend, SIGRTMIN + 2) &&
	      !sigismember(&pend, SIGRTMIN + 3) && !sigismember(&pend, SIGIO), "a signal pending before any write");

	if (write(pairs[PROC].fd[1], "p", 1) != 1)
		die("write proc");
	sigset_t one;
	sigemptyset(&one);
	sigaddset(&one, SIGRTMIN + 1);
	int got = sigtimedwait(&one, &si, &zero);
	check("proc-signal", got == SIGRTMIN + 1 && si.si_fd == pairs[PROC].fd[0] && si.si_code == POLL_IN,
	      "sigtimedwait %d (%s), si_fd %d (want %d), si_code %d", got, got < 0 ? strerror(errno) : "", si.si_fd,
	      pairs[PROC].fd[0], si.si_code);

	if (write(pairs[NOBODY].fd[1], "n", 1) != 1)
		die("write nobody");
	sigpending(&pend);
	check("nobody-no-signal", !sigismember(&pend, SIGRTMIN + 3),
	      "SIGRTMIN+3 pending: the owner's ids (65534) were not kept");

	if (write(pairs[THREAD].fd[1], "t", 1) != 1)
		die("write thread");
	sigpending(&pend);
	int tp = thread_pending(SIGIO);
	check("thread-signal", tp == 1 && !sigismember(&pend, SIGIO), "SIGIO pending on the thread: %d, on the process: %d", tp,
	      sigismember(&pend, SIGIO));

	if (write(pairs[GROUP].fd[1], "g", 1) != 1)
		die("write group");
	sigemptyset(&one);
	sigaddset(&one, SIGRTMIN + 2);
	got = sigtimedwait(&one, &si, &zero);
	check("group-signal", got == SIGRTMIN + 2 && si.si_fd == pairs[GROUP].fd[0], "sigtimedwait %d, si_fd %d (want %d)", got,
	      si.si_fd, pairs[GROUP].fd[0]);

	stop = 1;
	pthread_join(pt, NULL);
	return finish();
}
