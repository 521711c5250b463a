package explore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
)

// Limits of what is read from the saved memory.
const (
	// MaxArgsBytes bounds a process's command line or environment area read from
	// its pages (Linux bounds both together by a quarter of the stack limit).
	MaxArgsBytes = 4 << 20
	// MaxSearchContext bounds the bytes shown before and after a match.
	MaxSearchContext = 4096
	// MaxPattern bounds a literal search pattern.
	MaxPattern = 4096
	// RegexpSpan is the longest match a regular expression is sure to find: memory
	// is searched in chunks that overlap by this much.
	RegexpSpan = 4096
	// DefaultMaxMatches is how many matches a search reports when not told.
	DefaultMaxMatches = 1000
	// searchChunk is the bytes of memory searched at once.
	searchChunk = 1 << 20
)

// memory is one process's saved memory: its pagemap and pages file.
type memory struct {
	pid   int
	pm    *image.PageMap
	pages *imgset.File // nil when the pagemap has no present pages
	segs  []segment    // present entries, by address
}

// segment is one present pagemap entry: the virtual range and where its bytes are.
type segment struct {
	start, end uint64
	off        int64
}

func (l *loader) memory(pid int) (*memory, error) {
	name := fmt.Sprintf("pagemap-%d.img", pid)
	pm, err := l.pagemap(name)
	if err != nil {
		return nil, err
	}
	m := &memory{pid: pid, pm: pm}
	for i, e := range pm.Entries {
		off := pm.EntryOffset(i)
		if off < 0 {
			continue
		}
		start := e.GetVaddr()
		m.segs = append(m.segs, segment{start: start, end: start + image.NrPages(e)*image.PageSize, off: off})
	}
	sort.Slice(m.segs, func(i, j int) bool { return m.segs[i].start < m.segs[j].start })
	if len(m.segs) == 0 {
		return m, nil
	}
	pagesName := fmt.Sprintf("pages-%d.img", pm.Head.GetPagesId())
	f, err := l.set.Open(pagesName)
	if err != nil {
		return nil, &FileError{File: pagesName, Reason: "cannot open", Err: err}
	}
	if f.Size() < pm.PagesSize() {
		f.Close()
		return nil, &FileError{File: pagesName, Reason: fmt.Sprintf("%d B, shorter than the %d B its pagemap needs", f.Size(), pm.PagesSize())}
	}
	m.pages = f
	return m, nil
}

func (m *memory) close() {
	if m.pages != nil {
		m.pages.Close()
	}
}

// read reads the saved bytes at [addr, addr+len(p)) as far as they are saved
// contiguously: n is short where a page is not in the set.
func (m *memory) read(p []byte, addr uint64) (int, error) {
	n := 0
	for n < len(p) {
		a := addr + uint64(n)
		i := sort.Search(len(m.segs), func(i int) bool { return m.segs[i].end > a })
		if i == len(m.segs) || m.segs[i].start > a {
			break
		}
		s := m.segs[i]
		k := int(min(uint64(len(p)-n), s.end-a))
		got, err := m.pages.ReadAt(p[n:n+k], s.off+int64(a-s.start))
		n += got
		if got < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, fmt.Errorf("pages of process %d at %#x: %w", m.pid, a, err)
		}
	}
	return n, nil
}

// Args is one process's command line, and its environment when asked for, as they
// are in its saved memory (the areas mm-PID.img points at on its stack).
type Args struct {
	PID     int      `json:"pid"`
	PPID    int      `json:"ppid"`
	Comm    string   `json:"comm"`
	Depth   int      `json:"depth"`
	Cmdline []string `json:"cmdline"`
	Env     []string `json:"env,omitempty"`
	// Problem says why the command line or environment is missing or cut short
	// (its pages are not in the set); empty when both were read whole.
	Problem string `json:"problem,omitempty"`
}

// ProcessArgs returns each process's command line, and with env its environment,
// in tree order (as PS), read from the pages of the set.
func ProcessArgs(set *imgset.Set, env bool) ([]Args, error) {
	l := newLoader(set)
	procs, err := l.ps()
	if err != nil {
		return nil, err
	}
	out := make([]Args, 0, len(procs))
	for _, p := range procs {
		a := Args{PID: p.PID, PPID: p.PPID, Comm: p.Comm, Depth: p.Depth, Cmdline: []string{}}
		// A process without memory images (a zombie) or with damaged ones is
		// listed with the problem: the rest of the tree is still shown.
		e, err := first[*mm.MmEntry](l, fmt.Sprintf("mm-%d.img", p.PID), "MM")
		var mem *memory
		if err == nil {
			mem, err = l.memory(p.PID)
		}
		if err != nil {
			a.Problem = err.Error()
			if env {
				a.Env = []string{}
			}
			out = append(out, a)
			continue
		}
		var probs []string
		a.Cmdline, err = readStrings(mem, e.GetMmArgStart(), e.GetMmArgEnd())
		if err != nil {
			probs = append(probs, "command line: "+err.Error())
		}
		if env {
			a.Env, err = readStrings(mem, e.GetMmEnvStart(), e.GetMmEnvEnd())
			if err != nil {
				probs = append(probs, "environment: "+err.Error())
			}
			if a.Env == nil {
				a.Env = []string{}
			}
		}
		mem.close()
		a.Problem = strings.Join(probs, "; ")
		out = append(out, a)
	}
	return out, nil
}

// readStrings reads the NUL-separated strings at [start, end) of a process's memory.
func readStrings(mem *memory, start, end uint64) ([]string, error) {
	if end < start {
		return []string{}, fmt.Errorf("area %#x-%#x ends before it starts", start, end)
	}
	if end-start > MaxArgsBytes {
		return []string{}, fmt.Errorf("area %#x-%#x is more than %d bytes", start, end, MaxArgsBytes)
	}
	buf := make([]byte, end-start)
	n, err := mem.read(buf, start)
	if err != nil {
		return []string{}, err
	}
	out := splitNUL(buf[:n])
	if n < len(buf) {
		return out, fmt.Errorf("the page at %#x is not in the set", (start+uint64(n))&^(image.PageSize-1))
	}
	return out, nil
}

func splitNUL(b []byte) []string {
	out := []string{}
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			out = append(out, string(b))
			break
		}
		out = append(out, string(b[:i]))
		b = b[i+1:]
	}
	return out
}

// SearchOptions says what SearchMemory looks for.
type SearchOptions struct {
	PID     int            // only this process; 0 for all
	Literal []byte         // the bytes to find, or
	Regexp  *regexp.Regexp // a regular expression (a match is at most RegexpSpan bytes)
	Context int            // bytes shown before and after a match, at most MaxSearchContext
	Max     int            // matches reported at most; 0 is DefaultMaxMatches
}

// Match is one place the pattern was found in a process's saved memory.
type Match struct {
	PID     int    `json:"pid"`
	Addr    Addr   `json:"addr"`    // address of the match's first byte
	Length  int    `json:"length"`  // bytes matched
	Mapping string `json:"mapping"` // what the area maps: "stack", "heap", "anon", "file /bin/sh", ...
	Perm    string `json:"perm"`    // the area's protection, "rw-p"
	// Before, Match and After are the bytes around the match and matched, as far
	// as they are saved contiguously; ContextAddr is the address of Before's
	// first byte.
	ContextAddr Addr   `json:"context_addr"`
	Before      []byte `json:"before"`
	Match       []byte `json:"match"`
	After       []byte `json:"after"`
}

// SearchResult is what SearchMemory found.
type SearchResult struct {
	Matches   []Match `json:"matches"`
	Truncated bool    `json:"truncated"` // more matches than Max
	Searched  uint64  `json:"searched"`  // bytes of memory searched
}

// SearchMemory looks for a literal or a regular expression in the saved pages of
// the set's processes (private memory: pagemap-PID.img and its pages file), in
// tree order and address order.
func SearchMemory(set *imgset.Set, opts SearchOptions) (*SearchResult, error) {
	if (opts.Regexp == nil) == (len(opts.Literal) == 0) {
		return nil, errors.New("search: need one pattern, a literal or a regular expression")
	}
	if len(opts.Literal) > MaxPattern {
		return nil, fmt.Errorf("search: pattern of %d bytes, more than %d", len(opts.Literal), MaxPattern)
	}
	if opts.Context < 0 || opts.Context > MaxSearchContext {
		return nil, fmt.Errorf("search: context of %d bytes, want 0 to %d", opts.Context, MaxSearchContext)
	}
	if opts.Max <= 0 {
		opts.Max = DefaultMaxMatches
	}
	l := newLoader(set)
	procs, err := l.mems()
	if err != nil {
		return nil, err
	}
	res := &SearchResult{Matches: []Match{}}
	found := false
	for _, p := range procs {
		if opts.PID != 0 && p.PID != opts.PID {
			continue
		}
		found = true
		mem, err := l.memory(p.PID)
		if err != nil {
			return nil, err
		}
		err = searchProcess(mem, p.VMAs, opts, res)
		mem.close()
		if err != nil {
			return nil, err
		}
		if res.Truncated {
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("search: no process %d in the set", opts.PID)
	}
	return res, nil
}

// searchProcess searches each run of virtually contiguous saved pages, a chunk at
// a time, each chunk extended by the overlap so a match across the boundary is
// found once (in the chunk where it starts).
func searchProcess(mem *memory, vmas []VMA, opts SearchOptions, res *SearchResult) error {
	overlap := RegexpSpan
	if opts.Regexp == nil {
		overlap = len(opts.Literal) - 1
	}
	buf := make([]byte, searchChunk+overlap)
	for i := 0; i < len(mem.segs); {
		start, end := mem.segs[i].start, mem.segs[i].end
		for i++; i < len(mem.segs) && mem.segs[i].start == end; i++ {
			end = mem.segs[i].end
		}
		for at := start; at < end; at += searchChunk {
			n := int(min(uint64(len(buf)), end-at))
			got, err := mem.read(buf[:n], at)
			if err != nil {
				return err
			}
			chunk := buf[:got]
			own := int(min(uint64(searchChunk), end-at)) // matches must start here
			res.Searched += uint64(own)
			for _, loc := range find(chunk, opts) {
				if loc[0] >= own {
					continue
				}
				if len(res.Matches) == opts.Max {
					res.Truncated = true
					return nil
				}
				m, err := match(mem, vmas, at+uint64(loc[0]), loc[1]-loc[0], opts.Context)
				if err != nil {
					return err
				}
				res.Matches = append(res.Matches, m)
			}
		}
	}
	return nil
}

// find returns the [start, end) of every match in b.
func find(b []byte, opts SearchOptions) [][]int {
	if opts.Regexp != nil {
		return opts.Regexp.FindAllIndex(b, -1)
	}
	var out [][]int
	for off := 0; ; {
		i := bytes.Index(b[off:], opts.Literal)
		if i < 0 {
			return out
		}
		out = append(out, []int{off + i, off + i + len(opts.Literal)})
		off += i + 1
	}
}

// match describes the match at addr with its context.
func match(mem *memory, vmas []VMA, addr uint64, length, context int) (Match, error) {
	m := Match{PID: mem.pid, Addr: Addr(addr), Length: length, Mapping: "-", Perm: "-"}
	for _, v := range vmas {
		if uint64(v.Start) <= addr && addr < uint64(v.End) {
			m.Mapping, m.Perm = v.Backing, v.PermString()
			if v.Path != "" {
				m.Mapping += " " + v.Path
			}
			break
		}
	}
	// The bytes before the match: those saved contiguously up to it.
	from := addr - min(uint64(context), addr)
	before := make([]byte, addr-from)
	for from < addr {
		n, err := mem.read(before[:addr-from], from)
		if err != nil {
			return m, err
		}
		if uint64(n) == addr-from {
			break
		}
		from = (from+uint64(n))&^(image.PageSize-1) + image.PageSize // past the missing page
	}
	m.ContextAddr, m.Before = Addr(from), before[:addr-from]
	body := make([]byte, length+context)
	n, err := mem.read(body, addr)
	if err != nil {
		return m, err
	}
	m.Match, m.After = body[:min(n, length)], body[min(n, length):n]
	return m, nil
}
