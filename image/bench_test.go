package image

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"
)

// BenchmarkReadImage decodes every protobuf image of each fixture set, whole, as
// `make bench` compares with crit: one iteration is one set.
func BenchmarkReadImage(b *testing.B) {
	sets := map[string][]fixtureFile{}
	var names []string
	for _, f := range imageFixtures(b) {
		set := filepath.Base(filepath.Dir(f.path))
		if sets[set] == nil {
			names = append(names, set)
		}
		sets[set] = append(sets[set], f)
	}
	for _, set := range names {
		files := sets[set]
		var size int64
		for _, f := range files {
			size += int64(len(f.data))
		}
		b.Run(set, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				for _, f := range files {
					if _, err := ReadImage(bytes.NewReader(f.data)); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkWriteImage encodes every protobuf image of all fixture sets.
func BenchmarkWriteImage(b *testing.B) {
	var imgs []*Image
	var size int64
	for _, f := range imageFixtures(b) {
		img, err := ReadImage(bytes.NewReader(f.data))
		if err != nil {
			b.Fatal(err)
		}
		imgs = append(imgs, img)
		size += int64(len(f.data))
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		for _, img := range imgs {
			if _, err := img.WriteTo(io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkReadPages reads every present page of every fixture pagemap through
// PageMap.ReadPage, one page buffer for all: memory stays constant whatever the size
// of the pages files.
func BenchmarkReadPages(b *testing.B) {
	type set struct {
		pm    *PageMap
		pages *bytes.Reader
	}
	var sets []set
	var size int64
	files := fixtureFiles(b)
	for _, f := range files {
		if f.kind == nil || f.kind.Name != "PAGEMAP" {
			continue
		}
		pm, err := ReadPageMap(bytes.NewReader(f.data))
		if err != nil {
			b.Fatal(err)
		}
		want := filepath.Join(filepath.Dir(f.path), KindByName("PAGES").FileName(pm.Head.GetPagesId()))
		for _, p := range files {
			if p.path == want {
				sets = append(sets, set{pm, bytes.NewReader(p.data)})
				size += pm.PagesSize()
			}
		}
	}
	page := make([]byte, PageSize)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range sets {
			for i, e := range s.pm.Entries {
				if s.pm.EntryOffset(i) < 0 {
					continue
				}
				for p := range NrPages(e) {
					if err := s.pm.ReadPage(s.pages, e.GetVaddr()+p*PageSize, page); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	}
}
