// Package netlock keeps the packets of a dumped tree's TCP connections
// from flowing while the tree is not running, so that a peer sees neither
// a reset nor data the restored sockets would not know about: it only
// retransmits, and the connection carries on once the tree runs again.
//
// # Rules
//
// A lock is one nftables table of family inet, made over netlink (package
// github.com/google/nftables: no nft or iptables binary is needed) in one
// batch, so that the kernel installs all of it or none of it. The table
// holds two sets of 4-tuples, conns4 (ipv4_addr . inet_service . ipv4_addr
// . inet_service) and conns6 (the same with ipv6_addr), and two base
// chains, one hooked at input and one at output, each with these rules
// (as `nft list table inet NAME` prints them; the rules also match meta
// nfproto and meta l4proto tcp):
//
//	meta mark 0x0000c114 accept
//	ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop
//	ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop
//
// Every locked connection puts both of its directions in the set, so the
// packets it would send and the packets its peer sends are both dropped,
// and 10,000 connections cost one hash lookup per packet, not 10,000 rules.
// A connection over loopback between two processes of the tree crosses
// both hooks and matches either way. An IPv4-mapped IPv6 address
// (::ffff:a.b.c.d) is plain IPv4 on the wire and goes in conns4. Only TCP
// packets of exactly those tuples are dropped: everything else on the
// machine flows as before, and nothing is ever locked by host or port
// alone. Packets whose mark is PassMark (CRIU's SOCCR_MARK) pass, so that
// a restore can send what it must through the lock.
//
// The output chain sits at priority raw (-300), before conntrack and
// destination NAT rewrite the packet, and the input chain at 200, after
// the reply of a NATed connection is translated back: both match the
// addresses the socket itself sees.
//
// The IPTables method is accepted because it is CRIU's default name; cryo
// locks with the same nftables rules all the same.
//
// # Lifetimes
//
// A table is called cryo-lock-PID-START-N: the owning cryo process's pid,
// its start time in clock ticks since boot (/proc/PID/stat field 22, so a
// reused pid is not taken for the owner) and a sequence number within the
// process. Beside it a state record, StateDir/NAME.json, says which images
// directory the lock belongs to and whether its dump completed (Keep).
//
// A lock is held while its owner runs; kept once Keep recorded that its
// dump completed, until the restore removes it (Remove, with the name the
// dump recorded in the image); stale when its owner is gone and it was
// never kept. Sweep removes stale locks, and every cryo dump and restore
// sweeps first.
//
// # Crash safety
//
// A SIGKILL at any instant leaves either a stale lock (which Sweep removes)
// or a kept lock with its images directory, never a lock that is neither:
//
//   - Take writes the record (kept: false) before the table, each
//     atomically (a record is written to NAME.json.tmp, synced and renamed;
//     the table comes in one netlink batch). Killed in between, it leaves
//     a record without a table, which Sweep removes once the owner is gone.
//   - Keep renames a record that says kept: true over the old one: before
//     the rename the lock is stale, after it kept.
//   - Release and Remove delete the table, then the record; a record left
//     without its table is swept like the first case.
//
// Tables and records are both volatile (the kernel's and /run's), so a
// reboot loses both together.
//
// # Security
//
// Remove takes a name read from an image: it acts only on names of the
// form above, so an image cannot make cryo delete another program's
// table, and it refuses a lock whose dump is still running (neither kept
// nor stale). Records live in a root-only directory; their images
// directory is only shown, never opened.
//
// This package owns the netlink conversation with nf_tables; it imports
// procfs (owner start times) and errs, and nothing that dumps or restores.
package netlock
