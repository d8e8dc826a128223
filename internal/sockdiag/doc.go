// Package sockdiag asks the kernel about the sockets of a network namespace
// through NETLINK_SOCK_DIAG, and parses what it answers: unix sockets
// (unix_diag), TCP, UDP, UDP-Lite and raw sockets over IPv4 and IPv6
// (inet_diag), packet sockets (packet_diag) and netlink sockets
// (netlink_diag). The dump uses it to learn what a socket fd of the tree is
// connected to, bound to and holding, by the inode of the fd.
//
// Every query is a dump of one family (for inet, of one family and
// protocol) in every state: the kernel's per-socket lookups need a socket's
// addresses or cookie, which is what a caller holding only an fd does not
// know. The XxxSockets functions dump and index the result by inode; Conn's
// methods return the sockets in the kernel's order.
//
// Every parser has two forms. ParseXxx takes a whole reply, the datagrams
// of one dump concatenated, and never does I/O, so it can be fed testdata
// and fuzzed; Conn.Xxx sends the request and feeds the reply to the same
// code datagram by datagram. Errors from the parsers are [*ParseError]
// values that give the byte offset, from the start of the reply, of the
// message or attribute at fault, and match [ErrMalformed] with errors.Is.
// An error the kernel answered with wraps its errno.
//
// # Network namespaces
//
// A sock_diag socket answers about the network namespace it was created in,
// for its whole life. [Dial] takes a namespace file (/proc/PID/ns/net) and
// creates its socket there from a thread locked for the purpose, that goes
// back to cryo's namespace before it runs anything else (see socketIn for
// why both the lock and the way back matter); the socket is then used from
// any goroutine. Joining a namespace needs CAP_SYS_ADMIN over it.
//
// # What the kernel does not list
//
// Sockets the kernel keeps out of its lookup tables are not in any dump:
// TCP and UDP sockets never bound nor connected, netlink sockets never
// bound, and connections waiting in a unix listener's backlog as embryo
// sockets (their client ends are listed; see [Unix.Icons]). A raw socket is
// listed only if the kernel has raw_diag (CONFIG_INET_RAW_DIAG; this
// machine's has not): otherwise its dump fails with [ErrNotSupported]. A
// caller that does not find an fd's inode must say so rather than guess.
//
// # Limits
//
// A reply may describe at most [MaxSockets] sockets in at most
// [MaxReplyBytes] bytes; beyond, the query fails with an error wrapping
// [ErrTooLarge]. A unix listener's pending connections are at most
// [MaxIcons] (the kernel cannot describe more), a unix name at most the 108
// bytes of sun_path. Every other list (multicast memberships, filter
// instructions, group bitmaps, tcp_info) is bounded by its attribute's
// 16-bit length; no length read from a reply sizes an allocation that the
// reply's own bytes do not cover. Each datagram is read into a 64 KiB
// buffer (the kernel sends at most 32 KiB), and each wait for one is
// bounded by a receive timeout.
//
// # Security
//
// The replies come from the kernel, but what they say is chosen by every
// process of the namespace: unix socket names are arbitrary bytes, and the
// number of sockets is theirs to set. The parsers therefore treat a reply
// as untrusted input (the bounds above, offsets checked before every read).
// Datagrams not sent by the kernel (netlink port 0), which any local
// process may address to the socket, are dropped.
//
// # What it may not touch
//
// The package only asks. It never sends SOCK_DESTROY, never changes a
// socket, and never reaches into a process (no ptrace, no pidfd_getfd:
// taking an fd from the tree to look at it is the dump's job, as is
// deciding what a socket's state means for a checkpoint). It changes no
// thread's namespace but the one it locks for Dial, and puts that one back.
// It imports nothing of cryo's but internal/kabi, where the kernel structs
// it reads are defined, and internal/errs, whose ErrNotSupported its own
// wraps; it has no unsafe code of its own.
package sockdiag
