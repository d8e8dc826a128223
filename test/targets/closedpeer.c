/*
 * closedpeer — UNIX sockets whose peer is closed, as a JVM keeps one.
 *
 *   closedpeer TRIGGER [named-peer | pending-error]
 *
 * Four socketpairs; the second end of each sends, then is closed:
 *   - stream: 3 writes (7 bytes) queued;
 *   - empty: a stream socket with nothing queued;
 *   - seqpacket: 2 messages of distinct sizes;
 *   - dgram: 2 datagrams.
 * named-peer: one more, a datagram socket connected to one bound to an
 * abstract name, which is then closed (cryo must refuse it).
 * pending-error: one more, a stream socket that wrote to its peer, which
 * closed without reading: ECONNRESET pending (cryo must refuse it, and
 * leave the error pending: checked on the trigger).
 *
 * On the trigger: each reads back its queue with the message boundaries,
 * then end of file (stream, seqpacket) or EAGAIN (dgram); a write fails
 * with EPIPE (stream, seqpacket) or ECONNREFUSED, then ENOTCONN (dgram);
 * getpeername gives an unnamed address; SO_PEERCRED names this process;
 * SO_ERROR is 0; poll shows POLLHUP on the stream ones.
 */
#include "common.h"

#include <poll.h>
#include <stddef.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

enum { STREAM, EMPTY, SEQPACKET, DGRAM, NSK };
static const char *names[NSK] = {"stream", "empty", "seqpacket", "dgram"};
static const int types[NSK] = {SOCK_STREAM, SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM};
static int fds[NSK];
static int pending_fd = -1;
static const char *msgs[NSK][3] = {{"abc", "de", "fg"}, {NULL}, {"first message", "2nd", NULL}, {"datagram one", "two", NULL}};

int main(int argc, char **argv)
{
	target_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	const char *mode = argc > 2 ? argv[2] : "";
	for (int i = 0; i < NSK; i++) {
		int sv[2];
		if (socketpair(AF_UNIX, types[i], 0, sv) < 0)
			die("socketpair");
		for (int m = 0; m < 3 && msgs[i][m]; m++)
			if (write(sv[1], msgs[i][m], strlen(msgs[i][m])) != (ssize_t)strlen(msgs[i][m]))
				die("write");
		close(sv[1]);
		fds[i] = sv[0];
		if (fcntl(fds[i], F_SETFL, O_NONBLOCK) < 0)
			die("O_NONBLOCK");
	}
	if (strcmp(mode, "named-peer") == 0) {
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "cryo-closedpeer-%d", getpid());
		socklen_t len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(a.sun_path + 1);
		int srv = socket(AF_UNIX, SOCK_DGRAM, 0), cl = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (srv < 0 || cl < 0 || bind(srv, (struct sockaddr *)&a, len) < 0 || connect(cl, (struct sockaddr *)&a, len) < 0)
			die("named peer");
		close(srv);
		out("REFUSE fd=%d\n", cl);
	} else if (strcmp(mode, "pending-error") == 0) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0 || write(sv[0], "unread", 6) != 6)
			die("pending error");
		close(sv[1]);
		pending_fd = sv[0];
		out("REFUSE fd=%d\n", sv[0]);
	}
	ready();
	wait_trigger(NULL);

	check_identity();
	if (pending_fd >= 0) {
		/* The refused dump must not have consumed the error. */
		int soerr = -1;
		socklen_t elen = sizeof(soerr);
		getsockopt(pending_fd, SOL_SOCKET, SO_ERROR, &soerr, &elen);
		check("pending-error-kept", soerr == ECONNRESET, "SO_ERROR %d, want ECONNRESET", soerr);
	}
	for (int i = 0; i < NSK; i++) {
		char name[64], buf[256];
		int fd = fds[i];
		/* The queue, message by message for seqpacket and dgram. */
		if (types[i] == SOCK_STREAM) {
			char want[64] = "";
			for (int m = 0; m < 3 && msgs[i][m]; m++)
				strcat(want, msgs[i][m]);
			ssize_t n = read(fd, buf, sizeof(buf));
			snprintf(name, sizeof(name), "%s-data", names[i]);
			if (want[0])
				check(name, n == (ssize_t)strlen(want) && memcmp(buf, want, n) == 0, "read %zd bytes (%s), want %s", n,
				      n < 0 ? strerror(errno) : "", want);
		} else {
			for (int m = 0; m < 3 && msgs[i][m]; m++) {
				ssize_t n = recv(fd, buf, sizeof(buf), 0);
				snprintf(name, sizeof(name), "%s-message-%d", names[i], m + 1);
				check(name, n == (ssize_t)strlen(msgs[i][m]) && memcmp(buf, msgs[i][m], n) == 0,
				      "recv %zd (%s), want %s", n, n < 0 ? strerror(errno) : "", msgs[i][m]);
			}
		}
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		snprintf(name, sizeof(name), "%s-end", names[i]);
		if (types[i] == SOCK_DGRAM)
			check(name, n < 0 && errno == EAGAIN, "recv after the queue: %zd (%s), want EAGAIN", n, strerror(errno));
		else
			check(name, n == 0, "recv after the queue: %zd (%s), want 0 (end of file)", n, n < 0 ? strerror(errno) : "");

		struct sockaddr_un pa;
		socklen_t plen = sizeof(pa);
		int r = getpeername(fd, (struct sockaddr *)&pa, &plen);
		snprintf(name, sizeof(name), "%s-peername", names[i]);
		check(name, r == 0 && plen == sizeof(sa_family_t), "getpeername %d (%s), length %u", r, r ? strerror(errno) : "", plen);
		struct ucred cr;
		socklen_t clen = sizeof(cr);
		r = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &clen);
		snprintf(name, sizeof(name), "%s-peercred", names[i]);
		check(name, r == 0 && cr.pid == getpid() && cr.uid == getuid(), "SO_PEERCRED pid %d uid %d", cr.pid, cr.uid);
		int soerr = -1;
		socklen_t elen = sizeof(soerr);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &elen);
		snprintf(name, sizeof(name), "%s-so-error", names[i]);
		check(name, soerr == 0, "SO_ERROR %d", soerr);
		if (types[i] != SOCK_DGRAM) {
			struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT | POLLRDHUP};
			poll(&p, 1, 0);
			snprintf(name, sizeof(name), "%s-poll", names[i]);
			check(name, (p.revents & (POLLHUP | POLLRDHUP | POLLIN)) == (POLLHUP | POLLRDHUP | POLLIN), "revents %#x", p.revents);
		}

		n = write(fd, "x", 1);
		int e1 = errno;
		snprintf(name, sizeof(name), "%s-write", names[i]);
		if (types[i] == SOCK_DGRAM) {
			check(name, n < 0 && e1 == ECONNREFUSED, "write %zd (%s), want ECONNREFUSED", n, strerror(e1));
			n = write(fd, "x", 1);
			int e2 = errno;
			snprintf(name, sizeof(name), "%s-write-again", names[i]);
			check(name, n < 0 && e2 == ENOTCONN, "write %zd (%s), want ENOTCONN", n, strerror(e2));
		} else {
			check(name, n < 0 && e1 == EPIPE, "write %zd (%s), want EPIPE", n, strerror(e1));
		}
	}
	return finish();
}
