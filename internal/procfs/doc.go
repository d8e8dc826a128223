// Package procfs parses the text and binary files the Linux kernel exposes
// under /proc/PID: maps and smaps, stat, status, fdinfo, auxv, timers,
// mountinfo, limits and task/TID/children, and the integer sysctls under
// /proc/sys. It is what cryo's dump reads to learn a process's state, and
// what `cryo maps` and `cryo deleted` print.
//
// Every parser has two forms. ParseXxx takes the file's bytes and never does
// I/O, so it can be fed testdata and fuzzed; XxxPid reads /proc/PID/xxx with
// [ReadFileBounded] and then calls ParseXxx. Errors from the parsers are
// [*ParseError] values that name the file, the line and the byte offset of
// the offending record, and match [ErrMalformed] with errors.Is.
//
// The package only reads. It never ptraces, stops, signals or otherwise
// touches the process it describes; freezing the target so that what is read
// stays true is the dump's job. Reading /proc of a running process is a
// snapshot per file, not across files: maps and status read a moment apart
// may disagree, and callers that need consistency must freeze first.
//
// Some fields are only filled in when the reader may ptrace the target
// (e.g. stat's startcode and env_end, the whole of smaps and auxv): the kernel
// shows zeros or refuses the open. The parsers do not guess; they report what
// the kernel printed.
//
// # Security
//
// /proc content is untrusted input. A process chooses its own comm (which may
// contain spaces, ')' and newlines), the names of the files it maps, of its
// mount points and of its anonymous mappings; a file name may contain
// anything but NUL, including text that looks like another field, a " (deleted)"
// suffix or an escape sequence. The parsers therefore locate fields from the
// unambiguous end of a line where the kernel's format demands it, cap every
// allocation (file size, line length, list lengths) and never use a value
// read from the file as a size to allocate without a bound. Where the
// kernel's own format is ambiguous (see [Mapping.Deleted]) the field's
// documentation says so; callers must not treat such a field as proof.
package procfs
