package netlock

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain runs the helper processes of the lifetime tests when asked
// (CRYO_NETLOCK_HELPER), the tests otherwise.
func TestMain(m *testing.M) {
	if mode := os.Getenv("CRYO_NETLOCK_HELPER"); mode != "" {
		if err := helper(mode, os.Getenv("CRYO_NETLOCK_IMAGES")); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeConns are n connections on TEST-NET-2 (198.51.100.0/24) and the
// documentation prefix 2001:db8::/32, which no real traffic uses.
func fakeConns(n int) []Conn {
	out := make([]Conn, n)
	for i := range out {
		if i%2 == 0 {
			out[i] = Conn{
				Local:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(10000+i/256)),
				Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, 200}), 443),
			}
		} else {
			a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}
			out[i] = Conn{
				Local:  netip.AddrPortFrom(netip.AddrFrom16(a), uint16(20000+i%1000)),
				Remote: netip.AddrPortFrom(netip.MustParseAddr("2001:db8::1"), 5432),
			}
		}
	}
	return out
}

// helper is a cryo process in miniature. "keep": take a lock, keep it,
// say its name and exit. "die": take a lock, say its name, exit without
// keeping it. "loop": say "go", then take and release locks until
// killed, every other one kept and removed instead of released.
func helper(mode, images string) error {
	conns := fakeConns(1000)
	switch mode {
	case "keep", "die":
		l, err := Take(NFTables, images, conns)
		if err != nil {
			return err
		}
		if mode == "keep" {
			if err := l.Keep(); err != nil {
				return err
			}
		}
		fmt.Println(l.Name())
		return nil
	case "loop":
		fmt.Println("go")
		for i := 0; ; i++ {
			l, err := Take(NFTables, images, conns)
			if err != nil {
				return err
			}
			// Every other lock is kept and removed as a restore would.
			if i%2 == 0 {
				if err := l.Keep(); err != nil {
					return err
				}
				if err := Remove(l.Name()); err != nil {
					return err
				}
				continue
			}
			if err := l.Release(); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// startHelper starts the test binary as a helper and returns it with its
// first line of output.
func startHelper(t *testing.T, mode, images string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CRYO_NETLOCK_HELPER="+mode, "CRYO_NETLOCK_IMAGES="+images)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper %s: %v", mode, err)
	}
	return cmd, strings.TrimSpace(line)
}

// ownedBy lists the tables and records of locks taken by pid.
func ownedBy(t *testing.T, pid int) (tables []Table, records []string) {
	t.Helper()
	ts, err := Tables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range ts {
		if tb.Pid == pid {
			tables = append(tables, tb)
		}
	}
	ents, err := os.ReadDir(StateDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	prefix := namePrefix + strconv.Itoa(pid) + "-"
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			records = append(records, e.Name())
		}
	}
	return tables, records
}

// nftTables cross-checks with the nft binary, when there is one, which
// cryo tables the kernel has.
func nftTables(t *testing.T) []string {
	t.Helper()
	nft, err := exec.LookPath("nft")
	if err != nil {
		if os.Getenv("CRYO_TEST_STRICT") != "" {
			t.Fatal("no nft binary to cross-check with (make deps installs nftables)")
		}
		return nil
	}
	out, err := exec.Command(nft, "list", "tables", "inet").Output()
	if err != nil {
		t.Fatalf("nft list tables: %v", err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if n, ok := strings.CutPrefix(strings.TrimSpace(l), "table inet "); ok && strings.HasPrefix(n, namePrefix) {
			names = append(names, n)
		}
	}
	return names
}

// TestKeepSweepRemove: a lock whose dump kept it outlives its owner and
// survives Sweep, with its images directory, until Remove; one whose dump
// died before Keep is stale and Sweep removes it.
func TestKeepSweepRemove(t *testing.T) {
	needLock(t)
	images := t.TempDir()
	keeper, kept := startHelper(t, "keep", images)
	if err := keeper.Wait(); err != nil {
		t.Fatal(err)
	}
	dier, stale := startHelper(t, "die", images)
	if err := dier.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Remove(kept) })
	byName := func() map[string]Table {
		ts, err := Tables()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]Table{}
		for _, tb := range ts {
			m[tb.Name] = tb
		}
		return m
	}
	m := byName()
	if tb := m[kept]; !tb.Kept || tb.Stale || tb.ImagesDir != images || tb.Pid != keeper.Process.Pid {
		t.Errorf("kept lock listed as %+v", tb)
	}
	if tb := m[stale]; tb.Kept || !tb.Stale || tb.ImagesDir != images {
		t.Errorf("stale lock listed as %+v", tb)
	}
	if err := Remove(stale + "x"); !errors.Is(err, ErrBadName) {
		t.Errorf("Remove of a name that is not a lock's: %v", err)
	}
	removed, err := Sweep()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(removed, kept) {
		t.Errorf("Sweep removed the kept lock %s", kept)
	}
	if !slices.Contains(removed, stale) {
		// go test runs packages side by side: a cryo dump of the e2e
		// tests sweeps too. Either way it must be gone (below).
		t.Logf("Sweep removed %v, not %s: another process swept first", removed, stale)
	}
	m = byName()
	if _, ok := m[stale]; ok {
		t.Errorf("stale lock %s still there after Sweep", stale)
	}
	if tb, ok := m[kept]; !ok || !tb.Kept {
		t.Errorf("kept lock %s after Sweep: %+v", kept, tb)
	}
	if _, err := os.Stat(recordPath(stale)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record of the swept lock: %v", err)
	}
	if n := nftTables(t); n != nil && (!slices.Contains(n, kept) || slices.Contains(n, stale)) {
		t.Errorf("nft lists %v", n)
	}
	if err := Remove(kept); err != nil {
		t.Fatal(err)
	}
	if _, ok := byName()[kept]; ok {
		t.Errorf("kept lock %s still there after Remove", kept)
	}
	if _, err := os.Stat(recordPath(kept)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record of the removed lock: %v", err)
	}
	if err := Remove(kept); err != nil {
		t.Errorf("Remove of a lock that is gone: %v", err)
	}
}

// TestRemoveRunning: Remove refuses the lock of a dump that still runs
// and has not kept it; once kept, Remove takes it.
func TestRemoveRunning(t *testing.T) {
	needLock(t)
	l, err := Take(NFTables, t.TempDir(), fakeConns(3))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if err := Remove(l.Name()); err == nil {
		t.Fatal("Remove took the lock of a running dump")
	}
	if err := l.Keep(); err != nil {
		t.Fatal(err)
	}
	if err := Remove(l.Name()); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Errorf("Release after Remove: %v", err)
	}
	if err := l.Keep(); err == nil {
		t.Error("Keep after Release")
	}
}

// TestKill SIGKILLs a process that takes, keeps and releases locks at
// random moments, 200 times: each time, Sweep leaves no stale lock of it
// and no record without its table, and what remains is a kept lock with
// its images directory, which Remove deletes.
func TestKill(t *testing.T) {
	needLock(t)
	images := t.TempDir()
	counts := map[string]int{}
	for i := range 200 {
		cmd, _ := startHelper(t, "loop", images)
		// A cycle of 1,000 connections takes a few milliseconds.
		time.Sleep(time.Duration(rand.Int64N(int64(15 * time.Millisecond))))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		pid := cmd.Process.Pid
		before, recs := ownedBy(t, pid)
		state := fmt.Sprintf("%d tables %d records", len(before), len(recs))
		if _, err := Sweep(); err != nil {
			t.Fatalf("kill %d: Sweep: %v", i, err)
		}
		after, recs := ownedBy(t, pid)
		if len(after) > 1 {
			t.Fatalf("kill %d: %d locks of one helper left: %+v", i, len(after), after)
		}
		for _, tb := range after {
			if !tb.Kept || tb.Stale || tb.ImagesDir != images {
				t.Fatalf("kill %d: after Sweep %+v", i, tb)
			}
			if !slices.Equal(recs, []string{filepath.Base(recordPath(tb.Name))}) {
				t.Fatalf("kill %d: kept %s with records %v", i, tb.Name, recs)
			}
			if err := Remove(tb.Name); err != nil {
				t.Fatalf("kill %d: %v", i, err)
			}
			state += ", kept"
		}
		if len(after) == 0 && len(recs) > 0 {
			t.Fatalf("kill %d: records %v without a table after Sweep", i, recs)
		}
		if left, recs := ownedBy(t, pid); len(left)+len(recs) > 0 {
			t.Fatalf("kill %d: left %+v %v", i, left, recs)
		}
		for _, n := range nftTables(t) {
			if strings.HasPrefix(n, namePrefix+strconv.Itoa(pid)+"-") {
				t.Fatalf("kill %d: nft still lists %s", i, n)
			}
		}
		counts[state]++
	}
	t.Logf("what each kill left before Sweep: %v", counts)
}

// TestRemoveReleased: the restore removing a lock its dump released
// already (a dump with --leave-running) succeeds, even while that dump's
// process still runs.
func TestRemoveReleased(t *testing.T) {
	needLock(t)
	l, err := Take(NFTables, t.TempDir(), fakeConns(3))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := Remove(l.Name()); err != nil {
		t.Errorf("Remove of a released lock: %v", err)
	}
}
