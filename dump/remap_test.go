package dump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
)

// launchLinkRemap starts restore/testdata/linkremap.c in its files state: a.txt open,
// mapped shared and private and watched by an inotify (fd 4), f.fifo open with bytes
// queued, each linked under a second name (b.txt, g.fifo) and its first name removed.
func launchLinkRemap(t *testing.T) *testproc.Proc {
	t.Helper()
	return testproc.Launch(t, testproc.Build(t, "../restore/testdata/linkremap.c"), testproc.Options{Ready: "ready pid="}, "files")
}

// linksIn lists the link_remap.* names in dir.
func linksIn(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, linkRemapPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkSelfAfter asks the program of launchLinkRemap to check itself (SIGUSR1): its fds
// and mappings are the other names' inodes, with no third name, and no link_remap.* is in
// its directory.
func checkSelfAfter(t *testing.T, tg *testproc.Proc) {
	t.Helper()
	off := int64(len(tg.ReadLog(t)))
	if err := unix.Kill(tg.Pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var out string
	testproc.WaitFor(t, 5*time.Second, "the program's own check", func() bool {
		out = testproc.LogAfter(t, tg.Log, off)
		return strings.Contains(out, "ok\n") || strings.Contains(out, "FAIL")
	})
	if !strings.HasPrefix(out, "ok\n") {
		t.Fatalf("the program's check: %s", strings.TrimSpace(out))
	}
}

// TestRefuseLinkRemap: without --link-remap, every file whose name was removed while
// another remains is refused before any thread is seized, at once, each named (the open
// file, the FIFO, each mapping), and nothing is made on disk.
func TestRefuseLinkRemap(t *testing.T) {
	tg := launchLinkRemap(t)
	all := refusedTarget(t, Options{}, tg)
	want := []string{
		"fd 3 is " + tg.Dir + "/a.txt (deleted): its name was removed while another name of it remains (a hard link): use --link-remap",
		"fd 5 is " + tg.Dir + "/f.fifo (deleted): its name was removed while another name of it remains",
		"/a.txt (deleted): its name was removed while another name of it remains",
	}
	if len(all) != 4 {
		t.Fatalf("%d refusals, want 4 (two fds, two mappings): %v", len(all), all)
	}
	for _, w := range want {
		if !strings.Contains(all.Error(), w) {
			t.Errorf("%q does not say %q", all.Error(), w)
		}
	}
	if n := strings.Count(all.Error(), ": mapping 0x"); n != 2 {
		t.Errorf("%d mappings refused, want 2: %v", n, all)
	}
	if l := linksIn(t, tg.Dir); len(l) != 0 {
		t.Errorf("the refused dump left %v", l)
	}
}

// TestDumpLinkRemap: with LinkRemap each reg entry of such a file (the fd, the mappings'
// one, the FIFO's) gets a link made next to it, link_remap.ID, on its inode, and the set
// says so as CRIU 4.2 writes it: the link's reg entry (id, flags 0, pos 0, owner, name;
// no mode, size or build id) right before the file's own, whose name is the old one and
// whose id is one less, and a LINKED remap from the file's entry to the link's. The links
// stay after the dump, for the restore.
func TestDumpLinkRemap(t *testing.T) {
	testproc.RequireRoot(t)
	tg := launchLinkRemap(t)
	s := newDirSink(t)
	if err := Dump(context.Background(), Options{Pid: tg.Pid, LinkRemap: true}, s); err != nil {
		t.Fatal(err)
	}
	files := entries[*fdinfo.FileEntry](t, s.dir, "files.img")
	at := map[uint32]int{}
	for i, f := range files {
		at[f.GetId()] = i
	}
	remaps := entries[*remap_file_path.RemapFilePathEntry](t, s.dir, "remap-fpath.img")
	var origs []string
	for _, r := range remaps {
		if r.GetRemapType() != remap_file_path.RemapType_LINKED {
			t.Errorf("remap %v is not LINKED", r)
			continue
		}
		link, orig := files[at[r.GetRemapId()]].GetReg(), files[at[r.GetOrigId()]].GetReg()
		origs = append(origs, filepath.Base(orig.GetName()))
		want := fmt.Sprintf("%s/%s%d", tg.Dir, linkRemapPrefix, r.GetRemapId())
		if link.GetName() != want || link.Mode != nil || link.Size != nil || len(link.BuildId) > 0 || link.GetFlags() != 0 ||
			link.GetPos() != 0 || link.Fown == nil {
			t.Errorf("link entry %v, want only id, flags 0, pos 0, owner and name %s", link, want)
		}
		if r.GetRemapId() != r.GetOrigId()+1 || at[r.GetRemapId()] != at[r.GetOrigId()]-1 {
			t.Errorf("remap %v: the link's entry is not right before the file's, with the next id", r)
		}
		if strings.HasSuffix(orig.GetName(), deletedSuffix) || orig.Mode == nil {
			t.Errorf("the file's entry %v", orig)
		}
		other := map[string]string{"a.txt": "b.txt", "f.fifo": "g.fifo"}[filepath.Base(orig.GetName())]
		var ls, ost unix.Stat_t
		if unix.Lstat(link.GetName(), &ls) != nil || unix.Stat(filepath.Join(tg.Dir, other), &ost) != nil || ls.Ino != ost.Ino {
			t.Errorf("%s is not %s's inode", link.GetName(), other)
		}
	}
	if got := fmt.Sprint(origs); got != "[a.txt a.txt f.fifo]" {
		t.Errorf("remapped %s, want the mappings' a.txt, the fd's a.txt and f.fifo", got)
	}
	if l := linksIn(t, tg.Dir); len(l) != 3 {
		t.Errorf("links after the dump: %v, want 3", l)
	}
}

// failingSink fails to create one file of the set, after calling then.
type failingSink struct {
	*dirSink
	name string
	then func()
}

func (s failingSink) Create(name string) (io.WriteCloser, error) {
	if name == s.name {
		s.then()
		return nil, errors.New("no space left (test)")
	}
	return s.dirSink.Create(name)
}

// TestDumpLinkRemapLeavesNoLink: a dump whose set cannot be written, one interrupted
// (its context cancelled while pages are written, the links made by then), and one that
// leaves the tree running (as CRIU's delete_link_remaps) remove every link they made
// before the tree runs again: the program finds its files with one name each and no
// link_remap.* in its directory, and carries on untraced.
func TestDumpLinkRemapLeavesNoLink(t *testing.T) {
	testproc.RequireRoot(t)
	for _, c := range []string{"sink fails", "interrupted", "leave running"} {
		t.Run(c, func(t *testing.T) {
			tg := launchLinkRemap(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := newDirSink(t)
			opts := Options{Pid: tg.Pid, LinkRemap: true}
			var sink Sink = s
			made := -1 // the links there were as the dump failed
			switch c {
			case "sink fails":
				sink = failingSink{s, "files.img", func() { made = len(linksIn(t, tg.Dir)) }}
			case "interrupted":
				opts.Progress = func(done, total int64) {
					if made < 0 {
						made = len(linksIn(t, tg.Dir))
					}
					cancel()
				}
			case "leave running":
				opts.LeaveRunning = true
			}
			err := Dump(ctx, opts, sink)
			switch {
			case c == "leave running" && (err != nil || !s.committed):
				t.Fatalf("dump: %v, committed %v", err, s.committed)
			case c == "sink fails" && (err == nil || !strings.Contains(err.Error(), "no space left")):
				t.Fatalf("dump: %v, want the sink's failure", err)
			case c == "interrupted" && !errors.Is(err, context.Canceled):
				t.Fatalf("dump: %v, want context.Canceled", err)
			}
			if c != "leave running" && made != 3 {
				t.Errorf("%d links as the dump failed, want 3: the failure came too early to test anything", made)
			}
			if l := linksIn(t, tg.Dir); len(l) != 0 {
				t.Errorf("links left: %v", l)
			}
			if st, _ := procfs.ReadStatus(procfs.Path(tg.Pid, "status")); st["TracerPid"] != "0" {
				t.Errorf("target left traced")
			}
			if c == "leave running" {
				if n := len(entries[*remap_file_path.RemapFilePathEntry](t, s.dir, "remap-fpath.img")); n != 3 {
					t.Errorf("the set has %d remaps, want 3", n)
				}
			}
			checkSelfAfter(t, tg)
		})
	}
}
