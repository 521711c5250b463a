package imgtool

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imgtool/imgtool/internal/testproc"
	"github.com/imgtool/imgtool/stream"
)

func TestStreamUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"stream", "capture"},
		{"stream", "capture", "-D", dir, "extra"},
		{"stream", "capture", "-D", dir, "--ready-fd", "1"},
		{"stream", "capture", "-D", dir, "--cert", "c.pem"},
		{"stream", "serve"},
		{"stream", "serve", "-D", dir, "--ready-fd", "0"},
		{"stream", "serve", "-D", dir, "--nope"},
	} {
		_, _, err := runApp(t, args...)
		if ExitCode(err) != ExitUsage || err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: exit %d (%v), want %d and one line", args, ExitCode(err), err, ExitUsage)
		}
	}
}

func TestStreamHelp(t *testing.T) {
	for _, cmd := range []string{"capture", "serve"} {
		out, _, err := runApp(t, "stream", cmd, "--help")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"criu dump --stream", "criu restore --stream", "--ready-fd", "ready", "Exit codes"} {
			if !strings.Contains(out, want) {
				t.Errorf("stream %s --help lacks %q", cmd, want)
			}
		}
	}
}

// TestStreamServeMissingSet: a set that cannot be opened fails before the
// socket exists, so that CRIU fails at once too.
func TestStreamServeMissingSet(t *testing.T) {
	dir := t.TempDir()
	_, _, err := runApp(t, "stream", "serve", "-D", dir, "-i", filepath.Join(dir, "none"))
	if ExitCode(err) != ExitError {
		t.Errorf("exit %d (%v), want %d", ExitCode(err), err, ExitError)
	}
	if _, err := os.Lstat(filepath.Join(dir, stream.ServeSocket)); err == nil {
		t.Error("the socket exists although nothing can be served")
	}
}

// TestStreamCaptureInterrupted: SIGTERM in the middle of a transfer cuts the
// sender off, leaves no set, says so in one line and exits 1.
func TestStreamCaptureInterrupted(t *testing.T) {
	set := filepath.Join(t.TempDir(), "set")
	cmd, stderr, conn := startCapture(t, "-o", set)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.WriteRequest("pages-1.img"); err != nil {
		t.Fatal(err)
	}
	if err := conn.SendPipe(pr); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	if _, err := pw.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != ExitError {
		t.Fatalf("exit: %v, want %d", err, ExitError)
	}
	msg := strings.TrimSpace(stderr.String())
	if lines := strings.Split(msg, "\n"); len(lines) != 1 || !strings.Contains(msg, "SIGTERM") || !strings.Contains(msg, "no set") {
		t.Errorf("stderr: %q, want one line naming SIGTERM and saying no set was left", msg)
	}
	if _, err := pw.Write(make([]byte, 1<<20)); err == nil {
		t.Error("the sender's pipe still takes data after the interruption")
	}
	pw.Close()
	if _, err := os.Stat(set); err == nil {
		t.Error("a set was left")
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(set), ".*")); len(left) > 0 {
		t.Errorf("leftovers beside the set: %v", left)
	}
}

// TestStreamCaptureSigned: capture -e with --sign-key and --sign-cert signs the set it
// writes (a fake CRIU sends a real set's files, inventory.img last): verify with the
// signer as trust anchor says who signed it, and with another anchor refuses it; -o -
// with signing is a usage error.
func TestStreamCaptureSigned(t *testing.T) {
	tmp := t.TempDir()
	cert, key := writeKeyPair(t, tmp, "owner")
	signCert, signKey := writeSigner(t, tmp, "ops")
	otherCert, _ := writeSigner(t, tmp, "other")
	if _, _, err := runApp(t, "stream", "capture", "-D", tmp, "-o", "-", "--sign-key", signKey, "--sign-cert", signCert); ExitCode(err) != ExitUsage {
		t.Errorf("-o - with --sign-key: exit %d (%v), want %d", ExitCode(err), err, ExitUsage)
	}
	set := filepath.Join(t.TempDir(), "set")
	cmd, stderr, conn := startCapture(t, "-o", set, "-e", "--cert", cert, "--sign-key", signKey, "--sign-cert", signCert, "-q")
	src := restoreFixtureSet(t, "counter")
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != stream.Inventory {
			names = append(names, e.Name())
		}
	}
	for _, name := range append(names, stream.Inventory) {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.WriteRequest(name); err != nil {
			t.Fatal(err)
		}
		if err := conn.SendPipe(pr); err != nil {
			t.Fatal(err)
		}
		pr.Close()
		if _, err := pw.Write(data); err != nil {
			t.Fatal(err)
		}
		pw.Close()
	}
	conn.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("capture: %v %s", err, stderr)
	}
	out, _, err := runApp(t, "verify", set, "--tls-key", key, "--trust", signCert)
	if err != nil || !strings.Contains(out, "ops") {
		t.Fatalf("verify with the signer trusted: %v %q, want it named", err, out)
	}
	if _, _, err := runApp(t, "verify", set, "--tls-key", key, "--trust", otherCert); ExitCode(err) != ExitVerify {
		t.Errorf("verify trusting another signer: exit %d (%v), want %d", ExitCode(err), err, ExitVerify)
	}
}

// startCapture runs the real binary's stream capture on a new folder with args, waits
// for its ready line, and connects to it as CRIU would.
func startCapture(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer, *stream.Conn) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(testproc.BuildImgtool(t), append([]string{"stream", "capture", "-D", dir, "--ready-fd", "3"}, args...)...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(bytes.Buffer)
	cmd.ExtraFiles, cmd.Stderr = []*os.File{w}, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, _ := bufio.NewReader(r).ReadString('\n'); line != "ready\n" {
		t.Fatalf("no ready line: %q %s", line, stderr)
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: filepath.Join(dir, stream.CaptureSocket), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	return cmd, stderr, stream.NewConn(c)
}
