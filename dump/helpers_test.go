package dump

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/testproc"
)

const (
	fixtureSrc  = "../fixtures/src"
	fixtureSets = "../fixtures/criu-4.2"
)

// launch builds program name (testdata/NAME.c, or fixtures/src/NAME.c) and starts it with
// args (see testproc.Launch), ready once its log shows "pid=".
func launch(t *testing.T, name string, args ...string) *testproc.Proc {
	t.Helper()
	src := filepath.Join("testdata", name+".c")
	if _, err := os.Stat(src); err != nil {
		src = filepath.Join(fixtureSrc, name+".c")
	}
	return testproc.Launch(t, testproc.Build(t, src), testproc.Options{}, args...)
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

// dumpTarget runs Dump on pid into a fresh sink. Copies of pages a child still shares
// copy-on-write with its parent are accepted: the tests that use it are about other
// state (TestRefuseCOWSharing is about that one).
func dumpTarget(t *testing.T, pid int, leave bool) *dirSink {
	t.Helper()
	s := newDirSink(t)
	if err := Dump(context.Background(), Options{Pid: pid, LeaveRunning: leave, COWCopies: true}, s); err != nil {
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

// TestMain runs the tests as a child subreaper, so that every program they launch is
// reaped.
func TestMain(m *testing.M) { os.Exit(testproc.Main(m)) }
