package imgtool

import (
	"bytes"
	"crypto/aes"
	stdcipher "crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
	// One image of it, decoded alone, with a trust anchor: read through the set,
	// checked against the signature.
	_, _, err = runApp(t, "decode", "-i", f, "--trust", signCert)
	wantSignRefusal(t, "decode of a changed file", err, "pstree.img")
	if _, _, err := runApp(t, "decode", "-i", filepath.Join(set, "core-15654.img"), "--trust", signCert); err != nil {
		t.Errorf("decode of an unchanged file of a signed set: %v", err)
	}
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

// forgeAsRecipient does what any recipient of an encrypted set can: it unwraps the
// set's file key with its own key, and writes other plaintext (edit of the
// file's) as the file name, under the very payload key and nonce of the genuine
// file (docs/format.md, part 2), leaving the header and the signature as they are.
// Every chunk of the forgery authenticates; only the signature's chunk hashes
// tell it from the genuine file.
func forgeAsRecipient(t *testing.T, dir, keyPath, name string, edit func([]byte) []byte) {
	t.Helper()
	h, err := imgset.ReadHeader(dir)
	if err != nil {
		t.Fatal(err)
	}
	id, err := cipher.ReadIdentity(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	fileKey, err := id.Unwrap(h.Stanzas, cipher.WrapContext{Version: h.Version, SetID: h.SetID})
	if err != nil {
		t.Fatal(err)
	}
	set, err := imgset.Open(dir, imgset.OpenOptions{Identities: []cipher.Identity{id}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := set.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	plain = edit(plain)
	fi, _ := h.File(name)
	if h.Version != 2 || h.Algorithm != cipher.AES256GCM || int64(len(plain)) != fi.Size {
		t.Fatalf("forging needs a v2 AES-GCM set and a same-size edit")
	}
	info := append([]byte("imgtool-seal/v2 payload\x00"), binary.LittleEndian.AppendUint16(nil, uint16(h.Algorithm))...)
	info = binary.LittleEndian.AppendUint32(info, cipher.ChunkSize)
	info = append(append(info, fi.Nonce[:]...), name...)
	key, err := hkdf.Key(sha256.New, fileKey, h.SetID[:], string(info), 32)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	gcm, _ := stdcipher.NewGCM(block)
	out := append([]byte(cipher.FileMagic), h.SetID[:]...)
	for i := 0; i == 0 || i*cipher.ChunkSize < len(plain); i++ {
		chunk := plain[i*cipher.ChunkSize : min(len(plain), (i+1)*cipher.ChunkSize)]
		var nonce [12]byte
		binary.BigEndian.PutUint64(nonce[3:11], uint64(i))
		if (i+1)*cipher.ChunkSize >= len(plain) {
			nonce[11] = 1
		}
		out = gcm.Seal(out, nonce[:], chunk, nil)
	}
	if err := os.WriteFile(filepath.Join(dir, name), out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRecipientForgeryRefused is the forgery a signature exists for, end to end
// with a real process: a signed, encrypted checkpoint; a recipient rewrites the
// process's pages under the set's own keys, keeping the signed header and the
// signature. The forged set authenticates, and nothing but the signature's chunk
// hashes catch it: verify and restore refuse it (exit 3, naming the file), and
// the refused restore leaves nothing running. The genuine set restores.
func TestRecipientForgeryRefused(t *testing.T) {
	pid := startCounter(t, "forge5c1")
	tmp := t.TempDir()
	cert, key := writeKeyPair(t, tmp, "owner")
	signCert, signKey := writeSigner(t, tmp, "ops")
	genuine := filepath.Join(tmp, "ckpt")
	if _, _, err := runApp(t, "dump", "-t", strconv.Itoa(pid), "-D", genuine, "-e", "--cert", cert,
		"--sign-key", signKey, "--sign-cert", signCert, "--quiet"); err != nil {
		t.Fatalf("dump -e --sign-key: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); syscall.Kill(pid, 0) == nil && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	forged := copySet(t, genuine)
	forgeAsRecipient(t, forged, key, "pages-1.img", func(b []byte) []byte {
		return bytes.ReplaceAll(b, []byte("IMGTOOL-SECRET-CANARY-forge5c1"), []byte("IMGTOOL-FORGED-BY-RECIPIENT-01"))
	})
	id, _ := cipher.ReadIdentity(key)
	if rep, err := imgset.Verify(forged, imgset.VerifyOptions{Identities: []cipher.Identity{id}}); err != nil || !rep.OK() || !rep.Authenticated {
		t.Fatalf("the forgery should authenticate without its signature: %v %v", err, rep.Err())
	}
	out, _, err := runApp(t, "verify", forged, "--tls-key", key, "--trust", signCert)
	wantSignRefusal(t, "verify of the forgery", err, "pages-1.img")
	if !strings.Contains(out, "FAIL pages-1.img") {
		t.Errorf("verify's report does not name the forged file:\n%s", out)
	}
	// Without a key, the chunk hashes alone catch it; the genuine set passes them
	// (exit 4: no chunk was authenticated).
	_, _, err = runApp(t, "verify", forged, "--trust", signCert)
	wantSignRefusal(t, "verify of the forgery without a key", err, "pages-1.img")
	out, _, err = runApp(t, "verify", genuine, "--trust", signCert)
	if ExitCode(err) != ExitUnchecked || !strings.Contains(out, "every stored chunk is the one signed") {
		t.Errorf("verify of the genuine set without a key: exit %d, %v\n%s", ExitCode(err), err, out)
	}
	before := childrenOf(t)
	_, _, err = runApp(t, "restore", "-d", "-D", forged, "--tls-key", key, "--trust", signCert)
	wantSignRefusal(t, "restore of the forgery", err, "differs")
	wantSignRefusal(t, "restore of the forgery", err, "pages-1.img")
	if after := childrenOf(t); after != before {
		t.Errorf("a refused restore left processes: %q, then %q", before, after)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("the refused restore left process %d running", pid)
	}
	// The genuine set passes, and restores.
	if _, _, err := runApp(t, "verify", genuine, "--tls-key", key, "--trust", signCert, "-q"); err != nil {
		t.Errorf("verify of the genuine set: %v", err)
	}
	pidFile := filepath.Join(tmp, "restored.pid")
	if _, _, err := runApp(t, "restore", "-d", "-D", genuine, "--tls-key", key, "--trust", signCert, "--pidfile", pidFile); err != nil {
		t.Fatalf("restore of the genuine set: %v", err)
	}
	b, _ := os.ReadFile(pidFile)
	restored, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if restored != pid || syscall.Kill(restored, 0) != nil {
		t.Errorf("the genuine set restored as %q, want process %d running", b, pid)
	}
	syscall.Kill(restored, syscall.SIGKILL)
}

// TestPlainSignedSetID: a signed plain set's id is its signature's, which
// --expect-set-id checks once the signature is verified: an older signed set
// put back is refused by verify and by the readers (exit 3).
func TestPlainSignedSetID(t *testing.T) {
	tmp := t.TempDir()
	signCert, signKey := writeSigner(t, tmp, "ops")
	older := copySet(t, fixtureDir+"/counter")
	current := copySet(t, fixtureDir+"/counter")
	for _, set := range []string{older, current} {
		if _, _, err := runApp(t, "sign", "-D", set, "--sign-key", signKey, "--sign-cert", signCert, "-q"); err != nil {
			t.Fatal(err)
		}
	}
	sig, err := imgset.ReadSignature(current)
	if err != nil {
		t.Fatal(err)
	}
	id := sig.SetID.String()
	for _, cmd := range [][]string{{"verify", "-q"}, {"x", "ps"}, {"inspect"}} {
		args := append(append([]string{cmd[0], current}, cmd[1:]...), "--trust", signCert, "--expect-set-id", id)
		if _, _, err := runApp(t, args...); err != nil {
			t.Errorf("%v: %v", args, err)
		}
		args[1] = older
		_, _, err := runApp(t, args...)
		if ExitCode(err) != ExitVerify || !strings.Contains(fmt.Sprint(err), "not the expected") {
			t.Errorf("%v, an older signed set: exit %d, %v", args, ExitCode(err), err)
		}
	}
}
