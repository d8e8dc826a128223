package files

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// The addresses of an inet_sk_entry are untrusted input: restore turns
// them into a sockaddr only if they make one of the entry's family.
func TestInetImageAddr(t *testing.T) {
	for _, a := range []string{"127.0.0.1:80", "[::1]:8080", "[::ffff:10.1.2.3]:1", "0.0.0.0:0"} {
		ap := netip.MustParseAddrPort(a)
		if got := imageAddr(addrWords(ap.Addr()), uint32(ap.Port())); got != ap {
			t.Errorf("%s comes back as %s", ap, got)
		}
	}
	v4 := addrWords(netip.MustParseAddr("127.0.0.1"))
	v6 := addrWords(netip.MustParseAddr("::1"))
	for _, tc := range []struct {
		name   string
		family int
		words  []uint32
		port   uint32
		size   int // 0: refused
	}{
		{"v4", unix.AF_INET, v4, 80, 16},
		{"v6", unix.AF_INET6, v6, 80, 28},
		{"v6 words for v4", unix.AF_INET, v6, 80, 0},
		{"v4 words for v6", unix.AF_INET6, v4, 80, 0},
		{"no words", unix.AF_INET, nil, 80, 0},
		{"three words", unix.AF_INET6, v6[:3], 80, 0},
		{"port beyond 16 bits", unix.AF_INET, v4, 1 << 16, 0},
	} {
		b, err := entryAddr(tc.family, tc.words, tc.port)
		if tc.size == 0 {
			if err == nil {
				t.Errorf("%s: accepted as %x", tc.name, b)
			}
			continue
		}
		if err != nil || len(b) != tc.size {
			t.Errorf("%s: %x, %v; want %d bytes", tc.name, b, err, tc.size)
			continue
		}
		if b[2] != 0 || b[3] != 80 {
			t.Errorf("%s: port bytes %x, want network order", tc.name, b[2:4])
		}
	}
}
