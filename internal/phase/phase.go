// Package phase tells where the time of a dump or a restore goes. With IMGTOOL_PHASES
// set in the environment, each Mark prints to standard error the time since the last
// mark (or since the process started) and the time since the start:
//
//	IMGTOOL_PHASES=1 imgtool dump -t PID -D DIR
//
// Without it a mark costs a load of a boolean. The bench's comments (scripts/bench.sh)
// cite what it prints.
package phase

import (
	"fmt"
	"os"
	"sync"
	"time"
)

var (
	on    = os.Getenv("IMGTOOL_PHASES") != ""
	mu    sync.Mutex
	start = time.Now()
	last  = start
)

// Mark ends the phase called name.
func Mark(name string) {
	if !on {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	now := time.Now()
	fmt.Fprintf(os.Stderr, "imgtool phase %-28s %8.1f ms  (at %7.1f ms)\n", name, ms(now.Sub(last)), ms(now.Sub(start)))
	last = now
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
