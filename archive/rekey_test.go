package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgtool/imgtool/cipher"
)

// sealedFixture encrypts the plain fixture for rec and writes it to a file.
func sealedFixture(t *testing.T, rec cipher.Recipient) (path string, orig []byte) {
	t.Helper()
	orig = readFixture(t)
	var out bytes.Buffer
	if err := Encrypt(&out, bytes.NewReader(orig), int64(len(orig)), []cipher.Recipient{rec}, 0); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "sealed.tar")
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, orig
}

func original(t *testing.T, data []byte, id cipher.Identity) ([]byte, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "a.tar")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := Open(p, Options{Identities: []cipher.Identity{id}})
	if err != nil {
		return nil, err
	}
	defer a.Close()
	return io.ReadAll(a.Original())
}

// TestRekey: header-only rekey keeps the ciphertext's bytes and the original;
// rotate changes them; the result verifies; a removed key no longer opens it.
func TestRekey(t *testing.T) {
	recA, idA := testKeys(t)
	recB, idB := testKeys(t)
	path, orig := sealedFixture(t, recA)
	old := readFile(t, path)
	fpA := recA.(interface{ Fingerprint() cipher.Fingerprint }).Fingerprint()

	var out bytes.Buffer
	err := Rekey(context.Background(), &out, bytes.NewReader(old), int64(len(old)),
		RekeyOptions{Identities: []cipher.Identity{idA}, Add: []cipher.Recipient{recB}, Remove: []cipher.Fingerprint{fpA}})
	if err != nil {
		t.Fatal(err)
	}
	_, oldCT, _ := sealedParts(bytes.NewReader(old), int64(len(old)))
	_, newCT, _ := sealedParts(bytes.NewReader(out.Bytes()), int64(out.Len()))
	a, _ := io.ReadAll(oldCT)
	b, _ := io.ReadAll(newCT)
	if !bytes.Equal(a, b) {
		t.Error("the ciphertext changed")
	}
	if got, err := original(t, out.Bytes(), idB); err != nil || !bytes.Equal(got, orig) {
		t.Errorf("new recipient: %v", err)
	}
	if _, err := original(t, out.Bytes(), idA); !errors.Is(err, cipher.ErrNoRecipient) {
		t.Errorf("removed recipient: %v", err)
	}
	p := filepath.Join(t.TempDir(), "rekeyed.tar")
	os.WriteFile(p, out.Bytes(), 0o600)
	if v, err := VerifySealed(context.Background(), p, []cipher.Identity{idB}, nil); err != nil || v.Failure != nil || !v.Authenticated || v.Bytes != int64(len(orig)) {
		t.Errorf("verify: %v %+v", err, v)
	}

	var rot bytes.Buffer
	err = Rekey(context.Background(), &rot, bytes.NewReader(old), int64(len(old)),
		RekeyOptions{Identities: []cipher.Identity{idA}, Add: []cipher.Recipient{recB}, Rotate: true, Algorithm: cipher.ChaCha20Poly1305})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := original(t, rot.Bytes(), idB); err != nil || !bytes.Equal(got, orig) {
		t.Errorf("rotated: %v", err)
	}
	_, rotCT, _ := sealedParts(bytes.NewReader(rot.Bytes()), int64(rot.Len()))
	c, _ := io.ReadAll(rotCT)
	if bytes.Equal(a[32:], c[32:]) {
		t.Error("rotate kept the ciphertext")
	}

	// Cancelled midway: an error, whatever was written is the caller's to drop.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Rekey(ctx, io.Discard, bytes.NewReader(old), int64(len(old)),
		RekeyOptions{Identities: []cipher.Identity{idA}, Add: []cipher.Recipient{recB}}); err == nil {
		t.Error("a cancelled rekey succeeded")
	}
	if err := Rekey(context.Background(), io.Discard, bytes.NewReader(readFixture(t)), int64(len(orig)),
		RekeyOptions{Identities: []cipher.Identity{idA}, Add: []cipher.Recipient{recB}}); !errors.Is(err, ErrNotSealed) {
		t.Errorf("plain archive: %v", err)
	}
}

// TestVerifySealedFlips: a flipped bit in any byte of an encrypted archive fails
// verification with the key; without it, those outside the ciphertext and the
// header's MAC-covered content fail too.
func TestVerifySealedFlips(t *testing.T) {
	rec, id := testKeys(t)
	path, _ := sealedFixture(t, rec)
	data := readFile(t, path)
	bad := filepath.Join(t.TempDir(), "bad.tar")
	step := len(data) / 997
	for off := 0; off < len(data); off += step {
		flipped := bytes.Clone(data)
		flipped[off] ^= 1
		os.WriteFile(bad, flipped, 0o600)
		if !IsSealed(bad) {
			continue // the first member's name or checksum: not read as encrypted (imgtool verify fails it as a damaged tar)
		}
		v, err := VerifySealed(context.Background(), bad, []cipher.Identity{id}, nil)
		if err != nil || v.Failure == nil || v.Authenticated {
			t.Fatalf("byte %d flipped: %v %+v", off, err, v)
		}
	}
}

// TestVerifySealedAppended: bytes after the end of the tar fail.
func TestVerifySealedAppended(t *testing.T) {
	rec, id := testKeys(t)
	path, _ := sealedFixture(t, rec)
	os.WriteFile(path, append(readFile(t, path), 0), 0o600)
	v, err := VerifySealed(context.Background(), path, []cipher.Identity{id}, nil)
	if err != nil || !errors.Is(v.Failure, ErrFraming) {
		t.Errorf("%v %+v", err, v)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
