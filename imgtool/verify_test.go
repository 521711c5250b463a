package imgtool

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// flipByte flips the low bit of the byte at off of a file.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyGood(t *testing.T) {
	dir := encryptedFixture(t, "counter", "bob-p256.crt", "alice-rsa2048.crt")
	out, errOut, err := runApp(t, "verify", "-D", dir, "--tls-key", keyPath("bob-p256.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "OK: the header and all 13 files") || errOut != "" {
		t.Errorf("verify output:\n%s\nstderr %q", out, errOut)
	}
	if fileExists(defaultKeyPath) {
		return
	}
	// Without a key nothing fails, but nothing is authenticated either: exit 4,
	// said in the last line.
	out, _, err = runApp(t, "verify", "-D", dir)
	wantErr(t, err, ExitUnchecked, nil, "nothing was authenticated", "--tls-key")
	for _, w := range []string{"not checked: the header MAC", "not checked: the chunks", testFingerprint(t, "alice-rsa2048")} {
		if !strings.Contains(out, w) {
			t.Errorf("verify without a key does not say %q:\n%s", w, out)
		}
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); !strings.HasPrefix(lines[len(lines)-1], "UNCHECKED: ") {
		t.Errorf("the last line does not say the set is unchecked:\n%s", out)
	}
	out, _, err = runApp(t, "verify", "-q", "-D", dir)
	wantErr(t, err, ExitUnchecked, nil, "nothing was authenticated")
	if out != "" {
		t.Errorf("verify -q without a key printed %q", out)
	}
	out, _, err = runApp(t, "verify", "-q", "-D", dir, "--tls-key", keyPath("alice-rsa2048.key"))
	if err != nil || out != "" {
		t.Errorf("verify -q: %q, %v", out, err)
	}
}

// TestVerifyTampered: damage five files of a set in five ways; verify lists each
// of them with its reason, goes on after each, and exits ExitVerify. Without a key
// it still finds those that need no key.
func TestVerifyTampered(t *testing.T) {
	dir := encryptedFixture(t, "tree", "bob-p256.crt")
	other := encryptedFixture(t, "tree", "bob-p256.crt")
	names := sortedKeys(rawSums(t, dir))
	pick := func(prefix string) string {
		for _, n := range names {
			if strings.HasPrefix(n, prefix) {
				return n
			}
		}
		t.Fatalf("no %s* file", prefix)
		return ""
	}
	flipped, truncated, deleted, foreign := pick("pages-"), pick("core-"), pick("fs-"), pick("inventory")
	added := "extra.img"
	flipByte(t, filepath.Join(dir, flipped), cipher.PrefixSize+100)
	if err := os.Truncate(filepath.Join(dir, truncated), cipher.PrefixSize+10); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, deleted)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(other, foreign))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, foreign), data, 0o600)
	os.WriteFile(filepath.Join(dir, added), []byte("not in the manifest"), 0o600)
	want := map[string]error{
		flipped:   cipher.ErrChunkAuth,
		truncated: cipher.ErrSizeMismatch,
		deleted:   imgset.ErrMissingFile,
		foreign:   cipher.ErrForeignFile,
		added:     imgset.ErrUnexpectedFile,
	}

	rep, err := imgset.Verify(dir, imgset.VerifyOptions{Identities: mustIdentities(t, "bob-p256.key")})
	if err != nil {
		t.Fatal(err)
	}
	for file, sentinel := range want {
		found := false
		for _, p := range rep.Problems {
			found = found || (p.File == file && errors.Is(p.Err, sentinel))
		}
		if !found {
			t.Errorf("the library does not report %s as %v: %v", file, sentinel, rep.Problems)
		}
	}
	out, _, err := runApp(t, "verify", "-D", dir, "--tls-key", keyPath("bob-p256.key"))
	wantErr(t, err, ExitVerify, nil, "failed", "5 file(s)")
	checkFailLines(t, out, rep, want)

	if fileExists(defaultKeyPath) {
		return
	}
	noKey := map[string]error{}
	for f, s := range want {
		if f != flipped { // only a key can find a flipped bit
			noKey[f] = s
		}
	}
	rep, err = imgset.Verify(dir, imgset.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, _, err = runApp(t, "verify", "-D", dir)
	wantErr(t, err, ExitVerify, nil, "failed", "4 file(s)")
	checkFailLines(t, out, rep, noKey)
	if !strings.Contains(out, "not checked: the chunks") {
		t.Errorf("verify without a key does not say what it did not check:\n%s", out)
	}
}

// checkFailLines checks that the output has one FAIL line per problem of the
// library's report, and that each expected file has one naming its sentinel.
func checkFailLines(t *testing.T, out string, rep *imgset.Report, want map[string]error) {
	t.Helper()
	var fails []string
	for _, ln := range strings.Split(out, "\n") {
		if strings.HasPrefix(ln, "FAIL ") {
			fails = append(fails, ln)
		}
	}
	if len(fails) != len(rep.Problems) {
		t.Errorf("%d FAIL lines for %d problems:\n%s", len(fails), len(rep.Problems), out)
	}
	for file, sentinel := range want {
		found := false
		for _, ln := range fails {
			found = found || (strings.HasPrefix(ln, "FAIL "+file+": ") && strings.Contains(ln, sentinel.Error()))
		}
		if !found {
			t.Errorf("no FAIL line for %s saying %q:\n%s", file, sentinel, out)
		}
	}
}

func mustIdentities(t *testing.T, keys ...string) []cipher.Identity {
	t.Helper()
	var paths []string
	for _, k := range keys {
		paths = append(paths, keyPath(k))
	}
	ids, err := loadIdentities(paths)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestVerifyErrors(t *testing.T) {
	out, _, err := runApp(t, "verify", "-D", filepath.Join(fixtureDir, "files"))
	wantErr(t, err, ExitVerify, nil, "failed")
	if !strings.Contains(out, "not encrypted") {
		t.Errorf("verify of a plain set:\n%s", out)
	}
	dir := encryptedFixture(t, "files", "bob-p256.crt")
	_, _, err = runApp(t, "verify", "-D", dir, "--tls-key", keyPath("mallory-p256.key"))
	wantErr(t, err, ExitError, cipher.ErrNoRecipient, "not a recipient")
	_, _, err = runApp(t, "verify", "-D", dir, "--tls-key", keyPath("none.key"))
	wantErr(t, err, ExitError, cipher.ErrUnreadableKey, "cannot read the key")
	_, _, err = runApp(t, "verify", "-D", filepath.Join(t.TempDir(), "none"))
	wantErr(t, err, ExitError, os.ErrNotExist)
	_, _, err = runApp(t, "verify")
	wantErr(t, err, ExitUsage, nil, "-D DIR")

	// A header edited after sealing (here: its manifest) fails as a whole.
	hdr := filepath.Join(dir, imgset.HeaderName)
	h, err := imgset.ReadHeader(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(hdr)
	i := strings.LastIndex(string(data), h.Files[0].Name)
	data[i] ^= 0x20 // the first file's name changes case in the manifest
	os.WriteFile(hdr, data, 0o600)
	out, _, err = runApp(t, "verify", "-D", dir, "--tls-key", keyPath("bob-p256.key"))
	wantErr(t, err, ExitVerify, nil, "failed")
	if !strings.Contains(out, "FAIL "+imgset.HeaderName+": ") {
		t.Errorf("an edited manifest is not reported on the header:\n%s", out)
	}
}

// TestVerifyTamperedHeader: a manifest size changed in the header is the header's
// damage. With a key it is reported on the header alone, never as an intact file
// "truncated or extended"; without a key the file's line says the header may be
// the culprit.
func TestVerifyTamperedHeader(t *testing.T) {
	dir := encryptedFixture(t, "counter", "bob-p256.crt")
	h, err := imgset.ReadHeader(dir)
	if err != nil {
		t.Fatal(err)
	}
	var fs string
	for _, f := range h.Files {
		if strings.HasPrefix(f.Name, "fs-") {
			fs = f.Name
		}
	}
	hdr := filepath.Join(dir, imgset.HeaderName)
	data, err := os.ReadFile(hdr)
	if err != nil {
		t.Fatal(err)
	}
	// A manifest entry is the name's length, the name, and its size (8 bytes, LE).
	flipByte(t, hdr, int64(strings.LastIndex(string(data), fs)+len(fs)))

	out, _, err := runApp(t, "verify", "-D", dir, "--tls-key", keyPath("bob-p256.key"))
	wantErr(t, err, ExitVerify, cipher.ErrHeaderAuth, "header "+imgset.HeaderName+" damaged")
	if !strings.Contains(out, "FAIL "+imgset.HeaderName+": header authentication failed") || strings.Contains(out, "FAIL "+fs) {
		t.Errorf("a tampered header is not reported as the header alone:\n%s", out)
	}
	if fileExists(defaultKeyPath) {
		return
	}
	out, _, err = runApp(t, "verify", "-D", dir)
	wantErr(t, err, ExitVerify, nil, "failed")
	if !strings.Contains(out, "FAIL "+fs+": ") || !strings.Contains(out, "or the header was changed") {
		t.Errorf("without a key, the mismatch does not say the header may be at fault:\n%s", out)
	}
}
