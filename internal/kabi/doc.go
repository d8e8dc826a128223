// Package kabi holds the kernel ABI that golang.org/x/sys/unix lacks: ptrace
// requests and their argument structs (GETREGSET, GET/SETSIGMASK, PEEKSIGINFO,
// GET_RSEQ_CONFIGURATION, SECCOMP_GET_FILTER), clone3's clone_args, prctl_mm_map,
// kcmp, rseq, sigaltstack, the kernel's struct sigaction, itimers, POSIX timers,
// userfaultfd, PAGEMAP_SCAN, and the sock_diag requests and messages of the
// unix, inet, packet and netlink families (with the stable head of tcp_info).
//
// Each subsystem has a file of its own. Structures are laid out exactly as the
// kernel's x86_64 UAPI headers declare them; their sizes are checked in tests.
// Everything the kernel already offers through x/sys/unix is used from there
// directly: this package only fills the gaps, so there is one place to audit
// for layout mistakes.
//
// It may not import anything of cryo's: it is the bottom of the dependency graph.
package kabi
