package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cryo-project/cryo/internal/feature"
)

var (
	checkFeature string
	checkJSON    bool
)

var checkCmd = &cobra.Command{
	Use:   "check [--feature NAME] [--json]",
	Short: "Probe the kernel features and privileges cryo needs",
	Long: `Check exercises every kernel feature cryo relies on (ptrace requests,
clone3 with set_tid, map_files, PAGEMAP_SCAN, ...) in throwaway child
processes and in harmless calls of its own, and prints which work here, what
each is needed for, and whether cryo can dump and restore on this machine.

It exits 0 when everything dump and restore require is there, 1 otherwise.
With --feature NAME it runs that one probe and exits 0 if the feature is
supported, 1 if it is not (or not permitted), 2 if the probe could not tell.`,
	Args: cobra.NoArgs,
	RunE: runCheck,
}

func runCheck(cmd *cobra.Command, _ []string) error {
	out := cmd.OutOrStdout()
	if checkFeature != "" {
		p := feature.Lookup(checkFeature)
		if p == nil {
			return &exitStatus{code: 2, err: fmt.Errorf("unknown feature %q; known: %s", checkFeature, strings.Join(feature.Names(), ", "))}
		}
		r := feature.Run(p)
		var err error
		if checkJSON {
			err = feature.WriteJSON(out, r)
		} else {
			err = feature.WriteReportText(out, r)
		}
		if err != nil {
			return err
		}
		switch r.Status {
		case feature.Supported:
			return nil
		case feature.ProbeError:
			return &exitStatus{code: 2, err: r.Err()}
		}
		return &exitStatus{code: 1, err: r.Err()}
	}
	start := time.Now()
	reports := feature.RunAll()
	s := feature.Summarize(reports)
	s.Micros = time.Since(start).Microseconds()
	write := feature.WriteText
	if checkJSON {
		write = func(w io.Writer, s *feature.Summary) error { return feature.WriteJSON(w, s) }
	}
	if err := write(out, s); err != nil {
		return err
	}
	if !s.CanDump || !s.CanRestore {
		return &exitStatus{code: 1, err: errors.New("some features dump or restore require are missing (see above)")}
	}
	return nil
}

func init() {
	checkCmd.Flags().StringVar(&checkFeature, "feature", "", "run only the probe `NAME`")
	checkCmd.Flags().BoolVar(&checkJSON, "json", false, "print JSON instead of text")
	root.AddCommand(checkCmd)
}
