package image

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// fixtureDir holds the real CRIU 4.2 image sets.
const fixtureDir = "../fixtures/criu-4.2"

// fixtureFile is one file of a real image set.
type fixtureFile struct {
	path string
	kind *Kind // by file name
	data []byte
}

// fixtureFiles returns every file of every fixture set (goldens excluded).
func fixtureFiles(t testing.TB) []fixtureFile {
	t.Helper()
	sets, err := filepath.Glob(filepath.Join(fixtureDir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []fixtureFile
	for _, set := range sets {
		if strings.HasSuffix(set, ".crit") {
			continue
		}
		if fi, err := os.Stat(set); err != nil || !fi.IsDir() {
			continue
		}
		names, err := filepath.Glob(filepath.Join(set, "*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range names {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fixtureFile{path: p, kind: KindByFileName(p), data: data})
		}
	}
	if len(out) < 50 {
		t.Fatalf("only %d fixture files under %s", len(out), fixtureDir)
	}
	return out
}

// imageFixtures returns the fixture files that are protobuf images (not raw).
func imageFixtures(t testing.TB) []fixtureFile {
	var out []fixtureFile
	for _, f := range fixtureFiles(t) {
		if f.kind != nil && !f.kind.Raw {
			out = append(out, f)
		}
	}
	return out
}

// plainReader hides everything but Read, so a Reader cannot learn the size of the
// input (as with a pipe).
type plainReader struct{ r io.Reader }

func (p plainReader) Read(b []byte) (int, error) { return p.r.Read(b) }

// isEnd tells whether err is the clean end of an image.
func isEnd(err error) bool { return errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) }

// mustEncode writes img and returns its bytes.
func mustEncode(t testing.TB, img *Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := img.WriteTo(&buf)
	if err != nil {
		t.Fatalf("%s: write: %v", img.Kind.Name, err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("%s: WriteTo counted %d bytes, wrote %d", img.Kind.Name, n, buf.Len())
	}
	return buf.Bytes()
}

// sameEntries reports the first difference between two entry lists.
func sameEntries(t testing.TB, what string, got, want []Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i].Msg, want[i].Msg) {
			t.Fatalf("%s: entry %d differs:\n got %v\nwant %v", what, i, got[i].Msg, want[i].Msg)
		}
		if !bytes.Equal(got[i].Payload, want[i].Payload) {
			t.Fatalf("%s: entry %d payload differs (%d vs %d bytes)", what, i, len(got[i].Payload), len(want[i].Payload))
		}
	}
}
