package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// Size limits. /proc files report st_size 0, so the only way to know a
// file's size is to read it; these caps stop a hostile or pathological
// process (millions of mappings, a huge epoll set) from making cryo allocate
// without bound.
const (
	// MaxMapsSize bounds maps and smaps. At ~1 KiB per smaps entry this is
	// ~250,000 mappings, well above the default vm.max_map_count of 65530.
	MaxMapsSize = 256 << 20
	// MaxLineLen bounds one line of any line-oriented file except status. A
	// maps line holds at most one PATH_MAX path, even with every byte escaped.
	MaxLineLen = 64 << 10
	// MaxStatusLineLen bounds one status line: "Groups:" lists up to
	// NGROUPS_MAX (65536) ids of up to 11 bytes each.
	MaxStatusLineLen = 1 << 20
	// MaxSmallFileSize bounds stat, status and auxv.
	MaxSmallFileSize = 2 << 20
	// MaxFdinfoSize bounds an fdinfo file: an epoll or inotify fd prints a
	// line per watched target, and there can be hundreds of thousands.
	MaxFdinfoSize = 64 << 20
	// MaxTimersSize bounds /proc/PID/timers (~80 bytes per POSIX timer).
	MaxTimersSize = 64 << 20
	// MaxMountinfoSize bounds mountinfo; container hosts can have 100,000
	// mounts.
	MaxMountinfoSize = 64 << 20
)

// ReadFileBounded reads the whole of path, refusing files larger than max
// bytes with an error that wraps ErrTooLarge. It reads until EOF rather than
// trusting st_size, which is 0 for /proc files. Errors from opening or
// reading are returned as the *os.PathError the os package produced, so
// errors.Is(err, fs.ErrNotExist) works for an exited process.
func ReadFileBounded(path string, max int64) ([]byte, error) {
	if max < 0 {
		return nil, fmt.Errorf("read %s: negative size limit %d", path, max)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Start small: most /proc files are a few KiB, and a big first
	// allocation per file would dominate when scanning thousands of
	// processes. The buffer never grows past max+1: one byte more than
	// allowed is enough to know the file is too large.
	buf := make([]byte, 0, min(max+1, 8<<10))
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > max {
				return nil, fmt.Errorf("read %s: larger than %d bytes: %w", path, max, ErrTooLarge)
			}
			nb := make([]byte, len(buf), min(2*int64(cap(buf)), max+1))
			copy(nb, buf)
			buf = nb
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			if int64(len(buf)) > max {
				return nil, fmt.Errorf("read %s: larger than %d bytes: %w", path, max, ErrTooLarge)
			}
			return buf, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: unwrapPathErr(err)}
		}
	}
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readParse reads path and parses it, naming path in parse errors.
func readParse[T any](path string, max int64, parse func(string, []byte) (T, error)) (T, error) {
	data, err := ReadFileBounded(path, max)
	if err != nil {
		var zero T
		return zero, err
	}
	return parse(path, data)
}

func procPath(pid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/" + name
}

func taskPath(pid, tid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/" + name
}

// lines iterates over newline-terminated lines without copying. The final
// line may lack its newline (a truncated read); it is still returned.
type lines struct {
	file    string
	data    []byte
	off     int // start of the next line
	lineNo  int // number of the line last returned
	lineOff int // offset of the line last returned
	maxLen  int
}

func newLines(file string, data []byte, maxLen int) lines {
	return lines{file: file, data: data, maxLen: maxLen}
}

// next returns the next line without its '\n'. ok is false at the end of the
// data; err is non-nil if the line is longer than the limit.
func (l *lines) next() (line []byte, ok bool, err error) {
	if l.off >= len(l.data) {
		return nil, false, nil
	}
	rest := l.data[l.off:]
	l.lineNo++
	l.lineOff = l.off
	i := bytes.IndexByte(rest, '\n')
	if i < 0 {
		i = len(rest)
		l.off = len(l.data)
	} else {
		l.off += i + 1
	}
	if i > l.maxLen {
		return nil, false, l.errf("line is %d bytes, over the %d-byte limit: %w", i, l.maxLen, ErrTooLarge)
	}
	return rest[:i], true, nil
}

// errf builds a ParseError for the line last returned by next.
func (l *lines) errf(format string, args ...any) *ParseError {
	return &ParseError{File: l.file, Line: l.lineNo, Offset: int64(l.lineOff), Err: fmt.Errorf(format, args...)}
}

// Number parsing on []byte. strconv would need a string conversion per
// field; these avoid the allocation on the hot path of smaps.

func parseUint(b []byte, base int) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	switch base {
	case 10:
		for _, c := range b {
			if c < '0' || c > '9' {
				return 0, false
			}
			d := uint64(c - '0')
			if n > (1<<64-1-d)/10 {
				return 0, false
			}
			n = n*10 + d
		}
	case 16:
		if len(b) > 16 {
			// Leading zeros are legal but the kernel never prints more
			// than 16 digits for a 64-bit value.
			t := bytes.TrimLeft(b, "0")
			if len(t) > 16 {
				return 0, false
			}
			b = t
		}
		for _, c := range b {
			var d byte
			switch {
			case c >= '0' && c <= '9':
				d = c - '0'
			case c >= 'a' && c <= 'f':
				d = c - 'a' + 10
			case c >= 'A' && c <= 'F':
				d = c - 'A' + 10
			default:
				return 0, false
			}
			n = n<<4 | uint64(d)
		}
	case 8:
		for _, c := range b {
			if c < '0' || c > '7' {
				return 0, false
			}
			if n>>61 != 0 {
				return 0, false
			}
			n = n<<3 | uint64(c-'0')
		}
	default:
		panic("procfs: unsupported base")
	}
	return n, true
}

// parseInt parses an optionally negative decimal.
func parseInt(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		neg = b[0] == '-'
		b = b[1:]
	}
	u, ok := parseUint(b, 10)
	if !ok {
		return 0, false
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true
	}
	if u > 1<<63-1 {
		return 0, false
	}
	return int64(u), true
}

// parseInt32 parses a decimal that the kernel printed from a C int.
func parseInt32(b []byte) (int32, bool) {
	v, ok := parseInt(b)
	if !ok || v < -1<<31 || v > 1<<31-1 {
		return 0, false
	}
	return int32(v), true
}

func parseUint32(b []byte, base int) (uint32, bool) {
	v, ok := parseUint(b, base)
	if !ok || v > 1<<32-1 {
		return 0, false
	}
	return uint32(v), true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// nextField splits off the first run of non-blank bytes, skipping leading
// blanks.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	j := i
	for j < len(b) && !isSpace(b[j]) {
		j++
	}
	return b[i:j], b[j:]
}

// splitKey splits "Key:\tvalue" into the key and the blank-trimmed value.
func splitKey(line []byte) (key, value []byte, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return nil, nil, false
	}
	return line[:i], trimSpace(line[i+1:]), true
}
