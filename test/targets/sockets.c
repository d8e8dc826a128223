/*
 * sockets — UNIX domain sockets between the two processes of a tree.
 *
 *   sockets TRIGGER [backlog-data] [outside=PATH]
 *
 * The root (R) sets everything up, then forks a child (C) and each keeps
 * its own ends:
 *   - a stream, a dgram and a seqpacket socketpair, R ↔ C, with data queued
 *     both ways (3 writes on the stream; 5 messages of distinct sizes on the
 *     others, whose boundaries must survive);
 *   - a stream listener bound to a path in the trigger's directory (in R),
 *     with one connection R accepted (data queued both ways) and two
 *     clients (in C) waiting in its backlog, not accepted;
 *   - a seqpacket listener bound to an abstract name (in R) with two
 *     clients (in C) waiting in its backlog;
 *   - a fresh stream socket (in C) and a datagram socket bound to an
 *     abstract name (in R), connected to nothing.
 * Some sockets get unusual SO_SNDBUF/SO_RCVBUF. backlog-data: the waiting
 * clients also send data before READY (cryo refuses to dump that).
 * outside=PATH: R also connects a stream socket to PATH, a listener outside
 * the tree, and reports "OUTSIDE fd=N link=socket:[INO]".
 *
 * On the trigger each process checks its sockets: types, names, buffer
 * sizes, the exact queued bytes and message boundaries, that accept()
 * returns the waiting connections in their order (and nothing more); then a
 * round trip on every connection.
 */
#include "common.h"

#include <poll.h>
#include <stddef.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

enum { NDGRAM = 5, NWAIT = 2 };

struct sk {
	const char *name;
	int fd;
	int type;
	int sndbuf, rcvbuf;
	struct sockaddr_un self, peer;
	socklen_t selflen, peerlen;
	int in_child;      /* which process keeps it */
	int listener;      /* listening: accept its waiting clients at verify */
	int lone;          /* not connected */
	/* expected queue: stream bytes, or datagrams */
	char q[8192];
	size_t qlen;
	size_t msglen[NDGRAM];
	int nmsg;
	const char *rt_send, *rt_recv; /* round trip tokens */
};

static struct sk sks[32];
static int nsk;
static int backlog_data;
static pid_t child;

static struct sk *add(const char *name, int fd, int type, int in_child)
{
	struct sk *s = &sks[nsk++];
	memset(s, 0, sizeof(*s));
	s->name = name;
	s->fd = fd;
	s->type = type;
	s->in_child = in_child;
	return s;
}

static void record(struct sk *s)
{
	socklen_t l = sizeof(int);
	getsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &s->sndbuf, &l);
	l = sizeof(int);
	getsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &s->rcvbuf, &l);
	s->selflen = sizeof(s->self);
	if (getsockname(s->fd, (struct sockaddr *)&s->self, &s->selflen) < 0)
		die("getsockname");
	s->peerlen = sizeof(s->peer);
	if (!s->listener && !s->lone && getpeername(s->fd, (struct sockaddr *)&s->peer, &s->peerlen) < 0)
		die("getpeername");
}

static void pattern(char *p, size_t n, int seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)('a' + (i * 7 + (size_t)seed * 13) % 26);
}

/* send_msgs sends messages from fd into the queue of s (its peer). */
static void send_msgs(int fd, struct sk *s)
{
	static const size_t sizes[NDGRAM] = {1, 17, 300, 1500, 4000};
	if (s->type == SOCK_STREAM) {
		const char *w[3] = {"alpha;", "bravo-bravo;", "charlie-charlie-charlie;"};
		for (int i = 0; i < 3; i++) {
			size_t n = strlen(w[i]);
			if (write(fd, w[i], n) != (ssize_t)n)
				die("write stream");
			memcpy(s->q + s->qlen, w[i], n);
			s->qlen += n;
		}
		return;
	}
	for (int i = 0; i < NDGRAM; i++) {
		char *p = s->q + s->qlen;
		pattern(p, sizes[i], i + s->type * 5);
		if (send(fd, p, sizes[i], 0) != (ssize_t)sizes[i])
			die("send message");
		s->msglen[i] = sizes[i];
		s->qlen += sizes[i];
	}
	s->nmsg = NDGRAM;
}

static void pair(const char *a, const char *b, int type)
{
	int sv[2];
	if (socketpair(AF_UNIX, type, 0, sv) < 0)
		die("socketpair");
	struct sk *ra = add(a, sv[0], type, 0), *cb = add(b, sv[1], type, 1);
	ra->rt_send = a, ra->rt_recv = b;
	cb->rt_send = b, cb->rt_recv = a;
	send_msgs(sv[1], ra); /* queued in sv[0] */
	send_msgs(sv[0], cb);
}

static int listener(const char *name, int type, const void *addr, socklen_t len, int backlog)
{
	int fd = socket(AF_UNIX, type, 0);
	if (fd < 0 || bind(fd, addr, len) < 0 || listen(fd, backlog) < 0)
		die("listener");
	struct sk *s = add(name, fd, type, 0);
	s->listener = 1;
	return fd;
}

static int client(const void *addr, socklen_t len, int type)
{
	int fd = socket(AF_UNIX, type, 0);
	if (fd < 0 || connect(fd, addr, len) < 0)
		die("connect");
	return fd;
}

static void setup(void)
{
	struct sockaddr_un pa = {.sun_family = AF_UNIX}, aa = {.sun_family = AF_UNIX};
	if (strlen(work_dir) + sizeof("/listen.sock") > sizeof(pa.sun_path))
		die("work directory too long for a socket path");
	memcpy(pa.sun_path, work_dir, strlen(work_dir));
	memcpy(pa.sun_path + strlen(work_dir), "/listen.sock", sizeof("/listen.sock"));
	unlink(pa.sun_path);
	socklen_t plen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(pa.sun_path) + 1);
	int an = snprintf(aa.sun_path + 1, sizeof(aa.sun_path) - 1, "cryo-sockets-%d", getpid());
	socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)an);

	pair("stream-r", "stream-c", SOCK_STREAM);
	pair("dgram-r", "dgram-c", SOCK_DGRAM);
	pair("seqpacket-r", "seqpacket-c", SOCK_SEQPACKET);
	int big = 96 << 10, small = 12 << 10;
	setsockopt(sks[0].fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	setsockopt(sks[3].fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));

	int l1 = listener("path-listener", SOCK_STREAM, &pa, plen, 7);
	/* One connection accepted, with data both ways. */
	int cli = client(&pa, plen, SOCK_STREAM);
	int acc = accept(l1, NULL, NULL);
	if (acc < 0)
		die("accept");
	struct sk *sa = add("accepted-r", acc, SOCK_STREAM, 0), *sc = add("accepted-c", cli, SOCK_STREAM, 1);
	sa->rt_send = "accepted-r", sa->rt_recv = "accepted-c";
	sc->rt_send = "accepted-c", sc->rt_recv = "accepted-r";
	send_msgs(cli, sa);
	send_msgs(acc, sc);
	static const char *pw[NWAIT] = {"path-wait-1", "path-wait-2"};
	for (int i = 0; i < NWAIT; i++) {
		struct sk *w = add(pw[i], client(&pa, plen, SOCK_STREAM), SOCK_STREAM, 1);
		w->rt_send = pw[i];
		if (backlog_data && write(w->fd, "early;", 6) != 6)
			die("write early");
	}
	listener("abstract-listener", SOCK_SEQPACKET, &aa, alen, 3);
	static const char *aw[NWAIT] = {"abstract-wait-1", "abstract-wait-2"};
	for (int i = 0; i < NWAIT; i++) {
		struct sk *w = add(aw[i], client(&aa, alen, SOCK_SEQPACKET), SOCK_SEQPACKET, 1);
		w->rt_send = aw[i];
	}
	/* Sockets connected to nothing: a fresh stream socket, and a datagram
	 * socket bound to an abstract name. */
	int fresh = socket(AF_UNIX, SOCK_STREAM, 0);
	add("fresh-stream", fresh, SOCK_STREAM, 1)->lone = 1;
	int bound = socket(AF_UNIX, SOCK_DGRAM, 0);
	struct sockaddr_un ba = {.sun_family = AF_UNIX};
	int bn = snprintf(ba.sun_path + 1, sizeof(ba.sun_path) - 1, "cryo-sockets-dgram-%d", getpid());
	if (fresh < 0 || bound < 0 || bind(bound, (struct sockaddr *)&ba, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)bn)) < 0)
		die("lone sockets");
	add("bound-dgram", bound, SOCK_DGRAM, 0)->lone = 1;
	for (int i = 0; i < nsk; i++)
		record(&sks[i]);
}

static int recv_wait(int fd, void *buf, size_t n, int flags)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, 5000) != 1)
		return -2;
	return (int)recv(fd, buf, n, flags);
}

static int same_addr(const struct sockaddr_un *a, socklen_t al, const struct sockaddr_un *b, socklen_t bl)
{
	return al == bl && memcmp(a, b, al) == 0;
}

static void show_addr(const struct sockaddr_un *a, socklen_t l, char *dst, size_t cap)
{
	size_t off = offsetof(struct sockaddr_un, sun_path);
	if (l <= off) {
		snprintf(dst, cap, "(unnamed)");
		return;
	}
	snprintf(dst, cap, "%s%.*s (%u)", a->sun_path[0] ? "" : "@", (int)(l - off - 1), a->sun_path + 1 - (a->sun_path[0] != 0), (unsigned)l);
}

static void check_identity_of(struct sk *s, int fd, const char *what)
{
	char n[160], m[160];
	int type = 0, snd = 0, rcv = 0;
	socklen_t l = sizeof(int);
	getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l);
	l = sizeof(int);
	getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, &l);
	l = sizeof(int);
	getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, &l);
	snprintf(n, sizeof(n), "%s-%s-type", s->name, what);
	check(n, type == s->type, "SO_TYPE %d, was %d", type, s->type);
	snprintf(n, sizeof(n), "%s-%s-bufs", s->name, what);
	check(n, snd == s->sndbuf && rcv == s->rcvbuf, "SO_SNDBUF %d SO_RCVBUF %d, were %d %d", snd, rcv, s->sndbuf, s->rcvbuf);
	struct sockaddr_un a;
	socklen_t al = sizeof(a);
	getsockname(fd, (struct sockaddr *)&a, &al);
	snprintf(n, sizeof(n), "%s-%s-sockname", s->name, what);
	show_addr(&a, al, m, sizeof(m));
	check(n, same_addr(&a, al, &s->self, s->selflen), "getsockname %s", m);
	if (!s->listener && !s->lone) {
		al = sizeof(a);
		getpeername(fd, (struct sockaddr *)&a, &al);
		snprintf(n, sizeof(n), "%s-%s-peername", s->name, what);
		show_addr(&a, al, m, sizeof(m));
		check(n, same_addr(&a, al, &s->peer, s->peerlen), "getpeername %s", m);
	}
}

/* check_queue reads exactly what was queued, message by message. */
static void check_queue(struct sk *s, int fd)
{
	char n[128], buf[8192];
	snprintf(n, sizeof(n), "%s-queue", s->name);
	if (s->type == SOCK_STREAM) {
		size_t got = 0;
		while (got < s->qlen) {
			int r = recv_wait(fd, buf + got, s->qlen - got, MSG_DONTWAIT);
			if (r <= 0) {
				check(n, 0, "read %zu of %zu bytes, then %d (%s)", got, s->qlen, r, strerror(errno));
				return;
			}
			got += (size_t)r;
		}
		check(n, memcmp(buf, s->q, s->qlen) == 0, "bytes differ: %.*s", (int)got, buf);
		return;
	}
	size_t off = 0;
	for (int i = 0; i < s->nmsg; i++) {
		int r = (int)recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
		if (r != (int)s->msglen[i] || memcmp(buf, s->q + off, s->msglen[i]) != 0) {
			check(n, 0, "message %d: %d bytes (%s), want %zu", i + 1, r, r < 0 ? strerror(errno) : "content", s->msglen[i]);
			return;
		}
		off += s->msglen[i];
	}
	check(n, 1, NULL);
}

/* A round trip: every process first sends on each connection, then reads
 * what the other side sent, so that no process waits for another. */
struct rt {
	char name[64];
	int fd, type;
	char send_tok[80], recv_tok[80];
};
static struct rt rts[32];
static int nrt;

static void add_rt(const char *name, int fd, int type, const char *send_tok, const char *recv_tok)
{
	struct rt *r = &rts[nrt++];
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->fd = fd;
	r->type = type;
	snprintf(r->send_tok, sizeof(r->send_tok), "rt:%s;", send_tok);
	snprintf(r->recv_tok, sizeof(r->recv_tok), "rt:%s;", recv_tok);
}

static void round_trips(void)
{
	char n[128], buf[256];
	for (int i = 0; i < nrt; i++) {
		struct rt *r = &rts[i];
		size_t len = strlen(r->send_tok);
		if (send(r->fd, r->send_tok, len, MSG_NOSIGNAL) != (ssize_t)len) {
			snprintf(n, sizeof(n), "%.60s-roundtrip-send", r->name);
			check(n, 0, "send: %s", strerror(errno));
		}
	}
	for (int i = 0; i < nrt; i++) {
		struct rt *r = &rts[i];
		snprintf(n, sizeof(n), "%.60s-roundtrip", r->name);
		size_t want = strlen(r->recv_tok), got = 0;
		while (got < want) {
			int k = recv_wait(r->fd, buf + got, r->type == SOCK_STREAM ? want - got : sizeof(buf) - got, 0);
			if (k <= 0)
				break;
			got += (size_t)k;
		}
		check(n, got == want && memcmp(buf, r->recv_tok, want) == 0, "got %.*s, want %s", (int)got, buf, r->recv_tok);
	}
}

static void verify(int in_child)
{
	check_identity();
	for (int i = 0; i < nsk; i++) {
		struct sk *s = &sks[i];
		if (s->in_child != in_child)
			continue;
		check_identity_of(s, s->fd, "fd");
		if (s->lone)
			continue;
		if (s->listener) {
			/* The clients that waited in its backlog, in their order. */
			int k = 0;
			for (int j = 0; j < nsk; j++) {
				struct sk *w = &sks[j];
				if (!w->in_child || w->listener || w->lone || w->rt_recv || w->type != s->type)
					continue;
				char n[128];
				snprintf(n, sizeof(n), "%s-accept-%d", s->name, ++k);
				int a = accept4(s->fd, NULL, NULL, 0);
				if (!check(n, a >= 0, "accept: %s", strerror(errno)))
					continue;
				struct sockaddr_un sa;
				socklen_t sl = sizeof(sa);
				getsockname(a, (struct sockaddr *)&sa, &sl);
				snprintf(n, sizeof(n), "%s-accept-%d-sockname", s->name, k);
				check(n, same_addr(&sa, sl, &s->self, s->selflen), "accepted socket's name differs");
				if (backlog_data && s->type == SOCK_STREAM) {
					char buf[16];
					int r = recv_wait(a, buf, 6, 0);
					snprintf(n, sizeof(n), "%s-accept-%d-early", s->name, k);
					check(n, r == 6 && memcmp(buf, "early;", 6) == 0, "got %d bytes", r);
				}
				snprintf(n, sizeof(n), "%s-accept-%d", s->name, k);
				add_rt(n, a, s->type, s->name, w->rt_send);
			}
			char n[128];
			snprintf(n, sizeof(n), "%s-backlog-empty", s->name);
			int fl = fcntl(s->fd, F_GETFL);
			fcntl(s->fd, F_SETFL, fl | O_NONBLOCK);
			int a = accept(s->fd, NULL, NULL);
			check(n, a < 0 && errno == EAGAIN, "one more connection was waiting");
			fcntl(s->fd, F_SETFL, fl);
			continue;
		}
		if (s->rt_recv) {
			check_queue(s, s->fd);
			add_rt(s->name, s->fd, s->type, s->rt_send, s->rt_recv);
		} else {
			/* A client that waited in a backlog: the listener's process
			 * accepts it and sends its name. */
			add_rt(s->name, s->fd, s->type, s->rt_send, s->type == SOCK_STREAM ? "path-listener" : "abstract-listener");
		}
	}
	round_trips();
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	const char *outside = NULL;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "backlog-data") == 0)
			backlog_data = 1;
		else if (strncmp(argv[i], "outside=", 8) == 0)
			outside = argv[i] + 8;
	}
	signal(SIGPIPE, SIG_IGN);
	setup();
	int sync[2];
	if (pipe(sync) < 0)
		die("pipe");
	child = fork();
	if (child < 0)
		die("fork");
	int me = child == 0;
	for (int i = 0; i < nsk; i++)
		if (sks[i].in_child != me)
			close(sks[i].fd);
	if (me) {
		close(sync[0]);
		saved_pid = getpid();
		saved_sid = getsid(0);
		saved_pgid = getpgrp();
		read_comm(saved_pid, saved_comm, sizeof(saved_comm));
		if (write(sync[1], "k", 1) != 1)
			die("sync");
		close(sync[1]);
		/* Not wait_trigger: only the root prints VERIFY. */
		while (!triggered())
			msleep(5);
		verify(1);
		return finish();
	}
	close(sync[1]);
	char c;
	if (read(sync[0], &c, 1) != 1)
		die("sync");
	close(sync[0]);
	if (outside) {
		struct sockaddr_un oa = {.sun_family = AF_UNIX};
		strncpy(oa.sun_path, outside, sizeof(oa.sun_path) - 1);
		int fd = client(&oa, sizeof(oa), SOCK_STREAM);
		char link[64], path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = 0;
		out("OUTSIDE fd=%d link=%s\n", fd, link);
	}
	ready();
	wait_trigger(NULL);
	verify(0);
	int st = 0;
	if (waitpid(child, &st, 0) != child)
		check("child-reaped", 0, "waitpid: %s", strerror(errno));
	else
		check("child-passed", WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
	return finish();
}
