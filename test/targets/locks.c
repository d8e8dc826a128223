/*
 * locks — file locks of every kind, checked from inside after restore.
 *
 * In the trigger's directory the target holds:
 *   flock-ex      exclusive flock
 *   flock-sh      shared flock
 *   (the directory itself) shared flock, on an O_DIRECTORY fd
 *   posix         POSIX read lock 10-19, write lock 30-39, read lock 300-EOF
 *                 (through fd P, and a dup of it); its child holds its own
 *                 POSIX write lock 200-209 through its own open
 *   ofd           OFD write lock 5-5 and read lock 64-127
 *   shared        exclusive flock on an fd the child inherited: one open
 *                 file description, one lock, two processes
 *   mapped        mmap'd MAP_SHARED, its fd open, POSIX read lock on byte 128
 *                 (as sqlite's -shm): restore maps it through an fd of its
 *                 own, whose close would drop the lock if taken before
 *   lease-r       read lease (opened O_RDONLY)
 *   lease-w       write lease (its only open)
 *
 * On the trigger it checks each lock from inside: POSIX and OFD locks with
 * F_GETLK/F_OFD_GETLK from a helper child (the owner itself would always
 * see its own locks as no conflict), flocks by a helper's new open failing
 * to take them, the shared flock in both processes' fdinfo, the leases
 * with F_GETLEASE. It prints its results and "HELD"; then the test breaks
 * the leases from outside by opening the files, the read lease first
 * (the target prints BROKEN-R once it saw that break), then the write
 * lease, and the target checks that each break reached it (a SIGIO, and
 * F_GETLEASE showing the type the lease is being broken to), gives the
 * leases up, and exits.
 *
 * `locks TRIGGER hidden` also holds an exclusive flock on `hidden` through
 * an open file description that only two mappings keep (flock, mmap twice,
 * close): no fd shows that lock, nothing tells which mapping's file holds
 * it, and a dump must refuse it (one mapping alone is restored: mapflock.c). `locks TRIGGER
 * lease-mapped` maps lease-w: a dump must refuse it without opening the
 * file, which would break the write lease.
 */
#include "common.h"

#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>

static char path_buf[8][2100];
static const char *names[] = {"flock-ex", "flock-sh", "posix", "ofd", "shared", "mapped", "lease-r", "lease-w"};
enum { F_EX, F_SH, F_POSIX, F_OFD, F_SHARED, F_MAPPED, F_LEASE_R, F_LEASE_W };
static int fds[8], posix_dup, dir_fd;
static pid_t kid;
static volatile sig_atomic_t sigios;

static const char *path(int i) { return path_buf[i]; }

static void on_sigio(int sig)
{
	(void)sig;
	sigios++;
}

static int setlk(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	return fcntl(fd, cmd, &fl);
}

/* A check line from the helper child, written to the pipe as
 * "ok name detail\n" and re-checked by the parent. */
static int report_fd = -1;
static void report(const char *name, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(const char *name, int ok, const char *fmt, ...)
{
	char detail[512] = "", line[700];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	int n = snprintf(line, sizeof(line), "%d %s %s\n", ok, name, detail);
	if (write(report_fd, line, (size_t)n) != n)
		_exit(3);
}

/* getlk asks, as another owner, what stops a write lock on start+len. */
static void expect_lock(const char *name, int fd, int cmd, off_t start, off_t len, short type, pid_t pid)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	if (fcntl(fd, cmd, &fl) < 0) {
		report(name, 0, "getlk: %s", strerror(errno));
		return;
	}
	report(name, fl.l_type == type && fl.l_start == start && fl.l_len == len && fl.l_pid == pid,
	       "getlk %ld+%ld: type %d %ld+%ld pid %d, want type %d pid %d", (long)start, (long)len, fl.l_type,
	       (long)fl.l_start, (long)fl.l_len, fl.l_pid, type, pid);
}

static void expect_flock_busy(const char *name, int i, int op)
{
	int fd = open(path(i), O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		report(name, 0, "open: %s", strerror(errno));
		return;
	}
	int r = flock(fd, op | LOCK_NB);
	report(name, r < 0 && errno == EWOULDBLOCK, "flock(%d) from a new open: %d (%s), want EWOULDBLOCK", op, r,
	       r < 0 ? strerror(errno) : "taken");
	close(fd);
}

/* helper runs in a child: another owner of POSIX locks, another open file
 * description for flock and OFD locks. */
static void helper(pid_t parent)
{
	int p = fds[F_POSIX];
	expect_lock("posix-read-10-19", p, F_GETLK, 10, 10, F_RDLCK, parent);
	expect_lock("posix-write-30-39", p, F_GETLK, 30, 10, F_WRLCK, parent);
	expect_lock("posix-read-300-eof", p, F_GETLK, 300, 0, F_RDLCK, parent);
	expect_lock("posix-kid-write-200-209", p, F_GETLK, 200, 10, F_WRLCK, kid);
	expect_lock("posix-hole-20-29", p, F_GETLK, 20, 10, F_UNLCK, 0);
	expect_lock("posix-hole-40-199", p, F_GETLK, 40, 160, F_UNLCK, 0);
	expect_lock("mapped-read-128", fds[F_MAPPED], F_GETLK, 128, 1, F_RDLCK, parent);
	int o = open(path(F_OFD), O_RDWR | O_CLOEXEC);
	if (o < 0) {
		report("ofd-open", 0, "%s", strerror(errno));
	} else {
		expect_lock("ofd-write-5", o, F_OFD_GETLK, 5, 1, F_WRLCK, -1);
		expect_lock("ofd-read-64-127", o, F_OFD_GETLK, 64, 64, F_RDLCK, -1);
		expect_lock("ofd-hole-6-63", o, F_OFD_GETLK, 6, 58, F_UNLCK, 0);
		close(o);
	}
	expect_flock_busy("flock-ex-excludes-sh", F_EX, LOCK_SH);
	expect_flock_busy("flock-sh-excludes-ex", F_SH, LOCK_EX);
	int s = open(path(F_SH), O_RDONLY | O_CLOEXEC);
	int r = s < 0 ? -1 : flock(s, LOCK_SH | LOCK_NB);
	report("flock-sh-is-shared", r == 0, "flock(LOCK_SH) from a new open: %s", r ? strerror(errno) : "ok");
	if (s >= 0)
		close(s);
	expect_flock_busy("flock-shared-excludes", F_SHARED, LOCK_SH);
	int d = open(work_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	r = d < 0 ? -1 : flock(d, LOCK_EX | LOCK_NB);
	report("flock-dir-held", r < 0 && errno == EWOULDBLOCK, "flock(LOCK_EX) of the directory from a new open: %d (%s)", r,
	       r < 0 ? strerror(errno) : "taken");
	if (d >= 0)
		close(d);
}

static int has_lock_line(pid_t pid, int fd, const char *what)
{
	char p[64], buf[4096];
	snprintf(p, sizeof(p), "/proc/%d/fdinfo/%d", pid, fd);
	if (read_file(p, buf, sizeof(buf)) < 0)
		return 0;
	return strstr(buf, what) != NULL;
}

static void verify(void)
{
	check_identity();
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		die("pipe");
	pid_t parent = getpid();
	pid_t h = fork();
	if (h < 0)
		die("fork");
	if (h == 0) {
		close(pfd[0]);
		report_fd = pfd[1];
		helper(parent);
		_exit(0);
	}
	close(pfd[1]);
	FILE *in = fdopen(pfd[0], "r");
	char line[800];
	int lines = 0;
	while (in && fgets(line, sizeof(line), in)) {
		char name[128] = "", *detail = line;
		int ok = 0, n = 0;
		line[strcspn(line, "\n")] = 0;
		if (sscanf(line, "%d %127s %n", &ok, name, &n) >= 2)
			detail = line + n;
		check(name, ok, "%s", detail);
		lines++;
	}
	int st = 0;
	waitpid(h, &st, 0);
	check("helper", WIFEXITED(st) && WEXITSTATUS(st) == 0 && lines == 15, "status %#x, %d checks", st, lines);

	/* The shared flock: one description, held in both processes. */
	check("shared-flock-parent", has_lock_line(getpid(), fds[F_SHARED], "FLOCK  ADVISORY  WRITE"), "no flock in fdinfo");
	check("shared-flock-kid", has_lock_line(kid, fds[F_SHARED], "FLOCK  ADVISORY  WRITE"), "no flock in the child's fdinfo");
	long k = syscall(SYS_kcmp, getpid(), kid, 0 /* KCMP_FILE */, fds[F_SHARED], fds[F_SHARED]);
	check("shared-one-description", k == 0, "kcmp %ld", k);
	/* The dup shows the POSIX locks of the description it shares. */
	check("posix-dup-fdinfo", has_lock_line(getpid(), posix_dup, "POSIX  ADVISORY  WRITE"), "no lock on the dup");

	int lr = fcntl(fds[F_LEASE_R], F_GETLEASE), lw = fcntl(fds[F_LEASE_W], F_GETLEASE);
	check("lease-read", lr == F_RDLCK, "F_GETLEASE %d", lr);
	check("lease-write", lw == F_WRLCK, "F_GETLEASE %d", lw);
	out("HELD\n");

	/* The test breaks the read lease, waits for BROKEN-R, then breaks the
	 * write lease: one SIGIO each (two at once would merge into one). */
	for (int i = 0; i < 2000 && sigios < 1; i++)
		msleep(5);
	lr = fcntl(fds[F_LEASE_R], F_GETLEASE);
	check("lease-read-break-signalled", sigios == 1, "%d SIGIO", (int)sigios);
	check("lease-read-breaking", lr == F_UNLCK, "F_GETLEASE %d, want F_UNLCK (broken by a writer)", lr);
	out("BROKEN-R\n");
	for (int i = 0; i < 2000 && sigios < 2; i++)
		msleep(5);
	lw = fcntl(fds[F_LEASE_W], F_GETLEASE);
	check("lease-write-break-signalled", sigios == 2, "%d SIGIO", (int)sigios);
	check("lease-write-breaking", lw == F_RDLCK, "F_GETLEASE %d, want F_RDLCK (broken by a reader)", lw);
	fcntl(fds[F_LEASE_R], F_SETLEASE, F_UNLCK);
	fcntl(fds[F_LEASE_W], F_SETLEASE, F_UNLCK);
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	struct sigaction sa = {.sa_handler = on_sigio};
	sigaction(SIGIO, &sa, NULL);
	for (int i = 0; i < 8; i++) {
		snprintf(path_buf[i], sizeof(path_buf[i]), "%s/%s", work_dir, names[i]);
		int fl = i == F_LEASE_R ? O_RDONLY : O_RDWR;
		if (i == F_LEASE_R) {
			int c = open(path(i), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
			if (c < 0)
				die("create lease-r");
			close(c);
		}
		fds[i] = open(path(i), fl | O_CREAT | O_CLOEXEC, 0644);
		if (fds[i] < 0)
			die(names[i]);
	}
	if (ftruncate(fds[F_MAPPED], 4096) < 0)
		die("ftruncate");
	char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fds[F_MAPPED], 0);
	if (m == MAP_FAILED)
		die("mmap");
	m[0] = 'x';
	if (flock(fds[F_EX], LOCK_EX | LOCK_NB) || flock(fds[F_SH], LOCK_SH | LOCK_NB))
		die("flock");
	if (setlk(fds[F_POSIX], F_SETLK, F_RDLCK, 10, 10) || setlk(fds[F_POSIX], F_SETLK, F_WRLCK, 30, 10) ||
	    setlk(fds[F_POSIX], F_SETLK, F_RDLCK, 300, 0))
		die("posix lock");
	posix_dup = dup(fds[F_POSIX]);
	if (setlk(fds[F_OFD], F_OFD_SETLK, F_WRLCK, 5, 1) || setlk(fds[F_OFD], F_OFD_SETLK, F_RDLCK, 64, 64))
		die("ofd lock");
	if (setlk(fds[F_MAPPED], F_SETLK, F_RDLCK, 128, 1))
		die("lock mapped");
	if (flock(fds[F_SHARED], LOCK_EX | LOCK_NB))
		die("flock shared");
	dir_fd = open(work_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0 || flock(dir_fd, LOCK_SH | LOCK_NB))
		die("flock dir");
	if (fcntl(fds[F_LEASE_R], F_SETLEASE, F_RDLCK) || fcntl(fds[F_LEASE_W], F_SETLEASE, F_WRLCK))
		die("lease");
	int ready_pipe[2];
	if (pipe(ready_pipe) < 0)
		die("pipe");
	kid = fork();
	if (kid < 0)
		die("fork");
	if (kid == 0) {
		/* The child's own POSIX lock, through its own open. Its copies of
		 * the lease fds are closed: a write lease needs its open alone. */
		close(fds[F_LEASE_R]);
		close(fds[F_LEASE_W]);
		int p = open(path(F_POSIX), O_RDWR | O_CLOEXEC);
		if (p < 0 || setlk(p, F_SETLK, F_WRLCK, 200, 10))
			die("kid lock");
		if (write(ready_pipe[1], "k", 1) != 1)
			die("kid ready");
		for (;;)
			pause();
	}
	if (argc > 2 && strcmp(argv[2], "hidden") == 0) {
		char hp[2100];
		snprintf(hp, sizeof(hp), "%s/hidden", work_dir);
		int h = open(hp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (h < 0 || ftruncate(h, 4096) < 0 || flock(h, LOCK_EX | LOCK_NB) < 0)
			die("hidden");
		if (mmap(NULL, 4096, PROT_READ, MAP_SHARED, h, 0) == MAP_FAILED ||
		    mmap(NULL, 4096, PROT_READ, MAP_SHARED, h, 0) == MAP_FAILED)
			die("mmap hidden");
		close(h);
	}
	if (argc > 2 && strcmp(argv[2], "lease-mapped") == 0 &&
	    mmap(NULL, 4096, PROT_READ, MAP_SHARED, fds[F_LEASE_W], 0) == MAP_FAILED)
		die("mmap lease-w");
	char c;
	if (read(ready_pipe[0], &c, 1) != 1)
		die("kid ready");
	close(ready_pipe[0]);
	close(ready_pipe[1]);
	report_child("kid", kid);
	ready();
	wait_trigger(NULL);
	verify();
	kill(kid, SIGKILL);
	waitpid(kid, NULL, 0);
	return finish();
}
