package procfs

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The sets read from status must agree with capget(2) and be consistent:
// effective within permitted, ambient within permitted and inheritable.
func TestOwnCaps(t *testing.T) {
	c, err := OwnCaps()
	if err != nil {
		t.Fatal(err)
	}
	if c.Eff&^c.Prm != 0 || c.Amb&^(c.Prm&c.Inh) != 0 {
		t.Fatalf("inconsistent sets: %+v", c)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	if eff := uint64(data[0].Effective) | uint64(data[1].Effective)<<32; eff != c.Eff {
		t.Fatalf("CapEff %#x from status, %#x from capget", c.Eff, eff)
	}
}
