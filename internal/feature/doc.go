// Package feature probes the kernel features and privileges cryo relies on,
// by exercising each one: a probe never reads the kernel version.
//
// # Outcomes
//
// A probe's Check returns one of three things, as cilium/ebpf's feature
// probes do:
//
//   - nil: the feature works here;
//   - an error wrapping ErrNotSupported (the kernel lacks it; the message
//     names the kernel version that introduced it) or ErrNotPermitted (the
//     kernel has it but the caller lacks a capability, or a sysctl forbids
//     it);
//   - any other error: the probe could not tell (a helper process did not
//     start, /proc is not mounted...).
//
// Conclusive answers are cached for the life of the process; inconclusive
// ones are not, so a later Check tries again.
//
// # What probes touch
//
// Probes run in cryo's own process only what is harmless there (prctl
// queries, a private mapping, a memfd). Everything that would change the
// process (clone3 with set_tid, seccomp filters, rseq registration, moving
// the vdso, clear_refs) is injected into a throwaway restore stub (package
// stub) started, seized and killed by the probe. Every probe closes what it
// opened, kills and reaps what it started, and is bounded in time.
//
// The nftables probe makes and deletes a table of its own (package
// netlock), named like a lock so that a probe killed half-way leaves a
// stale lock the next dump sweeps.
//
// This package may import kabi, ptrace, inject, stub and netlock; it may
// not import dump or restore, which consult it.
package feature
