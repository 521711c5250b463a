package restore

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// mapping is one line of /proc/PID/maps.
type mapping struct {
	start, end uint64
	name       string // "[vdso]", a path, or ""
}

// readMaps parses /proc/PID/maps.
func readMaps(pid int) ([]mapping, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			return nil, fmt.Errorf("/proc/%d/maps: bad line %q", pid, line)
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("/proc/%d/maps: bad line %q", pid, line)
		}
		m := mapping{start: s, end: e}
		if len(fields) >= 6 {
			m.name = strings.Join(fields[5:], " ")
		}
		out = append(out, m)
	}
	return out, nil
}

// span is a half-open address range.
type span struct{ start, end uint64 }

// findHole returns the lowest address at or above min where size bytes fit without
// touching any of the used ranges, with guard bytes kept free on both sides.
func findHole(used []span, min, size, guard uint64) (uint64, bool) {
	sort.Slice(used, func(i, j int) bool { return used[i].start < used[j].start })
	const top = 0x7ffffffff000 // end of the 47-bit user address space
	cand := min
	for _, u := range used {
		if u.end+guard <= cand {
			continue
		}
		if cand+size+guard <= u.start {
			return cand, true
		}
		if u.end+guard > cand {
			cand = u.end + guard
		}
	}
	if cand+size <= top {
		return cand, true
	}
	return 0, false
}
