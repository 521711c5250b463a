package imgset

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/internal/testset"
)

const fixtures = "../fixtures/criu-4.2"

func keyFile(name string) string { return filepath.Join("..", "cipher", "testdata", "keys", name) }

func recipient(t testing.TB, name string) *cipher.X509Recipient {
	t.Helper()
	rs, err := cipher.ReadRecipients(keyFile(name + ".crt"))
	if err != nil {
		t.Fatal(err)
	}
	return rs[0]
}

func identity(t testing.TB, name string) *cipher.KeyIdentity {
	t.Helper()
	id, err := cipher.ReadIdentity(keyFile(name + ".key"))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// copySet copies a fixture set into a fresh folder.
func copySet(t testing.TB, set string) string {
	t.Helper()
	return testset.Copy(t, filepath.Join(fixtures, set))
}

// readSet returns the plaintext of every file of an opened set, read both
// sequentially and with WriteTo.
func readSet(t testing.TB, s *Set) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, n := range s.Names() {
		f, err := s.Open(n)
		if err != nil {
			t.Fatal(err)
		}
		small, err := io.ReadAll(struct{ io.Reader }{f}) // Read, not WriteTo
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		f.Seek(0, io.SeekStart)
		var big bytes.Buffer
		if _, err := f.WriteTo(&big); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if !bytes.Equal(small, big.Bytes()) || int64(len(small)) != f.Size() {
			t.Fatalf("%s: Read and WriteTo disagree", n)
		}
		f.Close()
		out[n] = small
	}
	return out
}

func equalSets(t testing.TB, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("set has %d files, want %d", len(got), len(want))
	}
	for n, b := range want {
		if !bytes.Equal(got[n], b) {
			t.Fatalf("%s differs", n)
		}
	}
}

var pagePattern = regexp.MustCompile(`PAGE[0-9a-f]{8}`)

// TestEncryptFixturesNoPlaintextLeaks encrypts every bundled real set in place and
// greps every resulting file for the canaries and page patterns the sets hold in
// plaintext, then decrypts them back to the exact original bytes.
func TestEncryptFixturesNoPlaintextLeaks(t *testing.T) {
	canaries := [][]byte{[]byte("IMGTOOL-SECRET-CANARY"), []byte("b35dc972c25939a5")}
	sets, _ := filepath.Glob(filepath.Join(fixtures, "*"))
	n := 0
	for _, p := range sets {
		if st, err := os.Stat(p); err != nil || !st.IsDir() || filepath.Ext(p) == ".crit" {
			continue
		}
		n++
		set := filepath.Base(p)
		t.Run(set, func(t *testing.T) {
			dir := copySet(t, set)
			orig := testset.ReadAll(t, dir)
			if set == "counter" && !bytes.Contains(orig["pages-1.img"], canaries[0]) {
				t.Fatal("fixture lost its canary: this test would prove nothing")
			}
			if err := Encrypt(dir, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256"), recipient(t, "alice-rsa2048")}}); err != nil {
				t.Fatal(err)
			}
			enc := testset.ReadAll(t, dir)
			if len(enc) != len(orig)+1 {
				t.Fatalf("encrypted set has %d files, want %d", len(enc), len(orig)+1)
			}
			for name, b := range enc {
				for _, c := range canaries {
					if bytes.Contains(b, c) {
						t.Errorf("%s contains %q", name, c)
					}
				}
				if pagePattern.Match(b) {
					t.Errorf("%s contains a page pattern", name)
				}
				if name != HeaderName && orig[name] != nil && len(orig[name]) >= 16 && bytes.Contains(b, orig[name][:16]) {
					t.Errorf("%s contains its own plaintext", name)
				}
			}
			s, err := Open(dir, OpenOptions{Identities: []cipher.Identity{identity(t, "alice-rsa2048")}, RequireEncrypted: true})
			if err != nil {
				t.Fatal(err)
			}
			equalSets(t, readSet(t, s), orig)
			if rep, err := Verify(dir, VerifyOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}}); err != nil || !rep.OK() || !rep.Authenticated {
				t.Fatalf("verify: %v %+v", err, rep)
			}
			if err := Decrypt(dir, DecryptOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}}); err != nil {
				t.Fatal(err)
			}
			equalSets(t, testset.ReadAll(t, dir), orig)
			if left, _ := Leftovers(dir); len(left) != 0 {
				t.Fatalf("leftovers: %v", left)
			}
		})
	}
	if n < 8 {
		t.Fatalf("found %d fixture sets, want 8", n)
	}
}

// TestWriterStreamsCiphertextOnly writes a set through the Writer the way dump does
// and checks that no plaintext is in the temporary folder while it is written.
func TestWriterStreamsCiphertextOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "set")
	w, err := Create(dir, CreateOptions{Recipients: []cipher.Recipient{recipient(t, "carol-p384")}, Algorithm: cipher.ChaCha20Poly1305})
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte("IMGTOOL-SECRET-CANARY-0123456789"), 100000) // 3.2 MB
	f, _ := w.Create("pages-1.img")
	if _, err := f.Write(secret[:2<<20]); err != nil {
		t.Fatal(err)
	}
	leftovers, _ := Leftovers(dir)
	if len(leftovers) != 1 {
		t.Fatalf("want one temporary folder, got %v", leftovers)
	}
	for name, b := range testset.ReadAll(t, leftovers[0]) {
		if bytes.Contains(b, []byte("IMGTOOL-SECRET")) {
			t.Fatalf("plaintext on disk in %s while writing", name)
		}
	}
	f.Write(secret[2<<20:])
	f.Close()
	g, _ := w.Create("inventory.img")
	g.Write([]byte("tiny"))
	// left open on purpose: Commit closes it
	if _, err := w.Create("inventory.img"); err == nil {
		t.Fatal("a file created twice was accepted")
	}
	if _, err := w.Create(HeaderName); err == nil {
		t.Fatal("a file named like the header was accepted")
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, OpenOptions{Identities: []cipher.Identity{identity(t, "carol-p384")}})
	if err != nil {
		t.Fatal(err)
	}
	got := readSet(t, s)
	if !bytes.Equal(got["pages-1.img"], secret) || string(got["inventory.img"]) != "tiny" {
		t.Fatal("set read back differs")
	}
	if s.Header().Algorithm != cipher.ChaCha20Poly1305 {
		t.Fatal("algorithm not kept")
	}
}

func TestWriterAbortLeavesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "set")
	w, err := Create(dir, CreateOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := w.Create("pages-1.img")
	f.Write(make([]byte, 3<<20))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("target exists after abort: %v", err)
	}
	if left, _ := Leftovers(dir); len(left) != 0 {
		t.Fatalf("leftovers after abort: %v", left)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := copySet(t, "files")
	plain, err := Open(dir, OpenOptions{})
	if err != nil || plain.Encrypted() {
		t.Fatalf("plain set: %v", err)
	}
	if _, err := Open(dir, OpenOptions{RequireEncrypted: true}); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("require-encrypted on a plain set: %v", err)
	}
	if err := Encrypt(dir, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}}); err != nil {
		t.Fatal(err)
	}
	var kr *KeyRequiredError
	if _, err := Open(dir, OpenOptions{}); !errors.As(err, &kr) || len(kr.Recipients) != 1 || kr.Recipients[0] != recipient(t, "bob-p256").Fingerprint() {
		t.Fatalf("no key: %v", err)
	}
	if _, err := Open(dir, OpenOptions{Identities: []cipher.Identity{identity(t, "mallory-p256")}}); !errors.Is(err, cipher.ErrNoRecipient) {
		t.Fatalf("stranger's key: %v", err)
	}
	if err := Encrypt(dir, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}}); !errors.Is(err, ErrEncrypted) {
		t.Fatalf("encrypting twice: %v", err)
	}
	if err := Decrypt(copySet(t, "fifo"), DecryptOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}}); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("decrypting a plain set: %v", err)
	}
}

// TestEncryptedFileInPlainSetRefusedAtOpen: an encrypted file among plain ones (a set
// whose header is gone, partly replaced) is refused when it is opened, before any of its
// bytes are read; a set whose first file is one is refused as a whole.
func TestEncryptedFileInPlainSetRefusedAtOpen(t *testing.T) {
	dir := copySet(t, "files")
	enc := copySet(t, "files")
	if err := Encrypt(enc, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}}); err != nil {
		t.Fatal(err)
	}
	names, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	last := names[len(names)-1]
	swap := func(name string) {
		b, err := os.ReadFile(filepath.Join(enc, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	swap(last)
	s, err := Open(dir, OpenOptions{})
	if err != nil {
		t.Fatalf("opening the set: %v", err)
	}
	if _, err := s.Open(names[0]); err != nil {
		t.Fatalf("%s: %v", names[0], err)
	}
	if _, err := s.Open(last); !errors.Is(err, ErrHeaderMissing) {
		t.Fatalf("%s, encrypted: %v, want %v", last, err, ErrHeaderMissing)
	}
	swap(names[0])
	if _, err := Open(dir, OpenOptions{}); !errors.Is(err, ErrHeaderMissing) {
		t.Fatalf("set whose first file is encrypted: %v, want %v", err, ErrHeaderMissing)
	}
}

func TestRekey(t *testing.T) {
	dir := copySet(t, "ghost")
	orig := testset.ReadAll(t, dir)
	alice, bob, carol := recipient(t, "alice-rsa2048"), recipient(t, "bob-p256"), recipient(t, "carol-p384")
	if err := Encrypt(dir, EncryptOptions{Recipients: []cipher.Recipient{alice, bob}}); err != nil {
		t.Fatal(err)
	}
	pagesBefore, _ := os.ReadFile(filepath.Join(dir, "pages-1.img"))
	// Add carol, remove alice: only the header changes.
	err := Rekey(dir, RekeyOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}, Add: []cipher.Recipient{carol}, Remove: []cipher.Fingerprint{alice.Fingerprint()}})
	if err != nil {
		t.Fatal(err)
	}
	pagesAfter, _ := os.ReadFile(filepath.Join(dir, "pages-1.img"))
	if !bytes.Equal(pagesBefore, pagesAfter) {
		t.Fatal("rekey rewrote a data file")
	}
	if _, err := Open(dir, OpenOptions{Identities: []cipher.Identity{identity(t, "alice-rsa2048")}}); !errors.Is(err, cipher.ErrNoRecipient) {
		t.Fatalf("removed recipient: %v", err)
	}
	s, err := Open(dir, OpenOptions{Identities: []cipher.Identity{identity(t, "carol-p384")}})
	if err != nil {
		t.Fatal(err)
	}
	equalSets(t, readSet(t, s), orig)
	if err := Rekey(dir, RekeyOptions{Identities: []cipher.Identity{identity(t, "carol-p384")}, Remove: []cipher.Fingerprint{alice.Fingerprint()}}); err == nil {
		t.Fatal("removing an absent recipient was accepted")
	}
	if err := Rekey(dir, RekeyOptions{Identities: []cipher.Identity{identity(t, "carol-p384")}, Remove: []cipher.Fingerprint{bob.Fingerprint(), carol.Fingerprint()}}); err == nil {
		t.Fatal("removing every recipient was accepted")
	}
	// Rotate: new file key and set id, every file rewritten, for exactly carol.
	oldHdr, _ := ReadHeader(dir)
	var done, total int64
	err = Rekey(dir, RekeyOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}, Add: []cipher.Recipient{carol}, Rotate: true,
		Algorithm: cipher.ChaCha20Poly1305, Progress: func(d, tt int64) { done, total = d, tt }})
	if err != nil {
		t.Fatal(err)
	}
	newHdr, _ := ReadHeader(dir)
	if newHdr.SetID == oldHdr.SetID || len(newHdr.Stanzas) != 1 || newHdr.Algorithm != cipher.ChaCha20Poly1305 {
		t.Fatal("rotation kept the set id, or the recipients, or the algorithm")
	}
	if done != total || total == 0 {
		t.Fatalf("progress ended at %d of %d", done, total)
	}
	if _, err := Open(dir, OpenOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}}); !errors.Is(err, cipher.ErrNoRecipient) {
		t.Fatalf("bob after rotation: %v", err)
	}
	s, err = Open(dir, OpenOptions{Identities: []cipher.Identity{identity(t, "carol-p384")}})
	if err != nil {
		t.Fatal(err)
	}
	equalSets(t, readSet(t, s), orig)
}

func TestVerifyWithoutKey(t *testing.T) {
	dir := copySet(t, "tree")
	if err := Encrypt(dir, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}}); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir, VerifyOptions{})
	if err != nil || !rep.OK() || rep.Authenticated || len(rep.Unchecked) == 0 {
		t.Fatalf("keyless verify of a good set: %v %+v", err, rep)
	}
	os.Remove(filepath.Join(dir, "pages-2.img"))
	os.WriteFile(filepath.Join(dir, "extra.img"), []byte("x"), 0o600)
	os.Truncate(filepath.Join(dir, "pages-3.img"), 1000)
	rep, _ = Verify(dir, VerifyOptions{})
	want := map[string]error{"pages-2.img": ErrMissingFile, "extra.img": ErrUnexpectedFile, "pages-3.img": cipher.ErrSizeMismatch}
	if len(rep.Problems) != len(want) {
		t.Fatalf("problems: %v", rep.Problems)
	}
	for _, p := range rep.Problems {
		if !errors.Is(p.Err, want[p.File]) {
			t.Errorf("%s: %v, want %v", p.File, p.Err, want[p.File])
		}
	}
}
