package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cryo-project/cryo/internal/procstate"
)

// The state check. Every dump the harness runs stops, at its post-dump
// point (the image complete, the tree still frozen), for the test to take
// a snapshot of what the kernel shows of the tree (package procstate);
// every restore whose test asks for it stops at its pre-resume point (the
// tree whole, still stopped) for a second snapshot, which must equal the
// first. Both are taken while cryo holds the tree frozen, so nothing the
// program does meanwhile can make them differ: a difference is the
// restore's. The stops are criu's action scripts (--action-script): the
// hook below, which waits at an armed point until the test is done.

// stateHook is the action script's path, made once per test run.
var stateHook string

const stateHookScript = `#!/bin/sh
# At an armed point, say so and wait (30 s at most) for the test's snapshot.
d="$CRTOOLS_IMAGE_DIR.state"
[ -e "$d/$CRTOOLS_SCRIPT_ACTION.armed" ] || exit 0
touch "$d/$CRTOOLS_SCRIPT_ACTION.reached"
i=0
while [ ! -e "$d/$CRTOOLS_SCRIPT_ACTION.go" ]; do
	sleep 0.005
	i=$((i+1))
	[ $i -lt 6000 ] || exit 1
done
`

// makeStateHook writes the hook where every user of the tests can run it.
func makeStateHook() error {
	dir, err := os.MkdirTemp("", "cryo-state-hook-")
	if err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	stateHook = filepath.Join(dir, "hook.sh")
	return os.WriteFile(stateHook, []byte(stateHookScript), 0o755)
}

var (
	statesMu sync.Mutex
	states   = map[string]*procstate.Tree{} // by image dir: the tree as dumped
)

// stateWatch is one armed point.
type stateWatch struct {
	done chan struct{}
	tree *procstate.Tree
	err  error
	stop chan struct{}
}

// armState arms event ("post-dump" or "pre-resume") for the dump or
// restore of img: when cryo reaches it, the tree at pid is snapshotted and
// cryo let go. Call it before starting cryo; collect the snapshot with
// wait.
func armState(t *testing.T, img, event string, pid int) *stateWatch {
	t.Helper()
	dir := img + ".state"
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777) // a non-root cryo touches files here
	for _, f := range []string{"reached", "go"} {
		os.Remove(filepath.Join(dir, event+"."+f))
	}
	if err := os.WriteFile(filepath.Join(dir, event+".armed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	w := &stateWatch{done: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				w.err = fmt.Errorf("cryo never reached %s", event)
				return
			case <-time.After(2 * time.Millisecond):
			}
			if _, err := os.Stat(filepath.Join(dir, event+".reached")); err == nil {
				break
			}
		}
		w.tree, w.err = procstate.Take(pid)
		os.Remove(filepath.Join(dir, event+".armed"))
		os.WriteFile(filepath.Join(dir, event+".go"), nil, 0o644)
	}()
	t.Cleanup(w.cancel)
	return w
}

func (w *stateWatch) cancel() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// wait returns the snapshot, once cryo has ended (ended is closed) or the
// snapshot is taken.
func (w *stateWatch) wait(ended <-chan struct{}) (*procstate.Tree, error) {
	select {
	case <-w.done:
	case <-ended:
		w.cancel()
	}
	return w.tree, w.err
}

// keepState records, once a dump of img is over, the snapshot its
// post-dump point took.
func keepState(img string, w *stateWatch, ended <-chan struct{}) {
	if tree, err := w.wait(ended); err == nil {
		statesMu.Lock()
		states[img] = tree
		statesMu.Unlock()
	}
}

// expectSameState compares the snapshot the pre-resume point of a restore
// of img took (w, armed before the restore started) with the one its dump
// took, and fails the test on any difference.
func expectSameState(t *testing.T, img string, w *stateWatch, ended <-chan struct{}) {
	t.Helper()
	statesMu.Lock()
	before := states[img]
	statesMu.Unlock()
	if before == nil {
		t.Fatalf("no state was recorded when %s was dumped", img)
	}
	after, err := w.wait(ended)
	if err != nil {
		t.Fatalf("state of the restored tree of %s: %v", img, err)
	}
	diffs := procstate.Diff(before, after)
	for i, d := range diffs {
		if i == 30 {
			t.Errorf("... and %d more differences", len(diffs)-i)
			break
		}
		t.Errorf("after restore: %s", d)
	}
}
