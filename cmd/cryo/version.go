package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is cryo's release and commit the git commit it was built from,
// both set at link time by the Makefile (-ldflags "-X main.version=...
// -X main.commit=..."). Without them, the build information the go command
// stamps into a binary built in a git checkout (-buildvcs) names the commit.
var (
	version = "dev"
	commit  = ""
)

// buildVCS is what the go command recorded of the checkout cryo was built
// in: the revision ("unknown" when nothing was recorded), its commit time,
// and whether the tree had changes.
func buildVCS() (rev, when string, dirty bool) {
	rev = "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return rev, "", false
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	return rev, when, dirty
}

// gitID is the commit cryo was built from, as CRIU's VERSION answer names it.
func gitID() string {
	if commit != "" {
		return commit
	}
	rev, _, dirty := buildVCS()
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// versionText is what `cryo --version` (criu's -V) prints: the release,
// the git commit it was built from ("-dirty" if the tree had changes) and
// the Go toolchain, in criu's "Key: value" form.
func versionText() string {
	s := fmt.Sprintf("Version: %s\nGitID: %s\n", version, gitID())
	if _, when, _ := buildVCS(); commit == "" && when != "" {
		s += "Committed: " + when + "\n"
	}
	return s + "Go: " + runtime.Version() + "\n"
}

func init() {
	// Cobra answers --version from root.Version; -V is criu's short form.
	root.Version = version
	root.Flags().BoolP("version", "V", false, "print the version and the git commit cryo was built from")
	root.SetVersionTemplate("{{printf \"%s\" .Annotations.versionText}}")
	if root.Annotations == nil {
		root.Annotations = map[string]string{}
	}
	root.Annotations["versionText"] = versionText()
}
