package imgtool

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/imgtool/imgtool/internal/leftover"
)

// Temporary files of the outputs written atomically, one file each (decode and
// encode -o FILE, encrypt and decrypt -o of archives, rekey of an archive): the
// new file is written as ".NAME.<random>.tmp" beside NAME and renamed onto it
// once whole. It is created locked (internal/leftover) and kept open until it is
// renamed or removed, so that while its writer lives it reads as in use, and
// once its writer is killed (SIGKILL, a crash: nothing can remove it then) as
// dead: the next run writing NAME removes it (removeDeadTemps) and says so, as
// for the leftovers beside a set. A temporary file of a decrypt holds plaintext.

// tempPattern is the os.CreateTemp pattern of the temporary files of path.
func tempPattern(path string) string { return "." + filepath.Base(path) + ".*.tmp" }

// createTempBeside creates and locks a temporary file for path, beside it.
func createTempBeside(path string) (*os.File, error) {
	f, err := leftover.CreateTemp(filepath.Dir(path), tempPattern(path))
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the temporary name would only confuse
		}
		return nil, err
	}
	return f, nil
}

// tempsBeside lists the temporary files of path beside it, live or dead: the
// names ".NAME.<digits>.tmp" (os.CreateTemp's random part is decimal, which
// tells them from those of another NAME that starts the same, "NAME.1" say).
func tempsBeside(path string) []string {
	dir, prefix := filepath.Dir(path), "."+filepath.Base(path)+"."
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		random, ok := strings.CutPrefix(e.Name(), prefix)
		if random, ok = strings.CutSuffix(random, ".tmp"); ok && isDigits(random) && e.Type().IsRegular() {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

// isDigits reports whether s is a non-empty string of decimal digits.
func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// removeDeadTemps removes the temporary files that dead runs left beside path,
// and tells cleaned (if not nil) which. It is best effort: what cannot be
// removed stays, and the write goes on.
func removeDeadTemps(path string, cleaned func(removed []string)) {
	left := tempsBeside(path)
	if len(left) == 0 {
		return
	}
	removed, _ := leftover.RemoveDead(left)
	if len(removed) > 0 && cleaned != nil {
		cleaned(removed)
	}
}
