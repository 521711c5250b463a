package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/explore"
	"github.com/imgtool/imgtool/imgset"
)

func testKeys(t *testing.T) (cipher.Recipient, cipher.Identity) {
	t.Helper()
	certPEM, keyPEM, err := cipher.Keygen(cipher.KeygenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cipher.ParseRecipients(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, err := cipher.ParseIdentity(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return recs[0], id
}

// TestEncryptedArchive: every variant encrypts to an archive in which nothing of
// the original is readable, opens with the key as the original does, and gives
// back the original's exact bytes.
func TestEncryptedArchive(t *testing.T) {
	rec, id := testKeys(t)
	_, other := testKeys(t)
	dir := t.TempDir()
	for comp, path := range variants(t) {
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := Encrypt(&out, bytes.NewReader(orig), int64(len(orig)), []cipher.Recipient{rec}, 0); err != nil {
			t.Fatal(err)
		}
		for _, leak := range []string{canary, "config.dump", "checkpoint/", "ctr1b", "busybox"} {
			if bytes.Contains(out.Bytes(), []byte(leak)) {
				t.Errorf("%s: %q readable in the encrypted archive", comp, leak)
			}
		}
		enc := filepath.Join(dir, string(comp)+".sealed.tar")
		if err := os.WriteFile(enc, out.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		if !IsArchive(enc) || !IsSealed(enc) || IsSealed(path) {
			t.Errorf("%s: IsArchive/IsSealed", comp)
		}
		var kre *imgset.KeyRequiredError
		if _, err := Open(enc, Options{}); !errors.As(err, &kre) || len(kre.Recipients) != 1 {
			t.Errorf("%s: without a key: %v", comp, err)
		}
		if _, err := Open(enc, Options{Identities: []cipher.Identity{other}}); err == nil {
			t.Errorf("%s: opened with another key", comp)
		}
		a, err := Open(enc, Options{Identities: []cipher.Identity{id}})
		if err != nil {
			t.Fatal(err)
		}
		if !a.Encrypted() || a.Header() == nil {
			t.Errorf("%s: not encrypted", comp)
		}
		checkArchive(t, a, comp)
		got, err := io.ReadAll(a.Original())
		if err != nil || !bytes.Equal(got, orig) {
			t.Errorf("%s: original not given back: %v", comp, err)
		}
		a.Close()

		// Damage: any flipped byte of the ciphertext, a truncation, an extra member.
		for _, bad := range [][]byte{
			flip(out.Bytes(), out.Len()-2000), flip(out.Bytes(), 700), out.Bytes()[:out.Len()-3000],
			extraMember(t, out.Bytes()),
		} {
			p := filepath.Join(dir, "bad.tar")
			if err := os.WriteFile(p, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			a, err := Open(p, Options{Identities: []cipher.Identity{id}})
			if err == nil {
				// The damage is in pages: found when they are read.
				set, err2 := a.Set(imgset.OpenOptions{})
				if err2 == nil {
					_, err2 = explore.SearchMemory(set, explore.SearchOptions{Literal: []byte(canary)})
				}
				if err2 == nil {
					_, err2 = io.Copy(io.Discard, a.Original())
				}
				a.Close()
				err = err2
			}
			if err == nil || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: damaged archive: %v", comp, err)
			}
		}
	}
}

func flip(b []byte, i int) []byte {
	out := append([]byte(nil), b...)
	out[i] ^= 1
	return out
}

// extraMember appends a third member to an encrypted archive (Go's tar ends with
// two zero blocks, no padding).
func extraMember(t *testing.T, sealed []byte) []byte {
	t.Helper()
	return append(append([]byte(nil), sealed[:len(sealed)-1024]...), tarOf(t, &tar.Header{Name: "x"}, "y")...)
}

// FuzzSealed: an encrypted archive, damaged any way, is refused or read, never a
// panic; with the key, whatever it decrypts to is read within the limits.
func FuzzSealed(f *testing.F) {
	certPEM, keyPEM, err := cipher.Keygen(cipher.KeygenOptions{})
	if err != nil {
		f.Fatal(err)
	}
	recs, err := cipher.ParseRecipients(certPEM)
	if err != nil {
		f.Fatal(err)
	}
	id, err := cipher.ParseIdentity(keyPEM)
	if err != nil {
		f.Fatal(err)
	}
	plain := smallSeed(f, readFixture(f))
	for _, orig := range [][]byte{plain, gzipped(f, plain)} {
		var out bytes.Buffer
		if err := Encrypt(&out, bytes.NewReader(orig), int64(len(orig)), []cipher.Recipient{recs[0]}, 0); err != nil {
			f.Fatal(err)
		}
		f.Add(out.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		if !sealed(r, int64(len(data))) {
			return
		}
		a, err := openSealed("fuzz", r, int64(len(data)), Options{Identities: []cipher.Identity{id}, MaxMemory: 4 << 20})
		if err != nil {
			return
		}
		a.Info()
		io.Copy(io.Discard, a.Original())
		if set, err := a.Set(imgset.OpenOptions{}); err == nil {
			explore.Inspect(set)
			explore.ProcessArgs(set, true)
		}
	})
}
