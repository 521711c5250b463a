package imgtool

// Interruptions of the real binary. SIGINT, SIGTERM and SIGHUP are sent at points
// of encrypt -o, decrypt -o, in-place encrypt and decrypt, rekey (header only and
// --rotate) and decode -D on a set of about 33 MiB: after a given number of the
// filesystem events of the run (see runUntil), spread over its data phase and up
// to its commit, and after a delay. Each run must either finish (exit 0, the new
// set whole) or stop with exit 1 and one line that says what it removed, leaving
// nothing beside the target, the old set intact and, for decrypt, no plaintext
// anywhere under the parent folder. A SIGKILL cannot be caught: what it leaves
// must be removed by the next run writing the same target, which says so.

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/internal/testset"
)

// signalOp is one command under interruption.
type signalOp struct {
	name      string
	cmd       string // the command, as its messages name it
	inPlace   bool   // rewrites src in place (a copy of it); else writes the folder "out"
	src       string
	args      func(src, target string) []string
	isNew     func(t *testing.T, target string) error
	plaintext bool // writes plaintext: none may be left after an interruption
}

// interruptFixture is what the interruption tests share: the binary, the sets,
// and the needles that find the plaintext of the big set.
type interruptFixture struct {
	bin, work        string
	plainDir, encDir string
	plain            map[string]string
	needles          [][]byte
	srcSums          map[string]map[string]string // rawSums of the sources, by folder
}

// sums is rawSums(dir) of a source set, which never changes.
func (f *interruptFixture) sums(t *testing.T, dir string) map[string]string {
	if f.srcSums[dir] == nil {
		f.srcSums[dir] = rawSums(t, dir)
	}
	return f.srcSums[dir]
}

func newInterruptFixture(t *testing.T) *interruptFixture {
	t.Helper()
	f := &interruptFixture{bin: buildImgtool(t), work: t.TempDir(), srcSums: map[string]map[string]string{}}
	f.plainDir = filepath.Join(f.work, "plain")
	makeBigSet(t, f.plainDir)
	f.plain = rawSums(t, f.plainDir)
	f.encDir = filepath.Join(f.work, "enc")
	testset.CopyTo(t, f.plainDir, f.encDir)
	run(t, f.bin, "encrypt", "-q", "-D", f.encDir, "--cert", keyPath("alice-rsa2048.crt"))
	f.needles = plaintextNeedles(t, f.plainDir)
	return f
}

// plaintextNeedles returns the counter's canary and 24-byte windows of the
// random pages files: any of them in a file is plaintext of the set.
func plaintextNeedles(t *testing.T, dir string) [][]byte {
	t.Helper()
	needles := [][]byte{[]byte(knownCanaries[0])}
	for i := 2; i <= 4; i++ {
		data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("pages-%d.img", i)))
		if err != nil {
			t.Fatal(err)
		}
		for k := range 4 {
			off := k*len(data)/4 + 4096
			needles = append(needles, data[off:off+24])
		}
	}
	return needles
}

// plaintextUnder lists the files under root, except those under skip, that hold
// one of the needles.
func plaintextUnder(t *testing.T, root, skip string, needles [][]byte) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if skip != "" && path == skip {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(data, n) {
				hits = append(hits, path)
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

func (f *interruptFixture) ops(t *testing.T) []signalOp {
	alice := keyPath("alice-rsa2048.key")
	encryptedIsPlain := func(t *testing.T, dir string) error {
		got, err := plainSums(t, dir, alice)
		if err != nil {
			return err
		}
		if !equalSums(got, f.plain) {
			return fmt.Errorf("plaintext differs from the original set")
		}
		return nil
	}
	isPlain := func(t *testing.T, dir string) error {
		if !equalSums(rawSums(t, dir), f.plain) {
			return fmt.Errorf("not the original plaintext set")
		}
		return nil
	}
	encrypt := func(src, target string) []string {
		return []string{"encrypt", "-q", "-D", src, "--cert", keyPath("alice-rsa2048.crt"), "-o", target}
	}
	decrypt := func(src, target string) []string {
		return []string{"decrypt", "-q", "-D", src, "--tls-key", alice, "-o", target}
	}
	decodeSrc, decodeRef := f.decodeSets(t)
	return []signalOp{
		{name: "encrypt-o", cmd: "encrypt", src: f.plainDir, args: encrypt, isNew: encryptedIsPlain},
		{name: "decrypt-o", cmd: "decrypt", src: f.encDir, args: decrypt, isNew: isPlain, plaintext: true},
		{name: "encrypt", cmd: "encrypt", inPlace: true, src: f.plainDir, isNew: encryptedIsPlain,
			args: func(_, target string) []string {
				return []string{"encrypt", "-q", "-D", target, "--cert", keyPath("alice-rsa2048.crt")}
			}},
		{name: "decrypt", cmd: "decrypt", inPlace: true, src: f.encDir, isNew: isPlain, plaintext: true,
			args: func(_, target string) []string { return []string{"decrypt", "-q", "-D", target, "--tls-key", alice} }},
		{name: "rekey-rotate", cmd: "rekey", inPlace: true, src: f.encDir,
			args: func(_, target string) []string {
				return []string{"rekey", "-q", "-D", target, "--tls-key", alice, "--rotate", "--cert", keyPath("bob-p256.crt")}
			},
			isNew: func(t *testing.T, dir string) error {
				if got, err := plainSums(t, dir, keyPath("bob-p256.key")); err != nil || !equalSums(got, f.plain) {
					return fmt.Errorf("not the set rotated for bob: %v", err)
				}
				return nil
			}},
		{name: "rekey", cmd: "rekey", inPlace: true, src: f.encDir,
			args: func(_, target string) []string {
				return []string{"rekey", "-q", "-D", target, "--tls-key", alice, "--cert", keyPath("bob-p256.crt")}
			},
			isNew: func(t *testing.T, dir string) error {
				if got := headerRecipients(t, dir); !slices.Equal(got, sortedFPs(t, "alice-rsa2048", "bob-p256")) {
					return fmt.Errorf("recipients %v", got)
				}
				return nil
			}},
		{name: "decode-D", cmd: "decode", src: decodeSrc,
			args: func(src, target string) []string { return []string{"decode", "-D", src, "-o", target} },
			isNew: func(t *testing.T, dir string) error {
				if !equalSums(rawSums(t, dir), decodeRef) {
					return fmt.Errorf("not the whole decoded set")
				}
				return nil
			}},
	}
}

// decodeSets makes a set of about 130 protobuf images (the counter's, and copies
// of its core and mm images under other pids), so that decode -D runs long
// enough to be interrupted, and returns it with the sums of its whole decoding.
func (f *interruptFixture) decodeSets(t *testing.T) (string, map[string]string) {
	t.Helper()
	src := filepath.Join(f.work, "many")
	testset.CopyTo(t, filepath.Join(fixtureDir, "counter"), src)
	for _, kind := range []string{"core", "mm"} {
		data, err := os.ReadFile(filepath.Join(src, kind+"-15654.img"))
		if err != nil {
			t.Fatal(err)
		}
		for pid := 1000; pid < 1060; pid++ {
			if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("%s-%d.img", kind, pid)), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	ref := filepath.Join(f.work, "many-json")
	run(t, f.bin, "decode", "-D", src, "-o", ref)
	return src, rawSums(t, ref)
}

// target makes a fresh parent folder and returns it with the target of op in it:
// a copy of op.src to rewrite in place, or the name of the output folder.
func (f *interruptFixture) target(t *testing.T, op signalOp) (parent, target string) {
	if op.inPlace {
		return freshCopy(t, f.work, op.src)
	}
	parent, err := os.MkdirTemp(f.work, "run-")
	if err != nil {
		t.Fatal(err)
	}
	return parent, filepath.Join(parent, "out")
}

// launch runs op on a fresh target until kp. The watched folder is the target
// when it exists (in place), else the parent again.
func (f *interruptFixture) launch(t *testing.T, op signalOp, kp killPoint) (parent, target string, res runResult) {
	parent, target = f.target(t, op)
	watched := parent
	if op.inPlace {
		watched = target
	}
	return parent, target, runUntil(t, f.bin, op.args(op.src, target), parent, watched, kp)
}

// interruptedLine is the one line of a command stopped by a signal.
var interruptedLine = regexp.MustCompile(`^imgtool: (\w+): interrupted by (SIG[A-Z]+)(?:; removed the partial output (\S+)| before writing anything)(?:; (\S+) is unchanged)?\n$`)

// TestInterruptedCommandsCleanUp: SIGINT, SIGTERM and SIGHUP at points of each
// writing command (interruptLoop); then SIGKILL in the middle of a few of them,
// and the next run on the same target (killThenRerun). One test, so that the
// binary and the sets are made once.
func TestInterruptedCommandsCleanUp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and interrupts a real imgtool about 40 times")
	}
	f := newInterruptFixture(t)
	ops := f.ops(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x5167))
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) { f.interruptLoop(t, op, rng) })
	}
	for _, name := range []string{"decrypt-o", "encrypt-o", "decode-D", "decrypt"} {
		op := ops[slices.IndexFunc(ops, func(o signalOp) bool { return o.name == name })]
		t.Run("SIGKILL-then-rerun/"+name, func(t *testing.T) { f.killThenRerun(t, op) })
	}
}

// interruptLoop runs op once whole, then interrupts it at points spread over
// that run, cycling through the three signals.
func (f *interruptFixture) interruptLoop(t *testing.T, op signalOp, rng *rand.Rand) {
	parent, target, full := f.launch(t, op, killPoint{never: true})
	if full.killed || full.err != nil {
		t.Fatalf("full run: %v\n%s", full.err, full.stderr)
	}
	if err := op.isNew(t, target); err != nil {
		t.Fatalf("full run: %v", err)
	}
	os.RemoveAll(parent)
	c := full.commitEvent()
	var points []killPoint
	for _, e := range []int{c / 4, c / 2, c - 1, c} {
		if kp := (killPoint{afterEvents: max(1, e)}); !slices.Contains(points, kp) {
			points = append(points, kp)
		}
	}
	points = append(points, killPoint{delay: time.Duration((0.3 + 0.4*rng.Float64()) * float64(full.elapsed))})
	signals := []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}
	outcomes := map[string]int{}
	var slowest time.Duration
	for i, kp := range points {
		kp.sig = signals[i%len(signals)]
		parent, target, res := f.launch(t, op, kp)
		outcome := f.check(t, op, kp, parent, target, res)
		outcomes[outcome]++
		if outcome == "stopped" {
			slowest = max(slowest, res.afterSignal)
		}
		os.RemoveAll(parent)
	}
	t.Logf("%s: full run %d events (commit after %d); outcomes %v; slowest stop %v after the signal",
		op.name, full.events, c, outcomes, slowest.Round(time.Millisecond))
	if op.name != "rekey" && outcomes["stopped"] == 0 {
		t.Errorf("no run was stopped midway: %v", outcomes)
	}
}

// check checks one interrupted run and says how it ended: "finished" (exit 0),
// "stopped" (exit 1, having removed its partial output) or "stopped early"
// (before writing anything).
func (f *interruptFixture) check(t *testing.T, op signalOp, kp killPoint, parent, target string, res runResult) string {
	t.Helper()
	where := fmt.Sprintf("%v after %d events", kp.sig, res.seen)
	outcome := ""
	switch {
	case res.killed && res.seen == 0:
		// The signal came before main installed its handlers (Go's package
		// initialisation takes a few milliseconds): nothing was written, which the
		// checks below hold.
		outcome = "killed before starting"
		if op.inPlace && !equalSums(rawSums(t, target), f.sums(t, op.src)) {
			t.Errorf("%s: killed before starting, but the set changed", where)
		} else if _, err := os.Lstat(target); !op.inPlace && err == nil {
			t.Errorf("%s: killed before starting, but %s exists", where, target)
		}
	case res.killed:
		t.Errorf("%s: the process died of the signal instead of handling it", where)
	case res.code == 0:
		outcome = "finished"
		if res.stderr != "" {
			t.Errorf("%s: finished, but said %q", where, res.stderr)
		}
		if err := op.isNew(t, target); err != nil {
			t.Errorf("%s: finished, but the result is wrong: %v", where, err)
		}
	case res.code == 1:
		outcome = f.checkStopped(t, op, where, kp.sig, target, res.stderr)
	default:
		t.Errorf("%s: exit %d: %s", where, res.code, res.stderr)
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if p := filepath.Join(parent, e.Name()); p != target {
			t.Errorf("%s: %s left beside the target", where, e.Name())
		}
	}
	if op.plaintext {
		// The target was checked: the plaintext set asked for, or the encrypted
		// set byte for byte. Anything else under the parent is already an error,
		// but plaintext there is what must never happen.
		skip := target
		if outcome == "" || outcome == "failed" {
			skip = ""
		}
		if hits := plaintextUnder(t, parent, skip, f.needles); len(hits) > 0 {
			t.Errorf("%s: plaintext left in %v", where, hits)
		}
	}
	return outcome
}

// checkStopped checks a run that exited 1: the one line that names the signal
// and what was removed, and the target as it was before the run.
func (f *interruptFixture) checkStopped(t *testing.T, op signalOp, where string, sig syscall.Signal, target, stderr string) string {
	t.Helper()
	m := interruptedLine.FindStringSubmatch(stderr)
	if m == nil {
		t.Errorf("%s: exit 1 with %q, want the one line of an interruption", where, stderr)
		return "failed"
	}
	if m[1] != op.cmd || m[2] != signalName(sig) {
		t.Errorf("%s: %q names the wrong command or signal", where, stderr)
	}
	if m[3] != "" {
		if _, err := os.Lstat(m[3]); err == nil {
			t.Errorf("%s: %s is said removed but exists", where, m[3])
		}
	}
	if op.inPlace {
		// "before writing anything" needs no word on the set: it was not opened.
		if m[4] != target && !strings.Contains(stderr, "before writing anything") {
			t.Errorf("%s: %q does not say %s is unchanged", where, stderr, target)
		}
		if !equalSums(rawSums(t, target), f.sums(t, op.src)) {
			t.Errorf("%s: the set changed", where)
		}
	} else if _, err := os.Lstat(target); err == nil {
		t.Errorf("%s: stopped, but %s exists", where, target)
	}
	if m[3] == "" {
		return "stopped early"
	}
	return "stopped"
}

// killThenRerun: a writer killed with SIGKILL in its data phase leaves its
// temporary folder (for decrypt, plaintext); the next run writing the same
// target removes it, says so in one line, and writes the whole output.
func (f *interruptFixture) killThenRerun(t *testing.T, op signalOp) {
	parent, _, full := f.launch(t, op, killPoint{never: true})
	if full.err != nil || full.killed {
		t.Fatalf("full run: %v\n%s", full.err, full.stderr)
	}
	os.RemoveAll(parent)
	parent, target, res := f.launch(t, op, killPoint{afterEvents: max(1, full.commitEvent()/2)})
	if !res.killed {
		t.Fatalf("not killed midway (exit %d): %s", res.code, res.stderr)
	}
	left, err := imgset.Leftovers(target)
	if err != nil || len(left) != 1 {
		t.Fatalf("after the kill: leftovers %v, %v; want one", left, err)
	}
	if op.plaintext {
		t.Logf("the killed run left plaintext in %d files of %s", len(plaintextUnder(t, left[0], "", f.needles)), filepath.Base(left[0]))
	}
	out, stderr, code := runBin(t, f.bin, op.args(op.src, target)...)
	if code != 0 {
		t.Fatalf("the next run: exit %d: %s%s", code, out, stderr)
	}
	want := fmt.Sprintf("imgtool: removed what interrupted earlier runs left beside %s: %s\n", target, left[0])
	if stderr != want {
		t.Errorf("the next run said %q, want %q", stderr, want)
	}
	if err := op.isNew(t, target); err != nil {
		t.Error(err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Errorf("the parent holds %d entries, want the target only", len(ents))
	}
	if hits := plaintextUnder(t, parent, target, f.needles); op.plaintext && len(hits) > 0 {
		t.Errorf("plaintext left in %v", hits)
	}
}

// runBin runs imgtool and returns its stdout, stderr and exit code.
func runBin(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e strings.Builder
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}
