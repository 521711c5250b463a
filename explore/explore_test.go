package explore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
)

const fixtures = "../fixtures/criu-4.2"

// fixtureSets lists the real CRIU sets (every directory with a SET.crit beside it).
func fixtureSets(t *testing.T) []string {
	t.Helper()
	crits, err := filepath.Glob(filepath.Join(fixtures, "*.crit"))
	if err != nil || len(crits) == 0 {
		t.Fatalf("no fixture sets in %s: %v", fixtures, err)
	}
	var sets []string
	for _, c := range crits {
		sets = append(sets, strings.TrimSuffix(filepath.Base(c), ".crit"))
	}
	return sets
}

func openFixture(t *testing.T, name string) *imgset.Set {
	t.Helper()
	s, err := imgset.Open(filepath.Join(fixtures, name), imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func golden(t *testing.T, set, what string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, set+".crit", "x-"+what+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// blocks splits crit's per-process output (a PID line, then tab-indented lines).
func blocks(t *testing.T, lines []string) (pids []int, body map[int][]string) {
	t.Helper()
	body = map[int][]string{}
	cur := -1
	for _, ln := range lines {
		if !strings.HasPrefix(ln, "\t") {
			pid, err := strconv.Atoi(ln)
			if err != nil {
				t.Fatalf("golden: bad pid line %q", ln)
			}
			pids, cur = append(pids, pid), pid
			continue
		}
		if cur < 0 {
			t.Fatalf("golden: %q before any pid", ln)
		}
		body[cur] = append(body[cur], ln[1:])
	}
	return pids, body
}

func TestPSMatchesCrit(t *testing.T) {
	for _, name := range fixtureSets(t) {
		t.Run(name, func(t *testing.T) {
			procs, err := PS(openFixture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			lines := golden(t, name, "ps")
			if got := strings.Fields(lines[0]); strings.Join(got, " ") != "PID PGID SID COMM" {
				t.Fatalf("golden header %q", lines[0])
			}
			rows := lines[1:]
			if len(rows) != len(procs) {
				t.Fatalf("%d processes, crit shows %d", len(procs), len(rows))
			}
			for i, row := range rows {
				// crit: "%7d%7d%7d   %s%s" with 4 spaces of indent per level.
				num := func(a, b int) int {
					n, err := strconv.Atoi(strings.TrimSpace(row[a:b]))
					if err != nil {
						t.Fatalf("golden row %q: %v", row, err)
					}
					return n
				}
				rest := row[24:]
				comm := strings.TrimLeft(rest, " ")
				depth := (len(rest) - len(comm)) / 4
				p := procs[i]
				if p.PID != num(0, 7) || p.PGID != num(7, 14) || p.SID != num(14, 21) || p.Comm != comm || p.Depth != depth {
					t.Errorf("row %d: got pid %d pgid %d sid %d depth %d comm %q; crit %q",
						i, p.PID, p.PGID, p.SID, p.Depth, p.Comm, row)
				}
				if len(p.Threads) == 0 || p.Threads[0] != p.PID {
					t.Errorf("pid %d: threads %v do not start with the pid", p.PID, p.Threads)
				}
			}
		})
	}
}

func TestThreadsMatchCoreImages(t *testing.T) {
	for _, name := range fixtureSets(t) {
		procs, err := PS(openFixture(t, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range procs {
			for _, tid := range p.Threads {
				if _, err := os.Stat(filepath.Join(fixtures, name, fmt.Sprintf("core-%d.img", tid))); err != nil {
					t.Errorf("%s: thread %d of %d has no core image: %v", name, tid, p.PID, err)
				}
			}
		}
	}
}

func TestFDsMatchCrit(t *testing.T) {
	for _, name := range fixtureSets(t) {
		t.Run(name, func(t *testing.T) {
			got, err := FDs(openFixture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			pids, body := blocks(t, golden(t, name, "fds"))
			if len(pids) != len(got) {
				t.Fatalf("%d processes, crit shows %d", len(got), len(pids))
			}
			for i, pf := range got {
				if pf.PID != pids[i] {
					t.Fatalf("process %d: pid %d, crit %d", i, pf.PID, pids[i])
				}
				var want []string
				for _, fd := range pf.FDs {
					want = append(want, fmt.Sprintf("%7d: %s", fd.FD, fd.Name))
				}
				want = append(want, fmt.Sprintf("%7s: %s", "cwd", pf.Cwd), fmt.Sprintf("%7s: %s", "root", pf.Root))
				compareLines(t, pf.PID, want, body[pf.PID])
			}
		})
	}
}

func compareLines(t *testing.T, pid int, got, crit []string) {
	t.Helper()
	if len(got) != len(crit) {
		t.Errorf("pid %d: %d lines, crit %d:\n%s\n--- crit:\n%s", pid, len(got), len(crit),
			strings.Join(got, "\n"), strings.Join(crit, "\n"))
		return
	}
	for i := range got {
		if got[i] != crit[i] {
			t.Errorf("pid %d line %d: got %q, crit %q", pid, i, got[i], crit[i])
		}
	}
}

func TestMemsMatchCrit(t *testing.T) {
	for _, name := range fixtureSets(t) {
		t.Run(name, func(t *testing.T) {
			got, err := Mems(openFixture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			pids, body := blocks(t, golden(t, name, "mems"))
			if len(pids) != len(got) {
				t.Fatalf("%d processes, crit shows %d", len(got), len(pids))
			}
			for i, pv := range got {
				if pv.PID != pids[i] {
					t.Fatalf("process %d: pid %d, crit %d", i, pv.PID, pids[i])
				}
				lines := body[pv.PID]
				// "%-36s    %s" for the exe, then "%-36s%s%s": range, protection, backing.
				if want := fmt.Sprintf("%-36s    %s", "exe", pv.Exe); lines[0] != want {
					t.Errorf("pid %d exe: got %q, crit %q", pv.PID, want, lines[0])
				}
				lines = lines[1:]
				if len(lines) != len(pv.VMAs) {
					t.Fatalf("pid %d: %d VMAs, crit %d", pv.PID, len(pv.VMAs), len(lines))
				}
				for j, v := range pv.VMAs {
					ln := lines[j]
					rng, prot, rest := strings.TrimSpace(ln[:36]), ln[36:39], ln[39:]
					start, end, ok := strings.Cut(rng, "-")
					if !ok || hexAddr(t, start) != v.Start || hexAddr(t, end) != v.End || prot != v.Prot || rest != v.crit {
						t.Errorf("pid %d vma %d: got %s-%s %s %q; crit %q", pv.PID, j, v.Start, v.End, v.Prot, v.crit, ln)
					}
					checkBacking(t, v, rest)
				}
			}
		})
	}
}

// checkBacking checks the exported description against crit's text where crit
// names the same thing.
func checkBacking(t *testing.T, v VMA, crit string) {
	t.Helper()
	c := strings.TrimSuffix(strings.TrimSpace(crit), " *")
	if (c == "") != (v.Backing == "anon" || v.Backing == "heap" || v.Backing == "vvar" || v.Backing == "aio") {
		t.Errorf("%s: backing %s, crit %q", v.Start, v.Backing, crit)
	}
	if v.Dumped == strings.HasSuffix(crit, " *") {
		t.Errorf("%s: dumped %v, crit %q", v.Start, v.Dumped, crit)
	}
	switch v.Backing {
	case "file":
		want := v.Path
		if v.Offset != 0 {
			want += fmt.Sprintf(" + %#x", v.Offset)
		}
		if v.Shared {
			want += " (s)"
		}
		if c != want {
			t.Errorf("%s: file %q, crit %q", v.Start, want, c)
		}
	case "memfd":
		// crit cannot name a memfd mapping ("unknown path"); we give its name.
		if !strings.HasPrefix(c, "unknown path") || v.Path == "" {
			t.Errorf("%s: memfd %q, crit %q", v.Start, v.Path, c)
		}
	case "vdso", "vsyscall":
		if c != "["+v.Backing+"]" {
			t.Errorf("%s: %s, crit %q", v.Start, v.Backing, c)
		}
	case "stack":
		if !strings.HasPrefix(c, "[stack") {
			t.Errorf("%s: stack, crit %q", v.Start, c)
		}
	}
}

func hexAddr(t *testing.T, s string) Addr {
	t.Helper()
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		t.Fatalf("golden address %q: %v", s, err)
	}
	return Addr(v)
}

var (
	rssRun = regexp.MustCompile(`^([0-9a-f]+) / (\d+)\s*(.*)$`)
	rssVMA = regexp.MustCompile(`^([0-9a-f]+) / (\d+)\s*(.*)$`)
)

func TestRSSMatchesCrit(t *testing.T) {
	for _, name := range fixtureSets(t) {
		t.Run(name, func(t *testing.T) {
			got, err := RSS(openFixture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			pids, body := blocks(t, golden(t, name, "rss"))
			if len(pids) != len(got) {
				t.Fatalf("%d processes, crit shows %d", len(got), len(pids))
			}
			for i, pr := range got {
				if pr.PID != pids[i] {
					t.Fatalf("process %d: pid %d, crit %d", i, pr.PID, pids[i])
				}
				compareLines(t, pr.PID, critRSSTokens(pr), parseCritRSS(t, body[pr.PID]))
				checkResidency(t, pr)
			}
		})
	}
}

// parseCritRSS turns crit's rss text into tokens: "RUN vaddr pages" for each pagemap
// entry, then "VMA start pages path" or "~" for each area it covers.
func parseCritRSS(t *testing.T, lines []string) []string {
	t.Helper()
	var out []string
	vmaTok := func(s string) {
		s = strings.TrimSpace(s)
		switch {
		case s == "":
		case s == "~":
			out = append(out, "~")
		default:
			m := rssVMA.FindStringSubmatch(s)
			if m == nil {
				t.Fatalf("golden rss area %q", s)
			}
			out = append(out, strings.TrimSpace(fmt.Sprintf("VMA %s %s %s", m[1], m[2], m[3])))
		}
	}
	for _, ln := range lines {
		if strings.HasPrefix(ln, " ") {
			vmaTok(ln)
			continue
		}
		m := rssRun.FindStringSubmatch(ln)
		if m == nil {
			t.Fatalf("golden rss line %q", ln)
		}
		out = append(out, fmt.Sprintf("RUN %s %s", m[1], m[2]))
		vmaTok(m[3])
	}
	return out
}

// critRSSTokens renders the model as parseCritRSS reads crit: an area already shown
// for the previous entry is "~"; file areas carry crit's file name.
func critRSSTokens(pr ProcessRSS) []string {
	var out []string
	shown := -1
	for _, r := range pr.Runs {
		out = append(out, fmt.Sprintf("RUN %x %d", uint64(r.Vaddr), r.Pages))
		for _, vi := range r.VMAs {
			if vi == shown {
				out = append(out, "~")
				continue
			}
			v := pr.VMAs[vi].VMA
			tok := fmt.Sprintf("VMA %08x %d", uint64(v.Start), v.Pages)
			switch {
			case v.Backing == "memfd" || (v.Backing == "file" && v.Path == ""):
				tok += " unknown path"
			case v.Backing == "file":
				tok += " " + v.Path
			}
			out = append(out, tok)
			shown = vi
		}
	}
	return out
}

// checkResidency checks that the per-area view accounts for every page of the
// process pagemap that lies in an area, and nothing else of it.
func checkResidency(t *testing.T, pr ProcessRSS) {
	t.Helper()
	var inRuns, private uint64
	for _, r := range pr.Runs {
		for _, vi := range r.VMAs {
			v := pr.VMAs[vi]
			s, e := max(uint64(r.Vaddr), uint64(v.Start)), min(uint64(r.Vaddr)+r.Pages*image.PageSize, uint64(v.End))
			if e > s {
				inRuns += (e - s) / image.PageSize
			}
		}
	}
	var total uint64
	for _, v := range pr.VMAs {
		var n uint64
		for _, rg := range v.Ranges {
			n += rg.Pages
			if rg.Start < v.Start || uint64(rg.Start)+rg.Pages*image.PageSize > uint64(v.End) {
				t.Errorf("pid %d: range %s+%d outside area %s-%s", pr.PID, rg.Start, rg.Pages, v.Start, v.End)
			}
		}
		if n != v.Resident {
			t.Errorf("pid %d area %s: resident %d, ranges hold %d", pr.PID, v.Start, v.Resident, n)
		}
		if v.Source == fmt.Sprintf("pagemap-%d.img", pr.PID) {
			private += n
		}
		total += n
	}
	if private != inRuns {
		t.Errorf("pid %d: areas hold %d private pages, the pagemap %d", pr.PID, private, inRuns)
	}
	if total != pr.Resident {
		t.Errorf("pid %d: resident %d, areas sum to %d", pr.PID, pr.Resident, total)
	}
}

// critJSON reads one of crit's plain JSON goldens.
func critJSON(t *testing.T, set, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, set+".crit", file+".pretty.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return m
}

func critEntries(t *testing.T, set, file string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, e := range critJSON(t, set, file)["entries"].([]any) {
		out = append(out, e.(map[string]any))
	}
	return out
}

func num(v any) uint64 {
	switch x := v.(type) {
	case float64:
		return uint64(x)
	case string:
		n, _ := strconv.ParseUint(x, 0, 64)
		return n
	}
	return 0
}

// TestSharedMemoryResidency checks the memfd areas against the shmem pagemaps crit
// decoded: an area mapping a whole object holds all its saved pages.
func TestSharedMemoryResidency(t *testing.T) {
	const set = "misc"
	got, err := RSS(openFixture(t, set))
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, v := range got[0].VMAs {
		if v.Backing != "memfd" {
			continue
		}
		found++
		if !strings.HasPrefix(v.Source, "pagemap-shmem-") {
			t.Fatalf("memfd area %s: source %q", v.Start, v.Source)
		}
		var want uint64
		for _, e := range critEntries(t, set, v.Source)[1:] {
			want += num(e["nr_pages"])
		}
		if v.Resident != want {
			t.Errorf("memfd area %s (%s): resident %d, %s holds %d", v.Start, v.Path, v.Resident, v.Source, want)
		}
	}
	if found == 0 {
		t.Fatal("misc has no memfd areas")
	}
}

func TestSocketsMatchFilesImage(t *testing.T) {
	for _, name := range fixtureSets(t) {
		t.Run(name, func(t *testing.T) {
			socks, err := Sockets(openFixture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			queued := map[uint64]uint64{}
			if _, err := os.Stat(filepath.Join(fixtures, name, "sk-queues.img")); err == nil {
				for _, e := range critEntries(t, name, "sk-queues.img") {
					queued[num(e["id_for"])] += num(e["length"])
				}
			}
			var want []map[string]any
			for _, e := range critEntries(t, name, "files.img") {
				for _, f := range []string{"usk", "isk", "psk", "nlsk"} {
					if s, ok := e[f].(map[string]any); ok {
						want = append(want, s)
					}
				}
			}
			if len(socks) != len(want) {
				t.Fatalf("%d sockets, files.img has %d", len(socks), len(want))
			}
			for i, s := range socks {
				w := want[i]
				if uint64(s.ID) != num(w["id"]) || uint64(s.Ino) != num(w["ino"]) {
					t.Errorf("socket %d: id %d ino %d, crit %v %v", i, s.ID, s.Ino, w["id"], w["ino"])
				}
				if st, _ := w["state"].(string); st != "" && s.State != st {
					t.Errorf("socket %d: state %s, crit %s", s.ID, s.State, st)
				}
				if ty, _ := w["type"].(string); ty != "" && strings.ToUpper(s.Type) != ty {
					t.Errorf("socket %d: type %s, crit %s", s.ID, s.Type, ty)
				}
				if src, ok := w["src_addr"].([]any); ok {
					if want := fmt.Sprintf("%s:%d", src[0], num(w["src_port"])); s.Local != want {
						t.Errorf("socket %d: local %s, crit %s", s.ID, s.Local, want)
					}
				}
				if peer, ok := w["peer"]; ok && uint64(s.Peer) != num(peer) {
					t.Errorf("socket %d: peer %d, crit %v", s.ID, s.Peer, peer)
				}
				if s.Queued != queued[uint64(s.ID)] {
					t.Errorf("socket %d: queued %d, sk-queues.img %d", s.ID, s.Queued, queued[uint64(s.ID)])
				}
				if s.Proto == "tcp" && s.State == "ESTABLISHED" {
					ts := critEntries(t, name, fmt.Sprintf("tcp-stream-%x.img", s.Ino))[0]
					if s.InQ != num(ts["inq_len"]) || s.OutQ != num(ts["outq_len"]) {
						t.Errorf("socket %d: queues %d/%d, crit %v/%v", s.ID, s.InQ, s.OutQ, ts["inq_len"], ts["outq_len"])
					}
				}
				if len(s.Owners) == 0 {
					t.Errorf("socket %d: no owner", s.ID)
				}
			}
		})
	}
}

func TestInspectMatchesImages(t *testing.T) {
	for _, name := range fixtureSets(t) {
		t.Run(name, func(t *testing.T) {
			sum, err := Inspect(openFixture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			pst := critEntries(t, name, "pstree.img")
			threads := 0
			for _, p := range pst {
				threads += len(p["threads"].([]any))
			}
			if sum.Processes != len(pst) || sum.Threads != threads {
				t.Errorf("processes %d threads %d; pstree.img has %d and %d", sum.Processes, sum.Threads, len(pst), threads)
			}
			ents, err := os.ReadDir(filepath.Join(fixtures, name))
			if err != nil {
				t.Fatal(err)
			}
			var bytes int64
			var pages, present uint64
			kinds := map[string]int{}
			for _, e := range ents {
				fi, err := e.Info()
				if err != nil {
					t.Fatal(err)
				}
				bytes += fi.Size()
				if strings.HasPrefix(e.Name(), "pages-") {
					kinds["PAGES"]++
					continue
				}
				m := critJSON(t, name, e.Name())
				kinds[m["magic"].(string)]++
				if m["magic"] == "PAGEMAP" {
					for _, pe := range m["entries"].([]any)[1:] {
						pe := pe.(map[string]any)
						n := num(pe["nr_pages"])
						pages += n
						if strings.Contains(fmt.Sprint(pe["flags"]), "PE_PRESENT") {
							present += n
						}
					}
				}
			}
			if sum.Files != len(ents) || sum.Bytes != bytes {
				t.Errorf("files %d bytes %d; the folder has %d and %d", sum.Files, sum.Bytes, len(ents), bytes)
			}
			if sum.Memory.Pages != pages || sum.Memory.Bytes != pages*image.PageSize || sum.Memory.StoredPages != present {
				t.Errorf("memory %+v; crit's pagemaps list %d pages, %d present", sum.Memory, pages, present)
			}
			if int64(sum.Memory.StoredBytes) != sum.Memory.PagesFiles {
				t.Errorf("stored %d bytes but pages files hold %d", sum.Memory.StoredBytes, sum.Memory.PagesFiles)
			}
			if len(sum.Kinds) != len(kinds) {
				t.Errorf("kinds %v, crit %v", sum.Kinds, kinds)
			}
			for _, k := range sum.Kinds {
				if kinds[k.Name] != k.Files {
					t.Errorf("kind %s: %d files, crit %d", k.Name, k.Files, kinds[k.Name])
				}
			}
			if sum.Encrypted || len(sum.Recipients) != 0 {
				t.Errorf("plain set reported encrypted: %+v", sum)
			}
			if len(sum.Problems) != 0 {
				t.Errorf("a whole set has problems: %q", sum.Problems)
			}
		})
	}
}

// copySet copies a fixture set to a temporary folder, leaving out the files skip names.
func copySet(t *testing.T, name string, skip ...string) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
next:
	for _, e := range ents {
		for _, s := range skip {
			if e.Name() == s {
				continue next
			}
		}
		b, err := os.ReadFile(filepath.Join(fixtures, name, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func openDir(t *testing.T, dir string) *imgset.Set {
	t.Helper()
	s, err := imgset.Open(dir, imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMissingFileIsNamed(t *testing.T) {
	cases := []struct {
		drop string
		run  func(*imgset.Set) error
	}{
		{"pstree.img", func(s *imgset.Set) error { _, err := PS(s); return err }},
		{"core-16197.img", func(s *imgset.Set) error { _, err := PS(s); return err }},
		{"ids-16199.img", func(s *imgset.Set) error { _, err := FDs(s); return err }},
		{"fs-16200.img", func(s *imgset.Set) error { _, err := FDs(s); return err }},
		{"mm-16197.img", func(s *imgset.Set) error { _, err := Mems(s); return err }},
		{"pagemap-16200.img", func(s *imgset.Set) error { _, err := RSS(s); return err }},
		{"fdinfo-3.img", func(s *imgset.Set) error { _, err := Sockets(s); return err }},
		{"pstree.img", func(s *imgset.Set) error { _, err := Inspect(s); return err }},
	}
	for _, c := range cases {
		err := c.run(openDir(t, copySet(t, "tree", c.drop)))
		if !errors.Is(err, ErrMissing) || err.Error() != c.drop+": missing" {
			t.Errorf("without %s: %v", c.drop, err)
		}
	}
}

func TestForeignFileIsNamed(t *testing.T) {
	dir := copySet(t, "tree")
	// core-16199.img replaced by an fdinfo image.
	b, err := os.ReadFile(filepath.Join(dir, "fdinfo-2.img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "core-16199.img"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	want := "core-16199.img: not a CORE image (magic FDINFO)"
	if _, err := PS(openDir(t, dir)); err == nil || err.Error() != want {
		t.Errorf("ps: %v, want %q", err, want)
	}
	if _, err := Inspect(openDir(t, dir)); err == nil || err.Error() != want {
		t.Errorf("inspect: %v, want %q", err, want)
	}
	// Garbage: the codec's error names the file and the offset.
	if err := os.WriteFile(filepath.Join(dir, "mm-16197.img"), []byte("not an image"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Mems(openDir(t, dir)); err == nil || !strings.HasPrefix(err.Error(), "mm-16197.img: ") {
		t.Errorf("mems on garbage: %v", err)
	}
	// A pages file where a protobuf image belongs.
	for _, f := range []string{"mm-16197.img", "core-16199.img"} {
		orig, err := os.ReadFile(filepath.Join(fixtures, "tree", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), orig, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(filepath.Join(dir, "pages-1.img"), filepath.Join(dir, "pagemap-16197.img")); err != nil {
		t.Fatal(err)
	}
	if _, err := RSS(openDir(t, dir)); err == nil || !strings.HasPrefix(err.Error(), "pagemap-16197.img: ") {
		t.Errorf("rss on a pages file: %v", err)
	}
}

// TestNoPagesRead empties every pages file: the explorers must not notice, since
// they read pagemaps only (a read would hit EOF).
func TestNoPagesRead(t *testing.T) {
	dir := copySet(t, "counter")
	pages, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
	for _, p := range pages {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := openDir(t, dir)
	if _, err := RSS(s); err != nil {
		t.Fatal(err)
	}
	sum, err := Inspect(s)
	if err != nil {
		t.Fatal(err)
	}
	// Sizing the files is enough to see that they cannot hold the pages.
	if len(sum.Problems) != 1 || !strings.HasPrefix(sum.Problems[0], "pages-1.img: 0 B, shorter than the ") {
		t.Errorf("empty pages file: problems %q", sum.Problems)
	}
}

// TestInspectProblems: damage that leaves a summary possible is listed, naming the
// file: a missing inventory.img, and a pages file missing or shorter than its
// pagemaps need (misc has three, one per pagemap).
func TestInspectProblems(t *testing.T) {
	dir := copySet(t, "misc", "inventory.img", "pages-3.img")
	if err := os.Truncate(filepath.Join(dir, "pages-2.img"), 0); err != nil {
		t.Fatal(err)
	}
	sum, err := Inspect(openDir(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"inventory.img: missing (restore needs it)",
		"pages-2.img: 0 B, shorter than the ", "pages-3.img: missing, its pagemaps need "}
	if len(sum.Problems) != len(want) {
		t.Fatalf("problems %q, want %q", sum.Problems, want)
	}
	for i, w := range want {
		if !strings.HasPrefix(sum.Problems[i], w) {
			t.Errorf("problem %d: %q, want %q...", i, sum.Problems[i], w)
		}
	}
}

// TestLegacyFileImages rebuilds the files set the way CRIU before files.img wrote it
// (reg-files.img and pipes.img) and expects the same fds.
func TestLegacyFileImages(t *testing.T) {
	want, err := FDs(openFixture(t, "files"))
	if err != nil {
		t.Fatal(err)
	}
	dir := copySet(t, "files", "files.img")
	f, err := os.Open(filepath.Join(fixtures, "files", "files.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := image.ReadImage(f)
	if err != nil {
		t.Fatal(err)
	}
	regs := &image.Image{Kind: image.KindByName("REG_FILES")}
	pipes := &image.Image{Kind: image.KindByName("PIPES")}
	for _, e := range img.Entries {
		fe := e.Msg.(*fdinfo.FileEntry)
		switch {
		case fe.GetReg() != nil:
			regs.Entries = append(regs.Entries, image.Entry{Msg: fe.GetReg()})
		case fe.GetPipe() != nil:
			pipes.Entries = append(pipes.Entries, image.Entry{Msg: fe.GetPipe()})
		default:
			t.Fatalf("files set has a %s file; extend this test", fe.GetType())
		}
	}
	for name, im := range map[string]*image.Image{"reg-files.img": regs, "pipes.img": pipes} {
		out, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := im.WriteTo(out); err != nil {
			t.Fatal(err)
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := FDs(openDir(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(want)
	if string(a) != string(b) {
		t.Errorf("legacy set:\n%s\nfiles.img set:\n%s", a, b)
	}
}
