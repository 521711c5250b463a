package imgtool

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/internal/testset"
)

// The test keys are cipher's: made by OpenSSL (cipher/testdata/keys/make-keys.sh)
// in every encoding imgtool reads, with OpenSSL's fingerprints in FINGERPRINTS.
const testKeyDir = "../cipher/testdata/keys"

func keyPath(name string) string { return filepath.Join(testKeyDir, name) }

// testFingerprint returns the fingerprint OpenSSL computed for a test key.
func testFingerprint(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open(keyPath("FINGERPRINTS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fp, n, ok := strings.Cut(sc.Text(), " "); ok && n == name {
			return fp
		}
	}
	t.Fatalf("no fingerprint for %s", name)
	return ""
}

// copySet copies a fixture set (or any flat folder) to a new folder in a fresh
// temporary parent and returns its path.
func copySet(t testing.TB, src string) string {
	t.Helper()
	return testset.Copy(t, src)
}

// rawSums maps each regular file of dir to the SHA-256 of its bytes on disk.
func rawSums(t testing.TB, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		sums[e.Name()] = hex.EncodeToString(h.Sum(nil))
	}
	return sums
}

// plainSums maps each file of the set in dir to the SHA-256 of its plaintext, read
// through imgset with the given keys (none for a plain set).
func plainSums(t testing.TB, dir string, keys ...string) (map[string]string, error) {
	t.Helper()
	var ids []cipher.Identity
	for _, k := range keys {
		id, err := cipher.ReadIdentity(k)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	set, err := imgset.Open(dir, imgset.OpenOptions{Identities: ids})
	if err != nil {
		return nil, err
	}
	sums := map[string]string{}
	for _, n := range set.Names() {
		f, err := set.Open(n)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		_, err = f.WriteTo(h)
		f.Close()
		if err != nil {
			return nil, err
		}
		sums[n] = hex.EncodeToString(h.Sum(nil))
	}
	return sums, nil
}

func equalSums(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// recipientsOf returns the fingerprints in the header of the set in dir, sorted.
func headerRecipients(t testing.TB, dir string) []string {
	t.Helper()
	h, err := imgset.ReadHeader(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fp := range h.Recipients() {
		out = append(out, fp.String())
	}
	sort.Strings(out)
	return out
}

// wantErr checks a command's error: its exit code, the sentinel it wraps (if any),
// and words its message must hold.
func wantErr(t *testing.T, err error, code int, sentinel error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want exit %d (%v)", code, sentinel)
	}
	if got := ExitCode(err); got != code {
		t.Errorf("exit code %d, want %d: %v", got, code, err)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Errorf("error %q does not wrap %q", err, sentinel)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

// encryptedFixture returns a copy of the fixture set name encrypted (by the
// command) for the certificates given.
func encryptedFixture(t *testing.T, name string, certs ...string) string {
	t.Helper()
	dir := copySet(t, filepath.Join(fixtureDir, name))
	args := []string{"encrypt", "-q", "-D", dir}
	for _, c := range certs {
		args = append(args, "--cert", keyPath(c))
	}
	if _, _, err := runApp(t, args...); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadIdentitiesEncodings(t *testing.T) {
	// PKCS#8, PKCS#1 and SEC1 of the same keys give the same fingerprints,
	// OpenSSL's.
	for file, name := range map[string]string{
		"alice-rsa2048.key":       "alice-rsa2048",
		"alice-rsa2048.pkcs1.key": "alice-rsa2048",
		"bob-p256.key":            "bob-p256",
		"bob-p256.sec1.key":       "bob-p256",
		"carol-p384.key":          "carol-p384",
	} {
		ids, err := loadIdentities([]string{keyPath(file)})
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if got := describeIdentities(ids); got != testFingerprint(t, name) {
			t.Errorf("%s: fingerprint %s, want %s", file, got, testFingerprint(t, name))
		}
	}
}

func TestLoadKeyErrors(t *testing.T) {
	for _, tc := range []struct {
		file     string
		sentinel error
		words    []string
	}{
		{"no-such.key", cipher.ErrUnreadableKey, []string{"cannot read the key", "no-such.key"}},
		{"bob-p256.encrypted.key", cipher.ErrUnreadableKey, []string{"cannot read the key", "password-protected"}},
		{"FINGERPRINTS", cipher.ErrUnreadableKey, []string{"cannot read the key", "neither PEM nor a DER private key"}},
		{"bob-p256.crt", cipher.ErrUnsupportedKey, []string{"wrong kind of key", "not a private key"}},
		{"ed25519.key", cipher.ErrUnsupportedKey, []string{"wrong kind of key"}},
		{"weak-rsa1024.key", cipher.ErrUnsupportedKey, []string{"wrong kind of key", "1024"}},
		{"p521.key", cipher.ErrUnsupportedKey, []string{"wrong kind of key"}},
	} {
		_, err := loadIdentities([]string{keyPath(tc.file)})
		wantErr(t, err, ExitError, tc.sentinel, append(tc.words, "--tls-key")...)
	}
	for _, tc := range []struct {
		file     string
		sentinel error
		words    []string
	}{
		{"no-such.crt", cipher.ErrUnreadableKey, []string{"cannot read the certificate"}},
		{"bob-p256.key", cipher.ErrUnsupportedKey, []string{"not a usable certificate", "PRIVATE KEY"}},
		{"weak-rsa1024.crt", cipher.ErrUnsupportedKey, []string{"not a usable certificate", "1024"}},
		{"ed25519.crt", cipher.ErrUnsupportedKey, []string{"not a usable certificate"}},
	} {
		_, err := loadRecipients([]string{keyPath(tc.file)}, recipientOptions{})
		wantErr(t, err, ExitError, tc.sentinel, append(tc.words, "--cert")...)
	}
	// The same certificate twice is one recipient.
	rs, err := loadRecipients([]string{keyPath("bob-p256.crt"), keyPath("bob-p256.crt"), keyPath("carol-p384.crt")}, recipientOptions{})
	if err != nil || len(rs) != 2 {
		t.Errorf("got %d recipients (%v), want 2", len(rs), err)
	}
}

// TestReadCommandsOnEncryptedSets: x and inspect read an encrypted set given its
// key, exactly as the plain one, and without a key say for whom it is encrypted.
func TestReadCommandsOnEncryptedSets(t *testing.T) {
	for _, name := range fixtureSetNames(t) {
		plain := filepath.Join(fixtureDir, name)
		enc := encryptedFixture(t, name, "alice-rsa2048.crt", "bob-p256.crt")
		for _, view := range []string{"ps", "fds", "mems", "rss", "sk"} {
			want, _, err := runApp(t, "x", plain, view)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := runApp(t, "x", enc, view, "--tls-key", keyPath("bob-p256.sec1.key"))
			if err != nil {
				t.Fatalf("%s x %s: %v", name, view, err)
			}
			if got != want {
				t.Errorf("%s x %s: encrypted set shows\n%s\nplain set\n%s", name, view, got, want)
			}
		}
		wantPlain, _, err := runApp(t, "inspect", "--json", plain)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := runApp(t, "inspect", "--json", "--tls-key", keyPath("alice-rsa2048.pkcs1.key"), enc)
		if err != nil {
			t.Fatalf("%s inspect: %v", name, err)
		}
		var a, b map[string]any
		if err := json.Unmarshal([]byte(got), &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(wantPlain), &b); err != nil {
			t.Fatal(err)
		}
		if a["encrypted"] != true || b["encrypted"] != false {
			t.Errorf("%s: inspect says encrypted %v, plain %v", name, a["encrypted"], b["encrypted"])
		}
		for _, m := range []map[string]any{a, b} {
			delete(m, "encrypted")
			delete(m, "recipients")
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: inspect of the encrypted set differs from the plain one:\n%s\n%s", name, got, wantPlain)
		}
	}
	enc := encryptedFixture(t, "tree", "alice-rsa2048.crt", "bob-p256.crt")
	for _, args := range [][]string{{"x", enc, "ps"}, {"inspect", enc}} {
		_, _, err := runApp(t, args...)
		if fileExists(defaultKeyPath) {
			continue
		}
		wantErr(t, err, ExitError, imgset.ErrKeyRequired, "is encrypted", "--tls-key",
			testFingerprint(t, "alice-rsa2048"), testFingerprint(t, "bob-p256"))
	}
	_, _, err := runApp(t, "x", enc, "ps", "--tls-key", keyPath("mallory-p256.key"))
	wantErr(t, err, ExitError, cipher.ErrNoRecipient, "not a recipient", testFingerprint(t, "mallory-p256"), testFingerprint(t, "bob-p256"))
	_, _, err = runApp(t, "inspect", "--tls-key", keyPath("bob-p256.crt"), enc)
	wantErr(t, err, ExitError, cipher.ErrUnsupportedKey, "wrong kind of key")
	_, _, err = runApp(t, "x", enc, "ps", "--tls-key", keyPath("no-such.key"))
	wantErr(t, err, ExitError, cipher.ErrUnreadableKey, "cannot read the key")
	// Several keys: the one that is a recipient opens the set.
	if _, _, err := runApp(t, "x", enc, "ps", "--tls-key", keyPath("mallory-p256.key"), "--tls-key", keyPath("bob-p256.key")); err != nil {
		t.Errorf("two keys, the second a recipient: %v", err)
	}
}

// TestWrongKey: a stanza that names the key but does not open with it (damaged or
// forged) gets its own error, distinct from "not a recipient".
func TestWrongKey(t *testing.T) {
	enc := encryptedFixture(t, "tree", "bob-p256.crt")
	hdrPath := filepath.Join(enc, imgset.HeaderName)
	data, err := os.ReadFile(hdrPath)
	if err != nil {
		t.Fatal(err)
	}
	h, err := cipher.ParseHeader(data, imgset.HeaderFraming)
	if err != nil {
		t.Fatal(err)
	}
	body := h.Stanzas[0].Body
	i := strings.Index(string(data), string(body))
	if i < 0 {
		t.Fatal("stanza body not found in the header")
	}
	data[i+len(body)/2] ^= 0x01
	if err := os.WriteFile(hdrPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = runApp(t, "x", enc, "ps", "--tls-key", keyPath("bob-p256.key"))
	wantErr(t, err, ExitError, cipher.ErrWrongKey, "does not open", "damaged or forged")
	_, _, err = runApp(t, "decrypt", "-D", enc, "--tls-key", keyPath("bob-p256.key"))
	wantErr(t, err, ExitError, cipher.ErrWrongKey, "does not open")
	out, _, err := runApp(t, "verify", "-D", enc, "--tls-key", keyPath("bob-p256.key"))
	wantErr(t, err, ExitVerify, nil, "failed")
	if !strings.Contains(out, "FAIL "+imgset.HeaderName+": ") || !strings.Contains(out, cipher.ErrWrongKey.Error()) {
		t.Errorf("verify does not report the damaged stanza:\n%s", out)
	}
}

// TestRequireEncrypted: --require-encrypted refuses a plain set, and a set whose
// header was removed is refused even without it.
func TestRequireEncrypted(t *testing.T) {
	plain := filepath.Join(fixtureDir, "tree")
	_, _, err := runApp(t, "x", plain, "ps", "--require-encrypted")
	wantErr(t, err, ExitError, imgset.ErrNotEncrypted, "not encrypted")
	_, _, err = runApp(t, "inspect", "--require-encrypted", plain)
	wantErr(t, err, ExitError, imgset.ErrNotEncrypted, "not encrypted")

	enc := encryptedFixture(t, "tree", "bob-p256.crt")
	if _, _, err := runApp(t, "x", enc, "ps", "--require-encrypted", "--tls-key", keyPath("bob-p256.key")); err != nil {
		t.Errorf("an encrypted set with --require-encrypted: %v", err)
	}
	if err := os.Remove(filepath.Join(enc, imgset.HeaderName)); err != nil {
		t.Fatal(err)
	}
	_, _, err = runApp(t, "x", enc, "ps", "--require-encrypted", "--tls-key", keyPath("bob-p256.key"))
	wantErr(t, err, ExitError, imgset.ErrNotEncrypted, "not encrypted")
	_, _, err = runApp(t, "x", enc, "ps", "--tls-key", keyPath("bob-p256.key"))
	wantErr(t, err, ExitError, imgset.ErrHeaderMissing, "header is missing")
}

// TestCryptoCommandsHelp: every encryption command documents examples and exit codes.
func TestCryptoCommandsHelp(t *testing.T) {
	for _, cmd := range []string{"encrypt", "decrypt", "rekey", "verify", "keygen"} {
		out, _, err := runApp(t, cmd, "--help")
		if err != nil {
			t.Fatalf("%s --help: %v", cmd, err)
		}
		for _, w := range []string{"Examples:", "Exit codes:", "imgtool " + cmd} {
			if !strings.Contains(out, w) {
				t.Errorf("%s --help lacks %q:\n%s", cmd, w, out)
			}
		}
	}
}

// TestProgressOnTerminal: a progress bar is drawn on stderr when it is a terminal
// (a pseudo-terminal here), and not with --quiet; with a pipe or a buffer nothing
// is drawn (the other tests capture stderr in buffers and check it is empty).
func TestProgressOnTerminal(t *testing.T) {
	master, slave := openPTY(t)
	drawn := func(args ...string) string {
		// Read the terminal while the command runs: a pty buffers only a few KiB, and a
		// bar drawing into a full one would block the command for ever.
		got := make(chan string, 1)
		go func() {
			var b []byte
			buf := make([]byte, 1<<16)
			for {
				n, err := master.Read(buf)
				b = append(b, buf[:n]...)
				if err != nil {
					got <- string(b)
					return
				}
			}
		}()
		app := NewApp()
		var out strings.Builder
		app.Writer, app.ErrWriter = &out, slave
		runErr := app.Run(append([]string{"imgtool"}, args...))
		// The bar's last frame ends the output: stop reading shortly after the command.
		if err := master.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Skipf("pty has no deadlines: %v", err)
		}
		text := <-got
		if err := master.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		if runErr != nil {
			t.Fatal(runErr)
		}
		return text
	}
	dir := copySet(t, filepath.Join(fixtureDir, "counter"))
	if got := drawn("encrypt", "-D", dir, "--cert", keyPath("bob-p256.crt")); !strings.Contains(got, "encrypting") {
		t.Errorf("no progress bar on a terminal: %q", got)
	}
	if got := drawn("verify", "-q", "-D", dir, "--tls-key", keyPath("bob-p256.key")); got != "" {
		t.Errorf("--quiet drew %q", got)
	}
	if p, _ := newProgress(&strings.Builder{}, false, "x"); p != nil {
		t.Error("a progress bar for a buffer")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if p, _ := newProgress(w, false, "x"); p != nil {
		t.Error("a progress bar for a pipe")
	}
}

// openPTY opens a pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	// Non-blocking, so that os.File polls it and read deadlines work.
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	m := os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// buildImgtool builds the real binary once per test binary run.
func buildImgtool(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool to build imgtool")
	}
	bin := filepath.Join(t.TempDir(), "imgtool")
	// The tag leaves out urfave/cli's man and markdown generators, as make build does.
	cmd := exec.Command("go", "build", "-tags", "urfave_cli_no_docs", "-o", bin, "../cmd/imgtool")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestFileCommandsOnEncryptedSets: decode, info and show read a file of an
// encrypted set given its key, with the same output as for the plain file; without
// a key, or with the header gone, they say why not.
func TestFileCommandsOnEncryptedSets(t *testing.T) {
	plain := filepath.Join(fixtureDir, "misc")
	enc := encryptedFixture(t, "misc", "carol-p384.crt")
	key := keyPath("carol-p384.key")
	checked := 0
	for _, name := range sortedKeys(rawSums(t, plain)) {
		for _, cmd := range [][]string{{"decode", "-i"}, {"decode", "--pretty", "-i"}, {"info"}, {"show"}} {
			want, _, werr := runApp(t, append(slices.Clone(cmd), filepath.Join(plain, name))...)
			got, _, err := runApp(t, append(slices.Clone(cmd), filepath.Join(enc, name), "--tls-key", key)...)
			if (werr == nil) != (err == nil) || got != want {
				t.Errorf("%v %s: encrypted gives %q (%v), plain %q (%v)", cmd, name, got, err, want, werr)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no file checked")
	}
	_, _, err := runApp(t, "decode", "-i", filepath.Join(enc, "pstree.img"))
	if !fileExists(defaultKeyPath) {
		wantErr(t, err, ExitError, imgset.ErrKeyRequired, "is encrypted", testFingerprint(t, "carol-p384"), "--tls-key")
	}
	_, _, err = runApp(t, "info", filepath.Join(plain, "pstree.img"), "--require-encrypted")
	wantErr(t, err, ExitError, imgset.ErrNotEncrypted, "not encrypted")
	lone := filepath.Join(t.TempDir(), "pstree.img")
	data, err := os.ReadFile(filepath.Join(enc, "pstree.img"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(lone, data, 0o600)
	_, _, err = runApp(t, "show", lone, "--tls-key", key)
	wantErr(t, err, ExitError, imgset.ErrHeaderMissing, "header", "not beside it")
}
