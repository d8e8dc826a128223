// Package xstate converts a thread's extended FPU state between the raw
// XSAVE buffer that PTRACE_GETREGSET(NT_X86_XSTATE) returns and CRIU's
// user_x86_fpregs_entry, and checks that a CPU can take a saved state.
//
// # Layout
//
// The ptrace buffer is in the standard (non-compacted) XSAVE format:
//
//	0     legacy FXSAVE area (x87, SSE: 512 bytes)
//	464     XCR0, as the kernel notes it for ptrace (user_xstateregs)
//	512   XSAVE header: xstate_bv (components not in init state), xcomp_bv
//	576   component 2, AVX: upper halves of ymm0-15 (256 bytes)
//	...   components 5-7 (AVX-512) and 9 (PKRU) at offsets CPUID leaf 0xD
//	      gives for this CPU
//
// Offsets beyond the legacy area are the CPU's: they are read with CPUID,
// never assumed.
package xstate

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"

	"github.com/cryo-project/cryo/internal/errs"
)

func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// Component bits of XCR0 / xstate_bv.
const (
	FeatureX87      = 1 << 0
	FeatureSSE      = 1 << 1
	FeatureAVX      = 1 << 2
	FeatureOpmask   = 1 << 5
	FeatureZMMHi256 = 1 << 6
	FeatureHi16ZMM  = 1 << 7
	FeaturePKRU     = 1 << 9
)

// Supported are the components cryo can carry in an image.
const Supported = FeatureX87 | FeatureSSE | FeatureAVX | FeatureOpmask | FeatureZMMHi256 | FeatureHi16ZMM | FeaturePKRU

// ErrCPU reports a saved state that this CPU cannot hold.
var ErrCPU = errors.New("CPU lacks features the image uses")

const (
	fxsaveSize = 512
	xcr0Off    = 464 // ptrace stores XCR0 in the first word of sw_reserved (user_xstateregs.xstate_fx_sw[0])
	headerOff  = 512
	headerSize = 64
	ymmhOff    = 576
	ymmhSize   = 256
)

// component returns the offset and size of an extended component on this CPU.
func component(n uint32) (off, size int) {
	eax, ebx, _, _ := cpuid(0xd, n)
	return int(ebx), int(eax)
}

// HostFeatures returns XCR0 as the kernel reports it for ptrace: the
// components this CPU and kernel save for user space.
func HostFeatures() uint64 {
	eax, _, _, edx := cpuid(0xd, 0)
	return uint64(eax) | uint64(edx)<<32
}

func u32s(b []byte) []uint32 {
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[i*4:])
	}
	return out
}

func u64s(b []byte) []uint64 {
	out := make([]uint64, len(b)/8)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[i*8:])
	}
	return out
}

func putU32s(b []byte, v []uint32) {
	for i := range v {
		binary.LittleEndian.PutUint32(b[i*4:], v[i])
	}
}

func putU64s(b []byte, v []uint64) {
	for i := range v {
		binary.LittleEndian.PutUint64(b[i*8:], v[i])
	}
}

// Encode turns a raw XSAVE buffer into CRIU's message. Components in use that
// cryo cannot carry make it fail rather than silently lose registers.
func Encode(raw []byte) (*x86.UserX86FpregsEntry, error) {
	if len(raw) < fxsaveSize {
		return nil, fmt.Errorf("xstate buffer of %d bytes is shorter than FXSAVE", len(raw))
	}
	le := binary.LittleEndian
	e := &x86.UserX86FpregsEntry{
		Cwd:       proto.Uint32(uint32(le.Uint16(raw[0:]))),
		Swd:       proto.Uint32(uint32(le.Uint16(raw[2:]))),
		Twd:       proto.Uint32(uint32(le.Uint16(raw[4:]))),
		Fop:       proto.Uint32(uint32(le.Uint16(raw[6:]))),
		Rip:       proto.Uint64(le.Uint64(raw[8:])),
		Rdp:       proto.Uint64(le.Uint64(raw[16:])),
		Mxcsr:     proto.Uint32(le.Uint32(raw[24:])),
		MxcsrMask: proto.Uint32(le.Uint32(raw[28:])),
		StSpace:   u32s(raw[32:160]),
		XmmSpace:  u32s(raw[160:416]),
		Padding:   u32s(raw[416:512]),
	}
	if len(raw) < headerOff+headerSize {
		return e, nil // FXSAVE only
	}
	bv := le.Uint64(raw[headerOff:])
	if extra := bv &^ Supported; extra != 0 {
		return nil, fmt.Errorf("thread uses xstate components %#x that cryo cannot save yet: %w", extra, errs.ErrNotSupported)
	}
	xs := &x86.UserX86XsaveEntry{XstateBv: proto.Uint64(bv)}
	if len(raw) >= ymmhOff+ymmhSize {
		xs.YmmhSpace = u32s(raw[ymmhOff : ymmhOff+ymmhSize])
	}
	get := func(n uint32) []byte {
		off, size := component(n)
		if off == 0 || off+size > len(raw) {
			return nil
		}
		return raw[off : off+size]
	}
	if bv&FeatureOpmask != 0 {
		xs.OpmaskReg = u64s(get(5))
	}
	if bv&FeatureZMMHi256 != 0 {
		xs.ZmmUpper = u64s(get(6))
	}
	if bv&FeatureHi16ZMM != 0 {
		xs.Hi16Zmm = u64s(get(7))
	}
	if bv&FeaturePKRU != 0 {
		xs.Pkru = u32s(get(9))
	}
	e.Xsave = xs
	return e, nil
}

// Decode fills tmpl, a raw XSAVE buffer read from a thread of this machine
// (so its size and layout are the running kernel's), with the state in e.
func Decode(e *x86.UserX86FpregsEntry, tmpl []byte) ([]byte, error) {
	if len(tmpl) < fxsaveSize {
		return nil, fmt.Errorf("xstate template of %d bytes", len(tmpl))
	}
	raw := append([]byte(nil), tmpl...)
	le := binary.LittleEndian
	le.PutUint16(raw[0:], uint16(e.GetCwd()))
	le.PutUint16(raw[2:], uint16(e.GetSwd()))
	le.PutUint16(raw[4:], uint16(e.GetTwd()))
	le.PutUint16(raw[6:], uint16(e.GetFop()))
	le.PutUint64(raw[8:], e.GetRip())
	le.PutUint64(raw[16:], e.GetRdp())
	le.PutUint32(raw[24:], e.GetMxcsr())
	le.PutUint32(raw[28:], e.GetMxcsrMask())
	if len(e.StSpace) != 32 || len(e.XmmSpace) != 64 {
		return nil, fmt.Errorf("fpregs: st_space has %d words, xmm_space %d (want 32, 64)", len(e.StSpace), len(e.XmmSpace))
	}
	putU32s(raw[32:], e.StSpace)
	putU32s(raw[160:], e.XmmSpace)
	xs := e.GetXsave()
	if xs == nil || len(raw) < headerOff+headerSize {
		return raw, nil
	}
	bv := xs.GetXstateBv()
	host := le.Uint64(raw[xcr0Off:])
	if missing := bv &^ host; missing != 0 {
		return nil, fmt.Errorf("%w: image xstate components %#x, this CPU/kernel saves %#x (missing %#x)", ErrCPU, bv, host, missing)
	}
	le.PutUint64(raw[headerOff:], bv)
	le.PutUint64(raw[headerOff+8:], 0) // standard format: xcomp_bv must be 0
	put := func(n uint32, f func([]byte)) error {
		off, size := component(n)
		if off == 0 || off+size > len(raw) {
			return fmt.Errorf("%w: xstate component %d has no room in this kernel's buffer", ErrCPU, n)
		}
		f(raw[off : off+size])
		return nil
	}
	if len(xs.YmmhSpace) == 64 && len(raw) >= ymmhOff+ymmhSize {
		putU32s(raw[ymmhOff:], xs.YmmhSpace)
	}
	type comp struct {
		bit uint64
		n   uint32
		f   func([]byte)
	}
	for _, c := range []comp{
		{FeatureOpmask, 5, func(b []byte) { putU64s(b, xs.OpmaskReg[:min(len(xs.OpmaskReg), len(b)/8)]) }},
		{FeatureZMMHi256, 6, func(b []byte) { putU64s(b, xs.ZmmUpper[:min(len(xs.ZmmUpper), len(b)/8)]) }},
		{FeatureHi16ZMM, 7, func(b []byte) { putU64s(b, xs.Hi16Zmm[:min(len(xs.Hi16Zmm), len(b)/8)]) }},
		{FeaturePKRU, 9, func(b []byte) { putU32s(b, xs.Pkru[:min(len(xs.Pkru), len(b)/4)]) }},
	} {
		if bv&c.bit != 0 {
			if err := put(c.n, c.f); err != nil {
				return nil, err
			}
		}
	}
	return raw, nil
}
