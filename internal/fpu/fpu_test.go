package fpu

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	core_x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/imgtool/imgtool/image"
)

// kernelSize is the size of the buffer the kernel hands out for layout l: up to the end of
// the last enabled component.
func kernelSize(l Layout) int {
	size := MinSize
	for _, c := range components {
		if l.XCR0&(1<<c.bit) != 0 {
			p := l.Components[c.bit]
			size = max(size, int(p.Offset+p.Size))
		}
	}
	return size
}

// markEnabled writes what the kernel writes into the software-reserved bytes of a buffer
// it hands out: the magic and the enabled features.
func markEnabled(buf []byte, features uint64) {
	binary.LittleEndian.PutUint32(buf[swReservedOff:], fpXstateMagic1)
	binary.LittleEndian.PutUint64(buf[swReservedOff+8:], features)
}

// TestSplitBuildRoundTrip fills every part of a buffer CRIU stores with random bytes at
// this CPU's layout and expects BuildInto(Split(buf)) to put each byte back in its place.
func TestSplitBuildRoundTrip(t *testing.T) {
	l := CPULayout()
	if l.XCR0&(1<<featureSSE) == 0 {
		t.Skip("XSAVE is not enabled on this CPU")
	}
	size := kernelSize(l)
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, size)
	fill := func(from, to int) {
		for i := from; i < to; i++ {
			buf[i] = byte(rng.Uint32())
		}
	}
	fill(0, 416)
	var bv uint64 = 1<<featureFP | 1<<featureSSE
	type span struct{ from, to int }
	spans := []span{{0, 416}}
	for _, c := range components {
		if l.XCR0&(1<<c.bit) == 0 {
			continue
		}
		p := l.Components[c.bit]
		fill(int(p.Offset), int(p.Offset+p.Size))
		spans = append(spans, span{int(p.Offset), int(p.Offset + p.Size)})
		bv |= 1 << c.bit
	}
	binary.LittleEndian.PutUint64(buf[LegacySize:], bv)
	spans = append(spans, span{LegacySize, LegacySize + 8})
	markEnabled(buf, l.XCR0)

	fp, err := l.Split(buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Check(fp); err != nil {
		t.Fatalf("Check of a split buffer: %v", err)
	}
	out := make([]byte, size)
	if err := l.BuildInto(fp, out); err != nil {
		t.Fatal(err)
	}
	for _, s := range spans {
		if !bytes.Equal(out[s.from:s.to], buf[s.from:s.to]) {
			t.Errorf("bytes %d..%d differ after Split and BuildInto", s.from, s.to)
		}
	}
	markEnabled(out, l.XCR0)
	again, err := l.Split(out)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(fp, again) {
		t.Errorf("Split(BuildInto(fp)) differs from fp")
	}
}

// fixtureFPUs returns the FPU entry of every core image of the real CRIU 4.2 sets.
func fixtureFPUs(t *testing.T) map[string]*core_x86.UserX86FpregsEntry {
	t.Helper()
	names, err := filepath.Glob("../../fixtures/criu-4.2/*/core-*.img")
	if err != nil || len(names) == 0 {
		t.Fatalf("no fixture core images (%v)", err)
	}
	out := map[string]*core_x86.UserX86FpregsEntry{}
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		img, err := image.ReadImage(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = img.Entries[0].Msg.(*criu_core.CoreEntry).GetThreadInfo().GetFpregs()
	}
	return out
}

// TestCRIUFixtures checks the FPU entries CRIU 4.2 wrote: this CPU can load them, each
// component holds exactly this CPU's size, and BuildInto then Split gives the entry back.
func TestCRIUFixtures(t *testing.T) {
	l := CPULayout()
	for name, fp := range fixtureFPUs(t) {
		if err := l.Check(fp); err != nil {
			t.Skipf("%s was written on a CPU with other XSAVE features: %v", name, err)
		}
		bv := fp.GetXsave().GetXstateBv()
		for _, c := range components {
			if n := len(c.get(fp.Xsave)); bv&(1<<c.bit) != 0 && n != int(l.Components[c.bit].Size) {
				t.Errorf("%s: %s holds %d bytes, CPUID says %d", name, c.name, n, l.Components[c.bit].Size)
			}
		}
		buf := make([]byte, kernelSize(l))
		if err := l.BuildInto(fp, buf); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// CRIU stores every component the kernel enabled, in xstate_bv or not; the cet
		// entry is not XSAVE user state (the dumper adds it from its own regset).
		markEnabled(buf, l.XCR0)
		back, err := l.Split(buf)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := proto.Clone(fp).(*core_x86.UserX86FpregsEntry)
		want.Xsave.Cet = nil
		// A component this CPU enables but the fixtures' CPU lacked (PKRU, say) comes back
		// in its initial state: all zero.
		for _, c := range components {
			if len(c.get(fp.Xsave)) == 0 && len(c.get(back.Xsave)) != 0 {
				if !bytes.Equal(c.get(back.Xsave), make([]byte, len(c.get(back.Xsave)))) {
					t.Errorf("%s: %s, absent from the image, came back non-zero", name, c.name)
				}
				c.set(back.Xsave, nil)
			}
		}
		if !proto.Equal(want, back) {
			t.Errorf("%s: Split(BuildInto(fp)) differs from fp", name)
		}
	}
}

// TestFieldWidths checks each component's element width against the proto field CRIU
// declares (ymmh_space and pkru repeated uint32, the others repeated uint64): CRIU
// compares element count times width with the CPUID size.
func TestFieldWidths(t *testing.T) {
	fields := (&core_x86.UserX86XsaveEntry{}).ProtoReflect().Descriptor().Fields()
	for _, c := range components {
		name := protoreflect.Name(strings.Fields(c.name)[0])
		fd := fields.ByName(name)
		if fd == nil {
			t.Fatalf("user_x86_xsave_entry has no field %s", name)
		}
		width := map[protoreflect.Kind]int{protoreflect.Uint32Kind: 4, protoreflect.Uint64Kind: 8}[fd.Kind()]
		if width == 0 || !fd.IsList() {
			t.Fatalf("%s is %v, want repeated uint32 or uint64", name, fd.Kind())
		}
		x := &core_x86.UserX86XsaveEntry{}
		c.set(x, make([]byte, 64))
		if n := x.ProtoReflect().Get(fd).List().Len(); n != 64/width {
			t.Errorf("%s: 64 bytes became %d elements, want %d", name, n, 64/width)
		}
		if got := len(c.get(x)); got != 64 {
			t.Errorf("%s: 64 bytes came back as %d", name, got)
		}
	}
}

// TestCheckRefuses feeds Check entries this CPU cannot load.
func TestCheckRefuses(t *testing.T) {
	l := CPULayout()
	legacy := func() *core_x86.UserX86FpregsEntry {
		return &core_x86.UserX86FpregsEntry{StSpace: make([]uint32, 32), XmmSpace: make([]uint32, 64)}
	}
	short := legacy()
	short.XmmSpace = short.XmmSpace[:10]
	missing := legacy()
	missing.Xsave = &core_x86.UserX86XsaveEntry{XstateBv: proto.Uint64(l.XCR0 | 1<<62)}
	for name, tc := range map[string]struct {
		fp   *core_x86.UserX86FpregsEntry
		want string
	}{
		"none":    {nil, "no FPU state"},
		"short":   {short, "10 xmm words"},
		"missing": {missing, "this CPU lacks"},
	} {
		err := l.Check(tc.fp)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	if err := l.Check(legacy()); err != nil {
		t.Errorf("plain FXSAVE entry: %v", err)
	}
}
