// Package inspect answers two questions about live processes without
// stopping them: which deleted files are still held, and how much disk or
// memory each holds (`cryo deleted`), and what one process's mappings are
// and whom they are shared with (`cryo maps`).
//
// It owns the logic and the output formats of those two commands. It reads
// /proc only through [procfs] (the same parsers dump uses) plus stat(2) and
// readlink(2) of /proc/PID/fd and /proc/PID/map_files links. It may not
// ptrace, signal, freeze or otherwise change any process, and it writes
// nothing but its report.
//
// # Why map_files
//
// A file that is mapped, unlinked and closed has no name and no fd: only the
// mapping holds it, and only /proc/PID/map_files/START-END reaches it.
// Following that link (stat through it) gives the file's size and the blocks
// it occupies, but the kernel allows it only to callers with
// CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the initial user namespace.
// Without it the maps line still names the device and inode, so such a file
// is listed and de-duplicated but counted as not measured, and the report
// names the capability that would let it be measured. Files held open are
// measured through /proc/PID/fd, which the owner of a process may follow.
//
// # Consistency
//
// Each process is read separately and nothing is frozen, so a process that
// maps or closes a file during the scan may be seen before or after. A
// process that exits during the scan is skipped silently.
//
// # Security
//
// File names in maps and fd links are chosen by the processes that own them
// and may contain newlines, escape sequences or a literal " (deleted)"
// suffix. The " (deleted)" suffix is only a hint: a file is confirmed deleted
// by its link count, or, when it cannot be measured, by the fact that no
// file with the literal name (suffix included) has the same inode. Text
// output quotes names that contain non-printable characters.
package inspect
