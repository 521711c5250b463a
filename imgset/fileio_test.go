package imgset

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/internal/testset"
)

// memDir returns a new folder on a memory-backed filesystem, or skips the test.
func memDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "imgset-test-")
	if err != nil {
		t.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := positional(f).(*memFile); !ok {
		t.Skip("/dev/shm is not tmpfs")
	}
	return dir
}

// TestMemFileLikeOSFile checks that memFile reads and writes as os.File does:
// the same bytes, short reads at the end with io.EOF, holes, and errors.
func TestMemFileLikeOSFile(t *testing.T) {
	dir := memDir(t)
	f, err := os.OpenFile(filepath.Join(dir, "f"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	m := positional(f)
	if _, ok := m.(*memFile); !ok {
		t.Fatalf("positional on tmpfs gave %T", m)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 70000) // more than one MiB
	if n, err := m.WriteAt(data, 100); n != len(data) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	want := append(make([]byte, 100), data...) // a hole, then data
	for _, tc := range []struct{ off, n int }{{0, 200}, {0, len(want)}, {12345, 1 << 20}, {len(want) - 10, 30}, {len(want), 5}, {len(want) + 7, 5}} {
		got := make([]byte, tc.n)
		n, err := m.ReadAt(got, int64(tc.off))
		wn, werr := f.ReadAt(make([]byte, tc.n), int64(tc.off))
		if n != wn || err != werr || (n > 0 && !bytes.Equal(got[:n], want[tc.off:tc.off+n])) {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v; os.File: %d, %v", tc.n, tc.off, n, err, wn, werr)
		}
	}
	if _, err := m.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at a negative offset: no error")
	}
	f.Close()
	if _, err := m.WriteAt([]byte("x"), 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("WriteAt after Close: %v, want os.ErrClosed", err)
	}
}

// TestRewriteOnTmpfs encrypts and decrypts a set with files of several batches
// in tmpfs, where files are read and written through memFile, and checks that
// the round trip gives the original bytes and the encrypted set verifies.
func TestRewriteOnTmpfs(t *testing.T) {
	dir := memDir(t)
	plain := filepath.Join(dir, "set")
	if err := os.CopyFS(plain, os.DirFS(filepath.Join(fixtures, "counter"))); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	big := make([]byte, 3<<20+12345)
	for i := range big {
		big[i] = byte(rng.Uint32() >> 24 & 0x0f) // half random, so ciphertext stands out
	}
	if err := os.WriteFile(filepath.Join(plain, "pages-9.img"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	want := testset.ReadAll(t, plain)
	enc, dec := filepath.Join(dir, "enc"), filepath.Join(dir, "dec")
	var progress int64
	err := Encrypt(plain, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}, Output: enc,
		Progress: func(done, total int64) { progress = done }})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, b := range want {
		total += int64(len(b))
	}
	if progress != total {
		t.Errorf("progress ended at %d of %d", progress, total)
	}
	if ct, _ := os.ReadFile(filepath.Join(enc, "pages-9.img")); bytes.Contains(ct, big[1<<20:1<<20+64]) {
		t.Fatal("plaintext found in the encrypted file")
	}
	rep, err := Verify(enc, VerifyOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}})
	if err != nil || !rep.Authenticated || len(rep.Problems) > 0 {
		t.Fatalf("verify: %v, %+v", err, rep)
	}
	if err := Decrypt(enc, DecryptOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}, Output: dec}); err != nil {
		t.Fatal(err)
	}
	equalSets(t, testset.ReadAll(t, dec), want)
	s, err := Open(enc, OpenOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}})
	if err != nil {
		t.Fatal(err)
	}
	equalSets(t, readSet(t, s), want)
	// A damaged chunk in tmpfs fails the decryption, which leaves nothing.
	f, err := os.OpenFile(filepath.Join(enc, "pages-9.img"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte: writing a fixed value would change nothing where the ciphertext
	// already holds it (one run in 256).
	b := []byte{0}
	if _, err := f.ReadAt(b, cipher.PrefixSize+2<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{^b[0]}, cipher.PrefixSize+2<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.RemoveAll(dec)
	err = Decrypt(enc, DecryptOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}, Output: dec})
	if !errors.Is(err, cipher.ErrChunkAuth) {
		t.Fatalf("damaged chunk: %v, want ErrChunkAuth", err)
	}
	if _, err := os.Stat(dec); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed decrypt left %s: %v", dec, err)
	}
}

// TestStreamOnTmpfs writes an encrypted set on tmpfs through Writer.Create the
// way dump does (large writes from a buffer reused at once, small images in one
// write), rotates its key, and checks that both sets hold the plaintext and that
// each file is exactly as long as its plaintext encrypts to.
func TestStreamOnTmpfs(t *testing.T) {
	dir := memDir(t)
	rng := rand.New(rand.NewPCG(5, 6))
	want := map[string][]byte{"inventory.img": []byte("small image"), "empty.img": {}}
	big := make([]byte, 9<<20+4096*3)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	want["pages-1.img"] = big
	set := filepath.Join(dir, "set")
	w, err := Create(set, CreateOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range want {
		f, err := w.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2<<20)
		for p := data; len(p) > 0; {
			n := copy(buf, p)
			if _, err := f.Write(buf[:n]); err != nil {
				t.Fatal(err)
			}
			clear(buf)
			p = p[n:]
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	check := func(id string) {
		t.Helper()
		for name, data := range want {
			st, err := os.Stat(filepath.Join(set, name))
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() != cipher.CiphertextSize(int64(len(data))) {
				t.Fatalf("%s: %d bytes, want %d", name, st.Size(), cipher.CiphertextSize(int64(len(data))))
			}
		}
		s, err := Open(set, OpenOptions{Identities: []cipher.Identity{identity(t, id)}, RequireEncrypted: true})
		if err != nil {
			t.Fatal(err)
		}
		equalSets(t, readSet(t, s), want)
	}
	check("bob-p256")
	err = Rekey(set, RekeyOptions{Identities: []cipher.Identity{identity(t, "bob-p256")},
		Add: []cipher.Recipient{recipient(t, "bob-p256")}, Rotate: true})
	if err != nil {
		t.Fatal(err)
	}
	check("bob-p256")
}
