package leftover

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestRemoveDead: a temporary file held open (its writer alive) stays, one
// closed (its writer gone) goes, as does a dead folder with its files; paths
// already gone are skipped.
func TestRemoveDead(t *testing.T) {
	dir := t.TempDir()
	live, err := CreateTemp(dir, ".a.*.tmp")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	dead, err := CreateTemp(dir, ".a.*.tmp")
	if err != nil {
		t.Fatal(err)
	}
	dead.Close()
	if st, err := os.Stat(dead.Name()); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("temporary file: %v %v", st, err)
	}
	folder := filepath.Join(dir, ".a.folder")
	if err := os.MkdirAll(filepath.Join(folder, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(folder, "pages-1.img"), []byte("x"), 0o600)
	gone := filepath.Join(dir, ".a.gone")

	removed, err := RemoveDead([]string{live.Name(), dead.Name(), folder, gone})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{dead.Name(), folder}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	for _, p := range []string{dead.Name(), folder} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	if _, err := os.Stat(live.Name()); err != nil {
		t.Errorf("the live file was removed: %v", err)
	}
	// Once its writer is done (closed), it is dead too.
	live.Close()
	if removed, err := RemoveDead([]string{live.Name()}); err != nil || len(removed) != 1 {
		t.Errorf("after close: removed %v, %v", removed, err)
	}
}

// TestTakeRenamed: Take reports a path that no longer names the file it
// opened as nil, nil, so that callers retry.
func TestTakeRenamed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Rename(path, path+".2"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := lockOpen(f, path, false)
	if l != nil || err != nil {
		t.Errorf("lockOpen of a renamed file: %v, %v", l, err)
	}
	l, err = Take(path, false)
	if l == nil || err != nil || !l.Locked() && l.Ino() == 0 {
		t.Fatalf("Take: %v, %v", l, err)
	}
	l.Unlock()
	l.Unlock() // twice is fine
}
