// Package testlong tells tests whether to run their exhaustive form. `make test` runs a
// representative sample of each large matrix (every phase, a subset of the points) so
// that it stays under five minutes on two cores; `make test-long` sets IMGTOOL_TEST_LONG=1
// and runs every point.
package testlong

import "os"

// Enabled reports whether the exhaustive tests were asked for (IMGTOOL_TEST_LONG=1).
func Enabled() bool { return os.Getenv("IMGTOOL_TEST_LONG") == "1" }

// Sample reports whether point i of a matrix runs: every point in the long run, every
// stride-th one (starting at a different place for each seed) otherwise.
func Sample(i, stride, seed int) bool {
	return Enabled() || stride <= 1 || (i+seed)%stride == 0
}
