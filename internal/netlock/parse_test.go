package netlock

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
)

func TestParseMethod(t *testing.T) {
	for in, want := range map[string]Method{"": NFTables, "nftables": NFTables, "iptables": IPTables, "skip": Skip} {
		if m, err := ParseMethod(in); err != nil || m != want {
			t.Errorf("ParseMethod(%q) = %q, %v", in, m, err)
		}
	}
	if _, err := ParseMethod("nft"); err == nil {
		t.Error("ParseMethod took nft")
	}
	if _, err := Take("nft", "", fakeConns(1)); err == nil {
		t.Error("Take took method nft")
	}
}

// TestKeys: the set keys are saddr . sport . daddr . dport with ports
// padded to 32 bits, both directions of each connection once, v4-mapped
// addresses as IPv4.
func TestKeys(t *testing.T) {
	c := Conn{Local: netip.MustParseAddrPort("10.0.0.2:45678"), Remote: netip.MustParseAddrPort("10.0.0.1:5432")}
	mapped := Conn{Local: netip.MustParseAddrPort("[::ffff:10.0.0.2]:45678"), Remote: netip.MustParseAddrPort("[::ffff:10.0.0.1]:5432")}
	back := Conn{Local: c.Remote, Remote: c.Local} // the other end, also in the tree
	v6 := Conn{Local: netip.MustParseAddrPort("[2001:db8::2%eth0]:1"), Remote: netip.MustParseAddrPort("[2001:db8::1]:65535")}
	v4, v6k, err := keys([]Conn{c, mapped, back, v6})
	if err != nil {
		t.Fatal(err)
	}
	want4 := []string{
		"0a000002" + "b26e0000" + "0a000001" + "15380000",
		"0a000001" + "15380000" + "0a000002" + "b26e0000",
	}
	want6 := []string{
		"20010db8000000000000000000000002" + "00010000" + "20010db8000000000000000000000001" + "ffff0000",
		"20010db8000000000000000000000001" + "ffff0000" + "20010db8000000000000000000000002" + "00010000",
	}
	check := func(got [][]byte, want []string, klen int) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%d keys, want %d: %x", len(got), len(want), got)
		}
		for i, w := range want {
			if hex.EncodeToString(got[i]) != w || len(got[i]) != klen {
				t.Errorf("key %d: %x, want %s", i, got[i], w)
			}
		}
	}
	check(v4, want4, key4Len)
	check(v6k, want6, key6Len)
	for _, bad := range []Conn{
		{Local: netip.MustParseAddrPort("10.0.0.2:1"), Remote: netip.MustParseAddrPort("[2001:db8::1]:2")},
		{Local: netip.MustParseAddrPort("[::ffff:10.0.0.2]:1"), Remote: netip.MustParseAddrPort("[2001:db8::1]:2")},
		{Remote: netip.MustParseAddrPort("10.0.0.1:2")},
	} {
		if _, _, err := keys([]Conn{bad}); err == nil {
			t.Errorf("keys took %v", bad)
		}
	}
}

func TestParseName(t *testing.T) {
	o, n, err := parseName("cryo-lock-1234-987654-3")
	if err != nil || o != (owner{pid: 1234, start: 987654}) || n != 3 {
		t.Errorf("parseName: %+v %d %v", o, n, err)
	}
	if got := (owner{pid: 1234, start: 987654}).name(3); got != "cryo-lock-1234-987654-3" {
		t.Errorf("name: %s", got)
	}
	for _, bad := range []string{
		"", "cryo-lock-", "cryo-lock-1-2", "cryo-lock-1-2-3-4", "CRIU-1", "cryo-lock-01-2-3",
		"cryo-lock-+1-2-3", "cryo-lock-0-2-3", "cryo-lock-99999999-2-3", "cryo-lock-1-2-x", "cryo-lock-1--3",
	} {
		if _, _, err := parseName(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("parseName(%q): %v", bad, err)
		}
	}
}

var recordCases = []struct {
	in   string
	want record
	bad  bool
}{
	{`{"images_dir":"/var/lib/img","kept":true}` + "\n", record{ImagesDir: "/var/lib/img", Kept: true}, false},
	{`{"images_dir":"","kept":false}`, record{}, false},
	{`{"images_dir":"/a\n\"b"}`, record{ImagesDir: "/a\n\"b"}, false},
	{``, record{}, true},
	{`{"images_dir":"/a","kept":true}{}`, record{}, true},
	{`{"images_dir":"/a","kept":"yes"}`, record{}, true},
	{`{"images_dir":"/a","owner":1}`, record{}, true},
	{`{"images_dir":"/a"`, record{}, true},
	{`[]`, record{}, true},
}

func TestParseRecord(t *testing.T) {
	for _, c := range recordCases {
		r, err := parseRecord([]byte(c.in))
		if c.bad {
			if !errors.Is(err, ErrBadRecord) {
				t.Errorf("parseRecord(%q): %+v, %v; want ErrBadRecord", c.in, r, err)
			}
			continue
		}
		if err != nil || r != c.want {
			t.Errorf("parseRecord(%q): %+v, %v", c.in, r, err)
		}
	}
	if _, err := parseRecord(bytes.Repeat([]byte(" "), maxRecord+1)); !errors.Is(err, ErrBadRecord) {
		t.Errorf("a record over the bound: %v", err)
	}
}

func FuzzParseRecord(f *testing.F) {
	for _, c := range recordCases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRecord(b)
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("error without ErrBadRecord: %v", err)
			}
			return
		}
		// What parses is what writeRecord would write again.
		if r2, err := parseRecord(mustJSON(t, r)); err != nil || r2 != r {
			t.Fatalf("round trip: %+v → %+v, %v", r, r2, err)
		}
	})
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{"cryo-lock-1234-987654-3", "cryo-lock-1-2", "cryo-lock-01-2-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, n, err := parseName(s)
		if err != nil {
			if !errors.Is(err, ErrBadName) {
				t.Fatalf("error without ErrBadName: %v", err)
			}
			return
		}
		// One lock, one name.
		if o.name(n) != s {
			t.Fatalf("%q parses as %+v %d, which is named %q", s, o, n, o.name(n))
		}
	})
}

func mustJSON(t *testing.T, r record) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
