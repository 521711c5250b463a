package image

import (
	"slices"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

func TestMadviseSteps(t *testing.T) {
	bit := func(a ...int) (m uint64) {
		for _, x := range a {
			m |= 1 << x
		}
		return m
	}
	for _, c := range []struct {
		name     string
		from, to uint64
		want     []int
		ok       bool
	}{
		{"fresh", 0, bit(unix.MADV_DONTDUMP, unix.MADV_HUGEPAGE), []int{unix.MADV_HUGEPAGE, unix.MADV_DONTDUMP}, true},
		{"same", bit(unix.MADV_DONTDUMP), bit(unix.MADV_DONTDUMP), nil, true},
		{"undo", bit(unix.MADV_DONTDUMP, unix.MADV_WIPEONFORK), 0, []int{unix.MADV_DODUMP, unix.MADV_KEEPONFORK}, true},
		{"huge to none", bit(unix.MADV_HUGEPAGE), 0, nil, false},
		{"huge to nohuge", bit(unix.MADV_HUGEPAGE), bit(unix.MADV_NOHUGEPAGE), []int{unix.MADV_NOHUGEPAGE}, true},
		// NORMAL clears both access patterns: the one kept is given again.
		{"random and sequential to random", bit(unix.MADV_RANDOM, unix.MADV_SEQUENTIAL), bit(unix.MADV_RANDOM), []int{unix.MADV_NORMAL, unix.MADV_RANDOM}, true},
	} {
		got, ok := MadviseSteps(c.from, c.to)
		if ok != c.ok || (ok && !slices.Equal(got, c.want)) {
			t.Errorf("%s: MadviseSteps(%#x, %#x) = %v, %v; want %v, %v", c.name, c.from, c.to, got, ok, c.want, c.ok)
		}
	}
}

func TestInheritedVMA(t *testing.T) {
	anon := func(start, end uint64, prot, flags uint32) *vma.VmaEntry {
		return &vma.VmaEntry{Start: proto.Uint64(start), End: proto.Uint64(end), Prot: proto.Uint32(prot),
			Flags: proto.Uint32(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | flags), Status: proto.Uint32(VMAAreaRegular | VMAAnonPrivate)}
	}
	file := func(pgoff uint64) *vma.VmaEntry {
		v := anon(0x1000, 0x3000, unix.PROT_READ, 0)
		v.Flags = proto.Uint32(unix.MAP_PRIVATE)
		v.Status = proto.Uint32(VMAAreaRegular | VMAFilePrivate)
		v.Pgoff = proto.Uint64(pgoff)
		return v
	}
	dontfork := anon(0x1000, 0x3000, 3, 0)
	dontfork.Madv = proto.Uint64(1 << unix.MADV_DONTFORK)
	for _, c := range []struct {
		name          string
		parent, child *vma.VmaEntry
		sameFile      bool
		want          bool
	}{
		{"same", anon(0x1000, 0x3000, 3, 0), anon(0x1000, 0x3000, 3, 0), false, true},
		{"other protection", anon(0x1000, 0x3000, 3, 0), anon(0x1000, 0x3000, 1, 0), false, true},
		{"locked in the parent", anon(0x1000, 0x3000, 3, unix.MAP_LOCKED), anon(0x1000, 0x3000, 3, 0), false, true},
		{"grown", anon(0x1000, 0x3000, 3, 0), anon(0x1000, 0x4000, 3, 0), false, true},
		{"grown down", anon(0x2000, 0x3000, 3, 0), anon(0x1000, 0x3000, 3, 0), false, true},
		{"apart", anon(0x1000, 0x3000, 3, 0), anon(0x3000, 0x4000, 3, 0), false, false},
		{"growsdown differs", anon(0x1000, 0x3000, 3, 0), anon(0x1000, 0x3000, 3, unix.MAP_GROWSDOWN), false, false},
		{"not copied by fork", dontfork, anon(0x1000, 0x3000, 3, 0), false, false},
		{"same file", file(0x2000), file(0x2000), true, true},
		{"other file", file(0x2000), file(0x2000), false, false},
		{"other offset", file(0x2000), file(0x3000), true, false},
	} {
		if got := InheritedVMA(c.parent, c.child, c.sameFile); got != c.want {
			t.Errorf("%s: InheritedVMA = %v, want %v", c.name, got, c.want)
		}
	}
}
