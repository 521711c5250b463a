// Package par runs independent pieces of work on every core.
package par

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Each calls f(i) for every i in [0, n), on up to GOMAXPROCS goroutines at once, and
// returns when all calls have returned. The calls must be independent: f writes only
// what belongs to its i.
func Each(n int, f func(i int)) {
	workers := min(n, runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// EachUntil is Each for calls that can fail: once one has failed no new call starts, and
// it returns the error of the failed call with the lowest i, or nil. Calls are started
// in order of i, so every call below that one has run: the error is the one a loop
// stopping at its first failure would return.
func EachUntil(n int, f func(i int) error) error {
	errs := make([]error, n)
	var failed atomic.Bool
	var next atomic.Int64
	work := func() {
		// failed is looked at before an index is taken, never after: an index taken is
		// always run, so none below the first failure is left out.
		for !failed.Load() {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			if errs[i] = f(i); errs[i] != nil {
				failed.Store(true)
			}
		}
	}
	workers := min(n, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
