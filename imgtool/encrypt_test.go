package imgtool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// TestEncryptDecryptInPlace: every bundled set, encrypted in place for two
// recipients and decrypted in place again, comes back byte for byte; in between it
// reads back to the same plaintext with either key.
func TestEncryptDecryptInPlace(t *testing.T) {
	for _, name := range fixtureSetNames(t) {
		orig := filepath.Join(fixtureDir, name)
		want := rawSums(t, orig)
		dir := copySet(t, orig)
		out, errOut, err := runApp(t, "encrypt", "-D", dir, "--cert", keyPath("alice-rsa2048.crt"), "--cert", keyPath("carol-p384.crt"))
		if err != nil {
			t.Fatalf("%s: encrypt: %v", name, err)
		}
		if errOut != "" {
			t.Errorf("%s: encrypt wrote to stderr (not a terminal): %q", name, errOut)
		}
		for _, w := range []string{"encrypted " + dir, testFingerprint(t, "alice-rsa2048"), testFingerprint(t, "carol-p384")} {
			if !strings.Contains(out, w) {
				t.Errorf("%s: encrypt output lacks %q:\n%s", name, w, out)
			}
		}
		raw := rawSums(t, dir)
		if _, ok := raw[imgset.HeaderName]; !ok || len(raw) != len(want)+1 {
			t.Fatalf("%s: encrypted set holds %v, want the %d files and the header", name, sortedKeys(raw), len(want))
		}
		for n, sum := range want {
			if raw[n] == sum {
				t.Errorf("%s: %s is unchanged by encryption", name, n)
			}
		}
		for _, key := range []string{"alice-rsa2048.key", "carol-p384.key"} {
			got, err := plainSums(t, dir, keyPath(key))
			if err != nil || !equalSums(got, want) {
				t.Errorf("%s: plaintext with %s differs from the original (%v)", name, key, err)
			}
		}
		if got := headerRecipients(t, dir); strings.Join(got, " ") != strings.Join(sortedFPs(t, "alice-rsa2048", "carol-p384"), " ") {
			t.Errorf("%s: recipients %v", name, got)
		}
		out, _, err = runApp(t, "decrypt", "-D", dir, "--tls-key", keyPath("carol-p384.key"))
		if err != nil {
			t.Fatalf("%s: decrypt: %v", name, err)
		}
		if !strings.Contains(out, "decrypted "+dir) {
			t.Errorf("%s: decrypt output %q", name, out)
		}
		if got := rawSums(t, dir); !equalSums(got, want) {
			t.Errorf("%s: decrypted set differs from the original:\n%v\n%v", name, got, want)
		}
		if left, _ := imgset.Leftovers(dir); len(left) > 0 {
			t.Errorf("%s: leftovers %v", name, left)
		}
	}
}

func sortedFPs(t *testing.T, names ...string) []string {
	m := map[string]string{}
	for _, n := range names {
		m[testFingerprint(t, n)] = n
	}
	return sortedKeys(m)
}

// TestEncryptOutput: -o writes a new set and leaves the source alone; --cipher
// selects the AEAD.
func TestEncryptOutput(t *testing.T) {
	src := copySet(t, filepath.Join(fixtureDir, "misc"))
	want := rawSums(t, src)
	for _, alg := range []cipher.Algorithm{cipher.AES256GCM, cipher.ChaCha20Poly1305} {
		out := filepath.Join(t.TempDir(), "sealed")
		if _, _, err := runApp(t, "encrypt", "-q", "-D", src, "-o", out, "--cert", keyPath("bob-p256.crt"), "--cipher", alg.String()); err != nil {
			t.Fatal(err)
		}
		if got := rawSums(t, src); !equalSums(got, want) {
			t.Error("encrypt -o changed the source set")
		}
		h, err := imgset.ReadHeader(out)
		if err != nil || h.Algorithm != alg {
			t.Errorf("--cipher %s: header says %v (%v)", alg, h.Algorithm, err)
		}
		plain := filepath.Join(t.TempDir(), "plain")
		if _, _, err := runApp(t, "decrypt", "-q", "-D", out, "-o", plain, "--tls-key", keyPath("bob-p256.key")); err != nil {
			t.Fatal(err)
		}
		if got := rawSums(t, plain); !equalSums(got, want) {
			t.Errorf("%s: decrypt -o gives a different set", alg)
		}
		if _, ok := rawSums(t, out)[imgset.HeaderName]; !ok {
			t.Error("decrypt -o changed the encrypted set")
		}
	}
}

func TestEncryptErrors(t *testing.T) {
	plain := copySet(t, filepath.Join(fixtureDir, "tree"))
	want := rawSums(t, plain)
	cert := keyPath("bob-p256.crt")
	if !fileExists(defaultCertPath) {
		_, _, err := runApp(t, "encrypt", "-D", plain)
		wantErr(t, err, ExitUsage, nil, "--cert")
	}
	_, _, err := runApp(t, "encrypt", "--cert", cert)
	wantErr(t, err, ExitUsage, nil, "-D DIR")
	_, _, err = runApp(t, "encrypt", "-D", plain, "--cert", cert, "extra")
	wantErr(t, err, ExitUsage, nil, "unexpected argument")
	_, _, err = runApp(t, "encrypt", "-D", plain, "--cert", cert, "--cipher", "rot13")
	wantErr(t, err, ExitUsage, nil, "--cipher")
	_, _, err = runApp(t, "encrypt", "-D", plain, "--bogus")
	wantErr(t, err, ExitUsage, nil, "bogus")
	_, _, err = runApp(t, "encrypt", "-D", plain, "--cert", keyPath("weak-rsa1024.crt"))
	wantErr(t, err, ExitError, cipher.ErrUnsupportedKey, "--cert", "1024")
	_, _, err = runApp(t, "encrypt", "-D", plain, "--cert", keyPath("bob-p256.key"))
	wantErr(t, err, ExitError, cipher.ErrUnsupportedKey, "--cert", "not a usable certificate")
	_, _, err = runApp(t, "encrypt", "-D", plain, "--cert", keyPath("missing.crt"))
	wantErr(t, err, ExitError, cipher.ErrUnreadableKey, "cannot read the certificate")
	_, _, err = runApp(t, "encrypt", "-D", filepath.Join(t.TempDir(), "none"), "--cert", cert)
	wantErr(t, err, ExitError, os.ErrNotExist, "none")
	nonEmpty := t.TempDir()
	os.WriteFile(filepath.Join(nonEmpty, "x"), nil, 0o644)
	_, _, err = runApp(t, "encrypt", "-D", plain, "-o", nonEmpty, "--cert", cert)
	wantErr(t, err, ExitError, nil, "not empty")
	if got := rawSums(t, plain); !equalSums(got, want) {
		t.Fatal("a failed encrypt changed the set")
	}
	if _, _, err := runApp(t, "encrypt", "-q", "-D", plain, "--cert", cert); err != nil {
		t.Fatal(err)
	}
	_, _, err = runApp(t, "encrypt", "-D", plain, "--cert", cert)
	wantErr(t, err, ExitError, imgset.ErrEncrypted, "already encrypted", "rekey")
}

func TestEncryptRefusesAFolderThatIsNoSet(t *testing.T) {
	dir := t.TempDir()
	_, _, err := runWithStdin(t, nil, "encrypt", "-D", dir, "--cert", keyPath("bob-p256.crt"))
	if err == nil || !strings.Contains(err.Error(), "not an image set") {
		t.Errorf("encrypt of an empty folder: %v, want a refusal", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("encrypt of an empty folder wrote %d files", len(ents))
	}
}
