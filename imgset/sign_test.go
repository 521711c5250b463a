package imgset

import (
	"bytes"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgtool/imgtool/cipher"
)

func testSigner(t *testing.T) (*cipher.Signer, []*x509.Certificate) {
	t.Helper()
	s, err := cipher.ReadSigner(keyFile("signer-p256.key"), keyFile("signer-p256.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return s, s.Chain()
}

// TestWritersSign checks the signatures the writers make from the hashes they
// keep as they seal (a stream, as dump -e writes; the positional path, as
// encrypt does) and from a plain set read once written: each verifies against
// every stored chunk, read back in a pass of its own.
func TestWritersSign(t *testing.T) {
	signer, trust := testSigner(t)
	big := bytes.Repeat([]byte("signed pages "), 3*cipher.ChunkSize/13+77)
	for _, tc := range []struct {
		name       string
		recipients []cipher.Recipient
	}{{"encrypted", []cipher.Recipient{recipient(t, "bob-p256")}}, {"plain", nil}} {
		dir := filepath.Join(t.TempDir(), "set")
		commitSet(t, dir, CreateOptions{Recipients: tc.recipients, Signer: signer},
			map[string][]byte{"pages-1.img": big, "core-1.img": []byte("core"), "empty.img": nil})
		sig, err := VerifySignature(dir, SignatureOptions{Trust: trust})
		if err != nil || len(sig.Files) != 3 || sig.Encrypted() != (tc.recipients != nil) {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// Encrypt's positional path, from the plain set.
		if tc.recipients == nil {
			out := filepath.Join(t.TempDir(), "enc")
			if err := Encrypt(dir, EncryptOptions{Recipients: []cipher.Recipient{recipient(t, "bob-p256")}, Output: out, Signer: signer}); err != nil {
				t.Fatal(err)
			}
			if _, err := VerifySignature(out, SignatureOptions{Trust: trust}); err != nil {
				t.Fatalf("encrypt --sign-key: %v", err)
			}
		}
	}
}

// TestSignedReads checks that a set opened with its signature checks what it
// reads, and only that: CheckSignature reads no file, a changed block fails the
// read that reaches it (and no other), and Verify with the signature reports the
// file; a signature that was not verified is refused.
func TestSignedReads(t *testing.T) {
	signer, trust := testSigner(t)
	dir := copySet(t, "counter")
	if _, err := Sign(dir, signer); err != nil {
		t.Fatal(err)
	}
	pages := filepath.Join(dir, "pages-1.img")
	data, err := os.ReadFile(pages)
	if err != nil {
		t.Fatal(err)
	}
	changed := int64(len(data)) - 10
	data[changed] ^= 1
	if err := os.WriteFile(pages, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sig, err := CheckSignature(dir, SignatureOptions{Trust: trust})
	if err != nil {
		t.Fatalf("the cheap check found the changed block: it reads the files (%v)", err)
	}
	if _, err := VerifySignature(dir, SignatureOptions{Trust: trust}); !errors.Is(err, ErrSignedFile) || !errors.Is(err, cipher.ErrSignedChunk) {
		t.Errorf("VerifySignature: %v", err)
	}
	s, err := Open(dir, OpenOptions{Signature: sig})
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Open("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil && changed >= cipher.ChunkSize {
		t.Errorf("a read before the changed block: %v", err)
	}
	if _, err := io.ReadAll(f); !errors.Is(err, cipher.ErrSignedChunk) {
		t.Errorf("reading the changed block: %v", err)
	}
	rep, err := Verify(dir, VerifyOptions{Signature: sig})
	if err != nil || len(rep.Problems) != 2 || !errors.Is(rep.Problems[1].Err, cipher.ErrSignedChunk) || rep.Problems[1].File != "pages-1.img" {
		t.Errorf("Verify: %v %v", err, rep.Problems)
	}
	unverified, err := ReadSignature(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, OpenOptions{Signature: unverified}); err == nil {
		t.Error("a set was opened with a signature nobody verified")
	}
}
