// Package testset is test support for image set folders: copying a set to a
// scratch folder and reading every file of one, for tests that compare sets.
package testset

import (
	"os"
	"path/filepath"
	"testing"
)

// Copy copies the flat folder src (a fixture set, or any set) into a fresh
// temporary folder and returns the copy's path, which keeps src's base name.
func Copy(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	CopyTo(t, src, dst)
	return dst
}

// CopyTo copies every file of the flat folder src into dst, created if needed.
func CopyTo(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range ReadAll(t, src) {
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// ReadAll returns the bytes of every file of the flat folder dir, by name.
func ReadAll(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}
