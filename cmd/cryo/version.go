package main

import "runtime/debug"

// version is cryo's release, set at link time (-ldflags "-X main.version=...");
// a plain `go build` says "dev".
var version = "dev"

// gitID is the commit cryo was built from, when the build recorded it.
func gitID() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}

func init() { root.Version = version }
