package imgtool

// Interruptions of the real binary writing an archive: rekey of an encrypted
// archive (header only, and --rotate), encrypt -o and decrypt -o of one. Each
// writes one temporary file beside its target (tempfile.go) and renames it into
// place. A signal is sent when that file first reaches a given size: as soon as
// it exists, at a third and two thirds of the output, and once whole (between
// the last write and the rename). After SIGKILL the target is the old one or the
// new one, whole (it decrypts to the original archive); what the killed run left
// is its temporary file at most, which the next run writing the target removes,
// saying so in one line. After SIGINT or SIGTERM the run has removed its
// temporary file and says so in one line, exit 1, the target as it was (or the
// run had finished). A temporary file of a run still alive is never taken for a
// dead one.

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// archiveOp is one archive command under interruption.
type archiveOp struct {
	name, cmd string
	inPlace   bool // rewrites a copy of the encrypted archive; else writes "out.tar"
	args      func(target string) []string
	isNew     func(t *testing.T, target string) error
	plaintext bool // its temporary file holds the original archive
}

// archiveFixture is what the archive interruptions share.
type archiveFixture struct {
	bin, work string
	orig      string // a container checkpoint archive of about 32 MiB
	sealed    string // orig encrypted for alice
	origData  []byte
}

// TestInterruptedArchiveCommands: SIGKILL, then the next run, and SIGINT and
// SIGTERM, at points of each archive command's write; then a live run's
// temporary file left alone by another run on the same target.
func TestInterruptedArchiveCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and interrupts a real imgtool about 40 times")
	}
	f := newArchiveFixture(t)
	for _, op := range f.ops() {
		t.Run(op.name, func(t *testing.T) {
			target := f.target(t, op)
			full := runToTemp(t, f.bin, op.args(target), op, -1, 0, nil)
			if full.code != 0 || full.stderr != "" {
				t.Fatalf("full run: exit %d: %s", full.code, full.stderr)
			}
			size := fileSize(t, target) // the temporary file, renamed
			points := []int64{0, size / 3, 2 * size / 3, size}
			t.Run("SIGKILL", func(t *testing.T) { f.killThenRerun(t, op, points) })
			t.Run("SIGINT-SIGTERM", func(t *testing.T) { f.interrupt(t, op, points[1:]) })
		})
	}
	t.Run("live-temporary-file", f.liveTempStays)
}

func newArchiveFixture(t *testing.T) *archiveFixture {
	t.Helper()
	f := &archiveFixture{bin: buildImgtool(t), work: t.TempDir()}
	f.orig = filepath.Join(f.work, "ctr.tar")
	f.origData = bigArchive(t, f.orig)
	f.sealed = filepath.Join(f.work, "ctr.sealed.tar")
	run(t, f.bin, "encrypt", "-q", f.orig, "-o", f.sealed, "--cert", keyPath("alice-rsa2048.crt"))
	return f
}

// bigArchive writes the fixture archive with a 32 MiB member of pseudo-random
// pages added, so that a run lasts long enough to be stopped midway, and returns
// its bytes.
func bigArchive(t *testing.T, path string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(bytes.NewReader(mustRead(t, podmanArchive)))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		tw.WriteHeader(h)
		tw.Write(data)
	}
	pages := make([]byte, 32<<20)
	rand.NewChaCha8([32]byte{'a', 'r', 'c', 'h', 'i', 'v', 'e'}).Read(pages)
	tw.WriteHeader(&tar.Header{Name: "checkpoint/pages-9.img", Mode: 0o600, Size: int64(len(pages)), Typeflag: tar.TypeReg})
	tw.Write(pages)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (f *archiveFixture) ops() []archiveOp {
	alice, bob := keyPath("alice-rsa2048.key"), keyPath("bob-p256.key")
	// Bob can read it: the new archive, for every op that rewrites it (the
	// old one is alice's only).
	bobReads := func(t *testing.T, target string) error { return f.decryptsToOrig(t, target, bob) }
	return []archiveOp{
		{name: "rekey", cmd: "rekey", inPlace: true, isNew: bobReads,
			args: func(target string) []string {
				return []string{"rekey", "-q", target, "--tls-key", alice, "--cert", keyPath("bob-p256.crt")}
			}},
		{name: "rekey-rotate", cmd: "rekey", inPlace: true, isNew: bobReads,
			args: func(target string) []string {
				// alice stays a recipient, so that the same command runs again on
				// either archive.
				return []string{"rekey", "-q", target, "--tls-key", alice, "--rotate",
					"--cert", keyPath("alice-rsa2048.crt"), "--cert", keyPath("bob-p256.crt")}
			}},
		{name: "encrypt-o", cmd: "encrypt",
			args: func(target string) []string {
				return []string{"encrypt", "-q", f.orig, "-o", target, "--cert", keyPath("bob-p256.crt")}
			},
			isNew: bobReads},
		{name: "decrypt-o", cmd: "decrypt", plaintext: true,
			args: func(target string) []string {
				return []string{"decrypt", "-q", f.sealed, "-o", target, "--tls-key", alice}
			},
			isNew: func(t *testing.T, target string) error {
				if !bytes.Equal(mustRead(t, target), f.origData) {
					return fmt.Errorf("%s is not the original archive", target)
				}
				return nil
			}},
	}
}

// decryptsToOrig checks that key decrypts the archive at path to the original.
func (f *archiveFixture) decryptsToOrig(t *testing.T, path, key string) error {
	t.Helper()
	out := filepath.Join(t.TempDir(), "back.tar")
	if _, stderr, code := runBin(t, f.bin, "decrypt", "-q", path, "-o", out, "--tls-key", key); code != 0 {
		return fmt.Errorf("decrypt %s with %s: exit %d: %s", filepath.Base(path), filepath.Base(key), code, stderr)
	}
	if !bytes.Equal(mustRead(t, out), f.origData) {
		return fmt.Errorf("%s does not decrypt to the original archive", path)
	}
	return nil
}

// target makes a fresh folder and returns the target of op in it: a copy of the
// encrypted archive for rekey, else the name of the output.
func (f *archiveFixture) target(t *testing.T, op archiveOp) string {
	t.Helper()
	dir, err := os.MkdirTemp(f.work, "run-")
	if err != nil {
		t.Fatal(err)
	}
	if !op.inPlace {
		return filepath.Join(dir, "out.tar")
	}
	target := filepath.Join(dir, "ctr.sealed.tar")
	if err := os.WriteFile(target, mustRead(t, f.sealed), 0o640); err != nil {
		t.Fatal(err)
	}
	return target
}

// checkOldOrNew checks that target is the old one (a copy of the encrypted
// archive, or nothing) or the new one, whole, and says which.
func (f *archiveFixture) checkOldOrNew(t *testing.T, op archiveOp, target, where string) string {
	t.Helper()
	data, err := os.ReadFile(target)
	switch {
	case op.inPlace && bytes.Equal(data, mustRead(t, f.sealed)):
		return "old"
	case !op.inPlace && os.IsNotExist(err):
		return "old"
	}
	if err := op.isNew(t, target); err != nil {
		t.Errorf("%s: neither the old archive nor the new one: %v", where, err)
		return "broken"
	}
	return "new"
}

// archiveRun is how a run under a signal ended.
type archiveRun struct {
	killed bool // died of the signal
	code   int
	stderr string
}

// runToTemp runs imgtool with args (op's command) and sends it sig once the
// temporary file of its target first holds at least at bytes (at 0: once it
// exists; at < 0: never). With stopped not nil, it sends SIGSTOP instead, calls
// stopped with the process stopped, then lets it go on (SIGCONT).
func runToTemp(t *testing.T, bin string, args []string, op archiveOp, at int64, sig syscall.Signal, stopped func(*exec.Cmd)) archiveRun {
	t.Helper()
	target := targetOf(op, args)
	w := newTempWatch(t, filepath.Dir(target))
	defer w.close()
	var stderr strings.Builder
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var res archiveRun
	sent := false
	for done := false; !done; {
		select {
		case <-exited:
			done = true
		default:
		}
		w.wait(2 * time.Millisecond)
		for _, tmp := range tempsBeside(target) {
			st, err := os.Stat(tmp)
			if err != nil {
				continue
			}
			if !sent && at >= 0 && st.Size() >= at {
				sent = true
				if stopped != nil {
					cmd.Process.Signal(syscall.SIGSTOP)
					stopped(cmd)
					cmd.Process.Signal(syscall.SIGCONT)
				} else {
					cmd.Process.Signal(sig)
				}
			}
		}
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		res.killed = true
	}
	res.code, res.stderr = cmd.ProcessState.ExitCode(), stderr.String()
	return res
}

// targetOf is the file op writes with args: the archive rekeyed, or -o's.
func targetOf(op archiveOp, args []string) string {
	for i, a := range args {
		if a == "-o" {
			return args[i+1]
		}
	}
	return args[2] // rekey -q TARGET
}

// killThenRerun kills op at each point with SIGKILL: the target is old or new,
// whole, and the next run removes the temporary file left, if any, saying so.
func (f *archiveFixture) killThenRerun(t *testing.T, op archiveOp, points []int64) {
	leftovers := 0
	for i := 0; i < len(points); i++ {
		at := points[i]
		target := f.target(t, op)
		res := runToTemp(t, f.bin, op.args(target), op, at, syscall.SIGKILL, nil)
		where := fmt.Sprintf("SIGKILL at %d bytes", at)
		if !res.killed {
			t.Logf("%s: the run ended before the kill (exit %d)", where, res.code)
		}
		state := f.checkOldOrNew(t, op, target, where)
		left := tempsBeside(target)
		if len(left) > 1 || len(left) == 1 && state != "old" {
			t.Errorf("%s: %s archive, and left %v", where, state, left)
		}
		if op.plaintext && len(left) == 1 {
			t.Logf("%s: the killed decrypt left %d bytes of plaintext in %s", where, fileSize(t, left[0]), filepath.Base(left[0]))
		}
		_, stderr, code := runBin(t, f.bin, op.args(target)...)
		if code != 0 {
			t.Fatalf("%s: the next run: exit %d: %s", where, code, stderr)
		}
		want := ""
		if len(left) == 1 {
			leftovers++
			want = fmt.Sprintf("imgtool: removed what interrupted earlier runs left beside %s: %s\n", target, left[0])
		}
		if stderr != want {
			t.Errorf("%s: the next run said %q, want %q", where, stderr, want)
		}
		if err := op.isNew(t, target); err != nil {
			t.Errorf("%s: after the next run: %v", where, err)
		}
		if ents, _ := os.ReadDir(filepath.Dir(target)); len(ents) != 1 {
			t.Errorf("%s: after the next run the folder holds %d entries, want the target only", where, len(ents))
		}
		// The first point, as soon as the file exists, leaves it unless this
		// machine wrote the whole archive before the kill reached it: try again.
		if i == len(points)-1 && leftovers == 0 && len(points) < 8 {
			points = append(points, 0)
		}
	}
	if leftovers == 0 {
		t.Errorf("no kill left a temporary file (%d tries): the cleanup was not exercised", len(points))
	}
}

// interrupt sends SIGINT and SIGTERM (in turn) at each point: the run stops
// with one line and removes its temporary file, or it had finished.
func (f *archiveFixture) interrupt(t *testing.T, op archiveOp, points []int64) {
	signals := []syscall.Signal{syscall.SIGINT, syscall.SIGTERM}
	outcomes := map[string]int{}
	for i, at := range points {
		sig := signals[i%len(signals)]
		target := f.target(t, op)
		res := runToTemp(t, f.bin, op.args(target), op, at, sig, nil)
		where := fmt.Sprintf("%v at %d bytes", sig, at)
		state := f.checkOldOrNew(t, op, target, where)
		switch {
		case res.killed:
			t.Errorf("%s: the process died of the signal instead of handling it", where)
		case res.code == 0:
			outcomes["finished"]++
			if state != "new" || res.stderr != "" {
				t.Errorf("%s: exit 0 with the %s archive: %q", where, state, res.stderr)
			}
		case res.code == 1:
			outcomes["stopped"]++
			f.checkStopped(t, op, where, sig, target, state, res.stderr)
		default:
			t.Errorf("%s: exit %d: %s", where, res.code, res.stderr)
		}
		if left := tempsBeside(target); len(left) > 0 {
			t.Errorf("%s: left %v", where, left)
		}
	}
	t.Logf("%s: %v", op.name, outcomes)
}

// checkStopped checks a run stopped by sig: one line that names the command,
// the signal and the temporary file removed (and, in place, the archive
// unchanged), and the old archive.
func (f *archiveFixture) checkStopped(t *testing.T, op archiveOp, where string, sig syscall.Signal, target, state, stderr string) {
	t.Helper()
	m := interruptedLine.FindStringSubmatch(stderr)
	switch {
	case m == nil:
		t.Errorf("%s: exit 1 with %q, want the one line of an interruption", where, stderr)
	case m[1] != op.cmd || m[2] != signalName(sig):
		t.Errorf("%s: %q names the wrong command or signal", where, stderr)
	case m[3] == "" || filepath.Dir(m[3]) != filepath.Dir(target):
		t.Errorf("%s: %q does not name the temporary file removed", where, stderr)
	case op.inPlace && m[4] != target:
		t.Errorf("%s: %q does not say %s is unchanged", where, stderr, target)
	}
	if state != "old" {
		t.Errorf("%s: stopped, but the archive is the %s one", where, state)
	}
}

// liveTempStays: an encrypt -o stopped (SIGSTOP) once it has written into its
// temporary file is alive: a second run writing the same target must leave that
// file alone, and the first, continued, finishes. (Once written into: the file
// is locked from before its first write; stopped between its creation and its
// lock, the first run would find it gone and make another, which the test would
// take for a removed live file.)
func (f *archiveFixture) liveTempStays(t *testing.T) {
	op := f.ops()[2] // encrypt-o
	stopped := false
	for try := 0; try < 5 && !stopped; try++ {
		target := f.target(t, op)
		res := runToTemp(t, f.bin, op.args(target), op, 1, 0, func(first *exec.Cmd) {
			stopped = true
			live := tempsBeside(target)
			if len(live) != 1 {
				t.Errorf("the stopped run's temporary files: %v", live)
				return
			}
			_, stderr, code := runBin(t, f.bin, op.args(target)...)
			if code != 0 || strings.Contains(stderr, "removed") {
				t.Errorf("a second run while the first is stopped: exit %d: %q", code, stderr)
			}
			if _, err := os.Stat(live[0]); err != nil {
				t.Errorf("the live run's temporary file was removed: %v", err)
			}
		})
		if res.killed || res.code != 0 {
			t.Fatalf("the first run, continued: exit %d: %s", res.code, res.stderr)
		}
		if err := op.isNew(t, target); err != nil {
			t.Error(err)
		}
		if left := tempsBeside(target); len(left) > 0 {
			t.Errorf("left %v", left)
		}
	}
	if !stopped {
		t.Error("no run was stopped before it finished (5 tries): nothing was checked")
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// tempWatch wakes runToTemp on every file created or written in a folder, so
// that it looks at the temporary file's size when it changes, not on a timer.
type tempWatch struct{ f *os.File }

func newTempWatch(t *testing.T, dir string) *tempWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MODIFY|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	return &tempWatch{f: os.NewFile(uintptr(fd), "inotify")}
}

// wait returns once events arrived (taking all those queued), or after d.
func (w *tempWatch) wait(d time.Duration) {
	buf := make([]byte, 16<<10)
	for deadline := time.Now().Add(d); ; deadline = time.Now() {
		w.f.SetReadDeadline(deadline)
		if _, err := w.f.Read(buf); err != nil {
			return
		}
	}
}

func (w *tempWatch) close() { w.f.Close() }
