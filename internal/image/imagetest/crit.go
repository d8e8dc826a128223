package imagetest

import (
	"os"
	"os/exec"
	"testing"
)

// StrictEnv names the environment variable that `make test` sets: with it,
// Crit fails the test instead of skipping it, because `make test` installed
// crit and its absence means that the check did not run.
const StrictEnv = "CRYO_TEST_STRICT"

// Crit returns the path of crit, CRIU's image decoder. That CRIU's own tools
// read cryo's images is a promise of the project: without crit the test is
// skipped, naming the Debian package to install, or, under StrictEnv, fails.
func Crit(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("crit")
	if err == nil {
		return p
	}
	const why = "crit, CRIU's image decoder, is not on PATH: install the Debian package criu (`make deps` does)"
	if os.Getenv(StrictEnv) != "" {
		t.Fatalf("%s; %s is set, so its checks may not be skipped: %v", why, StrictEnv, err)
	}
	t.Skipf("%s: %v", why, err)
	return ""
}
