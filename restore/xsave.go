package restore

import (
	"encoding/binary"
	"fmt"

	core_x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
)

// CRIU stores the FPU state split into named fields; the standard (non-compacted) XSAVE
// buffer that PTRACE_SETREGSET(NT_X86_XSTATE) takes places each component at the offset
// CPUID leaf 0xD gives for this CPU, which differs between CPUs. So the buffer is rebuilt
// here at this CPU's offsets rather than copied.

const (
	xsaveLegacySize = 512 // FXSAVE area
	xsaveHeaderSize = 64
	xfeatureFP      = 0
	xfeatureSSE     = 1
)

// xstateComponent is one XSAVE component as CRIU stores it.
type xstateComponent struct {
	bit   uint
	name  string
	bytes func(x *core_x86.UserX86XsaveEntry) []byte
}

// xstateComponents are the user components CRIU 4.2 saves, by XSAVE feature bit.
var xstateComponents = []xstateComponent{
	{2, "ymmh_space (AVX)", func(x *core_x86.UserX86XsaveEntry) []byte { return u32s(x.YmmhSpace) }},
	{3, "bndreg_state (MPX)", func(x *core_x86.UserX86XsaveEntry) []byte { return u64s(x.BndregState) }},
	{4, "bndcsr_state (MPX)", func(x *core_x86.UserX86XsaveEntry) []byte { return u64s(x.BndcsrState) }},
	{5, "opmask_reg (AVX-512)", func(x *core_x86.UserX86XsaveEntry) []byte { return u64s(x.OpmaskReg) }},
	{6, "zmm_upper (AVX-512)", func(x *core_x86.UserX86XsaveEntry) []byte { return u64s(x.ZmmUpper) }},
	{7, "hi16_zmm (AVX-512)", func(x *core_x86.UserX86XsaveEntry) []byte { return u64s(x.Hi16Zmm) }},
	{9, "pkru (PKU)", func(x *core_x86.UserX86XsaveEntry) []byte { return u32s(x.Pkru) }},
}

func u32s(v []uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return b
}

func u64s(v []uint64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], x)
	}
	return b
}

// xsaveLayout is this CPU's standard-format XSAVE layout.
type xsaveLayout struct {
	xcr0    uint64
	offsets map[uint]uint32
	sizes   map[uint]uint32
}

// cpuXsaveLayout reads the layout from CPUID and XCR0.
func cpuXsaveLayout() xsaveLayout {
	lo, hi := xgetbv0()
	l := xsaveLayout{xcr0: uint64(hi)<<32 | uint64(lo), offsets: map[uint]uint32{}, sizes: map[uint]uint32{}}
	for _, c := range xstateComponents {
		if l.xcr0&(1<<c.bit) == 0 {
			continue
		}
		size, off, _, _ := cpuid(0xd, uint32(c.bit))
		l.offsets[c.bit], l.sizes[c.bit] = off, size
	}
	return l
}

// checkFPU refuses an FPU image this CPU cannot load: features XCR0 lacks, components
// larger than this CPU's, or components the image claims but does not hold.
func (l xsaveLayout) checkFPU(tid int, fp *core_x86.UserX86FpregsEntry) error {
	if fp == nil {
		return fmt.Errorf("core-%d.img: no FPU state", tid)
	}
	if len(fp.StSpace) != 32 || len(fp.XmmSpace) != 64 {
		return fmt.Errorf("core-%d.img: FPU state has %d st and %d xmm words, want 32 and 64", tid, len(fp.StSpace), len(fp.XmmSpace))
	}
	x := fp.Xsave
	if x == nil {
		return nil
	}
	bv := x.GetXstateBv()
	if missing := bv &^ l.xcr0; missing != 0 {
		return fmt.Errorf("core-%d.img: the set uses XSAVE features %#x this CPU lacks (saved xstate_bv %#x, this CPU's XCR0 %#x)", tid, missing, bv, l.xcr0)
	}
	known := uint64(1<<xfeatureFP | 1<<xfeatureSSE)
	for _, c := range xstateComponents {
		known |= 1 << c.bit
		data := c.bytes(x)
		if bv&(1<<c.bit) == 0 {
			continue
		}
		if len(data) == 0 {
			return fmt.Errorf("core-%d.img: xstate_bv has %s but the image holds none", tid, c.name)
		}
		if uint32(len(data)) > l.sizes[c.bit] {
			return fmt.Errorf("core-%d.img: %s is %d bytes, this CPU's is %d", tid, c.name, len(data), l.sizes[c.bit])
		}
	}
	if unknown := bv &^ known; unknown != 0 {
		return fmt.Errorf("core-%d.img: xstate_bv %#x has components CRIU images cannot hold (%#x)", tid, bv, unknown)
	}
	return nil
}

// build returns the XSAVE buffer of size bytes (the kernel's user XSAVE size) for fp.
func (l xsaveLayout) build(fp *core_x86.UserX86FpregsEntry, size int) ([]byte, error) {
	if size < xsaveLegacySize+xsaveHeaderSize {
		return nil, fmt.Errorf("kernel XSAVE size %d is too small", size)
	}
	b := make([]byte, size)
	le := binary.LittleEndian
	le.PutUint16(b[0:], uint16(fp.GetCwd()))
	le.PutUint16(b[2:], uint16(fp.GetSwd()))
	le.PutUint16(b[4:], uint16(fp.GetTwd()))
	le.PutUint16(b[6:], uint16(fp.GetFop()))
	le.PutUint64(b[8:], fp.GetRip())
	le.PutUint64(b[16:], fp.GetRdp())
	le.PutUint32(b[24:], fp.GetMxcsr())
	le.PutUint32(b[28:], fp.GetMxcsrMask())
	copy(b[32:160], u32s(fp.StSpace))
	copy(b[160:416], u32s(fp.XmmSpace))
	bv := uint64(1<<xfeatureFP | 1<<xfeatureSSE) // a plain FXSAVE image: x87 and SSE
	if x := fp.Xsave; x != nil {
		bv = x.GetXstateBv()
		for _, c := range xstateComponents {
			if bv&(1<<c.bit) == 0 {
				continue
			}
			off := int(l.offsets[c.bit])
			data := c.bytes(x)
			if off < xsaveLegacySize+xsaveHeaderSize || off+len(data) > size {
				return nil, fmt.Errorf("XSAVE component %s at %d+%d does not fit the kernel's %d bytes", c.name, off, len(data), size)
			}
			copy(b[off:], data)
		}
	}
	le.PutUint64(b[xsaveLegacySize:], bv) // xstate_bv; xcomp_bv stays 0: standard format
	return b, nil
}
