package restore

import (
	"sort"
)

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
