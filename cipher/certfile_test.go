package cipher

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// derOf writes the DER bodies of the PEM blocks of a test key file, concatenated,
// to a temporary file, and returns its path.
func derOf(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(keyPath(name))
	if err != nil {
		t.Fatal(err)
	}
	var der []byte
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "EC PARAMETERS" { // openssl's companion of a SEC1 key
			der = append(der, b.Bytes...)
		}
	}
	path := filepath.Join(t.TempDir(), name+".der")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDERFiles: DER certificates and keys (every encoding) read as their PEM
// forms do, and a DER file of the wrong kind is named as such.
func TestDERFiles(t *testing.T) {
	for _, name := range []string{"alice-rsa2048", "bob-p256", "carol-p384"} {
		rs, err := ReadRecipients(derOf(t, name+".crt"))
		if err != nil || len(rs) != 1 || rs[0].Fingerprint() != mustRecipient(t, name).Fingerprint() {
			t.Errorf("%s.crt as DER: %v, %v", name, rs, err)
		}
	}
	for _, file := range []string{"alice-rsa2048.key", "alice-rsa2048.pkcs1.key", "bob-p256.key", "bob-p256.sec1.key", "carol-p384.key"} {
		id, err := ReadIdentity(derOf(t, file))
		if err != nil || id.Fingerprint() != mustIdentity(t, file).Fingerprint() {
			t.Errorf("%s as DER: %v", file, err)
		}
	}
	if _, err := ReadIdentity(derOf(t, "bob-p256.crt")); !errors.Is(err, ErrUnsupportedKey) || !strings.Contains(err.Error(), "certificate, not a private key") {
		t.Errorf("a DER certificate as a key: %v", err)
	}
	if _, err := ReadRecipients(derOf(t, "bob-p256.key")); !errors.Is(err, ErrUnsupportedKey) || !strings.Contains(err.Error(), "private key where a certificate") {
		t.Errorf("a DER key as a certificate: %v", err)
	}
	// Two DER certificates back to back, as cat a.der b.der makes.
	two := filepath.Join(t.TempDir(), "two.der")
	a, _ := os.ReadFile(derOf(t, "alice-rsa2048.crt"))
	b, _ := os.ReadFile(derOf(t, "bob-p256.crt"))
	os.WriteFile(two, append(a, b...), 0o600)
	if rs, err := ReadRecipients(two); err != nil || len(rs) != 2 {
		t.Errorf("two DER certificates: %d recipients, %v", len(rs), err)
	}
}

// TestFileErrorNamesTheFileOnce: whatever is wrong with a key or certificate
// file, its path appears once in the error.
func TestFileErrorNamesTheFileOnce(t *testing.T) {
	for _, file := range []string{"missing.crt", "make-keys.sh", "bob-p256.key", "ed25519.crt", "weak-rsa1024.crt"} {
		p := keyPath(file)
		_, err := ReadRecipients(p)
		var fe *FileError
		if !errors.As(err, &fe) || strings.Count(err.Error(), p) != 1 {
			t.Errorf("ReadRecipients(%s): %v", file, err)
		}
	}
	for _, file := range []string{"missing.key", "make-keys.sh", "bob-p256.crt", "bob-p256.encrypted.key", "ed25519.key"} {
		p := keyPath(file)
		if _, err := ReadIdentity(p); err == nil || strings.Count(err.Error(), p) != 1 {
			t.Errorf("ReadIdentity(%s): %v", file, err)
		}
	}
	if _, err := ReadIdentity(keyPath("missing.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing key is not os.ErrNotExist: %v", err)
	}
}

// TestBundleSkipped: certificates of a file that are not recipients are listed
// with a reason, not dropped silently; a file with no usable one fails.
func TestBundleSkipped(t *testing.T) {
	leaf, ca, leafFP, _ := testChain(t)
	ed, _ := os.ReadFile(keyPath("ed25519.crt"))
	bob, _ := os.ReadFile(keyPath("bob-p256.crt"))
	weak, _ := os.ReadFile(keyPath("weak-rsa1024.crt"))
	for _, tc := range []struct {
		name    string
		data    []byte
		n       int
		skipped []string // words of each skipped certificate, in order
	}{
		{"leaf+ca", slices.Concat(leaf, ca), 1, []string{`certificate 2 "CN=test CA": a CA certificate`}},
		{"ed25519+bob", slices.Concat(ed, bob), 1, []string{`certificate 1 "CN=imgtool test ed25519": not usable: unsupported key: the key is Ed25519`}},
		{"bob+weak+ed25519", slices.Concat(bob, weak, ed), 1, []string{"certificate 2", "RSA key of 1024 bits", "certificate 3"}},
		{"bob", bob, 1, nil},
	} {
		b, err := ParseBundle(tc.data)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(b.Recipients) != tc.n {
			t.Errorf("%s: %d recipients, want %d", tc.name, len(b.Recipients), tc.n)
		}
		var s []string
		for _, sk := range b.Skipped {
			s = append(s, sk.String())
		}
		all := strings.Join(s, "\n")
		for _, w := range tc.skipped {
			if !strings.Contains(all, w) {
				t.Errorf("%s: skipped %q does not say %q", tc.name, all, w)
			}
		}
		if len(tc.skipped) == 0 && len(s) != 0 {
			t.Errorf("%s: skipped %q", tc.name, all)
		}
	}
	if b, _ := ParseBundle(slices.Concat(leaf, ca)); b.Recipients[0].Fingerprint() != leafFP {
		t.Error("leaf+ca: the recipient is not the leaf")
	}
	if _, err := ParseBundle(slices.Concat(ed, weak)); !errors.Is(err, ErrUnsupportedKey) || !strings.Contains(err.Error(), "none of the 2") {
		t.Errorf("no usable certificate: %v", err)
	}
}

// TestCheckValidity: a certificate is refused after NotAfter and before
// NotBefore, saying which.
func TestCheckValidity(t *testing.T) {
	cert := &x509.Certificate{NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)}
	for _, tc := range []struct {
		now  time.Time
		want string
	}{
		{time.Date(2020, 6, 1, 0, 0, 0, 0, time.UTC), ""},
		{time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC), "expired on 2021-01-01"},
		{time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC), "not valid before 2020-01-01"},
	} {
		err := CheckValidity(cert, tc.now)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.now, err)
		case tc.want != "" && (!errors.Is(err, ErrCertificateValidity) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: %v, want %q", tc.now, err, tc.want)
		}
	}
}

// TestStanzaKeyType: a stanza names its key type as the certificate it was made
// for does.
func TestStanzaKeyType(t *testing.T) {
	key, _ := NewSetKey(AES256GCM)
	for _, name := range []string{"alice-rsa2048", "bob-p256", "carol-p384"} {
		r := mustRecipient(t, name)
		s, err := key.Wrap(r)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := StanzaKeyType(s[0]), r.KeyType(); got != want {
			t.Errorf("%s: stanza says %s, certificate %s", name, got, want)
		}
	}
}
