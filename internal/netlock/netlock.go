package netlock

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
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

// PassMark is the packet mark (SO_MARK of the sending socket) that passes
// every lock: CRIU's SOCCR_MARK.
const PassMark = 0xC114

// Conn is one TCP connection, as the dumped socket sees it.
type Conn struct {
	Local, Remote netip.AddrPort
}

// Lock is one set of locked connections.
type Lock struct {
	name  string
	taken time.Time

	mu        sync.Mutex
	imagesDir string
	kept      bool
	released  bool
}

// seq numbers the locks of this process.
var seq atomic.Uint64

// Take locks conns. imagesDir is recorded with the lock so that Tables can
// say which dump a lock waits on. With Skip, or no conns, it locks nothing
// and returns a Lock whose methods do nothing.
//
// Take returns once the kernel drops the packets of every connection. It
// fails, locking nothing, if a connection is not a pair of valid addresses
// of one family (an IPv4-mapped address counts as IPv4). An error wrapping
// errs.ErrNotSupported means the kernel lacks nf_tables or its inet family.
func Take(m Method, imagesDir string, conns []Conn) (*Lock, error) {
	if _, err := ParseMethod(string(m)); err != nil {
		return nil, err
	}
	if m == Skip || len(conns) == 0 {
		return &Lock{taken: time.Now()}, nil
	}
	v4, v6, err := keys(conns)
	if err != nil {
		return nil, err
	}
	o, err := self()
	if err != nil {
		return nil, fmt.Errorf("network lock: %w", err)
	}
	if imagesDir != "" {
		if abs, err := filepath.Abs(imagesDir); err == nil {
			imagesDir = abs
		}
	}
	l := &Lock{name: o.name(seq.Add(1)), imagesDir: imagesDir}
	// The record first: a table never exists without one, so that a
	// table found without its record was being removed (see the package
	// doc, Crash safety).
	if err := writeRecord(l.name, record{ImagesDir: imagesDir}); err != nil {
		return nil, fmt.Errorf("network lock %s: %w", l.name, err)
	}
	if err := createTable(l.name, v4, v6); err != nil {
		return nil, errors.Join(fmt.Errorf("network lock of %d connections (%s): %w", len(conns), m, err),
			removeRecord(l.name))
	}
	l.taken = time.Now()
	return l, nil
}

// Name is the lock's nftables table, "" for a lock of nothing. The dump
// records it in the image so the restore can remove it.
func (l *Lock) Name() string { return l.name }

// Held is how long the lock has been held.
func (l *Lock) Held() time.Duration { return time.Since(l.taken) }

// Keep marks the dump that took the lock complete: from now on the lock is
// not stale when its dumper is gone; it waits for the restore, which calls
// Remove(Name()). A dump that does not call Keep before it exits leaves a
// lock the next Sweep removes.
func (l *Lock) Keep() error {
	if l.name == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return fmt.Errorf("keep network lock %s: already released", l.name)
	}
	if l.kept {
		return nil
	}
	if err := writeRecord(l.name, record{ImagesDir: l.imagesDir, Kept: true}); err != nil {
		return fmt.Errorf("keep network lock %s: %w", l.name, err)
	}
	l.kept = true
	return nil
}

// Release removes the lock's rules: the connections flow again. Releasing
// twice does nothing.
func (l *Lock) Release() error {
	if l.name == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	if err := remove(l.name); err != nil {
		return fmt.Errorf("release network lock: %w", err)
	}
	l.released = true
	return nil
}

// Remove removes the lock called name (from an image), if it is still
// there. It refuses a name that is not a cryo lock's, and a lock whose
// dump is still running (its owner lives and it has not kept it).
func Remove(name string) error {
	if name == "" {
		return nil
	}
	o, _, err := parseName(name)
	if err != nil {
		return fmt.Errorf("remove network lock: %w", err)
	}
	names, err := listTables()
	if err != nil {
		return fmt.Errorf("remove network lock %s: %w", name, err)
	}
	if !slices.Contains(names, name) {
		// Released by its dump (--leave-running), or swept: what is left
		// of its record is Sweep's.
		return nil
	}
	rec, found, err := readRecord(name)
	if err != nil {
		return fmt.Errorf("remove network lock %s: %w", name, err)
	}
	if !(found && rec.Kept) {
		gone, err := o.gone()
		if err != nil {
			return fmt.Errorf("remove network lock %s: %w", name, err)
		}
		if !gone {
			return fmt.Errorf("remove network lock %s: its dump (pid %d) is still running and has not completed", name, o.pid)
		}
	}
	if err := remove(name); err != nil {
		return fmt.Errorf("remove network lock: %w", err)
	}
	return nil
}

// remove deletes the table, then its record; either may be gone already.
func remove(name string) error {
	if err := deleteTable(name); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := removeRecord(name); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Table is one lock found on this machine.
type Table struct {
	Name      string `json:"name"`
	ImagesDir string `json:"images_dir,omitempty"`
	Kept      bool   `json:"kept"`  // its dump completed; it waits for a restore
	Stale     bool   `json:"stale"` // its dump died before completing
	// Pid is the cryo process that took it.
	Pid int `json:"pid"`
}

// Tables lists the locks on this machine (in this network namespace), by
// name.
func Tables() ([]Table, error) {
	names, err := listTables()
	if err != nil {
		return nil, err
	}
	var out []Table
	var errs []error
	for _, n := range names {
		o, _, err := parseName(n)
		if err != nil {
			continue // not ours
		}
		t := Table{Name: n, Pid: o.pid}
		rec, found, err := readRecord(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("network lock %s: %w", n, err))
		}
		if found {
			t.ImagesDir, t.Kept = rec.ImagesDir, rec.Kept
		}
		if !t.Kept {
			gone, err := o.gone()
			if err != nil {
				errs = append(errs, fmt.Errorf("network lock %s: %w", n, err))
			}
			t.Stale = gone
		}
		out = append(out, t)
	}
	return out, errors.Join(errs...)
}

// Sweep removes stale locks and returns their names. It also removes the
// records left without a table by an owner that is gone.
func Sweep() ([]string, error) {
	ts, err := Tables()
	if ts == nil && err != nil {
		return nil, err
	}
	errs := []error{err}
	var removed []string
	live := map[string]bool{}
	for _, t := range ts {
		live[t.Name] = true
		if !t.Stale {
			continue
		}
		if err := remove(t.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, t.Name)
	}
	errs = append(errs, sweepRecords(live))
	return removed, errors.Join(errs...)
}

// SweepLogged is Sweep for the start of a dump or restore: what it removes
// and why it could not are logged, never returned. A kernel without
// nf_tables, or a caller without CAP_NET_ADMIN, has no locks to sweep.
func SweepLogged(log *slog.Logger) {
	removed, err := Sweep()
	for _, n := range removed {
		log.Info("removed a stale network lock (its dump died before completing)", "table", n)
	}
	switch {
	case err == nil:
		log.Debug("stale network locks swept", "removed", len(removed))
	case unavailable(err):
		log.Debug("no network locks to sweep", "err", err)
	default:
		log.Warn("sweeping stale network locks failed", "err", err)
	}
}

// Probe checks that a lock can be made here: it takes and releases a lock
// of one connection per family on port 0, which no connection uses. The
// detail says how long it took.
func Probe() (string, error) {
	t0 := time.Now()
	l, err := Take(NFTables, "", []Conn{
		{netip.AddrPortFrom(netip.IPv4Unspecified(), 0), netip.AddrPortFrom(netip.IPv4Unspecified(), 0)},
		{netip.AddrPortFrom(netip.IPv6Unspecified(), 0), netip.AddrPortFrom(netip.IPv6Unspecified(), 0)},
	})
	if err != nil {
		return "", err
	}
	took := time.Since(t0)
	found := false
	names, err := listTables()
	for _, n := range names {
		found = found || n == l.Name()
	}
	rerr := l.Release()
	if err := errors.Join(err, rerr); err != nil {
		return "", err
	}
	if !found {
		return "", fmt.Errorf("table %s was created but is not listed", l.Name())
	}
	return fmt.Sprintf("inet table with sets of 4-tuples and input/output hooks made in %d µs", took.Microseconds()), nil
}
