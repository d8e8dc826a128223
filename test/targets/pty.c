/*
 * pty — holds a pseudo-terminal pair of its own, as tmux or a terminal
 * emulator does, and proves after restore that it is the same terminal:
 *
 *   - the slave's index and name (TIOCGPTN, ttyname), its node's mode;
 *   - the slave's termios (canonical, no echo, a VEOL of ';', 19200 baud,
 *     ONLCR), window size, exclusive mode; the master's packet mode; the
 *     pair locked (TIOCSPTLCK: the slave cannot be opened again);
 *   - the slave as the controlling terminal of the target's session, with
 *     a child in a group of its own as the foreground group, that child
 *     holding /dev/tty;
 *   - the bytes neither side had read: the slave's input "line one\n",
 *     "semi;" (a line ended by VEOL) and the unfinished line "part"; the
 *     master's "out\r\n" (the slave wrote "out\n" through ONLCR).
 *
 * The target leads its session (the harness starts it with setsid).
 *
 *   pty         as above
 *   pty raw     the slave not canonical (no ISIG, no ICRNL): its queue is
 *               bytes, "raw\x03\x7f\nbytes\r"
 *   pty eof     a queued line ended by the EOF character ("abc" then ^D):
 *               the dump must refuse it, and leave the queue as it was
 *   pty early   the child forked before the target took the terminal, so
 *               the child has none: the dump must refuse it
 *   pty hup     the slave closed (the master holds its queue, then reads
 *               EIO and polls POLLHUP), its own queue and state kept
 *   pty hung    the master closed: two slave fds hung up (read 0, write
 *               EIO, their name gone)
 */
#include "common.h"

#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

#define IN_QUEUE "line one\nsemi;part"
#define EOF_QUEUE "line one\nabc\004part"
#define RAW_QUEUE "raw\003\177\nbytes\r"

static int read_is(int fd, const char *name, const char *want, size_t n)
{
	char buf[256];
	ssize_t r = read(fd, buf, sizeof(buf));
	return check(name, r == (ssize_t)n && memcmp(buf, want, n) == 0, "read %zd bytes (%s): %.*s", r, r < 0 ? strerror(errno) : "",
		     r > 0 ? (int)r : 0, buf);
}

static int idle(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, 0) == 0;
}

static unsigned long stat_field(pid_t pid, int field)
{
	char path[64], buf[2048];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (read_file(path, buf, sizeof(buf)) < 0)
		return ~0UL;
	char *p = strrchr(buf, ')');
	for (int f = 2; p && f < field; f++)
		p = strchr(p + 1, ' ');
	return p ? strtoul(p + 1, NULL, 10) : ~0UL;
}

/* open_master opens a pty master above the lowest free indices: other
 * tests on the machine open ptys too, and one could take the index back
 * between a dump and its restore (which then refuses, rightly). */
static int open_master(void)
{
	int low[8];
	for (int i = 0; i < 8; i++)
		low[i] = posix_openpt(O_RDWR | O_NOCTTY);
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	for (int i = 0; i < 8; i++)
		if (low[i] >= 0)
			close(low[i]);
	return m;
}

/* spawn_kid forks a child into a group of its own that, with_tty, holds
 * /dev/tty at fd 3, and waits until it does. */
static pid_t spawn_kid(int m, int s, int with_tty)
{
	int sync[2];
	if (pipe(sync))
		die("pipe");
	pid_t kid = fork();
	if (kid < 0)
		die("fork");
	if (kid == 0) {
		setpgid(0, 0);
		close(m);
		close(s);
		if (with_tty && open("/dev/tty", O_RDWR) != 3)
			_exit(3);
		if (write(sync[1], "k", 1) != 1)
			_exit(4);
		for (;;)
			pause();
	}
	setpgid(kid, kid);
	char c;
	if (read(sync[0], &c, 1) != 1)
		die("child");
	close(sync[0]);
	close(sync[1]);
	return kid;
}

/* hup_main is `pty hup`: a pair whose slave was closed after use, as a
 * terminal emulator has it between its shell's exit and its own. */
static int hup_main(void)
{
	int m = open_master();
	if (m < 0 || grantpt(m) || unlockpt(m))
		die("posix_openpt");
	int idx;
	if (ioctl(m, TIOCGPTN, &idx))
		die("TIOCGPTN");
	char name[64];
	snprintf(name, sizeof(name), "/dev/pts/%d", idx);
	int s = open(name, O_RDWR | O_NOCTTY);
	if (s < 0 || fchmod(s, 0600))
		die("open slave");
	struct termios t;
	tcgetattr(s, &t);
	t.c_lflag = ICANON | ISIG | IEXTEN;
	t.c_oflag = OPOST | ONLCR;
	t.c_cc[VEOL] = ';';
	if (tcsetattr(s, TCSANOW, &t))
		die("tcsetattr");
	struct termios saved;
	tcgetattr(s, &saved);
	struct winsize ws = {.ws_row = 25, .ws_col = 81, .ws_xpixel = 3, .ws_ypixel = 4};
	int one = 1;
	if (ioctl(s, TIOCSWINSZ, &ws) || ioctl(m, TIOCPKT, &one))
		die("TIOCSWINSZ/TIOCPKT");
	if (write(m, IN_QUEUE, strlen(IN_QUEUE)) != (ssize_t)strlen(IN_QUEUE) || write(s, "out\n", 4) != 4)
		die("write");
	struct pollfd p[2] = {{.fd = s, .events = POLLIN}, {.fd = m, .events = POLLIN}};
	while (poll(p, 2, 1000) >= 0 && !((p[0].revents & POLLIN) && (p[1].revents & POLLIN)))
		;
	struct stat sst;
	fstat(s, &sst);
	close(s);
	struct pollfd hp = {.fd = m, .events = POLLIN};
	while (poll(&hp, 1, 1000) >= 0 && !(hp.revents & POLLHUP))
		;
	out("PTY %s\n", name);
	ready();
	wait_trigger(NULL);
	check_identity();

	int got = -1;
	ioctl(m, TIOCGPTN, &got);
	check("index", got == idx, "TIOCGPTN %d, was %d", got, idx);
	struct stat now;
	int st = stat(name, &now);
	check("node", st == 0 && now.st_rdev == sst.st_rdev && now.st_mode == sst.st_mode && now.st_uid == sst.st_uid,
	      "stat %s: %d, mode %o", name, st, now.st_mode);
	struct termios tt;
	tcgetattr(m, &tt); /* a master's termios calls act on its slave */
	check("termios",
	      tt.c_iflag == saved.c_iflag && tt.c_oflag == saved.c_oflag && tt.c_cflag == saved.c_cflag &&
		      tt.c_lflag == saved.c_lflag && memcmp(tt.c_cc, saved.c_cc, NCCS) == 0,
	      "lflag %o, was %o", tt.c_lflag, saved.c_lflag);
	struct winsize w2;
	ioctl(m, TIOCGWINSZ, &w2);
	check("winsize", memcmp(&w2, &ws, sizeof(ws)) == 0, "%dx%d", w2.ws_row, w2.ws_col);
	int v = -1;
	ioctl(m, TIOCGPKT, &v);
	check("packet", v == 1, "TIOCGPKT %d", v);
	hp.revents = 0;
	poll(&hp, 1, 0);
	check("hangup", (hp.revents & (POLLHUP | POLLIN)) == (POLLHUP | POLLIN), "poll %#x", hp.revents);
	char pkt[] = {0, 'o', 'u', 't', '\r', '\n'};
	read_is(m, "master-queue", pkt, sizeof(pkt));
	char c;
	ssize_t r = read(m, &c, 1);
	check("master-eio", r < 0 && errno == EIO, "read %zd (%s)", r, strerror(errno));
	/* The slave again: its queue as it was. */
	int s2 = open(name, O_RDWR | O_NOCTTY);
	if (s2 < 0)
		die("reopen slave");
	read_is(s2, "line", "line one\n", 9);
	read_is(s2, "veol-line", "semi;", 5);
	check("unfinished", idle(s2), "the unfinished line reads as a line");
	if (write(m, "\n", 1) != 1)
		die("write");
	read_is(s2, "unfinished-line", "part\n", 5);
	return finish();
}

/* hung_main is `pty hung`: slave fds whose master was closed. */
static int hung_main(void)
{
	int m = open_master();
	if (m < 0 || grantpt(m) || unlockpt(m))
		die("posix_openpt");
	int idx;
	if (ioctl(m, TIOCGPTN, &idx))
		die("TIOCGPTN");
	char name[64], gone[80];
	snprintf(name, sizeof(name), "/dev/pts/%d", idx);
	snprintf(gone, sizeof(gone), "%s (deleted)", name);
	int s = open(name, O_RDWR | O_NOCTTY);
	int s2 = open(name, O_RDONLY | O_NOCTTY | O_NONBLOCK);
	if (s < 0 || s2 < 0)
		die("open slave");
	close(m);
	out("PTY %s\n", name);
	ready();
	wait_trigger(NULL);
	check_identity();
	for (int i = 0; i < 2; i++) {
		int fd = i ? s2 : s;
		char path[64], link[96] = "";
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = 0;
		check(i ? "link-2" : "link", strcmp(link, gone) == 0, "%s, want %s", link, gone);
	}
	int fl = fcntl(s2, F_GETFL);
	check("flags", (fl & O_ACCMODE) == O_RDONLY && (fl & O_NONBLOCK), "%o", fl);
	char c;
	ssize_t r = read(s, &c, 1);
	check("read-eof", r == 0, "read %zd (%s)", r, strerror(errno));
	r = write(s, "x", 1);
	check("write-eio", r < 0 && errno == EIO, "write %zd (%s)", r, strerror(errno));
	struct termios t;
	check("termios-eio", tcgetattr(s, &t) < 0 && errno == EIO, "tcgetattr: %s", strerror(errno));
	struct pollfd p = {.fd = s, .events = POLLIN};
	poll(&p, 1, 0);
	check("pollhup", p.revents & POLLHUP, "poll %#x", p.revents);
	struct stat st;
	check("name-gone", stat(name, &st) < 0 && errno == ENOENT, "stat %s: %s", name, strerror(errno));
	return finish();
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "";
	if (strcmp(mode, "hup") == 0)
		return hup_main();
	if (strcmp(mode, "hung") == 0)
		return hung_main();
	int raw = strcmp(mode, "raw") == 0, eof = strcmp(mode, "eof") == 0, early = strcmp(mode, "early") == 0;
	const char *queue = raw ? RAW_QUEUE : eof ? EOF_QUEUE : IN_QUEUE;
	int m = open_master();
	if (m < 0 || grantpt(m) || unlockpt(m))
		die("posix_openpt");
	int idx;
	if (ioctl(m, TIOCGPTN, &idx))
		die("TIOCGPTN");
	char name[64];
	snprintf(name, sizeof(name), "/dev/pts/%d", idx);
	int s = open(name, O_RDWR | O_NOCTTY);
	if (s < 0)
		die("open slave");
	pid_t kid = early ? spawn_kid(m, s, 0) : 0;
	if (ioctl(s, TIOCSCTTY, 0))
		die("TIOCSCTTY");
	if (fchmod(s, 0600))
		die("fchmod");
	struct termios t;
	if (tcgetattr(s, &t))
		die("tcgetattr");
	t.c_lflag = raw ? 0 : ICANON | ISIG | IEXTEN;
	if (raw)
		t.c_iflag = 0;
	t.c_oflag = OPOST | ONLCR;
	t.c_cc[VEOL] = ';';
	t.c_cc[VMIN] = 3;
	cfsetispeed(&t, B19200);
	cfsetospeed(&t, B19200);
	if (tcsetattr(s, TCSANOW, &t))
		die("tcsetattr");
	struct termios saved;
	tcgetattr(s, &saved);
	struct winsize ws = {.ws_row = 37, .ws_col = 111, .ws_xpixel = 5, .ws_ypixel = 7};
	if (ioctl(s, TIOCSWINSZ, &ws))
		die("TIOCSWINSZ");
	int one = 1;
	if (ioctl(m, TIOCPKT, &one) || ioctl(s, TIOCEXCL))
		die("TIOCPKT/TIOCEXCL");
	struct stat sst;
	fstat(s, &sst);

	/* A child in a group of its own, the foreground group, holding
	 * /dev/tty; the target, in the background then, ignores SIGTTOU to
	 * take the foreground back for its checks. */
	if (!early)
		kid = spawn_kid(m, s, 1);
	signal(SIGTTOU, SIG_IGN);
	if (tcsetpgrp(s, kid))
		die("tcsetpgrp");

	/* The queues: input the slave has not read, output the master has not. */
	if (write(m, queue, strlen(queue)) != (ssize_t)strlen(queue) || write(s, "out\n", 4) != 4)
		die("write");
	struct pollfd p[2] = {{.fd = s, .events = POLLIN}, {.fd = m, .events = POLLIN}};
	while (poll(p, 2, 1000) >= 0 && !((p[0].revents & POLLIN) && (p[1].revents & POLLIN)))
		;
	int lock = 1;
	if (ioctl(m, TIOCSPTLCK, &lock))
		die("TIOCSPTLCK");
	report_child("kid", kid);
	out("PTY %s\n", name);
	ready();
	wait_trigger(NULL);
	check_identity();

	int got = -1;
	ioctl(m, TIOCGPTN, &got);
	check("index", got == idx, "TIOCGPTN %d, was %d", got, idx);
	char tn[64] = "";
	ttyname_r(s, tn, sizeof(tn));
	check("ttyname", strcmp(tn, name) == 0, "%s, was %s", tn, name);
	struct stat now;
	fstat(s, &now);
	check("node", now.st_rdev == sst.st_rdev && now.st_mode == sst.st_mode && now.st_uid == sst.st_uid &&
			      now.st_gid == sst.st_gid,
	      "rdev %#lx mode %o %d:%d, was %#lx %o %d:%d", (unsigned long)now.st_rdev, now.st_mode, now.st_uid,
	      now.st_gid, (unsigned long)sst.st_rdev, sst.st_mode, sst.st_uid, sst.st_gid);
	struct termios tt;
	tcgetattr(s, &tt);
	check("termios",
	      tt.c_iflag == saved.c_iflag && tt.c_oflag == saved.c_oflag && tt.c_cflag == saved.c_cflag &&
		      tt.c_lflag == saved.c_lflag && memcmp(tt.c_cc, saved.c_cc, NCCS) == 0 &&
		      cfgetospeed(&tt) == B19200,
	      "iflag %o oflag %o cflag %o lflag %o, was %o %o %o %o", tt.c_iflag, tt.c_oflag, tt.c_cflag, tt.c_lflag,
	      saved.c_iflag, saved.c_oflag, saved.c_cflag, saved.c_lflag);
	struct winsize w2;
	ioctl(s, TIOCGWINSZ, &w2);
	check("winsize", memcmp(&w2, &ws, sizeof(ws)) == 0, "%dx%d %dx%d", w2.ws_row, w2.ws_col, w2.ws_xpixel,
	      w2.ws_ypixel);
	int v = -1;
	ioctl(m, TIOCGPKT, &v);
	check("packet", v == 1, "TIOCGPKT %d", v);
	v = -1;
	ioctl(m, TIOCGPTLCK, &v);
	check("locked", v == 1, "TIOCGPTLCK %d", v);
	v = -1;
	ioctl(s, TIOCGEXCL, &v);
	check("exclusive", v == 1, "TIOCGEXCL %d", v);

	check("ctty", stat_field(getpid(), 7) == sst.st_rdev && tcgetsid(s) == getpid(), "tty_nr %#lx, sid %d",
	      stat_field(getpid(), 7), tcgetsid(s));
	check("foreground", tcgetpgrp(s) == kid, "tcgetpgrp %d, want %d", tcgetpgrp(s), kid);
	char link[64] = "", path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/3", kid);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	check("kid-ctty", early ? stat_field(kid, 7) == 0 : stat_field(kid, 7) == sst.st_rdev && stat_field(kid, 5) == (unsigned long)kid &&
				  strcmp(link, "/dev/tty") == 0,
	      "tty_nr %#lx pgrp %lu fd 3 %s", stat_field(kid, 7), stat_field(kid, 5), link);

	/* Read the queues now, from the foreground. */
	check("foreground-back", tcsetpgrp(s, getpgrp()) == 0, "tcsetpgrp: %s", strerror(errno));
	char pkt[] = {0, 'o', 'u', 't', '\r', '\n'};
	read_is(m, "master-queue", pkt, sizeof(pkt));
	check("master-drained", idle(m), "more for the master");
	if (raw) {
		read_is(s, "raw-queue", RAW_QUEUE, strlen(RAW_QUEUE));
	} else {
		read_is(s, "line", "line one\n", 9);
		if (eof)
			read_is(s, "eof-line", "abc", 3);
		else
			read_is(s, "veol-line", "semi;", 5);
		check("unfinished", idle(s), "the unfinished line reads as a line");
		if (write(m, "\n", 1) != 1)
			die("write");
		read_is(s, "unfinished-line", "part\n", 5);
	}
	check("echo-off", idle(m), "the master got an echo");
	/* Last: a failed open of a locked slave sets TTY_IO_ERROR on it, and
	 * every read of it fails with EIO after. */
	int again = open(name, O_RDWR | O_NOCTTY);
	check("locked-open", again < 0 && errno == EIO, "open %s: %d (%s)", name, again, strerror(errno));

	kill(kid, SIGKILL);
	waitpid(kid, NULL, 0);
	return finish();
}
