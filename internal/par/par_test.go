package par

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

// TestEachCallsEveryIndexOnce: every index once, whatever n against the cores.
func TestEachCallsEveryIndexOnce(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, runtime.GOMAXPROCS(0) + 1, 1000} {
		counts := make([]atomic.Int32, n)
		Each(n, func(i int) { counts[i].Add(1) })
		for i := range counts {
			if c := counts[i].Load(); c != 1 {
				t.Errorf("n=%d: index %d called %d times", n, i, c)
			}
		}
	}
}

// TestEachUntilFirstError: with calls failing at several indexes, the error returned is
// the lowest one's, every call below it ran, and without failures every index runs once.
func TestEachUntilFirstError(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, runtime.GOMAXPROCS(0) + 1, 1000} {
		counts := make([]atomic.Int32, n)
		if err := EachUntil(n, func(i int) error { counts[i].Add(1); return nil }); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		for i := range counts {
			if c := counts[i].Load(); c != 1 {
				t.Errorf("n=%d: index %d called %d times", n, i, c)
			}
		}
	}
	for _, first := range []int{0, 1, 17, 998} {
		const n = 1000
		var ran [n]atomic.Bool
		err := EachUntil(n, func(i int) error {
			ran[i].Store(true)
			if i == first || i == first+1 || i == n-1 {
				return fmt.Errorf("call %d", i)
			}
			return nil
		})
		if want := fmt.Sprintf("call %d", first); err == nil || err.Error() != want {
			t.Errorf("first failure at %d: got %v, want %s", first, err, want)
		}
		for i := 0; i < first; i++ {
			if !ran[i].Load() {
				t.Errorf("first failure at %d: call %d did not run", first, i)
			}
		}
	}
}
