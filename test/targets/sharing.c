/*
 * sharing: processes that share what only threads of one process share,
 * which cryo dump must refuse (naming both processes and what they share),
 * without hanging and leaving everything running. Started as
 * `sharing TRIGGER MODE`:
 *
 *   vfork     a vfork child, in which the parent waits until the child exits
 *   vm        a clone(CLONE_VM) child: one address space, two processes
 *   files     a clone(CLONE_FILES) child: one fd table
 *   fs        a clone(CLONE_FS) child: one root, cwd and umask
 *   siblings  two clone(CLONE_FILES) children, then the parent unshares its
 *             fd table: only the two children share one
 *
 * Children poll the trigger and exit 0 on it; the parent then reaps them and
 * checks that they exited cleanly and that its own state is intact.
 */
#include "common.h"

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

#define STACK (256 * 1024)

static volatile uint64_t count;

static int child(void *arg)
{
	(void)arg;
	/* Raw syscalls only: in a vfork or CLONE_VM child, libc's state is the
	 * parent's. */
	struct timespec ts = {0, 5000000};
	while (syscall(SYS_access, trigger_path, F_OK) != 0)
		syscall(SYS_nanosleep, &ts, NULL);
	syscall(SYS_exit, 0);
	return 0;
}

static pid_t spawn(int flags)
{
	char *stack = malloc(STACK);
	if (!stack)
		die("malloc");
	pid_t pid = clone(child, stack + STACK, flags | SIGCHLD, NULL);
	if (pid < 0)
		die("clone");
	return pid;
}

static void work(void) { count++; }

int main(int argc, char **argv)
{
	target_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "";
	pid_t kids[2] = {0, 0};
	int n = 1;
	if (!strcmp(mode, "vfork")) {
		ready(); /* the parent is blocked from here until the child exits */
		pid_t pid = vfork();
		if (pid == 0)
			child(NULL);
		if (pid < 0)
			die("vfork");
		kids[0] = pid;
		out("VERIFY pid=%d\n", getpid());
	} else {
		if (!strcmp(mode, "vm"))
			kids[0] = spawn(CLONE_VM);
		else if (!strcmp(mode, "files"))
			kids[0] = spawn(CLONE_FILES);
		else if (!strcmp(mode, "fs"))
			kids[0] = spawn(CLONE_FS);
		else if (!strcmp(mode, "siblings")) {
			kids[0] = spawn(CLONE_FILES);
			kids[1] = spawn(CLONE_FILES);
			n = 2;
			if (unshare(CLONE_FILES) < 0)
				die("unshare");
		} else {
			errno = EINVAL;
			die(mode);
		}
		ready();
		wait_trigger(work);
	}
	check_identity();
	for (int i = 0; i < n; i++) {
		int st = 0;
		pid_t got;
		while ((got = waitpid(kids[i], &st, __WALL)) < 0 && errno == EINTR)
			;
		char name[32];
		snprintf(name, sizeof(name), "child-%d", i);
		check(name, got == kids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0, "waitpid %d: %d, status %#x", kids[i], got, st);
	}
	return finish();
}
