package dump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
)

// ghostImage returns the entries of ghost-file-ID.img: the ghost_file_entry, then each chunk
// with its bytes; inline content is the first entry's payload.
func ghostImage(t *testing.T, dir string, id uint32) (*ghost_file.GhostFileEntry, []byte, []*ghost_file.GhostChunkEntry, [][]byte) {
	t.Helper()
	img := readImg(t, dir, fmt.Sprintf("ghost-file-%x.img", id))
	e := img.Entries[0].Msg.(*ghost_file.GhostFileEntry)
	var chunks []*ghost_file.GhostChunkEntry
	var data [][]byte
	for _, en := range img.Entries[1:] {
		chunks = append(chunks, en.Msg.(*ghost_file.GhostChunkEntry))
		data = append(data, en.Payload)
	}
	return e, img.Entries[0].Payload, chunks, data
}

// remapsOf returns remap-fpath.img: ghost id by reg file id.
func remapsOf(t *testing.T, dir string) map[uint32]uint32 {
	t.Helper()
	out := map[uint32]uint32{}
	for _, r := range entries[*remap_file_path.RemapFilePathEntry](t, dir, "remap-fpath.img") {
		if r.GetRemapType() != remap_file_path.RemapType_GHOST {
			t.Errorf("remap %v is not a ghost", r)
		}
		out[r.GetOrigId()] = r.GetRemapId()
	}
	return out
}

// TestDumpGhost dumps fixtures/src/ghost.c, the program of CRIU's ghost set: two open,
// deleted files, 2 KiB saved whole and 40 KiB with a hole saved in two chunks, each a reg
// entry under its old name remapped to a ghost (remap-fpath.img): the same files and fields
// as CRIU's set, the same content, the holes left out.
func TestDumpGhost(t *testing.T) {
	tg := launch(t, "ghost", "{dir}")
	s := dumpTarget(t, tg.Pid, false)
	compareWithCRIU(t, s.dir, "ghost", criuDiffs())
	files := map[uint32]*fdinfo.FileEntry{}
	for _, f := range entries[*fdinfo.FileEntry](t, s.dir, "files.img") {
		files[f.GetId()] = f
	}
	remaps := remapsOf(t, s.dir)
	if len(remaps) != 2 {
		t.Fatalf("remaps %v, want 2", remaps)
	}
	for _, fd := range entries[*fdinfo.FdinfoEntry](t, s.dir, "fdinfo-2.img") {
		reg := files[fd.GetId()].GetReg()
		id, ghost := remaps[fd.GetId()]
		if want := fd.GetFd() == 3 || fd.GetFd() == 4; ghost != want {
			t.Errorf("fd %d (%s): ghost %v, want %v", fd.GetFd(), reg.GetName(), ghost, want)
		}
		if !ghost {
			continue
		}
		e, inline, chunks, data := ghostImage(t, s.dir, id)
		if e.GetMode() != reg.GetMode() || int64(reg.GetSize()) == 0 || strings.HasSuffix(reg.GetName(), "(deleted)") {
			t.Errorf("fd %d: reg %v, ghost %v", fd.GetFd(), reg, e)
		}
		switch fd.GetFd() {
		case 3:
			if reg.GetPos() != 100 || !strings.HasSuffix(reg.GetName(), "/small.txt") || e.GetChunks() || len(inline) != 2048 ||
				!strings.HasPrefix(string(inline), "GHOST-SMALL-000000-IMGTOOL-CNRY\n") || e.GetMode() != unix.S_IFREG|0o640 {
				t.Errorf("small.txt: reg %v ghost %v, %d bytes inline", reg, e, len(inline))
			}
		case 4:
			if reg.GetPos() != 20000 || !e.GetChunks() || e.GetSize() != 40960 || len(chunks) != 2 ||
				chunks[0].GetOff() != 0 || chunks[0].GetLen() != 16384 || chunks[1].GetOff() != 28672 || chunks[1].GetLen() != 12288 ||
				!strings.HasPrefix(string(data[1]), "GHOST-BIG-pg07-off00000-IMGTOOL\n") {
				t.Errorf("big.bin: reg %v ghost %v chunks %v", reg, e, chunks)
			}
		}
	}
}

// TestRefuseGhostLimit: deleted files whose content passes the ghost file limit (1 MiB by
// default, as CRIU's --ghost-limit) are refused before the tree is touched, an open one and
// a mapped one at once, each named with its size; a larger limit dumps them.
func TestRefuseGhostLimit(t *testing.T) {
	tg := launch(t, "refusals", "ghostbig")
	seized := seizes.Load()
	err := Dump(context.Background(), Options{Pid: tg.Pid}, newDirSink(t))
	if n := seizes.Load() - seized; n != 0 {
		t.Errorf("the refusal came after %d thread(s) were seized", n)
	}
	var all Refusals
	if !errors.As(err, &all) || len(all) != 2 {
		t.Fatalf("err = %v, want two refusals", err)
	}
	for _, want := range []string{
		"fd 3 is unlinked file " + tg.Dir + "/big.bin (deleted): it was deleted and its content, 2097152 bytes, is over the ghost file limit of 1048576 bytes (--ghost-limit)",
		"/gone.map (deleted): it was deleted and its content, 1572864 bytes, is over the ghost file limit",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	if st, _ := procfs.ReadStatus(procfs.Path(tg.Pid, "status")); st["TracerPid"] != "0" {
		t.Errorf("target left traced")
	}
	testproc.RequireRoot(t)
	s := newDirSink(t)
	if err := Dump(context.Background(), Options{Pid: tg.Pid, LeaveRunning: true, GhostLimit: 4 << 20}, s); err != nil {
		t.Fatalf("with a 4 MiB limit: %v", err)
	}
	if n := len(remapsOf(t, s.dir)); n != 2 {
		t.Errorf("%d remaps, want 2 (the open file and the mapped one)", n)
	}
	if err := Dump(context.Background(), Options{Pid: tg.Pid, LeaveRunning: true, GhostLimit: -1}, newDirSink(t)); err == nil ||
		!strings.Contains(err.Error(), "the ghost file limit allows none") {
		t.Errorf("with no content allowed: %v", err)
	}
}

// TestDumpDeletedFIFOAndDir: a FIFO and a directory whose names are gone are ghosts without
// content: the FIFO's reg entry (its regf_id) and the directory's are remapped to ghosts
// of their mode.
func TestDumpDeletedFIFOAndDir(t *testing.T) {
	for _, c := range []struct {
		mode string
		typ  uint32
	}{{"fifo", unix.S_IFIFO}, {"rmdir", unix.S_IFDIR}} {
		t.Run(c.mode, func(t *testing.T) {
			tg := launch(t, "refusals", c.mode)
			s := dumpTarget(t, tg.Pid, true)
			remaps := remapsOf(t, s.dir)
			if len(remaps) != 1 {
				t.Fatalf("remaps %v, want one", remaps)
			}
			for _, id := range remaps {
				e, inline, chunks, _ := ghostImage(t, s.dir, id)
				if e.GetMode()&unix.S_IFMT != c.typ || len(inline) != 0 || len(chunks) != 0 || e.Size != nil {
					t.Errorf("ghost %v with %d bytes and %d chunks", e, len(inline), len(chunks))
				}
			}
		})
	}
}

// TestGhostData: what a ghost saves of a regular file, as CRIU does: a file under 12 KiB
// whole, a larger one by its runs of data (holes left out); an empty one has nothing to
// save, so no limit refuses it; the measure stops once past the limit.
func TestGhostData(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, size int64, data ...int64) *os.File {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		for _, off := range data {
			if _, err := f.WriteAt(bytes.Repeat([]byte{'d'}, 4096), off); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		return f
	}
	cases := []struct {
		name        string
		f           *os.File
		size, limit int64
		want        string
	}{
		{"empty", mk("empty", 0), 0, -1, "[] false 0 false"},
		{"small", mk("small", 5000, 0), 5000, 1 << 20, "[{0 5000}] false 5000 false"},
		{"small over", mk("small2", 5000, 0), 5000, 4999, "[{0 5000}] false 5000 true"},
		{"sparse", mk("sparse", 1<<20, 0, 40960), 1 << 20, 1 << 20, "[{0 4096} {40960 4096}] true 8192 false"},
		{"sparse over", mk("sparse2", 1<<20, 0, 40960), 1 << 20, 5000, "[] true 8192 true"},
	}
	for _, c := range cases {
		ext, chunks, total, over, err := ghostData(c.f, c.size, c.limit)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if ext == nil {
			ext = []extent{}
		}
		if got := fmt.Sprint(ext, chunks, total, over); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}
