package feature

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/cryo-project/cryo/internal/netlock"
)

// Summary is what `cryo check` concludes from its reports.
type Summary struct {
	CanDump    bool      `json:"can_dump"`
	CanRestore bool      `json:"can_restore"`
	Micros     int64     `json:"duration_us"`
	Probes     []*Report `json:"probes"`
	Caps       *Caps     `json:"caps,omitempty"`
	// Locks are the network locks found here (package netlock), when the
	// nftables_lock probe succeeded; LocksErr why they could not be listed.
	Locks    []netlock.Table `json:"network_locks,omitempty"`
	LocksErr string          `json:"network_locks_error,omitempty"`

	locksListed bool
}

// Summarize derives the verdicts from reports.
func Summarize(reports []*Report) *Summary {
	s := &Summary{CanDump: Can(reports, ForDump), CanRestore: Can(reports, ForRestore), Probes: reports}
	for _, r := range reports {
		s.Micros += r.Micros
	}
	if c, err := ownCaps(); err == nil {
		s.Caps = &c
	}
	for _, r := range reports {
		if r.Name == NFTablesLock.Name && r.Status == Supported {
			s.locksListed = true
			var err error
			if s.Locks, err = netlock.Tables(); err != nil {
				s.LocksErr = err.Error()
			}
		}
	}
	return s
}

// lockLines describes each network lock: its table, its state, and the
// images it waits on.
func lockLines(ts []netlock.Table) []string {
	var out []string
	for _, t := range ts {
		var state string
		switch {
		case t.Kept:
			state = "kept: its dump completed; the restore of its images removes it"
		case t.Stale:
			state = fmt.Sprintf("stale: its dump (pid %d) died before completing; the next dump or restore removes it", t.Pid)
		default:
			state = fmt.Sprintf("held by the dump running as pid %d", t.Pid)
		}
		dir := t.ImagesDir
		if dir == "" {
			dir = "-"
		}
		out = append(out, fmt.Sprintf("%s  %s  images %s", t.Name, state, dir))
	}
	return out
}

func mark(st Status) string {
	switch st {
	case Supported:
		return "✓"
	case Unsupported, NotPermitted:
		return "✗"
	}
	return "?"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// WriteText prints the table, what cryo's capabilities allow, and the verdict.
func WriteText(w io.Writer, s *Summary) error {
	if err := writeTable(w, s.Probes); err != nil {
		return err
	}
	if s.Caps != nil {
		fmt.Fprintln(w, "\nCapabilities (effective):")
		for _, l := range CapLines(*s.Caps) {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if s.locksListed && len(s.Locks) == 0 && s.LocksErr == "" {
		fmt.Fprintln(w, "\nNetwork locks: none")
	} else if s.locksListed {
		fmt.Fprintln(w, "\nNetwork locks (inet tables of nftables):")
		for _, l := range lockLines(s.Locks) {
			fmt.Fprintln(w, "  "+l)
		}
		if s.LocksErr != "" {
			fmt.Fprintln(w, "  could not list them all: "+s.LocksErr)
		}
	}
	_, err := fmt.Fprintf(w, "\ncryo can dump: %s; restore: %s  (%d probes in %.1f ms)\n",
		yesNo(s.CanDump), yesNo(s.CanRestore), len(s.Probes), float64(s.Micros)/1000)
	return err
}

// WriteReportText prints one probe's row, for `cryo check --feature`.
func WriteReportText(w io.Writer, r *Report) error {
	return writeTable(w, []*Report{r})
}

func writeTable(w io.Writer, reports []*Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FEATURE\t\tREQUIRED\tDETAIL")
	for _, r := range reports {
		detail := r.Detail
		if r.Error != "" {
			detail = r.Error
		}
		if detail == "" {
			detail = r.Description
		}
		req := strings.Join(r.RequiredFor, ",")
		if req == "" {
			req = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s; needed for: %s\n", r.Name, mark(r.Status), req, detail, r.NeededFor)
	}
	return tw.Flush()
}

// WriteJSON prints s (a *Summary or a *Report) as indented JSON with
// stable field names.
func WriteJSON(w io.Writer, s any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(s)
}
