package stream_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/internal/testproc"
)

// The tests with a real CRIU checkpoint and restore processes: root, and a
// CRIU 4.2 binary named by IMGTOOL_CRIU. Restored processes are orphans once
// CRIU exits: the test binary is their subreaper (testproc.Main) and reaps them.
func TestMain(m *testing.M) { os.Exit(testproc.Main(m)) }

const secret = "imgtool-stream-canary-7f3e9a51"

// criuBin returns IMGTOOL_CRIU, skipping the test without it.
func criuBin(t *testing.T) string { return testproc.CRIU(t) }

// streamer is a running imgtool stream command.
type streamer struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

// startStreamer runs imgtool with args and --ready-fd 3, and returns once the
// socket listens. stdin, if not nil, is its stdin; stdout, if not nil, its stdout.
func startStreamer(t *testing.T, stdin io.Reader, stdout io.Writer, args ...string) *streamer {
	t.Helper()
	s := &streamer{cmd: exec.Command(testproc.BuildImgtool(t), append(args, "--ready-fd", "3")...)}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s.cmd.ExtraFiles = []*os.File{w}
	s.cmd.Stdin, s.cmd.Stdout, s.cmd.Stderr = stdin, &s.stdout, &s.stderr
	if stdout != nil {
		s.cmd.Stdout = stdout
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait() })
	line, err := bufio.NewReader(r).ReadString('\n')
	if line != "ready\n" {
		s.cmd.Wait()
		t.Fatalf("imgtool %s: no ready line (%q, %v): %s", strings.Join(args, " "), line, err, &s.stderr)
	}
	return s
}

// wait returns the command's exit code.
func (s *streamer) wait(t *testing.T) int {
	t.Helper()
	err := s.cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

func criu(t *testing.T, args ...string) error {
	t.Helper()
	out, err := exec.Command(criuBin(t), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("criu %s: %v: %s", args[0], err, out)
	}
	return nil
}

// keys makes a recipient certificate and its key.
func keys(t *testing.T) (cert, key string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	out, err := exec.Command(testproc.BuildImgtool(t), "keygen", "--cert", cert, "--key", key, "--type", "p256").CombinedOutput()
	if err != nil {
		t.Fatalf("keygen: %v: %s", err, out)
	}
	return cert, key
}

// launchCanary starts the canary program and waits for its first count.
func launchCanary(t *testing.T) *testproc.Proc {
	t.Helper()
	bin := testproc.Build(t, "testdata/canary.c")
	p := testproc.Launch(t, bin, testproc.Options{}, secret)
	p.WaitLog(t, "count 2 ", 10*time.Second)
	return p
}

var countRE = regexp.MustCompile(`count (\d+) `)

// lastCount is the last counter value of the log.
func lastCount(t *testing.T, p *testproc.Proc) int {
	t.Helper()
	m := countRE.FindAllStringSubmatch(p.ReadLog(t), -1)
	if len(m) == 0 {
		t.Fatal("no count in the log")
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// dumpCaptured dumps p with criu dump --stream into capture (already ready).
func dumpCaptured(t *testing.T, p *testproc.Proc, dir string) error {
	t.Helper()
	err := criu(t, "dump", "--stream", "-D", dir, "-t", strconv.Itoa(p.Pid), "-o", "dump.log")
	if err == nil {
		testproc.WaitGone(t, []int{p.Pid}) // restored with the same PID
	}
	return err
}

// noSecretUnder fails if any file under the folders holds the canary.
func noSecretUnder(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		filepath.Walk(d, func(path string, info os.FileInfo, err error) error {
			if err != nil || !info.Mode().IsRegular() {
				return nil
			}
			if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds the canary in plaintext", path)
			}
			return nil
		})
	}
}

// restoreServed restores with criu restore --stream and checks the counter
// carries on.
func restoreServed(t *testing.T, p *testproc.Proc, dir string, before int) {
	t.Helper()
	if err := criu(t, "restore", "--stream", "-D", dir, "-d", "-o", "restore.log"); err != nil {
		t.Fatal(err)
	}
	testproc.WaitFor(t, 10*time.Second, "the counter to carry on", func() bool { return lastCount(t, p) > before+2 })
	if !strings.Contains(p.ReadLog(t), fmt.Sprintf("count %d ", before+1)) {
		t.Errorf("the counter did not continue from %d", before)
	}
}

// captureEncrypted dumps p with criu dump --stream into capture -e for cert and returns
// CRIU's folder and the set.
func captureEncrypted(t *testing.T, p *testproc.Proc, cert string) (dir, set string) {
	t.Helper()
	dir, set = t.TempDir(), filepath.Join(t.TempDir(), "set")
	capture := startStreamer(t, nil, nil, "stream", "capture", "-D", dir, "-o", set, "-e", "--cert", cert)
	if err := dumpCaptured(t, p, dir); err != nil {
		t.Fatal(err)
	}
	if code := capture.wait(t); code != 0 {
		t.Fatalf("capture: exit %d: %s", code, &capture.stderr)
	}
	return dir, set
}

// TestCRIUCaptureServeEncrypted: criu dump --stream into capture -e leaves no
// plaintext anywhere; serve gives it back to criu restore --stream and the
// process carries on.
func TestCRIUCaptureServeEncrypted(t *testing.T) {
	criuBin(t)
	cert, key := keys(t)
	p := launchCanary(t)
	dir, set := captureEncrypted(t, p, cert)
	before := lastCount(t, p)
	noSecretUnder(t, dir, set)
	serve := startStreamer(t, nil, nil, "stream", "serve", "-D", dir, "-i", set, "--tls-key", key)
	restoreServed(t, p, dir, before)
	if code := serve.wait(t); code != 0 {
		t.Fatalf("serve: exit %d: %s", code, &serve.stderr)
	}
}

// TestCRIUServeTampered: a flipped bit in a chunk of pages makes serve cut
// CRIU off: the restore fails, no process is left, serve exits 3 naming the file.
func TestCRIUServeTampered(t *testing.T) {
	criuBin(t)
	cert, key := keys(t)
	p := launchCanary(t)
	dir, set := captureEncrypted(t, p, cert)
	pages := filepath.Join(set, "pages-1.img")
	b, err := os.ReadFile(pages)
	if err != nil {
		t.Fatal(err)
	}
	b[cipher.PrefixSize+100] ^= 1
	os.WriteFile(pages, b, 0o600)
	serve := startStreamer(t, nil, nil, "stream", "serve", "-D", dir, "-i", set, "--tls-key", key)
	if err := criu(t, "restore", "--stream", "-D", dir, "-d", "-o", "restore.log"); err == nil {
		t.Fatal("criu restore succeeded with a tampered chunk")
	}
	code := serve.wait(t)
	if code != 3 || !strings.Contains(serve.stderr.String(), "pages-1.img") {
		t.Errorf("serve: exit %d, want 3 naming pages-1.img: %s", code, &serve.stderr)
	}
	time.Sleep(200 * time.Millisecond)
	if testproc.Alive(p.Pid) {
		t.Errorf("pid %d is running after a failed restore", p.Pid)
	}
}

// TestCRIUStreamPipe: capture -o - piped into serve -i -, the set only ever in
// the stream (encrypted).
func TestCRIUStreamPipe(t *testing.T) {
	criuBin(t)
	cert, key := keys(t)
	p := launchCanary(t)
	dir, rdir := t.TempDir(), t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	capture := startStreamer(t, nil, w, "stream", "capture", "-D", dir, "-o", "-", "-e", "--cert", cert)
	w.Close()
	// serve reads the whole stream before it listens: its ready line comes after the dump.
	served := make(chan *streamer, 1)
	go func() { served <- startStreamer(t, r, nil, "stream", "serve", "-D", rdir, "-i", "-", "--tls-key", key) }()
	if err := dumpCaptured(t, p, dir); err != nil {
		t.Fatal(err)
	}
	if code := capture.wait(t); code != 0 {
		t.Fatalf("capture: exit %d: %s", code, &capture.stderr)
	}
	serve := <-served
	r.Close()
	before := lastCount(t, p)
	restoreServed(t, p, rdir, before)
	if code := serve.wait(t); code != 0 {
		t.Fatalf("serve: exit %d: %s", code, &serve.stderr)
	}
	noSecretUnder(t, dir, rdir)
}

// TestCRIUCaptureFailedDump: a dump CRIU fails (a PID that is no process)
// leaves no set, and capture exits 1.
func TestCRIUCaptureFailedDump(t *testing.T) {
	criuBin(t)
	dir, set := t.TempDir(), filepath.Join(t.TempDir(), "set")
	capture := startStreamer(t, nil, nil, "stream", "capture", "-D", dir, "-o", set)
	if err := criu(t, "dump", "--stream", "-D", dir, "-t", "999999", "-o", "dump.log"); err == nil {
		t.Fatal("criu dump of no process succeeded")
	}
	if code := capture.wait(t); code != 1 {
		t.Errorf("capture: exit %d, want 1: %s", code, &capture.stderr)
	}
	if _, err := os.Stat(set); err == nil {
		t.Errorf("a set was left after a failed dump")
	}
}

// TestCRIUCapturePlain: criu dump --stream into a plaintext capture (each pipe
// spliced into its file) writes the set CRIU itself would: a plain criu restore
// from the set's folder brings the process back, and the summary gives the rate
// of the largest file.
func TestCRIUCapturePlain(t *testing.T) {
	criuBin(t)
	p := launchCanary(t)
	dir, set := t.TempDir(), filepath.Join(t.TempDir(), "set")
	capture := startStreamer(t, nil, nil, "stream", "capture", "-D", dir, "-o", set)
	if err := dumpCaptured(t, p, dir); err != nil {
		t.Fatal(err)
	}
	if code := capture.wait(t); code != 0 {
		t.Fatalf("capture: exit %d: %s", code, &capture.stderr)
	}
	if out := capture.stdout.String(); !strings.HasPrefix(out, "captured CRIU's dump to "+set+" (plaintext): ") {
		t.Errorf("capture said %q", out)
	}
	before := lastCount(t, p)
	if err := criu(t, "restore", "-D", set, "-d", "-o", "restore.log"); err != nil {
		t.Fatal(err)
	}
	testproc.WaitFor(t, 10*time.Second, "the counter to carry on", func() bool { return lastCount(t, p) > before+2 })
}
