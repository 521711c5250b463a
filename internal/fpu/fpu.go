// Package fpu converts the x86 FPU state between the kernel's XSAVE buffer (the standard,
// non-compacted format of PTRACE_GETREGSET/SETREGSET NT_X86_XSTATE) and CRIU's
// user_x86_fpregs_entry, which stores it split into named fields.
//
// Where each XSAVE component sits in the buffer depends on the CPU (CPUID leaf 0xD), so a
// buffer is split at the dumping CPU's offsets and rebuilt at the restoring CPU's, never
// copied. Which components the kernel enabled is XCR0.
package fpu

import (
	"encoding/binary"
	"fmt"
	"sync"

	core_x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	"google.golang.org/protobuf/proto"
)

const (
	// LegacySize is the size of the legacy FXSAVE area that starts every XSAVE buffer.
	LegacySize = 512
	// HeaderSize is the size of the XSAVE header (xstate_bv, xcomp_bv) after it.
	HeaderSize = 64
	// MinSize is the smallest XSAVE buffer: the legacy area and the header.
	MinSize = LegacySize + HeaderSize
	// MaxSize bounds the XSAVE buffer of any CPU (the kernel's user size is a few KiB);
	// a buffer of this size receives NT_X86_XSTATE whole.
	MaxSize = 64 << 10

	featureFP  = 0
	featureSSE = 1

	// fpXstateMagic1 marks the software-reserved bytes (offset 464) in which the kernel
	// reports the enabled user features in a buffer it hands out.
	fpXstateMagic1 = 0x46505853
	swReservedOff  = 464

	// nFeatures covers every user component CRIU 4.2 saves (up to PKRU, bit 9).
	nFeatures = 10
)

// component is one extended XSAVE component as CRIU stores it. CRIU checks the element
// count times the element width against the CPUID size, so the widths are part of the
// format: ymmh_space and pkru are uint32 words, the others uint64.
type component struct {
	bit  uint
	name string
	w32  func(x *core_x86.UserX86XsaveEntry) []uint32 // its words, for a 32-bit component
	w64  func(x *core_x86.UserX86XsaveEntry) []uint64 // or a 64-bit one
	set  func(x *core_x86.UserX86XsaveEntry, b []byte)
}

// size is the component's bytes in x.
func (c component) size(x *core_x86.UserX86XsaveEntry) int {
	if c.w32 != nil {
		return 4 * len(c.w32(x))
	}
	return 8 * len(c.w64(x))
}

// put writes the component's bytes in x to dst, which holds size bytes.
func (c component) put(x *core_x86.UserX86XsaveEntry, dst []byte) {
	if c.w32 != nil {
		for i, w := range c.w32(x) {
			binary.LittleEndian.PutUint32(dst[4*i:], w)
		}
		return
	}
	for i, w := range c.w64(x) {
		binary.LittleEndian.PutUint64(dst[8*i:], w)
	}
}

// get returns the component's bytes in x.
func (c component) get(x *core_x86.UserX86XsaveEntry) []byte {
	b := make([]byte, c.size(x))
	c.put(x, b)
	return b
}

// components are the extended user components of user_x86_xsave_entry, by feature bit.
var components = []component{
	{2, "ymmh_space (AVX)",
		func(x *core_x86.UserX86XsaveEntry) []uint32 { return x.YmmhSpace }, nil,
		func(x *core_x86.UserX86XsaveEntry, b []byte) { x.YmmhSpace = words32(b) }},
	{3, "bndreg_state (MPX)",
		nil, func(x *core_x86.UserX86XsaveEntry) []uint64 { return x.BndregState },
		func(x *core_x86.UserX86XsaveEntry, b []byte) { x.BndregState = words64(b) }},
	{4, "bndcsr_state (MPX)",
		nil, func(x *core_x86.UserX86XsaveEntry) []uint64 { return x.BndcsrState },
		func(x *core_x86.UserX86XsaveEntry, b []byte) { x.BndcsrState = words64(b) }},
	{5, "opmask_reg (AVX-512)",
		nil, func(x *core_x86.UserX86XsaveEntry) []uint64 { return x.OpmaskReg },
		func(x *core_x86.UserX86XsaveEntry, b []byte) { x.OpmaskReg = words64(b) }},
	{6, "zmm_upper (AVX-512)",
		nil, func(x *core_x86.UserX86XsaveEntry) []uint64 { return x.ZmmUpper },
		func(x *core_x86.UserX86XsaveEntry, b []byte) { x.ZmmUpper = words64(b) }},
	{7, "hi16_zmm (AVX-512)",
		nil, func(x *core_x86.UserX86XsaveEntry) []uint64 { return x.Hi16Zmm },
		func(x *core_x86.UserX86XsaveEntry, b []byte) { x.Hi16Zmm = words64(b) }},
	{9, "pkru (PKU)",
		func(x *core_x86.UserX86XsaveEntry) []uint32 { return x.Pkru }, nil,
		func(x *core_x86.UserX86XsaveEntry, b []byte) { x.Pkru = words32(b) }},
}

// ImageFeatures are the XSAVE features a CRIU image can hold: x87, SSE and the
// extended components of user_x86_xsave_entry.
var ImageFeatures = func() uint64 {
	f := uint64(1<<featureFP | 1<<featureSSE)
	for _, c := range components {
		f |= 1 << c.bit
	}
	return f
}()

// Component is where one XSAVE component lives in the standard-format buffer.
type Component struct{ Offset, Size uint32 }

// Layout is a CPU's standard-format XSAVE layout.
type Layout struct {
	// XCR0 holds the features the kernel enabled.
	XCR0 uint64
	// Supported holds the user features the CPU supports (CPUID leaf 0xD, subleaf 0).
	Supported uint64
	// Components holds each extended component's place (CPUID leaf 0xD, subleaf = the
	// feature bit), zero for features the CPU lacks.
	Components [nFeatures]Component
}

// CPULayout returns this CPU's layout, read once from CPUID and XCR0.
var CPULayout = sync.OnceValue(func() Layout {
	lo, hi := xgetbv0()
	l := Layout{XCR0: uint64(hi)<<32 | uint64(lo)}
	if max, _, _, _ := cpuid(0, 0); max < 0xd {
		return l
	}
	a, _, _, d := cpuid(0xd, 0)
	l.Supported = uint64(d)<<32 | uint64(a)
	for bit := uint32(2); bit < nFeatures; bit++ {
		size, off, _, _ := cpuid(0xd, bit)
		l.Components[bit] = Component{Offset: off, Size: size}
	}
	return l
})

// HasShadowStack reports CPUID.(7,0):ECX[7] (CET shadow stacks), the test CRIU uses to
// decide whether core images carry a cet entry.
func HasShadowStack() bool {
	if max, _, _, _ := cpuid(0, 0); max < 7 {
		return false
	}
	_, _, ecx, _ := cpuid(7, 0)
	return ecx&(1<<7) != 0
}

// Split fills CRIU's fpregs entry from a kernel XSAVE buffer laid out as l: the legacy
// FXSAVE area, then each extended component the kernel enabled.
func (l Layout) Split(buf []byte) (*core_x86.UserX86FpregsEntry, error) {
	if len(buf) < MinSize {
		return nil, fmt.Errorf("XSAVE state of %d bytes, want at least %d", len(buf), MinSize)
	}
	le := binary.LittleEndian
	fp := &core_x86.UserX86FpregsEntry{
		Cwd: proto.Uint32(uint32(le.Uint16(buf[0:]))), Swd: proto.Uint32(uint32(le.Uint16(buf[2:]))),
		Twd: proto.Uint32(uint32(le.Uint16(buf[4:]))), Fop: proto.Uint32(uint32(le.Uint16(buf[6:]))),
		Rip: proto.Uint64(le.Uint64(buf[8:])), Rdp: proto.Uint64(le.Uint64(buf[16:])),
		Mxcsr: proto.Uint32(le.Uint32(buf[24:])), MxcsrMask: proto.Uint32(le.Uint32(buf[28:])),
		StSpace: words32(buf[32:160]), XmmSpace: words32(buf[160:416]),
	}
	// The kernel reports the enabled user features in the software-reserved bytes.
	enabled := l.Supported
	if le.Uint32(buf[swReservedOff:]) == fpXstateMagic1 {
		enabled = le.Uint64(buf[swReservedOff+8:])
	}
	xs := &core_x86.UserX86XsaveEntry{XstateBv: proto.Uint64(le.Uint64(buf[LegacySize:]))}
	for _, c := range components {
		if enabled&(1<<c.bit) == 0 {
			continue
		}
		p := l.Components[c.bit]
		if p.Size == 0 || int(p.Offset)+int(p.Size) > len(buf) {
			return nil, fmt.Errorf("XSAVE component %d at %d+%d beyond the %d-byte state", c.bit, p.Offset, p.Size, len(buf))
		}
		c.set(xs, buf[p.Offset:p.Offset+p.Size])
	}
	fp.Xsave = xs
	return fp, nil
}

// Check refuses an FPU entry this layout cannot load: a malformed legacy area, features
// XCR0 lacks, components larger than this CPU's, or components xstate_bv claims but the
// entry does not hold.
func (l Layout) Check(fp *core_x86.UserX86FpregsEntry) error {
	if fp == nil {
		return fmt.Errorf("no FPU state")
	}
	if len(fp.StSpace) != 32 || len(fp.XmmSpace) != 64 {
		return fmt.Errorf("FPU state has %d st and %d xmm words, want 32 and 64", len(fp.StSpace), len(fp.XmmSpace))
	}
	x := fp.Xsave
	if x == nil {
		return nil
	}
	bv := x.GetXstateBv()
	if missing := bv &^ l.XCR0; missing != 0 {
		return fmt.Errorf("the set uses XSAVE features %#x this CPU lacks (saved xstate_bv %#x, this CPU's XCR0 %#x)", missing, bv, l.XCR0)
	}
	for _, c := range components {
		if bv&(1<<c.bit) == 0 {
			continue
		}
		n := c.size(x)
		if n == 0 {
			return fmt.Errorf("xstate_bv has %s but the image holds none", c.name)
		}
		if size := l.Components[c.bit].Size; uint32(n) > size {
			return fmt.Errorf("%s is %d bytes, this CPU's is %d", c.name, n, size)
		}
	}
	if unknown := bv &^ ImageFeatures; unknown != 0 {
		return fmt.Errorf("xstate_bv %#x has components CRIU images cannot hold (%#x)", bv, unknown)
	}
	return nil
}

// BuildInto builds in b, the kernel's user XSAVE size long, the XSAVE buffer for fp, laid
// out as l; fp should have passed Check. It clears b first: a restore of a thousand
// threads builds each one's state in one buffer.
func (l Layout) BuildInto(fp *core_x86.UserX86FpregsEntry, b []byte) error {
	size := len(b)
	if size < MinSize {
		return fmt.Errorf("kernel XSAVE size %d is too small", size)
	}
	clear(b)
	le := binary.LittleEndian
	le.PutUint16(b[0:], uint16(fp.GetCwd()))
	le.PutUint16(b[2:], uint16(fp.GetSwd()))
	le.PutUint16(b[4:], uint16(fp.GetTwd()))
	le.PutUint16(b[6:], uint16(fp.GetFop()))
	le.PutUint64(b[8:], fp.GetRip())
	le.PutUint64(b[16:], fp.GetRdp())
	le.PutUint32(b[24:], fp.GetMxcsr())
	le.PutUint32(b[28:], fp.GetMxcsrMask())
	putWords32(b[32:160], fp.StSpace)
	putWords32(b[160:416], fp.XmmSpace)
	bv := uint64(1<<featureFP | 1<<featureSSE) // a plain FXSAVE image: x87 and SSE
	if x := fp.Xsave; x != nil {
		bv = x.GetXstateBv()
		for _, c := range components {
			if bv&(1<<c.bit) == 0 {
				continue
			}
			off, n := int(l.Components[c.bit].Offset), c.size(x)
			if off < MinSize || off+n > size {
				return fmt.Errorf("XSAVE component %s at %d+%d does not fit the kernel's %d bytes", c.name, off, n, size)
			}
			c.put(x, b[off:off+n])
		}
	}
	le.PutUint64(b[LegacySize:], bv) // xstate_bv; xcomp_bv stays 0: standard format
	return nil
}

// putWords32 writes the words of v into b as far as b goes (a legacy area's fixed size).
func putWords32(b []byte, v []uint32) {
	for i, x := range v {
		if 4*i+4 > len(b) {
			return
		}
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
}

func words32(b []byte) []uint32 {
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[i*4:])
	}
	return out
}

func words64(b []byte) []uint64 {
	out := make([]uint64, len(b)/8)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[i*8:])
	}
	return out
}
