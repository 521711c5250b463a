package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/dump"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/internal/fpu"
	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
	"github.com/imgtool/imgtool/internal/testset"
)

// copySet copies a set into a fresh temporary directory.
func copySet(t *testing.T, src string) string {
	t.Helper()
	return testset.Copy(t, src)
}

// rewriteImage changes the entries of one image of a set copy.
func rewriteImage(t *testing.T, dir, name string, change func(*image.Image)) {
	t.Helper()
	img := readImageFile(t, filepath.Join(dir, name))
	change(img)
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// restoreErr restores a set detached and returns its error, checking that it left none of
// the set's processes and no helper behind.
func restoreErr(t *testing.T, dir string, opts Options, ids ...cipher.Identity) error {
	t.Helper()
	set := openSet(t, dir, ids...)
	pids := setPids(t, set)
	t.Cleanup(func() { testproc.KillAndReap(pids) })
	testproc.WaitGone(t, pids)
	opts.Detach = true
	before := ourChildren(t)
	err := Restore(context.Background(), opts, set)
	if err == nil {
		t.Fatal("restore succeeded")
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	if after := ourChildren(t); after != before {
		t.Errorf("restore left children behind: before %q, after %q", before, after)
	}
	for _, pid := range pids {
		if fileExists(fmt.Sprintf("/proc/%d", pid)) {
			t.Errorf("pid %d of the set exists after the failed restore", pid)
		}
	}
	return err
}

// refuseErr is restoreErr for a set that precheck must refuse: no helper, hence no
// process, may have been started before the refusal.
func refuseErr(t *testing.T, dir string, opts Options, ids ...cipher.Identity) error {
	t.Helper()
	before := helperStarts.Load()
	err := restoreErr(t, dir, opts, ids...)
	if n := helperStarts.Load() - before; n != 0 {
		t.Errorf("the refusal (%v) came after %d helper process(es) were started", err, n)
	}
	return err
}

// ourChildren lists the children of this process.
func ourChildren(t *testing.T) string {
	t.Helper()
	var all []string
	ents, _ := os.ReadDir("/proc/self/task")
	for _, e := range ents {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/self/task/%s/children", e.Name()))
		if s := strings.TrimSpace(string(b)); s != "" {
			all = append(all, s)
		}
	}
	return strings.Join(all, " ")
}

func TestRefusePidInUse(t *testing.T) {
	requireRoot(t)
	dir := criuSet(t, "counter")
	setupFixtureFiles(t, "counter")
	pids := restoreSet(t, dir, Options{})
	set, err := imgset.Open(dir, imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := helperStarts.Load()
	err = Restore(context.Background(), Options{Detach: true}, set)
	if helperStarts.Load() != before {
		t.Error("a helper was started before the PID check refused the set")
	}
	if want := fmt.Sprintf("pid %d is in use", pids[0]); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("restoring twice: %v, want %q", err, want)
	}
}

// TestRestoreWaitsForZombiePid: a PID of the set held by a zombie (the set's process,
// killed, not reaped yet: as right after a dump that killed it, whose parent reaps late)
// is waited for; the restore then goes on.
func TestRestoreWaitsForZombiePid(t *testing.T) {
	requireRoot(t)
	dir := criuSet(t, "counter")
	setupFixtureFiles(t, "counter")
	pids := restoreSet(t, dir, Options{})
	// Its parent is this test (a child subreaper, testproc.Main), which reaps it late.
	if err := unix.Kill(pids[0], unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testproc.WaitFor(t, 0, "a zombie", func() bool {
		st, err := procfs.ReadStatus(procfs.Path(pids[0], "status"))
		return err == nil && strings.HasPrefix(st["State"], "Z")
	})
	setupFixtureFiles(t, "counter") // its log as the set recorded it
	reaped := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, err := unix.Wait4(pids[0], nil, 0, nil)
		reaped <- err
	}()
	set, err := imgset.Open(dir, imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Restore(context.Background(), Options{Detach: true}, set); err != nil {
		t.Fatalf("restore while pid %d was a zombie: %v", pids[0], err)
	}
	if err := <-reaped; err != nil {
		t.Fatalf("reaping the zombie: %v", err)
	}
	if !testproc.Alive(pids[0]) {
		t.Errorf("pid %d is not running after the restore", pids[0])
	}
}

func TestRefuseChangedOrMissingFile(t *testing.T) {
	requireRoot(t)
	dir := criuSet(t, "counter")
	setupFixtureFiles(t, "counter")
	log := fixtureRoot + "/run/counter/counter.log"
	st, err := os.Stat(log)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(log, st.Size()+1); err != nil {
		t.Fatal(err)
	}
	err = refuseErr(t, dir, Options{})
	if !strings.Contains(err.Error(), log+" has changed: size") {
		t.Errorf("changed size: %v", err)
	}
	if err := os.Remove(log); err != nil {
		t.Fatal(err)
	}
	err = refuseErr(t, dir, Options{})
	if !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	setupFixtureFiles(t, "counter")
}

func TestRefuseChangedBuildID(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "counter")
	dir := copySet(t, criuSet(t, "counter"))
	exe := ""
	rewriteImage(t, dir, "files.img", func(img *image.Image) {
		for _, e := range img.Entries {
			fe := e.Msg.(*fdinfo.FileEntry)
			if fe.Reg != nil && len(fe.Reg.BuildId) > 0 && strings.HasPrefix(fe.Reg.GetName(), fixtureRoot) {
				fe.Reg.BuildId[0] ^= 1
				exe = fe.Reg.GetName()
			}
		}
	})
	err := refuseErr(t, dir, Options{})
	if !strings.Contains(err.Error(), exe+" has changed: build id") {
		t.Errorf("changed build id: %v", err)
	}
}

func TestRefuseMissingXsaveFeature(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "counter")
	lacking := fpu.ImageFeatures &^ fpu.CPULayout().XCR0
	if lacking == 0 {
		t.Skip("this CPU has every XSAVE component CRIU images hold")
	}
	dir := copySet(t, criuSet(t, "counter"))
	pid := treePids(t, dir)[0]
	rewriteImage(t, dir, fmt.Sprintf("core-%d.img", pid), func(img *image.Image) {
		x := img.Entries[0].Msg.(*criu_core.CoreEntry).ThreadInfo.Fpregs.Xsave
		bv := x.GetXstateBv() | lacking&-lacking // the lowest feature this CPU lacks
		x.XstateBv = &bv
		x.BndregState = make([]uint64, 8)
		x.BndcsrState = make([]uint64, 8)
		x.Pkru = make([]uint32, 2)
	})
	err := refuseErr(t, dir, Options{})
	if !strings.Contains(err.Error(), "XSAVE features") || !strings.Contains(err.Error(), "this CPU lacks") {
		t.Errorf("missing XSAVE feature: %v", err)
	}
}

// TestRefuseOtherKernelVDSO: a set whose vDSO differs in size from this kernel's is
// refused before any process exists (the size is learned from imgtool's own vDSO).
func TestRefuseOtherKernelVDSO(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "counter")
	dir := copySet(t, criuSet(t, "counter"))
	pid := treePids(t, dir)[0]
	rewriteImage(t, dir, fmt.Sprintf("mm-%d.img", pid), func(img *image.Image) {
		for _, v := range img.Entries[0].Msg.(*mm.MmEntry).Vmas {
			if v.GetStatus()&image.VMAAreaVDSO != 0 {
				end := v.GetEnd() + uint64(os.Getpagesize())
				v.End = &end
			}
		}
	})
	err := refuseErr(t, dir, Options{})
	if !strings.Contains(err.Error(), "the set was made on another kernel") {
		t.Errorf("other vDSO: %v", err)
	}
}

func TestFailureMidwayKillsEverything(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "tree")
	dir := copySet(t, criuSet(t, "tree"))
	pids := treePids(t, dir)
	testproc.WaitGone(t, pids)
	// The last process's pages end early: restore fails after the whole tree exists.
	pagemap := readImageFile(t, filepath.Join(dir, fmt.Sprintf("pagemap-%d.img", pids[len(pids)-1])))
	pm, err := image.NewPageMap(pagemap)
	if err != nil {
		t.Fatal(err)
	}
	pages := filepath.Join(dir, fmt.Sprintf("pages-%d.img", pm.Head.GetPagesId()))
	if err := os.Truncate(pages, pm.PagesSize()-image.PageSize); err != nil {
		t.Fatal(err)
	}
	err = restoreErr(t, dir, Options{})
	if !strings.Contains(err.Error(), filepath.Base(pages)) {
		t.Errorf("truncated pages: %v", err)
	}
	testproc.WaitGone(t, pids)
}

func TestRestoreWaitsForRoot(t *testing.T) {
	requireRoot(t)
	dir := criuSet(t, "counter")
	setupFixtureFiles(t, "counter")
	pids := treePids(t, dir)
	testproc.WaitGone(t, pids)
	t.Cleanup(func() { testproc.KillAndReap(pids) })
	set, err := imgset.Open(dir, imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	done := make(chan error, 1)
	go func() { done <- Restore(context.Background(), Options{PidFile: pidFile}, set) }()
	testproc.WaitFor(t, 10*time.Second, "the pid file", func() bool { return fileExists(pidFile) })
	b, _ := os.ReadFile(pidFile)
	if want := fmt.Sprintf("%d\n", pids[0]); string(b) != want {
		t.Errorf("pid file holds %q, want %q", b, want)
	}
	if err := unix.Kill(pids[0], unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var exit *ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 128+int(unix.SIGTERM) {
			t.Fatalf("restore returned %v, want the root's SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("restore did not return after its root ended")
	}
}

// TestRefuseImageOfAnotherKind: an image whose content is of another kind than its name
// says (an mm image saved as core-PID.img) fails the restore, naming both kinds, before
// any process exists.
func TestRefuseImageOfAnotherKind(t *testing.T) {
	dir := copySet(t, criuSet(t, "counter"))
	mm, err := filepath.Glob(filepath.Join(dir, "mm-*.img"))
	if err != nil || len(mm) != 1 {
		t.Fatalf("mm images %v, %v", mm, err)
	}
	core := filepath.Join(dir, "core-"+strings.TrimPrefix(filepath.Base(mm[0]), "mm-"))
	b, err := os.ReadFile(mm[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(core, b, 0o600); err != nil {
		t.Fatal(err)
	}
	before := ourChildren(t)
	err = Restore(context.Background(), Options{Detach: true}, openSet(t, dir))
	if after := ourChildren(t); after != before {
		t.Errorf("restore left children behind: before %q, after %q", before, after)
	}
	if want := filepath.Base(core) + ": a MM image, where its name says CORE"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
}

// TestRootOutsideItsSession: a set whose root did not lead its session (a shell's job, a
// daemon that forked twice; dump --shell-job) is refused without ShellJob, before anything
// is made, as the restore would leave the root in imgtool's session; with it the root
// runs, in imgtool's session.
func TestRootOutsideItsSession(t *testing.T) {
	requireRoot(t)
	sh := testproc.Launch(t, "/bin/sh", testproc.Options{Ready: "job="}, "-c", "sleep 1000 & echo job=$!; wait")
	var job int
	if _, err := fmt.Sscanf(sh.ReadLog(t)[strings.Index(sh.ReadLog(t), "job="):], "job=%d", &job); err != nil {
		t.Fatal(err)
	}
	dir := dumpWith(t, dump.Options{Pid: job, ShellJob: true})
	err := refuseErr(t, dir, Options{})
	if want := fmt.Sprintf("pid %d, the root, did not lead its session %d", job, sh.Pid); !strings.Contains(err.Error(), want) {
		t.Fatalf("restore: %v, want %q", err, want)
	}
	pids := restoreSet(t, dir, Options{ShellJob: true})
	sid, err := unix.Getsid(pids[0])
	if own, _ := unix.Getsid(0); err != nil || sid != own {
		t.Errorf("the restored root's session is %d (%v), want imgtool's, %d", sid, err, own)
	}
}
