package e2e

import (
	"testing"
	"time"
)

// TestTargetsStandalone triggers every target with no checkpoint in between:
// all their checks must pass, or the targets themselves are wrong and every
// other result would mean nothing.
func TestTargetsStandalone(t *testing.T) {
	requireRoot(t)
	if buildErr != nil {
		t.Logf("build reported: %v (targets that built are still checked)", buildErr)
	}
	for _, name := range append(append([]string{}, crTargets...), "unsupported") {
		t.Run(name, func(t *testing.T) {
			tg := startTarget(t, name)
			time.Sleep(50 * time.Millisecond)
			tg.fire()
			st, ok := tg.waitExit(30 * time.Second)
			if !ok {
				t.Fatalf("%s did not finish its checks within 30 s", name)
			}
			tg.expectPassed(st.ExitCode(), "standalone")
			checkTargetLog(t, tg)
		})
	}
	t.Run("memory-lite", func(t *testing.T) {
		tg := startTarget(t, "memory", "lite")
		tg.fire()
		st, ok := tg.waitExit(30 * time.Second)
		if !ok {
			t.Fatal("memory lite did not finish within 30 s")
		}
		tg.expectPassed(st.ExitCode(), "standalone")
	})
}
