package imgset

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"sync"
	"testing"

	"github.com/imgtool/imgtool/cipher"
)

// readerFromAt is what a set's files offer besides io.WriteCloser.
type readerFromAt interface {
	ReadFromAt(src io.ReaderAt, size int64, progress func(n int64)) error
}

// TestReadFromAtAndReadEach writes files of a plain and of an encrypted set (from an
// io.ReaderAt, between ordinary writes) and reads them back with ReadEach, which must
// hand over every byte once, at its offset.
func TestReadFromAtAndReadEach(t *testing.T) {
	sizes := []int{0, 1, 70000, eachBlock, eachBlock + 1, 3<<20 + 12345}
	for _, encrypted := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "set")
		var opts CreateOptions
		if encrypted {
			opts.Recipients = []cipher.Recipient{recipient(t, "bob-p256")}
		}
		w, err := Create(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]byte{}
		for i, size := range sizes {
			name := "pages-" + string(rune('1'+i)) + ".img"
			data := make([]byte, size)
			for j := range data {
				data[j] = byte(j*31 + j>>12 + i)
			}
			want[name] = data
			f, err := w.Create(name)
			if err != nil {
				t.Fatal(err)
			}
			rf, ok := f.(readerFromAt)
			if !ok {
				t.Fatalf("encrypted %v: file has no ReadFromAt", encrypted)
			}
			// An ordinary write, then ReadFromAt, then an ordinary write again.
			head, tail := min(size, 100), max(size-10, min(size, 100))
			if _, err := f.Write(data[:head]); err != nil {
				t.Fatal(err)
			}
			mid := data[head:tail]
			var reported int64
			if err := rf.ReadFromAt(bytes.NewReader(mid), int64(len(mid)), func(n int64) { reported += n }); err != nil {
				t.Fatal(err)
			}
			if reported != int64(len(mid)) {
				t.Fatalf("%s: progress told %d of %d bytes", name, reported, len(mid))
			}
			if _, err := f.Write(data[tail:]); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, OpenOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}})
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range want {
			f, err := s.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(data))
			seen := make([]int, len(data))
			var mu sync.Mutex
			var reported int64
			err = f.ReadEach(func(parts [][]byte, off int64) error {
				mu.Lock()
				defer mu.Unlock()
				for _, p := range parts {
					copy(got[off:], p)
					for i := range p {
						seen[off+int64(i)]++
					}
					off += int64(len(p))
				}
				return nil
			}, func(n int64) { reported += n })
			f.Close()
			if err != nil {
				t.Fatalf("encrypted %v, %s: %v", encrypted, name, err)
			}
			if !bytes.Equal(got, data) || reported != int64(len(data)) {
				t.Fatalf("encrypted %v, %s: read back differs, or progress %d", encrypted, name, reported)
			}
			for i, n := range seen {
				if n != 1 {
					t.Fatalf("encrypted %v, %s: byte %d handed out %d times", encrypted, name, i, n)
				}
			}
		}
	}
}

// TestMapAt: a plain file maps at a page offset to its bytes there; a range past its end
// is refused; an encrypted file's bytes must be read (errors.ErrUnsupported).
func TestMapAt(t *testing.T) {
	data := make([]byte, 3*4096+100)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	for _, encrypted := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "set")
		var opts CreateOptions
		var open OpenOptions
		if encrypted {
			opts.Recipients = []cipher.Recipient{recipient(t, "bob-p256")}
			open.Identities = []cipher.Identity{identity(t, "bob-p256")}
		}
		commitSet(t, dir, opts, map[string][]byte{"pages-1.img": data})
		s, err := Open(dir, open)
		if err != nil {
			t.Fatal(err)
		}
		pf, err := s.Open("pages-1.img")
		if err != nil {
			t.Fatal(err)
		}
		b, err := pf.MapAt(4096, 2*4096+100)
		if encrypted {
			if !errors.Is(err, errors.ErrUnsupported) {
				t.Errorf("encrypted: MapAt gave %v, want errors.ErrUnsupported", err)
			}
		} else {
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, data[4096:]) {
				t.Error("the mapping's bytes differ from the file's")
			}
			if err := Unmap(b); err != nil {
				t.Fatal(err)
			}
			if _, err := pf.MapAt(4096, len(data)); err == nil {
				t.Error("a mapping past the end was made")
			}
		}
		pf.Close()
	}
}

// commitSet writes a new set at dir with opts, holding files, and commits it.
func commitSet(t *testing.T, dir string, opts CreateOptions, files map[string][]byte) {
	t.Helper()
	w, err := Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		f, err := w.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}
