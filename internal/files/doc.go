// Package files owns file descriptors: how a dump records the fds of a
// process tree and how a restore opens them again, one module per kind of
// file.
//
// # The generic layer
//
// A dump gives every open file description of the tree an id in
// files.img (Dumper.Add): two fds that share a description — dup, fork,
// SCM_RIGHTS — are found with kcmp(KCMP_FILE) and get the same id, so that
// they share one again after restore. Files that a process reaches other
// than through an fd (its mappings, exe, cwd and root) are registered by
// path (Dumper.ByPath); a file deleted while open or mapped is a ghost, and
// its whole contents go into the image (ghost.go). An fd no kind matches
// fails the dump, naming the fd, its type and its link.
//
// A restore (Restorer) opens each file id once, in the first process that
// needs it, and every other process of the tree that holds the same
// description takes that very one with pidfd_open + pidfd_getfd, run in
// the receiving process (Restorer.Take). Fds that restore keeps for a
// while are parked above every fd number of the image (Restorer.Park).
//
// # Kinds
//
// Each kind of file (kinds.go: the table) lives in one file holding all of
// it: how the dump recognises an fd of the kind (match), records it
// (dump), how the restore opens it again (open), how `cryo show`
// describes it, and what it needs beyond that — its own state for the
// length of one dump or restore, checks once the whole tree is dumped
// (check), data beside files.img (writeSide, loadSide), work once a
// process has all its fds (processDone) or once the whole tree has
// (treeDone). Adding a kind is one new file and one line of the table.
//
// # File locks
//
// flock, POSIX and OFD locks and leases are not a kind: they ride on the
// fds of the other kinds (locks.go). A dump reads each fd's locks from
// fdinfo; a restore takes them again in TakeLocks, its own stage after
// every other, and reads them back.
//
// # What this package may not touch
//
// It runs syscalls in a process being restored only through the Proc the
// caller gives it, and never traces anything itself; it reads the dumped
// processes only through /proc and pidfd_getfd copies of their fds.
package files
