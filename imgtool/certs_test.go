package imgtool

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// writeCert writes a self-signed P-256 certificate valid from notBefore to
// notAfter, PEM (or DER when der), and returns its path.
func writeCert(t *testing.T, cn string, notBefore, notAfter time.Time, ca, der bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter, BasicConstraintsValid: true, IsCA: ca}
	body, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if !der {
		body = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: body})
	}
	path := filepath.Join(t.TempDir(), cn+".crt")
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestExpiredCertificates: encrypt and rekey refuse an expired or not yet valid
// certificate in one line naming the file once; rekey --allow-expired takes it.
func TestExpiredCertificates(t *testing.T) {
	now := time.Now()
	expired := writeCert(t, "expired", now.Add(-48*time.Hour), now.Add(-24*time.Hour), false, false)
	future := writeCert(t, "future", now.Add(24*time.Hour), now.Add(48*time.Hour), false, false)
	for _, cert := range []string{expired, future} {
		dir := copySet(t, filepath.Join(fixtureDir, "counter"))
		_, _, err := runApp(t, "encrypt", "-q", "-D", dir, "--cert", cert)
		wantErr(t, err, ExitError, cipher.ErrCertificateValidity, "--allow-expired")
		if n := strings.Count(err.Error(), cert); n != 1 {
			t.Errorf("the error names %s %d times: %v", cert, n, err)
		}
	}
	dir := encryptedFixture(t, "counter", "bob-p256.crt")
	_, _, err := runApp(t, "rekey", "-q", "-D", dir, "--tls-key", keyPath("bob-p256.key"), "--cert", expired)
	wantErr(t, err, ExitError, cipher.ErrCertificateValidity, "rekey: --cert "+expired+": ", "expired on")
	if _, _, err := runApp(t, "rekey", "-q", "-D", dir, "--tls-key", keyPath("bob-p256.key"), "--cert", expired, "--allow-expired"); err != nil {
		t.Errorf("rekey --allow-expired: %v", err)
	}
}

// TestErrorsNameCommandAndFileOnce: a key or certificate error says the command
// once and the file once.
func TestErrorsNameCommandAndFileOnce(t *testing.T) {
	dir := encryptedFixture(t, "counter", "bob-p256.crt")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	junk := filepath.Join(t.TempDir(), "junk.pem")
	os.WriteFile(junk, []byte("hello"), 0o600)
	for _, tc := range []struct {
		cmd  string
		args []string
		file string
	}{
		{"encrypt", []string{"encrypt", "-D", copySet(t, filepath.Join(fixtureDir, "counter")), "--cert", missing}, missing},
		{"encrypt", []string{"encrypt", "-D", copySet(t, filepath.Join(fixtureDir, "counter")), "--cert", junk}, junk},
		{"encrypt", []string{"encrypt", "-D", copySet(t, filepath.Join(fixtureDir, "counter")), "--cert", keyPath("ed25519.crt")}, keyPath("ed25519.crt")},
		{"rekey", []string{"rekey", "-D", dir, "--tls-key", keyPath("bob-p256.key"), "--cert", missing}, missing},
		{"verify", []string{"verify", "-D", dir, "--tls-key", junk}, junk},
		{"verify", []string{"verify", "-D", dir, "--tls-key", keyPath("bob-p256.crt")}, keyPath("bob-p256.crt")},
	} {
		_, _, err := runApp(t, tc.args...)
		if err == nil {
			t.Fatalf("%v: no error", tc.args)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, tc.cmd+": ") || strings.Count(msg, tc.cmd+":") != 1 || strings.Count(msg, tc.file) != 1 {
			t.Errorf("%v: %q does not name %s and %s once each", tc.args, msg, tc.cmd, tc.file)
		}
	}
}

// TestDERCertificatesAndKeys: encrypt takes a DER certificate and verify a DER
// key.
func TestDERCertificatesAndKeys(t *testing.T) {
	der := func(name string) string {
		data, err := os.ReadFile(keyPath(name))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(data)
		p := filepath.Join(t.TempDir(), name+".der")
		os.WriteFile(p, b.Bytes, 0o600)
		return p
	}
	dir := copySet(t, filepath.Join(fixtureDir, "counter"))
	if _, _, err := runApp(t, "encrypt", "-q", "-D", dir, "--cert", der("bob-p256.crt")); err != nil {
		t.Fatalf("encrypt for a DER certificate: %v", err)
	}
	if _, _, err := runApp(t, "verify", "-q", "-D", dir, "--tls-key", der("bob-p256.key")); err != nil {
		t.Errorf("verify with a DER key: %v", err)
	}
}

// TestUnusedCertificatesWarned: a CA beside a leaf, or an unsupported key beside
// a usable one, is named in a warning on stderr, not dropped silently.
func TestUnusedCertificatesWarned(t *testing.T) {
	now := time.Now()
	ca, err := os.ReadFile(writeCert(t, "some CA", now.Add(-time.Hour), now.Add(time.Hour), true, false))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := os.ReadFile(writeCert(t, "leaf", now.Add(-time.Hour), now.Add(time.Hour), false, false))
	bob, _ := os.ReadFile(keyPath("bob-p256.crt"))
	ed, _ := os.ReadFile(keyPath("ed25519.crt"))
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"chain":   {append(append([]byte{}, leaf...), ca...), `certificate 2 "CN=some CA": a CA certificate`},
		"ed25519": {append(append([]byte{}, ed...), bob...), `certificate 1 "CN=imgtool test ed25519": not usable`},
	} {
		bundle := filepath.Join(t.TempDir(), name+".pem")
		os.WriteFile(bundle, tc.data, 0o600)
		dir := encryptedFixture(t, "counter", "bob-p256.crt")
		_, errOut, err := runApp(t, "rekey", "-D", dir, "--tls-key", keyPath("bob-p256.key"), "--cert", bundle)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(errOut, "imgtool: warning: --cert "+bundle+": "+tc.want) {
			t.Errorf("%s: no warning saying %q:\n%s", name, tc.want, errOut)
		}
	}
}

// TestRekeyAlreadyRecipient: adding a recipient the set already has changes
// nothing, says so, and leaves the header untouched.
func TestRekeyAlreadyRecipient(t *testing.T) {
	dir := encryptedFixture(t, "counter", "bob-p256.crt")
	hdr := filepath.Join(dir, imgset.HeaderName)
	before, _ := os.ReadFile(hdr)
	st, _ := os.Stat(hdr)
	out, _, err := runApp(t, "rekey", "-D", dir, "--tls-key", keyPath("bob-p256.key"), "--cert", keyPath("bob-p256.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "nothing changed") || !strings.Contains(out, testFingerprint(t, "bob-p256")) {
		t.Errorf("rekey of a recipient already there says:\n%s", out)
	}
	after, _ := os.ReadFile(hdr)
	st2, _ := os.Stat(hdr)
	if !bytes.Equal(before, after) || !os.SameFile(st, st2) {
		t.Error("the header was rewritten")
	}
}

// TestRecipientLines: keygen, rekey and verify print a recipient the same way:
// key type, subject (when known), fingerprint.
func TestRecipientLines(t *testing.T) {
	dir := encryptedFixture(t, "counter", "bob-p256.crt")
	fp := testFingerprint(t, "bob-p256")
	out, _, err := runApp(t, "rekey", "-D", dir, "--tls-key", keyPath("bob-p256.key"), "--cert", keyPath("alice-rsa2048.crt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"  ECDSA-P-256 (subject unknown) " + fp + "\n",
		`  RSA-2048 "CN=imgtool test alice-rsa2048" ` + testFingerprint(t, "alice-rsa2048") + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rekey does not print %q:\n%s", want, out)
		}
	}
	out, _, err = runApp(t, "verify", "-D", dir, "--tls-key", keyPath("bob-p256.key"))
	if err != nil || !strings.Contains(out, "recipients (2):\n  ECDSA-P-256 (subject unknown) "+fp+"\n  RSA-2048 (subject unknown) ") {
		t.Errorf("verify prints (%v):\n%s", err, out)
	}
}

// TestKeygenTypeAndStdout: --type in any case; "-" is standard output for one
// of the two files, never both.
func TestKeygenTypeAndStdout(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k.pem")
	out, errOut, err := runApp(t, "keygen", "--cert", "-", "--key", key, "--type", "P256")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := cipher.ParseRecipients([]byte(out))
	if err != nil || !strings.HasPrefix(out, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("stdout is not the certificate (%v):\n%s", err, out)
	}
	id, err := cipher.ReadIdentity(key)
	if err != nil || id.Fingerprint() != rs[0].Fingerprint() {
		t.Errorf("the key does not match the certificate: %v", err)
	}
	if _, err := os.Stat("-"); err == nil {
		t.Error(`a file named "-" was written`)
	}
	if !strings.Contains(errOut, "recipient: ECDSA-P-256 \"CN=imgtool\" "+rs[0].Fingerprint().String()) {
		t.Errorf("the summary is not on stderr: %q", errOut)
	}
	cert := filepath.Join(dir, "c.pem")
	out, _, err = runApp(t, "keygen", "--cert", cert, "--key", "-", "--type", "Rsa2048", "-q")
	if err != nil || !strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("--key -: %v\n%s", err, out)
	}
	_, _, err = runApp(t, "keygen", "--cert", "-", "--key", "-")
	wantErr(t, err, ExitUsage, nil, "cannot both be -")
}
