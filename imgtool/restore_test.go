package imgtool

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
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
	if ExitCode(err) != ExitError || err == nil {
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
