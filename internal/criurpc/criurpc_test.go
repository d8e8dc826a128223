package criurpc

import (
	"errors"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/cryo-project/cryo/internal/netlock"
)

func TestCheckOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    *rpc.CriuOpts
		bad  string // "" when accepted
	}{
		{"handled", &rpc.CriuOpts{ImagesDirFd: ptr(int32(5)), Pid: ptr(int32(7)), LeaveRunning: ptr(true), LogLevel: ptr(int32(4))}, ""},
		{"defaults", &rpc.CriuOpts{ImagesDirFd: ptr(int32(-1)), CpuCap: ptr(uint32(0xffffffff)), GhostLimit: ptr(uint32(0x100000)),
			NetworkLock: rpc.CriuNetworkLockMethod_IPTABLES.Enum(), PreDumpMode: rpc.CriuPreDumpMode_SPLICE.Enum(), TcpEstablished: ptr(false), Root: ptr("")}, ""},
		{"tcp", &rpc.CriuOpts{TcpEstablished: ptr(true), NetworkLock: rpc.CriuNetworkLockMethod_SKIP.Enum()}, ""},
		{"bool set", &rpc.CriuOpts{TrackMem: ptr(true)}, "track_mem"},
		{"string set", &rpc.CriuOpts{Root: ptr("/x")}, "root"},
		{"list", &rpc.CriuOpts{External: []string{"a"}}, "external"},
		{"enum not default", &rpc.CriuOpts{PreDumpMode: rpc.CriuPreDumpMode_VM_READ.Enum()}, "pre_dump_mode"},
		{"message", &rpc.CriuOpts{Ps: &rpc.CriuPageServerInfo{}}, "ps"},
	} {
		if tc.o.ImagesDirFd == nil {
			tc.o.ImagesDirFd = ptr(int32(3)) // required
		}
		err := checkOptions(tc.o, dumpOptions)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.bad != "" && (!errors.Is(err, ErrOption) || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s: %v, want ErrOption naming %s", tc.name, err, tc.bad)
		}
	}
}

// TestNetworkLock: CRIU's network_lock values, as netlock names them.
func TestNetworkLock(t *testing.T) {
	for _, tc := range []struct {
		o    *rpc.CriuOpts
		want netlock.Method
	}{
		{&rpc.CriuOpts{}, netlock.NFTables},
		{&rpc.CriuOpts{NetworkLock: rpc.CriuNetworkLockMethod_IPTABLES.Enum()}, netlock.IPTables},
		{&rpc.CriuOpts{NetworkLock: rpc.CriuNetworkLockMethod_NFTABLES.Enum()}, netlock.NFTables},
		{&rpc.CriuOpts{NetworkLock: rpc.CriuNetworkLockMethod_SKIP.Enum()}, netlock.Skip},
	} {
		if got, err := networkLock(tc.o); err != nil || got != tc.want {
			t.Errorf("%v: %q, %v; want %q", tc.o.NetworkLock, got, err, tc.want)
		}
	}
	if _, err := networkLock(&rpc.CriuOpts{NetworkLock: rpc.CriuNetworkLockMethod(9).Enum()}); !errors.Is(err, ErrOption) {
		t.Errorf("network_lock 9: %v, want ErrOption", err)
	}
}

// A field of a newer rpc.proto than cryo's is refused by number.
func TestCheckOptionsUnknownField(t *testing.T) {
	b := protowire.AppendTag(nil, 1, protowire.VarintType) // images_dir_fd, required
	b = protowire.AppendVarint(b, 3)
	b = protowire.AppendTag(b, 200, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	o := &rpc.CriuOpts{}
	if err := o.UnmarshalVT(b); err != nil {
		t.Fatal(err)
	}
	if err := checkOptions(o, dumpOptions); !errors.Is(err, ErrOption) || !strings.Contains(err.Error(), "field 200") {
		t.Errorf("unknown field 200: %v", err)
	}
}
