/*
 * inet: IPv4 and IPv6 sockets with their options set, at fixed fds.
 *
 *   10  TCP listener on 127.0.0.1, backlog 7: SO_REUSEADDR, SO_KEEPALIVE,
 *       TCP_NODELAY, SO_RCVBUF, TCP_KEEPIDLE, SO_PRIORITY, IP_TOS, O_NONBLOCK
 *   11  TCP listener on ::1 (or ::), backlog 3: IPV6_V6ONLY, SO_REUSEPORT,
 *       SO_LINGER, TCP_KEEPCNT
 *   12  UDP socket bound to 127.0.0.1: SO_BROADCAST, IP_TTL, IP_PKTINFO
 *   13  UDP socket connected to fd 12
 *   14  TCP socket never bound, TCP_CORK
 *   15  TCP socket bound to 127.0.0.1, not listening
 *
 * Before READY a datagram goes from 13 to 12. It prints "PORTS tcp4=N
 * tcp6=N udp=N". After the trigger it checks that every address, peer and
 * option is as it was; accepts on fd 10 a connection the test made after
 * the restore and answers its "hello" with "world"; connects to fd 11 and
 * accepts that; receives on fd 12 the datagram "after" the test sent to
 * it, then one from fd 13, whose source must be fd 13's address.
 *
 * With an argument, it also holds what a dump must refuse, and after the
 * trigger checks only that its sockets are as they were:
 *   established  a TCP connection to fd 10 (fd 20, accepted at fd 21)
 *   backlog      a connection waiting in fd 10's accept queue (client fd 20)
 *   udpqueue     a datagram queued on fd 12, which has IP_PKTINFO on (the
 *                datagram's destination and interface are not recorded)
 *   option       TCP_USER_TIMEOUT on fd 10, which CRIU's image cannot keep
 *   raw          a raw ICMP socket (fd 20)
 *   error        a UDP socket (fd 20) connected to a port nobody has, with
 *                the ICMP error of its send pending
 *   netns        a UDP socket (fd 20) made in a network namespace of its own,
 *                the process back in the first one
 *   owner        a UDP socket (fd 20) made with fsuid and fsgid 65534, which
 *                the process no longer has
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/fsuid.h>
#include <sys/socket.h>

#define TCP4 10
#define TCP6 11
#define UDPB 12
#define UDPC 13
#define TCPU 14
#define TCPB 15
#define NFD 6

static volatile uint64_t count;
static void work(void) { count++; }

static int at(int fd, int want)
{
	if (fd < 0)
		die("socket");
	if (fd != want && (dup2(fd, want) < 0 || close(fd)))
		die("dup2");
	return want;
}

static void seti(int fd, int level, int opt, int v, const char *what)
{
	if (setsockopt(fd, level, opt, &v, sizeof(v)))
		die(what);
}

static int geti(int fd, int level, int opt)
{
	int v = -12345;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, level, opt, &v, &l))
		return -errno;
	return v;
}

struct opt {
	int level, opt;
	const char *name;
};

static const struct opt opts[] = {
	{SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"}, {SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT"},
	{SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"}, {SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"},
	{SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"},       {SOL_SOCKET, SO_PRIORITY, "SO_PRIORITY"},
	{SOL_SOCKET, SO_BROADCAST, "SO_BROADCAST"}, {SOL_SOCKET, SO_TYPE, "SO_TYPE"},
	{SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN"}, {SOL_SOCKET, SO_BUF_LOCK, "SO_BUF_LOCK"},
	{SOL_IP, IP_TOS, "IP_TOS"},                 {SOL_IP, IP_TTL, "IP_TTL"},
	{SOL_IP, IP_PKTINFO, "IP_PKTINFO"},         {SOL_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY"},
	{IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY"},  {IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE"},
	{IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT"},  {IPPROTO_TCP, TCP_CORK, "TCP_CORK"},
};
#define NOPT (sizeof(opts) / sizeof(opts[0]))

struct state {
	struct sockaddr_storage name, peer;
	socklen_t namelen, peerlen;
	int opt[NOPT];
	int flags;
	struct linger linger;
	unsigned backlog;
};

static void record(int fd, struct state *s)
{
	memset(s, 0, sizeof(*s));
	s->namelen = sizeof(s->name);
	getsockname(fd, (struct sockaddr *)&s->name, &s->namelen);
	s->peerlen = sizeof(s->peer);
	if (getpeername(fd, (struct sockaddr *)&s->peer, &s->peerlen))
		s->peerlen = 0;
	for (size_t i = 0; i < NOPT; i++)
		s->opt[i] = geti(fd, opts[i].level, opts[i].opt);
	s->flags = fcntl(fd, F_GETFL);
	socklen_t l = sizeof(s->linger);
	getsockopt(fd, SOL_SOCKET, SO_LINGER, &s->linger, &l);
	struct tcp_info ti;
	l = sizeof(ti);
	if (!getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l))
		s->backlog = ti.tcpi_sacked; /* a listener's max backlog */
}

static int port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static int wait_in(int fd, int ms)
{
	struct pollfd p = {fd, POLLIN, 0};
	return poll(&p, 1, ms) == 1;
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};

	int t4 = at(socket(AF_INET, SOCK_STREAM, 0), TCP4);
	seti(t4, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
	seti(t4, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
	seti(t4, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
	seti(t4, SOL_SOCKET, SO_RCVBUF, 96 * 1024, "SO_RCVBUF");
	seti(t4, IPPROTO_TCP, TCP_KEEPIDLE, 77, "TCP_KEEPIDLE");
	seti(t4, SOL_IP, IP_TOS, 0x10, "IP_TOS"); /* sets the priority to 6 too */
	seti(t4, SOL_SOCKET, SO_PRIORITY, 3, "SO_PRIORITY");
	if (bind(t4, (struct sockaddr *)&a4, sizeof(a4)) || listen(t4, 7))
		die("tcp4 bind/listen");
	fcntl(t4, F_SETFL, O_NONBLOCK);

	int t6 = at(socket(AF_INET6, SOCK_STREAM, 0), TCP6);
	seti(t6, SOL_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
	seti(t6, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	seti(t6, IPPROTO_TCP, TCP_KEEPCNT, 4, "TCP_KEEPCNT");
	struct linger lg = {1, 9};
	if (setsockopt(t6, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)))
		die("SO_LINGER");
	if (bind(t6, (struct sockaddr *)&a6, sizeof(a6))) {
		a6.sin6_addr = in6addr_any; /* no IPv6 loopback here */
		if (bind(t6, (struct sockaddr *)&a6, sizeof(a6)))
			die("tcp6 bind");
	}
	if (listen(t6, 3))
		die("tcp6 listen");

	int ub = at(socket(AF_INET, SOCK_DGRAM, 0), UDPB);
	seti(ub, SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST");
	seti(ub, SOL_IP, IP_TTL, 17, "IP_TTL");
	seti(ub, SOL_IP, IP_PKTINFO, 1, "IP_PKTINFO");
	if (bind(ub, (struct sockaddr *)&a4, sizeof(a4)))
		die("udp bind");
	struct sockaddr_in ubname;
	socklen_t l = sizeof(ubname);
	getsockname(ub, (struct sockaddr *)&ubname, &l);
	int uc = at(socket(AF_INET, SOCK_DGRAM, 0), UDPC);
	if (connect(uc, (struct sockaddr *)&ubname, sizeof(ubname)))
		die("udp connect");
	int tu = at(socket(AF_INET, SOCK_STREAM, 0), TCPU);
	seti(tu, IPPROTO_TCP, TCP_CORK, 1, "TCP_CORK");
	int tb = at(socket(AF_INET, SOCK_STREAM, 0), TCPB);
	if (bind(tb, (struct sockaddr *)&a4, sizeof(a4)))
		die("tcp bind");

	/* A datagram before the checkpoint. */
	char buf[64];
	if (send(uc, "before", 6, 0) != 6 || !wait_in(ub, 5000) || recv(ub, buf, sizeof(buf), 0) != 6)
		die("udp before");

	const char *refuse = argc > 2 ? argv[2] : "";
	if (*refuse) {
		struct sockaddr_in t4name;
		l = sizeof(t4name);
		getsockname(t4, (struct sockaddr *)&t4name, &l);
		if (!strcmp(refuse, "established") || !strcmp(refuse, "backlog")) {
			int c = at(socket(AF_INET, SOCK_STREAM, 0), 20);
			if (connect(c, (struct sockaddr *)&t4name, sizeof(t4name)))
				die("connect");
			if (!strcmp(refuse, "established")) {
				if (!wait_in(t4, 5000))
					die("accept");
				at(accept(t4, NULL, NULL), 21);
			}
		} else if (!strcmp(refuse, "udpqueue")) {
			int on = 1;
			if (setsockopt(ub, IPPROTO_IP, IP_PKTINFO, &on, sizeof(on)))
				die("IP_PKTINFO");
			if (send(uc, "queued", 6, 0) != 6 || !wait_in(ub, 5000))
				die("udp queue");
		} else if (!strcmp(refuse, "netns")) {
			int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
			if (home < 0 || unshare(CLONE_NEWNET))
				die("unshare");
			at(socket(AF_INET, SOCK_DGRAM, 0), 20);
			if (setns(home, CLONE_NEWNET) || close(home))
				die("setns");
		} else if (!strcmp(refuse, "error")) {
			int u = at(socket(AF_INET, SOCK_DGRAM, 0), 20);
			struct sockaddr_in none = a4;
			none.sin_port = t4name.sin_port; /* a TCP port: no UDP socket there */
			if (connect(u, (struct sockaddr *)&none, sizeof(none)) || send(u, "x", 1, 0) != 1)
				die("udp error");
			struct pollfd p = {u, 0, 0};
			if (poll(&p, 1, 5000) != 1 || !(p.revents & POLLERR))
				die("no ICMP error");
		} else if (!strcmp(refuse, "raw")) {
			at(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), 20);
		} else if (!strcmp(refuse, "owner")) {
			setfsgid(65534);
			setfsuid(65534);
			at(socket(AF_INET, SOCK_DGRAM, 0), 20);
			setfsuid(0);
			setfsgid(0);
		} else if (!strcmp(refuse, "option")) {
			seti(t4, IPPROTO_TCP, TCP_USER_TIMEOUT, 4321, "TCP_USER_TIMEOUT");
		} else {
			errno = EINVAL;
			die(refuse);
		}
	}

	const int fds[NFD] = {TCP4, TCP6, UDPB, UDPC, TCPU, TCPB};
	static const char *names[NFD] = {"tcp4", "tcp6", "udp-bound", "udp-connected", "tcp-unbound", "tcp-bound"};
	struct state before[NFD], after;
	for (int i = 0; i < NFD; i++)
		record(fds[i], &before[i]);
	out("PORTS tcp4=%d tcp6=%d udp=%d\n", port_of(&before[0].name), port_of(&before[1].name),
	    port_of(&before[2].name));
	ready();
	wait_trigger(work);

	check_identity();
	char what[128];
	int n;
	for (int i = 0; i < NFD; i++) {
		record(fds[i], &after);
		struct state *b = &before[i];
		snprintf(what, sizeof(what), "%s-name", names[i]);
		check(what, after.namelen == b->namelen && !memcmp(&after.name, &b->name, b->namelen), "port %d, was %d",
		      port_of(&after.name), port_of(&b->name));
		snprintf(what, sizeof(what), "%s-peer", names[i]);
		check(what, after.peerlen == b->peerlen && !memcmp(&after.peer, &b->peer, b->peerlen), "len %u, was %u",
		      after.peerlen, b->peerlen);
		for (size_t j = 0; j < NOPT; j++) {
			snprintf(what, sizeof(what), "%s-%s", names[i], opts[j].name);
			check(what, after.opt[j] == b->opt[j], "%d, was %d", after.opt[j], b->opt[j]);
		}
		snprintf(what, sizeof(what), "%s-flags", names[i]);
		check(what, after.flags == b->flags, "%#x, was %#x", after.flags, b->flags);
		snprintf(what, sizeof(what), "%s-linger", names[i]);
		check(what, after.linger.l_onoff == b->linger.l_onoff && after.linger.l_linger == b->linger.l_linger,
		      "%d/%d, was %d/%d", after.linger.l_onoff, after.linger.l_linger, b->linger.l_onoff,
		      b->linger.l_linger);
		snprintf(what, sizeof(what), "%s-backlog", names[i]);
		check(what, after.backlog == b->backlog, "%u, was %u", after.backlog, b->backlog);
	}
	if (*refuse) {
		int v = geti(TCP4, IPPROTO_TCP, TCP_USER_TIMEOUT);
		check("user-timeout", v == (!strcmp(refuse, "option") ? 4321 : 0), "%d", v);
		n = (int)recv(UDPB, buf, sizeof(buf), MSG_DONTWAIT);
		check("udp-queue", !strcmp(refuse, "udpqueue") ? n == 6 : n < 0, "read %d", n);
		struct tcp_info ti;
		l = sizeof(ti);
		int st = getsockopt(20, IPPROTO_TCP, TCP_INFO, &ti, &l) ? -1 : ti.tcpi_state;
		int want = !strcmp(refuse, "established") || !strcmp(refuse, "backlog") ? TCP_ESTABLISHED : -1;
		check("fd20-state", st == want, "%d, want %d", st, want);
		return finish();
	}

	/* The test's connection, made after the restore, waits on fd 10. */
	int c = -1;
	if (wait_in(TCP4, 5000))
		c = accept4(TCP4, NULL, NULL, SOCK_CLOEXEC);
	n = c >= 0 && wait_in(c, 5000) ? (int)recv(c, buf, sizeof(buf), 0) : -1;
	check("tcp4-accepts", n == 5 && !memcmp(buf, "hello", 5), "accept %d, read %d", c, n);
	check("tcp4-answers", c >= 0 && send(c, "world", 5, MSG_NOSIGNAL) == 5, "%s", strerror(errno));
	if (c >= 0)
		close(c);

	/* fd 11 takes a connection of our own. */
	int s6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int ok6 = s6 >= 0 && !connect(s6, (struct sockaddr *)&before[1].name, before[1].namelen);
	int a = ok6 && wait_in(TCP6, 5000) ? accept4(TCP6, NULL, NULL, SOCK_CLOEXEC) : -1;
	check("tcp6-accepts", a >= 0, "connect %d, accept: %s", ok6, strerror(errno));

	/* The test's datagram, sent after the restore, then one of our own. */
	n = wait_in(UDPB, 5000) ? (int)recv(UDPB, buf, sizeof(buf), MSG_DONTWAIT) : -1;
	check("udp-receives-after", n == 5 && !memcmp(buf, "after", 5), "read %d", n);
	struct sockaddr_in from;
	l = sizeof(from);
	n = send(UDPC, "again", 5, 0) == 5 && wait_in(UDPB, 5000)
		? (int)recvfrom(UDPB, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &l)
		: -1;
	struct sockaddr_in ucname;
	socklen_t ul = sizeof(ucname);
	getsockname(UDPC, (struct sockaddr *)&ucname, &ul);
	check("udp-connected-sends", n == 5 && from.sin_port == ucname.sin_port, "read %d from port %d, want %d", n,
	      ntohs(from.sin_port), ntohs(ucname.sin_port));
	return finish();
}
