package sockdiag

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

var capture = flag.Bool("capture", false, "capture sock_diag replies of a new world into testdata/ (needs root)")

// captureDir holds the unix listener of the captured world: its path is
// in the replies, so it is fixed rather than a random temporary name.
const captureDir = "/tmp/cryo-sockdiag-capture"

// TestCapture writes testdata/: the replies of each dump the golden tests
// parse, taken from a world built in a new network namespace (so that
// nothing else of the machine is in them), and the world's facts.
//
//	go test -run TestCapture -capture ./internal/sockdiag
func TestCapture(t *testing.T) {
	if !*capture {
		t.Skip("writes testdata/ only with -capture")
	}
	if err := os.MkdirAll(captureDir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(captureDir)
	var w *world
	ns, err := inNewNetns(func() error {
		var err error
		w, err = buildWorld(captureDir, 1)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer w.close()
	c, err := Dial(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var reply []byte
	c.record = func(b []byte) { reply = append(reply, b...) }
	save := func(name string, err error) {
		t.Helper()
		if err != nil && !errors.Is(err, ErrNotSupported) {
			t.Fatalf("%s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join("testdata", name+".reply"), reply, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes (%v)", name, len(reply), err)
		reply = nil
	}
	_, err = c.Unix()
	save("unix", err)
	for _, d := range inetDumps {
		_, err = c.Inet(d.family, d.protocol, ExtAll)
		save(d.name, err)
	}
	_, err = c.Inet(unix.AF_INET, unix.IPPROTO_RAW, ExtAll)
	save("raw4", err)
	_, err = c.Packet()
	save("packet", err)
	_, err = c.Netlink()
	save("netlink", err)
	b, err := json.MarshalIndent(&w.facts, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "world.json"), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
