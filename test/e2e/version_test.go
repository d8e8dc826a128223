package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestVersion: `cryo --version` and criu's `cryo -V` print the version and
// the git commit bin/cryo was built from.
func TestVersion(t *testing.T) {
	requireCryo(t)
	out, err := exec.Command("git", "-C", repo, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("no git checkout to compare with: %v", err)
	}
	head := strings.TrimSpace(string(out))
	for _, flag := range []string{"--version", "-V"} {
		r := runCryo(t, exitTimeout, flag)
		if r.code != 0 {
			t.Fatalf("cryo %s: %v", flag, r)
		}
		if !strings.Contains(r.output, "Version: ") || !strings.Contains(r.output, "GitID: "+head) {
			t.Errorf("cryo %s: want Version and GitID %s, got:\n%s", flag, head, r.output)
		}
	}
}
