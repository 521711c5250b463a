package imgtool

import (
	"path/filepath"
	"testing"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// TestDecryptErrors: each key problem has its own error, and a failed decrypt
// changes nothing.
func TestDecryptErrors(t *testing.T) {
	enc := encryptedFixture(t, "ghost", "alice-rsa2048.crt")
	before := rawSums(t, enc)
	for _, tc := range []struct {
		key      string
		code     int
		sentinel error
		words    []string
	}{
		{"mallory-p256.key", ExitError, cipher.ErrNoRecipient, []string{"not a recipient", testFingerprint(t, "alice-rsa2048")}},
		{"no-such.key", ExitError, cipher.ErrUnreadableKey, []string{"cannot read the key"}},
		{"bob-p256.encrypted.key", ExitError, cipher.ErrUnreadableKey, []string{"password-protected"}},
		{"alice-rsa2048.crt", ExitError, cipher.ErrUnsupportedKey, []string{"wrong kind of key"}},
		{"ed25519.key", ExitError, cipher.ErrUnsupportedKey, []string{"wrong kind of key"}},
	} {
		_, _, err := runApp(t, "decrypt", "-D", enc, "--tls-key", keyPath(tc.key))
		wantErr(t, err, tc.code, tc.sentinel, tc.words...)
	}
	if !fileExists(defaultKeyPath) {
		_, _, err := runApp(t, "decrypt", "-D", enc)
		wantErr(t, err, ExitUsage, nil, "--tls-key")
	}
	if got := rawSums(t, enc); !equalSums(got, before) {
		t.Fatal("a failed decrypt changed the set")
	}
	_, _, err := runApp(t, "decrypt", "-D", filepath.Join(fixtureDir, "tree"), "--tls-key", keyPath("alice-rsa2048.key"))
	wantErr(t, err, ExitError, imgset.ErrNotEncrypted, "not encrypted", "nothing to decrypt")

	// A damaged chunk: nothing is put in place, and the file is named.
	flipByte(t, filepath.Join(enc, "pages-1.img"), cipher.PrefixSize+3)
	before = rawSums(t, enc)
	_, _, err = runApp(t, "decrypt", "-D", enc, "--tls-key", keyPath("alice-rsa2048.key"))
	wantErr(t, err, ExitError, cipher.ErrChunkAuth, "pages-1.img")
	if got := rawSums(t, enc); !equalSums(got, before) {
		t.Fatal("a failed decrypt changed the set")
	}
	if left, _ := imgset.Leftovers(enc); len(left) > 0 {
		t.Errorf("a failed decrypt left %v", left)
	}
}
