package imgset

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/imgtool/imgtool/cipher"
)

// TestAddedNonRegularEntriesAreReported adds a folder, a symlink and a FIFO to
// an encrypted set: the manifest is the whole set, so Verify and Open must
// report each as an added file, as they do an added regular file.
func TestAddedNonRegularEntriesAreReported(t *testing.T) {
	dir := copySet(t, "files")
	if err := Encrypt(dir, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}}); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "added-dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "added-link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "added-fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := []string{"added-dir", "added-fifo", "added-link"}
	ids := []cipher.Identity{identity(t, "bob-p256")}
	for _, opts := range []VerifyOptions{{}, {Identities: ids}} {
		rep, err := Verify(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range rep.Problems {
			if !errors.Is(p.Err, ErrUnexpectedFile) {
				t.Errorf("unexpected problem %v", p.Err)
			}
			got = append(got, p.File)
		}
		sort.Strings(got)
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
			t.Errorf("verify (keys: %d) reported %v, want %v", len(opts.Identities), got, want)
		}
	}
	if _, err := Open(dir, OpenOptions{Identities: ids}); !errors.Is(err, ErrUnexpectedFile) {
		t.Errorf("Open: %v, want ErrUnexpectedFile", err)
	}
}

// TestCommitFailureClosesEveryFile makes the first file of a set fail at
// Commit: the files after it must be closed too, not left open with their
// encryptors running after the temporary folder is gone.
func TestCommitFailureClosesEveryFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "set")
	w, err := Create(dir, CreateOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.img", "b.img", "c.img"} {
		f, err := w.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(make([]byte, 3*batchPlainForTest)); err != nil {
			t.Fatal(err)
		}
	}
	failure := errors.New("injected write failure")
	w.files["a.img"].err = failure
	if err := w.Commit(); !errors.Is(err, failure) {
		t.Fatalf("Commit: %v, want the injected failure", err)
	}
	for name, sf := range w.files {
		if !sf.closed {
			t.Errorf("%s left open after a failed Commit", name)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target exists after a failed Commit: %v", err)
	}
}

// batchPlainForTest is more than one batch of the encrypting stream, so that
// each file has sealing helpers running.
const batchPlainForTest = 1 << 20

// TestSwappedForFIFOOrSymlinkDoesNotHang replaces files of an opened set, after it
// was listed, by a FIFO and a symlink: reading them must fail at once, not block on
// the FIFO's open or follow the link.
func TestSwappedForFIFOOrSymlinkDoesNotHang(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		dir := copySet(t, "files")
		var ids []cipher.Identity
		if encrypted {
			if err := Encrypt(dir, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}}); err != nil {
				t.Fatal(err)
			}
			ids = []cipher.Identity{identity(t, "bob-p256")}
		}
		set, err := Open(dir, OpenOptions{Identities: ids})
		if err != nil {
			t.Fatal(err)
		}
		fifo, link := filepath.Join(dir, "pstree.img"), filepath.Join(dir, "inventory.img")
		if err := os.Remove(fifo); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(link); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/etc/passwd", link); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 2)
		go func() {
			for _, name := range []string{"pstree.img", "inventory.img"} {
				f, err := set.Open(name)
				if err == nil {
					f.Close()
				}
				done <- err
			}
		}()
		for i := 0; i < 2; i++ {
			select {
			case err := <-done:
				if err == nil {
					t.Errorf("encrypted=%v: a swapped file opened", encrypted)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("encrypted=%v: opening a file swapped for a FIFO hangs", encrypted)
			}
		}
		if encrypted {
			rep, err := Verify(dir, VerifyOptions{Identities: ids})
			if err != nil || rep.OK() {
				t.Errorf("verify of the swapped set: %v, ok=%v; want problems", err, err == nil && rep.OK())
			}
		}
	}
}
