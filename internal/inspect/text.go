package inspect

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// WriteJSON writes v (a *DeletedReport or *MapsReport) as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// HumanSize renders n bytes with a binary unit: "512 B", "4.0 KiB",
// "7.0 MiB".
func HumanSize[T int64 | uint64](n T) string {
	v := float64(n)
	if v < 0 {
		return "-" + HumanSize(-n)
	}
	if v < 1024 {
		return strconv.FormatUint(uint64(n), 10) + " B"
	}
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= 1024
		if v < 1024 || u == "TiB" {
			return strconv.FormatFloat(v, 'f', 1, 64) + " " + u
		}
	}
	panic("unreachable")
}

// printable quotes s if it holds anything a terminal could interpret: a
// process chooses its file names and may put escape sequences in them.
func printable(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// table prints rows in aligned columns, two blanks apart. Columns listed in
// right are right-aligned (numbers and sizes); the last column is never
// padded, so a long path does not widen the rest.
type table struct {
	rows  [][]string
	right map[int]bool
}

func newTable(header ...string) *table {
	return &table{rows: [][]string{header}, right: map[int]bool{}}
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer, indent string) error {
	var width []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, r := range t.rows {
		b.WriteString(indent)
		for i, c := range r {
			pad := width[i] - utf8.RuneCountInString(c)
			last := i == len(r)-1
			if t.right[i] {
				b.WriteString(strings.Repeat(" ", pad))
			}
			b.WriteString(c)
			if !last {
				if !t.right[i] {
					b.WriteString(strings.Repeat(" ", pad))
				}
				b.WriteString("  ")
			}
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// WriteDeletedText writes rep for a person.
func WriteDeletedText(w io.Writer, rep *DeletedReport) error {
	var err error
	p := func(format string, args ...any) {
		if err == nil {
			_, err = fmt.Fprintf(w, format, args...)
		}
	}
	tw := func(t *table) {
		if err == nil {
			err = t.write(w, "  ")
		}
	}
	p("Deleted files still held: %s on disk, %s in memory (%s scanned)\n",
		plural(len(rep.Files), "file", "files"), plural(len(rep.Memory), "object", "objects"),
		plural(rep.Processes.Scanned, "process", "processes"))
	if len(rep.Files) > 0 {
		p("\nOn filesystems\n")
		t := newTable("MOUNT", "SIZE", "ALLOCATED", "DEVICE", "INODE", "HELD BY", "PATH")
		t.right[1], t.right[2], t.right[4] = true, true, true
		for _, f := range rep.Files {
			mp := f.Filesystem.MountPoint
			if mp == "" {
				mp = "(not mounted)"
			}
			size, alloc := sizes(f)
			t.add(printable(mp), size, alloc, f.Dev, strconv.FormatUint(f.Inode, 10), holders(f), printable(f.Path)+linked(f))
		}
		tw(t)
	}
	if len(rep.Memory) > 0 {
		p("\nIn memory (memfd, shared anonymous and System V shared memory: RAM or swap, not disk)\n")
		t := newTable("KIND", "SIZE", "ALLOCATED", "DEVICE", "INODE", "HELD BY", "NAME")
		t.right[1], t.right[2], t.right[4] = true, true, true
		for _, f := range rep.Memory {
			size, alloc := sizes(f)
			t.add(f.Kind, size, alloc, f.Dev, strconv.FormatUint(f.Inode, 10), holders(f), printable(f.Path))
		}
		tw(t)
	}
	if len(rep.Filesystems) > 0 || rep.MemoryTotal.Files > 0 {
		p("\nSpace only these files hold (st_blocks; compare with df)\n")
		t := newTable("FILESYSTEM", "TYPE", "SOURCE", "DEVICE", "FILES", "ALLOCATED", "SIZE", "NOT MEASURED", "STILL LINKED")
		for _, i := range []int{4, 5, 6, 7, 8} {
			t.right[i] = true
		}
		for _, ft := range rep.Filesystems {
			fsys := ft.Filesystem
			mp := fsys.MountPoint
			if mp == "" {
				mp = "(not mounted)"
			}
			t.add(printable(mp), orDash(fsys.FSType), printable(orDash(fsys.Source)), fsys.Dev, strconv.Itoa(ft.Files),
				HumanSize(ft.Allocated), HumanSize(ft.Size), strconv.Itoa(ft.NotMeasured), strconv.Itoa(ft.StillLinked))
		}
		if mt := rep.MemoryTotal; mt.Files > 0 {
			t.add("(memory)", "-", "-", "-", strconv.Itoa(mt.Files), HumanSize(mt.Allocated), HumanSize(mt.Size),
				strconv.Itoa(mt.NotMeasured), strconv.Itoa(mt.StillLinked))
		}
		tw(t)
	}
	if nm := rep.NotMeasured; nm.Files > 0 {
		p("\nNot measured: %s (%s) held only through mappings, not in the totals above:\n"+
			"following /proc/PID/map_files needs %s.\n",
			plural(nm.Files, "file", "files"), plural(nm.Mappings, "mapping", "mappings"), nm.Capability)
	}
	if n := rep.Processes.NotPermitted; n > 0 {
		p("\nSkipped %s of other users (reading them needs %s).\n", plural(n, "process", "processes"), PtraceCapability)
	}
	for _, e := range rep.Processes.Errors {
		p("warning: %s\n", e)
	}
	return err
}

func sizes(f *DeletedFile) (size, alloc string) {
	if !f.Measured {
		return "?", "?"
	}
	return HumanSize(f.Size), HumanSize(f.Allocated)
}

func linked(f *DeletedFile) string {
	if f.Measured && f.Nlink > 0 {
		return fmt.Sprintf(" (still linked elsewhere: %d links)", f.Nlink)
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// holders renders "412 cat: open fd 3, 413 db: mapped".
func holders(f *DeletedFile) string {
	parts := make([]string, 0, len(f.Holders))
	for _, h := range f.Holders {
		s := strconv.Itoa(h.PID)
		if h.Comm != "" {
			s += " " + printable(h.Comm)
		}
		s += ": " + h.How
		if len(h.Fds) > 0 {
			fds := make([]string, len(h.Fds))
			for i, fd := range h.Fds {
				fds[i] = strconv.Itoa(fd)
			}
			s += " fd " + strings.Join(fds, ",")
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// WriteMapsText writes rep for a person.
func WriteMapsText(w io.Writer, rep *MapsReport) error {
	var err error
	p := func(format string, args ...any) {
		if err == nil {
			_, err = fmt.Fprintf(w, format, args...)
		}
	}
	tot := rep.Total
	p("pid %d (%s): %s, %s mapped, RSS %s, PSS %s, swap %s\n\n", rep.PID, printable(rep.Comm),
		plural(len(rep.Mappings), "mapping", "mappings"), HumanSize(tot.Size), HumanSize(tot.Rss), HumanSize(tot.Pss), HumanSize(tot.Swap))
	t := newTable("START-END", "SIZE", "PERM", "RSS", "PSS", "SWAP", "BACKING", "SHARED WITH", "PATH", "VMFLAGS")
	for _, i := range []int{1, 3, 4, 5} {
		t.right[i] = true
	}
	for _, m := range rep.Mappings {
		backing := m.Backing
		if m.Deleted && m.Backing == "file" {
			backing = "file (deleted)"
		}
		sw := "-"
		if len(m.SharedWith) > 0 {
			s := make([]string, len(m.SharedWith))
			for i, p := range m.SharedWith {
				s[i] = strconv.Itoa(p)
			}
			sw = strings.Join(s, ",")
		}
		path := printable(m.Path)
		if m.Inode != 0 {
			path += fmt.Sprintf(" [%s ino %d]", m.Dev, m.Inode)
		}
		t.add(strings.TrimPrefix(m.Start, "0x")+"-"+strings.TrimPrefix(m.End, "0x"), HumanSize(m.Size), m.Perms,
			HumanSize(m.Rss), HumanSize(m.Pss), HumanSize(m.Swap), backing, sw, orDash(path), orDash(strings.Join(m.VmFlagWords, ",")))
	}
	if err == nil {
		err = t.write(w, "")
	}
	if n := rep.SharingScan.NotPermitted; n > 0 {
		p("\nSharers were looked for in %s; %s of other users could not be read (that needs %s).\n",
			plural(rep.SharingScan.Scanned, "other process", "other processes"), plural(n, "process", "processes"), PtraceCapability)
	}
	return err
}
