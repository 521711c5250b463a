package restore

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/testproc"
	"github.com/imgtool/imgtool/internal/uffd"
)

// TestUserfaultPlacesPagesExactly restores silent.c's bigruns (mappings of 20 pages,
// read-write, read-only and PROT_NONE in turn, each with a hole) with its pages placed
// through a userfaultfd and, again, without one; the program checks every page's bytes
// and every mapping's protection itself, and no mapping may be left registered.
func TestUserfaultPlacesPagesExactly(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/silent.c")
	for _, c := range []struct {
		name    string
		min     int64
		through bool
	}{{"userfaultfd", 0, true}, {"process_vm_writev", math.MaxInt64, false}} {
		t.Run(c.name, func(t *testing.T) {
			if c.through {
				requireUserfaultfd(t)
			}
			defer func(old int64) { userfaultMin = old }(userfaultMin)
			userfaultMin = c.min
			p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, "bigruns")
			dir := dumpTo(t, p.Pid)
			off := savedPos(t, dir, p.Log)
			before := userfaultPlaced.Load()
			pids := restoreSet(t, dir, Options{})
			placed := userfaultPlaced.Load() - before
			if c.through && placed == 0 || !c.through && placed != 0 {
				t.Fatalf("%d bytes placed with UFFDIO_COPY", placed)
			}
			checkSelf(t, pids[0], p.Log, off)
			smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pids[0]))
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(string(smaps), "\n") {
				if f := strings.Fields(l); len(f) > 0 && f[0] == "VmFlags:" && (strings.Contains(l, " um") || strings.Contains(l, " uw")) {
					t.Fatalf("a mapping is left registered with a userfaultfd: %s", l)
				}
			}
		})
	}
}

// requireUserfaultfd skips where this kernel makes no userfaultfd with
// UFFD_USER_MODE_ONLY (before Linux 5.11, or built without one).
func requireUserfaultfd(t *testing.T) {
	t.Helper()
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|uffd.UserModeOnly, 0, 0)
	if e != 0 {
		t.Skipf("no userfaultfd here (%v): the restore writes every page with process_vm_writev", e)
	}
	unix.Close(int(fd))
}

// TestBusyPartsCountsPagesInside: a part is registered for the page bytes the runs give
// it, counted across run boundaries, not for its size.
func TestBusyPartsCountsPagesInside(t *testing.T) {
	parts := spans{{0x10000, 0x30000}, {0x30000, 0x40000}, {0x50000, 0x100000}}
	runs := []pageRun{
		{vaddr: 0x18000, size: 0x8000},  // 32 KiB in the first part
		{vaddr: 0x28000, size: 0x10000}, // 32 KiB in the first, 32 KiB in the second
		{vaddr: 0x60000, size: 0x1000},  // 4 KiB in the third, 1 MiB large
	}
	got := busyParts(parts, runs, 64<<10)
	if len(got) != 1 || got[0] != parts[0] {
		t.Fatalf("busy parts %x, want only %x", got, parts[0])
	}
	if got := busyParts(parts, runs, 4<<10); len(got) != 3 {
		t.Fatalf("with 4 KiB enough, busy parts %x, want all three", got)
	}
}

// TestUserfaultableKeepsHugePages: a mapping whose faults would take transparent huge
// pages (mode "always" unless MADV_NOHUGEPAGE, "madvise" with MADV_HUGEPAGE) is written
// as before, so that it gets them; file mappings and MAP_DROPPABLE areas too.
func TestUserfaultableKeepsHugePages(t *testing.T) {
	defer func(old func() string) { thpMode = old }(thpMode)
	anon := func(flags uint32, madv uint64) *vma.VmaEntry {
		st := uint32(image.VMAAreaRegular | image.VMAAnonPrivate)
		return &vma.VmaEntry{Status: &st, Flags: &flags, Madv: &madv}
	}
	const huge, noHuge = 1 << unix.MADV_HUGEPAGE, 1 << unix.MADV_NOHUGEPAGE
	for _, c := range []struct {
		mode string
		v    *vma.VmaEntry
		want bool
	}{
		{"always", anon(unix.MAP_PRIVATE, 0), false},
		{"always", anon(unix.MAP_PRIVATE, noHuge), true},
		{"madvise", anon(unix.MAP_PRIVATE, 0), true},
		{"madvise", anon(unix.MAP_PRIVATE, huge), false},
		{"never", anon(unix.MAP_PRIVATE, huge), true},
		{"", anon(unix.MAP_PRIVATE, huge), true},
		{"never", anon(unix.MAP_DROPPABLE, 0), false},
	} {
		thpMode = func() string { return c.mode }
		if got := userfaultable(c.v); got != c.want {
			t.Errorf("THP %q, flags %#x, madv %#x: userfaultable %v, want %v", c.mode, c.v.GetFlags(), c.v.GetMadv(), got, c.want)
		}
	}
	thpMode = func() string { return "never" }
	st := uint32(image.VMAAreaRegular | image.VMAFilePrivate)
	if userfaultable(&vma.VmaEntry{Status: &st}) {
		t.Error("a private file mapping is userfaultable")
	}
}
