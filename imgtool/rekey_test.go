package imgtool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// dataFiles returns the files of dir other than the header, opened for identity
// checks: a header-only rekey must not rewrite any of them.
func dataInodes(t *testing.T, dir string) map[string]os.FileInfo {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]os.FileInfo{}
	for _, e := range ents {
		if e.Name() == imgset.HeaderName {
			continue
		}
		st, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = st
	}
	return out
}

func sameFiles(a, b map[string]os.FileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for n, st := range a {
		if o, ok := b[n]; !ok || !os.SameFile(st, o) || st.Size() != o.Size() || !st.ModTime().Equal(o.ModTime()) {
			return false
		}
	}
	return true
}

// TestRekey: adding and removing recipients rewrites only the header; --rotate
// re-encrypts for exactly the new recipients and shuts the old ones out.
func TestRekey(t *testing.T) {
	orig := rawSums(t, filepath.Join(fixtureDir, "misc"))
	dir := encryptedFixture(t, "misc", "alice-rsa2048.crt")
	files := dataInodes(t, dir)
	sums := rawSums(t, dir)
	delete(sums, imgset.HeaderName)
	unchangedData := func(what string) {
		t.Helper()
		got := rawSums(t, dir)
		delete(got, imgset.HeaderName)
		if !sameFiles(files, dataInodes(t, dir)) || !equalSums(got, sums) {
			t.Errorf("%s rewrote data files", what)
		}
	}
	opens := func(key string) error {
		got, err := plainSums(t, dir, keyPath(key))
		if err == nil && !equalSums(got, orig) {
			t.Errorf("plaintext with %s differs from the original", key)
		}
		return err
	}

	out, _, err := runApp(t, "rekey", "-D", dir, "--tls-key", keyPath("alice-rsa2048.pkcs1.key"), "--cert", keyPath("bob-p256.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "header rewritten") || !strings.Contains(out, testFingerprint(t, "bob-p256")) {
		t.Errorf("rekey output:\n%s", out)
	}
	unchangedData("adding a recipient")
	if got, want := headerRecipients(t, dir), sortedFPs(t, "alice-rsa2048", "bob-p256"); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("recipients %v, want %v", got, want)
	}
	if err := opens("bob-p256.key"); err != nil {
		t.Errorf("the added recipient cannot open the set: %v", err)
	}

	if _, _, err := runApp(t, "rekey", "-q", "-D", dir, "--tls-key", keyPath("bob-p256.key"),
		"--remove", testFingerprint(t, "alice-rsa2048")); err != nil {
		t.Fatal(err)
	}
	unchangedData("removing a recipient")
	if err := opens("alice-rsa2048.key"); !errorsIs(err, cipher.ErrNoRecipient) {
		t.Errorf("the removed recipient: %v, want %v", err, cipher.ErrNoRecipient)
	}
	oldID := headerSetID(t, dir)

	out, _, err = runApp(t, "rekey", "-D", dir, "--tls-key", keyPath("bob-p256.key"), "--rotate",
		"--cert", keyPath("carol-p384.crt"), "--cipher", cipher.ChaCha20Poly1305.String())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "new file key") {
		t.Errorf("rekey --rotate output:\n%s", out)
	}
	h, err := imgset.ReadHeader(dir)
	if err != nil {
		t.Fatal(err)
	}
	if h.SetID == oldID || h.Algorithm != cipher.ChaCha20Poly1305 {
		t.Errorf("rotation kept set id %s or algorithm %s", h.SetID, h.Algorithm)
	}
	rotated := rawSums(t, dir)
	for n, sum := range sums {
		if rotated[n] == sum {
			t.Errorf("--rotate left %s as it was", n)
		}
	}
	if err := opens("carol-p384.key"); err != nil {
		t.Errorf("the new recipient cannot open the rotated set: %v", err)
	}
	if err := opens("bob-p256.key"); !errorsIs(err, cipher.ErrNoRecipient) {
		t.Errorf("an old recipient after --rotate: %v, want %v", err, cipher.ErrNoRecipient)
	}
	if left, _ := imgset.Leftovers(dir); len(left) > 0 {
		t.Errorf("leftovers %v", left)
	}
}

func headerSetID(t *testing.T, dir string) cipher.SetID {
	t.Helper()
	h, err := imgset.ReadHeader(dir)
	if err != nil {
		t.Fatal(err)
	}
	return h.SetID
}

func TestRekeyErrors(t *testing.T) {
	dir := encryptedFixture(t, "fifo", "alice-rsa2048.crt")
	before := rawSums(t, dir)
	alice := keyPath("alice-rsa2048.key")
	for _, tc := range []struct {
		args     []string
		code     int
		sentinel error
		words    []string
	}{
		{[]string{"--tls-key", alice}, ExitUsage, nil, []string{"nothing to do"}},
		{[]string{"--tls-key", alice, "--rotate"}, ExitUsage, nil, []string{"--rotate", "--cert"}},
		{[]string{"--tls-key", alice, "--remove", "abc"}, ExitUsage, nil, []string{"--remove"}},
		{[]string{"--tls-key", alice, "--cert", keyPath("bob-p256.crt"), "--cipher", "aes-256-gcm"}, ExitUsage, nil, []string{"--rotate"}},
		{[]string{"--tls-key", alice, "--remove", testFingerprint(t, "bob-p256")}, ExitError, nil, []string{"not in the set"}},
		{[]string{"--tls-key", alice, "--remove", testFingerprint(t, "alice-rsa2048")}, ExitError, nil, []string{"no recipient would be left"}},
		{[]string{"--tls-key", keyPath("mallory-p256.key"), "--cert", keyPath("mallory-p256.crt")}, ExitError, cipher.ErrNoRecipient, []string{"not a recipient"}},
		{[]string{"--tls-key", keyPath("nope.key"), "--cert", keyPath("bob-p256.crt")}, ExitError, cipher.ErrUnreadableKey, []string{"cannot read the key"}},
		{[]string{"--tls-key", alice, "--cert", keyPath("ed25519.crt")}, ExitError, cipher.ErrUnsupportedKey, []string{"--cert"}},
		{[]string{"--tls-key", keyPath("mallory-p256.key"), "--rotate", "--cert", keyPath("mallory-p256.crt")}, ExitError, cipher.ErrNoRecipient, []string{"not a recipient"}},
	} {
		_, _, err := runApp(t, append([]string{"rekey", "-D", dir}, tc.args...)...)
		wantErr(t, err, tc.code, tc.sentinel, tc.words...)
	}
	if !fileExists(defaultKeyPath) {
		_, _, err := runApp(t, "rekey", "-D", dir, "--cert", keyPath("bob-p256.crt"))
		wantErr(t, err, ExitUsage, nil, "--tls-key")
	}
	if got := rawSums(t, dir); !equalSums(got, before) {
		t.Fatal("a failed rekey changed the set")
	}
	_, _, err := runApp(t, "rekey", "-D", filepath.Join(fixtureDir, "fifo"), "--tls-key", alice, "--cert", keyPath("bob-p256.crt"))
	wantErr(t, err, ExitError, imgset.ErrNotEncrypted, "not encrypted", "nothing to rekey")
}
