package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	tcpstream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/image/imagetest"
)

// tcpFlags are what a dump and a restore of established connections are
// given: the network lock is the default, nftables.
var tcpFlags = []string{"--tcp-established"}

// tcpCycle dumps tg with flags, checks it was killed, and restores it
// detached with rflags.
func tcpCycle(t *testing.T, tg *target, img string, first bool, flags, rflags []string) {
	t.Helper()
	mustDump(t, tg.pid, img, flags...)
	if first {
		tg.expectKilled()
	} else if _, err := waitReaped(tg.pid, exitTimeout); err != nil {
		t.Fatalf("restored target after its dump: %v", err)
	}
	reapOrphans(t)
	restoreDetached(t, tg, img, rflags...)
}

// tcpFinish dumps the restored tree once more, restores it in the
// foreground, fires the trigger and checks that every check passed.
func tcpFinish(t *testing.T, tg *target, what string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "img-last")
	mustDump(t, tg.pid, img, tcpFlags...)
	if _, err := waitReaped(tg.pid, exitTimeout); err != nil {
		t.Fatalf("restored target after its dump: %v", err)
	}
	reapOrphans(t)
	w := armState(t, img, "pre-resume", tg.pid)
	cp := startCryo(t, restoreArgs(img, tcpFlags...)...)
	expectSameState(t, img, w, cp.done)
	tg.fire()
	r := cp.wait(restoreTimeout + time.Minute)
	if r.timedOut {
		t.Fatalf("restore: %v\n%s", r, readLog(img+".restore.log"))
	}
	tg.expectPassed(r.code, what)
}

// TestTCPEstablishedPair: two processes of the tree, each holding one end
// of a loopback TCP connection, stream numbered records to each other
// all the time, through every dump. The tree is dumped and restored
// three times (the last restore in the foreground); then each side makes
// sure it got every record once, in order, records after the restore
// included, and that the stream ended where its writer said.
func TestTCPEstablishedPair(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "tcp", "pair4")
	for cycle := 1; cycle <= 2; cycle++ {
		tcpCycle(t, tg, filepath.Join(t.TempDir(), fmt.Sprintf("img%d", cycle)), cycle == 1, tcpFlags, tcpFlags)
	}
	tcpFinish(t, tg, "after three checkpoints with the connection streaming")
}

// TestTCPEstablishedIPv6: the same over IPv6 loopback, and over an IPv6
// socket connected to a v4-mapped address (::ffff:127.0.0.1).
func TestTCPEstablishedIPv6(t *testing.T) {
	requireCryo(t)
	for _, mode := range []string{"pair6", "pairmapped"} {
		t.Run(mode, func(t *testing.T) {
			tg := startTarget(t, "tcp", mode)
			tcpCycle(t, tg, filepath.Join(t.TempDir(), "img"), true, tcpFlags, tcpFlags)
			tcpFinish(t, tg, "after two checkpoints")
		})
	}
}

// TestTCPEstablishedQueues: a connection whose receiver's buffer is small
// and where neither side reads: each end holds data sent and not yet
// acknowledged, data not yet sent (the window is closed) and unread data.
// The image must have all three (read back here), and after the restore
// each side reads the whole stream, every record once and in order.
func TestTCPEstablishedQueues(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "tcp", "queues")
	img := filepath.Join(t.TempDir(), "img")
	tcpCycle(t, tg, img, true, tcpFlags, tcpFlags)
	var inq, sent, unsent uint32
	for _, st := range readTCPStreams(t, img) {
		inq += st.GetInqLen()
		sent += st.GetOutqLen() - st.GetUnsqLen()
		unsent += st.GetUnsqLen()
	}
	if inq == 0 || sent == 0 || unsent == 0 {
		t.Errorf("image holds %d unread, %d unacknowledged and %d unsent bytes: want some of each", inq, sent, unsent)
	}
	// CRIU's crit reads the entry and both queues after it.
	crit := imagetest.Crit(t)
	names, _ := filepath.Glob(filepath.Join(img, "tcp-stream-*.img"))
	for _, n := range names {
		out, err := exec.Command(crit, "decode", "-i", n).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"extra": {"inq": "`) {
			t.Errorf("crit decode -i %s: %v\n%s", n, err, lastLines(string(out), 5))
		}
	}
	tcpFinish(t, tg, "after two checkpoints with full queues")
}

// readTCPStreams decodes the tcp-stream images of img.
func readTCPStreams(t *testing.T, img string) []*tcpstream.TcpStreamEntry {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(img, "tcp-stream-*.img"))
	if len(names) == 0 {
		t.Fatalf("no tcp-stream image in %s", img)
	}
	d, err := image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	var out []*tcpstream.TcpStreamEntry
	for _, n := range names {
		st := &tcpstream.TcpStreamEntry{}
		r, err := d.Open(filepath.Base(n), "TCP_STREAM")
		if err != nil {
			t.Fatal(err)
		}
		err = r.Next(st)
		r.Close()
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		out = append(out, st)
	}
	return out
}

// TestTCPEstablishedHalfClosed: a connection half closed, both ends in
// the tree: one end sent data and its FIN (FIN_WAIT2), the other read
// neither and sent data of its own (CLOSE_WAIT), each holding what the
// other sent. Dumped and restored three times, each end is in its state,
// reads what was sent then the end of the stream where it was, the one
// that shut down cannot write, and the other's data sent after the
// restore arrives.
func TestTCPEstablishedHalfClosed(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "tcp", "halfclose")
	for cycle := 1; cycle <= 2; cycle++ {
		tcpCycle(t, tg, filepath.Join(t.TempDir(), fmt.Sprintf("img%d", cycle)), cycle == 1, tcpFlags, tcpFlags)
	}
	tcpFinish(t, tg, "after three checkpoints half closed")
}

// pattern is what the tcp target's fill_buf writes.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed)
	}
	return b
}

// TestTCPEstablishedHalfClosedPeer: the same with the test as the peer,
// outside the tree: the target shut down its side (FIN_WAIT2, the test's
// end in CLOSE_WAIT), or the test did (the target in CLOSE_WAIT). After
// the restore each side reads what the other sent, then the end of the
// stream, and the test's end never sees a reset.
func TestTCPEstablishedHalfClosedPeer(t *testing.T) {
	requireCryo(t)
	for _, dir := range []string{"send", "recv"} {
		t.Run(dir, func(t *testing.T) {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			tg := startTargetNoWait(t, "tcp", "peerhalf", fmt.Sprint(ln.Addr().(*net.TCPAddr).Port), dir)
			nc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c := nc.(*net.TCPConn)
			defer c.Close()
			if dir == "send" {
				_, err = c.Write(pattern(2000, 2))
			} else {
				if _, err = c.Write(pattern(1000, 1)); err == nil {
					err = c.CloseWrite()
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			tg.waitReady()
			for cycle := 1; cycle <= 2; cycle++ {
				tcpCycle(t, tg, filepath.Join(t.TempDir(), fmt.Sprintf("img%d", cycle)), cycle == 1, tcpFlags, tcpFlags)
			}
			// The target checks its state first: the test's FIN, once it
			// reads the end, would move it on.
			tg.fire()
			for deadline := time.Now().Add(10 * time.Second); !regexp.MustCompile(`(PASS|FAIL) state`).MatchString(tg.log()); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the target did not check its state:\n%s", tg.log())
				}
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			want := pattern(1000, 1)
			if dir == "recv" {
				want = append(pattern(2000, 2), pattern(100, 3)...)
			}
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("the test read %d bytes (%v), want %d: the target's data then the end", len(got), err, len(want))
			}
			if dir == "send" {
				if _, err := c.Write(pattern(100, 3)); err != nil {
					t.Errorf("write after the restore: %v", err)
				}
				if err := c.CloseWrite(); err != nil {
					t.Error(err)
				}
			}
			ws, err := waitReaped(tg.pid, restoreTimeout)
			if err != nil {
				t.Fatalf("restored target: %v", err)
			}
			tg.expectPassed(ws.ExitStatus(), "after two checkpoints half closed with the test")
		})
	}
}

// TestTCPEstablishedLeaveRunning: a dump with --leave-running leaves the
// streaming connection working: after the dump the tree goes on, and its
// checks pass.
func TestTCPEstablishedLeaveRunning(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "tcp", "pair4")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img, append([]string{"--leave-running"}, tcpFlags...)...)
	tg.expectUnharmed("after a dump with --leave-running")
}

// TestTCPEstablishedFailedDump: a dump that fails once the connections
// were read in repair mode (its images do not fit the disk) lets them go
// on as they were: the tree runs on, streaming, and every check passes.
func TestTCPEstablishedFailedDump(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "tcp", "pair4")
	img := filepath.Join(mountTmpfs(t, filepath.Join(t.TempDir(), "full"), "size=256k"), "img")
	r := dump(t, tg.pid, img, tcpFlags...)
	if r.code == 0 {
		t.Fatal("a dump into 256 KiB succeeded")
	}
	if !strings.Contains(r.output, "TCP connections read in repair mode") {
		t.Errorf("the dump failed before reading the connections, which this test is about:\n%s", r.output)
	}
	tg.expectUnharmed("after a dump that failed past the repair")
}

// TestTCPEstablishedRefused: without --tcp-established an established
// connection fails the dump, named, and leaves the tree running intact;
// so does, with it, a half-closed connection or one reset by its peer;
// an image that holds one is refused by a restore without it.
func TestTCPEstablishedRefused(t *testing.T) {
	requireCryo(t)
	t.Run("dump", func(t *testing.T) {
		tg := startTarget(t, "tcp", "pair4")
		img := filepath.Join(t.TempDir(), "img")
		r := dump(t, tg.pid, img)
		if r.code == 0 {
			t.Fatalf("dump of an established connection without --tcp-established succeeded")
		}
		re := regexp.MustCompile(`tcp 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+ in state ESTABLISHED\): an established TCP connection \(dump it with --tcp-established\)`)
		if !re.MatchString(r.output) {
			t.Errorf("refusal does not name the connection:\n%s", r.output)
		}
		tg.expectUnharmed("after the refused dump")
	})
	for _, c := range []struct {
		mode, want string
		flags      []string
	}{
		{"halfclose", `tcp 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+ in state FIN_WAIT2\): a half-closed TCP connection \(FIN_WAIT2\) \(dump it with --tcp-established\)`, nil},
		{"reset", `tcp 127\.0\.0\.1:\d+ in state CLOSE\): a closed connection \(\d+ segments sent, \d+ received; reset`, tcpFlags},
	} {
		t.Run(c.mode, func(t *testing.T) {
			tg := startTarget(t, "tcp", c.mode)
			r := dump(t, tg.pid, filepath.Join(t.TempDir(), "img"), c.flags...)
			if r.code == 0 {
				t.Fatalf("dump of a %s connection succeeded", c.mode)
			}
			if !regexp.MustCompile(c.want).MatchString(r.output) {
				t.Errorf("refusal does not name the connection and its state:\n%s", r.output)
			}
			tg.expectUnharmed("after the refused dump")
		})
	}
	t.Run("restore", func(t *testing.T) {
		tg := startTarget(t, "tcp", "pair4")
		img := filepath.Join(t.TempDir(), "img")
		mustDump(t, tg.pid, img, tcpFlags...)
		tg.expectKilled()
		reapOrphans(t)
		r := runCryo(t, restoreTimeout, restoreArgs(img, "-d")...)
		if r.code == 0 {
			t.Fatal("restore of an image with established connections without --tcp-established succeeded")
		}
		if !strings.Contains(r.output, "is an established TCP connection (127.0.0.1:") || !strings.Contains(r.output, "restore it with --tcp-established") {
			t.Errorf("refusal does not name the connection:\n%s", r.output)
		}
		if runsTarget(tg.pid, tg.name) {
			t.Fatalf("the refused restore left pid %d running", tg.pid)
		}
		restoreDetached(t, tg, img, tcpFlags...)
		tcpFinish(t, tg, "after the refused restore and a real one")
	})
}

// TestTCPEstablishedClose: restored with --tcp-close, the connection comes
// back aborted: the program's next call on it fails with ECONNABORTED,
// which the target reports as a failed stream, and nothing else breaks;
// whether the dump read the connection (--tcp-established) or not (dump
// --tcp-close, whose image a restore without --tcp-close refuses).
func TestTCPEstablishedClose(t *testing.T) {
	requireCryo(t)
	for _, c := range []struct {
		name string
		dump []string
	}{{"established", tcpFlags}, {"dump-close", []string{"--tcp-close"}}} {
		t.Run(c.name, func(t *testing.T) {
			tg := startTarget(t, "tcp", "pair4")
			img := filepath.Join(t.TempDir(), "img")
			mustDump(t, tg.pid, img, c.dump...)
			tg.expectKilled()
			reapOrphans(t)
			if c.name == "dump-close" {
				r := runCryo(t, restoreTimeout, restoreArgs(img, "-d", "--tcp-established")...)
				if r.code == 0 || !strings.Contains(r.output, "dumped with --tcp-close") {
					t.Fatalf("restore of a --tcp-close image without --tcp-close: %v", r)
				}
			}
			cp := startCryo(t, restoreArgs(img, "--tcp-close")...)
			r := cp.wait(restoreTimeout)
			if r.timedOut {
				t.Fatalf("restore: %v", r)
			}
			log := tg.log()
			for _, side := range []string{"parent", "child"} {
				if !regexp.MustCompile(`FAIL stream-` + side + `: (read|write) after \d+ records 0: Software caused connection abort`).MatchString(log) {
					t.Errorf("the %s's stream did not end with ECONNABORTED:\n%s", side, log)
				}
			}
			if !strings.Contains(log, "PASS pid") {
				t.Errorf("the restored tree did not check itself:\n%s", log)
			}
		})
	}
}

// peerStream is the test's end of a connection that streams numbered
// records both ways with the target's (test/targets/tcp.c's protocol).
type peerStream struct {
	c        *net.TCPConn
	mu       sync.Mutex
	written  uint64
	read     uint64
	readErr  error
	writeErr error
	stop     chan struct{} // closed: the trigger fired, write TRIG
	gotTrig  chan struct{} // closed when the target's TRIG arrived: write END
	wdone    chan struct{} // closed when the writer is done
	readDone chan struct{} // closed when the reader is done
}

const (
	endRecord  = 1 << 63
	trigRecord = 1 << 62
)

func newPeerStream(c *net.TCPConn) *peerStream {
	ps := &peerStream{c: c, stop: make(chan struct{}), gotTrig: make(chan struct{}), wdone: make(chan struct{}), readDone: make(chan struct{})}
	go ps.writer()
	go ps.reader()
	return ps
}

func (ps *peerStream) writer() {
	defer close(ps.wdone)
	buf := make([]byte, 8*512)
	trigSent := false
	record := func(v uint64) error {
		binary.LittleEndian.PutUint64(buf, v)
		ps.c.SetWriteDeadline(time.Time{})
		_, err := ps.c.Write(buf[:8])
		return err
	}
	for {
		select {
		case <-ps.stop:
			if !trigSent {
				if ps.writeErr = record(trigRecord | ps.written); ps.writeErr != nil {
					return
				}
				trigSent = true
			}
		default:
		}
		if trigSent {
			select {
			case <-ps.gotTrig:
				if ps.writeErr = record(endRecord | ps.written); ps.writeErr == nil {
					ps.writeErr = ps.c.CloseWrite()
				}
				return
			default:
			}
		}
		for i := 0; i < len(buf)/8; i++ {
			binary.LittleEndian.PutUint64(buf[8*i:], ps.written+uint64(i))
		}
		ps.c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := ps.c.Write(buf)
		if n%8 != 0 {
			// A record cut by the deadline: finish it before anything else.
			rest := 8 - n%8
			ps.c.SetWriteDeadline(time.Time{})
			if _, err := ps.c.Write(buf[n : n+rest]); err != nil {
				ps.writeErr = err
				return
			}
			n += rest
		}
		ps.mu.Lock()
		ps.written += uint64(n / 8)
		ps.mu.Unlock()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			ps.writeErr = err
			return
		}
	}
}

func (ps *peerStream) reader() {
	defer close(ps.readDone)
	var rec [8]byte
	br := bufio.NewReaderSize(ps.c, 64<<10)
	for {
		if _, err := io.ReadFull(br, rec[:]); err != nil {
			ps.readErr = fmt.Errorf("after %d records: %w", ps.read, err)
			return
		}
		v := binary.LittleEndian.Uint64(rec[:])
		if v&trigRecord != 0 {
			if v&^trigRecord != ps.read {
				ps.readErr = fmt.Errorf("TRIG says %d records, %d read", v&^trigRecord, ps.read)
				return
			}
			close(ps.gotTrig)
			continue
		}
		if v&endRecord != 0 {
			if v&^endRecord != ps.read {
				ps.readErr = fmt.Errorf("END says %d records, %d read", v&^endRecord, ps.read)
				return
			}
			var b [1]byte
			if n, err := br.Read(b[:]); n != 0 || !errors.Is(err, io.EOF) {
				ps.readErr = fmt.Errorf("after END: %d bytes, %v", n, err)
			}
			return
		}
		if v != ps.read {
			ps.readErr = fmt.Errorf("record %d is %d", ps.read, v)
			return
		}
		ps.mu.Lock()
		ps.read++
		ps.mu.Unlock()
	}
}

func (ps *peerStream) records() uint64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.read
}

func (ps *peerStream) wrote() uint64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.written
}

// TestTCPEstablishedPeer: the test itself is the peer, outside the tree,
// of the target's connection (IPv4 and IPv6), both streaming records to
// each other. The target is dumped and restored twice; the stream goes
// on, every record once and in order both ways, and the test's end never
// sees a reset (ECONNRESET or EPIPE fail it).
func TestTCPEstablishedPeer(t *testing.T) {
	requireCryo(t)
	for _, v6 := range []bool{false, true} {
		name, network, addr := "ipv4", "tcp4", "127.0.0.1:0"
		if v6 {
			name, network, addr = "ipv6", "tcp6", "[::1]:0"
		}
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
			args := []string{"peer", port}
			if v6 {
				args = append(args, "6")
			}
			tg := startTargetNoWait(t, "tcp", args...)
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tg.waitReady()
			ps := newPeerStream(c.(*net.TCPConn))
			for cycle := 1; cycle <= 2; cycle++ {
				// The streams run on through the dump: the network lock
				// holds the test's segments back until the restored
				// socket is there to take them.
				before := ps.records()
				tcpCycle(t, tg, filepath.Join(t.TempDir(), fmt.Sprintf("img%d", cycle)), cycle == 1, tcpFlags, tcpFlags)
				wrote := ps.wrote()
				for deadline := time.Now().Add(20 * time.Second); ps.records() < before+1000 || ps.wrote() < wrote+1000; {
					if time.Now().After(deadline) || ps.readErr != nil || ps.writeErr != nil {
						t.Fatalf("cycle %d: the stream did not go on after the restore: %d records read, %d before the dump, %d written, %d before (read: %v, write: %v)",
							cycle, ps.records(), before, ps.wrote(), wrote, ps.readErr, ps.writeErr)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			// Each side sends TRIG once it knows of the trigger, and ends
			// its stream once it has the other's.
			tg.fire()
			close(ps.stop)
			select {
			case <-ps.readDone:
			case <-time.After(restoreTimeout):
				t.Errorf("the target's stream did not end")
			}
			select {
			case <-ps.wdone:
			case <-time.After(restoreTimeout):
				t.Errorf("the test's stream did not end")
			}
			if ps.readErr != nil || ps.writeErr != nil {
				t.Errorf("the test's end of the stream: read: %v, write: %v", ps.readErr, ps.writeErr)
			}
			ws, err := waitReaped(tg.pid, restoreTimeout)
			if err != nil {
				t.Fatalf("restored target: %v", err)
			}
			tg.expectPassed(ws.ExitStatus(), "after two checkpoints streaming to the test")
		})
	}
}

// cryoLockTables lists the nftables tables of cryo's network locks.
func cryoLockTables(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v\n%s", err, out)
	}
	var tables []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 3 && strings.HasPrefix(f[2], "cryo-lock-") {
			tables = append(tables, f[2])
		}
	}
	return tables
}

// TestKillCryoMidDumpTCP: a dump with --tcp-established of a target
// streaming both ways with the test (its peer, outside the tree) is
// SIGKILLed with its worker at a random moment, every other one a plain
// dump. Whatever the moment: if the dump had not finished, the target runs
// on and its connection carries on (the keeper took repair mode off and
// removed the lock the dump left); if it had, the restore brings it back
// and the connection carries on. The test's end never sees a reset, every
// record arrives once and in order both ways, and no lock table is left.
func TestKillCryoMidDumpTCP(t *testing.T) {
	requireCryo(t)
	if _, err := exec.LookPath("nft"); err != nil {
		if os.Getenv("CRYO_TEST_STRICT") != "" {
			t.Fatal("nft (Debian's nftables) is missing")
		}
		t.Skip("no nft to look for lock tables with")
	}
	loops := killLoops(t, 20)
	outcomes := map[string]int{}
	for i := range loops {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tg := startTargetNoWait(t, "tcp", "peer", fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		tg.waitReady()
		ps := newPeerStream(c.(*net.TCPConn))
		img := filepath.Join(tg.dir, "img")
		args := append([]string{"dump", "-t", fmt.Sprint(tg.pid), "-D", img}, tcpFlags...)
		if i%2 == 0 {
			args = append(args, "--leave-running")
		}
		time.Sleep(20 * time.Millisecond)
		cp := startCryo(t, args...)
		delay := time.Duration(rand.IntN(61)) * time.Millisecond
		if i%3 == 2 {
			// Into the instants the connection is in repair mode,
			// while the dump holds the target parked.
			delay = -1
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
				if parkedThreads(tg.pid) > 0 {
					outcomes["killed while parked"]++
					break
				}
			}
		} else {
			time.Sleep(delay)
		}
		killWorkers(cp.cmd.Process.Pid)
		_ = cp.cmd.Process.Signal(syscall.SIGKILL)
		cp.wait(5 * time.Second)
		for _, w := range orphanedCryos() {
			if !isKeeper(w) {
				waitReaped(w, exitTimeout)
			}
		}
		expectNoKeeper(t)
		outcome := "dump did not finish, target ran on"
		if st := procState(tg.pid); st == "Z" || st == "gone" {
			<-tg.done
			outcome = "dumped, restored"
			if r := runCryo(t, restoreTimeout, restoreArgs(img, append([]string{"-d"}, tcpFlags...)...)...); r.code != 0 {
				t.Fatalf("iteration %d (kill after %v): restore: %v%s", i, delay, r, readLog(img+".restore.log"))
			}
		}
		before, wrote := ps.records(), ps.wrote()
		for deadline := time.Now().Add(20 * time.Second); ps.records() < before+500 || ps.wrote() < wrote+500; {
			if time.Now().After(deadline) || ps.readErr != nil || ps.writeErr != nil {
				t.Fatalf("iteration %d (kill after %v, %s): the stream did not go on: %d records read, %d before, %d written, %d before (read: %v, write: %v); lock tables %v\n%s",
					i, delay, outcome, ps.records(), before, ps.wrote(), wrote, ps.readErr, ps.writeErr, cryoLockTables(t), lastLines(tg.log(), 5))
			}
			time.Sleep(5 * time.Millisecond)
		}
		if tables := cryoLockTables(t); len(tables) > 0 {
			t.Fatalf("iteration %d (kill after %v, %s): lock tables left: %v", i, delay, outcome, tables)
		}
		tg.fire()
		close(ps.stop)
		<-ps.readDone
		<-ps.wdone
		if ps.readErr != nil || ps.writeErr != nil {
			t.Fatalf("iteration %d (kill after %v, %s): the test's end of the stream: read: %v, write: %v", i, delay, outcome, ps.readErr, ps.writeErr)
		}
		if outcome == "dumped, restored" {
			// The restored target is the test's by subreaping.
			ws, err := waitReaped(tg.pid, restoreTimeout)
			if err != nil {
				t.Fatalf("iteration %d: restored target: %v", i, err)
			}
			tg.expectPassed(ws.ExitStatus(), "after a killed dump and a restore")
		} else {
			st, ok := tg.waitExit(restoreTimeout)
			if !ok {
				t.Fatalf("iteration %d: target did not end", i)
			}
			tg.expectPassed(st.ExitCode(), "after a killed dump")
		}
		c.Close()
		outcomes[outcome]++
	}
	t.Logf("%d kills of a dump of a TCP connection to the test: %v", loops, outcomes)
}
