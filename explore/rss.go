package explore

import (
	"fmt"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
)

// Run is one pagemap entry: a range of pages CRIU saved, and the areas it covers.
type Run struct {
	Vaddr   Addr   `json:"vaddr"`
	Pages   uint64 `json:"pages"`
	Present bool   `json:"present"` // the pages are in this set's pages file
	Lazy    bool   `json:"lazy"`    // the pages may be served lazily
	Parent  bool   `json:"parent"`  // the pages are in the parent (pre-dump) set
	VMAs    []int  `json:"vmas"`    // indexes into the process's VMAs that the run overlaps
}

// Range is a run of resident pages within one area.
type Range struct {
	Start Addr   `json:"start"`
	Pages uint64 `json:"pages"`
}

// VMAResidency is one area with its saved (resident at dump time) pages.
type VMAResidency struct {
	VMA
	Resident uint64  `json:"resident"` // pages saved
	Ranges   []Range `json:"ranges"`   // where they are
	// Source is the pagemap holding the area's pages: pagemap-PID.img for private
	// memory, pagemap-shmem-ID.img for shared memory and memfds; empty when none.
	Source string `json:"source,omitempty"`
}

// ProcessRSS is one process's saved pages.
type ProcessRSS struct {
	PID      int            `json:"pid"`
	PagesID  uint32         `json:"pages_id"` // its pages are in pages-PAGES_ID.img
	Resident uint64         `json:"resident"` // pages saved, private and shared
	Runs     []Run          `json:"runs"`     // pagemap-PID.img's entries, in file order
	VMAs     []VMAResidency `json:"vmas"`
}

// RSS returns each process's saved pages, in pstree.img order: the pagemap runs with
// the areas they cover (what crit x rss shows) and each area's resident pages. Only
// pagemaps are read, never page data.
func RSS(set *imgset.Set) ([]ProcessRSS, error) {
	return newLoader(set).rss()
}

func (l *loader) rss() ([]ProcessRSS, error) {
	mems, err := l.mems()
	if err != nil {
		return nil, err
	}
	files, err := l.fileTable()
	if err != nil {
		return nil, err
	}
	var out []ProcessRSS
	for _, pv := range mems {
		name := fmt.Sprintf("pagemap-%d.img", pv.PID)
		pm, err := l.pagemap(name)
		if err != nil {
			return nil, err
		}
		pr := ProcessRSS{PID: pv.PID, PagesID: pm.Head.GetPagesId(), Runs: runs(pm.Entries, pv.VMAs)}
		private := clip(pv.VMAs, spansOf(pm.Entries, 0))
		for i, v := range pv.VMAs {
			vr := VMAResidency{VMA: v, Ranges: private[i]}
			if len(vr.Ranges) > 0 {
				vr.Source = name
			}
			if shm, ok := sharedPagemap(files, v); ok && len(vr.Ranges) == 0 {
				if ranges, err := l.sharedRanges(shm, v); err != nil {
					return nil, err
				} else if ranges != nil {
					vr.Ranges, vr.Source = ranges, shm
				}
			}
			if vr.Ranges == nil {
				vr.Ranges = []Range{}
			}
			for _, r := range vr.Ranges {
				vr.Resident += r.Pages
			}
			pr.Resident += vr.Resident
			pr.VMAs = append(pr.VMAs, vr)
		}
		out = append(out, pr)
	}
	return out, nil
}

func (l *loader) pagemap(name string) (*image.PageMap, error) {
	img, err := l.image(name, "PAGEMAP")
	if err != nil {
		return nil, err
	}
	pm, err := image.NewPageMap(img)
	if err != nil {
		return nil, &FileError{File: name, Reason: "bad pagemap", Err: err}
	}
	return pm, nil
}

// runs lists the pagemap entries in file order with the areas each overlaps, as crit
// pairs them (vmas sorted by address, as CRIU writes them).
func runs(entries []*pagemap.PagemapEntry, vmas []VMA) []Run {
	out := make([]Run, 0, len(entries))
	vi := 0
	for _, e := range entries {
		n := image.NrPages(e)
		start := e.GetVaddr()
		end := start + n*image.PageSize
		r := Run{
			Vaddr: Addr(start), Pages: n, VMAs: []int{},
			Present: e.GetFlags()&image.PagemapPresent != 0,
			Lazy:    e.GetFlags()&image.PagemapLazy != 0,
			Parent:  e.GetFlags()&image.PagemapParent != 0 || e.GetInParent(),
		}
		for vi < len(vmas) && uint64(vmas[vi].End) <= start {
			vi++
		}
		for vi < len(vmas) && uint64(vmas[vi].Start) < end {
			r.VMAs = append(r.VMAs, vi)
			vi++
		}
		// The last area may go on into the next entry.
		if vi > 0 {
			vi--
		}
		out = append(out, r)
	}
	return out
}

// span is a range of saved pages, at a virtual address or a shared-memory offset.
type span struct{ start, end uint64 }

// spansOf returns the entries' ranges shifted by delta (added modulo 2^64), sorted.
func spansOf(entries []*pagemap.PagemapEntry, delta uint64) []span {
	out := make([]span, 0, len(entries))
	for _, e := range entries {
		s := e.GetVaddr() + delta
		out = append(out, span{s, s + image.NrPages(e)*image.PageSize})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	return out
}

// clip returns, for each area, the parts of spans inside it. Areas are sorted and do
// not overlap (CRIU writes them so); spans are sorted.
func clip(vmas []VMA, spans []span) [][]Range {
	out := make([][]Range, len(vmas))
	j := 0
	for i, v := range vmas {
		vs, ve := uint64(v.Start), uint64(v.End)
		for j < len(spans) && spans[j].end <= vs {
			j++
		}
		for k := j; k < len(spans) && spans[k].start < ve; k++ {
			s, e := max(spans[k].start, vs), min(spans[k].end, ve)
			if e > s {
				out[i] = append(out[i], Range{Start: Addr(s), Pages: (e - s) / image.PageSize})
			}
		}
	}
	return out
}

// sharedPagemap names the pagemap that holds a shared area's pages, if it has one:
// pagemap-shmem-SHMID.img for shared anonymous memory and for memfds.
func sharedPagemap(files *fileTable, v VMA) (string, bool) {
	switch {
	case v.Backing == "shmem":
		return fmt.Sprintf("pagemap-shmem-%d.img", v.ShmID), true
	case v.Backing == "memfd":
		if shmid, ok := files.memfdShmid(uint32(v.ShmID)); ok {
			return fmt.Sprintf("pagemap-shmem-%d.img", shmid), true
		}
	}
	return "", false
}

// sharedRanges returns the pages of shared memory pagemap name that area v maps, at
// their virtual addresses; nil when the set has no such pagemap.
func (l *loader) sharedRanges(name string, v VMA) ([]Range, error) {
	img, err := l.optional(name, "PAGEMAP")
	if err != nil || img == nil {
		return nil, err
	}
	pm, err := image.NewPageMap(img)
	if err != nil {
		return nil, &FileError{File: name, Reason: "bad pagemap", Err: err}
	}
	// Shared memory pagemaps address pages by offset in the object; the area maps
	// the object from v.Offset at v.Start.
	delta := uint64(v.Start) - v.Offset
	ranges := clip([]VMA{v}, spansOf(pm.Entries, delta))[0]
	if ranges == nil {
		ranges = []Range{}
	}
	return ranges, nil
}
