// Command imgtool reads, writes, encrypts, dumps and restores CRIU image sets.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/imgtool/imgtool/imgtool"
)

func main() {
	err := imgtool.NewApp().RunContext(context.Background(), os.Args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imgtool:", err)
	}
	os.Exit(imgtool.ExitCode(err))
}
