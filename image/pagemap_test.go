package image

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"google.golang.org/protobuf/proto"
)

// pme makes a pagemap entry the way CRIU >= 4.2 writes it (nr_pages in field 5,
// field 2 zero) or, when old, the way older CRIU did (field 2 only, no flags).
func pme(vaddr uint64, pages uint64, flags uint32, old bool) *pagemap.PagemapEntry {
	if old {
		return &pagemap.PagemapEntry{Vaddr: proto.Uint64(vaddr), CompatNrPages: proto.Uint32(uint32(pages))}
	}
	return &pagemap.PagemapEntry{Vaddr: proto.Uint64(vaddr), CompatNrPages: proto.Uint32(0),
		NrPages: proto.Uint64(pages), Flags: proto.Uint32(flags)}
}

func pagemapImage(entries ...*pagemap.PagemapEntry) *Image {
	img := &Image{Kind: KindByName("PAGEMAP"), Head: MagicImgCommon,
		Entries: []Entry{{Msg: &pagemap.PagemapHead{PagesId: proto.Uint32(1)}}}}
	for _, e := range entries {
		img.Entries = append(img.Entries, Entry{Msg: e})
	}
	return img
}

// buildPageMap indexes entries both ways (from an Image, and streamed from bytes)
// and checks the two agree.
func buildPageMap(t *testing.T, entries ...*pagemap.PagemapEntry) (*PageMap, error) {
	t.Helper()
	img := pagemapImage(entries...)
	pm, err := NewPageMap(img)
	pm2, err2 := ReadPageMap(bytes.NewReader(mustEncode(t, img)))
	if (err == nil) != (err2 == nil) {
		t.Fatalf("NewPageMap: %v, ReadPageMap: %v", err, err2)
	}
	if err == nil && (pm.PagesSize() != pm2.PagesSize() || len(pm.Entries) != len(pm2.Entries)) {
		t.Fatal("NewPageMap and ReadPageMap disagree")
	}
	return pm, err
}

func TestNrPagesFields(t *testing.T) {
	if n := NrPages(pme(0, 7, PagemapPresent, false)); n != 7 {
		t.Errorf("field 5: %d pages", n)
	}
	if n := NrPages(pme(0, 9, 0, true)); n != 9 {
		t.Errorf("field 2: %d pages", n)
	}
	// Field 5 wins over field 2 even when both are non-zero.
	e := pme(0, 3, PagemapPresent, false)
	e.CompatNrPages = proto.Uint32(100)
	if n := NrPages(e); n != 3 {
		t.Errorf("both fields: %d pages, want field 5's 3", n)
	}
	// Field 5 set to zero is zero pages, not a fall back to field 2.
	e.NrPages = proto.Uint64(0)
	if n := NrPages(e); n != 0 {
		t.Errorf("field 5 zero: %d pages", n)
	}
}

func TestFlagsCompat(t *testing.T) {
	cases := []struct {
		e    *pagemap.PagemapEntry
		want uint32
	}{
		{pme(0, 1, 0, true), PagemapPresent},
		{&pagemap.PagemapEntry{Vaddr: proto.Uint64(0), CompatNrPages: proto.Uint32(1), InParent: proto.Bool(true)}, PagemapParent},
		{&pagemap.PagemapEntry{Vaddr: proto.Uint64(0), CompatNrPages: proto.Uint32(1), InParent: proto.Bool(false)}, PagemapPresent},
		{pme(0, 1, PagemapLazy, false), PagemapLazy},
		{pme(0, 1, PagemapLazy|PagemapPresent, false), PagemapLazy | PagemapPresent},
		{pme(0, 1, 0, false), 0},
	}
	for i, c := range cases {
		if got := Flags(c.e); got != c.want {
			t.Errorf("case %d: flags %#x, want %#x", i, got, c.want)
		}
	}
}

// TestPageMapOffsets: offsets are the sum of the earlier present entries; parent and
// lazy entries take no bytes; lookups work across entries, in and out of order.
func TestPageMapOffsets(t *testing.T) {
	const P = PageSize
	pm, err := buildPageMap(t,
		pme(0x10000, 2, PagemapPresent, false),
		pme(0x20000, 3, PagemapParent, false),
		pme(0x30000, 1, PagemapLazy, false),
		pme(0x40000, 4, PagemapPresent|PagemapLazy, false),
		pme(0x12000, 1, PagemapPresent, false), // adjacent to the first, later in the file
		pme(0x50000, 2, 0, true),               // old: field 2, no flags: present
	)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]int64{
		0x10000: 0, 0x11000: P, 0x11fff: P,
		0x40000: 2 * P, 0x43000: 5 * P,
		0x12000: 6 * P,
		0x50000: 7 * P, 0x51234: 8 * P,
	}
	for va, off := range want {
		got, ok := pm.Offset(va)
		if !ok || got != off {
			t.Errorf("Offset(%#x) = %d, %v; want %d", va, got, ok, off)
		}
	}
	for _, va := range []uint64{0, 0xffff, 0x13000, 0x20000, 0x22fff, 0x30000, 0x44000, 0x52000, 1 << 60} {
		if off, ok := pm.Offset(va); ok {
			t.Errorf("Offset(%#x) = %d, want no page", va, off)
		}
	}
	if i, ok := pm.Find(0x21000); !ok || i != 1 {
		t.Errorf("Find in a parent entry: %d, %v", i, ok)
	}
	if pm.PagesSize() != 9*P {
		t.Errorf("PagesSize %d, want %d", pm.PagesSize(), 9*P)
	}
	if pm.EntryOffset(1) != -1 || pm.EntryOffset(3) != 2*P {
		t.Errorf("EntryOffset: %d %d", pm.EntryOffset(1), pm.EntryOffset(3))
	}

	// ReadPage and EntryPages against a synthetic pages file whose every page holds
	// its own index.
	pages := make([]byte, pm.PagesSize())
	for i := range len(pages) / P {
		copy(pages[i*P:], fmt.Sprintf("page %d", i))
	}
	buf := make([]byte, P)
	for va, off := range want {
		if err := pm.ReadPage(bytes.NewReader(pages), va, buf); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, pages[off:off+P]) {
			t.Errorf("ReadPage(%#x) gave the wrong page", va)
		}
	}
	if err := pm.ReadPage(bytes.NewReader(pages), 0x20000, buf); err == nil {
		t.Error("ReadPage of a parent page succeeded")
	}
	if err := pm.ReadPage(bytes.NewReader(pages[:3*P]), 0x43000, buf); err == nil {
		t.Error("ReadPage beyond a short pages file succeeded")
	}
	if pm.EntryPages(bytes.NewReader(pages), 1) != nil {
		t.Error("EntryPages of a parent entry")
	}
	if sr := pm.EntryPages(bytes.NewReader(pages), 3); sr.Size() != 4*P {
		t.Errorf("EntryPages size %d", sr.Size())
	}
}

func TestPageMapRejects(t *testing.T) {
	bad := map[string][]*pagemap.PagemapEntry{
		"overlap":              {pme(0x10000, 2, PagemapPresent, false), pme(0x11000, 1, PagemapPresent, false)},
		"overlap out of order": {pme(0x20000, 1, PagemapPresent, false), pme(0x1f000, 2, PagemapParent, false)},
		"same start":           {pme(0x10000, 1, PagemapPresent, false), pme(0x10000, 1, PagemapPresent, false)},
		"unaligned":            {pme(0x10010, 1, PagemapPresent, false)},
		"wraps":                {pme(1<<64-PageSize, 2, PagemapPresent, false)},
		"too many pages":       {pme(0, 1<<41, PagemapPresent, false)},
	}
	for name, entries := range bad {
		if _, err := buildPageMap(t, entries...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewPageMap(&Image{Kind: KindByName("CORE")}); err == nil {
		t.Error("a CORE image made a page map")
	}
	if _, err := ReadPageMap(bytes.NewReader(mustEncode(t, &Image{Kind: KindByName("PAGEMAP"), Head: MagicImgCommon}))); !isFormatError(err) {
		t.Errorf("pagemap without head: %v", err)
	}
}

// TestCounterPages reads the counter set's 8 MiB buffer through its pagemap. The
// program wrote "PAGE%08x" (the page's index in the buffer) at the start of each of its
// pages; the buffer is the largest anonymous VMA in mm-*.img. The expected values
// come from the data: the first page's marker gives the offset within a page and the
// first index, and every following page must hold the next index.
func TestCounterPages(t *testing.T) {
	dir := filepath.Join(fixtureDir, "counter")
	pmFile, err := os.Open(filepath.Join(dir, "pagemap-15654.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer pmFile.Close()
	pm, err := ReadPageMap(pmFile)
	if err != nil {
		t.Fatal(err)
	}
	pages, err := os.Open(filepath.Join(dir, fmt.Sprintf("pages-%d.img", pm.Head.GetPagesId())))
	if err != nil {
		t.Fatal(err)
	}
	defer pages.Close()
	if fi, err := pages.Stat(); err != nil || fi.Size() != pm.PagesSize() {
		t.Fatalf("pages file size %v (%v), pagemap says %d", fi.Size(), err, pm.PagesSize())
	}

	mmData, err := os.ReadFile(filepath.Join(dir, "mm-15654.img"))
	if err != nil {
		t.Fatal(err)
	}
	mmImg, err := ReadImage(bytes.NewReader(mmData))
	if err != nil {
		t.Fatal(err)
	}
	mmEntry := mmImg.Entries[0].Msg.(*mm.MmEntry)
	var start, end uint64
	for _, v := range mmEntry.GetVmas() {
		anon := v.GetFlags()&0x20 != 0 // MAP_ANONYMOUS
		if anon && v.GetEnd()-v.GetStart() > end-start {
			start, end = v.GetStart(), v.GetEnd()
		}
	}
	if end-start < 8<<20 {
		t.Fatalf("largest anonymous VMA %#x-%#x is smaller than the 8 MiB buffer", start, end)
	}

	page := make([]byte, PageSize)
	if err := pm.ReadPage(pages, start, page); err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(page, []byte("PAGE"))
	var first uint32
	if at < 0 || at+12 > PageSize {
		t.Fatalf("no PAGE marker in the buffer's first page")
	}
	if _, err := fmt.Sscanf(string(page[at+4:at+12]), "%08x", &first); err != nil {
		t.Fatal(err)
	}
	t.Logf("buffer VMA %#x-%#x, marker at +%d, first index %d", start, end, at, first)
	const bufPages = (8 << 20) / PageSize
	for i := uint64(0); i < bufPages-uint64(first); i++ {
		va := start + i*PageSize
		if err := pm.ReadPage(pages, va, page); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("PAGE%08x", uint64(first)+i)
		if got := string(page[at : at+12]); got != want {
			t.Fatalf("page %#x holds %q, want %q", va, got, want)
		}
		// The rest of the page is the byte pattern i & 0xff of the buffer offset.
		for j := at + 12; j < PageSize; j += 331 {
			bufOff := (uint64(first)+i)*PageSize + uint64(j-at)
			if page[j] != byte(bufOff) {
				t.Fatalf("page %#x byte %d is %#x, want %#x", va, j, page[j], byte(bufOff))
			}
		}
	}
}
