package files

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// The UDP checksum of a packet udpPacket builds verifies: the one's
// complement sum over the pseudo-header and the datagram, its checksum
// included, is all ones; for IPv4 and IPv6, odd and even lengths.
func TestUDPPacketChecksum(t *testing.T) {
	for _, c := range []struct{ src, dst string }{
		{"127.0.0.2:5353", "127.0.0.1:53"},
		{"[::1]:40000", "[2001:db8::7]:9"},
	} {
		src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
		for _, data := range [][]byte{[]byte("odd"), []byte("even"), make([]byte, 60000)} {
			pkt, _ := udpPacket(src, dst, data)
			hdr := 20
			if src.Addr().Is6() {
				hdr = 40
			}
			udp := pkt[hdr:]
			if got := binary.BigEndian.Uint16(udp[4:]); int(got) != 8+len(data) {
				t.Errorf("%s: UDP length %d, want %d", c.src, got, 8+len(data))
			}
			pseudo := append(append(src.Addr().AsSlice(), dst.Addr().AsSlice()...), 0, 17, byte(len(udp)>>8), byte(len(udp)))
			if sum := fold(checksum(udp, checksum(pseudo, 0))); sum != 0xffff {
				t.Errorf("%s → %s, %d bytes: checksum does not verify (sum %#x)", c.src, c.dst, len(data), sum)
			}
		}
	}
}
