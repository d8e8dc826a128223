package procfs

import (
	"bytes"
	"strconv"
)

// KV is one "key: value" line, value with surrounding blanks removed.
type KV struct {
	Key, Value string
}

// Fdinfo is /proc/PID/fdinfo/FD: the four lines every file has
// (fs/proc/fd.c) and the lines a file type adds through its show_fdinfo
// operation.
type Fdinfo struct {
	Pos int64
	// Flags are the open flags (O_*), which the kernel prints in octal.
	Flags uint32
	// MntID is the mount id (matches Mount.ID); -1 if not printed (<3.15).
	MntID int
	// Ino is the inode number; 0 if not printed (<5.14).
	Ino uint64

	// Extra holds every line after the common four, in order: the
	// type-specific lines below, fanotify marks, "lock:" lines of file
	// locks, and anything a newer kernel adds. For epoll and inotify the
	// key is "tfd" or "inotify" and the value the rest of the line.
	Extra []KV

	// At most one of these is set, by the lines the fd's type printed.
	Eventfd  *Eventfd
	Epoll    []EpollTarget
	Inotify  []InotifyWatch
	Signalfd *Signalfd
	Timerfd  *Timerfd
	Pidfd    *Pidfd

	// Locks are the "lock:" lines: the file locks held through this fd's
	// open file description (see Lock), whatever the fd's type.
	Locks []Lock
}

// Eventfd is an eventfd's state (fs/eventfd.c eventfd_show_fdinfo).
type Eventfd struct {
	Count uint64
	// ID is the eventfd's id (5.x+), or -1 if not printed.
	ID int
	// Semaphore reports EFD_SEMAPHORE (6.6+; false if not printed).
	Semaphore bool
}

// EpollTarget is one watched fd of an epoll instance (fs/eventpoll.c
// ep_show_fdinfo).
type EpollTarget struct {
	TFD    int
	Events uint32
	Data   uint64
	Pos    int64
	Ino    uint64
	// SDev is the target's superblock device in the kernel's internal
	// encoding (major<<20 | minor); see KernelDev.
	SDev uint32
}

// InotifyWatch is one watch of an inotify instance (fs/notify/fdinfo.c).
type InotifyWatch struct {
	WD          int32
	Ino         uint64
	SDev        uint32 // kernel-internal encoding; see KernelDev
	Mask        uint32
	IgnoredMask uint32
	// FhandleType and Fhandle identify the inode for open_by_handle_at;
	// Fhandle is nil when the kernel could not encode a handle.
	FhandleType int32
	Fhandle     []byte
}

// Signalfd is a signalfd's mask (fs/signalfd.c).
type Signalfd struct {
	Sigmask uint64
}

// Timespec is a time as the kernel prints it in fdinfo: (sec, nsec).
type Timespec struct {
	Sec, Nsec uint64
}

// Timerfd is a timerfd's state (fs/timerfd.c timerfd_show).
type Timerfd struct {
	ClockID int32
	// Ticks is the expirations not yet read.
	Ticks uint64
	// SettimeFlags are TFD_TIMER_* flags of the last settime (octal).
	SettimeFlags uint32
	// Value is the time left until the next expiration, Interval the
	// period; both zero for a disarmed timer.
	Value, Interval Timespec
}

// Pidfd is what a pidfd refers to (kernel/pid.c, fs/pidfs.c).
type Pidfd struct {
	// Pid is the pid in the reader's pid namespace: -1 once the process
	// has exited, 0 if it is not visible from the reader's namespace.
	Pid int
	// NSpid lists the pid in each namespace from the reader's downwards.
	NSpid []int
}

// KernelDev decodes the kernel-internal dev_t encoding that epoll and
// inotify fdinfo print as sdev (MINORBITS = 20).
func KernelDev(sdev uint32) Dev {
	return Dev{Major: sdev >> 20, Minor: sdev & (1<<20 - 1)}
}

// maxFhandle bounds a decoded file handle: MAX_HANDLE_SZ is 128 bytes.
const maxFhandle = 128

// ParseFdinfo parses /proc/PID/fdinfo/FD.
func ParseFdinfo(data []byte) (*Fdinfo, error) { return parseFdinfo("fdinfo", data) }

// FdinfoPid reads and parses /proc/PID/fdinfo/FD.
func FdinfoPid(pid, fd int) (*Fdinfo, error) {
	return readParse(procPath(pid, "fdinfo/"+strconv.Itoa(fd)), MaxFdinfoSize, parseFdinfo)
}

func parseFdinfo(file string, data []byte) (*Fdinfo, error) {
	fi := &Fdinfo{MntID: -1}
	var seenPos, seenFlags bool
	l := newLines(file, data, MaxLineLen)
	for {
		line, ok, err := l.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if len(line) == 0 {
			continue
		}
		var key, val []byte
		// inotify and fanotify lines are "inotify wd:1 ino:..." with no
		// colon after the first word.
		if bytes.HasPrefix(line, []byte("inotify ")) || bytes.HasPrefix(line, []byte("fanotify ")) {
			i := bytes.IndexByte(line, ' ')
			key, val = line[:i], trimSpace(line[i+1:])
		} else if key, val, ok = splitKey(line); !ok {
			return nil, l.errf("no ':' in %s", quote(line))
		}
		bad := func() error { return l.errf("bad %s value %s", key, quote(val)) }
		common := true
		switch string(key) {
		case "pos":
			if fi.Pos, ok = parseInt(val); !ok {
				return nil, bad()
			}
			seenPos = true
		case "flags":
			if fi.Flags, ok = parseUint32(val, 8); !ok {
				return nil, bad()
			}
			seenFlags = true
		case "mnt_id":
			v, ok := parseInt32(val)
			if !ok {
				return nil, bad()
			}
			fi.MntID = int(v)
		case "ino":
			if fi.Ino, ok = parseUint(val, 10); !ok {
				return nil, bad()
			}
		default:
			common = false
		}
		if common {
			continue
		}
		if err := fi.parseTyped(key, val, bad); err != nil {
			return nil, err
		}
		fi.Extra = append(fi.Extra, KV{Key: string(key), Value: string(val)})
	}
	if !seenPos || !seenFlags {
		return nil, &ParseError{File: file, Line: l.lineNo, Offset: int64(len(data)), Err: errString("missing pos or flags line")}
	}
	return fi, nil
}

func (fi *Fdinfo) parseTyped(key, val []byte, bad func() error) error {
	var ok bool
	switch string(key) {
	case "eventfd-count":
		if fi.Eventfd == nil {
			fi.Eventfd = &Eventfd{ID: -1}
		}
		if fi.Eventfd.Count, ok = parseUint(val, 16); !ok {
			return bad()
		}
	case "eventfd-id":
		if fi.Eventfd == nil {
			fi.Eventfd = &Eventfd{ID: -1}
		}
		v, ok := parseInt32(val)
		if !ok {
			return bad()
		}
		fi.Eventfd.ID = int(v)
	case "eventfd-semaphore":
		if fi.Eventfd == nil {
			fi.Eventfd = &Eventfd{ID: -1}
		}
		v, ok := parseUint(val, 10)
		if !ok || v > 1 {
			return bad()
		}
		fi.Eventfd.Semaphore = v == 1
	case "tfd":
		t, ok := parseEpollTarget(val)
		if !ok {
			return bad()
		}
		fi.Epoll = append(fi.Epoll, t)
	case "inotify":
		w, ok := parseInotifyWatch(val)
		if !ok {
			return bad()
		}
		fi.Inotify = append(fi.Inotify, w)
	case "sigmask":
		v, ok := parseUint(val, 16)
		if !ok {
			return bad()
		}
		fi.Signalfd = &Signalfd{Sigmask: v}
	case "clockid", "ticks", "settime flags", "it_value", "it_interval":
		if fi.Timerfd == nil {
			fi.Timerfd = &Timerfd{}
		}
		t := fi.Timerfd
		switch key[len(key)-1] {
		case 'd': // clockid
			t.ClockID, ok = parseInt32(val)
		case 's':
			if key[0] == 't' { // ticks
				t.Ticks, ok = parseUint(val, 10)
			} else { // settime flags
				t.SettimeFlags, ok = parseUint32(val, 8)
			}
		case 'e': // it_value
			t.Value, ok = parseTimespec(val)
		case 'l': // it_interval
			t.Interval, ok = parseTimespec(val)
		}
		if !ok {
			return bad()
		}
	case "lock":
		if len(fi.Locks) == maxLocks {
			return bad()
		}
		lk, ok := parseLock(val)
		if !ok || lk.Blocked {
			return bad()
		}
		fi.Locks = append(fi.Locks, lk)
	case "Pid":
		if fi.Pidfd == nil {
			fi.Pidfd = &Pidfd{}
		}
		v, ok := parseInt32(val)
		if !ok {
			return bad()
		}
		fi.Pidfd.Pid = int(v)
	case "NSpid":
		if fi.Pidfd == nil {
			fi.Pidfd = &Pidfd{}
		}
		ids, err := parseIDList(val, bad, func(b []byte) (int, bool) {
			v, ok := parseInt32(b)
			return int(v), ok
		})
		if err != nil {
			return err
		}
		fi.Pidfd.NSpid = ids
	}
	return nil
}

// parseTimespec parses "(sec, nsec)".
func parseTimespec(b []byte) (Timespec, bool) {
	if len(b) < 2 || b[0] != '(' || b[len(b)-1] != ')' {
		return Timespec{}, false
	}
	b = b[1 : len(b)-1]
	i := bytes.IndexByte(b, ',')
	if i < 0 {
		return Timespec{}, false
	}
	sec, ok1 := parseUint(trimSpace(b[:i]), 10)
	nsec, ok2 := parseUint(trimSpace(b[i+1:]), 10)
	return Timespec{Sec: sec, Nsec: nsec}, ok1 && ok2
}

// forEachKV calls fn for each "key:value" of a line of blank-separated
// tokens, where the value either follows the colon directly ("pos:0") or
// is the next token ("events: 19"), as epoll's and inotify's lines mix.
func forEachKV(b []byte, fn func(k, v []byte) bool) bool {
	for {
		var tok []byte
		tok, b = nextField(b)
		if len(tok) == 0 {
			return true
		}
		i := bytes.IndexByte(tok, ':')
		if i <= 0 {
			return false
		}
		k, v := tok[:i], tok[i+1:]
		if len(v) == 0 {
			v, b = nextField(b)
		}
		if !fn(k, v) {
			return false
		}
	}
}

// parseEpollTarget parses the value of
//
//	tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x
func parseEpollTarget(val []byte) (EpollTarget, bool) {
	// The value starts with the tfd number; the "tfd:" key was split off.
	var t EpollTarget
	f, rest := nextField(val)
	tfd, ok := parseInt32(f)
	if !ok {
		return t, false
	}
	t.TFD = int(tfd)
	var seen int
	ok = forEachKV(rest, func(k, v []byte) bool {
		var ok bool
		switch string(k) {
		case "events":
			t.Events, ok = parseUint32(v, 16)
		case "data":
			t.Data, ok = parseUint(v, 16)
		case "pos":
			t.Pos, ok = parseInt(v)
		case "ino":
			t.Ino, ok = parseUint(v, 16)
		case "sdev":
			t.SDev, ok = parseUint32(v, 16)
		default:
			return true
		}
		seen++
		return ok
	})
	return t, ok && seen >= 2
}

// parseInotifyWatch parses the value of
//
//	inotify wd:%x ino:%lx sdev:%x mask:%x ignored_mask:%x [fhandle-bytes:%x fhandle-type:%x f_handle:%02x...]
func parseInotifyWatch(val []byte) (InotifyWatch, bool) {
	var w InotifyWatch
	var seenWD bool
	nbytes := -1
	ok := forEachKV(val, func(k, v []byte) bool {
		var ok bool
		switch string(k) {
		case "wd":
			var u uint32
			u, ok = parseUint32(v, 16)
			w.WD = int32(u)
			seenWD = true
		case "ino":
			w.Ino, ok = parseUint(v, 16)
		case "sdev":
			w.SDev, ok = parseUint32(v, 16)
		case "mask":
			w.Mask, ok = parseUint32(v, 16)
		case "ignored_mask":
			w.IgnoredMask, ok = parseUint32(v, 16)
		case "fhandle-bytes":
			var u uint64
			u, ok = parseUint(v, 16)
			if ok && u > maxFhandle {
				ok = false
			}
			nbytes = int(u)
		case "fhandle-type":
			var u uint32
			u, ok = parseUint32(v, 16)
			w.FhandleType = int32(u)
		case "f_handle":
			if len(v)%2 != 0 || len(v)/2 > maxFhandle || (nbytes >= 0 && len(v)/2 != nbytes) {
				return false
			}
			w.Fhandle = make([]byte, len(v)/2)
			for i := range w.Fhandle {
				var b uint64
				b, ok = parseUint(v[2*i:2*i+2], 16)
				if !ok {
					return false
				}
				w.Fhandle[i] = byte(b)
			}
			ok = true
		default:
			return true
		}
		return ok
	})
	return w, ok && seenWD
}
