package restore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/internal/testproc"
	"github.com/imgtool/imgtool/internal/testset"
)

// testKey makes a new key pair: the recipients to encrypt a set for and the identity that
// opens it.
func testKey(t *testing.T) ([]cipher.Recipient, cipher.Identity) {
	t.Helper()
	certPEM, keyPEM, err := cipher.Keygen(cipher.KeygenOptions{CommonName: "restore test"})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := cipher.ParseRecipients(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	var rs []cipher.Recipient
	for _, c := range certs {
		rs = append(rs, c)
	}
	id, err := cipher.ParseIdentity(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return rs, id
}

// grepSet tells whether any file of the set folder holds s.
func grepSet(t *testing.T, dir, s string) bool {
	t.Helper()
	for _, b := range testset.ReadAll(t, dir) {
		if bytes.Contains(b, []byte(s)) {
			return true
		}
	}
	return false
}

// TestRoundTripEncrypted dumps the counter into an encrypted set, restores it with the
// key, and checks that it carries on with its memory intact.
func TestRoundTripEncrypted(t *testing.T) {
	requireRoot(t)
	recipients, id := testKey(t)
	tag := fmt.Sprintf("enc%d", time.Now().UnixNano())
	canary := "IMGTOOL-SECRET-CANARY-" + tag
	p := launchFixture(t, "counter", "counter=2\n", tag)
	log := p.Log
	dir := dumpTo(t, p.Pid, recipients...)
	if !fileExists(filepath.Join(dir, imgset.HeaderName)) {
		t.Fatal("the dump wrote no sealed header")
	}
	if grepSet(t, dir, canary) || grepSet(t, dir, "PAGE0000") {
		t.Fatal("the encrypted set holds plaintext of the process's memory")
	}
	before := setSums(t, dir)
	last := lastCounter(t, log)
	off := fileSize(t, log)
	pids := restoreSet(t, dir, Options{}, id)
	testproc.WaitFor(t, 5*time.Second, "counter output", func() bool {
		return strings.Count(testproc.LogAfter(t, log, off), "\n") >= 2
	})
	if got, want := strings.Split(testproc.LogAfter(t, log, off), "\n")[0], fmt.Sprintf("counter=%d", last+1); got != want {
		t.Fatalf("restored counter printed %q, want %q", got, want)
	}
	if !grepMemory(t, pids[0], canary) {
		t.Error("the canary is not in the restored process's memory")
	}
	if after := setSums(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Error("the image set changed during restore")
	}
}

// lastCounter returns the last "counter=N" a counter printed.
func lastCounter(t *testing.T, log string) int {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var n int
	if _, err := fmt.Sscanf(lines[len(lines)-1], "counter=%d", &n); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	return n
}

func fileSize(t *testing.T, name string) int64 {
	t.Helper()
	st, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// encryptCopy returns an encrypted copy of a set.
func encryptCopy(t *testing.T, dir string, recipients []cipher.Recipient) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(dir)+"-enc")
	if err := imgset.Encrypt(dir, imgset.EncryptOptions{Recipients: recipients, Output: out}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRestoreCRIUEncrypted restores an encrypted copy of the real CRIU tree set.
func TestRestoreCRIUEncrypted(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "tree")
	recipients, id := testKey(t)
	dir := encryptCopy(t, criuSet(t, "tree"), recipients)
	log := fixtureRoot + "/run/tree/tree.log"
	off := savedPos(t, criuSet(t, "tree"), log)
	pids := restoreSet(t, dir, Options{}, id)
	testproc.WaitFor(t, 5*time.Second, "output of the whole tree", func() bool {
		out := testproc.LogAfter(t, log, off)
		return strings.Contains(out, fmt.Sprintf("parent pid=%d ", pids[0])) &&
			strings.Contains(out, fmt.Sprintf("child0 pid=%d ppid=%d", pids[1], pids[0])) &&
			strings.Contains(out, fmt.Sprintf("child1 pid=%d ppid=%d", pids[2], pids[0]))
	})
}

// TestRefuseEncryptedWithoutRightKey: an encrypted set does not open without a key or with
// another one, so nothing is restored.
func TestRefuseEncryptedWithoutRightKey(t *testing.T) {
	recipients, _ := testKey(t)
	_, other := testKey(t)
	dir := encryptCopy(t, criuSet(t, "counter"), recipients)
	var kr *imgset.KeyRequiredError
	if _, err := imgset.Open(dir, imgset.OpenOptions{}); !errors.As(err, &kr) {
		t.Errorf("without a key: %v, want a KeyRequiredError", err)
	}
	if _, err := imgset.Open(dir, imgset.OpenOptions{Identities: []cipher.Identity{other}}); !errors.Is(err, cipher.ErrNoRecipient) {
		t.Errorf("with another key: %v, want ErrNoRecipient", err)
	}
	if _, err := imgset.Open(criuSet(t, "counter"), imgset.OpenOptions{RequireEncrypted: true}); !errors.Is(err, imgset.ErrNotEncrypted) {
		t.Errorf("plain set, encryption required: %v, want ErrNotEncrypted", err)
	}
}

// TestTamperedChunkKillsEverything damages one chunk in the middle of the last process's
// pages: the restore fails when it reaches it, after the whole tree exists, and kills
// every process it created.
func TestTamperedChunkKillsEverything(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "tree")
	recipients, id := testKey(t)
	src := criuSet(t, "tree")
	dir := encryptCopy(t, src, recipients)
	pids := treePids(t, src)
	pm, err := image.NewPageMap(readImageFile(t, filepath.Join(src, fmt.Sprintf("pagemap-%d.img", pids[len(pids)-1]))))
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("pages-%d.img", pm.Head.GetPagesId())
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	b := []byte{0}
	if _, err := f.ReadAt(b, st.Size()/2); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, st.Size()/2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var progressed int64
	err = restoreErr(t, dir, Options{Progress: func(done, total int64) { progressed = done }}, id)
	if !errors.Is(err, cipher.ErrChunkAuth) || !strings.Contains(err.Error(), name) {
		t.Errorf("tampered chunk: %v, want a chunk authentication error naming %s", err, name)
	}
	if progressed == 0 {
		t.Error("the restore failed before writing any pages: the damage was not met midway")
	}
}
