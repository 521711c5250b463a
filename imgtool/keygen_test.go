package imgtool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/cipher"
)

// TestKeygen: each key type makes a certificate encrypt takes and a key decrypt
// takes; the key is private to its owner; existing files are never overwritten.
func TestKeygen(t *testing.T) {
	types := []string{"p256", "p384", "rsa2048"}
	if testing.Short() {
		types = types[:2]
	}
	for _, typ := range types {
		dir := t.TempDir()
		cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
		out, _, err := runApp(t, "keygen", "--cert", cert, "--key", key, "--type", typ, "--cn", "test "+typ)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		rs, err := cipher.ReadRecipients(cert)
		if err != nil || len(rs) != 1 {
			t.Fatalf("%s: certificate: %v", typ, err)
		}
		id, err := cipher.ReadIdentity(key)
		if err != nil {
			t.Fatalf("%s: key: %v", typ, err)
		}
		if id.Fingerprint() != rs[0].Fingerprint() {
			t.Errorf("%s: key and certificate do not match", typ)
		}
		if rs[0].Certificate().Subject.CommonName != "test "+typ || !strings.Contains(out, rs[0].Fingerprint().String()) {
			t.Errorf("%s: subject %q, output %q", typ, rs[0].Certificate().Subject, out)
		}
		if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: key mode %v (%v)", typ, st.Mode(), err)
		}
		set := encryptedFixtureWith(t, "tree", cert)
		if _, _, err := runApp(t, "x", set, "ps", "--tls-key", key); err != nil {
			t.Errorf("%s: the key does not open a set encrypted for its certificate: %v", typ, err)
		}
	}
}

func encryptedFixtureWith(t *testing.T, name, cert string) string {
	t.Helper()
	dir := copySet(t, filepath.Join(fixtureDir, name))
	if _, _, err := runApp(t, "encrypt", "-q", "-D", dir, "--cert", cert); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestKeygenRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	for _, existing := range []string{cert, key} {
		if err := os.WriteFile(existing, []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := runApp(t, "keygen", "--cert", cert, "--key", key)
		wantErr(t, err, ExitError, nil, existing, "refusing to overwrite")
		if data, _ := os.ReadFile(existing); string(data) != "precious" {
			t.Errorf("%s was overwritten", existing)
		}
		other := cert
		if existing == cert {
			other = key
		}
		if _, err := os.Stat(other); err == nil {
			t.Errorf("%s was written although %s exists", other, existing)
		}
		os.Remove(existing)
	}
	for _, args := range [][]string{
		{"keygen", "--cert", cert},
		{"keygen", "--key", key},
		{"keygen", "--cert", cert, "--key", cert},
		{"keygen", "--cert", cert, "--key", key, "--type", "dsa1024"},
		{"keygen", "--cert", cert, "--key", key, "extra"},
	} {
		_, _, err := runApp(t, args...)
		wantErr(t, err, ExitUsage, nil, "keygen")
	}
	if _, err := os.Stat(cert); err == nil {
		t.Error("a refused keygen wrote a file")
	}
}
