package files

import (
	"bytes"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPair opens a pty pair of the test's own (no controlling terminal).
func openPair(t *testing.T) (m, s int) {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { unix.Close(m) })
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	if s, err = unix.Open("/dev/pts/"+strconv.Itoa(n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	return m, s
}

// settle waits until the master's queue stops growing: the slave's line
// discipline has taken (and echoed) what was written to it.
func settle(t *testing.T, m int) {
	t.Helper()
	last, same := -1, 0
	for deadline := time.Now().Add(5 * time.Second); same < 20; time.Sleep(5 * time.Millisecond) {
		n, err := unix.IoctlGetInt(m, unix.TIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		if n == last && n > 0 {
			same++
		} else {
			same = 0
		}
		last = n
		if time.Now().After(deadline) {
			t.Fatal("the pty's queues do not settle")
		}
	}
}

// drain reads fd, non-blocking, one read per chunk, until it is empty.
func drain(t *testing.T, fd int) []string {
	t.Helper()
	cs, err := readChunks(fd)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range cs {
		out = append(out, string(c))
	}
	return out
}

// TestPtyQueues: readQueues and refill, on a real pty, leave both queues
// exactly as they were, whatever they hold: canonical lines ended by '\n',
// VEOL and the EOF character, lines holding a quoted newline and a quoted
// EOF character, an unfinished line; a non-canonical queue with control
// characters. The master's queue holds the slave's echo of all of it. What
// tty-data.img could not hold is reported, after the queues are put back.
func TestPtyQueues(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (TIOCSLCKTRMIOS)")
	}
	for _, c := range []struct {
		name  string
		canon bool
		input string
		lines []string // reads of the slave, then its unfinished line
		tail  string
		plain bool // tty-data.img can hold it
	}{
		{"lines", true, "one\nsemi;two\nhalf", []string{"one\n", "semi;", "two\n"}, "half", true},
		{"eof", true, "one\nabc\x04\x04rest", []string{"one\n", "abc", ""}, "rest", false},
		{"quoted", true, "a\x16\nb\n\x16\x04c\n\x16;d", []string{"a\nb\n", "\x04c\n"}, ";d", false},
		{"raw", false, "x\x03\x7f\n\x16y", []string{"x\x03\x7f\n\x16y"}, "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, s := openPair(t)
			tt, err := unix.IoctlGetTermios(s, unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			tt.Iflag = 0
			tt.Oflag = unix.OPOST | unix.ONLCR
			tt.Lflag = unix.ECHO | unix.ECHOCTL
			if c.canon {
				tt.Lflag |= unix.ICANON | unix.IEXTEN | unix.ISIG
			}
			tt.Cc[unix.VEOL] = ';'
			tt.Cc[unix.VLNEXT] = 0x16
			if err := unix.IoctlSetTermios(s, unix.TCSETS, tt); err != nil {
				t.Fatal(err)
			}
			if _, err := unix.Write(m, []byte(c.input)); err != nil {
				t.Fatal(err)
			}
			settle(t, m)
			q, err := readQueues(m, s, tt)
			if err != nil {
				t.Fatal(err)
			}
			echo := q.toMaster
			var none unix.Termios
			if err := refill(m, s, tt, &none, q); err != nil {
				t.Fatal(err)
			}
			if got := q.representable(tt); (got == nil) != c.plain {
				t.Errorf("representable: %v, want plain %v", got, c.plain)
			}
			after, err := unix.IoctlGetTermios(s, unix.TCGETS)
			if err != nil || *after != *tt {
				t.Fatalf("termios after refill: %+v (%v), want %+v", after, err, tt)
			}
			settle(t, m)
			if got := drain(t, m); !bytes.Equal([]byte(join(got)), echo) {
				t.Errorf("the master's queue after refill: %q, want %q", join(got), echo)
			}
			got := drain(t, s)
			if len(got) != len(c.lines) {
				t.Fatalf("the slave reads %q, want %q", got, c.lines)
			}
			for i := range got {
				if got[i] != c.lines[i] {
					t.Errorf("read %d of the slave: %q, want %q", i, got[i], c.lines[i])
				}
			}
			if c.tail != "" {
				if _, err := unix.Write(m, []byte("\n")); err != nil {
					t.Fatal(err)
				}
				settle(t, m)
				if got := drain(t, s); len(got) != 1 || got[0] != c.tail+"\n" {
					t.Errorf("the unfinished line reads %q, want %q", got, c.tail+"\n")
				}
			}
		})
	}
}

func join(ss []string) string {
	var b bytes.Buffer
	for _, s := range ss {
		b.WriteString(s)
	}
	return b.String()
}

// TestSplitInput: a canonical queue as tty-data.img holds it (bytes) splits
// back into the lines it was made of, each ended by '\n', VEOL or (with
// IEXTEN) VEOL2, then the unfinished line.
func TestSplitInput(t *testing.T) {
	var tt unix.Termios
	tt.Lflag = unix.ICANON | unix.IEXTEN
	tt.Cc[unix.VEOL], tt.Cc[unix.VEOL2] = ';', '|'
	segs := []inputSeg{{data: []byte("one"), end: '\n'}, {data: []byte(""), end: ';'}, {data: []byte("x"), end: '|'}, {data: []byte("tail")}}
	q := &ptyQueues{toSlave: segs}
	b := q.slaveBytes()
	if string(b) != "one\n;x|tail" {
		t.Fatalf("slaveBytes %q", b)
	}
	got := splitInput(&tt, b)
	if len(got) != len(segs) {
		t.Fatalf("split into %d, want %d: %+v", len(got), len(segs), got)
	}
	for i := range got {
		if string(got[i].data) != string(segs[i].data) || got[i].end != segs[i].end || got[i].eof {
			t.Errorf("segment %d: %+v, want %+v", i, got[i], segs[i])
		}
	}
	tt.Lflag &^= unix.IEXTEN // VEOL2 ends no line without IEXTEN
	if got := splitInput(&tt, []byte("a|b\n")); len(got) != 1 || string(got[0].data) != "a|b" {
		t.Errorf("without IEXTEN: %+v", got)
	}
	tt.Lflag &^= unix.ICANON // not canonical: one run of bytes
	if got := splitInput(&tt, []byte("a\nb;")); len(got) != 1 || string(got[0].data) != "a\nb;" || got[0].end != 0 {
		t.Errorf("not canonical: %+v", got)
	}
}
