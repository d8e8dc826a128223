// Command cryo checkpoints a running Linux process tree into a directory of
// CRIU-format image files and restores it later, on this machine or another.
//
// Each subcommand lives in a file of its own (dump.go, restore.go, check.go,
// show.go, ...) and registers itself with root in an init function.
package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"

	"github.com/spf13/cobra"
)

var root = &cobra.Command{
	Use:           "cryo",
	Short:         "Checkpoint and restore Linux processes",
	SilenceUsage:  true,
	SilenceErrors: true,
}

// verboseShort matches CRIU's "-v4" style, which pflag cannot parse as a
// shorthand with an attached value for a count-like flag.
var verboseShort = regexp.MustCompile(`^-v([0-4])$`)

// normalizeArgs rewrites "-vN" to "--verbosity=N" and "-vvv" to "--verbosity=3",
// so scripts written for criu keep working.
func normalizeArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if m := verboseShort.FindStringSubmatch(a); m != nil {
			out = append(out, "--verbosity="+m[1])
			continue
		}
		if len(a) > 2 && a[0] == '-' && a[1] == 'v' && onlyV(a[1:]) {
			out = append(out, fmt.Sprintf("--verbosity=%d", min(len(a)-1, 4)))
			continue
		}
		out = append(out, a)
	}
	return out
}

func onlyV(s string) bool {
	for _, c := range s {
		if c != 'v' {
			return false
		}
	}
	return true
}

func main() {
	root.SetArgs(normalizeArgs(os.Args[1:]))
	if err := root.Execute(); err != nil {
		if !errors.Is(err, errSilent) {
			fmt.Fprintf(os.Stderr, "cryo: %v\n", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitStatus lets a subcommand choose the process exit status (restore without -d
// exits with the restored process's own status).
type exitStatus struct {
	code int
	err  error
}

func (e *exitStatus) Error() string { return e.err.Error() }
func (e *exitStatus) Unwrap() error { return e.err }

// exitCode finds the status with errors.As: a subcommand that wraps the
// exitStatus of a helper with context must not turn its status into 1.
func exitCode(err error) int {
	if es := (*exitStatus)(nil); errors.As(err, &es) {
		return es.code
	}
	return 1
}
