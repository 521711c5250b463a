package imgtool

import (
	"strings"
	"testing"

	"github.com/imgtool/imgtool/cipher"
)

// TestKeyMeansEncrypted: a reader given a key expects an encrypted set; a plaintext set in
// its place (an attacker's, or a header deleted) is refused unless --allow-plaintext.
func TestKeyMeansEncrypted(t *testing.T) {
	set := copySet(t, fixtureDir+"/counter")
	_, key := writeKeyPair(t, t.TempDir(), "me")
	for _, args := range [][]string{
		{"x", set, "ps", "--tls-key", key},
		{"inspect", set, "--tls-key", key},
		{"decode", "-i", set + "/inventory.img", "--tls-key", key},
	} {
		_, _, err := runApp(t, args...)
		if err == nil || !strings.Contains(err.Error(), "not encrypted") || !strings.Contains(err.Error(), "--allow-plaintext") {
			t.Errorf("%v: %v, want a refusal of the plaintext set naming --allow-plaintext", args, err)
		}
		if _, _, err := runApp(t, append(args, "--allow-plaintext")...); err != nil {
			t.Errorf("%v --allow-plaintext: %v", args, err)
		}
	}
}

// TestExpectSetID: an older copy of a set put back in place is refused by the readers
// given the id of the one expected; the right id passes. verify prints the id.
func TestExpectSetID(t *testing.T) {
	set := copySet(t, fixtureDir+"/counter")
	cert, key := writeKeyPair(t, t.TempDir(), "me")
	if _, _, err := runApp(t, "encrypt", set, "--cert", cert, "-q"); err != nil {
		t.Fatal(err)
	}
	out, _, err := runApp(t, "verify", set, "--tls-key", key)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(out, "set id ")
	if i < 0 {
		t.Fatalf("verify does not print the set id: %q", out)
	}
	id := strings.Fields(out[i+len("set id "):])[0]
	other := strings.Repeat("0", len(id))
	for _, cmd := range [][]string{{"verify", set}, {"x", set, "ps"}, {"inspect", set}, {"decrypt", set, "-o", t.TempDir() + "/out"}} {
		if _, _, err := runApp(t, append(cmd, "--tls-key", key, "--expect-set-id", other)...); ExitCode(err) != ExitVerify ||
			!strings.Contains(err.Error(), "not the expected "+other) {
			t.Errorf("%v with another id: exit %d, %v", cmd, ExitCode(err), err)
		}
		if _, _, err := runApp(t, append(cmd, "--tls-key", key, "--expect-set-id", id)...); err != nil {
			t.Errorf("%v with its id: %v", cmd, err)
		}
	}
}

// TestRekeyRemoveWarns: removing a recipient does not change the file key; rekey says so.
func TestRekeyRemoveWarns(t *testing.T) {
	set := copySet(t, fixtureDir+"/counter")
	dir := t.TempDir()
	cert, key := writeKeyPair(t, dir, "me")
	cert2, _ := writeKeyPair(t, dir, "other")
	if _, _, err := runApp(t, "encrypt", set, "--cert", cert, "--cert", cert2, "-q"); err != nil {
		t.Fatal(err)
	}
	rs, err := cipher.ReadRecipients(cert2)
	if err != nil {
		t.Fatal(err)
	}
	fp := rs[0].Fingerprint().String()
	_, errOut, err := runApp(t, "rekey", set, "--tls-key", key, "--remove", fp)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "can still read any old copy") || !strings.Contains(errOut, "--rotate") {
		t.Errorf("rekey --remove did not warn: %q", errOut)
	}
}
