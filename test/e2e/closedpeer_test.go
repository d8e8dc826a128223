package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestUnixClosedPeer: stream, seqpacket and datagram sockets whose peer
// sent data and closed, and a stream one whose peer closed with nothing
// sent (test/targets/closedpeer.c). After each of two restores every one
// reads its data back with its message boundaries, then end of file
// (stream, seqpacket) or nothing more (datagram); writes fail as they
// would have (EPIPE; ECONNREFUSED then ENOTCONN); the peer's address,
// SO_PEERCRED, SO_ERROR and poll say what they said.
func TestUnixClosedPeer(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "closedpeer")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img)
	res, img2 := cycleAgain(t, tg)
	if res.timedOut {
		t.Fatalf("closedpeer after two checkpoints: %v\n%s", res, readLog(img2+".restore.log"))
	}
	tg.expectPassed(res.code, "after two checkpoints")
}

// TestUnixClosedPeerRefused: a socket whose closed peer had a name, and
// one with an error pending (its peer closed without reading what it was
// sent: ECONNRESET), cannot be made again as they are: the dump refuses
// each, naming the fd and why, and the process goes on unharmed.
func TestUnixClosedPeerRefused(t *testing.T) {
	requireCryo(t)
	for _, c := range []struct{ mode, want string }{
		{"named-peer", "is closed: restore cannot make a closed peer with a name"},
		{"pending-error", "an error pending (SO_ERROR"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			tg := startTarget(t, "closedpeer", c.mode)
			m := regexp.MustCompile(`REFUSE fd=(\d+)`).FindStringSubmatch(tg.log())
			if m == nil {
				t.Fatalf("the target did not report its fd:\n%s", tg.log())
			}
			img := filepath.Join(tg.dir, "img")
			r := dump(t, tg.pid, img)
			if r.timedOut || r.code == 0 || !strings.Contains(r.output, c.want) || !strings.Contains(r.output, "fd "+m[1]+" (socket:[") || !strings.Contains(r.output, "not supported") {
				t.Fatalf("dump: want a refusal naming fd %s and %q, got %v", m[1], c.want, r)
			}
			if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
				t.Errorf("a failed dump left %s/inventory.img", img)
			}
			tg.expectUnharmed("after the refused dump")
		})
	}
}
