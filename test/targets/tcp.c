/*
 * tcp: established TCP connections that carry numbered records both ways.
 *
 * A stream is a run of 8-byte records, each the little-endian number of
 * its place in the stream (0, 1, 2, ...); a reader checks every record it
 * gets against the number it expects, so that a byte lost, duplicated or
 * reordered shows. Before it shuts its side down a writer sends one more
 * record, END | the number of records sent, which the reader checks too.
 * Once a side has seen the trigger it sends TRIG | the records sent so
 * far, and it ends its stream once it has sent its TRIG and received the
 * other's: each side then knows it got data sent after the trigger (after
 * the restore), whichever saw the trigger first.
 *
 *   tcp TRIGGER pair4|pair6|pairmapped
 *       A listener on 127.0.0.1 (pair6: ::1; pairmapped: an IPv6 socket on
 *       :: with IPV6_V6ONLY off, reached at ::ffff:127.0.0.1), a connection
 *       to it, and a child process (CHILD peer) holding the accepted end;
 *       both stream to each other all the time, nonblocking, at fd 10
 *       (the listener stays open in the parent at fd 11). On the trigger
 *       each side sends its TRIG, goes on until it has the other's, then
 *       shuts down its writing, reads to the end and checks the stream;
 *       the parent checks the child's exit status too.
 *   tcp TRIGGER peer PORT [6]
 *       One connection at fd 10 to the test's listener on 127.0.0.1:PORT
 *       (6: [::1]:PORT), the test being the peer, streaming the same way.
 *       While the file TRIGGER.pause exists the target does not write; it
 *       prints "PAUSED N" as it stops for the Nth time, "RESUMED N" as it
 *       goes on.
 *   tcp TRIGGER queues
 *       Two connected sockets at fd 10 and 12 (12 accepted from the
 *       listener kept at fd 13), their receive buffers made
 *       small once the windows were offered, their send buffers 64 KiB;
 *       before READY each writes until it cannot, and nothing is read: 10
 *       has unacknowledged and unsent data in its send queue, 12 a full
 *       receive queue, and the same the other way round. On the trigger
 *       both read everything and check it.
 *   tcp TRIGGER halfclose
 *       A connection half closed: fd 10 wrote 1000 bytes and shut down
 *       (FIN_WAIT2), fd 12 read none of them nor the FIN and wrote 2000
 *       bytes that 10 did not read (CLOSE_WAIT). On the trigger both check
 *       their state, 10 that it cannot write, 12 reads the 1000 bytes then
 *       the end, writes 100 more and shuts down; 10 reads the 2100 bytes,
 *       then the end.
 *   tcp TRIGGER peerhalf PORT send|recv
 *       halfclose with the test as the peer, connected to 127.0.0.1:PORT
 *       at fd 10: send, the target shut down (FIN_WAIT2); recv, the test
 *       did (CLOSE_WAIT here).
 *   tcp TRIGGER reset
 *       What a dump must refuse: a connection reset by its peer, with
 *       unread data (fd 10). On the trigger it only checks itself.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define END 0x8000000000000000ull
#define TRIG 0x4000000000000000ull

struct stream {
	int fd;
	uint64_t wseq, rseq;       /* records written, read */
	unsigned char rbuf[8];     /* a record being read */
	int rlen;
	unsigned char wbuf[8 * 1024];
	int woff, wlen;            /* what of wbuf is still to write */
	int want_trig;             /* the trigger was seen: TRIG goes next */
	int trigq;                 /* TRIG is in wbuf or sent */
	int got_trig;              /* the other side's TRIG arrived */
	int endq;                  /* END is in wbuf */
	int wdone;                 /* END written and SHUT_WR done */
	int eof;                   /* END read and then EOF */
	char err[256];             /* the first thing wrong */
};

static void fail(struct stream *s, const char *fmt, uint64_t a, uint64_t b, int e)
{
	if (!s->err[0])
		snprintf(s->err, sizeof(s->err), fmt, (unsigned long long)a, (unsigned long long)b, strerror(e));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* do_write writes what it can; ending writes END and shuts down. */
static void do_write(struct stream *s, int ending)
{
	/* A bounded turn, so that a fast reader cannot starve the reading. */
	for (int turn = 0; turn < 16 && !s->wdone && !s->err[0]; turn++) {
		if (s->woff == s->wlen) {
			if (s->endq) {
				if (shutdown(s->fd, SHUT_WR))
					fail(s, "shutdown after %llu records %llu: %s", s->wseq, 0, errno);
				s->wdone = 1;
				return;
			}
			int n = (int)(sizeof(s->wbuf) / 8);
			if (s->want_trig && !s->trigq) {
				put64(s->wbuf, TRIG | s->wseq);
				s->trigq = 1;
				n = 1;
			} else if (ending) {
				put64(s->wbuf, END | s->wseq);
				s->endq = 1;
				n = 1;
			} else {
				for (int i = 0; i < n; i++)
					put64(s->wbuf + 8 * i, s->wseq + (uint64_t)i);
				s->wseq += (uint64_t)n;
			}
			s->woff = 0;
			s->wlen = 8 * n;
		}
		ssize_t w = write(s->fd, s->wbuf + s->woff, (size_t)(s->wlen - s->woff));
		if (w < 0) {
			if (errno != EAGAIN)
				fail(s, "write after %llu records %llu: %s", s->wseq, 0, errno);
			return;
		}
		s->woff += (int)w;
	}
}

/* do_read reads and checks what there is. */
static void do_read(struct stream *s)
{
	static unsigned char buf[64 * 1024];
	for (int turn = 0; turn < 16 && !s->eof && !s->err[0]; turn++) {
		ssize_t n = read(s->fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno != EAGAIN)
				fail(s, "read after %llu records %llu: %s", s->rseq, 0, errno);
			return;
		}
		if (n == 0) {
			fail(s, "end of stream after %llu records, no END %llu%s", s->rseq, 0, 0);
			return;
		}
		for (ssize_t i = 0; i < n; i++) {
			s->rbuf[s->rlen++] = buf[i];
			if (s->rlen < 8)
				continue;
			s->rlen = 0;
			uint64_t v = get64(s->rbuf);
			if (v & TRIG) {
				if ((v & ~TRIG) != s->rseq)
					fail(s, "TRIG says %llu records, %llu read%s", v & ~TRIG, s->rseq, 0);
				s->got_trig = 1;
				continue;
			}
			if (v & END) {
				if ((v & ~END) != s->rseq)
					fail(s, "END says %llu records, %llu read%s", v & ~END, s->rseq, 0);
				/* Whatever follows must be the end. */
				char c;
				for (;;) {
					struct pollfd p = {s->fd, POLLIN, 0};
					poll(&p, 1, 10000);
					ssize_t m = read(s->fd, &c, 1);
					if (m == 0)
						break;
					if (m > 0 || errno != EAGAIN) {
						fail(s, "after END (%llu records) %llu: %s", s->rseq, 0, m > 0 ? 0 : errno);
						break;
					}
				}
				s->eof = 1;
				return;
			}
			if (v != s->rseq) {
				fail(s, "record %llu is %llu%s", s->rseq, v, 0);
				return;
			}
			s->rseq++;
		}
	}
}

static int paused(void)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s.pause", trigger_path);
	return access(p, F_OK) == 0;
}

/* run streams until the trigger, then to the end; 0 if all was right. */
static int run(struct stream *s, const char *side, int pausable)
{
	uint64_t at_trigger = 0;
	int trig = 0;
	time_t deadline = 0;
	int was_paused = 0, pauses = 0;
	while (!(s->wdone && s->eof) && !s->err[0]) {
		int can_write = !(pausable && !trig && paused());
		if (!can_write && !was_paused)
			out("PAUSED %d\n", ++pauses);
		if (can_write && was_paused)
			out("RESUMED %d\n", pauses);
		was_paused = !can_write;
		struct pollfd p = {s->fd, (short)(POLLIN | (can_write && !s->wdone ? POLLOUT : 0)), 0};
		poll(&p, 1, 5);
		if (!trig && triggered()) {
			trig = 1;
			s->want_trig = 1;
			at_trigger = s->rseq;
			deadline = time(NULL) + 60;
		}
		int ending = s->trigq && s->got_trig;
		if (can_write)
			do_write(s, ending);
		do_read(s);
		if (trig && time(NULL) > deadline) {
			fail(s, "no end of stream 60 s after the trigger (%llu records read, %llu at the trigger)%s", s->rseq, at_trigger, 0);
			break;
		}
	}
	char name[64];
	snprintf(name, sizeof(name), "stream-%s", side);
	return check(name, !s->err[0] && s->got_trig, "%s (read %llu records, %llu at the trigger, wrote %llu)",
		     s->err[0] ? s->err : "no TRIG from the other side", (unsigned long long)s->rseq,
		     (unsigned long long)at_trigger, (unsigned long long)s->wseq);
}

static int at(int fd, int want)
{
	if (fd < 0)
		die("socket");
	if (fd != want && (dup2(fd, want) < 0 || close(fd)))
		die("dup2");
	return want;
}

static void nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void pair(int argc, char **argv, const char *mode)
{
	(void)argc;
	(void)argv;
	struct sockaddr_storage ls = {0}, cs = {0};
	socklen_t len;
	int family = AF_INET;
	if (!strcmp(mode, "pair4")) {
		struct sockaddr_in *a = (void *)&ls;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (void *)&ls;
		a->sin6_family = AF_INET6;
		a->sin6_addr = !strcmp(mode, "pair6") ? in6addr_loopback : in6addr_any;
		len = sizeof(*a);
		family = AF_INET6;
	}
	int l = at(socket(family, SOCK_STREAM, 0), 11);
	if (family == AF_INET6) {
		int v6only = 0;
		setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
	}
	if (bind(l, (struct sockaddr *)&ls, len) || listen(l, 1))
		die("bind/listen");
	socklen_t gl = sizeof(ls);
	getsockname(l, (struct sockaddr *)&ls, &gl);
	memcpy(&cs, &ls, sizeof(cs));
	if (!strcmp(mode, "pairmapped")) {
		struct sockaddr_in6 *a = (void *)&cs;
		inet_pton(AF_INET6, "::ffff:127.0.0.1", &a->sin6_addr);
	}
	int c = socket(family, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&cs, len))
		die("connect");
	int a = accept(l, NULL, NULL);
	if (a < 0)
		die("accept");
	pid_t kid = fork();
	if (kid < 0)
		die("fork");
	if (kid == 0) {
		close(c);
		close(l);
		struct stream s = {.fd = at(a, 10)};
		nonblock(s.fd);
		exit(run(&s, "child", 0) ? 0 : 1);
	}
	close(a);
	struct stream s = {.fd = at(c, 10)};
	nonblock(s.fd);
	report_child("peer", kid);
	ready();
	run(&s, "parent", 0);
	int st = 0;
	waitpid(kid, &st, 0);
	check("child", WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
	check_identity();
	exit(finish());
}

static void peer(int argc, char **argv)
{
	if (argc < 4)
		die("peer PORT");
	int port = atoi(argv[3]);
	int v6 = argc > 4 && !strcmp(argv[4], "6");
	int fd;
	if (v6) {
		struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = in6addr_loopback};
		fd = socket(AF_INET6, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
			die("connect");
	} else {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
			die("connect");
	}
	struct stream s = {.fd = at(fd, 10)};
	nonblock(s.fd);
	ready();
	run(&s, "target", 1);
	check_identity();
	exit(finish());
}

/* fill writes records until the socket takes no more. */
static void fill(struct stream *s)
{
	for (int i = 0; i < 1000; i++) {
		do_write(s, 0);
		if (s->err[0])
			die(s->err);
		msleep(2);
		if (s->woff < s->wlen && i > 50)
			break;
	}
}

static void queues(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int l = socket(AF_INET, SOCK_STREAM, 0);
	socklen_t len = sizeof(a);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &len))
		die("bind/listen");
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&a, sizeof(a)))
		die("connect");
	int acc = accept(l, NULL, NULL);
	if (acc < 0)
		die("accept");
	/* The listener stays, at a higher fd than its accepted connection:
	 * a restore binds the connection to the listener's port first. */
	at(l, 13);
	/* The buffers shrink after the windows were offered: what comes in
	 * the window beyond the buffer is dropped, unacknowledged, and sent
	 * again and again; what is beyond the window waits, unsent. */
	int small = 4096, sndbuf = 64 * 1024, big = 1 << 20;
	setsockopt(c, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	setsockopt(acc, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	setsockopt(acc, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	struct stream x = {.fd = at(c, 10)}, y = {.fd = at(acc, 12)};
	nonblock(x.fd);
	nonblock(y.fd);
	fill(&x);
	fill(&y);
	int outq = 0, unsent = 0, inq = 0;
	ioctl(x.fd, TIOCOUTQ, &outq);
	ioctl(x.fd, SIOCOUTQNSD, &unsent);
	ioctl(y.fd, FIONREAD, &inq);
	out("QUEUES sendq=%d unsent=%d recvq=%d written=%llu\n", outq, unsent, inq, (unsigned long long)x.wseq * 8);
	if (outq - unsent <= 0 || unsent <= 0 || inq <= 0)
		die("queues not as wanted");
	ready();
	while (!triggered())
		msleep(5);
	out("VERIFY pid=%d\n", getpid());
	/* Room to read it all soon; both directions read to the end, then
	 * ended. */
	setsockopt(x.fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	setsockopt(y.fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	time_t deadline = time(NULL) + 60;
	while (!(x.wdone && y.wdone && x.eof && y.eof) && !x.err[0] && !y.err[0] && time(NULL) < deadline) {
		struct pollfd p[2] = {{x.fd, (short)(POLLIN | (x.wdone ? 0 : POLLOUT)), 0}, {y.fd, (short)(POLLIN | (y.wdone ? 0 : POLLOUT)), 0}};
		poll(p, 2, 5);
		do_read(&x);
		do_read(&y);
		do_write(&x, 1);
		do_write(&y, 1);
	}
	check("stream-10", !x.err[0] && x.eof, "%s (read %llu, wrote %llu)", x.err[0] ? x.err : "no end", (unsigned long long)x.rseq, (unsigned long long)x.wseq);
	check("stream-12", !y.err[0] && y.eof, "%s (read %llu, wrote %llu)", y.err[0] ? y.err : "no end", (unsigned long long)y.rseq, (unsigned long long)y.wseq);
	check_identity();
	exit(finish());
}

static void fill_buf(unsigned char *b, int n, int seed)
{
	for (int i = 0; i < n; i++)
		b[i] = (unsigned char)(i * 7 + seed);
}

/* read_exact reads n bytes of fd (nonblocking), 10 s at most. */
static int read_exact(int fd, unsigned char *b, int n)
{
	int got = 0;
	for (time_t deadline = time(NULL) + 10; got < n && time(NULL) < deadline;) {
		struct pollfd p = {fd, POLLIN, 0};
		poll(&p, 1, 100);
		ssize_t r = read(fd, b + got, (size_t)(n - got));
		if (r > 0)
			got += (int)r;
		else if (r == 0 || errno != EAGAIN)
			break;
	}
	return got;
}

/* read_eof says whether fd reads the end of the stream, 10 s at most. */
static int read_eof(int fd)
{
	char c;
	for (time_t deadline = time(NULL) + 10; time(NULL) < deadline;) {
		struct pollfd p = {fd, POLLIN, 0};
		poll(&p, 1, 100);
		ssize_t r = read(fd, &c, 1);
		if (r == 0)
			return 1;
		if (r > 0 || errno != EAGAIN)
			return 0;
	}
	return 0;
}

static int state_of(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l))
		return -errno;
	return ti.tcpi_state;
}

/* half sets up a connection that is half closed, or one a dump must
 * refuse (reset). */
static void half(const char *mode)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &len))
		die("bind/listen");
	int c = at(socket(AF_INET, SOCK_STREAM, 0), 10);
	if (connect(c, (struct sockaddr *)&a, sizeof(a)))
		die("connect");
	int s = accept(l, NULL, NULL);
	if (s < 0)
		die("accept");
	close(l);
	static unsigned char ca[1000], sb[2000], sc[100], got[2000];
	fill_buf(ca, sizeof(ca), 1);
	fill_buf(sb, sizeof(sb), 2);
	fill_buf(sc, sizeof(sc), 3);
	if (!strcmp(mode, "halfclose")) {
		s = at(s, 12);
		nonblock(c);
		nonblock(s);
		/* 10 sends, then its FIN: FIN_WAIT2; 12 reads none of it, and
		 * answers: CLOSE_WAIT, and 10 reads none of that. */
		if (write(c, ca, sizeof(ca)) != sizeof(ca) || shutdown(c, SHUT_WR))
			die("write/shutdown");
		msleep(20);
		if (write(s, sb, sizeof(sb)) != sizeof(sb))
			die("write");
		msleep(50);
		if (state_of(c) != TCP_FIN_WAIT2 || state_of(s) != TCP_CLOSE_WAIT)
			die("not half closed");
	} else {
		if (write(s, "unread", 6) != 6)
			die("write");
		struct linger lg = {1, 0};
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(s); /* a reset, and 10 holds unread data */
		msleep(50);
	}
	ready();
	while (!triggered())
		msleep(5);
	out("VERIFY pid=%d\n", getpid());
	if (!strcmp(mode, "halfclose")) {
		check("state-10", state_of(c) == TCP_FIN_WAIT2, "state %d, want FIN_WAIT2", state_of(c));
		check("state-12", state_of(s) == TCP_CLOSE_WAIT, "state %d, want CLOSE_WAIT", state_of(s));
		int w = (int)send(c, "x", 1, MSG_NOSIGNAL);
		check("shut-10", w < 0 && errno == EPIPE, "write after shutdown: %d (%s)", w, strerror(errno));
		int n = read_exact(s, got, sizeof(ca));
		check("data-12", n == sizeof(ca) && !memcmp(got, ca, sizeof(ca)), "read %d of %zu bytes, or others", n, sizeof(ca));
		check("fin-12", read_eof(s), "no end of stream after the data");
		if (write(s, sc, sizeof(sc)) != sizeof(sc) || shutdown(s, SHUT_WR))
			die("write/shutdown");
		n = read_exact(c, got, sizeof(sb));
		check("data-10", n == sizeof(sb) && !memcmp(got, sb, sizeof(sb)), "read %d of %zu bytes, or others", n, sizeof(sb));
		n = read_exact(c, got, sizeof(sc));
		check("more-10", n == sizeof(sc) && !memcmp(got, sc, sizeof(sc)), "read %d of %zu bytes written after the restore", n, sizeof(sc));
		check("fin-10", read_eof(c), "no end of stream");
	}
	check_identity();
	exit(finish());
}

/* peerhalf: half(), the test being the peer. send: the target wrote 1000
 * bytes and shut down (FIN_WAIT2) and holds the test's 2000 unread; recv:
 * the test wrote 1000 bytes and shut down (CLOSE_WAIT here), the target
 * wrote 2000 the test has not read. After the trigger the side that can
 * still write writes 100 bytes more and shuts down; each reads to the end. */
static void peerhalf(int argc, char **argv)
{
	if (argc < 5)
		die("peerhalf PORT send|recv");
	int sending = !strcmp(argv[4], "send");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int c = at(socket(AF_INET, SOCK_STREAM, 0), 10);
	if (connect(c, (struct sockaddr *)&a, sizeof(a)))
		die("connect");
	nonblock(c);
	static unsigned char mine[1000], theirs[2000], more[100], got[2000];
	if (sending) {
		fill_buf(mine, sizeof(mine), 1);
		fill_buf(theirs, sizeof(theirs), 2);
		if (write(c, mine, sizeof(mine)) != sizeof(mine) || shutdown(c, SHUT_WR))
			die("write/shutdown");
	} else {
		fill_buf(theirs, 1000, 1);
		fill_buf(mine, sizeof(mine), 2);
		static unsigned char w[2000];
		fill_buf(w, sizeof(w), 2);
		if (write(c, w, sizeof(w)) != sizeof(w))
			die("write");
	}
	int want_state = sending ? TCP_FIN_WAIT2 : TCP_CLOSE_WAIT, want_inq = sending ? 2000 : 1000;
	for (int i = 0;; i++) {
		int inq = 0;
		ioctl(c, FIONREAD, &inq);
		if (state_of(c) == want_state && inq == want_inq)
			break;
		if (i > 2000)
			die("not half closed");
		msleep(5);
	}
	fill_buf(more, sizeof(more), 3);
	ready();
	while (!triggered())
		msleep(5);
	out("VERIFY pid=%d\n", getpid());
	check("state", state_of(c) == want_state, "state %d, want %d", state_of(c), want_state);
	int n = read_exact(c, got, want_inq);
	check("data", n == want_inq && !memcmp(got, theirs, (size_t)want_inq), "read %d of %d bytes, or others", n, want_inq);
	if (sending) {
		int w = (int)send(c, "x", 1, MSG_NOSIGNAL);
		check("shut", w < 0 && errno == EPIPE, "write after shutdown: %d (%s)", w, strerror(errno));
		n = read_exact(c, got, sizeof(more));
		check("more", n == sizeof(more) && !memcmp(got, more, sizeof(more)), "read %d of %zu bytes written after the restore", n, sizeof(more));
		check("fin", read_eof(c), "no end of stream");
	} else {
		check("fin", read_eof(c), "no end of stream after the data");
		if (write(c, more, sizeof(more)) != sizeof(more) || shutdown(c, SHUT_WR))
			die("write/shutdown");
		/* The test ends once it has read everything. */
		char x;
		struct pollfd p = {c, POLLRDHUP, 0};
		poll(&p, 1, 10000);
		(void)x;
	}
	check_identity();
	exit(finish());
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "pair4";
	if (!strncmp(mode, "pair", 4))
		pair(argc, argv, mode);
	if (!strcmp(mode, "peer"))
		peer(argc, argv);
	if (!strcmp(mode, "queues"))
		queues();
	if (!strcmp(mode, "halfclose") || !strcmp(mode, "reset"))
		half(mode);
	if (!strcmp(mode, "peerhalf"))
		peerhalf(argc, argv);
	die("unknown mode");
	return 2;
}
