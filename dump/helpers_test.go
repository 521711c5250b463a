package dump

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/imgtool/imgtool/image"
)

const (
	fixtureSrc  = "../fixtures/src"
	fixtureSets = "../fixtures/criu-4.2"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// needRoot skips tests that ptrace and read other processes' memory.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("dump tests need root")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not found")
	}
}

// programs compiles the fixture programs and ours (testdata/*.c) once per test run.
func program(t *testing.T, name string) string {
	t.Helper()
	needRoot(t)
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "imgtool-dump-bin-")
		if buildErr != nil {
			return
		}
		srcs, _ := filepath.Glob(filepath.Join(fixtureSrc, "*.c"))
		own, _ := filepath.Glob("testdata/*.c")
		for _, src := range append(srcs, own...) {
			out := filepath.Join(binDir, strings.TrimSuffix(filepath.Base(src), ".c"))
			cmd := exec.Command("gcc", "-O1", "-g", "-Wall", "-o", out, src, "-lpthread")
			if b, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("gcc %s: %v\n%s", src, err, b)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// target is a running test program, started detached through the fixtures' launch program
// so that the test process is not its parent (a parent's wait could steal ptrace stops).
type target struct {
	pid int
	log string
	dir string
}

// launch starts program name with args in a fresh working directory and waits until its
// log shows "pid=".
func launch(t *testing.T, name string, args ...string) *target {
	t.Helper()
	prog := program(t, name)
	dir := t.TempDir()
	tg := &target{dir: dir, log: filepath.Join(dir, name+".log")}
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "{dir}", dir)
	}
	cmd := exec.Command(program(t, "launch"), append([]string{tg.log, prog}, args...)...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("launch %s: %v", name, err)
	}
	tg.pid, err = strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("launch %s: output %q", name, out)
	}
	t.Cleanup(func() { tg.kill() })
	tg.waitLog(t, "pid=", 5*time.Second)
	return tg
}

func (tg *target) kill() {
	_ = syscall.Kill(-tg.pid, syscall.SIGKILL) // its session/process group (launch calls setsid)
	_ = syscall.Kill(tg.pid, syscall.SIGKILL)
}

func (tg *target) readLog(t *testing.T) string {
	b, err := os.ReadFile(tg.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (tg *target) waitLog(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(tg.readLog(t), s) {
		if time.Now().After(deadline) {
			t.Fatalf("log of %d never showed %q:\n%s", tg.pid, s, tg.readLog(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// dirSink writes the set into a staging directory and renames it into place on Commit,
// like imgset's writer.
type dirSink struct {
	dir, tmp  string
	committed bool
	aborted   bool
}

func newDirSink(t *testing.T) *dirSink {
	base := t.TempDir()
	return &dirSink{dir: filepath.Join(base, "set"), tmp: filepath.Join(base, ".set.tmp")}
}

func (s *dirSink) Create(name string) (io.WriteCloser, error) {
	if strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("bad name %q", name)
	}
	if err := os.MkdirAll(s.tmp, 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(s.tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

func (s *dirSink) Commit() error {
	s.committed = true
	return os.Rename(s.tmp, s.dir)
}

func (s *dirSink) Abort() error {
	s.aborted = true
	return os.RemoveAll(s.tmp)
}

// dump runs Dump on tg into a fresh sink.
func dumpTarget(t *testing.T, pid int, leave bool) *dirSink {
	t.Helper()
	s := newDirSink(t)
	if err := Dump(context.Background(), Options{Pid: pid, LeaveRunning: leave}, s); err != nil {
		t.Fatalf("dump %d: %v", pid, err)
	}
	return s
}

// readImg decodes one image file of a set.
func readImg(t *testing.T, dir, name string) *image.Image {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := image.ReadImage(bufio.NewReader(f))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return img
}

var digits = regexp.MustCompile(`[0-9a-f]*[0-9][0-9a-f]*`)

// normName replaces the ids in a file name with N ("core-123.img" -> "core-N.img").
func normName(name string) string { return digits.ReplaceAllString(name, "N") }

// fileKinds returns the normalised file names of a set.
func fileKinds(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range ents {
		seen[normName(e.Name())] = true
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// fieldPaths returns every populated field path of every entry of every protobuf image of a
// set, by normalised file name: "CORE thread_info.fpregs.xsave.ymmh_space".
func fieldPaths(t *testing.T, dir string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		k := image.KindByFileName(e.Name())
		if k == nil || k.Raw {
			continue
		}
		img := readImg(t, dir, e.Name())
		prefix := normName(e.Name())
		for i, en := range img.Entries {
			p := prefix
			if k.Name == "PAGEMAP" && i == 0 {
				p += " head"
			}
			walkFields(en.Msg.ProtoReflect(), p+" ", out)
		}
	}
	return out
}

func walkFields(m protoreflect.Message, prefix string, out map[string]bool) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := prefix + string(fd.Name())
		out[name] = true
		if fd.Kind() == protoreflect.MessageKind {
			switch {
			case fd.IsList():
				for i := 0; i < v.List().Len(); i++ {
					walkFields(v.List().Get(i).Message(), name+".", out)
				}
			case !fd.IsMap():
				walkFields(v.Message(), name+".", out)
			}
		}
		return true
	})
}

// compareWithCRIU checks that a set has the same files and populated fields as the real
// CRIU 4.2 set of the same program, except for the differences listed (documented in
// doc.go).
func compareWithCRIU(t *testing.T, ours, fixture string, allowed map[string]string) {
	t.Helper()
	want := fileKinds(t, filepath.Join(fixtureSets, fixture))
	got := fileKinds(t, ours)
	if strings.Join(want, " ") != strings.Join(got, " ") {
		t.Errorf("files differ from CRIU's %s set:\n criu: %v\n ours: %v", fixture, want, got)
	}
	wf := fieldPaths(t, filepath.Join(fixtureSets, fixture))
	gf := fieldPaths(t, ours)
	for f := range wf {
		if !gf[f] {
			if _, ok := allowed["-"+f]; !ok {
				t.Errorf("CRIU fills %q, we do not", f)
			}
		}
	}
	for f := range gf {
		if !wf[f] {
			if _, ok := allowed["+"+f]; !ok {
				t.Errorf("we fill %q, CRIU does not", f)
			}
		}
	}
}

// entries returns the messages of one image of a set.
func entries[T proto.Message](t *testing.T, dir, name string) []T {
	t.Helper()
	img := readImg(t, dir, name)
	var out []T
	for _, e := range img.Entries {
		m, ok := e.Msg.(T)
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// TestMain removes the compiled programs after the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
