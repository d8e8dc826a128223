package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

// figure is one line of the report. Max is the target the value must not
// exceed; 0 means the figure is reported for information only.
type figure struct {
	ID     string  `json:"id"`
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Max    float64 `json:"target_max,omitempty"`
	Result string  `json:"result"` // PASS, FAIL or info
	Detail string  `json:"detail"`
}

type report struct {
	Date    string               `json:"date"`
	Cryo    string               `json:"cryo"`
	Kernel  string               `json:"kernel"`
	CPUs    int                  `json:"cpus"`
	Dir     string               `json:"images_dir"`
	SizeMiB int                  `json:"size_mib"`
	VMAs    int                  `json:"vmas"`
	Reps    int                  `json:"reps"`
	Seconds float64              `json:"bench_seconds"`
	Figures []figure             `json:"figures"`
	Samples map[string][]float64 `json:"samples"`
}

func (r *report) add(f figure) {
	switch {
	case f.Max == 0:
		f.Result = "info"
	case f.Value <= f.Max:
		f.Result = "PASS"
	default:
		f.Result = "FAIL"
	}
	r.Figures = append(r.Figures, f)
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "cryo bench: kernel %s, %d CPUs, images in %s, min of %d runs after a warm-up, %.0f s\n\n",
		r.Kernel, r.CPUs, r.Dir, r.Reps, r.Seconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tfigure\tvalue\ttarget\tresult\tabsolute (for reference)")
	for _, f := range r.Figures {
		val := fmt.Sprintf("%.3f", f.Value)
		if f.Unit == "x" {
			val += "×"
		} else {
			val += " " + f.Unit
		}
		tgt := "—"
		if f.Max != 0 {
			tgt = fmt.Sprintf("≤ %g×", f.Max)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.ID, f.Name, val, tgt, f.Result, f.Detail)
	}
	tw.Flush()
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
