package netlock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cryo-project/cryo/internal/procfs"
)

// StateDir holds one record per lock. /run is volatile like the kernel's
// tables, so a reboot loses both together.
var StateDir = "/run/cryo/netlock"

// namePrefix starts every lock's table name.
const namePrefix = "cryo-lock-"

// ErrBadName is wrapped by the error for a table name that is not a cryo
// lock's (cryo-lock-PID-START-N).
var ErrBadName = errors.New("not a cryo network lock name")

// ErrBadRecord is wrapped by the errors of a state record that does not
// parse.
var ErrBadRecord = errors.New("malformed network lock record")

// owner is the cryo process that took a lock: a pid and its start time,
// so that a pid reused by another process is not taken for the owner.
type owner struct {
	pid   int
	start uint64
}

func self() (owner, error) {
	pid := os.Getpid()
	st, err := procfs.StatPid(pid)
	if err != nil {
		return owner{}, fmt.Errorf("own start time: %w", err)
	}
	return owner{pid: pid, start: st.Starttime}, nil
}

func (o owner) name(n uint64) string {
	return fmt.Sprintf("%s%d-%d-%d", namePrefix, o.pid, o.start, n)
}

// gone says whether the owner has exited: no such pid, another process
// under it, or a zombie (which can no longer keep its lock).
func (o owner) gone() (bool, error) {
	st, err := procfs.StatPid(o.pid)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("owner pid %d: %w", o.pid, err)
	}
	return st.Starttime != o.start || st.State == 'Z' || st.State == 'X', nil
}

// parseName splits cryo-lock-PID-START-N.
func parseName(name string) (owner, uint64, error) {
	rest, ok := strings.CutPrefix(name, namePrefix)
	f := strings.Split(rest, "-")
	if !ok || len(f) != 3 {
		return owner{}, 0, fmt.Errorf("%q: %w", name, ErrBadName)
	}
	var v [3]uint64
	for i, s := range f {
		u, err := strconv.ParseUint(s, 10, 64)
		// One spelling per number, so that one lock has one name.
		if err != nil || strconv.FormatUint(u, 10) != s {
			return owner{}, 0, fmt.Errorf("%q: %w", name, ErrBadName)
		}
		v[i] = u
	}
	if v[0] == 0 || v[0] > 1<<22 { // PID_MAX_LIMIT
		return owner{}, 0, fmt.Errorf("%q: pid %d: %w", name, v[0], ErrBadName)
	}
	return owner{pid: int(v[0]), start: v[1]}, v[2], nil
}

// record is what StateDir/NAME.json says of a lock.
type record struct {
	ImagesDir string `json:"images_dir"`
	Kept      bool   `json:"kept"`
}

// maxRecord bounds a record: a path of PATH_MAX, escaped, and the rest.
const maxRecord = 6 * 4096

func recordPath(name string) string { return filepath.Join(StateDir, name+".json") }

// parseRecord decodes a record: one JSON object, nothing after it.
func parseRecord(b []byte) (record, error) {
	if len(b) > maxRecord {
		return record{}, fmt.Errorf("%d bytes, more than %d: %w", len(b), maxRecord, ErrBadRecord)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var r record
	if err := d.Decode(&r); err != nil {
		return record{}, fmt.Errorf("at byte %d: %v: %w", d.InputOffset(), err, ErrBadRecord)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return record{}, fmt.Errorf("data after the object at byte %d: %w", d.InputOffset(), ErrBadRecord)
	}
	return r, nil
}

// readRecord reads name's record; found is false if it has none.
func readRecord(name string) (r record, found bool, err error) {
	f, err := os.Open(recordPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return record{}, false, err
	}
	r, err = parseRecord(b)
	if err != nil {
		return record{}, false, fmt.Errorf("%s: %w", recordPath(name), err)
	}
	return r, true, nil
}

// writeRecord replaces name's record atomically: a reader (or a crash)
// sees the old record or the new one, whole.
func writeRecord(name string, r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(StateDir, 0o700); err != nil {
		return err
	}
	final := recordPath(name)
	tmp := final + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", final, err)
	}
	return nil
}

func removeRecord(name string) error {
	err := os.Remove(recordPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// sweepRecords removes the records (and half-written ones) of locks that
// have no table, when their owner is gone; live names the tables found.
// A live owner's record without a table is a Take between its two steps.
func sweepRecords(live map[string]bool) error {
	ents, err := os.ReadDir(StateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json.tmp")
		tmp := ok
		if !ok {
			name, ok = strings.CutSuffix(e.Name(), ".json")
		}
		if !ok || (!tmp && live[name]) {
			continue
		}
		o, _, err := parseName(name)
		if err != nil {
			continue // not a record of ours
		}
		gone, err := o.gone()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !gone {
			continue
		}
		if err := os.Remove(filepath.Join(StateDir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
