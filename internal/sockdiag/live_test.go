package sockdiag

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLiveHost builds a world in cryo's own network namespace, among
// whatever else runs there, and finds every socket of it by inode.
func TestLiveHost(t *testing.T) {
	w, err := buildWorld(t.TempDir(), uint16(os.Getpid()))
	if needsRoot(err) {
		t.Skipf("needs root: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	c, err := Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkWorld(t, &w.facts, query(t, c))

	// The one-shot lookups by inode find the same sockets.
	us, err := UnixSockets(nil)
	if err != nil {
		t.Fatal(err)
	}
	is, err := InetSockets(nil, ExtAll)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := PacketSockets(nil)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := NetlinkSockets(nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, ino := range w.facts.Inodes {
		var found bool
		switch family(name) {
		case "unix":
			found = us[ino] != nil && us[ino].Inode == ino
		case "tcp4", "tcp6", "udp4", "udp6", "udplite4":
			found = is[ino] != nil && is[ino].Inode == ino
		case "raw4":
			found = is[ino] != nil || !rawDiag(t)
		case "packet":
			found = ps[ino] != nil && ps[ino].Inode == ino
		case "netlink":
			found = ns[ino] != nil && ns[ino].Inode == ino
		default:
			continue
		}
		if !found {
			t.Errorf("%s (inode %d) not found by inode", name, ino)
		}
	}
	if _, ok := is[0]; ok {
		t.Error("an inet entry without an inode (TIME_WAIT) is in the map")
	}
}

// family is the dump a world socket's name ("tcp4-client") belongs to,
// or "" for an inode that is not a socket's.
func family(name string) string {
	if name == "unix-listener-file" {
		return ""
	}
	f, _, _ := strings.Cut(name, "-")
	return f
}

// TestLiveNetns builds a world in a fresh network namespace: a Conn dialled
// there sees exactly the world, and one in cryo's namespace none of it.
func TestLiveNetns(t *testing.T) {
	var w *world
	ns, err := inNewNetns(func() error {
		var err error
		w, err = buildWorld(t.TempDir(), 1)
		return err
	})
	if needsRoot(err) {
		t.Skipf("needs root: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer w.close()
	c, err := Dial(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in := query(t, c)
	checkWorld(t, &w.facts, in)

	// Only the world is in there: 10 unix sockets; netlink adds the
	// kernel's own (port 0).
	if len(in.Unix) != 10 || len(in.Packet) != 2 {
		t.Errorf("%d unix and %d packet sockets in the new namespace, want 10 and 2", len(in.Unix), len(in.Packet))
	}
	var st unix.Stat_t
	if err := unix.Fstat(c.fd, &st); err != nil {
		t.Fatal(err)
	}
	for _, n := range in.Netlink {
		if n.PortID == 0 || n.Inode == uint32(st.Ino) { // the kernel's, or c itself
			continue
		}
		if n.Inode != w.facts.Inodes["netlink-route"] && n.Inode != w.facts.Inodes["netlink-generic"] {
			t.Errorf("a netlink socket not of the world: %+v", n)
		}
	}

	hc, err := Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	host := query(t, hc)
	inodes := map[uint32]string{}
	for name, ino := range w.facts.Inodes {
		if family(name) != "" {
			inodes[ino] = name
		}
	}
	seen := func(what string, ino uint32) {
		if name, ok := inodes[ino]; ok && ino != 0 {
			t.Errorf("%s of the new namespace (inode %d) seen from cryo's as %s", name, ino, what)
		}
	}
	for _, u := range host.Unix {
		seen("unix", u.Inode)
	}
	for d, s := range host.Inet {
		for _, i := range s {
			seen(d, i.Inode)
		}
	}
	for _, p := range host.Packet {
		seen("packet", p.Inode)
	}
	for _, n := range host.Netlink {
		seen("netlink", n.Inode)
	}

	// The one-shot functions take the namespace too.
	us, err := UnixSockets(ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(us) != 10 || us[w.facts.Inodes["unix-listener"]] == nil {
		t.Errorf("UnixSockets(ns): %d sockets", len(us))
	}
	is, err := InetSockets(ns, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := is[w.facts.Inodes["tcp6-mapped"]]; s == nil || s.TCPInfo != nil || s.HasTOS {
		t.Errorf("InetSockets(ns, 0): tcp6-mapped %+v (no extension was asked for)", s)
	}

	// Raw sockets: listed if this kernel has raw_diag, refused with
	// ErrNotSupported otherwise.
	raw, err := c.Inet(unix.AF_INET, unix.IPPROTO_RAW, 0)
	if rawDiag(t) {
		if err != nil {
			t.Fatal(err)
		}
		r := find(t, raw, func(s *Inet) uint32 { return s.Inode }, "raw4-icmp", w.facts.Inodes["raw4-icmp"])
		if r != nil && r.Protocol != unix.IPPROTO_ICMP {
			t.Errorf("raw socket of protocol %d, want ICMP", r.Protocol)
		}
	} else if !errors.Is(err, ErrNotSupported) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("raw dump without raw_diag: %v, want ErrNotSupported and ENOENT", err)
	}
	// The kernel's answer ended that reply: the Conn still works.
	if _, err := c.Unix(); err != nil {
		t.Errorf("after the refused raw dump: %v", err)
	}
}

// rawDiag says whether this kernel has raw_diag, from its config. Without
// a config to read, it must be there: a broken query then fails the test
// instead of hiding as "not supported".
func rawDiag(t *testing.T) bool {
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return true
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return !bytes.Contains(cfg, []byte("\n# CONFIG_INET_RAW_DIAG is not set\n"))
}

// TestDialNotNetns: a file that is not a network namespace is refused by
// setns, and no thread is left behind (TestMain checks).
func TestDialNotNetns(t *testing.T) {
	f, err := os.Open("/proc/self/ns/uts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := Dial(f)
	if err == nil {
		c.Close()
		t.Fatal("Dial accepted a UTS namespace")
	}
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("Dial(uts namespace): %v, want EINVAL", err)
	}
}

// TestConnClosed: a closed Conn says so, and closing twice is harmless.
func TestConnClosed(t *testing.T) {
	c, err := Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.Unix(); !errors.Is(err, errClosed) {
		t.Errorf("query on a closed Conn: %v", err)
	}
}
