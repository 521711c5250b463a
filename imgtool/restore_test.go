package imgtool

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// fixtureSet is a real CRIU set of the repository.
func restoreFixtureSet(t *testing.T, name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "fixtures", "criu-4.2", name)
}

func TestRestoreCommandUsage(t *testing.T) {
	_, _, err := runApp(t, "restore")
	if ExitCode(err) != ExitUsage {
		t.Errorf("restore without -D: exit %d (%v), want %d", ExitCode(err), err, ExitUsage)
	}
	_, _, err = runApp(t, "restore", "-D", restoreFixtureSet(t, "counter"), "extra")
	if ExitCode(err) != ExitUsage {
		t.Errorf("restore with an argument: exit %d (%v), want %d", ExitCode(err), err, ExitUsage)
	}
}

func TestRestoreCommandRefusals(t *testing.T) {
	// A set that does not exist.
	_, _, err := runApp(t, "restore", "-D", filepath.Join(t.TempDir(), "none"))
	if ExitCode(err) != ExitError || err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("missing set: exit %d, %v", ExitCode(err), err)
	}
	// A plaintext set with --require-encrypted.
	_, _, err = runApp(t, "restore", "--require-encrypted", "-D", restoreFixtureSet(t, "counter"))
	if ExitCode(err) != ExitError || err == nil || !strings.Contains(err.Error(), "not encrypted") {
		t.Errorf("plaintext set with --require-encrypted: exit %d, %v", ExitCode(err), err)
	}
	// A key file that is not a key.
	bad := filepath.Join(t.TempDir(), "key.pem")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	_, _, err = runApp(t, "restore", "--tls-key", bad, "-D", restoreFixtureSet(t, "counter"))
	if ExitCode(err) != ExitError || err == nil || !strings.HasPrefix(err.Error(), "restore: ") {
		t.Errorf("bad key: exit %d, %v", ExitCode(err), err)
	}
}

// childrenOf lists the children of this process, to show a refused restore started nothing.
func childrenOf(t *testing.T) string {
	t.Helper()
	var all []string
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, e := range tasks {
		b, _ := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "children"))
		if s := strings.TrimSpace(string(b)); s != "" {
			all = append(all, s)
		}
	}
	return strings.Join(all, " ")
}

// writeKeyPair writes a new certificate and its private key into dir.
func writeKeyPair(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	certPEM, keyPEM, err := cipher.Keygen(cipher.KeygenOptions{CommonName: name})
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(cert, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestRestoreCommandEncryptedRefusals(t *testing.T) {
	tmp := t.TempDir()
	cert, _ := writeKeyPair(t, tmp, "owner")
	_, otherKey := writeKeyPair(t, tmp, "other")
	recipients, err := cipher.ReadRecipients(cert)
	if err != nil {
		t.Fatal(err)
	}
	var rs []cipher.Recipient
	for _, r := range recipients {
		rs = append(rs, r)
	}
	enc := filepath.Join(tmp, "enc")
	if err := imgset.Encrypt(restoreFixtureSet(t, "counter"), imgset.EncryptOptions{Recipients: rs, Output: enc}); err != nil {
		t.Fatal(err)
	}
	before := childrenOf(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		// The key checks, past the signature check (TestRestoreRefusesForgery).
		{"no key", []string{"restore", "-d", "--allow-unsigned", "-D", enc}, "key"},
		{"another key", []string{"restore", "-d", "--allow-unsigned", "--tls-key", otherKey, "-D", enc}, "key"},
	} {
		_, _, err := runApp(t, tc.args...)
		t.Logf("%s: %v", tc.name, err)
		if ExitCode(err) != ExitError || err == nil || strings.Contains(err.Error(), "\n") ||
			!strings.HasPrefix(err.Error(), "restore: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: exit %d, %v", tc.name, ExitCode(err), err)
		}
	}
	if after := childrenOf(t); after != before {
		t.Errorf("a refused restore started processes: children %q, then %q", before, after)
	}
}
