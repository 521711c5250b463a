package dump

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/testproc"
)

// atSink is a dirSink whose pages files take their bytes from an io.ReaderAt
// (readerFromAt), as the encrypted files of an *imgset.Writer do.
type atSink struct {
	*dirSink
	t *testing.T
}

func (s atSink) Create(name string) (io.WriteCloser, error) {
	w, err := s.dirSink.Create(name)
	if err != nil || !strings.HasPrefix(name, "pages-") {
		return w, err
	}
	return &scatterFile{File: w.(*os.File), t: s.t}, nil
}

// scatterFile reads the source of ReadFromAt twice: whole, and in pieces of odd
// sizes from two goroutines at once, back to front; both must agree.
type scatterFile struct {
	*os.File
	t *testing.T
}

func (f *scatterFile) ReadFromAt(src io.ReaderAt, size int64, progress func(int64)) error {
	whole := make([]byte, size)
	if n, err := src.ReadAt(whole, 0); n != len(whole) || err != nil {
		return fmt.Errorf("whole read: %d bytes, %v", n, err)
	}
	pieces := make([]byte, size)
	const piece = 5000 // not a page size: pieces start and end inside pages and runs
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := (size - 1) / piece * piece; off >= 0; off -= piece {
				if off/piece%2 != int64(g) {
					continue
				}
				p := pieces[off:min(size, off+piece)]
				if n, err := src.ReadAt(p, off); n != len(p) || err != nil {
					errs[g] = fmt.Errorf("read at %d: %d bytes, %v", off, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	if !bytes.Equal(whole, pieces) {
		return fmt.Errorf("pieces differ from the whole")
	}
	if _, err := src.ReadAt(make([]byte, 1), size); err == nil {
		return fmt.Errorf("a read past the pages succeeded")
	}
	progress(size)
	_, err := f.Write(pieces)
	return err
}

// TestDumpPagesReadAt dumps through the ReaderAt of a process's pages (procPages),
// read out of order and concurrently, with every kind of memory (an unreadable
// PROT_NONE area goes through /proc/PID/mem).
func TestDumpPagesReadAt(t *testing.T) {
	tg := launch(t, "memkinds", "{dir}")
	s := atSink{newDirSink(t), t}
	var done, total int64
	if err := Dump(context.Background(), Options{Pid: tg.Pid, Progress: func(d, n int64) { done, total = d, n }}, s); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if done != total || total == 0 {
		t.Errorf("progress ended at %d of %d", done, total)
	}
	log := tg.ReadLog(t)
	for name, want := range map[string]string{"rw": "MEMKINDS-ANON-RW", "ro": "MEMKINDS-ANON-RO",
		"none": "MEMKINDS-ANON-NONE", "file": "MEMKINDS-FILE-COW"} {
		m := regexp.MustCompile(name + `=0x([0-9a-f]+)`).FindStringSubmatch(log)
		if m == nil {
			t.Fatalf("no %s in %q", name, log)
		}
		addr, _ := strconv.ParseUint(m[1], 16, 64)
		if got := readDumped(t, s.dir, tg.Pid, addr, len(want)); string(got) != want {
			t.Errorf("%s at %#x: %q, want %q", name, addr, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(s.dir, fmt.Sprintf("pagemap-%d.img", tg.Pid))); err != nil {
		t.Fatal(err)
	}
}

// TestReadOnlyPagesNotDumped: pages only ever read map the shared zero page (or the huge
// zero page in a THP area) and hold nothing: they are left out of the pagemap, as CRIU
// leaves them out, while a written page next to them is saved.
func TestReadOnlyPagesNotDumped(t *testing.T) {
	testproc.RequireRoot(t)
	tg := launch(t, "readonly")
	var a, b, c uint64
	if _, err := fmt.Sscanf(tg.ReadLog(t), "a=0x%x b=0x%x c=0x%x", &a, &b, &c); err != nil {
		t.Fatalf("%v: %q", err, tg.ReadLog(t))
	}
	s := dumpTarget(t, tg.Pid, true)
	pm, err := image.NewPageMap(readImg(t, s.dir, fmt.Sprintf("pagemap-%d.img", tg.Pid)))
	if err != nil {
		t.Fatal(err)
	}
	const mb = 1 << 20
	for _, e := range pm.Entries {
		start, end := e.GetVaddr(), e.GetVaddr()+image.NrPages(e)*pageSize
		for _, r := range []struct {
			name     string
			lo, size uint64
		}{{"read-only area", a, 16 * mb}, {"read-only THP area", b, 8 * mb}} {
			if start < r.lo+r.size && r.lo < end {
				t.Errorf("pagemap entry %#x-%#x covers the %s %#x-%#x", start, end, r.name, r.lo, r.lo+r.size)
			}
		}
	}
	if got := readDumped(t, s.dir, tg.Pid, c+pageSize, 1); len(got) != 1 || got[0] != 42 {
		t.Errorf("the written page is not saved: %v", got)
	}
}

// TestPagemapReach: the pagemap of mappings at most pagemapGap pages apart is read in one
// go, up to the end of the last of them; a wider gap, or a mapping whose pages are not
// read (a droppable one), starts a new reach.
func TestPagemapReach(t *testing.T) {
	const p = pageSize
	anon := func(start, end uint64) *vmaDesc { return &vmaDesc{start: start * p, end: end * p, kind: vmaAnon} }
	drop := anon(200, 201)
	drop.flags = unix.MAP_DROPPABLE
	vmas := []*vmaDesc{
		anon(0, 1), anon(1, 2), anon(2+pagemapGap, 3+pagemapGap), // touching, then a gap of pagemapGap
		anon(100, 101), // a wider gap
		drop,           // not read: no reach
		anon(202, 203),
	}
	want := []uint64{(3 + pagemapGap) * p, (3 + pagemapGap) * p, (3 + pagemapGap) * p, 101 * p, 0, 203 * p}
	got := pagemapReach(vmas, scansPages)
	if !slices.Equal(got, want) {
		t.Errorf("reach %v, want %v", got, want)
	}
}
