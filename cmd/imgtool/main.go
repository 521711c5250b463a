// Command imgtool reads, writes, encrypts, dumps and restores CRIU image sets.
package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/imgtool/imgtool/imgtool"
)

func main() {
	// Most of imgtool's heap is kept to the end (a restore's plan of the whole tree, a
	// dump's images): a collection at each doubling of the heap marks it all again, a
	// tenth of the CPU of a 200-process tree's dump and restore. Three times the live heap
	// between collections took 10% less CPU there for 2.5 MiB more at the peak. GOGC, when
	// set, decides.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	if err := imgtool.Harden(); err != nil {
		fmt.Fprintln(os.Stderr, "imgtool: keeping key material out of core dumps:", err)
		os.Exit(imgtool.ExitError)
	}
	// SIGINT, SIGTERM and SIGHUP cancel the context: every command stops at its next safe
	// point and undoes what it started. The handlers stay until the process exits: a
	// signal that comes once the command is done is absorbed, not fatal.
	ctx, _ := imgtool.WithInterrupts(context.Background())
	err := imgtool.NewApp().RunContext(ctx, os.Args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imgtool:", err)
	}
	os.Exit(imgtool.ExitCode(err))
}
