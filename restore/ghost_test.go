package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/testproc"
)

// ghostModes are the states of testdata/ghosts.c.
var ghostModes = []string{"files", "mmap", "fifo", "cwd", "devzero", "exe"}

// launchGhosts starts a copy of testdata/ghosts.c (its exe mode deletes it) in mode, in
// a fresh directory; the copy is alone in a directory of its own.
func launchGhosts(t *testing.T, mode string) *testproc.Proc {
	t.Helper()
	b, err := os.ReadFile(testproc.Build(t, "testdata/ghosts.c"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "ghosts")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, mode)
}

// dirNames lists a directory.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// onlyLog checks that nothing but the program's log is left in its directory, and nothing
// but the program (or nothing, once deleted) in the program's: the ghosts were made and
// removed again, temporary names and all.
func onlyLog(t *testing.T, p *testproc.Proc) {
	t.Helper()
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid)); err == nil {
		bindir := filepath.Dir(strings.TrimSuffix(exe, " (deleted)"))
		if names := dirNames(t, bindir); len(names) > 1 || len(names) == 1 && names[0] != "ghosts" {
			t.Errorf("the program's own directory holds %v", names)
		}
	}
	if got, want := fmt.Sprint(dirNames(t, p.Dir)), fmt.Sprint([]string{filepath.Base(p.Log)}); got != want {
		t.Errorf("the program's directory holds %s, want only %s", got, want)
	}
	if shm, err := os.ReadDir("/dev/shm"); err == nil {
		for _, e := range shm {
			if strings.Contains(e.Name(), "imgtool-ghosts") || strings.Contains(e.Name(), ".ghost") {
				t.Errorf("/dev/shm holds %s after the restore", e.Name())
			}
		}
	}
}

// ghostCount returns how many ghost files and remaps a set has.
func ghostCount(t *testing.T, dir string) (ghosts, remaps int) {
	t.Helper()
	for _, n := range dirNames(t, dir) {
		if strings.HasPrefix(n, "ghost-file-") {
			ghosts++
		}
	}
	if fileExists(filepath.Join(dir, "remap-fpath.img")) {
		remaps = len(readImageFile(t, filepath.Join(dir, "remap-fpath.img")).Entries)
	}
	return ghosts, remaps
}

// TestRoundTripGhosts dumps and restores testdata/ghosts.c once per state and lets it check
// itself: deleted files open at their offsets and flags with their content (a sparse one
// with its holes, one of an O_TMPFILE), owner, mode and mtime, two descriptions of one
// deleted inode still one inode, a deleted file mapped private and shared, a POSIX
// semaphore whose /dev/shm file is gone, a deleted FIFO with its queued bytes, a removed
// working directory, a deleted executable; each fd still NAME (deleted) in /proc; nothing
// left on disk. And what
// is not a ghost: an fd of shared anonymous memory ("/dev/zero (deleted)") is saved with
// the memory, as a memfd.
func TestRoundTripGhosts(t *testing.T) {
	requireRoot(t)
	wantGhosts := map[string]int{"files": 5, "mmap": 2, "fifo": 1, "cwd": 1, "devzero": 0, "exe": 1}
	for _, mode := range ghostModes {
		t.Run(mode, func(t *testing.T) {
			p := launchGhosts(t, mode)
			dir := dumpTo(t, p.Pid)
			if g, r := ghostCount(t, dir); g != wantGhosts[mode] || r < g {
				t.Errorf("the set has %d ghost files and %d remaps, want %d ghosts", g, r, wantGhosts[mode])
			}
			if mode == "devzero" && !fileExists(filepath.Join(dir, "memfd.img")) {
				t.Error("the fd of shared anonymous memory is not saved as shared memory (memfd.img)")
			}
			off := savedPos(t, dir, p.Log)
			pids := restoreSet(t, dir, Options{})
			onlyLog(t, p)
			checkSelf(t, pids[0], p.Log, off)
		})
	}
}

// TestRoundTripGhostsEncrypted: the same from an encrypted set, whose ghost content is
// authenticated as it is read; then the same set with one chunk of the largest ghost
// damaged: the restore fails on it, after the tree exists, kills it and leaves nothing on
// disk.
func TestRoundTripGhostsEncrypted(t *testing.T) {
	requireRoot(t)
	recipients, id := testKey(t)
	p := launchGhosts(t, "files")
	dir := dumpTo(t, p.Pid, recipients...)
	if grepSet(t, dir, "small-00001") {
		t.Fatal("the encrypted set holds a ghost file's plaintext")
	}
	off := fileSize(t, p.Log) // the dumped program is gone: its log ends where the set left it
	damaged := copySet(t, dir)
	pids := restoreSet(t, dir, Options{}, id)
	onlyLog(t, p)
	checkSelf(t, pids[0], p.Log, off)
	testproc.KillAndReap(pids)
	testproc.WaitGone(t, pids)

	var largest string
	var size int64
	for _, n := range dirNames(t, damaged) {
		if st, err := os.Stat(filepath.Join(damaged, n)); err == nil && strings.HasPrefix(n, "ghost-file-") && st.Size() > size {
			largest, size = n, st.Size()
		}
	}
	if size < 3<<16 {
		t.Fatalf("the largest ghost, %s, has %d bytes: not several chunks", largest, size)
	}
	flipByte(t, filepath.Join(damaged, largest), size-100)
	if err := os.Truncate(p.Log, off); err != nil { // as the set saw it
		t.Fatal(err)
	}
	err := restoreErr(t, damaged, Options{}, id)
	t.Logf("damaged ghost: %v", err)
	if !errors.Is(err, cipher.ErrChunkAuth) || !strings.Contains(err.Error(), largest) {
		t.Errorf("damaged ghost: %v, want a chunk authentication error naming %s", err, largest)
	}
	onlyLog(t, p)
}

// flipByte changes one byte of a file.
func flipByte(t *testing.T, name string, at int64) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreCRIUGhost restores the real CRIU set of fixtures/src/ghost.c: two deleted
// files, 2 KiB whole and 40 KiB in two chunks around a hole, at offsets 100 and 20000.
// They come back deleted, with their content, holes, modes and offsets, and nothing is
// left in their directory.
func TestRestoreCRIUGhost(t *testing.T) {
	requireRoot(t)
	dir := criuSet(t, "ghost")
	setupFixtureFiles(t, "ghost")
	run := fixtureRoot + "/run/ghost"
	log := run + "/ghost.log"
	off := savedPos(t, dir, log)
	pids := restoreSet(t, dir, Options{})
	checkFds(t, dir)
	testproc.WaitFor(t, 5*time.Second, "ghost output", func() bool { return strings.Contains(testproc.LogAfter(t, log, off), "ghost n=") })
	if got := fmt.Sprint(dirNames(t, run)); got != "[ghost.log]" {
		t.Errorf("%s holds %s after the restore, want only ghost.log", run, got)
	}
	pid := pids[0]
	small := readFd(t, pid, 3)
	if len(small) != 2048 || !strings.HasPrefix(string(small), "GHOST-SMALL-000000-IMGTOOL-CNRY\n") ||
		!strings.HasSuffix(string(small), "GHOST-SMALL-002016-IMGTOOL-CNRY\n") {
		t.Errorf("small.txt: %d bytes %.40q", len(small), small)
	}
	big := readFd(t, pid, 4)
	if len(big) != 40960 || !strings.HasPrefix(string(big[28672:]), "GHOST-BIG-pg07-off00000-IMGTOOL\n") ||
		strings.Trim(string(big[16384:28672]), "\x00") != "" {
		t.Errorf("big.bin: %d bytes, page 7 %.32q", len(big), big[min(len(big), 28672):])
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/fd/4", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE); err != nil || hole != 16384 {
		t.Errorf("big.bin: first hole at %d (%v), want 16384", hole, err)
	}
	for fd, want := range map[int]string{3: run + "/small.txt (deleted)", 4: run + "/big.bin (deleted)"} {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); l != want {
			t.Errorf("fd %d is %q, want %q", fd, l, want)
		}
	}
}

// readFd reads the whole file behind fd of pid.
func readFd(t *testing.T, pid, fd int) []byte {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRefuseGhosts: a set whose ghost cannot be made as saved is refused before any
// process exists: a remap restore does not make (a dead process's /proc directory), a
// ghost whose entry disagrees with its file entry, its temporary name taken.
func TestRefuseGhosts(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "ghost")
	cases := []struct {
		name, want string
		change     func(t *testing.T, dir string)
	}{
		{"procfs", "is in the /proc directory of a process that had exited: not supported", func(t *testing.T, dir string) {
			rewriteImage(t, dir, "remap-fpath.img", func(img *image.Image) {
				img.Entries[0].Msg.(*remap_file_path.RemapFilePathEntry).RemapType = remap_file_path.RemapType_PROCFS.Enum()
			})
		}},
		{"size", "has size 2049, its ghost 2048 bytes", func(t *testing.T, dir string) {
			rewriteImage(t, dir, "files.img", func(img *image.Image) {
				for _, e := range img.Entries {
					if fe := e.Msg.(*fdinfo.FileEntry); fe.GetId() == 6 {
						fe.Reg.Size = ptr(uint64(2049))
					}
				}
			})
		}},
		{"in the way", "is in the way", func(t *testing.T, dir string) {
			name := fixtureRoot + "/run/ghost/small.txt.cr.1.ghost"
			if err := os.WriteFile(name, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(name) })
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copySet(t, criuSet(t, "ghost"))
			c.change(t, dir)
			if err := refuseErr(t, dir, Options{}); !strings.Contains(err.Error(), c.want) {
				t.Errorf("refused with %q, want %q", err, c.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestCRIUInteropGhosts: testdata/ghosts.c with every state, dumped by one tool and
// restored by the other, checks itself.
func TestCRIUInteropGhosts(t *testing.T) {
	criu := criuBin(t)
	for _, way := range []string{"imgtool dump, CRIU restore", "CRIU dump, imgtool restore"} {
		t.Run(way, func(t *testing.T) {
			byCRIU := strings.HasPrefix(way, "CRIU")
			p := launchGhosts(t, "all")
			root, off := crossCheckpoint(t, criu, p, byCRIU)
			onlyLog(t, p)
			checkSelf(t, root, p.Log, off)
		})
	}
}

// TestGhostChunkPastSize: a chunk of a ghost past the file's saved size (a damaged or
// hostile set) fails the restore when the ghost is made, after the tree exists: the tree
// is killed and the ghost, partly made, removed.
func TestGhostChunkPastSize(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "ghost")
	dir := copySet(t, criuSet(t, "ghost"))
	rewriteImage(t, dir, "ghost-file-2.img", func(img *image.Image) {
		img.Entries[2].Msg.(*ghost_file.GhostChunkEntry).Off = ptr(uint64(30000))
	})
	err := restoreErr(t, dir, Options{})
	if !strings.Contains(err.Error(), "chunk of 12288 bytes at 30000 is past the file's size 40960") {
		t.Errorf("restore: %v, want the chunk past the size", err)
	}
	if got := fmt.Sprint(dirNames(t, fixtureRoot+"/run/ghost")); got != "[ghost.log]" {
		t.Errorf("the directory holds %s after the failed restore", got)
	}
}
