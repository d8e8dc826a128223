package restore

import (
	"errors"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"google.golang.org/protobuf/proto"

	"github.com/cryo-project/cryo/internal/meta"
)

// An image from another kernel (another vdso) or another architecture is
// refused before anything starts, with a reason naming it.
func TestPreflightRefusesForeignImages(t *testing.T) {
	own, err := ownVdsoHash()
	if err != nil || own == "" {
		t.Fatalf("own vdso hash: %q, %v", own, err)
	}
	tree := &pstree.PstreeEntry{Pid: proto.Uint32(1), Threads: []uint32{1}}
	for _, c := range []struct {
		name string
		m    meta.Meta
		want string
	}{
		{"other kernel", meta.Meta{Kernel: "5.10.0-old", Machine: "x86_64", VdsoHash: "0123"}, "5.10.0-old"},
		{"other architecture", meta.Meta{Kernel: "6.18", Machine: "aarch64", VdsoHash: own}, "aarch64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &restorer{l: &loaded{meta: &c.m, tree: tree}}
			err := r.preflight()
			if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("preflight = %v, want ErrNotSupported naming %q", err, c.want)
			}
		})
	}
}

// The pid check names who holds the pid: here, the test itself.
func TestPidFreeNamesHolder(t *testing.T) {
	err := pidFree(1)
	if !errors.Is(err, ErrPidTaken) || !strings.Contains(err.Error(), "pid 1 is taken") {
		t.Fatalf("pidFree(1) = %v", err)
	}
}
