package dump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/fpu"
	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
)

// xsaveFields maps the XSAVE components of CRIU's core image to their feature bit in XCR0.
var xsaveFields = map[string]uint{
	"ymmh_space": 2, "bndreg_state": 3, "bndcsr_state": 4, "opmask_reg": 5,
	"zmm_upper": 6, "hi16_zmm": 7, "pkru": 9,
}

// criuDiffs are the documented differences from CRIU's sets (see doc.go) that hold on this
// machine. The XSAVE components a core image holds are those the dumping CPU enabled: the
// fixtures' CPU had no PKU, this one may have it, or lack AVX-512; each tool follows its CPU.
func criuDiffs() map[string]string {
	d := map[string]string{}
	if !fpu.HasShadowStack() {
		for _, f := range []string{"cet", "cet.cet", "cet.ssp"} {
			d["-core-N.img thread_info.fpregs.xsave."+f] = "CRIU writes cet only on CPUs with shadow stacks"
		}
	}
	xcr0 := fpu.CPULayout().XCR0
	for f, bit := range xsaveFields {
		key := "core-N.img thread_info.fpregs.xsave." + f
		if xcr0&(1<<bit) != 0 {
			d["+"+key] = "this CPU enables it; the fixtures' CPU may not have"
		} else {
			d["-"+key] = "the fixtures' CPU enabled it; this one does not"
		}
	}
	return d
}

func TestDumpCounter(t *testing.T) {
	tg := launch(t, "counter", "b35dc972c25939a5")
	s := dumpTarget(t, tg.Pid, false)
	if testproc.Alive(tg.Pid) {
		t.Errorf("process %d still alive after a dump without LeaveRunning", tg.Pid)
	}
	compareWithCRIU(t, s.dir, "counter", criuDiffs())
	// The canary sits in the heap: it must be in the pages, at the address the program printed.
	m := regexp.MustCompile(`secret=0x([0-9a-f]+)`).FindStringSubmatch(tg.ReadLog(t))
	addr, _ := strconv.ParseUint(m[1], 16, 64)
	got := readDumped(t, s.dir, tg.Pid, addr, 64)
	if !bytes.HasPrefix(got, []byte("IMGTOOL-SECRET-CANARY-b35dc972c25939a5")) {
		t.Errorf("canary at %#x: %q", addr, got)
	}
	pt := entries[*pstree.PstreeEntry](t, s.dir, "pstree.img")
	if len(pt) != 1 || pt[0].GetPid() != uint32(tg.Pid) || pt[0].GetPpid() != 0 || pt[0].GetSid() != uint32(tg.Pid) {
		t.Errorf("pstree: %v", pt)
	}
}

// readDumped returns n bytes at vaddr of process pid from its pagemap and pages images.
func readDumped(t *testing.T, dir string, pid int, vaddr uint64, n int) []byte {
	t.Helper()
	pm, err := image.NewPageMap(readImg(t, dir, fmt.Sprintf("pagemap-%d.img", pid)))
	if err != nil {
		t.Fatal(err)
	}
	return readPages(t, dir, pm, vaddr, n)
}

func readPages(t *testing.T, dir string, pm *image.PageMap, vaddr uint64, n int) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, fmt.Sprintf("pages-%d.img", pm.Head.GetPagesId())))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, pageSize)
	base := vaddr &^ (pageSize - 1)
	if err := pm.ReadPage(f, base, page); err != nil {
		t.Fatalf("page %#x: %v", base, err)
	}
	off := int(vaddr - base)
	return page[off : off+n]
}

func TestDumpFiles(t *testing.T) {
	testproc.RequireRoot(t)
	dir := t.TempDir()
	input := bytes.Repeat([]byte("0123456789"), 880)
	if err := os.WriteFile(filepath.Join(dir, "input.txt"), input, 0o644); err != nil {
		t.Fatal(err)
	}
	tg := launch(t, "files", dir)
	s := dumpTarget(t, tg.Pid, false)
	compareWithCRIU(t, s.dir, "files", criuDiffs())

	files := map[uint32]*fdinfo.FileEntry{}
	for _, f := range entries[*fdinfo.FileEntry](t, s.dir, "files.img") {
		files[f.GetId()] = f
	}
	fds := map[uint32]*fdinfo.FdinfoEntry{}
	for _, f := range entries[*fdinfo.FdinfoEntry](t, s.dir, "fdinfo-2.img") {
		fds[f.GetFd()] = f
	}
	if len(fds) != 8 {
		t.Fatalf("%d fds, want 8", len(fds))
	}
	if fds[1].GetId() != fds[2].GetId() {
		t.Errorf("stdout and stderr share one open file but got ids %d and %d", fds[1].GetId(), fds[2].GetId())
	}
	in := files[fds[3].GetId()].GetReg()
	if in.GetPos() != 1234 || in.GetSize() != 8800 || !strings.HasSuffix(in.GetName(), "/input.txt") {
		t.Errorf("input.txt: %v", in)
	}
	ap := files[fds[4].GetId()].GetReg()
	if ap.GetFlags()&uint32(os.O_APPEND) == 0 {
		t.Errorf("append.log flags %#x without O_APPEND", ap.GetFlags())
	}
	if ap.Size != nil {
		t.Errorf("append.log has a size; CRIU leaves it out for O_WRONLY|O_APPEND")
	}
	if files[fds[5].GetId()].GetPipe().GetPipeId() != files[fds[6].GetId()].GetPipe().GetPipeId() {
		t.Errorf("pipe ends with different pipe ids")
	}
	pd := readPipeData(t, s.dir, "pipes-data.img")
	if len(pd) != 1 || pd[0] != "data-sitting-in-pipe\n" {
		t.Errorf("pipe data %q", pd)
	}
	null := files[fds[7].GetId()].GetReg()
	if null.GetName() != "/dev/null" || null.GetFlags()&3 != 2 || null.Size != nil {
		t.Errorf("/dev/null: %v", null)
	}
}

// readPipeData returns the queued bytes of each entry of a pipes-data/fifo-data image.
func readPipeData(t *testing.T, dir, name string) []string {
	t.Helper()
	var out []string
	for _, e := range readImg(t, dir, name).Entries {
		pde := e.Msg.(*pipe_data.PipeDataEntry)
		if int(pde.GetBytes()) != len(e.Payload) || pde.GetSize() == 0 {
			t.Errorf("%s: entry %v with %d payload bytes", name, pde, len(e.Payload))
		}
		out = append(out, string(e.Payload))
	}
	return out
}

func TestDumpThreads(t *testing.T) {
	tg := launch(t, "threads")
	time.Sleep(100 * time.Millisecond) // let the threads start
	s := dumpTarget(t, tg.Pid, false)
	compareWithCRIU(t, s.dir, "threads", criuDiffs())
	pt := entries[*pstree.PstreeEntry](t, s.dir, "pstree.img")
	if len(pt) != 1 || len(pt[0].GetThreads()) != 4 || pt[0].GetThreads()[0] != uint32(tg.Pid) {
		t.Fatalf("pstree: %v", pt)
	}
	for _, tid := range pt[0].GetThreads() {
		c := entries[*criu_core.CoreEntry](t, s.dir, fmt.Sprintf("core-%d.img", tid))[0]
		if (c.Tc != nil) != (tid == uint32(tg.Pid)) {
			t.Errorf("thread %d: task core present=%v", tid, c.Tc != nil)
		}
		if c.GetThreadInfo().GetGpregs().GetFsBase() == 0 || c.GetThreadInfo().GetClearTidAddr() == 0 {
			t.Errorf("thread %d: fs_base or clear_tid_addr missing", tid)
		}
	}
}

func TestDumpTree(t *testing.T) {
	tg := launch(t, "tree")
	tg.WaitLog(t, "child1", 5*time.Second)
	s := dumpTarget(t, tg.Pid, false)
	compareWithCRIU(t, s.dir, "tree", criuDiffs())
	pt := entries[*pstree.PstreeEntry](t, s.dir, "pstree.img")
	if len(pt) != 3 {
		t.Fatalf("pstree: %v", pt)
	}
	for _, e := range pt[1:] {
		if e.GetPpid() != uint32(tg.Pid) || e.GetPgid() != uint32(tg.Pid) || e.GetSid() != uint32(tg.Pid) {
			t.Errorf("child %v", e)
		}
		if testproc.Alive(int(e.GetPid())) {
			t.Errorf("child %d survived the dump", e.GetPid())
		}
	}
	// The children inherited stdout: one open file, one id, in every process.
	id := func(files int) uint32 {
		return entries[*fdinfo.FdinfoEntry](t, s.dir, fmt.Sprintf("fdinfo-%d.img", files))[1].GetId()
	}
	if id(2) != id(3) || id(3) != id(4) {
		t.Errorf("stdout ids differ between processes: %d %d %d", id(2), id(3), id(4))
	}
}

func TestDumpFifo(t *testing.T) {
	tg := launch(t, "fifo", "{dir}")
	s := dumpTarget(t, tg.Pid, true)
	compareWithCRIU(t, s.dir, "fifo", criuDiffs())
	fd := readPipeData(t, s.dir, "fifo-data.img")
	pd := readPipeData(t, s.dir, "pipes-data.img")
	if len(fd) != 1 || fd[0] != "FIFO-UNREAD-DATA:IMGTOOL-FIFO-CANARY:0123456789abcdef" {
		t.Errorf("fifo data %q", fd)
	}
	if len(pd) != 1 || len(pd[0]) != 68 {
		t.Errorf("pipe data %q", pd)
	}
	// The data was copied, not consumed: a second dump sees it again.
	s2 := dumpTarget(t, tg.Pid, true)
	if got := readPipeData(t, s2.dir, "fifo-data.img"); len(got) != 1 || got[0] != fd[0] {
		t.Errorf("second dump: fifo data %q", got)
	}
	if got := readPipeData(t, s2.dir, "pipes-data.img"); len(got) != 1 || got[0] != pd[0] {
		t.Errorf("second dump: pipe data %q", got)
	}
}

func TestDumpLeaveRunning(t *testing.T) {
	tg := launch(t, "counter", "leave")
	tg.WaitLog(t, "counter=2\n", 5*time.Second)
	dumpTarget(t, tg.Pid, true)
	// The loop goes on: counters keep coming, in order, without a gap or a repeat.
	tg.WaitLog(t, "counter=8\n", 5*time.Second)
	log := tg.ReadLog(t)
	for i := 1; i <= 8; i++ {
		if strings.Count(log, fmt.Sprintf("counter=%d\n", i)) != 1 {
			t.Errorf("counter=%d printed %d times:\n%s", i, strings.Count(log, fmt.Sprintf("counter=%d\n", i)), log)
		}
	}
	st, err := procfs.ReadStatus(procfs.Path(tg.Pid, "status"))
	if err != nil || st["TracerPid"] != "0" || !testproc.Alive(tg.Pid) {
		t.Errorf("after the dump: %v, TracerPid %q, alive %v", err, st["TracerPid"], testproc.Alive(tg.Pid))
	}
}

func TestDumpMemKinds(t *testing.T) {
	tg := launch(t, "memkinds", "{dir}")
	s := dumpTarget(t, tg.Pid, false)
	log := tg.ReadLog(t)
	addr := func(name string) uint64 {
		m := regexp.MustCompile(name + `=0x([0-9a-f]+)`).FindStringSubmatch(log)
		if m == nil {
			t.Fatalf("no %s in %q", name, log)
		}
		v, _ := strconv.ParseUint(m[1], 16, 64)
		return v
	}
	for name, want := range map[string]string{"rw": "MEMKINDS-ANON-RW", "ro": "MEMKINDS-ANON-RO",
		"none": "MEMKINDS-ANON-NONE", "file": "MEMKINDS-FILE-COW"} {
		if got := readDumped(t, s.dir, tg.Pid, addr(name), len(want)); string(got) != want {
			t.Errorf("%s at %#x: %q, want %q", name, addr(name), got, want)
		}
	}
	pm, err := image.NewPageMap(readImg(t, s.dir, fmt.Sprintf("pagemap-%d.img", tg.Pid)))
	if err != nil {
		t.Fatal(err)
	}
	// Only the page copied on write of the file mapping is dumped, not the one only read.
	if _, ok := pm.Offset(addr("file") - 2*pageSize); ok {
		t.Errorf("an unmodified page of a private file mapping was dumped")
	}
	for _, name := range []string{"shared", "memfd"} {
		if _, ok := pm.Offset(addr(name)); ok {
			t.Errorf("%s memory dumped in the process pagemap, want it in pagemap-shmem", name)
		}
	}
	// Shared memory: one memfd inode per object, its pages in pagemap-shmem-INO.img.
	inodes := map[string]*memfd.MemfdInodeEntry{}
	for _, e := range entries[*memfd.MemfdInodeEntry](t, s.dir, "memfd.img") {
		inodes[e.GetName()] = e
	}
	if len(inodes) != 2 || inodes["/dev/zero"] == nil || inodes["memkinds-memfd"] == nil {
		t.Fatalf("memfd inodes: %v", inodes)
	}
	for name, want := range map[string]struct {
		off  uint64
		text string
	}{"/dev/zero": {3 * pageSize, "MEMKINDS-SHARED-ANON"}, "memkinds-memfd": {pageSize, "MEMKINDS-MEMFD"}} {
		spm, err := image.NewPageMap(readImg(t, s.dir, fmt.Sprintf("pagemap-shmem-%d.img", inodes[name].GetShmid())))
		if err != nil {
			t.Fatal(err)
		}
		if len(spm.Entries) != 1 || image.NrPages(spm.Entries[0]) != 1 {
			t.Errorf("shmem %s: %d entries, want 1 entry of the 1 written page", name, len(spm.Entries))
		}
		if got := readPages(t, s.dir, spm, want.off, len(want.text)); string(got) != want.text {
			t.Errorf("shmem %s: %q", name, got)
		}
		if inodes[name].GetSeals() != 1 || inodes[name].GetMode() != 0o100777 {
			t.Errorf("shmem %s: %v", name, inodes[name])
		}
	}
	// The memfd is also open as an fd: a MEMFD file entry on the same inode.
	var memfdFds int
	for _, f := range entries[*fdinfo.FileEntry](t, s.dir, "files.img") {
		if f.GetMemfd() != nil && f.GetMemfd().GetInodeId() == uint32(inodes["memkinds-memfd"].GetInodeId()) {
			memfdFds++
		}
	}
	if memfdFds != 2 {
		t.Errorf("%d MEMFD file entries on the memfd inode, want 2 (the mapping and the fd)", memfdFds)
	}
	m := entries[*mm.MmEntry](t, s.dir, fmt.Sprintf("mm-%d.img", tg.Pid))[0]
	status := map[uint64]uint32{}
	for _, v := range m.GetVmas() {
		status[v.GetStart()] = v.GetStatus()
		if v.GetStart() <= addr("none") && addr("none") < v.GetEnd() && v.GetProt() != 0 {
			t.Errorf("PROT_NONE area saved with prot %#x", v.GetProt())
		}
	}
	if st := status[addr("shared")-3*pageSize]; st != image.VMAAreaRegular|image.VMAFileShared|image.VMAAreaMemfd {
		t.Errorf("MAP_SHARED|MAP_ANONYMOUS status %#x", st)
	}
	c := entries[*criu_core.CoreEntry](t, s.dir, fmt.Sprintf("core-%d.img", tg.Pid))[0]
	// SIGKILL is left out of the list: SIGUSR1 (10) is its 9th entry.
	if sa := c.GetTc().GetSigactions()[8]; sa.GetSigaction() == 0 || sa.GetMask() != 1<<11 || sa.GetRestorer() == 0 {
		t.Errorf("SIGUSR1 action %v", sa)
	}
	if c.GetTc().GetBlkSigset() != 1 {
		t.Errorf("blocked signals %#x, want SIGHUP", c.GetTc().GetBlkSigset())
	}
	if sas := c.GetThreadCore().GetSas(); sas.GetSsSp() != addr("alt") || sas.GetSsSize() != 65536 || sas.GetSsFlags() != 0 {
		t.Errorf("altstack %v", sas)
	}
}

func TestDumpRefusals(t *testing.T) {
	for _, tc := range []struct {
		prog, args string
		fd         int
		want       string
	}{
		{"socket", "", 3, "has datagrams queued in its receive queue"},
		{"tcp", "47198", 4, "saved only with --tcp-established"},
		{"tty", "devtty", 5, "which is not the controlling terminal of the process now"},
		{"tty", "queued", 3, "bytes are queued to be read from it"},
		{"tty", "master", 3, "a master alone is not supported"},
		{"traced", "", -1, "already traced"},
		{"utsns", "", -1, "uts namespace uts:["},
		{"iouring", "", 3, "fd 3 is anon_inode:[io_uring]: io_uring is not supported"},
	} {
		t.Run(tc.prog, func(t *testing.T) {
			var args []string
			if tc.args != "" {
				args = []string{tc.args}
			}
			tg := launch(t, tc.prog, args...)
			before := tg.ReadLog(t)
			s := newDirSink(t)
			seized := seizes.Load()
			err := Dump(context.Background(), Options{Pid: tg.Pid}, s)
			if n := seizes.Load() - seized; n != 0 {
				t.Errorf("the refusal came after %d thread(s) were seized", n)
			}
			var re *RefusedError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.want) || re.Fd != tc.fd {
				t.Fatalf("err = %v, want a refusal naming %q (fd %d)", err, tc.want, tc.fd)
			}
			if _, err := os.Stat(s.dir); err == nil {
				t.Errorf("a set was left behind")
			}
			// Untouched: alive, and its log only grew (some of them print as they run).
			if !testproc.Alive(tg.Pid) || !strings.HasPrefix(tg.ReadLog(t), before) {
				t.Errorf("target changed: alive %v", testproc.Alive(tg.Pid))
			}
			if st, _ := procfs.ReadStatus(procfs.Path(tg.Pid, "status")); tc.prog != "traced" && st["TracerPid"] != "0" {
				t.Errorf("target left traced by %s", st["TracerPid"])
			}
		})
	}
}

func TestDumpInterrupted(t *testing.T) {
	tg := launch(t, "counter", "interrupted")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newDirSink(t)
	calls := 0
	err := Dump(ctx, Options{Pid: tg.Pid, Progress: func(done, total int64) {
		calls++
		cancel() // mid-way through the pages
	}}, s)
	if !errors.Is(err, context.Canceled) || calls == 0 {
		t.Fatalf("err = %v after %d progress calls, want context.Canceled mid-way", err, calls)
	}
	if !s.aborted || s.committed {
		t.Errorf("sink aborted=%v committed=%v", s.aborted, s.committed)
	}
	if _, err := os.Stat(s.tmp); err == nil {
		t.Errorf("staging directory left behind")
	}
	// The target goes on from where it was: its counter keeps advancing.
	n := strings.Count(tg.ReadLog(t), "counter=")
	tg.WaitLog(t, fmt.Sprintf("counter=%d\n", n+3), 5*time.Second)
	if st, _ := procfs.ReadStatus(procfs.Path(tg.Pid, "status")); st["TracerPid"] != "0" {
		t.Errorf("target left traced")
	}
}

// TestDumpChangingTree dumps, repeatedly and leaving it running, a tree whose children are
// born and exit all the time (xargs -P2 running short shells): a process that goes away or
// dies while the tree is being checked or stopped is dropped or waited for, never a failure.
func TestDumpChangingTree(t *testing.T) {
	testproc.RequireRoot(t)
	tg := testproc.Launch(t, "/bin/sh", testproc.Options{},
		"-c", `echo pid=$$; seq 1 1000000 | xargs -P2 -n1 sh -c 'sleep 0.00$0'`)
	for i := 0; i < 8; i++ {
		s := newDirSink(t)
		if err := Dump(context.Background(), Options{Pid: tg.Pid, LeaveRunning: true, COWCopies: true}, s); err != nil {
			t.Fatalf("dump %d of a changing tree: %v", i, err)
		}
		if !s.committed {
			t.Fatalf("dump %d: not committed", i)
		}
		if st, _ := procfs.ReadStatus(procfs.Path(tg.Pid, "status")); st["TracerPid"] != "0" {
			t.Fatalf("dump %d: the root is left traced", i)
		}
		time.Sleep(time.Duration(i) * 7 * time.Millisecond)
	}
}
