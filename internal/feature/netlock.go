package feature

import (
	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/netlock"
)

// probeNetlock makes and removes a network lock as a dump would take one
// (package netlock): an inet table with sets of 4-tuples and chains hooked
// at input and output, on port 0, which no connection uses.
func probeNetlock() (string, error) {
	detail, err := netlock.Probe()
	// netlock already wraps ErrNotSupported for a kernel without
	// nf_tables; EPERM is a missing CAP_NET_ADMIN.
	return detail, classify("nftables lock", err, "nf_tables needs CAP_NET_ADMIN", unix.EPROTONOSUPPORT, unix.EAFNOSUPPORT, unix.EOPNOTSUPP)
}
