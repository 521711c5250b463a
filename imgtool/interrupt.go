package imgtool

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/imgtool/imgtool/imgset"
)

// stoppedBefore is the error of a command whose context was cancelled (see
// WithInterrupts) before it wrote anything: "CMD: interrupted by SIGINT before
// writing anything". Commands stopped later get an *imgset.StoppedError, which
// names the partial output they removed.
func stoppedBefore(cmd string, ctx context.Context) error {
	return fmt.Errorf("%s: %w", cmd, &imgset.StoppedError{Cause: context.Cause(ctx)})
}

// noteCleaned returns the imgset callback that says, in one line on w, which
// leftovers of earlier runs that died (SIGKILL, a crash) writing target were
// removed. Leftovers may hold plaintext: the user should know where it was.
func noteCleaned(w io.Writer, target string) func(removed []string) {
	return func(removed []string) {
		if len(removed) == 0 {
			return
		}
		fmt.Fprintf(w, "imgtool: removed what interrupted earlier runs left beside %s: %s\n", target, strings.Join(removed, ", "))
	}
}
