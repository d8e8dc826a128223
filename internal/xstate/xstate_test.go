package xstate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/kabi"
	"golang.org/x/sys/unix"
)

// A buffer taken from a real thread must survive Encode then Decode bit for
// bit: any register lost here is a register a restored program loses.
func TestRoundTripLiveThread(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid, err := startStopped(t)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, kabi.XstateMaxSize)
	n, err := kabi.GetRegset(pid, kabi.NT_X86_XSTATE, buf)
	if err != nil {
		t.Fatal(err)
	}
	raw := buf[:n]
	e, err := Encode(raw)
	if err != nil {
		t.Fatal(err)
	}
	// Decode into a zeroed template of the same size but with the kernel's
	// sw bytes, as restore does with a fresh thread's buffer.
	tmpl := make([]byte, len(raw))
	copy(tmpl[464:512], raw[464:512])
	out, err := Decode(e, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	bv := e.GetXsave().GetXstateBv()
	if !bytes.Equal(out[:416], raw[:416]) {
		t.Errorf("legacy area differs")
	}
	if bv&FeatureAVX != 0 && !bytes.Equal(out[576:832], raw[576:832]) {
		t.Errorf("ymm upper halves differ")
	}
}

func startStopped(t *testing.T) (int, error) {
	var attr unix.SysProcAttr
	attr.Ptrace = true
	pid, err := forkSleep(&attr)
	if err != nil {
		return 0, err
	}
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
	})
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
		return 0, err
	}
	return pid, nil
}

// An image whose threads used AVX-512 must be refused by a CPU (or kernel)
// that only saves x87/SSE/AVX, with ErrCPU, not loaded half-way.
func TestDecodeRefusesMissingFeatures(t *testing.T) {
	raw := make([]byte, 832)
	binary.LittleEndian.PutUint64(raw[512:], FeatureX87|FeatureSSE|FeatureAVX|FeatureOpmask)
	e, err := Encode(raw)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := make([]byte, 832)
	binary.LittleEndian.PutUint64(tmpl[xcr0Off:], FeatureX87|FeatureSSE|FeatureAVX)
	_, err = Decode(e, tmpl)
	if !errors.Is(err, ErrCPU) {
		t.Fatalf("Decode = %v, want ErrCPU", err)
	}
	if !strings.Contains(err.Error(), "0x20") {
		t.Errorf("error %q does not name the missing component 0x20", err)
	}
}

// Components cryo cannot carry fail the dump instead of being dropped, as
// something cryo does not support yet.
func TestEncodeRefusesUnknownComponents(t *testing.T) {
	raw := make([]byte, 832)
	binary.LittleEndian.PutUint64(raw[512:], FeatureX87|1<<17) // AMX tile data
	if _, err := Encode(raw); !errors.Is(err, errs.ErrNotSupported) {
		t.Fatalf("Encode of an xstate with AMX in use: %v, want ErrNotSupported", err)
	}
}
