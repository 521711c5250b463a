package explore

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
)

// Summary describes a whole image set.
type Summary struct {
	Processes int    `json:"processes"`
	Threads   int    `json:"threads"`
	Root      int    `json:"root_pid"` // the first root of the process tree
	Comm      string `json:"root_comm"`
	// ImgVersion is inventory.img's image format version, 0 when the set has none.
	ImgVersion uint32 `json:"img_version,omitempty"`
	Memory     Memory `json:"memory"`
	Files      int    `json:"files"` // files of the set (an encrypted set's header excluded)
	Bytes      int64  `json:"bytes"` // their plaintext size
	Kinds      []Kind `json:"kinds"` // image types present, by name
	Encrypted  bool   `json:"encrypted"`
	// Recipients names who can open an encrypted set. It is filled from imgset once
	// imgset exposes recipients (see recipientsOf); empty for plaintext sets.
	Recipients []string `json:"recipients"`
	// Problems lists what makes the set unusable though it could be summarized: a
	// missing inventory.img, pages files shorter than their pagemaps need. Each
	// names its file. Empty for a whole set.
	Problems []string `json:"problems"`
}

// Memory counts the pages the set's pagemaps describe.
type Memory struct {
	Pages       uint64 `json:"pages"`        // all pages the pagemaps list
	Bytes       uint64 `json:"bytes"`        // Pages * page size
	StoredPages uint64 `json:"stored_pages"` // pages whose data is in this set (PE_PRESENT)
	StoredBytes uint64 `json:"stored_bytes"`
	ParentPages uint64 `json:"parent_pages"`     // pages left in a parent (pre-dump) set
	SharedPages uint64 `json:"shared_pages"`     // pages of shared memory (pagemap-shmem-*.img)
	PagesFiles  int64  `json:"pages_file_bytes"` // size of the pages-*.img files
}

// Kind is one image type of a set, with how many files of it and their bytes.
type Kind struct {
	Name  string `json:"name"` // crit's name: CORE, PAGEMAP, PAGES, ...; "UNKNOWN" for names imgtool does not know
	Files int    `json:"files"`
	Bytes int64  `json:"bytes"`
}

// Inspect summarizes a set. Every protobuf image's magic is checked against its
// name; pages files are sized, never read. A set that cannot be summarized is an
// error; damage that leaves a summary possible is listed in Summary.Problems.
func Inspect(set *imgset.Set) (*Summary, error) {
	l := newLoader(set)
	sum := &Summary{Encrypted: set.Encrypted(), Recipients: recipientsOf(set), Kinds: []Kind{}, Problems: []string{}}
	procs, err := l.ps()
	if err != nil {
		return nil, err
	}
	sum.Processes = len(procs)
	sum.Root, sum.Comm = procs[0].PID, procs[0].Comm
	for _, p := range procs {
		sum.Threads += len(p.Threads)
	}
	inv, err := first[*inventory.InventoryEntry](l, "inventory.img", "INVENTORY")
	switch {
	case err == nil:
		sum.ImgVersion = inv.GetImgVersion()
	case errors.Is(err, ErrMissing):
		sum.Problems = append(sum.Problems, "inventory.img: missing (restore needs it)")
	default:
		return nil, err
	}
	pages := pagesFiles{need: map[string]uint64{}, have: map[string]int64{}}
	kinds := map[string]*Kind{}
	for _, name := range set.Names() {
		size, kind, err := l.classify(name)
		if err != nil {
			return nil, err
		}
		sum.Files++
		sum.Bytes += size
		k := kinds[kind]
		if k == nil {
			k = &Kind{Name: kind}
			kinds[kind] = k
		}
		k.Files++
		k.Bytes += size
		switch kind {
		case "PAGES":
			sum.Memory.PagesFiles += size
			pages.have[name] = size
		case "PAGEMAP":
			if err := l.countPages(name, &sum.Memory, pages.need); err != nil {
				return nil, err
			}
		}
	}
	for _, k := range kinds {
		sum.Kinds = append(sum.Kinds, *k)
	}
	sort.Slice(sum.Kinds, func(i, j int) bool { return sum.Kinds[i].Name < sum.Kinds[j].Name })
	sum.Problems = append(sum.Problems, pages.problems()...)
	return sum, nil
}

// pagesFiles compares the bytes each pages file holds with those its pagemaps say
// it holds.
type pagesFiles struct {
	need map[string]uint64 // pages-N.img: bytes of the present pages of its pagemaps
	have map[string]int64  // pages-N.img: its size
}

// problems names each pages file that is missing or too short, in name order.
func (p pagesFiles) problems() []string {
	var out []string
	for name, need := range p.need {
		have, ok := p.have[name]
		switch {
		case !ok && need > 0:
			out = append(out, fmt.Sprintf("%s: missing, its pagemaps need %d B", name, need))
		case ok && uint64(have) < need:
			out = append(out, fmt.Sprintf("%s: %d B, shorter than the %d B its pagemaps need", name, have, need))
		}
	}
	sort.Strings(out)
	return out
}

// classify returns a file's size and image type. A protobuf image must carry the
// magic of the type its name says.
func (l *loader) classify(name string) (int64, string, error) {
	f, err := l.set.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "", missing(name)
	}
	if err != nil {
		return 0, "", &FileError{File: name, Reason: "cannot open", Err: err}
	}
	defer f.Close()
	k := image.KindByFileName(name)
	if k == nil {
		return f.Size(), "UNKNOWN", nil
	}
	if k.Raw {
		return f.Size(), k.Name, nil
	}
	rd, err := image.NewReader(f)
	if err != nil {
		return 0, "", err
	}
	if rd.Kind().Name != k.Name {
		return 0, "", &FileError{File: name, Reason: fmt.Sprintf("not a %s image (magic %s)", k.Name, rd.Kind().Name)}
	}
	return f.Size(), k.Name, nil
}

// countPages adds a pagemap's pages to m, and the bytes of its present pages to
// need, under the name of the pages file that holds them.
func (l *loader) countPages(name string, m *Memory, need map[string]uint64) error {
	pm, err := l.pagemap(name)
	if err != nil {
		return err
	}
	shared := strings.HasPrefix(name, "pagemap-shmem-")
	pagesFile := fmt.Sprintf("pages-%d.img", pm.Head.GetPagesId())
	for _, e := range pm.Entries {
		n := image.NrPages(e)
		m.Pages += n
		if e.GetFlags()&image.PagemapPresent != 0 {
			m.StoredPages += n
			need[pagesFile] += n * image.PageSize
		}
		if e.GetFlags()&image.PagemapParent != 0 || e.GetInParent() {
			m.ParentPages += n
		}
		if shared {
			m.SharedPages += n
		}
	}
	m.Bytes = m.Pages * image.PageSize
	m.StoredBytes = m.StoredPages * image.PageSize
	return nil
}

// recipientsOf lists the fingerprints an encrypted set is sealed for; empty when plain.
func recipientsOf(set *imgset.Set) []string {
	out := []string{}
	for _, fp := range set.Recipients() {
		out = append(out, fp.String())
	}
	return out
}
