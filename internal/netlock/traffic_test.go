package netlock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
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
	a, b  *net.TCPConn // a dialed, b accepted
	aConn Conn         // a's end as its socket sees it
	bConn Conn
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

// expectBlocked checks that p flows, then not under a lock, then again
// after Release with nothing lost; lockFn takes the lock.
func expectBlocked(t *testing.T, p *pair, take func() (*Lock, error)) {
	t.Helper()
	roundTrip(t, p, "before the lock")
	l, err := take()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	msgA, msgB := payload('a', 1, 3000), payload('b', 1, 3000)
	if _, err := p.a.Write(msgA); err != nil {
		t.Fatal(err)
	}
	if _, err := p.b.Write(msgB); err != nil {
		t.Fatal(err)
	}
	nothingArrives(t, p.b, "a → b under the lock")
	nothingArrives(t, p.a, "b → a under the lock")
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		to  *net.TCPConn
		msg []byte
	}{{p.b, msgA}, {p.a, msgB}} {
		got := make([]byte, len(d.msg))
		d.to.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(d.to, got); err != nil || !bytes.Equal(got, d.msg) {
			t.Fatalf("after Release: %v (equal %v)", err, bytes.Equal(got, d.msg))
		}
	}
	roundTrip(t, p, "after Release")
}

// TestBothEnds: a loopback connection between two processes of one tree
// is locked with both its ends listed (the same tuples twice).
func TestBothEnds(t *testing.T) {
	needLock(t)
	ln := listen(t, "tcp4", "127.0.0.1:0")
	p, err := connect(t, ln, unix.AF_INET, netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort(ln.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	expectBlocked(t, p, func() (*Lock, error) { return Take(IPTables, "", []Conn{p.aConn, p.bConn}) })
}

// TestTenThousand: one real connection among 10,000 locked ones is
// blocked, and a neighbour that is not in the set flows.
func TestTenThousand(t *testing.T) {
	needLock(t)
	ln := listen(t, "tcp4", "127.0.0.1:0")
	remote := netip.MustParseAddrPort(ln.Addr().String())
	p, err := connect(t, ln, unix.AF_INET, netip.MustParseAddrPort("127.0.0.1:0"), remote)
	if err != nil {
		t.Fatal(err)
	}
	free, err := connect(t, ln, unix.AF_INET, netip.MustParseAddrPort("127.0.0.1:0"), remote)
	if err != nil {
		t.Fatal(err)
	}
	conns := append(fakeConns(5000), p.aConn)
	conns = append(conns, fakeConns(4999)...)
	expectBlocked(t, p, func() (*Lock, error) {
		l, err := Take(NFTables, "", conns)
		if err == nil {
			roundTrip(t, free, "a connection outside the 10,000")
		}
		return l, err
	})
}

// TestLockStream takes the lock while data streams one way and the
// receiver reads it, so that the lock lands on segments not yet acked:
// the receiver then sees nothing new, the sender retransmits, and after
// Release the stream continues from where it stopped, every byte in
// order.
func TestLockStream(t *testing.T) {
	needLock(t)
	ln := listen(t, "tcp4", "127.0.0.1:0")
	p, err := connect(t, ln, unix.AF_INET, netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort(ln.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	const total = 64 << 20
	stream := func(off, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte((off+i)*7 + (off+i)>>11)
		}
		return b
	}
	werr := make(chan error, 1)
	go func() {
		var err error
		for off := 0; off < total && err == nil; off += 1024 {
			_, err = p.a.Write(stream(off, 1024))
		}
		werr <- err
	}()
	// The reader reads all along and says how far it got.
	var mu sync.Mutex
	got := make([]byte, 0, total)
	rerr := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		p.b.SetReadDeadline(time.Now().Add(2 * time.Minute))
		for {
			n, err := p.b.Read(buf)
			mu.Lock()
			got = append(got, buf[:n]...)
			done := len(got) == total
			mu.Unlock()
			if err != nil || done {
				rerr <- err
				return
			}
		}
	}()
	received := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	for received() < 1<<20 {
		time.Sleep(time.Millisecond)
	}
	l, err := Take(NFTables, "", []Conn{p.aConn})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	// What the kernel took in before the lock is still read; then the
	// stream must stop.
	at := received()
	for deadline := time.Now().Add(5 * time.Second); ; {
		time.Sleep(300 * time.Millisecond)
		now := received()
		if now == at {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream did not stop under the lock (%d bytes, then %d)", at, now)
		}
		at = now
	}
	time.Sleep(500 * time.Millisecond)
	ti := tcpInfo(t, p.a)
	t.Logf("stopped at %d bytes; sender: state %d retransmits %d probes %d backoff %d unacked %d total_retrans %d lost %d",
		at, ti.State, ti.Retransmits, ti.Probes, ti.Backoff, ti.Unacked, ti.Total_retrans, ti.Lost)
	if ti.State != tcpEstablished || tcpInfo(t, p.b).State != tcpEstablished {
		t.Fatalf("not ESTABLISHED under the lock: %d, %d", ti.State, tcpInfo(t, p.b).State)
	}
	if ti.Retransmits == 0 && ti.Probes == 0 {
		t.Error("the sender neither retransmitted nor probed under the lock")
	}
	if received() != at {
		t.Fatal("data arrived under the lock")
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := <-rerr; err != nil {
		t.Fatalf("after Release, at %d of %d bytes: %v", received(), total, err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	for off := 0; off < total; off += 1 << 20 {
		if !bytes.Equal(got[off:off+1<<20], stream(off, 1<<20)) {
			t.Fatalf("the stream differs in the MiB at %d", off)
		}
	}
}
