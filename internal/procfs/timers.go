package procfs

import (
	"bytes"
	"fmt"
	"strconv"
)

// Notify is how a POSIX timer reports expiry (sigev_notify without
// SIGEV_THREAD_ID, which PosixTimer.ThreadID carries).
type Notify uint8

const (
	NotifySignal Notify = iota // SIGEV_SIGNAL
	NotifyNone                 // SIGEV_NONE
	NotifyThread               // SIGEV_THREAD
)

// sigevThreadID is SIGEV_THREAD_ID from include/uapi/asm-generic/siginfo.h.
const sigevThreadID = 4

func (n Notify) String() string {
	switch n {
	case NotifySignal:
		return "signal"
	case NotifyNone:
		return "none"
	case NotifyThread:
		return "thread"
	}
	return "Notify(" + strconv.Itoa(int(n)) + ")"
}

// PosixTimer is one timer_create(2) timer from /proc/PID/timers
// (fs/proc/base.c show_timer).
type PosixTimer struct {
	ID int32
	// Signal is sigev_signo; SigValue is sigev_value as a pointer-sized
	// integer. Kernels before 4.x hashed the pointer (%p); such values
	// cannot be restored and are reported as 0.
	Signal   int
	SigValue uint64
	Notify   Notify
	// ThreadID is set for SIGEV_THREAD_ID ("tid"); Target is then the
	// thread, otherwise the process, that receives the signal.
	ThreadID bool
	Target   int
	ClockID  int32
}

// SigevNotify returns the sigev_notify value to pass to timer_create.
func (t *PosixTimer) SigevNotify() int {
	n := int(t.Notify)
	if t.ThreadID {
		n |= sigevThreadID
	}
	return n
}

// ParseTimers parses /proc/PID/timers: records of "ID:", "signal:",
// "notify:" and "ClockID:" lines. Unknown lines are skipped.
func ParseTimers(data []byte) ([]PosixTimer, error) { return parseTimers("timers", data) }

// TimersPid reads and parses /proc/PID/timers.
func TimersPid(pid int) ([]PosixTimer, error) {
	return readParse(procPath(pid, "timers"), MaxTimersSize, parseTimers)
}

func parseTimers(file string, data []byte) ([]PosixTimer, error) {
	out := []PosixTimer{}
	l := newLines(file, data, MaxLineLen)
	for {
		line, ok, err := l.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return out, nil
		}
		if len(line) == 0 {
			continue
		}
		key, val, ok := splitKey(line)
		if !ok {
			return nil, l.errf("no ':' in %s", quote(line))
		}
		if string(key) == "ID" {
			v, ok := parseInt32(val)
			if !ok {
				return nil, l.errf("bad timer ID %s", quote(val))
			}
			out = append(out, PosixTimer{ID: v})
			continue
		}
		if len(out) == 0 {
			return nil, l.errf("%s before the first ID line", quote(line))
		}
		t := &out[len(out)-1]
		switch string(key) {
		case "signal":
			if err := t.parseSignal(val); err != nil {
				return nil, l.errf("bad signal %s: %v", quote(val), err)
			}
		case "notify":
			if err := t.parseNotify(val); err != nil {
				return nil, l.errf("bad notify %s: %v", quote(val), err)
			}
		case "ClockID":
			if t.ClockID, ok = parseInt32(val); !ok {
				return nil, l.errf("bad ClockID %s", quote(val))
			}
		}
	}
}

// parseSignal parses "%d/%px".
func (t *PosixTimer) parseSignal(val []byte) error {
	i := bytes.IndexByte(val, '/')
	if i < 0 {
		return errString("no '/'")
	}
	sig, ok := parseInt32(val[:i])
	if !ok {
		return errString("bad signal number")
	}
	t.Signal = int(sig)
	p := val[i+1:]
	if len(p) > 0 && p[0] == '(' {
		// "(null)" or "(____ptrval____)": the value was not disclosed.
		t.SigValue = 0
		return nil
	}
	p = bytes.TrimPrefix(p, []byte("0x"))
	if t.SigValue, ok = parseUint(p, 16); !ok {
		return errString("bad sigev_value")
	}
	return nil
}

// parseNotify parses "%s/%s.%d": signal|none|thread, tid|pid, target.
func (t *PosixTimer) parseNotify(val []byte) error {
	slash := bytes.IndexByte(val, '/')
	if slash < 0 {
		return errString("no '/'")
	}
	switch string(val[:slash]) {
	case "signal":
		t.Notify = NotifySignal
	case "none":
		t.Notify = NotifyNone
	case "thread":
		t.Notify = NotifyThread
	default:
		return fmt.Errorf("unknown notify kind %s", quote(val[:slash]))
	}
	rest := val[slash+1:]
	dot := bytes.IndexByte(rest, '.')
	if dot < 0 {
		return errString("no '.'")
	}
	switch string(rest[:dot]) {
	case "tid":
		t.ThreadID = true
	case "pid":
	default:
		return fmt.Errorf("unknown target kind %s", quote(rest[:dot]))
	}
	v, ok := parseInt32(rest[dot+1:])
	if !ok {
		return errString("bad target id")
	}
	t.Target = int(v)
	return nil
}
