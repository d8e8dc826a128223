/*
 * fds: file descriptors whose state lives in the kernel object, not in a
 * file: a signalfd, timerfds, an inotify instance and a pidfd.
 *
 *   signalfd   on SIGUSR1|SIGUSR2, O_NONBLOCK; SIGUSR1 is blocked and one
 *              (sigqueue'd, with a value) is pending: reading the signalfd
 *              must give exactly that signal, then nothing.
 *   periodic   CLOCK_MONOTONIC timerfd, 100 ms period, that has fired several
 *              times unread: a read gives at least the expirations that
 *              happened before READY (and no more than time allows), and
 *              it keeps firing.
 *   oneshot    CLOCK_MONOTONIC timerfd 60 s away; realtime-abs and
 *              boottime-abs: TFD_TIMER_ABSTIME timerfds 60 s ahead on
 *              CLOCK_REALTIME (with TFD_TIMER_CANCEL_ON_SET) and
 *              CLOCK_BOOTTIME. Each must still be armed, with no more time
 *              left than at READY, none expired, same clock and flags.
 *   inotify    watches on two files and a directory with distinct masks,
 *              with holes in the wds (watches added and removed): same wds
 *              and fdinfo lines after restore, nothing queued, and touching
 *              each watched object gives its event with its wd.
 *   pidfd      O_NONBLOCK pidfd on a forked child that sleeps: it must
 *              still name that child, pidfd_send_signal must reach it and
 *              waitid(P_PIDFD) must report its death.
 *   memfd      a memfd of 37 bytes (not a whole page), mode 0751, owned by
 *              uid/gid 1000 (when root), sealed against growing: the same
 *              size, contents, mode, owner and seals after restore.
 *
 * Optional second argument, for the dump-refusal tests:
 *   pending-inotify  leave one inotify event unread (UNSUPPORTED fd=N line)
 *   outside-pidfd    hold a pidfd on the parent, outside the tree
 */
#include "common.h"

#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static int sfd, tper, tone, tabs_rt, tabs_bt, ifd, pfd, mfd;
static const char memfd_text[] = "thirty-seven bytes, not a whole page";
static struct stat memfd_st;
static pid_t kid;
static int wd_a, wd_b, wd_d;
static char file_a[2200], file_b[2200], dir_d[2200];
static struct timespec armed_at, armed_after;
static uint64_t ticks_ready;
static struct itimerspec left_ready[3];
static char ify_lines[4096];
static char fdinfo_ready[8][2048];
static int fdinfo_fds[8], n_fdinfo;

static int64_t ns(const struct timespec *t) { return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec; }

/* fdinfo_get copies the value of "key" in /proc/self/fdinfo/fd. */
static int fdinfo_get(int fd, const char *key, char *dst, size_t cap)
{
	char path[64], buf[8192];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	size_t kl = strlen(key);
	for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (!strncmp(l, key, kl) && l[kl] == ':') {
			char *v = l + kl + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			size_t n = strcspn(v, "\n");
			snprintf(dst, cap, "%.*s", (int)n, v);
			return 0;
		}
	}
	return -1;
}

/* typed_fdinfo is fdinfo minus the lines that legitimately change (pos,
 * flags are checked apart, mnt_id, ino): what the kernel object says. */
static void typed_fdinfo(int fd, char *dst, size_t cap)
{
	char path[64], buf[8192];
	size_t off = 0;
	dst[0] = 0;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (read_file(path, buf, sizeof(buf)) < 0)
		return;
	for (char *l = buf; *l;) {
		size_t n = strcspn(l, "\n");
		int skip = !strncmp(l, "pos:", 4) || !strncmp(l, "mnt_id:", 7) || !strncmp(l, "ino:", 4) ||
			   !strncmp(l, "ticks:", 6) || !strncmp(l, "it_value:", 9);
		if (!skip && off + n + 2 < cap)
			off += (size_t)snprintf(dst + off, cap - off, "%.*s\n", (int)n, l);
		l += n + (l[n] == '\n');
	}
}

static void remember_fdinfo(int fd)
{
	fdinfo_fds[n_fdinfo] = fd;
	typed_fdinfo(fd, fdinfo_ready[n_fdinfo], sizeof(fdinfo_ready[0]));
	n_fdinfo++;
}

static int timer_at(int clock, int flags, int sflags, time_t value_s, long interval_ns)
{
	int fd = timerfd_create(clock, TFD_CLOEXEC | flags);
	if (fd < 0)
		die("timerfd_create");
	struct itimerspec its = {{interval_ns / 1000000000L, interval_ns % 1000000000L}, {value_s, 0}};
	if (interval_ns && !value_s)
		its.it_value = its.it_interval;
	if (sflags & TFD_TIMER_ABSTIME) {
		struct timespec now;
		clock_gettime(clock, &now);
		its.it_value.tv_sec += now.tv_sec;
		its.it_value.tv_nsec = now.tv_nsec;
	}
	if (timerfd_settime(fd, sflags, &its, NULL))
		die("timerfd_settime");
	return fd;
}

static void touch_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0 || write(fd, "x", 1) != 1)
		die(path);
	close(fd);
}

/* next_event reads one inotify event within 2 s. */
static int next_event(struct inotify_event *ev, size_t cap)
{
	struct pollfd p = {ifd, POLLIN, 0};
	if (poll(&p, 1, 2000) != 1)
		return -1;
	ssize_t n = read(ifd, ev, cap);
	return n >= (ssize_t)sizeof(*ev) ? 0 : -1;
}

static void check_signalfd(void)
{
	struct signalfd_siginfo si;
	ssize_t n = read(sfd, &si, sizeof(si));
	check("signalfd-read", n == sizeof(si) && si.ssi_signo == SIGUSR1 && si.ssi_code == SI_QUEUE && si.ssi_int == 0x5eed,
	      "read %zd: signo %u code %d int %#x, want SIGUSR1 SI_QUEUE 0x5eed (%s)", n, n > 0 ? si.ssi_signo : 0,
	      n > 0 ? si.ssi_code : 0, n > 0 ? (unsigned)si.ssi_int : 0, n < 0 ? strerror(errno) : "");
	n = read(sfd, &si, sizeof(si));
	check("signalfd-only-one", n < 0 && errno == EAGAIN, "second read gave %zd (signo %u)", n, n > 0 ? si.ssi_signo : 0);
	int fl = fcntl(sfd, F_GETFL);
	check("signalfd-nonblock", fl >= 0 && (fl & O_NONBLOCK), "flags %#x", fl);
}

static void check_timers(void)
{
	struct timespec now;
	uint64_t ticks = 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ssize_t n = read(tper, &ticks, sizeof(ticks));
	/* At most one expiration per period since it was armed, plus one for
	 * rounding. The monotonic clock counts the time spent checkpointed, so
	 * this bounds any restore. */
	uint64_t most = (uint64_t)((ns(&now) - ns(&armed_at)) / 100000000LL) + 1;
	check("periodic-ticks", n == 8 && ticks >= ticks_ready && ticks <= most,
	      "read %zd: %" PRIu64 " ticks, want >= %" PRIu64 " (expired before READY) and <= %" PRIu64, n, ticks, ticks_ready,
	      most);
	struct itimerspec cur;
	timerfd_gettime(tper, &cur);
	check("periodic-interval", cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 100000000L,
	      "interval %ld.%09ld", (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
	n = read(tper, &ticks, sizeof(ticks)); /* blocking: the next one */
	check("periodic-runs", n == 8 && ticks >= 1, "read %zd (%s)", n, n < 0 ? strerror(errno) : "");

	int one[3] = {tone, tabs_rt, tabs_bt};
	const char *names[3] = {"oneshot", "realtime-abs", "boottime-abs"};
	for (int i = 0; i < 3; i++) {
		char name[64];
		timerfd_gettime(one[i], &cur);
		snprintf(name, sizeof(name), "%s-left", names[i]);
		int64_t left = ns(&cur.it_value), before = ns(&left_ready[i].it_value);
		check(name, left > 0 && left <= before && cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 0,
		      "left %" PRId64 " ns, was %" PRId64 " ns at READY; interval %ld.%09ld", left, before,
		      (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
		snprintf(name, sizeof(name), "%s-not-expired", names[i]);
		uint64_t t = 0;
		int fl = fcntl(one[i], F_GETFL);
		fcntl(one[i], F_SETFL, fl | O_NONBLOCK);
		n = read(one[i], &t, sizeof(t));
		check(name, n < 0 && errno == EAGAIN, "read %zd: %" PRIu64 " expirations", n, t);
		fcntl(one[i], F_SETFL, fl);
	}
}

static void check_inotify(void)
{
	char lines[4096] = "", buf[4096];
	int queued = -1;
	ioctl(ifd, FIONREAD, &queued);
	check("inotify-empty", queued == 0, "%d bytes of events queued before anything was touched", queued);
	typed_fdinfo(ifd, lines, sizeof(lines));
	check("inotify-watches", !strcmp(lines, ify_lines), "fdinfo now:\n%s\nwas:\n%s", lines, ify_lines);

	struct inotify_event *ev = (struct inotify_event *)buf;
	touch_file(file_a);
	int ok = !next_event(ev, sizeof(buf));
	check("inotify-event-file-a", ok && ev->wd == wd_a && (ev->mask & IN_MODIFY), "event wd %d mask %#x, want wd %d IN_MODIFY",
	      ok ? ev->wd : -1, ok ? ev->mask : 0, wd_a);
	chmod(file_b, 0640);
	ok = !next_event(ev, sizeof(buf));
	check("inotify-event-file-b", ok && ev->wd == wd_b && (ev->mask & IN_ATTRIB), "event wd %d mask %#x, want wd %d IN_ATTRIB",
	      ok ? ev->wd : -1, ok ? ev->mask : 0, wd_b);
	char path[2300];
	snprintf(path, sizeof(path), "%s/new", dir_d);
	int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	ok = !next_event(ev, sizeof(buf));
	check("inotify-event-dir", ok && ev->wd == wd_d && (ev->mask & IN_CREATE) && ev->len && !strcmp(ev->name, "new"),
	      "event wd %d mask %#x name %s, want wd %d IN_CREATE new", ok ? ev->wd : -1, ok ? ev->mask : 0,
	      ok && ev->len ? ev->name : "", wd_d);
}

static void make_memfd(void)
{
	mfd = memfd_create("fds-memfd", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0 || write(mfd, memfd_text, sizeof(memfd_text)) != (ssize_t)sizeof(memfd_text) || fchmod(mfd, 0751))
		die("memfd");
	if (geteuid() == 0 && fchown(mfd, 1000, 1000))
		die("fchown memfd");
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_GROW) || fstat(mfd, &memfd_st))
		die("seal memfd");
}

static void check_memfd(void)
{
	struct stat st = {0};
	char buf[64] = {0};
	int r = fstat(mfd, &st);
	check("memfd-stat", r == 0 && st.st_size == memfd_st.st_size && st.st_mode == memfd_st.st_mode && st.st_uid == memfd_st.st_uid &&
				    st.st_gid == memfd_st.st_gid,
	      "size %jd mode %o uid %u gid %u, was %jd %o %u %u", (intmax_t)st.st_size, st.st_mode, st.st_uid, st.st_gid, (intmax_t)memfd_st.st_size,
	      memfd_st.st_mode, memfd_st.st_uid, memfd_st.st_gid);
	check("memfd-contents", pread(mfd, buf, sizeof(buf), 0) == (ssize_t)sizeof(memfd_text) && !memcmp(buf, memfd_text, sizeof(memfd_text)),
	      "read %s", buf);
	check("memfd-seals", fcntl(mfd, F_GET_SEALS) == F_SEAL_GROW, "seals %#x", fcntl(mfd, F_GET_SEALS));
}

static void check_pidfd(void)
{
	char v[64] = "";
	fdinfo_get(pfd, "Pid", v, sizeof(v));
	check("pidfd-pid", atoi(v) == kid, "fdinfo Pid %s, want %d", v, kid);
	int fl = fcntl(pfd, F_GETFL);
	check("pidfd-nonblock", fl >= 0 && (fl & O_NONBLOCK), "flags %#x", fl);
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	int r = waitid(P_PIDFD, (id_t)pfd, &si, WEXITED | WNOHANG);
	check("pidfd-child-alive", r == 0 && si.si_pid == 0, "waitid: %d (%s) pid %d", r, r ? strerror(errno) : "", si.si_pid);
	r = (int)syscall(SYS_pidfd_send_signal, pfd, SIGTERM, NULL, 0);
	check("pidfd-send-signal", r == 0, "%s", strerror(errno));
	struct pollfd p = {pfd, POLLIN, 0};
	poll(&p, 1, 5000);
	memset(&si, 0, sizeof(si));
	r = waitid(P_PIDFD, (id_t)pfd, &si, WEXITED);
	check("pidfd-waitid", r == 0 && si.si_pid == kid && si.si_code == CLD_KILLED && si.si_status == SIGTERM,
	      "waitid: %d (%s) pid %d code %d status %d, want %d killed by SIGTERM", r, r ? strerror(errno) : "",
	      si.si_pid, si.si_code, si.si_status, kid);
	if (r)
		kill(kid, SIGKILL);
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "";

	/* The child first, so it holds none of the fds below. */
	kid = fork();
	if (kid < 0)
		die("fork");
	if (kid == 0) {
		/* Sleep until killed; leave if the target dies first (a failed
		 * test kills only the target). */
		pid_t parent = getppid();
		while (getppid() == parent)
			msleep(20);
		_exit(0);
	}
	pfd = (int)syscall(SYS_pidfd_open, kid, O_NONBLOCK);
	if (pfd < 0)
		die("pidfd_open");

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		die("signalfd");
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if (sigqueue(getpid(), SIGUSR1, (union sigval){.sival_int = 0x5eed}))
		die("sigqueue");

	clock_gettime(CLOCK_MONOTONIC, &armed_at);
	tper = timer_at(CLOCK_MONOTONIC, 0, 0, 0, 100000000L);
	clock_gettime(CLOCK_MONOTONIC, &armed_after);
	tone = timer_at(CLOCK_MONOTONIC, 0, 0, 60, 0);
	tabs_rt = timer_at(CLOCK_REALTIME, 0, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, 60, 0);
	tabs_bt = timer_at(CLOCK_BOOTTIME, TFD_NONBLOCK, TFD_TIMER_ABSTIME, 60, 0);

	snprintf(file_a, sizeof(file_a), "%s/watched-a", work_dir);
	snprintf(file_b, sizeof(file_b), "%s/watched-b", work_dir);
	snprintf(dir_d, sizeof(dir_d), "%s/watched-dir", work_dir);
	char gap[2300];
	snprintf(gap, sizeof(gap), "%s/gap", work_dir);
	int f = open(file_a, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	int g = open(file_b, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	int h = open(gap, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	if (f < 0 || g < 0 || h < 0 || (mkdir(dir_d, 0700) && errno != EEXIST))
		die("watched files");
	close(f);
	close(g);
	close(h);
	snprintf(gap, sizeof(gap), "%s/new", dir_d);
	unlink(gap); /* created by the checks */
	snprintf(gap, sizeof(gap), "%s/gap", work_dir);
	ifd = inotify_init1(IN_CLOEXEC);
	if (ifd < 0)
		die("inotify_init1");
	/* wds: a=1, gap=2 (removed), b=3, gap=4,5 (removed), d=6. */
	wd_a = inotify_add_watch(ifd, file_a, IN_MODIFY | IN_CLOSE_WRITE);
	inotify_rm_watch(ifd, inotify_add_watch(ifd, gap, IN_ATTRIB));
	wd_b = inotify_add_watch(ifd, file_b, IN_ATTRIB | IN_DELETE_SELF);
	inotify_rm_watch(ifd, inotify_add_watch(ifd, gap, IN_ATTRIB));
	inotify_rm_watch(ifd, inotify_add_watch(ifd, gap, IN_ATTRIB));
	wd_d = inotify_add_watch(ifd, dir_d, IN_CREATE | IN_DELETE | IN_EXCL_UNLINK);
	if (wd_a < 0 || wd_b < 0 || wd_d < 0)
		die("inotify_add_watch");
	{ /* the removals' IN_IGNORED events */
		char buf[4096];
		int q = 0;
		while (ioctl(ifd, FIONREAD, &q) == 0 && q > 0 && read(ifd, buf, sizeof(buf)) > 0)
			;
	}
	typed_fdinfo(ifd, ify_lines, sizeof(ify_lines));

	if (!strcmp(mode, "pending-inotify")) {
		touch_file(file_a);
		out("UNSUPPORTED fd=%d link=anon_inode:inotify\n", ifd);
	}
	int outside = -1;
	if (!strcmp(mode, "outside-pidfd")) {
		outside = (int)syscall(SYS_pidfd_open, getppid(), 0);
		if (outside < 0)
			die("pidfd_open parent");
		out("UNSUPPORTED fd=%d link=anon_inode:[pidfd]\n", outside);
	}

	/* Let the periodic timer fire several times, unread. Nothing here
	 * calls timerfd_gettime on it, which would catch the kernel's count
	 * up: fdinfo then shows 1 tick however many periods went by. */
	msleep(750);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	/* Expirations that surely happened before READY (one less, for the
	 * timer's slack). */
	ticks_ready = (uint64_t)((ns(&now) - ns(&armed_after)) / 100000000LL) - 1;
	int one[3] = {tone, tabs_rt, tabs_bt};
	for (int i = 0; i < 3; i++)
		timerfd_gettime(one[i], &left_ready[i]);
	int all[] = {sfd, tper, tone, tabs_rt, tabs_bt, ifd, pfd};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		remember_fdinfo(all[i]);

	make_memfd();
	ready();
	wait_trigger(NULL);
	if (!strcmp(mode, "pending-inotify")) { /* the event left unread on purpose */
		char buf[4096];
		int q = 0;
		while (ioctl(ifd, FIONREAD, &q) == 0 && q > 0 && read(ifd, buf, sizeof(buf)) > 0)
			;
	}

	check_identity();
	for (int i = 0; i < n_fdinfo; i++) {
		char now[2048], name[32];
		typed_fdinfo(fdinfo_fds[i], now, sizeof(now));
		snprintf(name, sizeof(name), "fdinfo-fd%d", fdinfo_fds[i]);
		check(name, !strcmp(now, fdinfo_ready[i]), "now:\n%s\nwas:\n%s", now, fdinfo_ready[i]);
	}
	check_signalfd();
	check_timers();
	check_inotify();
	check_pidfd();
	check_memfd();
	if (outside >= 0)
		close(outside);
	return finish();
}
