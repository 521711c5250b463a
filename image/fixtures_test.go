package image

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFixturesKnown checks that every file of the real sets is known by its name,
// and that the name and the magic agree on the type.
func TestFixturesKnown(t *testing.T) {
	for _, f := range fixtureFiles(t) {
		if f.kind == nil {
			t.Errorf("%s: no kind for this file name", f.path)
			continue
		}
		if f.kind.Raw {
			continue
		}
		rd, err := NewReaderKind(bytes.NewReader(f.data), f.kind)
		if err != nil {
			t.Errorf("%s: %v", f.path, err)
			continue
		}
		byMagic, err := NewReader(bytes.NewReader(f.data))
		if err != nil {
			t.Errorf("%s: %v", f.path, err)
			continue
		}
		if byMagic.Kind().Name != rd.Kind().Name {
			t.Errorf("%s: magic says %s, name says %s", f.path, byMagic.Kind().Name, rd.Kind().Name)
		}
		if rd.Head() != f.kind.Head {
			t.Errorf("%s: head %#x, want %#x", f.path, rd.Head(), f.kind.Head)
		}
	}
}

// TestFixturesRoundTrip reads every real image whole and writes it back: the bytes
// must be the same, whether the reader knows the input's size or not.
func TestFixturesRoundTrip(t *testing.T) {
	for _, f := range imageFixtures(t) {
		for _, src := range []io.Reader{bytes.NewReader(f.data), plainReader{bytes.NewReader(f.data)}} {
			img, err := ReadImage(src)
			if err != nil {
				t.Errorf("%s: %v", f.path, err)
				continue
			}
			if out := mustEncode(t, img); !bytes.Equal(out, f.data) {
				t.Errorf("%s: round trip differs (%d vs %d bytes)", f.path, len(out), len(f.data))
			}
		}
	}
}

// TestFixturesStream copies every real image entry by entry through Reader and
// Writer, reading payloads in small pieces: the bytes must be the same.
func TestFixturesStream(t *testing.T) {
	for _, f := range imageFixtures(t) {
		rd, err := NewReader(bytes.NewReader(f.data))
		if err != nil {
			t.Fatalf("%s: %v", f.path, err)
		}
		var out bytes.Buffer
		wr, err := NewWriterHead(&out, rd.Kind(), rd.Head())
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := rd.Next()
			if isEnd(err) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f.path, err)
			}
			want := rd.PayloadSize()
			if err := wr.WriteEntry(m); err != nil {
				t.Fatalf("%s: %v", f.path, err)
			}
			// A 7-byte buffer crosses every payload and padding boundary.
			n, err := io.CopyBuffer(struct{ io.Writer }{wr}, struct{ io.Reader }{rd}, make([]byte, 7))
			if err != nil {
				t.Fatalf("%s: payload: %v", f.path, err)
			}
			if want >= 0 && n != want {
				t.Fatalf("%s: payload of %d bytes, PayloadSize said %d", f.path, n, want)
			}
		}
		if err := wr.Close(); err != nil {
			t.Fatalf("%s: %v", f.path, err)
		}
		if !bytes.Equal(out.Bytes(), f.data) {
			t.Errorf("%s: stream copy differs", f.path)
		}
		if rd.Offset() != int64(len(f.data)) {
			t.Errorf("%s: reader stopped at %d of %d bytes", f.path, rd.Offset(), len(f.data))
		}
	}
}

// TestFixturesPayloads checks the payload sizes of the real images with payloads
// against the bytes the fixture README says the programs left queued.
func TestFixturesPayloads(t *testing.T) {
	want := map[string]int{
		"files/pipes-data.img": 21,
		"fifo/fifo-data.img":   53,
		"fifo/pipes-data.img":  68,
		"misc/sk-queues.img":   21,
	}
	for rel, size := range want {
		data, err := os.ReadFile(filepath.Join(fixtureDir, rel))
		if err != nil {
			t.Fatal(err)
		}
		img, err := ReadImage(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		total := 0
		for _, e := range img.Entries {
			total += len(e.Payload)
		}
		if total != size {
			t.Errorf("%s: %d payload bytes, want %d", rel, total, size)
		}
	}
}

// TestFileErrorsNameTheFile checks that errors reading an *os.File name it.
func TestFileErrorsNameTheFile(t *testing.T) {
	src := filepath.Join(fixtureDir, "counter", "core-15654.img")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "core-1.img")
	if err := os.WriteFile(p, data[:len(data)-3], 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = ReadImage(f)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.File != p || !strings.Contains(err.Error(), p) {
		t.Fatalf("error %v does not name %s", err, p)
	}
}
