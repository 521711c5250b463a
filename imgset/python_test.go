package imgset

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPythonCheck reads the test vectors' sets with the independent Python
// implementation of docs/format.md (cipher/testdata/kat.py check, on
// pyca/cryptography): the signed sets' signatures (ECDSA P-256, Ed25519), chunk
// hashes and header hashes, and every set's v1 or v2 header and files, the file
// key unwrapped with RSA-OAEP and with HPKE (P-256, P-384) written from RFC 9180;
// and it must refuse the forgeries. It skips, saying why, without python3 or its
// cryptography module.
func TestPythonCheck(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not found: the independent Python check is skipped")
	}
	script := filepath.Join("..", "cipher", "testdata", "kat.py")
	set := func(dir, name string) string { return filepath.Join(dir, "sets", name) }
	fixture := func(name string) string { return filepath.Join(fixtures, name) }
	forged := filepath.Join(t.TempDir(), "forged")
	if err := os.CopyFS(forged, os.DirFS(set(vectorDirV2, "files-aes-signed"))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(forged, "pages-1.img"), mustRead(t, set(vectorDirV2, "files-aes-signed-forgery"), "pages-1.img"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		set, trust, key, fixture string
		fail                     string // "": must pass; else what the failure says
	}{
		{set(vectorDirV2, "files-aes-signed"), "signer-p256", "bob-p256", fixture("files"), ""},
		{set(vectorDirV2, "files-aes-signed"), "signer-p256", "alice-rsa2048", fixture("files"), ""},
		{set(vectorDirV2, "files-plain-signed"), "ed25519", "", fixture("files"), ""},
		{set(vectorDirV2, "misc-chacha"), "", "carol-p384", fixture("misc"), ""},
		{set(vectorDirV2, "tree-aes"), "", "bob-p256", fixture("tree"), ""},
		{set(vectorDirV1, "files-aes"), "", "alice-rsa2048", fixture("files"), ""},
		{set(vectorDirV1, "misc-chacha"), "", "carol-p384", fixture("misc"), ""},
		// A recipient's forgery under the set's own keys decrypts, but is not signed.
		{forged, "", "bob-p256", "", ""},
		{forged, "signer-p256", "", "", "pages-1.img: chunk 0 is not the signed one"},
		{set(vectorDirV2, "files-aes-forged-signed-mallory"), "signer-p256", "", "", "untrusted signer"},
		{set(vectorDirV2, "files-aes-forged-unsigned"), "signer-p256", "", "", "no signature"},
		{set(vectorDirV2, "files-aes-signed-older"), "signer-p256", "bob-p256", fixture("files"), ""},
	} {
		args := []string{script, "check", tc.set}
		if tc.trust != "" {
			args = append(args, "--trust", keyFile(tc.trust+".crt"))
		}
		if tc.key != "" {
			args = append(args, "--key", keyFile(tc.key+".key"))
		}
		if tc.fixture != "" {
			args = append(args, "--fixture", tc.fixture)
		}
		out, err := exec.Command("python3", args...).Output()
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 77 {
			t.Skipf("the independent Python check is skipped: %s", strings.TrimSpace(string(out)))
		}
		got := strings.TrimSpace(string(out))
		switch {
		case tc.fail == "" && (err != nil || !strings.HasPrefix(got, "OK ")):
			t.Errorf("%v: %v\n%s", args[2:], err, got)
		case tc.fail != "" && (err == nil || !strings.HasPrefix(got, "FAIL ") || !strings.Contains(got, tc.fail)):
			t.Errorf("%v: %v %q, want a failure saying %q", args[2:], err, got, tc.fail)
		}
	}
}
