package imgset

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/internal/leftover"
	"github.com/imgtool/imgtool/internal/testset"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func mkLeftover(t *testing.T, path string, files map[string]string) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	for n, data := range files {
		if err := os.WriteFile(filepath.Join(path, n), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func leftoverKinds(t *testing.T, dir string) map[string]LeftoverKind {
	t.Helper()
	left, err := ListLeftovers(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]LeftoverKind{}
	for _, l := range left {
		out[filepath.Base(l.Path)] = l.Kind
	}
	return out
}

// TestInPlaceRemovesStaleLeftovers: leftovers of earlier runs that died are
// classified by what they hold and removed by the next in-place operation,
// while one that a live process holds is left alone.
func TestInPlaceRemovesStaleLeftovers(t *testing.T) {
	dir := copySet(t, "files")
	parent, want := filepath.Dir(dir), testset.ReadAll(t, dir)
	p := func(name string) string { return filepath.Join(parent, ".files.imgtool-"+name) }
	mkLeftover(t, p("new-i1-100"), map[string]string{"core-1.img": "half"}) // an unfinished new set
	mkLeftover(t, p("old-200"), map[string]string{"pages-1.img": "old plaintext"})
	if err := os.WriteFile(p("seal-300"), []byte("header"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An exchanged one: the name of a new set, holding the folder it replaced.
	mkLeftover(t, p("tmp"), map[string]string{"pages-1.img": "old plaintext"})
	exchanged := p(fmt.Sprintf("new-i%d-400", inode(t, p("tmp"))))
	if err := os.Rename(p("tmp"), exchanged); err != nil {
		t.Fatal(err)
	}
	// A live one: locked by this process, as the writer of a new set would be.
	live, liveLock, err := makeTempDir(dir, newPrefix(dir, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer liveLock.Unlock()

	wantKinds := map[string]LeftoverKind{
		".files.imgtool-new-i1-100": LeftoverNew, ".files.imgtool-old-200": LeftoverOld,
		".files.imgtool-seal-300": LeftoverHeader, filepath.Base(exchanged): LeftoverOld,
		filepath.Base(live): LeftoverNew,
	}
	if got := leftoverKinds(t, dir); !equalKinds(got, wantKinds) {
		t.Fatalf("ListLeftovers: %v, want %v", got, wantKinds)
	}
	if err := Encrypt(dir, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}}); err != nil {
		t.Fatal(err)
	}
	if got := leftoverKinds(t, dir); !equalKinds(got, map[string]LeftoverKind{filepath.Base(live): LeftoverNew}) {
		t.Errorf("after an in-place encrypt: leftovers %v, want only the live one", got)
	}
	s, err := Open(dir, OpenOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}})
	if err != nil {
		t.Fatal(err)
	}
	equalSets(t, readSet(t, s), want)

	// Once its process is gone (the lock dropped), RemoveLeftovers takes it too.
	liveLock.Unlock()
	removed, err := RemoveLeftovers(dir)
	if err != nil || !slices.Equal(removed, []string{live}) {
		t.Errorf("RemoveLeftovers: %v, %v; want [%s]", removed, err, live)
	}
}

func equalKinds(a, b map[string]LeftoverKind) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestConcurrentInPlaceFailsFast: while an in-place operation runs, before and
// after its exchange, a second one on the same set fails at once with ErrBusy
// and changes nothing.
func TestConcurrentInPlaceFailsFast(t *testing.T) {
	dir := copySet(t, "files")
	bob := []cipher.Recipient{recipient(t, "bob-p256")}
	others := map[string]func() error{
		"encrypt": func() error { return Encrypt(dir, EncryptOptions{Recipients: bob}) },
		"decrypt": func() error {
			return Decrypt(dir, DecryptOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}})
		},
		"rekey": func() error {
			return Rekey(dir, RekeyOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}, Add: bob})
		},
		"rotate": func() error {
			return Rekey(dir, RekeyOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}, Add: bob, Rotate: true})
		},
		"remove leftovers": func() error { _, err := RemoveLeftovers(dir); return err },
	}
	check := func(when string) {
		for name, op := range others {
			if err := op(); !errors.Is(err, ErrBusy) {
				t.Errorf("%s %s: %v, want ErrBusy", name, when, err)
			}
		}
	}
	calls := 0
	progress := func(done, total int64) {
		if calls++; calls == 1 {
			check("while the new set is written")
		}
	}
	defer func(orig func(a, b string) error) { renameExchange = orig }(renameExchange)
	renameExchange = func(a, b string) error {
		err := orig(a, b)
		check("right after the exchange")
		return err
	}
	if err := Encrypt(dir, EncryptOptions{Recipients: bob, Progress: progress}); err != nil {
		t.Fatal(err)
	}
	if calls == 0 {
		t.Fatal("no progress reported")
	}
	if err := others["rekey"](); err != nil {
		t.Errorf("rekey once the encrypt is done: %v", err)
	}
}

// origExchange is renameExchange as the package sets it.
var origExchange = renameExchange

func orig(a, b string) error { return origExchange(a, b) }

// crashAt runs op with a crash (a panic, unwinding like a killed process drops its
// locks) at the named point, and reports whether it got there.
func crashAt(point string, op func() error) (crashed bool, err error) {
	defer func(prev func(string)) { crashPoint = prev }(crashPoint)
	crashPoint = func(p string) {
		if p == point {
			panic(point)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			if r != point {
				panic(r)
			}
			crashed = true
		}
	}()
	return false, op()
}

// TestCrashAfterExchange: killed between the exchange and the rename to "-old-",
// the old plaintext sits under the name of the new set: ListLeftovers still
// calls it the old set, and the next in-place operation removes it.
func TestCrashAfterExchange(t *testing.T) {
	dir := copySet(t, "files")
	want := testset.ReadAll(t, dir)
	bob := []cipher.Recipient{recipient(t, "bob-p256")}
	crashed, err := crashAt("exchanged", func() error { return Encrypt(dir, EncryptOptions{Recipients: bob}) })
	if !crashed {
		t.Fatalf("no crash: %v", err)
	}
	left, err := ListLeftovers(dir)
	if err != nil || len(left) != 1 || left[0].Kind != LeftoverOld || !strings.Contains(left[0].Path, newInfix) {
		t.Fatalf("leftovers %+v, %v: want the old set under its new-set name", left, err)
	}
	equalSets(t, testset.ReadAll(t, left[0].Path), want) // the old plaintext, whole
	if err := Rekey(dir, RekeyOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}, Add: []cipher.Recipient{recipient(t, "carol-p384")}}); err != nil {
		t.Fatal(err)
	}
	if left, _ := Leftovers(dir); len(left) != 0 {
		t.Errorf("the next in-place operation left %v", left)
	}
	s, err := Open(dir, OpenOptions{Identities: []cipher.Identity{identity(t, "carol-p384")}})
	if err != nil {
		t.Fatal(err)
	}
	equalSets(t, readSet(t, s), want)
}

// TestWithoutRenameExchange: where the filesystem lacks RENAME_EXCHANGE the set
// is moved aside first. A run completes and leaves nothing; a crash between the
// two renames leaves no set folder, and the "-old-" leftover, which Open's error
// and ListLeftovers point to, is the whole old set: renamed back, it is the set.
func TestWithoutRenameExchange(t *testing.T) {
	defer func(prev func(a, b string) error) { renameExchange = prev }(renameExchange)
	renameExchange = func(a, b string) error { return unix.EINVAL }
	bob := []cipher.Recipient{recipient(t, "bob-p256")}

	dir := copySet(t, "files")
	want := testset.ReadAll(t, dir)
	if err := Encrypt(dir, EncryptOptions{Recipients: bob}); err != nil {
		t.Fatal(err)
	}
	if left, _ := Leftovers(dir); len(left) != 0 {
		t.Errorf("a completed run left %v", left)
	}

	dir = copySet(t, "files")
	crashed, err := crashAt("moved aside", func() error { return Encrypt(dir, EncryptOptions{Recipients: bob}) })
	if !crashed {
		t.Fatalf("no crash: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the set folder: %v, want missing in the crash window", err)
	}
	kinds := leftoverKinds(t, dir)
	var old string
	for name, k := range kinds {
		if k == LeftoverOld {
			old = filepath.Join(filepath.Dir(dir), name)
		}
	}
	if old == "" || len(kinds) != 2 {
		t.Fatalf("leftovers %v: want the old set and the new one", kinds)
	}
	if _, err := Open(dir, OpenOptions{}); err == nil || !strings.Contains(err.Error(), old) || !strings.Contains(err.Error(), "rename it") {
		t.Errorf("Open of the missing set: %v; want it to point to %s", err, old)
	}
	if _, err := RemoveLeftovers(dir); err == nil {
		t.Error("RemoveLeftovers removed the only copy of the set")
	}
	if err := os.Rename(old, dir); err != nil {
		t.Fatal(err)
	}
	equalSets(t, testset.ReadAll(t, dir), want)
	if removed, err := RemoveLeftovers(dir); err != nil || len(removed) != 1 {
		t.Errorf("RemoveLeftovers after recovery: %v, %v; want the new set removed", removed, err)
	}
}

// TestRewriteKeepsModes: encrypt, decrypt and rotate keep the permission bits of
// the folder and of each file; the header gets the folder's minus the exec bits.
func TestRewriteKeepsModes(t *testing.T) {
	dir := copySet(t, "files")
	names := []string{}
	ents, _ := os.ReadDir(dir)
	for i, e := range ents {
		mode := []os.FileMode{0o640, 0o604, 0o600, 0o644}[i%4]
		if err := os.Chmod(filepath.Join(dir, e.Name()), mode); err != nil {
			t.Fatal(err)
		}
		names = append(names, e.Name())
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	modes := func(dir string) map[string]os.FileMode {
		out := map[string]os.FileMode{}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			st, _ := e.Info()
			out[e.Name()] = st.Mode().Perm()
		}
		st, _ := os.Stat(dir)
		out["."] = st.Mode().Perm()
		return out
	}
	want := modes(dir)
	check := func(what, dir string, header bool) {
		t.Helper()
		got := modes(dir)
		for n, m := range want {
			if got[n] != m {
				t.Errorf("%s: %s has mode %o, want %o", what, n, got[n], m)
			}
		}
		if h, ok := got[HeaderName]; header && (!ok || h != 0o640) {
			t.Errorf("%s: header mode %o, want 640", what, h)
		}
	}
	bob := []cipher.Recipient{recipient(t, "bob-p256")}
	ids := []cipher.Identity{identity(t, "bob-p256")}
	if err := Encrypt(dir, EncryptOptions{Recipients: bob}); err != nil {
		t.Fatal(err)
	}
	check("encrypt", dir, true)
	if err := Rekey(dir, RekeyOptions{Identities: ids, Add: bob, Rotate: true}); err != nil {
		t.Fatal(err)
	}
	check("rotate", dir, true)
	if err := Rekey(dir, RekeyOptions{Identities: ids, Add: []cipher.Recipient{recipient(t, "carol-p384")}}); err != nil {
		t.Fatal(err)
	}
	check("rekey", dir, true)
	out := filepath.Join(t.TempDir(), "out")
	if err := Decrypt(dir, DecryptOptions{Identities: ids, Output: out}); err != nil {
		t.Fatal(err)
	}
	check("decrypt -o", out, false)
	if err := Decrypt(dir, DecryptOptions{Identities: ids}); err != nil {
		t.Fatal(err)
	}
	check("decrypt", dir, false)
	if len(names) < 4 {
		t.Fatalf("premise: a set of several files, got %v", names)
	}
}

// withoutExchange makes the rest of the test run as on a filesystem without
// RENAME_EXCHANGE.
func withoutExchange(t *testing.T) {
	prev := renameExchange
	t.Cleanup(func() { renameExchange = prev })
	renameExchange = func(a, b string) error { return unix.EINVAL }
}

// TestSyncFailureOnceInPlace: when syncing the parent folder fails after the new
// set was put in place (by the exchange, or by the fallback's second rename),
// the old set is still removed, and the error says the new set is in place and
// only its durability is uncertain (ErrNotDurable). The set then works as usual.
func TestSyncFailureOnceInPlace(t *testing.T) {
	for _, exchange := range []bool{true, false} {
		t.Run(fmt.Sprintf("exchange=%v", exchange), func(t *testing.T) {
			if !exchange {
				withoutExchange(t)
			}
			dir := copySet(t, "files")
			want := testset.ReadAll(t, dir)
			parent := filepath.Dir(dir)
			prev := syncFolder
			t.Cleanup(func() { syncFolder = prev })
			failed := 0
			syncFolder = func(d string) error {
				if d == parent {
					failed++
					return fmt.Errorf("sync %s: %w", d, unix.EIO)
				}
				return prev(d)
			}
			bob := []cipher.Recipient{recipient(t, "bob-p256")}
			err := Encrypt(dir, EncryptOptions{Recipients: bob})
			if failed == 0 {
				t.Fatal("premise: the parent folder was never synced through syncFolder")
			}
			if !errors.Is(err, ErrNotDurable) || !errors.Is(err, unix.EIO) || !strings.Contains(err.Error(), "the new set is in place") {
				t.Errorf("Encrypt: %v; want ErrNotDurable wrapping EIO, saying the new set is in place", err)

			}
			if left, err := Leftovers(dir); err != nil || len(left) != 0 {
				t.Errorf("leftovers %v, %v: want the old set removed", left, err)
			}
			ids := []cipher.Identity{identity(t, "bob-p256")}
			s, err := Open(dir, OpenOptions{Identities: ids})
			if err != nil {
				t.Fatal(err)
			}
			equalSets(t, readSet(t, s), want)
			syncFolder = prev
			if err := Rekey(dir, RekeyOptions{Identities: ids, Add: bob, Rotate: true}); err != nil {
				t.Errorf("a later in-place operation: %v", err)
			}
		})
	}
}

// TestFallbackCreatesNoEmptyOld: without RENAME_EXCHANGE the set is renamed
// straight to an "-old-" name that did not exist, so a crash just before that
// rename leaves no empty "-old-" folder beside the set (which, without flock,
// nothing would remove).
func TestFallbackCreatesNoEmptyOld(t *testing.T) {
	withoutExchange(t)
	dir := copySet(t, "files")
	want := testset.ReadAll(t, dir)
	bob := []cipher.Recipient{recipient(t, "bob-p256")}
	crashed, err := crashAt("moving aside", func() error { return Encrypt(dir, EncryptOptions{Recipients: bob}) })
	if !crashed {
		t.Fatalf("no crash: %v", err)
	}
	equalSets(t, testset.ReadAll(t, dir), want)
	for name, kind := range leftoverKinds(t, dir) {
		if kind != LeftoverNew {
			t.Errorf("leftover %s (%v): want only the unfinished new set", name, kind)
		}
	}
}

// TestMissingSetHintSkipsEmpty: when the set folder is missing, Open's error
// names every non-empty "-old-" folder beside it as a candidate to rename back,
// and never an empty one.
func TestMissingSetHintSkipsEmpty(t *testing.T) {
	withoutExchange(t)
	dir := copySet(t, "files")
	want := testset.ReadAll(t, dir)
	parent := filepath.Dir(dir)
	// What an older run killed while deleting its old set left (held locked, as
	// without flock nothing would remove it).
	partial := filepath.Join(parent, ".files.imgtool-old-0y")
	mkLeftover(t, partial, map[string]string{"pages-1.img": "the rest of an older set"})
	lk, err := leftover.Take(partial, true)
	if err != nil || lk == nil {
		t.Fatal(lk, err)
	}
	bob := []cipher.Recipient{recipient(t, "bob-p256")}
	crashed, err := crashAt("moved aside", func() error { return Encrypt(dir, EncryptOptions{Recipients: bob}) })
	lk.Unlock()
	if !crashed {
		t.Fatalf("no crash: %v", err)
	}
	var whole string
	for name, kind := range leftoverKinds(t, dir) {
		if p := filepath.Join(parent, name); kind == LeftoverOld && p != partial {
			whole = p
		}
	}
	if whole == "" {
		t.Fatal("no old set moved aside")
	}
	equalSets(t, testset.ReadAll(t, whole), want)
	empty := filepath.Join(parent, ".files.imgtool-old-0x") // sorts first
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}

	_, err = Open(dir, OpenOptions{})
	if err == nil || !strings.Contains(err.Error(), whole) || !strings.Contains(err.Error(), partial) {
		t.Errorf("Open of the missing set: %v; want it to name %s and %s", err, whole, partial)
	}
	if strings.Contains(fmt.Sprint(err), empty) {
		t.Errorf("Open of the missing set: %v; names the empty folder %s", err, empty)
	}
	// With one candidate, it is named alone.
	if err := os.RemoveAll(partial); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, OpenOptions{}); err == nil || !strings.Contains(err.Error(), "left the whole old set in "+whole+":") {
		t.Errorf("Open of the missing set: %v; want it to name %s alone", err, whole)
	}
}

// TestFallbackNeverReplacesAName: the "-old-" name the set is moved to is one
// that did not exist; an empty folder or a file already there is left alone and
// the next random name is taken.
func TestFallbackNeverReplacesAName(t *testing.T) {
	withoutExchange(t)
	prev := randomSuffix
	t.Cleanup(func() { randomSuffix = prev })
	next := 0
	randomSuffix = func() string { next++; return fmt.Sprint(next) }
	dir := copySet(t, "files")
	want := testset.ReadAll(t, dir)
	p := func(n string) string { return filepath.Join(filepath.Dir(dir), ".files.imgtool-old-"+n) }
	if err := os.Mkdir(p("1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("2"), []byte("in the way"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Held locked, as without flock nothing would remove them.
	for _, n := range []string{"1", "2"} {
		lk, err := leftover.Take(p(n), true)
		if err != nil || lk == nil {
			t.Fatal(lk, err)
		}
		defer lk.Unlock()
	}
	bob := []cipher.Recipient{recipient(t, "bob-p256")}
	crashed, err := crashAt("moved aside", func() error { return Encrypt(dir, EncryptOptions{Recipients: bob}) })
	if !crashed {
		t.Fatalf("no crash: %v", err)
	}
	equalSets(t, testset.ReadAll(t, p("3")), want)
	if ents, err := os.ReadDir(p("1")); err != nil || len(ents) != 0 {
		t.Errorf("the empty folder in the way: %v, %v", ents, err)
	}
	if data, err := os.ReadFile(p("2")); err != nil || string(data) != "in the way" {
		t.Errorf("the file in the way: %q, %v", data, err)
	}
}
