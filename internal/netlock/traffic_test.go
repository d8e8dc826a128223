package netlock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/errs"
)

// needLock skips a test on a kernel without nf_tables (found by the probe
// `cryo check` runs) and fails it for any other reason the probe gives:
// these tests must run as root.
func needLock(t *testing.T) {
	t.Helper()
	if _, err := Probe(); err != nil {
		if errors.Is(err, errs.ErrNotSupported) {
			t.Skipf("no nf_tables: %v", err)
		}
		if os.Geteuid() != 0 && os.Getenv("CRYO_TEST_STRICT") == "" {
			t.Skipf("not root: %v", err)
		}
		t.Fatalf("probe: %v", err)
	}
}

// pair is one TCP connection over loopback, both ends in this process.
type pair struct {
	a, b   *net.TCPConn // a dialed, b accepted
	aConn  Conn         // a's end as its socket sees it
	bConn  Conn
	family string
}

// sockAddr is the address a socket has bound or connected, as the kernel
// says (a v4-mapped address stays mapped, unlike net.Addr).
func sockAddr(t *testing.T, c *net.TCPConn, peer bool) netip.AddrPort {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var sa unix.Sockaddr
	var serr error
	rc.Control(func(fd uintptr) {
		if peer {
			sa, serr = unix.Getpeername(int(fd))
		} else {
			sa, serr = unix.Getsockname(int(fd))
		}
	})
	if serr != nil {
		t.Fatal(serr)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	t.Fatalf("sockaddr %T", sa)
	return netip.AddrPort{}
}

// dialFrom connects a socket of domain bound to local (port 0: any) to
// remote, with the kernel's own calls so that an AF_INET6 socket can
// reach a v4-mapped address.
func dialFrom(t *testing.T, domain int, local, remote netip.AddrPort) (*net.TCPConn, error) {
	t.Helper()
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sa := func(ap netip.AddrPort) unix.Sockaddr {
		if domain == unix.AF_INET {
			return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
		}
		return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	}
	// Two sockets may bind one port when both ask (the neighbour that
	// shares the locked connection's client port).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, sa(local)); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Connect(fd, sa(remote)); err != nil {
		unix.Close(fd)
		t.Fatalf("connect %v: %v", remote, err)
	}
	f := os.NewFile(uintptr(fd), "tcp")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn), nil
}

// listen listens on addr (port 0) for the test.
func listen(t *testing.T, network, addr string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// connect makes a pair from a socket of domain bound to local to ln,
// reached at remote.
func connect(t *testing.T, ln *net.TCPListener, domain int, local, remote netip.AddrPort) (*pair, error) {
	t.Helper()
	a, err := dialFrom(t, domain, local, remote)
	if err != nil {
		return nil, err
	}
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := ln.AcceptTCP()
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	p := &pair{a: a, b: b}
	t.Cleanup(func() { a.Close(); b.Close() })
	p.aConn = Conn{Local: sockAddr(t, a, false), Remote: sockAddr(t, a, true)}
	p.bConn = Conn{Local: sockAddr(t, b, false), Remote: sockAddr(t, b, true)}
	return p, nil
}

// tcpInfo is TCP_INFO of c.
func tcpInfo(t *testing.T, c *net.TCPConn) *unix.TCPInfo {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ti *unix.TCPInfo
	var serr error
	rc.Control(func(fd uintptr) { ti, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if serr != nil {
		t.Fatal(serr)
	}
	return ti
}

const tcpEstablished = 1 // TCP_ESTABLISHED

// payload is n bytes that say where they are in the stream of tag.
func payload(tag byte, seq, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = tag ^ byte(seq*131+i*7)
	}
	return b
}

// roundTrip checks that data flows both ways on p now.
func roundTrip(t *testing.T, p *pair, what string) {
	t.Helper()
	for _, d := range []struct {
		from, to *net.TCPConn
		tag      byte
	}{{p.a, p.b, 'a'}, {p.b, p.a, 'b'}} {
		msg := payload(d.tag, 999, 100)
		if _, err := d.from.Write(msg); err != nil {
			t.Fatalf("%s: write: %v", what, err)
		}
		got := make([]byte, len(msg))
		d.to.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(d.to, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%s: read %q, %v", what, got, err)
		}
	}
}

// nothingArrives checks that c receives nothing for 300 ms.
func nothingArrives(t *testing.T, c *net.TCPConn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	b := make([]byte, 1)
	n, err := c.Read(b)
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: read %d bytes, %v; want nothing within 300 ms", what, n, err)
	}
}

// TestLockTraffic locks one end of a loopback connection and checks, with
// real packets, that nothing is delivered either way while connections
// next to it flow, that neither end is reset, and that after Release the
// data queued meanwhile arrives whole and in order.
func TestLockTraffic(t *testing.T) {
	needLock(t)
	for _, c := range []struct {
		name     string
		network  string
		listenAt string
		domain   int
		addr     netip.Addr
	}{
		{"ipv4", "tcp4", "127.0.0.1:0", unix.AF_INET, netip.MustParseAddr("127.0.0.1")},
		{"ipv6", "tcp6", "[::1]:0", unix.AF_INET6, netip.IPv6Loopback()},
		// A dual-stack listener and an AF_INET6 client on ::ffff:127.0.0.1:
		// both sockets see v4-mapped addresses, the wire plain IPv4.
		{"v4mapped", "tcp", "[::]:0", unix.AF_INET6, netip.MustParseAddr("::ffff:127.0.0.1")},
	} {
		t.Run(c.name, func(t *testing.T) {
			ln := listen(t, c.network, c.listenAt)
			remote := netip.AddrPortFrom(c.addr, uint16(ln.Addr().(*net.TCPAddr).Port))
			// The locked connection from port P, a neighbour from P+1 to
			// the same listener, and one from P to a second listener.
			var locked, next *pair
			for try := 0; locked == nil; try++ {
				if try == 50 {
					t.Fatal("no two free neighbouring ports")
				}
				p, err := connect(t, ln, c.domain, netip.AddrPortFrom(c.addr, 0), remote)
				if err != nil {
					t.Fatal(err)
				}
				n, err := connect(t, ln, c.domain, netip.AddrPortFrom(c.addr, p.aConn.Local.Port()+1), remote)
				if err == nil {
					locked, next = p, n
				}
			}
			ln2 := listen(t, c.network, c.listenAt)
			remote2 := netip.AddrPortFrom(c.addr, uint16(ln2.Addr().(*net.TCPAddr).Port))
			samePort, err := connect(t, ln2, c.domain, netip.AddrPortFrom(c.addr, locked.aConn.Local.Port()), remote2)
			if err != nil {
				t.Fatalf("port %d to a second listener: %v", locked.aConn.Local.Port(), err)
			}
			if c.name == "v4mapped" && !locked.aConn.Local.Addr().Is4In6() {
				t.Fatalf("client sees %v, not a v4-mapped address", locked.aConn.Local)
			}
			t.Logf("locking %v → %v", locked.aConn.Local, locked.aConn.Remote)
			roundTrip(t, locked, "before the lock")

			l, err := Take(NFTables, t.TempDir(), []Conn{locked.aConn})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release()
			// Several writes each way, to check order after the lock.
			const writes, size = 20, 1000
			for i := range writes {
				if _, err := locked.a.Write(payload('a', i, size)); err != nil {
					t.Fatal(err)
				}
				if _, err := locked.b.Write(payload('b', i, size)); err != nil {
					t.Fatal(err)
				}
			}
			nothingArrives(t, locked.b, "a → b under the lock")
			nothingArrives(t, locked.a, "b → a under the lock")
			for _, n := range []struct {
				p    *pair
				what string
			}{{next, "the neighbour from the next port"}, {samePort, "the same client port to another listener"}} {
				roundTrip(t, n.p, n.what+" under the lock")
			}
			for _, end := range []struct {
				c    *net.TCPConn
				what string
			}{{locked.a, "a"}, {locked.b, "b"}} {
				ti := tcpInfo(t, end.c)
				t.Logf("%s under the lock: state %d retransmits %d probes %d backoff %d unacked %d total_retrans %d notsent %d",
					end.what, ti.State, ti.Retransmits, ti.Probes, ti.Backoff, ti.Unacked, ti.Total_retrans, ti.Notsent_bytes)
				if ti.State != tcpEstablished {
					t.Errorf("%s: state %d under the lock, want ESTABLISHED", end.what, ti.State)
				}
				if ti.Retransmits == 0 && ti.Probes == 0 {
					t.Errorf("%s: no retransmission or probe under the lock: were its packets sent at all?", end.what)
				}
			}
			found := false
			ts, err := Tables()
			if err != nil {
				t.Fatal(err)
			}
			for _, tb := range ts {
				if tb.Name == l.Name() {
					found = true
					if tb.Kept || tb.Stale || tb.Pid != os.Getpid() {
						t.Errorf("own lock listed as %+v", tb)
					}
				}
			}
			if !found {
				t.Errorf("Tables does not list %s: %+v", l.Name(), ts)
			}

			if err := l.Release(); err != nil {
				t.Fatal(err)
			}
			for _, d := range []struct {
				to  *net.TCPConn
				tag byte
			}{{locked.b, 'a'}, {locked.a, 'b'}} {
				got := make([]byte, writes*size)
				// The retransmission timer backed off while locked: the
				// next try may be seconds away.
				d.to.SetReadDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.ReadFull(d.to, got); err != nil {
					t.Fatalf("after Release, reading what %c sent: %v", d.tag, err)
				}
				for i := range writes {
					if !bytes.Equal(got[i*size:(i+1)*size], payload(d.tag, i, size)) {
						t.Fatalf("after Release, write %d of %c arrived wrong", i, d.tag)
					}
				}
			}
			roundTrip(t, locked, "after Release")
			for _, end := range []*net.TCPConn{locked.a, locked.b} {
				if ti := tcpInfo(t, end); ti.State != tcpEstablished {
					t.Errorf("state %d after Release", ti.State)
				}
			}
		})
	}
}
