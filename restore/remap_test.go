package restore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"

	"github.com/imgtool/imgtool/dump"
	"github.com/imgtool/imgtool/internal/testproc"
)

// launchLinkRemap starts a copy of testdata/linkremap.c (its exe state unlinks it) in
// mode, in a fresh directory; the copy is alone in a directory of its own.
func launchLinkRemap(t *testing.T, mode string) *testproc.Proc {
	t.Helper()
	b, err := os.ReadFile(testproc.Build(t, "testdata/linkremap.c"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "linkremap")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, mode)
}

// links lists the link_remap.* names in dir.
func links(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "link_remap.*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// linkedRemaps counts the LINKED entries of a set's remap-fpath.img.
func linkedRemaps(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	if !fileExists(filepath.Join(dir, "remap-fpath.img")) {
		return 0
	}
	for _, e := range readImageFile(t, filepath.Join(dir, "remap-fpath.img")).Entries {
		if e.Msg.(*remap_file_path.RemapFilePathEntry).GetRemapType() == remap_file_path.RemapType_LINKED {
			n++
		}
	}
	return n
}

// exeDir is the directory of the copy of the program p runs.
func exeDir(t *testing.T, p *testproc.Proc) string {
	t.Helper()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(exe)
}

// checkLinkRemapDirs checks what is left in the program's directories: the second names
// the program gave its files, its log, and no link or temporary name.
func checkLinkRemapDirs(t *testing.T, p *testproc.Proc, bindir, mode string) {
	t.Helper()
	want := map[string]string{"files": "[b.txt g.fifo linkremap.log]", "exe": "[linkremap.log]", "all": "[b.txt g.fifo linkremap.log]"}[mode]
	if got := fmt.Sprint(dirNames(t, p.Dir)); got != want {
		t.Errorf("the program's directory holds %s, want %s", got, want)
	}
	if got := fmt.Sprint(dirNames(t, bindir)); mode != "files" && got != "[linkremap.kept]" {
		t.Errorf("the executable's directory holds %s, want only linkremap.kept", got)
	}
}

// TestRoundTripLinkRemap dumps with LinkRemap and restores testdata/linkremap.c, once per
// state: a file open and mapped (shared and private) and a FIFO open, each with its first
// name removed and a second one left, and an executable so: the dump leaves a link per
// reg entry (the fd's, the mappings', the FIFO's; the executable's), the restore opens
// each file through its link and removes the links; the program then finds its fds and
// mappings on the inodes of the names left, with one name each, the same content,
// writes through them in the other name, "NAME (deleted)" in /proc.
func TestRoundTripLinkRemap(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		mode  string
		links int
	}{{"files", 3}, {"exe", 1}} {
		t.Run(c.mode, func(t *testing.T) {
			p := launchLinkRemap(t, c.mode)
			bindir := exeDir(t, p)
			dir := dumpWith(t, dump.Options{Pid: p.Pid, LinkRemap: true})
			if n := linkedRemaps(t, dir); n != c.links {
				t.Errorf("the set has %d LINKED remaps, want %d", n, c.links)
			}
			if n := len(links(t, p.Dir)) + len(links(t, bindir)); n != c.links {
				t.Errorf("%d links after the dump, want %d (they stay for the restore)", n, c.links)
			}
			off := savedPos(t, dir, p.Log)
			pids := restoreSet(t, dir, Options{})
			checkLinkRemapDirs(t, p, bindir, c.mode)
			checkSelf(t, pids[0], p.Log, off)
		})
	}
}

// TestLinkRemapRestoreFails: a restore that fails midway, once it has opened the files
// through their links (a cancelled context, while pages are written), leaves the links
// as CRIU's does (it removes only ghosts then) and no temporary name; the set then
// restores again.
func TestLinkRemapRestoreFails(t *testing.T) {
	requireRoot(t)
	p := launchLinkRemap(t, "files")
	dir := dumpWith(t, dump.Options{Pid: p.Pid, LinkRemap: true})
	off := savedPos(t, dir, p.Log)
	set := openSet(t, dir)
	pids := setPids(t, set)
	t.Cleanup(func() { testproc.KillAndReap(pids) })
	testproc.WaitGone(t, pids)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opened := 0 // imgtool's handles on a.txt (deleted) as the restore was cancelled
	err := Restore(ctx, Options{Detach: true, Progress: func(done, total int64) {
		if opened == 0 {
			opened = ourHandlesOn(t, "/a.txt (deleted)")
		}
		cancel()
	}}, set)
	if err == nil {
		t.Fatal("the cancelled restore succeeded")
	}
	if opened != 2 {
		t.Fatalf("%d handles on a.txt as the restore was cancelled, want 2 (the fd's and the mappings'): it failed too early to test anything", opened)
	}
	for _, pid := range pids {
		if fileExists(fmt.Sprintf("/proc/%d", pid)) {
			t.Errorf("pid %d exists after the failed restore", pid)
		}
	}
	if got := fmt.Sprint(dirNames(t, p.Dir)); !strings.HasPrefix(got, "[b.txt g.fifo link_remap.") || len(links(t, p.Dir)) != 3 {
		t.Errorf("after the failed restore the directory holds %s, want b.txt, g.fifo and the 3 links", got)
	}
	pids = restoreSet(t, dir, Options{})
	checkLinkRemapDirs(t, p, exeDir(t, p), "files")
	checkSelf(t, pids[0], p.Log, off)
}

// ourHandlesOn counts this process's fds whose /proc link ends with suffix.
func ourHandlesOn(t *testing.T, suffix string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasSuffix(l, suffix) {
			n++
		}
	}
	return n
}

// TestRefuseLinkRemap: a set whose link is gone, is a symbolic link, or names a file that
// is not the one saved (another size), is refused before any process exists.
func TestRefuseLinkRemap(t *testing.T) {
	requireRoot(t)
	p := launchLinkRemap(t, "files")
	dir := dumpWith(t, dump.Options{Pid: p.Pid, LinkRemap: true})
	files := map[uint32]string{}
	for _, fe := range readFiles(t, dir) {
		files[fe.GetId()] = fe.GetReg().GetName()
	}
	r := readImageFile(t, filepath.Join(dir, "remap-fpath.img")).Entries[0].Msg.(*remap_file_path.RemapFilePathEntry)
	name, link := files[r.GetOrigId()], files[r.GetRemapId()]
	if name != p.Dir+"/a.txt" || link != fmt.Sprintf("%s/link_remap.%d", p.Dir, r.GetRemapId()) {
		t.Fatalf("the first remap is of %s through %s, want a.txt's", name, link)
	}
	for _, c := range []struct {
		name, want string
		change     func(t *testing.T)
	}{
		{"gone", fmt.Sprintf("%s (file id %d) is saved through the link %s a dump made for it (--link-remap), which is gone", name, r.GetOrigId(), link), func(t *testing.T) {
			if err := os.Rename(link, p.Dir+"/moved"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Rename(p.Dir+"/moved", link) })
		}},
		{"symlink", fmt.Sprintf("%s (file id %d): its link %s is a symbolic link", name, r.GetOrigId(), link), func(t *testing.T) {
			if err := os.Rename(link, p.Dir+"/moved"); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("b.txt", link); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(link); os.Rename(p.Dir+"/moved", link) })
		}},
		{"changed", fmt.Sprintf("%s (file id %d), through its link: %s has changed: size 12289, the set says 12288", name, r.GetOrigId(), link), func(t *testing.T) {
			if err := os.Truncate(p.Dir+"/b.txt", 12289); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Truncate(p.Dir+"/b.txt", 12288) })
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.change(t)
			if err := refuseErr(t, dir, Options{}); !strings.Contains(err.Error(), c.want) {
				t.Errorf("refused with %q, want %q", err, c.want)
			}
		})
	}
}

// TestCRIUInteropLinkRemap: testdata/linkremap.c with every state, dumped with
// --link-remap by one tool and restored by the other, checks itself; the restore removed
// every link.
func TestCRIUInteropLinkRemap(t *testing.T) {
	criu := criuBin(t)
	for _, way := range []string{"imgtool dump, CRIU restore", "CRIU dump, imgtool restore"} {
		t.Run(way, func(t *testing.T) {
			p := launchLinkRemap(t, "all")
			bindir := exeDir(t, p)
			root, off := crossCheckpointWith(t, criu, p, strings.HasPrefix(way, "CRIU"), dump.Options{LinkRemap: true}, "--link-remap")
			checkLinkRemapDirs(t, p, bindir, "all")
			checkSelf(t, root, p.Log, off)
		})
	}
}

// TestCRIULinkRemapSameImages: the same program, in the same state, dumped with
// --link-remap by CRIU 4.2 and by imgtool: remap-fpath.img is the same, and so are the
// reg entries it names (ids, names but for the directories, flags, offsets, modes, sizes,
// build ids) and their places in files.img (each link's entry right before its file's).
func TestCRIULinkRemapSameImages(t *testing.T) {
	criu := criuBin(t)
	sets := map[string][]string{}
	for _, by := range []string{"CRIU", "imgtool"} {
		p := launchLinkRemap(t, "all")
		bindir := exeDir(t, p)
		var dir string
		if by == "CRIU" {
			dir = t.TempDir()
			runCRIU(t, criu, dir, "dump.log", "dump", "-t", fmt.Sprint(p.Pid), "--link-remap")
			testproc.WaitGone(t, []int{p.Pid})
		} else {
			dir = dumpWith(t, dump.Options{Pid: p.Pid, LinkRemap: true})
		}
		at := map[uint32]int{}
		files := readFiles(t, dir)
		for i, fe := range files {
			at[fe.GetId()] = i
		}
		norm := strings.NewReplacer(p.Dir, "DIR", bindir, "BIN")
		for _, e := range readImageFile(t, filepath.Join(dir, "remap-fpath.img")).Entries {
			r := e.Msg.(*remap_file_path.RemapFilePathEntry)
			line := fmt.Sprintf("remap %d -> %d %v, entries at %d, %d:", r.GetOrigId(), r.GetRemapId(), r.GetRemapType(), at[r.GetOrigId()], at[r.GetRemapId()])
			for _, id := range []uint32{r.GetOrigId(), r.GetRemapId()} {
				line += " " + norm.Replace(files[at[id]].GetReg().String())
			}
			sets[by] = append(sets[by], line)
		}
	}
	if len(sets["CRIU"]) != 4 {
		t.Errorf("CRIU's set has %d remaps, want 4 (the executable, a.txt mapped and open, the FIFO)", len(sets["CRIU"]))
	}
	if c, i := strings.Join(sets["CRIU"], "\n"), strings.Join(sets["imgtool"], "\n"); c != i {
		t.Errorf("CRIU's remaps:\n%s\nimgtool's:\n%s", c, i)
	}
}
