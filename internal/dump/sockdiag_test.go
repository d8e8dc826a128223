package dump

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

func TestUnixDiagReqSize(t *testing.T) {
	if n := unsafe.Sizeof(kabi.UnixDiagReq{}); n != 24 {
		t.Fatalf("sizeof(unix_diag_req) = %d, want 24", n)
	}
}

// diagMsg builds one SOCK_DIAG_BY_FAMILY message as the kernel lays it out.
func diagMsg(ino uint32, typ, state uint8, attrs ...[]byte) []byte {
	body := make([]byte, kabi.UnixDiagMsgSize)
	body[0], body[1], body[2] = unix.AF_UNIX, typ, state
	binary.NativeEndian.PutUint32(body[4:], ino)
	for _, a := range attrs {
		body = append(body, a...)
	}
	return nlmsg(unix.SOCK_DIAG_BY_FAMILY, body)
}

func nlmsg(typ uint16, body []byte) []byte {
	m := make([]byte, kabi.NlmsghdrSize, kabi.NlmsghdrSize+len(body)+3)
	binary.NativeEndian.PutUint32(m, uint32(kabi.NlmsghdrSize+len(body)))
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

// golden is a datagram with a listener (path name, two pending
// connections), a connected socket, then NLMSG_DONE.
func golden() []byte {
	var b []byte
	b = append(b, diagMsg(100, unix.SOCK_STREAM, kabi.TCP_LISTEN,
		attr(kabi.UNIX_DIAG_NAME, []byte("/tmp/x.sock\x00")),
		attr(kabi.UNIX_DIAG_VFS, u32s(555, 66)),
		attr(kabi.UNIX_DIAG_ICONS, u32s(101, 102)),
		attr(kabi.UNIX_DIAG_RQLEN, u32s(2, 7)),
		attr(kabi.UNIX_DIAG_SHUTDOWN, []byte{0}))...)
	b = append(b, diagMsg(103, unix.SOCK_DGRAM, kabi.TCP_ESTABLISHED,
		attr(kabi.UNIX_DIAG_PEER, u32s(104)),
		attr(kabi.UNIX_DIAG_RQLEN, u32s(17, 0)),
		attr(kabi.UNIX_DIAG_SHUTDOWN, []byte{3}))...)
	return append(b, nlmsg(unix.NLMSG_DONE, u32s(0))...)
}

func TestParseUnixDiagGolden(t *testing.T) {
	out := map[uint32]*unixDiag{}
	done, err := parseUnixDiag(golden(), out)
	if err != nil || !done {
		t.Fatalf("done %v, err %v", done, err)
	}
	l := out[100]
	if l == nil || string(l.name) != "/tmp/x.sock\x00" || !l.hasVfs || l.vfsIno != 555 || l.vfsDev != 66 ||
		len(l.icons) != 2 || l.icons[1] != 102 || l.rqlen != 2 || l.wqlen != 7 || l.state != kabi.TCP_LISTEN {
		t.Errorf("listener: %+v", l)
	}
	c := out[103]
	if c == nil || c.peer != 104 || c.shutdown != 3 || c.typ != unix.SOCK_DGRAM || c.hasName {
		t.Errorf("connected: %+v", c)
	}
}

func TestParseUnixDiagMalformed(t *testing.T) {
	g := golden()
	for name, b := range map[string][]byte{
		"short header":    g[:10],
		"length too long": append(append([]byte{}, g[:kabi.NlmsghdrSize]...), 1),
		"short attribute": diagMsg(1, 1, 7, []byte{3, 0, 0, 0}),
		"short peer":      diagMsg(1, 1, 7, attr(kabi.UNIX_DIAG_PEER, []byte{1})),
		"odd icons":       diagMsg(1, 1, 10, attr(kabi.UNIX_DIAG_ICONS, []byte{1, 2, 3})),
		"short message":   nlmsg(unix.SOCK_DIAG_BY_FAMILY, []byte{1, 1}),
	} {
		if _, err := parseUnixDiag(b, map[uint32]*unixDiag{}); !errors.Is(err, errDiagMalformed) {
			t.Errorf("%s: err %v, want errDiagMalformed", name, err)
		}
	}
	if _, err := parseUnixDiag(nlmsg(unix.NLMSG_ERROR, u32s(^uint32(unix.EPERM)+1)), map[uint32]*unixDiag{}); !errors.Is(err, unix.EPERM) {
		t.Errorf("error message: %v, want EPERM", err)
	}
}

func FuzzParseUnixDiag(f *testing.F) {
	f.Add(golden())
	f.Add(diagMsg(1, 5, 10, attr(kabi.UNIX_DIAG_ICONS, u32s(0, 1, 2))))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseUnixDiag(b, map[uint32]*unixDiag{})
	})
}

// TestUnixSocketsLive asks this kernel about sockets of the test's own.
func TestUnixSocketsLive(t *testing.T) {
	sv, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sv[0])
	defer unix.Close(sv[1])
	if _, err := unix.Write(sv[0], []byte("hello")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "l.sock")
	l, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l)
	if err := unix.Bind(l, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(l, 4); err != nil {
		t.Fatal(err)
	}
	c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(c)
	if err := unix.Connect(c, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	ino := func(fd int) uint32 {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		return uint32(st.Ino)
	}
	all, err := unixSockets()
	if err != nil {
		t.Fatal(err)
	}
	a, b := all[ino(sv[0])], all[ino(sv[1])]
	if a == nil || b == nil || a.peer != ino(sv[1]) || b.peer != ino(sv[0]) || b.rqlen != 5 {
		t.Errorf("socketpair: %+v %+v", a, b)
	}
	ld, cd := all[ino(l)], all[ino(c)]
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if ld == nil || ld.state != kabi.TCP_LISTEN || string(ld.name) != path+"\x00" || ld.vfsIno != uint32(st.Ino) ||
		len(ld.icons) != 1 || ld.icons[0] != ino(c) || ld.wqlen != 4 {
		t.Errorf("listener: %+v", ld)
	}
	// A client waiting in a backlog is connected to an embryo socket,
	// which has no inode: its peer reads 0.
	if cd == nil || cd.state != kabi.TCP_ESTABLISHED || cd.peer != 0 {
		t.Errorf("waiting client: %+v", cd)
	}
	_ = os.Remove(path)
}
