package sockdiag

import (
	"errors"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// Each fuzzer checks that its parser never panics, that every error is a
// *ParseError matching ErrMalformed, an error wrapping ErrTooLarge, or the
// kernel's errno, and that what it returns is bounded by the input: no
// allocation is driven by a number read from the data.

func checkFuzzErr(t *testing.T, err error) {
	t.Helper()
	var pe *ParseError
	var errno unix.Errno
	switch {
	case errors.As(err, &pe):
		if !errors.Is(err, ErrMalformed) || pe.Error() == "" {
			t.Fatalf("ParseError %v does not match ErrMalformed", err)
		}
	case errors.Is(err, ErrTooLarge):
	case errors.As(err, &errno):
		if errno == 0 || errno > 4095 {
			t.Fatalf("errno %d from the reply", uintptr(errno))
		}
	default:
		t.Fatalf("error %v (%T) is none of the package's", err, err)
	}
}

// tooMany says n sockets could not fit in input bytes: each takes at least
// a netlink header and its family's struct of msgSize.
func tooMany(n, msgSize, input int) bool { return n*(unix.NLMSG_HDRLEN+msgSize) > input }

func seedGolden(f *testing.F, files ...string) {
	for _, n := range files {
		f.Add(readTestdata(f, n))
	}
}

func FuzzParseUnix(f *testing.F) {
	seedGolden(f, "unix.reply")
	f.Add(cat(unixMsg(1, unix.SOCK_STREAM, kabi.TCP_LISTEN, attr(kabi.UNIX_DIAG_ICONS, u32s(0, 1, 2)), attr(kabi.UNIX_DIAG_NAME, []byte("/x\x00"))), done))
	f.Add(cat(unixMsg(1, 2, 7), nlmsg(unix.NLMSG_ERROR, u32s(^uint32(unix.EPERM)+1))))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseUnix(b)
		// The same bytes fed as two datagrams, cut anywhere, give the
		// same answer: a message never spans datagrams, so a cut inside
		// one is malformed either way.
		if len(b) > 0 {
			cut := int(b[0]) * len(b) / 256
			var s2 []Unix
			r := reply{}
			err2 := r.feed(b[:cut], func(off int64, m []byte) error {
				u, err := parseUnixMsg(off, m)
				s2 = append(s2, u)
				return err
			})
			if err2 == nil && !r.done {
				err2 = r.feed(b[cut:], func(off int64, m []byte) error {
					u, err := parseUnixMsg(off, m)
					s2 = append(s2, u)
					return err
				})
			}
			if err == nil && (err2 != nil || !r.done || !reflect.DeepEqual(s, s2)) {
				// Whole, it parsed; cut, it may only fail where the
				// cut split a message.
				var pe *ParseError
				if err2 == nil || !errors.As(err2, &pe) || pe.Offset > int64(cut) {
					t.Fatalf("cut at %d: %v, %d sockets; whole: %d sockets", cut, err2, len(s2), len(s))
				}
			}
		}
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if tooMany(len(s), kabi.UnixDiagMsgSize, len(b)) {
			t.Fatalf("%d sockets from %d bytes", len(s), len(b))
		}
		for _, u := range s {
			if len(u.Name) > maxUnixName || len(u.Icons) > MaxIcons || 4*len(u.Icons) > len(b) {
				t.Fatalf("unbounded socket %+v", u)
			}
		}
	})
}

func FuzzParseInet(f *testing.F) {
	for _, d := range inetDumps {
		f.Add(readTestdata(f, d.name+".reply"), d.protocol)
	}
	f.Add(readTestdata(f, "raw4.reply"), uint8(unix.IPPROTO_RAW))
	f.Fuzz(func(t *testing.T, b []byte, protocol uint8) {
		s, err := ParseInet(b, protocol)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if tooMany(len(s), inetDiagMsgSize, len(b)) {
			t.Fatalf("%d sockets from %d bytes", len(s), len(b))
		}
		for _, i := range s {
			if i.TCPInfo != nil && (protocol != unix.IPPROTO_TCP || len(i.TCPInfo.Raw) > len(b) || len(i.TCPInfo.Raw) < kabi.TCPInfoSize) {
				t.Fatalf("tcp_info of %d bytes for protocol %d", len(i.TCPInfo.Raw), protocol)
			}
			if len(i.Cong) > len(b) {
				t.Fatalf("congestion control of %d bytes", len(i.Cong))
			}
			if (i.Family == unix.AF_INET) != i.Src.Addr().Is4() || (i.Family == unix.AF_INET) != i.Dst.Addr().Is4() {
				t.Fatalf("family %d with addresses %v %v", i.Family, i.Src, i.Dst)
			}
		}
	})
}

func FuzzParsePacket(f *testing.F) {
	seedGolden(f, "packet.reply")
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParsePacket(b)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if tooMany(len(s), packetDiagMsgSize, len(b)) {
			t.Fatalf("%d sockets from %d bytes", len(s), len(b))
		}
		for _, p := range s {
			if packetDiagMclistSize*len(p.Mclist) > len(b) || sockFilterSize*len(p.Filter) > len(b) {
				t.Fatalf("unbounded socket %+v", p)
			}
			for _, m := range p.Mclist {
				if int(m.Alen) > len(m.Addr) {
					t.Fatalf("membership address of %d bytes", m.Alen)
				}
			}
		}
	})
}

func FuzzParseNetlink(f *testing.F) {
	seedGolden(f, "netlink.reply")
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseNetlink(b)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if tooMany(len(s), netlinkDiagMsgSize, len(b)) {
			t.Fatalf("%d sockets from %d bytes", len(s), len(b))
		}
		for _, n := range s {
			if 4*len(n.Groups) > len(b) {
				t.Fatalf("%d group words from %d bytes", len(n.Groups), len(b))
			}
			n.Member(^uint32(0))
		}
	})
}
