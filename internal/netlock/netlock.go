// Package netlock keeps the packets of a dumped tree's TCP connections
// from flowing while the tree is not running, so that a peer sees neither
// a reset nor data the restored sockets would not know about: it only
// retransmits, and the connection carries on once the tree runs again.
//
// The lock is a set of nftables rules made over netlink (no iptables or
// nft binary is needed), one table per lock, dropping packets of the
// locked 4-tuples in both directions. A lock outlives the dump that took
// it when the dump completes and the tree is gone: the restore removes it
// once the restored tree runs. A lock whose dump died before completing
// is stale; Sweep removes those, and every cryo dump and restore calls it
// first. `cryo check` lists what Tables reports.
//
// This file is the package's API; its implementation lands with the
// network lock work (issue 9). Until then Take refuses with a clear error
// unless the method is Skip.
package netlock

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/cryo-project/cryo/internal/errs"
)

// Method is how connections are locked, as CRIU's --network-lock names it.
type Method string

const (
	NFTables Method = "nftables" // the default
	IPTables Method = "iptables" // CRIU's default; cryo locks with nftables rules all the same
	Skip     Method = "skip"     // no lock: the caller has made sure nothing flows
)

// ParseMethod checks a --network-lock value.
func ParseMethod(s string) (Method, error) {
	switch m := Method(s); m {
	case NFTables, IPTables, Skip:
		return m, nil
	case "":
		return NFTables, nil
	}
	return "", fmt.Errorf("--network-lock %q: want nftables, iptables or skip", s)
}

// Conn is one TCP connection, as the dumped socket sees it.
type Conn struct {
	Local, Remote netip.AddrPort
}

// Lock is one set of locked connections.
type Lock struct {
	name  string
	taken time.Time
}

// Take locks conns. imagesDir is recorded with the lock so that Tables can
// say which dump a lock waits on. With Skip, or no conns, it locks nothing
// and returns a Lock whose methods do nothing.
func Take(m Method, imagesDir string, conns []Conn) (*Lock, error) {
	if m == Skip || len(conns) == 0 {
		return &Lock{taken: time.Now()}, nil
	}
	return nil, fmt.Errorf("network lock (%s): %w", m, errs.ErrNotSupported)
}

// Name is the lock's nftables table, "" for a lock of nothing. The dump
// records it in the image so the restore can remove it.
func (l *Lock) Name() string { return l.name }

// Held is how long the lock has been held.
func (l *Lock) Held() time.Duration { return time.Since(l.taken) }

// Keep marks the dump that took the lock complete: from now on the lock is
// not stale when its dumper is gone; it waits for the restore.
func (l *Lock) Keep() error { return nil }

// Release removes the lock's rules.
func (l *Lock) Release() error { return nil }

// Remove removes the lock called name (from an image), if it is still there.
func Remove(name string) error { return nil }

// Table is one lock found on this machine.
type Table struct {
	Name      string
	ImagesDir string
	Kept      bool // its dump completed; it waits for a restore
	Stale     bool // its dump died before completing
}

// Tables lists the locks on this machine.
func Tables() ([]Table, error) { return nil, nil }

// Sweep removes stale locks and returns their names.
func Sweep() ([]string, error) { return nil, nil }
