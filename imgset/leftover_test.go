package imgset

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/internal/testset"
)

// deadOutputLeftovers puts beside the target out what killed writers of out leave:
// an unfinished new set holding plaintext and a header file, both unlocked (their
// process is gone). It returns their paths, sorted.
func deadOutputLeftovers(t *testing.T, out string) []string {
	t.Helper()
	p := func(name string) string {
		return filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".imgtool-"+name)
	}
	mkLeftover(t, p("new-100"), map[string]string{"pages-1.img": "IMGTOOL-SECRET plaintext"})
	if err := os.WriteFile(p("seal-200"), []byte("header"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{p("new-100"), p("seal-200")}
}

// TestOutputRemovesDeadLeftovers: every writer of a new set or folder at a target
// (Encrypt and Decrypt with Output, Create as dump uses it, CreateFolder as
// decode -D uses it) first removes what dead runs writing the same target left
// beside it, and says which; the folder of a live writer stays.
func TestOutputRemovesDeadLeftovers(t *testing.T) {
	src := copySet(t, "files")
	enc := copySet(t, "files")
	if err := Encrypt(enc, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}}); err != nil {
		t.Fatal(err)
	}
	writers := map[string]func(out string, cleaned func([]string)) error{
		"encrypt -o": func(out string, cleaned func([]string)) error {
			return Encrypt(src, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}, Output: out, Cleaned: cleaned})
		},
		"decrypt -o": func(out string, cleaned func([]string)) error {
			return Decrypt(enc, DecryptOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}, Output: out, Cleaned: cleaned})
		},
		"create": func(out string, cleaned func([]string)) error {
			w, err := Create(out, CreateOptions{Cleaned: cleaned})
			if err != nil {
				return err
			}
			return w.Commit()
		},
		"folder": func(out string, cleaned func([]string)) error {
			f, err := CreateFolder(out, cleaned)
			if err != nil {
				return err
			}
			return f.Commit(0o755)
		},
	}
	for name, write := range writers {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			dead := deadOutputLeftovers(t, out)
			live, liveLock, err := makeTempDir(out, newPrefix(out, 0))
			if err != nil {
				t.Fatal(err)
			}
			defer liveLock.Unlock()
			var told []string
			if err := write(out, func(r []string) { told = append(told, r...) }); err != nil {
				t.Fatal(err)
			}
			slices.Sort(told)
			if !slices.Equal(told, dead) {
				t.Errorf("told %v, want %v", told, dead)
			}
			left, err := Leftovers(out)
			if err != nil || !slices.Equal(left, []string{live}) {
				t.Errorf("leftovers after the write: %v, %v; want only the live one %s", left, err, live)
			}
			if _, err := os.Stat(out); err != nil {
				t.Errorf("no output: %v", err)
			}
		})
	}
}

// TestOutputKeepsTheOnlyCopyOfASet: when the target is missing and an
// interrupted in-place rewrite left the whole old set beside it (no
// RENAME_EXCHANGE), a writer of the target removes nothing beside it.
func TestOutputKeepsTheOnlyCopyOfASet(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	dead := deadOutputLeftovers(t, out)
	old := filepath.Join(filepath.Dir(out), ".out.imgtool-old-300")
	testset.CopyTo(t, filepath.Join(fixtures, "files"), old)
	w, err := Create(out, CreateOptions{Cleaned: func(r []string) { t.Errorf("removed %v", r) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	left, _ := Leftovers(out)
	slices.Sort(left)
	if want := append(dead[:1:1], old, dead[1]); !slices.Equal(left, want) {
		t.Errorf("leftovers %v, want %v", left, want)
	}
}

// bigSet copies the files fixture and adds a 12 MiB pages file of random bytes,
// so that a rewrite has many batches of chunks in one file.
func bigSet(t *testing.T) string {
	t.Helper()
	dir := copySet(t, "files")
	buf := make([]byte, 12<<20)
	rand.NewChaCha8([32]byte{'b', 'i', 'g'}).Read(buf)
	if err := os.WriteFile(filepath.Join(dir, "pages-9.img"), buf, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestRewriteStopsWithinAFile: a rewrite whose context is cancelled while it
// copies a large file stops at its next batches of chunks, not at the end of the
// file, removes what it wrote, and returns a *StoppedError with the cause; the
// source set is unchanged. The context is cancelled from the first progress
// report past 2 MiB, inside the 12 MiB file (the fixture's files are 128 KB in
// all), so how much more is reported afterwards is how late it stopped.
func TestRewriteStopsWithinAFile(t *testing.T) {
	plain := bigSet(t)
	enc := testset.Copy(t, plain)
	bob := []cipher.Recipient{recipient(t, "bob-p256")}
	ids := []cipher.Identity{identity(t, "bob-p256")}
	if err := Encrypt(enc, EncryptOptions{Recipients: bob}); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("test interrupt")
	ops := map[string]struct {
		dir string
		run func(ctx context.Context, dir, out string, p Progress) error
	}{
		"encrypt -o": {plain, func(ctx context.Context, dir, out string, p Progress) error {
			return EncryptContext(ctx, dir, EncryptOptions{Recipients: bob, Output: out, Progress: p})
		}},
		"decrypt -o": {enc, func(ctx context.Context, dir, out string, p Progress) error {
			return DecryptContext(ctx, dir, DecryptOptions{Identities: ids, Output: out, Progress: p})
		}},
		"encrypt in place": {plain, func(ctx context.Context, dir, _ string, p Progress) error {
			return EncryptContext(ctx, dir, EncryptOptions{Recipients: bob, Progress: p})
		}},
		"decrypt in place": {enc, func(ctx context.Context, dir, _ string, p Progress) error {
			return DecryptContext(ctx, dir, DecryptOptions{Identities: ids, Progress: p})
		}},
		"rotate": {enc, func(ctx context.Context, dir, _ string, p Progress) error {
			return RekeyContext(ctx, dir, RekeyOptions{Identities: ids, Add: bob, Rotate: true, Progress: p})
		}},
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			before := testset.ReadAll(t, op.dir)
			out := filepath.Join(t.TempDir(), "out")
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			var atCancel, last, total int64
			err := op.run(ctx, op.dir, out, func(done, all int64) {
				if atCancel == 0 && done >= 2<<20 {
					atCancel = done
					cancel(cause)
				}
				last, total = done, all
			})
			var se *StoppedError
			if !errors.As(err, &se) || !errors.Is(err, cause) || se.Partial == "" {
				t.Fatalf("got %v, want a *StoppedError with the cause and the partial output", err)
			}
			// Two workers may each finish the batch they hold, and the positional
			// path reports a batch once written.
			if after := last - atCancel; after > 4<<20 || last >= total {
				t.Errorf("%d bytes copied after the cancellation (%d of %d in all): it did not stop within the file", after, last, total)
			}
			if _, err := os.Stat(se.Partial); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the partial output %s is still there: %v", se.Partial, err)
			}
			for _, d := range []string{op.dir, out} {
				if left, _ := Leftovers(d); len(left) > 0 {
					t.Errorf("leftovers beside %s: %v", d, left)
				}
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("output %s exists: %v", out, err)
			}
			equalSets(t, testset.ReadAll(t, op.dir), before)
		})
	}
}

// TestStoppedBeforeStarting: an operation whose context is already cancelled
// writes nothing, and says so.
func TestStoppedBeforeStarting(t *testing.T) {
	dir := copySet(t, "files")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("test interrupt"))
	err := EncryptContext(ctx, dir, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}})
	var se *StoppedError
	if !errors.As(err, &se) || se.Partial != "" || !se.InPlace {
		t.Fatalf("got %v, want a *StoppedError with nothing written", err)
	}
	if want := "test interrupt before writing anything; " + dir + " is unchanged"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 1 {
		t.Errorf("the parent folder holds %d entries, want the set only", len(ents))
	}
	if bytes.Contains([]byte(err.Error()), []byte("removed")) {
		t.Errorf("%q says something was removed", err)
	}
}
