package imgtool

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// startCounter compiles the fixtures' counter and launch programs, starts counter detached
// (so the test process is not its parent) holding canary, and returns its pid.
func startCounter(t *testing.T, canary string) int {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("dump needs root")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not found")
	}
	src := filepath.Join("..", "fixtures", "src")
	bin := t.TempDir()
	for _, p := range []string{"counter", "launch"} {
		if out, err := exec.Command("gcc", "-O1", "-o", filepath.Join(bin, p), filepath.Join(src, p+".c")).CombinedOutput(); err != nil {
			t.Fatalf("gcc %s: %v\n%s", p, err, out)
		}
	}
	log := filepath.Join(t.TempDir(), "counter.log")
	out, err := exec.Command(filepath.Join(bin, "launch"), log, filepath.Join(bin, "counter"), canary).Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("launch printed %q", out)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(log); bytes.Contains(b, []byte("secret_str=")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("counter did not start")
		}
	}
	return pid
}

// grepSet reports the files of dir that contain s.
func grepSet(t *testing.T, dir, s string) []string {
	t.Helper()
	var hits []string
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(s)) {
			hits = append(hits, filepath.Base(n))
		}
	}
	return hits
}

func TestDumpCommandEncrypted(t *testing.T) {
	const canary = "IMGTOOL-SECRET-CANARY-dumpe2e7"
	pid := startCounter(t, "dumpe2e7")
	certPEM, keyPEM, err := cipher.Keygen(cipher.KeygenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	cert, key := filepath.Join(keys, "cert.pem"), filepath.Join(keys, "key.pem")
	os.WriteFile(cert, certPEM, 0o600)
	os.WriteFile(key, keyPEM, 0o600)
	dir := filepath.Join(t.TempDir(), "ckpt")
	if _, _, err := runApp(t, "dump", "-t", strconv.Itoa(pid), "-D", dir, "-e", "--cert", cert, "--leave-running", "--quiet"); err != nil {
		t.Fatalf("dump -e: %v", err)
	}
	if hits := grepSet(t, dir, canary); len(hits) > 0 {
		t.Errorf("canary in plaintext in %v", hits)
	}
	if hits := grepSet(t, dir, "counter"); len(hits) > 0 {
		t.Errorf("the program's name in plaintext in %v", hits)
	}
	// The canary is in the set: decrypting with the key finds it in the pages.
	id, err := cipher.ReadIdentity(key)
	if err != nil {
		t.Fatal(err)
	}
	set, err := imgset.Open(dir, imgset.OpenOptions{Identities: []cipher.Identity{id}, RequireEncrypted: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := set.Open("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil || !bytes.Contains(b, []byte(canary)) {
		t.Errorf("decrypted pages (%d bytes, %v) lack the canary", len(b), err)
	}
	if syscall.Kill(pid, 0) != nil {
		t.Errorf("--leave-running: process %d is gone", pid)
	}
}

func TestDumpCommandPlain(t *testing.T) {
	pid := startCounter(t, "plainab12")
	dir := filepath.Join(t.TempDir(), "ckpt")
	out, _, err := runApp(t, "dump", "-t", strconv.Itoa(pid), "-D", dir)
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	if !regexp.MustCompile(`dumped process tree \d+ to .* \(plaintext\): \d+ files`).MatchString(out) {
		t.Errorf("summary %q", out)
	}
	if hits := grepSet(t, dir, "IMGTOOL-SECRET-CANARY-plainab12"); len(hits) != 1 || hits[0] != "pages-1.img" {
		t.Errorf("canary found in %v, want pages-1.img", hits)
	}
	time.Sleep(50 * time.Millisecond)
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && !bytes.Contains(b, []byte(") Z")) {
		t.Errorf("process %d still running after a dump without --leave-running", pid)
	}
}

func TestDumpCommandUsage(t *testing.T) {
	for _, args := range [][]string{
		{"dump", "-D", t.TempDir()},
		{"dump", "-t", "1"},
		{"dump", "-t", "1", "-D", t.TempDir(), "--cert", "x.pem"},
		{"dump", "-t", "1", "-D", t.TempDir(), "extra"},
		{"dump", "-t", "1", "-D", t.TempDir(), "--ghost-limit", "1X"},
		{"dump", "-t", "1", "-D", t.TempDir(), "--ghost-limit", "-5"},
	} {
		if _, _, err := runApp(t, args...); ExitCode(err) != ExitUsage {
			t.Errorf("%v: exit %d (%v), want %d", args, ExitCode(err), err, ExitUsage)
		}
	}
	// A process that does not exist: a one-line error, no set.
	dir := filepath.Join(t.TempDir(), "ckpt")
	_, _, err := runApp(t, "dump", "-t", "999999999", "-D", dir)
	if ExitCode(err) != ExitError || strings.Contains(err.Error(), "\n") {
		t.Errorf("missing process: exit %d, %v", ExitCode(err), err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("a set was left for a failed dump")
	}
}

// TestParseGhostLimit: --ghost-limit as CRIU reads it, a size in bytes or with a K, M or G
// suffix; 0 allows no ghost content at all (-1 for dump.Options), no flag the default.
func TestParseGhostLimit(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": -1, "4096": 4096, "64K": 64 << 10, "2M": 2 << 20, "1G": 1 << 30, "3m": 3 << 20} {
		if got, err := parseGhostLimit(in); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"M", "1.5M", "-1", "1T", "99999999999G", " 1M"} {
		if _, err := parseGhostLimit(bad); ExitCode(err) != ExitUsage {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
}

// TestExtUnixSkFlag: --ext-unix-sk of dump and restore takes CRIU's forms: alone (-x too),
// or =INO,... with socket inodes (empty items skipped, as criu skips them; 0 and anything
// not a decimal number refused as usage errors); it takes no separate argument, so the
// word after it stays the command's.
func TestExtUnixSkFlag(t *testing.T) {
	for _, c := range []struct {
		in   string
		on   bool
		inos []uint32
	}{
		{"true", true, nil}, {"false", false, nil}, {"7", true, []uint32{7}},
		{"12,34", true, []uint32{12, 34}}, {",5,,6,5,", true, []uint32{5, 6}}, {"4294967295", true, []uint32{4294967295}},
	} {
		var e extUnixSk
		if err := e.Set(c.in); err != nil || e.on != c.on || !slices.Equal(e.inos, c.inos) {
			t.Errorf("%q: on %v inodes %v (%v), want %v %v", c.in, e.on, e.inos, err, c.on, c.inos)
		}
	}
	for _, bad := range []string{"0", "abc", "1,x", "-1", "4294967296", " 1", "1 "} {
		var e extUnixSk
		if err := e.Set(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
	missing := filepath.Join(t.TempDir(), "none")
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"dump", "-t", "1", "-D", t.TempDir(), "--ext-unix-sk=abc"}, ExitUsage},
		{[]string{"dump", "-t", "1", "-D", t.TempDir(), "-x=0"}, ExitUsage},
		{[]string{"restore", "-D", missing, "--ext-unix-sk=1,y"}, ExitUsage},
		// The set after the flag is the set, not the flag's value: a missing set, not a usage error.
		{[]string{"restore", "--ext-unix-sk", missing}, ExitError},
		{[]string{"restore", missing, "-x"}, ExitError},
		{[]string{"restore", "--ext-unix-sk=5,6", missing}, ExitError},
	} {
		_, _, err := runApp(t, c.args...)
		if ExitCode(err) != c.code || (c.code == ExitError && !strings.Contains(err.Error(), "none")) {
			t.Errorf("%v: exit %d (%v), want %d", c.args, ExitCode(err), err, c.code)
		}
	}
}
