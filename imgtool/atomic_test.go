package imgtool

// In-place atomicity under SIGKILL. A real imgtool binary runs encrypt, decrypt,
// rekey and rekey --rotate in place on a set of about 33 MiB and is killed at many
// points of its run; after every kill the folder must hold exactly the old set or
// exactly the new one (same files, same plaintext), and whatever the kill left
// beside it must be what imgset.Leftovers lists, removable without changing the set.
//
// Kill points come from two schedules:
//   - filesystem events: the binary's writes are watched with inotify (the parent
//     folder, the set, and each temporary folder as it appears) and the process is
//     killed right after the k-th event, for k spread over all the events of a full
//     run: every file created, finished, renamed or deleted is a kill point, which
//     reaches the short commit phase that random delays rarely hit;
//   - delays spread evenly from 0 to 1.3 times a full run's duration, with jitter.
//
// The exhaustive matrix (44 kills per operation) runs with IMGTOOL_TEST_LONG=1 (make
// test-long). By default a sample of 12 per operation covers each phase: a kill
// before the run does anything, in the data phase, at each of the events around
// the commit (the last write before it, the exchange, the renaming aside of the
// old set), while the old set is deleted, and a few delays.

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/internal/testlong"
	"github.com/imgtool/imgtool/internal/testset"
)

// atomicOp is one in-place operation under test.
type atomicOp struct {
	name     string
	template string                    // the old set, copied before each run
	args     func(dir string) []string // the command line, without the binary
	isNew    func(t *testing.T, dir string) error
}

func TestAtomicInPlaceUnderSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a real imgtool about 50 times (about 180 with IMGTOOL_TEST_LONG=1)")
	}
	bin := buildImgtool(t)
	work := t.TempDir()

	plainDir := filepath.Join(work, "plain")
	makeBigSet(t, plainDir)
	plain := rawSums(t, plainDir)

	// Old sets: plain (encrypt), and encrypted for alice (the others).
	encDir := filepath.Join(work, "enc")
	testset.CopyTo(t, plainDir, encDir)
	run(t, bin, "encrypt", "-q", "-D", encDir, "--cert", keyPath("alice-rsa2048.crt"))
	encRaw := rawSums(t, encDir)
	encID := headerSetID(t, encDir)

	plaintextIs := func(dir, key string, recipients ...string) error {
		got, err := plainSums(t, dir, keyPath(key))
		if err != nil {
			return err
		}
		if !equalSums(got, plain) {
			return fmt.Errorf("plaintext differs from the original set")
		}
		if want, got := sortedFPs(t, recipients...), headerRecipients(t, dir); !slices.Equal(got, want) {
			return fmt.Errorf("recipients %v, want %v", got, want)
		}
		return nil
	}
	ops := []atomicOp{
		{
			name:     "encrypt",
			template: plainDir,
			args: func(dir string) []string {
				return []string{"encrypt", "-q", "-D", dir, "--cert", keyPath("alice-rsa2048.crt")}
			},
			isNew: func(t *testing.T, dir string) error { return plaintextIs(dir, "alice-rsa2048.key", "alice-rsa2048") },
		},
		{
			name:     "decrypt",
			template: encDir,
			args: func(dir string) []string {
				return []string{"decrypt", "-q", "-D", dir, "--tls-key", keyPath("alice-rsa2048.key")}
			},
			isNew: func(t *testing.T, dir string) error {
				if !equalSums(rawSums(t, dir), plain) {
					return fmt.Errorf("not the original plaintext set")
				}
				return nil
			},
		},
		{
			name:     "rekey",
			template: encDir,
			args: func(dir string) []string {
				return []string{"rekey", "-q", "-D", dir, "--tls-key", keyPath("alice-rsa2048.key"), "--cert", keyPath("bob-p256.crt")}
			},
			isNew: func(t *testing.T, dir string) error {
				got := rawSums(t, dir)
				for n, sum := range encRaw {
					if n != imgset.HeaderName && got[n] != sum {
						return fmt.Errorf("data file %s changed", n)
					}
				}
				return plaintextIs(dir, "bob-p256.key", "alice-rsa2048", "bob-p256")
			},
		},
		{
			name:     "rekey-rotate",
			template: encDir,
			args: func(dir string) []string {
				return []string{"rekey", "-q", "-D", dir, "--tls-key", keyPath("alice-rsa2048.key"), "--rotate", "--cert", keyPath("bob-p256.crt")}
			},
			isNew: func(t *testing.T, dir string) error {
				if headerSetID(t, dir) == encID {
					return fmt.Errorf("set id not rotated")
				}
				return plaintextIs(dir, "bob-p256.key", "bob-p256")
			},
		},
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x1eaf))
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) { killLoop(t, bin, work, op, rng) })
	}
}

// killLoop runs op once whole to learn its duration and events, then once per
// kill point, checking the set after each kill.
func killLoop(t *testing.T, bin, work string, op atomicOp, rng *rand.Rand) {
	oldRaw := rawSums(t, op.template)
	classify := func(dir string) string {
		state, _ := classifyRaw(t, dir, oldRaw, op)
		return state
	}

	// A full run: its duration and number of filesystem events.
	parent, dir := freshCopy(t, work, op.template)
	start := time.Now()
	res := runUntil(t, bin, op.args(dir), parent, dir, killPoint{never: true})
	full := time.Since(start)
	if res.killed || res.err != nil {
		t.Fatalf("full run: %v\n%s", res.err, res.stderr)
	}
	if got := classify(dir); got != "new" {
		t.Fatalf("full run left %s", got)
	}
	os.RemoveAll(parent)

	points := sampledKillPoints(res, full, rng)
	if testlong.Enabled() {
		points = allKillPoints(res.events, full, rng)
	}

	counts := map[string]int{}
	killed, withLeftovers := 0, 0
	for _, p := range points {
		parent, dir := freshCopy(t, work, op.template)
		res := runUntil(t, bin, op.args(dir), parent, dir, p)
		if !res.killed && res.err != nil {
			t.Fatalf("%+v: imgtool failed on its own: %v\n%s", p, res.err, res.stderr)
		}
		if res.killed {
			killed++
		}
		state, raw := classifyRaw(t, dir, oldRaw, op)
		counts[state]++
		if state != "old" && state != "new" {
			t.Errorf("kill at %+v (after %d events): the set is %s", p, res.seen, state)
		}
		left := checkLeftovers(t, parent, dir)
		if len(left) > 0 {
			withLeftovers++
			for _, l := range left {
				if err := os.RemoveAll(l); err != nil {
					t.Fatal(err)
				}
			}
			// The same bytes are the same state, without decrypting again.
			if !equalSums(rawSums(t, dir), raw) {
				t.Errorf("kill at %+v: removing the leftovers %v changed the set (it was %s)", p, left, state)
			}
		}
		os.RemoveAll(parent)
	}
	t.Logf("%s: full run %v, %d events; %d runs, %d killed mid-run, outcomes %v, %d left leftovers (all listed by imgset.Leftovers and removed)",
		op.name, full.Round(time.Millisecond), res.events, len(points), killed, counts, withLeftovers)
	if counts["old"] == 0 || counts["new"] == 0 {
		t.Errorf("the kills did not reach both sides of the commit: %v", counts)
	}
}

// classifyRaw says whether the set in dir is the old one (raw sums oldRaw), the
// new one or neither, and returns its raw sums.
func classifyRaw(t *testing.T, dir string, oldRaw map[string]string, op atomicOp) (string, map[string]string) {
	raw := rawSums(t, dir)
	if equalSums(raw, oldRaw) {
		return "old", raw
	}
	if err := op.isNew(t, dir); err != nil {
		return "neither old nor new: " + err.Error(), raw
	}
	return "new", raw
}

// allKillPoints is the exhaustive schedule of 44 kills: one after each of up to 24
// distinct event counts, the rest at delays; the first delay is 0, a kill before
// the run does anything.
func allKillPoints(events int, full time.Duration, rng *rand.Rand) []killPoint {
	const kills = 44
	eventKills := min(24, events)
	var points []killPoint
	for i := range eventKills {
		points = append(points, killPoint{afterEvents: 1 + i*events/eventKills})
	}
	delayKills := kills - eventKills
	step := 1.3 * float64(full) / float64(delayKills)
	for i := range delayKills {
		points = append(points, killPoint{delay: time.Duration(step * (float64(i) + rng.Float64()))})
	}
	points[eventKills].delay = 0
	return points
}

// sampledKillPoints is the default schedule: a kill at once, two in the data
// phase, one after each of the events around the commit (from the last two
// before it to the renaming aside of the old set), one while the old set is
// being deleted, and two delays, one of them past a full run. full is a full
// run's result, whose event log locates the commit.
func sampledKillPoints(full runResult, d time.Duration, rng *rand.Rand) []killPoint {
	c := full.commitEvent()
	events := []int{1, c / 3, 2 * c / 3}
	for k := c - 2; k <= c+3; k++ {
		events = append(events, k)
	}
	events = append(events, (c+3+full.events)/2)
	var points []killPoint
	for _, e := range events {
		if e >= 1 && e <= full.events && !slices.Contains(points, killPoint{afterEvents: e}) {
			points = append(points, killPoint{afterEvents: e})
		}
	}
	points = append(points, killPoint{delay: 0},
		killPoint{delay: time.Duration((0.3 + 0.4*rng.Float64()) * float64(d))},
		killPoint{delay: time.Duration((0.9 + 0.3*rng.Float64()) * float64(d))})
	return points
}

// freshCopy copies template to a set folder "set" in a new parent folder.
func freshCopy(t *testing.T, work, template string) (parent, dir string) {
	t.Helper()
	parent, err := os.MkdirTemp(work, "run-")
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(parent, "set")
	copyFlat(t, template, dir)
	return parent, dir
}

// copyFlat copies the files of the flat folder src into a new folder dst, with
// their modes. io.Copy between two files copies in the kernel (copy_file_range),
// without passing 33 MiB through the race detector's view of memory: the copy
// before each kill is a good part of the tests' time.
func copyFlat(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.OpenFile(filepath.Join(dst, e.Name()), os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
		if err == nil {
			_, err = io.Copy(out, in)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		in.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// checkLeftovers checks that the parent folder holds only the set and what
// imgset.Leftovers lists, and returns the leftovers.
func checkLeftovers(t *testing.T, parent, dir string) []string {
	t.Helper()
	left, err := imgset.Leftovers(dir)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		p := filepath.Join(parent, e.Name())
		if p != dir && !slices.Contains(left, p) {
			t.Errorf("%s is beside the set but not a leftover imgset knows", e.Name())
		}
	}
	return left
}

type runResult struct {
	killed bool // died of a signal
	sent   bool // the signal was sent
	err    error
	code   int // exit code, when not killed
	stderr string
	events int       // filesystem events seen
	seen   int       // events seen when the kill was sent
	log    []fsEvent // the events, in order

	elapsed     time.Duration // from start to exit
	afterSignal time.Duration // from the signal to exit
}

// commitEvent is the number of events before the first rename in the parent
// folder, the commit of a new set or header (the exchange, or the rename of the
// temporary folder or header into place); all of them when there was none.
func (r runResult) commitEvent() int {
	for i, e := range r.log {
		if e.inParent && e.mask&(unix.IN_MOVED_FROM|unix.IN_MOVED_TO) != 0 {
			return i
		}
	}
	return r.events
}

// killPoint says when runUntil kills the process: never, right after the
// afterEvents-th filesystem event (when > 0), or else after delay (0: at once).
// sig is the signal, SIGKILL if 0.
type killPoint struct {
	never       bool
	afterEvents int
	delay       time.Duration
	sig         syscall.Signal
}

// runUntil runs imgtool with args and sends it the signal of kp (SIGKILL by
// default) at kp. It watches parent, dir and every folder created in parent, and
// counts their events.
func runUntil(t *testing.T, bin string, args []string, parent, dir string, kp killPoint) runResult {
	t.Helper()
	w := newInotify(t, parent, dir)
	defer w.Close()
	var stderr strings.Builder
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var res runResult
	var sentAt time.Time
	sig := cmp.Or(kp.sig, syscall.SIGKILL)
	kill := func() {
		res.seen, res.sent, sentAt = res.events, true, time.Now()
		cmd.Process.Signal(sig)
	}
	var timer <-chan time.Time
	if !kp.never && kp.afterEvents <= 0 {
		if kp.delay == 0 {
			kill()
		} else {
			timer = time.After(kp.delay)
		}
	}
	var err error
loop:
	for {
		select {
		case err = <-exited:
			res.elapsed = time.Since(start)
			if res.sent {
				res.afterSignal = time.Since(sentAt)
			}
			break loop
		case <-timer:
			kill()
		default:
		}
		before := res.events
		res.events += w.read(t, parent, 2*time.Millisecond)
		if !kp.never && kp.afterEvents > 0 && before < kp.afterEvents && res.events >= kp.afterEvents {
			kill()
		}
	}
	res.events += w.read(t, parent, 0)
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		res.killed = true
	} else {
		res.err, res.code = err, cmd.ProcessState.ExitCode()
	}
	res.stderr = stderr.String()
	res.log = w.log
	return res
}

// inotify watches folders for the writes an in-place rewrite makes.
type inotify struct {
	f        *os.File
	parentWD int32
	log      []fsEvent
}

// fsEvent is one inotify event: in the parent folder, or in a set folder.
type fsEvent struct {
	mask     uint32
	name     string
	inParent bool
}

const watchMask = unix.IN_CREATE | unix.IN_CLOSE_WRITE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE

func newInotify(t *testing.T, dirs ...string) *inotify {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	w := &inotify{f: os.NewFile(uintptr(fd), "inotify")}
	for i, d := range dirs {
		wd, err := unix.InotifyAddWatch(fd, d, watchMask)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			w.parentWD = int32(wd)
		}
	}
	return w
}

func (w *inotify) Close() error { return w.f.Close() }

// read counts the events that arrive within wait (those already queued when wait
// is 0), adding a watch on each folder created in parent.
func (w *inotify) read(t *testing.T, parent string, wait time.Duration) int {
	if err := w.f.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	n, err := w.f.Read(buf)
	if err != nil {
		return 0
	}
	count := 0
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		wd := int32(binary.NativeEndian.Uint32(buf[off:]))
		mask := binary.NativeEndian.Uint32(buf[off+4:])
		nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
		name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+nameLen]), "\x00")
		off += unix.SizeofInotifyEvent + nameLen
		if mask&watchMask == 0 {
			continue
		}
		count++
		w.log = append(w.log, fsEvent{mask: mask, name: name, inParent: wd == w.parentWD})
		if mask&unix.IN_CREATE != 0 && mask&unix.IN_ISDIR != 0 && strings.HasPrefix(name, ".") {
			// A temporary folder: watch the files written into it. Events before
			// the watch is added are missed, which only shifts the kill points.
			unix.InotifyAddWatch(int(w.f.Fd()), filepath.Join(parent, name), watchMask)
		}
	}
	return count
}

// makeBigSet writes a plain set of about 33 MiB: the counter fixture and three
// more 8 MiB pages files of pseudo-random bytes, so that a run lasts long enough
// to be killed in the middle of its data phase many times.
func makeBigSet(t *testing.T, dir string) {
	t.Helper()
	testset.CopyTo(t, filepath.Join(fixtureDir, "counter"), dir)
	rng := rand.NewChaCha8([32]byte{'i', 'm', 'g', 't', 'o', 'o', 'l'})
	buf := make([]byte, 8<<20)
	for i := 2; i <= 4; i++ {
		rng.Read(buf)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("pages-%d.img", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// run runs imgtool and fails the test if it fails.
func run(t *testing.T, bin string, args ...string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("imgtool %v: %v\n%s", args, err, out)
	}
}
