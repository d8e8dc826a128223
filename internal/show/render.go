package show

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes img as indented JSON.
func WriteJSON(w io.Writer, img *Image) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(img)
}

// WriteText writes img for a person: one section per process, aligned
// columns, sizes in binary units.
func WriteText(w io.Writer, img *Image) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "Image %s: %d processes, %d files, checksums verified\n", img.Dir, len(img.Processes), img.Files)
	for _, p := range img.Processes {
		if p.Zombie {
			fmt.Fprintf(bw, "\nProcess %d (zombie, exit status %#x)  ppid %d  pgid %d  sid %d\n", p.PID, p.ExitStatus, p.PPID, p.PGID, p.SID)
			continue
		}
		state := ""
		if p.StoppedBy != "" {
			state = ", stopped by " + p.StoppedBy
		}
		fmt.Fprintf(bw, "\nProcess %d (%s%s)  ppid %d  pgid %d  sid %d\n", p.PID, printable(p.Comm), state, p.PPID, p.PGID, p.SID)
		if p.Exe != "" {
			fmt.Fprintf(bw, "  exe   %s\n", printable(p.Exe))
		}
		if p.Cwd != "" {
			fmt.Fprintf(bw, "  cwd   %s\n", printable(p.Cwd))
		}
		if p.Umask != nil {
			fmt.Fprintf(bw, "  umask %04o\n", *p.Umask)
		}
		fmt.Fprintf(bw, "  shared pending signals: %d\n", p.SharedPending)

		fmt.Fprintf(bw, "\n  Threads (%d)\n", len(p.Threads))
		table(bw, []string{"TID", "IP", "SP", "BLOCKED", "PENDING"}, len(p.Threads), func(i int) []string {
			t := p.Threads[i]
			mask, _ := strconv.ParseUint(strings.TrimPrefix(t.SigMask, "0x"), 16, 64)
			return []string{strconv.Itoa(int(t.TID)), t.IP, t.SP, sigSet(mask), strconv.Itoa(t.Pending)}
		})

		var total, dumped uint64
		for _, m := range p.Mappings {
			total += m.Size
			dumped += m.PagesDumped
		}
		fmt.Fprintf(bw, "\n  Mappings (%d, %s mapped, %s dumped)\n", len(p.Mappings), Size(total), Size(dumped*pageSize))
		table(bw, []string{"START", "END", "SIZE", "PROT", "SHARE", "KIND", "DUMPED", "PATH"}, len(p.Mappings), func(i int) []string {
			m := p.Mappings[i]
			return []string{m.Start, m.End, Size(m.Size), m.Prot, m.Share, m.Kind, Size(m.PagesDumped * pageSize), printable(m.Path)}
		})

		fmt.Fprintf(bw, "\n  File descriptors (%d)\n", len(p.FDs))
		table(bw, []string{"FD", "TYPE", "FLAGS", "POS", "PATH"}, len(p.FDs), func(i int) []string {
			f := p.FDs[i]
			flags := f.Flags
			if f.CloExec {
				flags = strings.TrimPrefix(flags+"|cloexec", "|")
			}
			return []string{strconv.Itoa(int(f.FD)), f.Type, flags, strconv.FormatUint(f.Pos, 10), printable(f.Path)}
		})

		fmt.Fprintf(bw, "\n  Signal handlers (%d not SIG_DFL)\n", len(p.SignalHandlers))
		table(bw, []string{"SIGNAL", "HANDLER", "FLAGS", "MASK"}, len(p.SignalHandlers), func(i int) []string {
			h := p.SignalHandlers[i]
			return []string{h.Signal, h.Handler, h.Flags, h.Mask}
		})
	}
	if s := img.Stats; s != nil {
		fmt.Fprintf(bw, "\nDump statistics\n")
		tw := tabwriter.NewWriter(bw, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  freezing time\t%s\n", micros(s.FreezingTimeUS))
		fmt.Fprintf(tw, "  frozen time\t%s\n", micros(s.FrozenTimeUS))
		fmt.Fprintf(tw, "  memory dump time\t%s\n", micros(s.MemdumpTimeUS))
		fmt.Fprintf(tw, "  memory write time\t%s\n", micros(s.MemwriteTimeUS))
		fmt.Fprintf(tw, "  pages scanned\t%d (%s)\n", s.PagesScanned, Size(s.PagesScanned*pageSize))
		fmt.Fprintf(tw, "  pages written\t%d (%s)\n", s.PagesWritten, Size(s.PagesWritten*pageSize))
		fmt.Fprintf(tw, "  pages in parent\t%d\n", s.PagesSkipped)
		fmt.Fprintf(tw, "  pages lazy\t%d\n", s.PagesLazy)
		tw.Flush()
	}
	return bw.Flush()
}

// table writes an indented, aligned table, or "(none)".
func table(w io.Writer, head []string, n int, row func(int) []string) {
	if n == 0 {
		fmt.Fprintln(w, "    (none)")
		return
	}
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "    %s\n", strings.Join(head, "\t"))
	for i := range n {
		fmt.Fprintf(tw, "    %s\n", strings.Join(row(i), "\t"))
	}
	tw.Flush()
	// tabwriter pads a cell before an empty last one; trailing blanks only
	// annoy diff and copy-paste.
	for line := range strings.Lines(b.String()) {
		fmt.Fprintln(w, strings.TrimRight(line, " \n"))
	}
}

// Size formats a byte count in binary units: 512 B, 4.0 KiB, 1.2 GiB.
func Size(b uint64) string {
	if b < 1024 {
		return fmt.Sprintf("%d B", b)
	}
	v := float64(b)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v /= 1024
		if v < 1024 || u == "PiB" {
			return fmt.Sprintf("%.1f %s", v, u)
		}
	}
	return ""
}

func micros(us uint32) string {
	if us < 1000 {
		return fmt.Sprintf("%d µs", us)
	}
	return fmt.Sprintf("%.2f ms", float64(us)/1000)
}

// printable quotes strings from the image that would otherwise put control
// characters (or a tab, breaking the columns) on the user's terminal.
func printable(s string) string {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			return strconv.Quote(s)
		}
	}
	return s
}
