package imgtool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// writeSigner writes a new signing identity (certificate and key) into dir.
func writeSigner(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	certPEM, keyPEM, err := cipher.Keygen(cipher.KeygenOptions{CommonName: name, Sign: true})
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".sign.crt"), filepath.Join(dir, name+".sign.key")
	if err := os.WriteFile(cert, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// encryptedSet encrypts a copy of the counter fixture for cert, in place.
func signTestSet(t *testing.T, cert string, extra ...string) string {
	t.Helper()
	set := copySet(t, restoreFixtureSet(t, "counter"))
	if _, _, err := runApp(t, append([]string{"encrypt", set, "--cert", cert, "-q"}, extra...)...); err != nil {
		t.Fatal(err)
	}
	return set
}

// wantSignRefusal checks that a restore was refused by the signature check:
// exit 3, one line, naming why, and no process started.
func wantSignRefusal(t *testing.T, what string, err error, why string) {
	t.Helper()
	if ExitCode(err) != ExitVerify || err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), why) {
		t.Errorf("%s: exit %d, %v; want exit %d naming %q", what, ExitCode(err), err, ExitVerify, why)
	}
}

// TestRestoreRefusesForgery: a set encrypted by someone who holds only the
// recipient's certificate (anyone: certificates are public) is refused by
// restore by default, before anything is decrypted or started; --allow-unsigned
// gets past the signature check.
func TestRestoreRefusesForgery(t *testing.T) {
	tmp := t.TempDir()
	cert, key := writeKeyPair(t, tmp, "owner")
	signCert, _ := writeSigner(t, tmp, "ops")
	forged := signTestSet(t, cert) // the forger needs nothing but cert
	before := childrenOf(t)
	for _, args := range [][]string{
		{"restore", "-d", "-D", forged, "--tls-key", key},
		{"restore", "-d", "-D", forged, "--tls-key", key, "--trust", signCert},
	} {
		_, _, err := runApp(t, args...)
		wantSignRefusal(t, strings.Join(args, " "), err, "no signature")
	}
	if after := childrenOf(t); after != before {
		t.Errorf("a refused restore started processes: %q, then %q", before, after)
	}
	// --allow-unsigned passes the check: what fails next is no signature matter.
	// A missing key shows it without creating any process.
	_, _, err := runApp(t, "restore", "-d", "-D", forged, "--allow-unsigned", "--tls-key", filepath.Join(tmp, "none.key"))
	if err == nil || ExitCode(err) == ExitVerify || strings.Contains(err.Error(), "signature") {
		t.Errorf("--allow-unsigned: %v, want the signature check passed", err)
	}
}

// TestRestoreSignatureChecks: an untrusted signer, a set swapped file by file from
// an older signed set, and a changed signature are refused; a validly signed set
// passes verify and restore's signature check.
func TestRestoreSignatureChecks(t *testing.T) {
	tmp := t.TempDir()
	cert, key := writeKeyPair(t, tmp, "owner")
	signCert, signKey := writeSigner(t, tmp, "ops")
	otherCert, otherKey := writeSigner(t, tmp, "mallory")

	good := signTestSet(t, cert, "--sign-key", signKey, "--sign-cert", signCert)
	if !imgset.HasSignature(good) {
		t.Fatal("encrypt --sign-key wrote no signature")
	}
	out, _, err := runApp(t, "verify", good, "--tls-key", key, "--trust", signCert)
	if err != nil || !strings.Contains(out, `signed by "CN=ops"`) || !strings.Contains(out, "verified") {
		t.Errorf("verify of a signed set: %v\n%s", err, out)
	}
	// A CA as trust anchor is tested in package cipher; here the signer itself.
	if _, err := checkSignature(good, signaturePolicy{Trust: []string{signCert}, Require: true}, nil); err != nil {
		t.Errorf("restore's check of a validly signed set: %v", err)
	}
	// Past the check, restore goes on: a key that is no recipient fails next.
	_, otherRecipientKey := writeKeyPair(t, tmp, "stranger")
	_, _, err = runApp(t, "restore", "-d", "-D", good, "--tls-key", otherRecipientKey, "--trust", signCert)
	if err == nil || ExitCode(err) == ExitVerify || strings.Contains(err.Error(), "signature") {
		t.Errorf("restore of a validly signed set failed the signature check: %v", err)
	}

	// Signed by a signer nobody trusts.
	mallory := signTestSet(t, cert, "--sign-key", otherKey, "--sign-cert", otherCert)
	_, _, err = runApp(t, "restore", "-d", "-D", mallory, "--tls-key", key, "--trust", signCert)
	wantSignRefusal(t, "untrusted signer", err, "untrusted signer")
	_, _, err = runApp(t, "verify", mallory, "--tls-key", key, "--trust", signCert)
	wantSignRefusal(t, "verify, untrusted signer", err, "untrusted signer")

	// One file replaced by the same file of an older signed set (same recipient,
	// same signer): both are signed, but not together.
	older := signTestSet(t, cert, "--sign-key", signKey, "--sign-cert", signCert)
	mixed := copySet(t, good)
	if err := os.WriteFile(filepath.Join(mixed, "core-15654.img"), mustRead(t, filepath.Join(older, "core-15654.img")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = runApp(t, "restore", "-d", "-D", mixed, "--tls-key", key, "--trust", signCert)
	wantSignRefusal(t, "a file from an older set", err, "core-15654.img")
	wantSignRefusal(t, "a file from an older set", err, "differs")

	// The signature block changed: one bit of the signed list.
	bad := copySet(t, good)
	sigPath := filepath.Join(bad, imgset.SignName)
	b := mustRead(t, sigPath)
	b[len(b)-200] ^= 1
	os.WriteFile(sigPath, b, 0o600)
	_, _, err = runApp(t, "restore", "-d", "-D", bad, "--tls-key", key, "--trust", signCert)
	wantSignRefusal(t, "a changed signature", err, "signature")
}

// TestSignPlainSet: imgtool sign signs a plain set in place, verify accepts it,
// a changed file is refused, and --require-signed refuses an unsigned set.
func TestSignPlainSet(t *testing.T) {
	tmp := t.TempDir()
	signCert, signKey := writeSigner(t, tmp, "ops")
	set := copySet(t, fixtureDir+"/counter")
	unsigned := copySet(t, fixtureDir+"/counter")
	out, _, err := runApp(t, "sign", "-D", set, "--sign-key", signKey, "--sign-cert", signCert)
	if err != nil || !strings.Contains(out, "signed by") {
		t.Fatalf("sign: %v %q", err, out)
	}
	out, _, err = runApp(t, "verify", set, "--trust", signCert)
	if err != nil || !strings.Contains(out, "verified") {
		t.Errorf("verify of a signed plain set: %v\n%s", err, out)
	}
	if _, _, err := runApp(t, "inspect", set, "--trust", signCert, "--require-signed"); err != nil {
		t.Errorf("inspect --require-signed of a signed set: %v", err)
	}
	for _, args := range [][]string{
		{"verify", unsigned, "--trust", signCert, "--require-signed"},
		{"inspect", unsigned, "--trust", signCert, "--require-signed"},
		{"x", unsigned, "ps", "--trust", signCert, "--require-signed"},
		{"restore", "-d", "-D", unsigned, "--trust", signCert, "--require-signed"},
	} {
		_, _, err := runApp(t, args...)
		wantSignRefusal(t, strings.Join(args, " "), err, "no signature")
	}
	// A changed file of the signed plain set.
	f := filepath.Join(set, "pstree.img")
	b := mustRead(t, f)
	b[len(b)-1] ^= 1
	os.WriteFile(f, b, 0o644)
	_, _, err = runApp(t, "verify", set, "--trust", signCert)
	wantSignRefusal(t, "verify of a changed file", err, "pstree.img")
	// An added file.
	set2 := copySet(t, fixtureDir+"/counter")
	if _, _, err := runApp(t, "sign", "-D", set2, "--sign-key", signKey, "--sign-cert", signCert, "-q"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(set2, "extra.img"), []byte("x"), 0o644)
	_, _, err = runApp(t, "verify", set2, "--trust", signCert)
	wantSignRefusal(t, "verify of an added file", err, "extra.img")
}

// TestRekeyDropsSignature: rekey without --sign-key removes the signature (it
// covers the old header) and says so; with it, the set is signed again.
func TestRekeyDropsSignature(t *testing.T) {
	tmp := t.TempDir()
	cert, key := writeKeyPair(t, tmp, "owner")
	cert2, _ := writeKeyPair(t, tmp, "backup")
	signCert, signKey := writeSigner(t, tmp, "ops")
	set := signTestSet(t, cert, "--sign-key", signKey, "--sign-cert", signCert)
	_, errOut, err := runApp(t, "rekey", set, "--tls-key", key, "--cert", cert2)
	if err != nil {
		t.Fatal(err)
	}
	if imgset.HasSignature(set) || !strings.Contains(errOut, "warning") || !strings.Contains(errOut, "signature") {
		t.Errorf("rekey without --sign-key: signature left %v, stderr %q", imgset.HasSignature(set), errOut)
	}
	if _, _, err := runApp(t, "rekey", set, "--tls-key", key, "--remove", fingerprintOf(t, cert2),
		"--sign-key", signKey, "--sign-cert", signCert); err != nil {
		t.Fatal(err)
	}
	if _, err := checkSignature(set, signaturePolicy{Trust: []string{signCert}, Require: true}, nil); err != nil {
		t.Errorf("rekey --sign-key: %v", err)
	}
}

func fingerprintOf(t *testing.T, cert string) string {
	t.Helper()
	rs, err := cipher.ReadRecipients(cert)
	if err != nil {
		t.Fatal(err)
	}
	return rs[0].Fingerprint().String()
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeygenUsageSign: keygen --usage sign makes an identity that imgtool sign
// takes and verify trusts; a recipient's key (KeyAgreement only) does not sign.
func TestKeygenUsageSign(t *testing.T) {
	tmp := t.TempDir()
	for _, typ := range []string{"p256", "ed25519"} {
		cert, key := filepath.Join(tmp, typ+".pem"), filepath.Join(tmp, typ+".key")
		out, _, err := runApp(t, "keygen", "--usage", "sign", "--type", typ, "--cert", cert, "--key", key)
		if err != nil || !strings.Contains(out, "signer:") {
			t.Fatalf("keygen --usage sign --type %s: %v %q", typ, err, out)
		}
		set := copySet(t, fixtureDir+"/counter")
		if _, _, err := runApp(t, "sign", set, "--sign-key", key, "--sign-cert", cert, "-q"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := runApp(t, "verify", set, "--trust", cert, "--require-signed"); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
	if _, _, err := runApp(t, "keygen", "--type", "ed25519", "--cert", tmp+"/x.pem", "--key", tmp+"/x.key"); ExitCode(err) != ExitUsage {
		t.Errorf("an Ed25519 recipient: %v", err)
	}
	cert, key := writeKeyPair(t, tmp, "recipient")
	if _, _, err := runApp(t, "sign", copySet(t, fixtureDir+"/counter"), "--sign-key", key, "--sign-cert", cert); err == nil ||
		!strings.Contains(err.Error(), "digital signatures") {
		t.Errorf("a recipient's key signs: %v", err)
	}
}
