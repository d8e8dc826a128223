package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/spf13/pflag"
)

// actionScripts are criu's --action-script programs: each is run at every
// point dump and restore announce (pre-dump, post-dump, pre-restore,
// post-restore, pre-resume, post-resume), with criu's environment:
// CRTOOLS_SCRIPT_ACTION names the point, CRTOOLS_IMAGE_DIR the image
// directory, CRTOOLS_INIT_PID the tree's root. A script that exits non-zero
// stops the dump or restore where criu's would (see dump.Options.Notify and
// restore.Options.Notify).
type actionScripts struct {
	paths []string
	dir   *string
}

func (a *actionScripts) register(f *pflag.FlagSet, dir *string) {
	a.dir = dir
	f.StringArrayVar(&a.paths, "action-script", nil, "run `SCRIPT` at each stage point, as criu does (may be repeated)")
}

// notify is nil without scripts, so that dump and restore skip the calls.
func (a *actionScripts) notify() func(string, int) error {
	if len(a.paths) == 0 {
		return nil
	}
	return func(event string, pid int) error {
		dir, _ := filepath.Abs(*a.dir)
		for _, p := range a.paths {
			cmd := exec.Command(p)
			cmd.Env = append(os.Environ(), "CRTOOLS_SCRIPT_ACTION="+event, "CRTOOLS_IMAGE_DIR="+dir, "CRTOOLS_INIT_PID="+strconv.Itoa(pid))
			// The script's output is the user's: it goes where cryo's
			// messages go, never into a restored process.
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("action script %s: %w", p, err)
			}
		}
		return nil
	}
}
