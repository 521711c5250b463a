package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/internal/fpu"
	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
	"github.com/imgtool/imgtool/internal/testset"
)

// TestMain makes the test process a child subreaper: the programs the tests launch and the
// trees they restore become its children when their parents die, so that every one of them
// can be reaped.
func TestMain(m *testing.M) { os.Exit(testproc.Main(m)) }

// The real CRIU 4.2 sets name their programs and files under fixtureRoot; the fixture
// README says what must be there for them to restore.
const fixtureRoot = "/srv/imgtool-fixtures"

// repoFixtures is fixtures/ of the repository.
func repoFixtures(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "fixtures")
}

// criuSet returns the directory of a real CRIU set.
func criuSet(t *testing.T, name string) string {
	return filepath.Join(repoFixtures(t), "criu-4.2", name)
}

func requireRoot(t *testing.T) {
	t.Helper()
	testproc.RequireRoot(t)
}

// setupFixtureFiles puts in place what a real set expects: the exact binaries in
// fixtureRoot/bin, and every file the set names under fixtureRoot/run as files.img
// describes it (directories, FIFOs, data files copied from fixtures/run, logs at the size
// the set recorded).
func setupFixtureFiles(t *testing.T, set string) {
	t.Helper()
	requireHostable(t, set)
	bin := filepath.Join(fixtureRoot, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(repoFixtures(t), "bin")
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		installFile(t, filepath.Join(src, e.Name()), filepath.Join(bin, e.Name()), 0o755)
	}
	ghosts := map[uint32]bool{} // deleted files (remap-fpath.img): made by the restore
	if remaps := filepath.Join(criuSet(t, set), "remap-fpath.img"); fileExists(remaps) {
		for _, e := range readImageFile(t, remaps).Entries {
			ghosts[e.Msg.(*remap_file_path.RemapFilePathEntry).GetOrigId()] = true
		}
	}
	for _, fe := range readFiles(t, criuSet(t, set)) {
		if fe.GetType() != fdinfo.FdTypes_REG {
			continue
		}
		name := fe.Reg.GetName()
		if !strings.HasPrefix(name, fixtureRoot+"/run/") && name != fixtureRoot+"/run" {
			continue
		}
		if ghosts[fe.GetId()] {
			if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
				t.Fatal(err)
			}
			os.Remove(name) // it was deleted: the name must be free
			continue
		}
		mode := fe.Reg.GetMode()
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		switch mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := os.MkdirAll(name, 0o755); err != nil {
				t.Fatal(err)
			}
			os.Chmod(name, os.FileMode(mode&0o777))
		case unix.S_IFIFO:
			var st unix.Stat_t
			if unix.Stat(name, &st) != nil || st.Mode != mode {
				os.Remove(name)
				if err := unix.Mkfifo(name, mode&0o777); err != nil {
					t.Fatal(err)
				}
				os.Chmod(name, os.FileMode(mode&0o777))
			}
		case unix.S_IFREG:
			rel := strings.TrimPrefix(name, fixtureRoot+"/run/")
			if data := filepath.Join(repoFixtures(t), "run", rel); fileExists(data) {
				installFile(t, data, name, os.FileMode(mode&0o777))
				continue
			}
			f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY, os.FileMode(mode&0o777))
			if err != nil {
				t.Fatal(err)
			}
			if fe.Reg.Size != nil {
				if err := f.Truncate(int64(fe.Reg.GetSize())); err != nil {
					t.Fatal(err)
				}
			}
			f.Close()
			os.Chmod(name, os.FileMode(mode&0o777))
		}
	}
}

// requireHostable skips a test whose real CRIU set this machine cannot host whatever
// restore does: its PIDs beyond pid_max, or FPU state of features this CPU lacks (CRIU
// refuses both too). Machines of one kind differ in both.
func requireHostable(t *testing.T, set string) {
	t.Helper()
	pl := setPlan(t, openSet(t, criuSet(t, set)))
	pidMax, err := procfs.PidMax()
	if err != nil {
		t.Fatal(err)
	}
	xs := fpu.CPULayout()
	for _, p := range pl.procs {
		for i, tid := range p.tids {
			if tid >= pidMax {
				t.Skipf("the %s set needs pid %d; this machine's pid_max is %d", set, tid, pidMax)
			}
			if err := xs.Check(p.cores[i].ThreadInfo.Fpregs); err != nil {
				t.Skipf("the %s set was dumped on a CPU this one cannot stand in for: %v", set, err)
			}
		}
	}
}

func fileExists(name string) bool { _, err := os.Stat(name); return err == nil }

// installFile copies src to dst unless dst already has the same bytes; a running binary
// is replaced by rename, never rewritten.
func installFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, want) {
		os.Chmod(dst, mode)
		return
	}
	tmp := dst + ".tmp-restore-test"
	if err := os.WriteFile(tmp, want, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(tmp, mode)
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// readFiles reads files.img of a set.
func readFiles(t *testing.T, dir string) []*fdinfo.FileEntry {
	t.Helper()
	img := readImageFile(t, filepath.Join(dir, "files.img"))
	var out []*fdinfo.FileEntry
	for _, e := range img.Entries {
		out = append(out, e.Msg.(*fdinfo.FileEntry))
	}
	return out
}

func readImageFile(t *testing.T, name string) *image.Image {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := image.ReadImage(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// setSums returns the sha256 of every file of a set, to show restore never changes it.
func setSums(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	for name, b := range testset.ReadAll(t, dir) {
		out[name] = sha256.Sum256(b)
	}
	return out
}

// openSet opens a set, with the identities an encrypted one needs.
func openSet(t *testing.T, dir string, ids ...cipher.Identity) *imgset.Set {
	t.Helper()
	set, err := imgset.Open(dir, imgset.OpenOptions{Identities: ids})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// setPlan reads the plan of an opened set.
func setPlan(t *testing.T, set *imgset.Set) *plan {
	t.Helper()
	pl, err := loadPlan(setSource{set})
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

// setPids lists the pids of an opened set's pstree.
func setPids(t *testing.T, set *imgset.Set) []int {
	t.Helper()
	var pids []int
	for _, p := range setPlan(t, set).all {
		pids = append(pids, p.pid)
	}
	return pids
}

// treePids lists the pids of a set's pstree.
func treePids(t *testing.T, dir string, ids ...cipher.Identity) []int {
	t.Helper()
	return setPids(t, openSet(t, dir, ids...))
}

// restoreSet restores a set detached and registers the cleanup of its processes.
func restoreSet(t *testing.T, dir string, opts Options, ids ...cipher.Identity) []int {
	t.Helper()
	set := openSet(t, dir, ids...)
	pids := setPids(t, set)
	t.Cleanup(func() { testproc.KillAndReap(pids) })
	testproc.WaitGone(t, pids) // a previous test's processes may still be dying
	opts.Detach = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Restore(ctx, opts, set); err != nil {
		t.Fatalf("restore %s: %v", filepath.Base(dir), err)
	}
	return pids
}

// savedPos returns the saved offset of the reg file named name in a set.
func savedPos(t *testing.T, dir, name string) int64 {
	t.Helper()
	for _, fe := range readFiles(t, dir) {
		if fe.Reg != nil && fe.Reg.GetName() == name {
			return int64(fe.Reg.GetPos())
		}
	}
	t.Fatalf("%s is not in %s/files.img", name, dir)
	return 0
}

// checkFds compares every restored fd with the set: what it points at, its access mode and
// O_APPEND, and for files only read, the offset.
func checkFds(t *testing.T, dir string) {
	t.Helper()
	pl := setPlan(t, openSet(t, dir))
	for _, p := range pl.procs {
		for _, fd := range p.fds {
			fe := pl.files[fd.GetId()]
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", p.pid, fd.GetFd()))
			if err != nil {
				t.Errorf("pid %d fd %d: %v", p.pid, fd.GetFd(), err)
				continue
			}
			info, err := procfs.ReadFdinfo(p.pid, int(fd.GetFd()))
			if err != nil {
				t.Fatal(err)
			}
			pos, flags := int64(info.Pos), info.Flags
			var wantName string
			var wantFlags uint32
			switch fe.GetType() {
			case fdinfo.FdTypes_REG:
				wantName, wantFlags = fe.Reg.GetName(), fe.Reg.GetFlags()
				if fe.Reg.GetFlags()&unix.O_ACCMODE == unix.O_RDONLY && pos != int64(fe.Reg.GetPos()) {
					t.Errorf("pid %d fd %d: offset %d, saved %d", p.pid, fd.GetFd(), pos, fe.Reg.GetPos())
				}
			case fdinfo.FdTypes_PIPE:
				wantName, wantFlags = fmt.Sprintf("pipe:[%s", ""), fe.Pipe.GetFlags()
			case fdinfo.FdTypes_FIFO:
				reg := pl.files[fe.Fifo.GetRegfId()].Reg
				wantName, wantFlags = reg.GetName(), reg.GetFlags()
			}
			if !strings.HasPrefix(link, wantName) {
				t.Errorf("pid %d fd %d points at %q, want %q", p.pid, fd.GetFd(), link, wantName)
			}
			const checked = unix.O_ACCMODE | unix.O_APPEND | unix.O_NONBLOCK
			if flags&checked != wantFlags&checked {
				t.Errorf("pid %d fd %d: flags %#o, want %#o", p.pid, fd.GetFd(), flags&checked, wantFlags&checked)
			}
			if cloexec := flags&unix.O_CLOEXEC != 0; cloexec != (fd.GetFlags()&unix.FD_CLOEXEC != 0) {
				t.Errorf("pid %d fd %d: close-on-exec %v, want the opposite", p.pid, fd.GetFd(), cloexec)
			}
		}
	}
}

// checkMM compares /proc views of each restored process with its mm image: the command
// line, the executable, and the heap.
func checkMM(t *testing.T, dir string) {
	t.Helper()
	pl := setPlan(t, openSet(t, dir))
	for _, p := range pl.procs {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.pid))
		if err != nil {
			t.Fatal(err)
		}
		if want := pl.files[p.mm.GetExeFileId()].Reg.GetName(); exe != want {
			t.Errorf("pid %d: exe %q, want %q", p.pid, exe, want)
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid))
		if err != nil {
			t.Fatal(err)
		}
		mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", p.pid))
		if err != nil {
			t.Fatal(err)
		}
		args := make([]byte, p.mm.GetMmArgEnd()-p.mm.GetMmArgStart())
		if _, err := mem.ReadAt(args, int64(p.mm.GetMmArgStart())); err != nil {
			t.Fatal(err)
		}
		mem.Close()
		if !bytes.Equal(cmdline, args) || len(args) == 0 {
			t.Errorf("pid %d: cmdline %q, memory at arg_start %q", p.pid, cmdline, args)
		}
		maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.pid))
		if err != nil {
			t.Fatal(err)
		}
		heap := fmt.Sprintf("%x-", p.mm.GetMmStartBrk())
		if p.mm.GetMmBrk() > p.mm.GetMmStartBrk() && !strings.Contains(string(maps), heap) || !strings.Contains(string(maps), "[heap]") {
			t.Errorf("pid %d: no [heap] at %s in\n%s", p.pid, heap, maps)
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.pid))
		if want := p.leaderCore().Tc.GetComm(); strings.TrimSpace(string(comm)) != want {
			t.Errorf("pid %d: comm %q, want %q", p.pid, comm, want)
		}
	}
}

func TestRestoreCRIUCounter(t *testing.T) {
	requireRoot(t)
	dir := criuSet(t, "counter")
	setupFixtureFiles(t, "counter")
	before := setSums(t, dir)
	log := fixtureRoot + "/run/counter/counter.log"
	off := savedPos(t, dir, log)
	pids := restoreSet(t, dir, Options{})
	// The log held 16 "counter=N" lines after the program's first line when it was dumped
	// (its size is in files.img), so the restored loop goes on with 17.
	testproc.WaitFor(t, 5*time.Second, "counter output", func() bool {
		return strings.Count(testproc.LogAfter(t, log, off), "\n") >= 3
	})
	lines := strings.Split(testproc.LogAfter(t, log, off), "\n")
	for i, want := range []string{"counter=17", "counter=18", "counter=19"} {
		if lines[i] != want {
			t.Fatalf("restored counter printed %q, want %q (all: %q)", lines[i], want, lines)
		}
	}
	checkMM(t, dir)
	checkFds(t, dir)
	// The 8 MiB buffer and the canary are back in memory.
	pid := pids[0]
	mem, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	_ = mem
	if got := grepMemory(t, pid, "IMGTOOL-SECRET-CANARY-b35dc972c25939a5"); !got {
		t.Error("the canary is not in the restored process's memory")
	}
	if after := setSums(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Error("the image set changed during restore")
	}
}

// grepMemory tells whether s is in the readable private memory of pid.
func grepMemory(t *testing.T, pid int, s string) bool {
	t.Helper()
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for _, m := range maps {
		if m.Path == "[vvar]" || m.Path == "[vvar_vclock]" || m.Path == "[vsyscall]" {
			continue
		}
		b := make([]byte, m.End-m.Start)
		n, _ := mem.ReadAt(b, int64(m.Start))
		if bytes.Contains(b[:n], []byte(s)) {
			return true
		}
	}
	return false
}

func TestRestoreCRIUFiles(t *testing.T) {
	requireRoot(t)
	dir := criuSet(t, "files")
	setupFixtureFiles(t, "files")
	appendLog := fixtureRoot + "/run/files/append.log"
	st, err := os.Stat(appendLog)
	if err != nil {
		t.Fatal(err)
	}
	pids := restoreSet(t, dir, Options{})
	pid := pids[0]
	checkFds(t, dir)
	// The O_APPEND fd keeps appending "tick N" lines.
	testproc.WaitFor(t, 5*time.Second, "appended ticks", func() bool {
		return strings.Contains(testproc.LogAfter(t, appendLog, st.Size()), "tick ")
	})
	// The 21 bytes queued in the pipe are still there: read them through a new
	// description of the pipe's read end.
	want := pipeDataOf(t, dir, "pipes-data.img")
	readEnd := findFd(t, dir, pid, fdinfo.FdTypes_PIPE, unix.O_RDONLY)
	got := readQueued(t, fmt.Sprintf("/proc/%d/fd/%d", pid, readEnd))
	if got != want {
		t.Errorf("pipe holds %q, want %q", got, want)
	}
}

// pipeDataOf returns the queued bytes of the single pipe of a pipes/fifo data image.
func pipeDataOf(t *testing.T, dir, name string) string {
	t.Helper()
	img := readImageFile(t, filepath.Join(dir, name))
	if len(img.Entries) != 1 {
		t.Fatalf("%s: %d entries", name, len(img.Entries))
	}
	return string(img.Entries[0].Payload)
}

// findFd returns the fd of pid in the set of the given type and access mode.
func findFd(t *testing.T, dir string, pid int, typ fdinfo.FdTypes, acc uint32) uint32 {
	t.Helper()
	pl := setPlan(t, openSet(t, dir))
	for _, p := range pl.procs {
		if p.pid != pid {
			continue
		}
		for _, fd := range p.fds {
			fe := pl.files[fd.GetId()]
			if fe.GetType() != typ {
				continue
			}
			flags := fe.GetPipe().GetFlags()
			if typ == fdinfo.FdTypes_FIFO {
				flags = pl.files[fe.Fifo.GetRegfId()].Reg.GetFlags()
			}
			if flags&unix.O_ACCMODE == acc {
				return fd.GetFd()
			}
		}
	}
	t.Fatalf("pid %d has no %v fd with access mode %d", pid, typ, acc)
	return 0
}

// readQueued reads what is queued in a pipe or FIFO, without blocking.
func readQueued(t *testing.T, path string) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1<<16)
	n, err := unix.Read(int(f.Fd()), b)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return string(b[:n])
}

func TestRestoreCRIUFifo(t *testing.T) {
	requireRoot(t)
	dir := criuSet(t, "fifo")
	setupFixtureFiles(t, "fifo")
	log := fixtureRoot + "/run/fifo/fifo.log"
	off := savedPos(t, dir, log)
	pids := restoreSet(t, dir, Options{})
	pid := pids[0]
	checkFds(t, dir)
	testproc.WaitFor(t, 5*time.Second, "fifo output", func() bool { return strings.Contains(testproc.LogAfter(t, log, off), "fifo n=") })
	fifoFd := findFd(t, dir, pid, fdinfo.FdTypes_FIFO, unix.O_RDWR)
	if got, want := readQueued(t, fmt.Sprintf("/proc/%d/fd/%d", pid, fifoFd)), pipeDataOf(t, dir, "fifo-data.img"); got != want {
		t.Errorf("FIFO holds %q, want %q", got, want)
	}
	pipeFd := findFd(t, dir, pid, fdinfo.FdTypes_PIPE, unix.O_RDONLY)
	if got, want := readQueued(t, fmt.Sprintf("/proc/%d/fd/%d", pid, pipeFd)), pipeDataOf(t, dir, "pipes-data.img"); got != want {
		t.Errorf("pipe holds %q, want %q", got, want)
	}
}

func TestRestoreCRIUThreads(t *testing.T) {
	requireRoot(t)
	dir := criuSet(t, "threads")
	setupFixtureFiles(t, "threads")
	log := fixtureRoot + "/run/threads/threads.log"
	off := savedPos(t, dir, log)
	pids := restoreSet(t, dir, Options{})
	pid := pids[0]
	pl := setPlan(t, openSet(t, dir))
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var tids []string
	for _, e := range ents {
		tids = append(tids, e.Name())
	}
	if want := fmt.Sprint(pl.procs[0].tids); fmt.Sprint(tids) != strings.ReplaceAll(want, " ", " ") {
		t.Errorf("threads %v, want %v", tids, want)
	}
	// Each line shows the four counters; two lines apart, every worker has counted on.
	testproc.WaitFor(t, 5*time.Second, "two lines of thread counters", func() bool {
		return strings.Count(testproc.LogAfter(t, log, off), "\n") >= 2
	})
	lines := strings.Split(testproc.LogAfter(t, log, off), "\n")
	var a, b [4]uint64
	if _, err := fmt.Sscanf(lines[0], "main=%d t1=%d t2=%d t3=%d", &a[0], &a[1], &a[2], &a[3]); err != nil {
		t.Fatalf("line %q: %v", lines[0], err)
	}
	if _, err := fmt.Sscanf(lines[1], "main=%d t1=%d t2=%d t3=%d", &b[0], &b[1], &b[2], &b[3]); err != nil {
		t.Fatalf("line %q: %v", lines[1], err)
	}
	for i := range a {
		if b[i] <= a[i] {
			t.Errorf("counter %d did not advance: %q then %q", i, lines[0], lines[1])
		}
	}
	if a[0] < 2 {
		t.Errorf("main counter restarted: %q", lines[0])
	}
	checkMM(t, dir)
}

func TestRestoreCRIUTree(t *testing.T) {
	requireRoot(t)
	dir := criuSet(t, "tree")
	setupFixtureFiles(t, "tree")
	log := fixtureRoot + "/run/tree/tree.log"
	off := savedPos(t, dir, log)
	pids := restoreSet(t, dir, Options{})
	pl := setPlan(t, openSet(t, dir))
	for _, p := range pl.procs {
		st, err := procfs.ReadStat(procfs.Path(p.pid, "stat"))
		if err != nil {
			t.Fatal(err)
		}
		ppid, pgid, sid := st.Ppid, st.Pgid, st.Sid
		if p.ppid != 0 && ppid != p.ppid {
			t.Errorf("pid %d: ppid %d, want %d", p.pid, ppid, p.ppid)
		}
		if pgid != p.pgid || sid != p.sid {
			t.Errorf("pid %d: pgid %d sid %d, want %d %d", p.pid, pgid, sid, p.pgid, p.sid)
		}
	}
	// Every process of the tree prints again, with its own pid and parent.
	testproc.WaitFor(t, 5*time.Second, "output of the whole tree", func() bool {
		out := testproc.LogAfter(t, log, off)
		return strings.Contains(out, fmt.Sprintf("parent pid=%d ", pids[0])) &&
			strings.Contains(out, fmt.Sprintf("child0 pid=%d ppid=%d", pids[1], pids[0])) &&
			strings.Contains(out, fmt.Sprintf("child1 pid=%d ppid=%d", pids[2], pids[0]))
	})
	checkMM(t, dir)
	checkFds(t, dir)
}
