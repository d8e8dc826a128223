package criurpc

import (
	"errors"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/encoding/protowire"
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
		{"bool set", &rpc.CriuOpts{TcpEstablished: ptr(true)}, "tcp_established"},
		{"string set", &rpc.CriuOpts{Root: ptr("/x")}, "root"},
		{"list", &rpc.CriuOpts{External: []string{"a"}}, "external"},
		{"enum not default", &rpc.CriuOpts{NetworkLock: rpc.CriuNetworkLockMethod_NFTABLES.Enum()}, "network_lock"},
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
