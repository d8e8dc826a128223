package sockdiag

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/kabi"
)

// Builders of synthetic replies, in the kernel's layout.

func nlmsg(typ uint16, body []byte) []byte {
	m := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body)+3)
	binary.NativeEndian.PutUint32(m, uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(m[4:], typ)
	m = append(m, body...)
	for len(m)%4 != 0 {
		m = append(m, 0)
	}
	return m
}

func attr(typ uint16, v []byte) []byte {
	a := make([]byte, 4, 4+len(v)+3)
	binary.NativeEndian.PutUint16(a, uint16(4+len(v)))
	binary.NativeEndian.PutUint16(a[2:], typ)
	a = append(a, v...)
	for len(a)%4 != 0 {
		a = append(a, 0)
	}
	return a
}

func u32s(v ...uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.NativeEndian.PutUint32(b[i*4:], x)
	}
	return b
}

func unixMsg(ino uint32, typ, state uint8, attrs ...[]byte) []byte {
	body := make([]byte, kabi.UnixDiagMsgSize)
	body[0], body[1], body[2] = unix.AF_UNIX, typ, state
	binary.NativeEndian.PutUint32(body[4:], ino)
	for _, a := range attrs {
		body = append(body, a...)
	}
	return nlmsg(unix.SOCK_DIAG_BY_FAMILY, body)
}

var done = nlmsg(unix.NLMSG_DONE, u32s(0))

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// TestParseMalformed: each way a reply can be malformed is a *ParseError
// at the offset of the message or attribute at fault.
func TestParseMalformed(t *testing.T) {
	good := unixMsg(1, unix.SOCK_STREAM, kabi.TCP_LISTEN, attr(kabi.UNIX_DIAG_ICONS, u32s(2, 3)))
	L, A := len(good), unix.NLMSG_HDRLEN+kabi.UnixDiagMsgSize // a message's length; where its attributes start
	long := nlmsg(unix.SOCK_DIAG_BY_FAMILY, make([]byte, 8))
	binary.NativeEndian.PutUint32(long, 1000)
	longPeer := attr(kabi.UNIX_DIAG_PEER, u32s(9))
	binary.NativeEndian.PutUint16(longPeer, 12) // 8 bytes of it are left
	for _, c := range []struct {
		name string
		b    []byte
		off  int64
		msg  string
	}{
		{"short header", cat(good, done[:10]), int64(L), "short of a netlink header"},
		{"message too long", cat(good, long), int64(L), "netlink message of 1000 bytes"},
		{"message too short", cat(good, []byte{8, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), int64(L), "netlink message of 8 bytes"},
		{"unknown type", cat(good, nlmsg(99, nil)), int64(L), "type 99"},
		{"short unix_diag_msg", cat(good, nlmsg(unix.SOCK_DIAG_BY_FAMILY, []byte{1, 1})), int64(L + unix.NLMSG_HDRLEN), "unix_diag_msg of 2 bytes"},
		{"wrong family", cat(good, nlmsg(unix.SOCK_DIAG_BY_FAMILY, make([]byte, 16))), int64(L + unix.NLMSG_HDRLEN), "family 0"},
		{"short attribute header", cat(good, unixMsg(4, 1, 7, []byte{3, 0})), int64(L + A), "short of an attribute header"},
		{"attribute too long", cat(good, unixMsg(4, 1, 7, longPeer)), int64(L + A), "attribute 2 of 12 bytes, 8 left"},
		{"short peer", cat(good, unixMsg(4, 1, 7, attr(kabi.UNIX_DIAG_SHUTDOWN, []byte{0}), attr(kabi.UNIX_DIAG_PEER, []byte{1}))), int64(L + A + 8), "1 bytes, want 4"},
		{"odd icons", cat(good, unixMsg(4, 1, 10, attr(kabi.UNIX_DIAG_ICONS, []byte{1, 2, 3}))), int64(L + A), "3 bytes of pending"},
		{"long name", cat(good, unixMsg(4, 1, 7, attr(kabi.UNIX_DIAG_NAME, make([]byte, 109)))), int64(L + A), "109 bytes"},
		{"odd meminfo", cat(good, unixMsg(4, 1, 7, attr(kabi.UNIX_DIAG_MEMINFO, make([]byte, 6)))), int64(L + A), "6 bytes of meminfo"},
		{"after done", cat(good, done, good), int64(L + len(done)), "after NLMSG_DONE"},
		{"no done", good, int64(L), "before NLMSG_DONE"},
		{"ack", cat(good, nlmsg(unix.NLMSG_ERROR, u32s(0))), int64(L), "acknowledgement"},
		{"errno out of range", cat(good, nlmsg(unix.NLMSG_ERROR, u32s(^uint32(0)-5000))), int64(L), "error code -5001"},
	} {
		_, err := ParseUnix(c.b)
		var pe *ParseError
		if !errors.As(err, &pe) || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want a *ParseError", c.name, err)
			continue
		}
		if pe.Offset != c.off || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v (offset %d), want offset %d and %q", c.name, err, pe.Offset, c.off, c.msg)
		}
	}
	// A kernel error is the errno, not a malformed reply.
	_, err := ParseUnix(cat(good, nlmsg(unix.NLMSG_ERROR, u32s(^uint32(unix.EPERM)+1))))
	if !errors.Is(err, unix.EPERM) || errors.Is(err, ErrMalformed) {
		t.Errorf("NLMSG_ERROR EPERM: %v", err)
	}
	_, err = ParseUnix(cat(good, nlmsg(unix.NLMSG_DONE, u32s(^uint32(unix.ENOENT)+1))))
	if !errors.Is(err, unix.ENOENT) {
		t.Errorf("NLMSG_DONE ENOENT: %v", err)
	}
}

// TestParseUnixSynthetic covers what the world cannot produce: a client
// of a backlog that closed (icon 0), attribute flag bits, unknown
// attributes, NLMSG_NOOP, and messages split over datagrams.
func TestParseUnixSynthetic(t *testing.T) {
	flagged := attr(kabi.UNIX_DIAG_PEER, u32s(7))
	binary.NativeEndian.PutUint16(flagged[2:], kabi.UNIX_DIAG_PEER|unix.NLA_F_NET_BYTEORDER)
	b := cat(
		unixMsg(1, unix.SOCK_STREAM, kabi.TCP_LISTEN, attr(kabi.UNIX_DIAG_ICONS, u32s(0, 5)), attr(200, []byte("future"))),
		nlmsg(unix.NLMSG_NOOP, nil),
		unixMsg(2, unix.SOCK_DGRAM, kabi.TCP_CLOSE, flagged, attr(kabi.UNIX_DIAG_NAME, nil)),
		done)
	s, err := ParseUnix(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 2 || len(s[0].Icons) != 2 || s[0].Icons[0] != 0 || s[0].Icons[1] != 5 || s[1].Peer != 7 || s[1].Name == nil || len(s[1].Name) != 0 {
		t.Errorf("%+v", s)
	}
	// Fed as datagrams cut between messages, offsets continue across.
	r := reply{}
	var n int
	cut := len(unixMsg(1, unix.SOCK_STREAM, kabi.TCP_LISTEN, attr(kabi.UNIX_DIAG_ICONS, u32s(0, 5)), attr(200, []byte("future"))))
	for _, d := range [][]byte{b[:cut], b[cut:]} {
		if err := r.feed(d, func(off int64, m []byte) error { n++; _, err := parseUnixMsg(off, m); return err }); err != nil {
			t.Fatal(err)
		}
	}
	if !r.done || n != 2 || r.off != int64(len(b)) {
		t.Errorf("done %v, %d sockets, offset %d of %d", r.done, n, r.off, len(b))
	}
	bad := cat(b[:cut], unixMsg(3, 1, 7, attr(kabi.UNIX_DIAG_PEER, nil)))
	r = reply{}
	r.feed(bad[:cut], func(int64, []byte) error { return nil })
	err = r.feed(bad[cut:], func(off int64, m []byte) error { _, err := parseUnixMsg(off, m); return err })
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Offset != int64(cut+unix.NLMSG_HDRLEN+kabi.UnixDiagMsgSize) {
		t.Errorf("error in the second datagram: %v, want it at byte %d of the reply", err, cut+unix.NLMSG_HDRLEN+kabi.UnixDiagMsgSize)
	}
}

// A family the kernel has no handler for is refused with the one
// not-supported sentinel that dump's callers test for.
func TestErrNotSupportedIsShared(t *testing.T) {
	if !errors.Is(ErrNotSupported, errs.ErrNotSupported) {
		t.Errorf("sockdiag.ErrNotSupported (%v) does not wrap errs.ErrNotSupported", ErrNotSupported)
	}
}
