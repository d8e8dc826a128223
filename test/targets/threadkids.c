/*
 * threadkids — children of a thread that is not the leader, for the tests
 * of a child's real parent. The kernel makes a child the child of the
 * thread that forked it (/proc/PID/task/TID/children lists it there), and
 * when that thread exits it sends the child its parent-death signal, even
 * though the process lives on. The main thread makes a worker thread W,
 * which forks:
 *
 *   kid     sets PR_SET_PDEATHSIG(SIGUSR1) and counts the SIGUSR1s it gets
 *   zombie  exits with status 9, not reaped
 *
 * On the trigger the root checks both are W's children, then W exits: kid
 * must get exactly one SIGUSR1 (its real parent died) and be re-parented to
 * the main thread; the root then reaps both.
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

struct shared {
	volatile int usr1;     /* SIGUSR1s the kid got */
	volatile int kid_ready;
	volatile int done;     /* the root has checked: the kid may exit */
};
static struct shared *sh;
static volatile pid_t worker_tid, kid, zombie;
static volatile int worker_go;

static void on_usr1(int sig)
{
	(void)sig;
	sh->usr1++;
}

static void *worker(void *arg)
{
	(void)arg;
	worker_tid = sys_gettid();
	pid_t k = fork();
	if (k == 0) {
		struct sigaction sa = {.sa_handler = on_usr1};
		sigaction(SIGUSR1, &sa, NULL);
		prctl(PR_SET_PDEATHSIG, SIGUSR1);
		sh->kid_ready = 1;
		while (!sh->done)
			msleep(2);
		_exit(0);
	}
	pid_t z = fork();
	if (z == 0)
		_exit(9);
	while (!sh->kid_ready)
		msleep(1);
	siginfo_t si;
	waitid(P_PID, z, &si, WEXITED | WNOWAIT);
	kid = k;
	zombie = z;
	while (!worker_go)
		msleep(2);
	return NULL; /* the thread exits: its children get their pdeathsig */
}

/* children_of reads /proc/self/task/TID/children. */
static void children_of(pid_t tid, char *buf, size_t cap)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/children", tid);
	if (read_file(path, buf, cap) < 0)
		buf[0] = 0;
}

static int lists(const char *list, pid_t pid)
{
	char want[32];
	snprintf(want, sizeof(want), "%d", pid);
	for (const char *p = list; (p = strstr(p, want)); p++)
		if ((p == list || p[-1] == ' ') && (p[strlen(want)] == ' ' || p[strlen(want)] == 0 || p[strlen(want)] == '\n'))
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	pthread_t t;
	if (pthread_create(&t, NULL, worker, NULL))
		die("pthread_create");
	while (!kid || !zombie)
		msleep(1);
	report_tid("worker", worker_tid);
	report_child("kid", kid);
	report_child("zombie", zombie);
	ready();
	wait_trigger(NULL);
	check_identity();
	char wk[256], mk[256];
	children_of(worker_tid, wk, sizeof(wk));
	children_of(getpid(), mk, sizeof(mk));
	check("worker-children", lists(wk, kid) && lists(wk, zombie) && !lists(mk, kid),
	      "worker %d's children \"%s\", main's \"%s\"; want %d and %d the worker's", worker_tid, wk, mk, kid, zombie);
	check("no-pdeath-yet", sh->usr1 == 0, "the kid got %d SIGUSR1s before its parent thread exited", sh->usr1);
	worker_go = 1;
	pthread_join(t, NULL);
	for (int i = 0; i < 2000 && !sh->usr1; i++)
		msleep(1);
	msleep(20);
	check("pdeath-on-thread-exit", sh->usr1 == 1, "the kid got %d SIGUSR1s when its parent thread exited, want 1", sh->usr1);
	sh->done = 1;
	int st;
	check("kid-exit", waitpid(kid, &st, 0) == kid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "kid status %#x", st);
	check("zombie-status", waitpid(zombie, &st, 0) == zombie && st == 9 << 8, "zombie status %#x", st);
	return finish();
}
