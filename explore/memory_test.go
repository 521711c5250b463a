package explore

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
)

// memSource is a set held in memory.
type memSource map[string][]byte

func (m memSource) Names() []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (m memSource) Open(name string) (io.ReaderAt, int64, error) {
	b, ok := m[name]
	if !ok {
		return nil, 0, os.ErrNotExist
	}
	return bytes.NewReader(b), int64(len(b)), nil
}

// TestArgsOfFixtures: every fixture set's processes have a command line read from
// their pages, and its first word is found by a memory search in the same process.
func TestArgsOfFixtures(t *testing.T) {
	for _, name := range []string{"counter", "tree", "threads", "files"} {
		set, err := imgset.Open(filepath.Join("../fixtures/criu-4.2", name), imgset.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		args, err := ProcessArgs(set, true)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, a := range args {
			if len(a.Cmdline) == 0 || a.Cmdline[0] == "" || a.Problem != "" {
				t.Errorf("%s: pid %d: %+v", name, a.PID, a)
				continue
			}
			res, err := SearchMemory(set, SearchOptions{PID: a.PID, Literal: []byte(strings.Join(a.Cmdline, "\x00")), Context: 8})
			if err != nil || len(res.Matches) == 0 {
				t.Errorf("%s: pid %d: cmdline not found: %v", name, a.PID, err)
			}
		}
	}
}

// TestSearchAcrossChunksAndGaps: a match across the chunk boundary is found once;
// the context stops at a page that is not saved.
func TestSearchAcrossChunksAndGaps(t *testing.T) {
	const base = 0x10000000
	pages := make([]byte, 2*searchChunk)
	copy(pages[searchChunk-3:], "NEEDLE")
	copy(pages[searchChunk+image.PageSize+10:], "HAY")
	// One segment of searchChunk bytes, then a gap of one page, then the rest.
	mem := &memory{pid: 9, segs: []segment{
		{start: base, end: base + searchChunk, off: 0},
		{start: base + searchChunk + image.PageSize, end: base + 2*searchChunk + image.PageSize, off: searchChunk},
	}}
	set, err := imgset.OpenSource("mem", memSource{"pages-1.img": pages}, imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if mem.pages, err = set.Open("pages-1.img"); err != nil {
		t.Fatal(err)
	}
	res := &SearchResult{}
	if err := searchProcess(mem, nil, SearchOptions{Literal: []byte("NEEDLE"), Context: 4, Max: 10}, res); err != nil {
		t.Fatal(err)
	}
	// "NEEDLE" straddles the end of the first segment: its last 3 bytes are past
	// the gap, so it is not contiguous in memory and not found.
	if len(res.Matches) != 0 {
		t.Errorf("matched across a gap: %+v", res.Matches)
	}
	// In the second segment, at page 0 + 10 bytes of the segment's file data
	// after one page: the context before goes back to the segment's start only.
	res = &SearchResult{}
	if err := searchProcess(mem, nil, SearchOptions{Regexp: regexp.MustCompile("HAY"), Context: 4096, Max: 10}, res); err != nil {
		t.Fatal(err)
	}
	want := uint64(base + searchChunk + image.PageSize + image.PageSize + 10)
	if len(res.Matches) != 1 || uint64(res.Matches[0].Addr) != want || uint64(res.Matches[0].ContextAddr) != want-4096 ||
		len(res.Matches[0].Before) != 4096 || string(res.Matches[0].Match) != "HAY" {
		t.Fatalf("HAY: %+v", res.Matches)
	}
	// A context wider than what is saved before: it starts at the segment.
	copy(pages[searchChunk+20:], "PIN")
	res = &SearchResult{}
	if err := searchProcess(mem, nil, SearchOptions{Literal: []byte("PIN"), Context: 100, Max: 10}, res); err != nil {
		t.Fatal(err)
	}
	start := uint64(base + searchChunk + image.PageSize)
	if len(res.Matches) != 1 || uint64(res.Matches[0].ContextAddr) != start || len(res.Matches[0].Before) != 20 {
		t.Fatalf("PIN: %+v", res.Matches)
	}
	// A needle across the boundary of two chunks of one contiguous run is found once.
	mem.segs = []segment{{start: base, end: base + 2*searchChunk, off: 0}}
	copy(pages[searchChunk-3:], "NEEDLE")
	res = &SearchResult{}
	if err := searchProcess(mem, nil, SearchOptions{Literal: []byte("NEEDLE"), Max: 10}, res); err != nil {
		t.Fatal(err)
	}
	if len(res.Matches) != 1 || uint64(res.Matches[0].Addr) != base+searchChunk-3 {
		t.Errorf("across chunks: %+v", res.Matches)
	}
}

func TestSearchOptionsChecked(t *testing.T) {
	set, err := imgset.Open("../fixtures/criu-4.2/counter", imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []SearchOptions{{}, {Literal: []byte("a"), Regexp: regexp.MustCompile("a")},
		{Literal: bytes.Repeat([]byte("a"), MaxPattern+1)}, {Literal: []byte("a"), Context: -1},
		{Literal: []byte("a"), Context: MaxSearchContext + 1}} {
		if _, err := SearchMemory(set, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// TestArgsDamaged: a process whose pages file is short is listed with the problem.
func TestArgsDamaged(t *testing.T) {
	dir := t.TempDir()
	src := "../fixtures/criu-4.2/counter"
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(e.Name(), "pages-") {
			data = data[:len(data)/2]
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	set, err := imgset.Open(dir, imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	args, err := ProcessArgs(set, true)
	if err != nil || len(args) == 0 || !strings.Contains(args[0].Problem, "shorter than") {
		t.Errorf("%v %+v", err, args)
	}
	if _, err := SearchMemory(set, SearchOptions{Literal: []byte("x")}); err == nil || !strings.Contains(err.Error(), "shorter than") {
		t.Errorf("search of a short pages file: %v", err)
	}
}
