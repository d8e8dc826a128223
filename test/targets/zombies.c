/*
 * zombies — zombies in sessions and groups of their own, for the zombie
 * tests. The root (a child subreaper) makes a parent P, which makes three
 * children and does not reap them:
 *
 *   plain    exits with status 3
 *   session  calls setsid(), then exits with status 4
 *   group    calls setpgid(0, 0), then dies of SIGTERM
 *   cloned   made by clone(2) with SIGUSR1 as its exit signal (which P
 *            ignores), exits with status 6
 *
 * P prints their pids (CHILD lines) and, on the trigger, checks what /proc
 * shows of each (state Z, parent, group, session), reaps them and checks
 * their statuses; the root collects P's result. The root also has a zombie
 * of its own in a session whose leader is gone (a daemon's child that was
 * re-parented to the root, then exited with status 5).
 */
#include "common.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

enum { PLAIN, SESSION, GROUP, CLONED, NZ };
static const char *names[NZ] = {"plain", "session", "group", "cloned"};

struct shared {
	volatile int result; /* 0 pending, 1 pass, 2 fail */
	char detail[1024];
	volatile pid_t pid[NZ];
	volatile pid_t p;
};
static struct shared *sh;

/* zstat reads state, ppid, pgrp and session of pid from /proc. */
static int zstat(pid_t pid, char *state, pid_t *ppid, pid_t *pgrp, pid_t *sid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	char *rp = strrchr(buf, ')');
	if (!rp || sscanf(rp + 2, "%c %d %d %d", state, ppid, pgrp, sid) != 4)
		return -1;
	return 0;
}

static void parent(void)
{
	pid_t me = getpid(), psid = getsid(0), ppgrp = getpgrp();
	signal(SIGUSR1, SIG_IGN);
	int sync[2];
	for (int k = 0; k < NZ; k++) {
		if (pipe(sync))
			die("pipe");
		pid_t c = k == CLONED ? (pid_t)syscall(SYS_clone, SIGUSR1, 0, 0, 0, 0) : fork();
		if (c < 0)
			die("fork");
		if (c == 0) {
			if (k == CLONED)
				_exit(6);
			if (k == SESSION)
				setsid();
			if (k == GROUP)
				setpgid(0, 0);
			close(sync[0]);
			close(sync[1]);
			if (k == GROUP)
				raise(SIGTERM);
			_exit(k == PLAIN ? 3 : 4);
		}
		close(sync[1]);
		char b;
		read(sync[0], &b, 1); /* EOF once the child has set itself up */
		close(sync[0]);
		sh->pid[k] = c;
	}
	/* Wait until all three are zombies. */
	for (int k = 0; k < NZ; k++) {
		siginfo_t si;
		waitid(P_PID, sh->pid[k], &si, WEXITED | WNOWAIT | __WALL);
	}
	sh->p = me;
	while (!triggered())
		msleep(5);
	char why[1024] = "";
	int ok = 1;
	for (int k = 0; k < NZ && ok; k++) {
		char st = '?';
		pid_t ppid = 0, pgrp = 0, sid = 0;
		pid_t z = sh->pid[k];
		pid_t want_pgrp = k == PLAIN || k == CLONED ? ppgrp : z, want_sid = k == SESSION ? z : psid;
		if (zstat(z, &st, &ppid, &pgrp, &sid) || st != 'Z' || ppid != me || pgrp != want_pgrp || sid != want_sid) {
			snprintf(why, sizeof(why), "%s zombie %d: state %c ppid %d pgrp %d sid %d, want Z %d %d %d", names[k], z, st, ppid, pgrp, sid,
				 me, want_pgrp, want_sid);
			ok = 0;
		}
	}
	for (int k = 0; k < NZ && ok; k++) {
		int st;
		pid_t z = sh->pid[k];
		int want = k == GROUP ? SIGTERM : k == PLAIN ? 3 << 8 : k == CLONED ? 6 << 8 : 4 << 8;
		if (waitpid(z, &st, __WALL) != z || st != want) {
			snprintf(why, sizeof(why), "%s zombie %d: wait status %#x, want %#x", names[k], z, st, want);
			ok = 0;
		}
	}
	snprintf(sh->detail, sizeof(sh->detail), "%s", why);
	sh->result = ok ? 1 : 2;
	_exit(0);
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	/* The daemon: D makes a session, forks E and exits; E, re-parented to
	 * the root, exits too. */
	int dsync[2];
	if (pipe(dsync))
		die("pipe");
	pid_t d = fork();
	if (d < 0)
		die("fork");
	if (d == 0) {
		setsid();
		pid_t e = fork();
		if (e == 0) {
			close(dsync[0]);
			while (getppid() != saved_pid)
				msleep(1);
			if (write(dsync[1], &e, 1) != 1)
				_exit(1);
			_exit(5);
		}
		_exit(0);
	}
	close(dsync[1]);
	int st0;
	waitpid(d, &st0, 0);
	char b;
	read(dsync[0], &b, 1);
	close(dsync[0]);
	pid_t daemon_kid = 0;
	for (int i = 0; i < 2000 && !daemon_kid; i++) {
		siginfo_t si = {0};
		if (waitid(P_ALL, 0, &si, WEXITED | WNOWAIT | WNOHANG) == 0 && si.si_pid > 0)
			daemon_kid = si.si_pid;
		else
			msleep(1);
	}
	report_child("daemon-zombie", daemon_kid);
	pid_t p = fork();
	if (p < 0)
		die("fork");
	if (p == 0)
		parent();
	while (!sh->p)
		msleep(1);
	report_child("parent", p);
	for (int k = 0; k < NZ; k++)
		report_child(names[k], sh->pid[k]);
	ready();
	wait_trigger(NULL);
	check_identity();
	for (int i = 0; i < 5000 && !sh->result; i++)
		msleep(1);
	int subreaper = 0;
	prctl(PR_GET_CHILD_SUBREAPER, &subreaper);
	check("child-subreaper", subreaper == 1, "PR_GET_CHILD_SUBREAPER %d, want 1", subreaper);
	check("zombies", sh->result == 1, "%s", sh->result ? sh->detail : "no result");
	char zst = '?';
	pid_t zppid = 0, zpgrp = 0, zsid = 0;
	zstat(daemon_kid, &zst, &zppid, &zpgrp, &zsid);
	check("daemon-zombie", zst == 'Z' && zppid == getpid() && zpgrp == d && zsid == d,
	      "zombie %d: state %c ppid %d pgrp %d sid %d, want Z %d %d %d", daemon_kid, zst, zppid, zpgrp, zsid, getpid(), d, d);
	int zs;
	check("daemon-zombie-status", waitpid(daemon_kid, &zs, 0) == daemon_kid && zs == 5 << 8, "status %#x", zs);
	int st;
	check("parent-exit", waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0, "parent status %#x", st);
	return finish();
}
