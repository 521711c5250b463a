package restore

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/testproc"
)

// shmLine is one line of testdata/shm.c's output.
type shmLine struct {
	child           bool
	pid             int
	n, other, memfd uint64 // own count, the other's count as seen, the memfd word (parent)
	text, pages     string
}

// shmLines parses the output of shm.
func shmLines(t *testing.T, out string) []shmLine {
	t.Helper()
	var ls []shmLine
	for _, s := range strings.Split(out, "\n") {
		var l shmLine
		switch {
		case strings.HasPrefix(s, "parent "):
			if _, err := fmt.Sscanf(s, "parent pid=%d n=%d child=%d memfd=%d text=%s pages=%s", &l.pid, &l.n, &l.other, &l.memfd, &l.text, &l.pages); err != nil {
				t.Fatalf("line %q: %v", s, err)
			}
		case strings.HasPrefix(s, "child "):
			l.child = true
			if _, err := fmt.Sscanf(s, "child pid=%d n=%d parent=%d pages=%s", &l.pid, &l.n, &l.other, &l.pages); err != nil {
				t.Fatalf("line %q: %v", s, err)
			}
		default:
			continue // the last, unfinished line
		}
		ls = append(ls, l)
	}
	return ls
}

// lastOf returns the last line of the parent or of the child.
func lastOf(ls []shmLine, child bool) (shmLine, bool) {
	for i := len(ls) - 1; i >= 0; i-- {
		if ls[i].child == child {
			return ls[i], true
		}
	}
	return shmLine{}, false
}

// TestRoundTripSharedMemory dumps a parent and a child that share MAP_SHARED|MAP_ANONYMOUS
// memory and a memfd (held as an fd by the parent, mapped by both), restores them, and
// checks that the memory is still shared: each keeps counting from its saved count and sees
// the other's new counts, the memfd read through the fd holds what the child writes through
// its mapping, and every saved page kept its content.
func TestRoundTripSharedMemory(t *testing.T) {
	t.Run("plain", func(t *testing.T) { roundTripShm(t, false) })
	t.Run("encrypted", func(t *testing.T) { roundTripShm(t, true) })
}

func roundTripShm(t *testing.T, encrypted bool) {
	requireRoot(t)
	var recipients []cipher.Recipient
	var ids []cipher.Identity
	if encrypted {
		rs, id := testKey(t)
		recipients, ids = rs, []cipher.Identity{id}
	}
	sp := testproc.Launch(t, testproc.Build(t, "testdata/shm.c"), testproc.Options{Ready: "child pid="})
	log := sp.Log
	dir := dumpTo(t, sp.Pid, recipients...)
	if encrypted && grepSet(t, dir, "SHM-PAGE-1") {
		t.Fatal("the encrypted set holds plaintext of the shared memory")
	}
	for _, name := range []string{"memfd.img", "files.img"} {
		if !fileExists(filepath.Join(dir, name)) {
			t.Fatalf("the dump wrote no %s", name)
		}
	}
	before := shmLines(t, testproc.LogAfter(t, log, 0))
	lastParent, ok1 := lastOf(before, false)
	lastChild, ok2 := lastOf(before, true)
	if !ok1 || !ok2 {
		t.Fatalf("no output of both processes before the dump: %+v", before)
	}
	var off int64
	for _, fe := range setPlan(t, openSet(t, dir, ids...)).files {
		if fe.Reg != nil && fe.Reg.GetName() == log {
			off = int64(fe.Reg.GetPos())
		}
	}
	pids := restoreSet(t, dir, Options{}, ids...)
	if len(pids) != 2 {
		t.Fatalf("the set holds %d processes, want 2", len(pids))
	}

	// Both carry on from their counts and see each other's new writes.
	var after []shmLine
	testproc.WaitFor(t, 10*time.Second, "both processes seeing each other's new counts", func() bool {
		after = shmLines(t, testproc.LogAfter(t, log, off))
		p, ok1 := lastOf(after, false)
		c, ok2 := lastOf(after, true)
		return ok1 && ok2 && p.other > lastChild.n && p.memfd > lastChild.n && c.other > lastParent.n
	})
	first := map[bool]bool{}
	for _, l := range after {
		if l.pages != "ok" {
			t.Errorf("restored %d lost shared pages: %+v", l.pid, l)
		}
		if !l.child && l.text != "MEMFD-CONTENT" {
			t.Errorf("the parent reads %q from the memfd, want MEMFD-CONTENT", l.text)
		}
		if first[l.child] {
			continue
		}
		first[l.child] = true
		want := lastParent
		if l.child {
			want = lastChild
		}
		if l.pid != want.pid || l.n != want.n+1 {
			t.Errorf("first line after restore %+v, want pid %d counting on from %d", l, want.pid, want.n)
		}
	}

	// The kernel agrees: one shmem inode per object, mapped by both; fd 3 is the memfd.
	pl := setPlan(t, openSet(t, dir, ids...))
	inodes := map[uint64]map[int]uint64{} // shmem file id -> pid -> inode mapped
	for _, p := range pl.procs {
		maps := procMapsInodes(t, p.pid)
		for _, v := range sharedVMAs(p.mm) {
			if inodes[v.GetShmid()] == nil {
				inodes[v.GetShmid()] = map[int]uint64{}
			}
			inodes[v.GetShmid()][p.pid] = maps[v.GetStart()]
		}
	}
	if len(inodes) != 2 {
		t.Fatalf("%d shared objects mapped, want 2 (anonymous and memfd): %v", len(inodes), inodes)
	}
	for id, byPid := range inodes {
		if len(byPid) != 2 || byPid[pids[0]] == 0 || byPid[pids[0]] != byPid[pids[1]] {
			t.Errorf("file id %d: mapped inodes by pid %v, want one inode in both", id, byPid)
		}
	}
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", pids[0]))
	if err != nil || !strings.HasPrefix(link, "/memfd:imgtool-shm-test") {
		t.Errorf("parent fd 3 is %q (%v), want the memfd", link, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/3", pids[0]), &st); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, byPid := range inodes {
		found = found || byPid[pids[0]] == st.Ino
	}
	if !found {
		t.Errorf("the parent's memfd fd (inode %d) is not the memfd it maps (%v)", st.Ino, inodes)
	}
}

// sharedVMAs returns the shared memory mappings of an mm image (memfd or anonymous shared).
func sharedVMAs(m *mm.MmEntry) []*vma.VmaEntry {
	var out []*vma.VmaEntry
	for _, v := range m.Vmas {
		if v.GetStatus()&(image.VMAAreaMemfd|image.VMAAnonShared) != 0 && v.GetFlags()&unix.MAP_SHARED != 0 {
			out = append(out, v)
		}
	}
	return out
}

// procMapsInodes returns the inode of every mapping of pid, by start address.
func procMapsInodes(t *testing.T, pid int) map[uint64]uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		lo, _, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		ino, err2 := strconv.ParseUint(f[4], 10, 64)
		if err1 == nil && err2 == nil {
			out[start] = ino
		}
	}
	return out
}

// TestCRIUSharedMemory reads the shared memory of the real CRIU misc set (which cannot be
// restored whole: it holds sockets) the way restore recreates it, and checks it against
// what fixtures/src/misc.c wrote: 1 MiB of MAP_SHARED anonymous memory, saved by CRIU as
// a memfd named /dev/zero, each page starting "IMGTOOL-SHMEM-PAGE-<n>", and a 64 KiB memfd
// holding "IMGTOOL-MEMFD-CONTENT"; both with their sizes, modes and seals.
func TestCRIUSharedMemory(t *testing.T) {
	pl := setPlan(t, openSet(t, criuSet(t, "misc")))
	if err := checkMemory(pl, pl.procs[0], map[uint32]string{}); err != nil {
		t.Fatalf("the misc set's mappings: %v", err)
	}
	d := &descriptions{memfds: map[uint64]*os.File{}, shm: map[uint64]*os.File{}}
	defer d.close()
	contents := map[string][]byte{}
	for _, v := range sharedVMAs(pl.procs[0].mm) {
		fe := pl.files[uint32(v.GetShmid())]
		if fe == nil || fe.Memfd == nil {
			t.Fatalf("mapping %#x: file id %d is not a memfd", v.GetStart(), v.GetShmid())
		}
		ino := uint64(fe.Memfd.GetInodeId())
		f, err := d.memfdInode(pl, ino)
		if err != nil {
			t.Fatal(err)
		}
		m := pl.memfds[ino]
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if uint64(st.Size()) != m.GetSize() || uint64(st.Size()) != v.GetEnd()-v.GetStart() {
			t.Errorf("memfd %q: size %d, saved %d, mapping %d", m.GetName(), st.Size(), m.GetSize(), v.GetEnd()-v.GetStart())
		}
		if uint32(st.Mode().Perm()) != m.GetMode()&0o777 {
			t.Errorf("memfd %q: mode %v, saved %#o", m.GetName(), st.Mode(), m.GetMode())
		}
		seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
		if err != nil || uint32(seals) != m.GetSeals() {
			t.Errorf("memfd %q: seals %#x (%v), saved %#x", m.GetName(), seals, err, m.GetSeals())
		}
		b := make([]byte, st.Size())
		if _, err := f.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		contents[m.GetName()] = b
	}
	shm, ok := contents["/dev/zero"]
	if !ok || len(shm) != 1<<20 {
		t.Fatalf("no 1 MiB shared anonymous memory among %d objects", len(contents))
	}
	for i := 0; i < len(shm)/4096; i++ {
		want := fmt.Sprintf("IMGTOOL-SHMEM-PAGE-%d\x00", i)
		if !bytes.HasPrefix(shm[i*4096:], []byte(want)) {
			t.Fatalf("shared page %d starts %q, want %q", i, shm[i*4096:i*4096+len(want)], want)
		}
	}
	if mfd := contents["imgtool-memfd"]; !bytes.HasPrefix(mfd, []byte("IMGTOOL-MEMFD-CONTENT\x00")) {
		t.Errorf("memfd imgtool-memfd starts %q", mfd[:min(len(mfd), 32)])
	}
}
