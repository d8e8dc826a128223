package sockdiag

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGolden parses the captured replies and checks them against the
// facts the capture knew about its world, as the live tests check the
// kernel's answers.
func TestGolden(t *testing.T) {
	var f facts
	if err := json.Unmarshal(readTestdata(t, "world.json"), &f); err != nil {
		t.Fatal(err)
	}
	s := &snapshot{Inet: map[string][]Inet{}}
	var err error
	if s.Unix, err = ParseUnix(readTestdata(t, "unix.reply")); err != nil {
		t.Fatal(err)
	}
	for _, d := range inetDumps {
		if s.Inet[d.name], err = ParseInet(readTestdata(t, d.name+".reply"), d.protocol); err != nil {
			t.Fatal(err)
		}
	}
	if s.Packet, err = ParsePacket(readTestdata(t, "packet.reply")); err != nil {
		t.Fatal(err)
	}
	if s.Netlink, err = ParseNetlink(readTestdata(t, "netlink.reply")); err != nil {
		t.Fatal(err)
	}
	checkWorld(t, &f, s)
	// The world and nothing else: its namespace was new.
	if len(s.Unix) != 10 || len(s.Packet) != 2 || len(s.Inet["udp4"]) != 2 || len(s.Inet["udplite4"]) != 1 {
		t.Errorf("%d unix, %d packet, %d udp4, %d udplite4 sockets", len(s.Unix), len(s.Packet), len(s.Inet["udp4"]), len(s.Inet["udplite4"]))
	}
}

// TestGoldenRaw: this kernel has no raw_diag; its refusal comes as the
// errno of NLMSG_DONE, and is an error of the kernel's, not a malformed
// reply.
func TestGoldenRaw(t *testing.T) {
	_, err := ParseInet(readTestdata(t, "raw4.reply"), unix.IPPROTO_RAW)
	if !errors.Is(err, unix.ENOENT) || errors.Is(err, ErrMalformed) {
		t.Errorf("raw4.reply: %v, want ENOENT", err)
	}
}

// goldenReplies are the captured replies and their parsers, as the
// truncation test and the fuzzers take them.
var goldenReplies = []struct {
	file  string
	parse func([]byte) (int, error)
}{
	{"unix.reply", func(b []byte) (int, error) { s, err := ParseUnix(b); return len(s), err }},
	{"tcp4.reply", func(b []byte) (int, error) { s, err := ParseInet(b, unix.IPPROTO_TCP); return len(s), err }},
	{"tcp6.reply", func(b []byte) (int, error) { s, err := ParseInet(b, unix.IPPROTO_TCP); return len(s), err }},
	{"udp4.reply", func(b []byte) (int, error) { s, err := ParseInet(b, unix.IPPROTO_UDP); return len(s), err }},
	{"udp6.reply", func(b []byte) (int, error) { s, err := ParseInet(b, unix.IPPROTO_UDP); return len(s), err }},
	{"udplite4.reply", func(b []byte) (int, error) { s, err := ParseInet(b, unix.IPPROTO_UDPLITE); return len(s), err }},
	{"packet.reply", func(b []byte) (int, error) { s, err := ParsePacket(b); return len(s), err }},
	{"netlink.reply", func(b []byte) (int, error) { s, err := ParseNetlink(b); return len(s), err }},
}

// TestGoldenTruncated cuts every captured reply at every byte: each
// prefix must fail as a *ParseError at an offset within the prefix, and
// a prefix that ends between messages must fail exactly at its end.
func TestGoldenTruncated(t *testing.T) {
	for _, g := range goldenReplies {
		b := readTestdata(t, g.file)
		bounds := map[int]bool{}
		for off := 0; off < len(b); {
			bounds[off] = true
			off += nlmsgAlign(int(binary.NativeEndian.Uint32(b[off:])))
		}
		for n := 0; n < len(b); n++ {
			_, err := g.parse(b[:n])
			var pe *ParseError
			if !errors.As(err, &pe) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s cut at %d: %v, want a *ParseError", g.file, n, err)
			}
			if pe.Offset < 0 || pe.Offset > int64(n) {
				t.Fatalf("%s cut at %d: error at offset %d", g.file, n, pe.Offset)
			}
			if bounds[n] && (pe.Offset != int64(n) || !strings.Contains(err.Error(), "before NLMSG_DONE")) {
				t.Errorf("%s cut at message boundary %d: %v", g.file, n, err)
			}
		}
	}
}
