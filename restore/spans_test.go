package restore

import (
	"slices"
	"testing"
)

func TestSpans(t *testing.T) {
	s := spans{{30, 40}, {0, 10}, {5, 20}}.normal()
	if want := (spans{{0, 20}, {30, 40}}); !slices.Equal(s, want) {
		t.Fatalf("normal = %v, want %v", s, want)
	}
	u := spans{{8, 12}, {18, 35}, {39, 50}}
	if got, want := s.intersect(u), (spans{{8, 12}, {18, 20}, {30, 35}, {39, 40}}); !slices.Equal(got, want) {
		t.Errorf("intersect = %v, want %v", got, want)
	}
	if got, want := s.subtract(u), (spans{{0, 8}, {12, 18}, {35, 39}}); !slices.Equal(got, want) {
		t.Errorf("subtract = %v, want %v", got, want)
	}
	if got, want := s.union(u), (spans{{0, 50}}); !slices.Equal(got, want) {
		t.Errorf("union = %v, want %v", got, want)
	}
	b := make([]byte, 40)
	pieces := s.split(segment{addr: 15, b: b[:20]}) // 15..35
	var got []string
	for _, p := range pieces {
		got = append(got, map[bool]string{true: "in", false: "out"}[p.inside]+":"+string(rune('0'+len(p.b)/5)))
	}
	if want := []string{"in:1", "out:2", "in:1"}; !slices.Equal(got, want) {
		t.Errorf("split = %v, want %v", got, want)
	}
}
