// Command imgtool reads, writes, encrypts, dumps and restores CRIU image sets.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/imgtool/imgtool/imgtool"
)

func main() {
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
