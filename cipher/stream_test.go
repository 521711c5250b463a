package cipher

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/internal/testlong"
)

// writePattern feeds plain to w in one way a caller might.
type writePattern struct {
	name  string
	write func(w *Writer, plain []byte) error
}

func writeInPieces(sizes ...int) func(w *Writer, plain []byte) error {
	return func(w *Writer, plain []byte) error {
		for i := 0; len(plain) > 0; i++ {
			n := min(len(plain), sizes[i%len(sizes)])
			// The caller reuses its buffer, as dump does: the Writer must be
			// done with it when Write returns.
			buf := append([]byte(nil), plain[:n]...)
			if _, err := w.Write(buf); err != nil {
				return err
			}
			clear(buf)
			plain = plain[n:]
		}
		return nil
	}
}

var writePatterns = []writePattern{
	{"one write", func(w *Writer, plain []byte) error { _, err := w.Write(plain); return err }},
	{"8 MiB writes", writeInPieces(8 << 20)},
	{"batch writes", writeInPieces(batchPlain)},
	{"chunk writes", writeInPieces(ChunkSize)},
	{"odd writes", writeInPieces(7919, batchPlain+1, 3*ChunkSize-5, 1, 2*batchPlain)},
	{"small writes", writeInPieces(4096, 100, 65535)},
	{"ReadFrom", func(w *Writer, plain []byte) error { _, err := w.ReadFrom(bytes.NewReader(plain)); return err }},
	{"ReadFrom trickle", func(w *Writer, plain []byte) error {
		_, err := w.ReadFrom(bufio.NewReaderSize(bytes.NewReader(plain), 5000))
		return err
	}},
	{"ReadFrom odd reads", func(w *Writer, plain []byte) error {
		_, err := w.ReadFrom(&oddReader{r: bytes.NewReader(plain), sizes: []int{4097, 1, ChunkSize, 3*ChunkSize + 5, 100000}})
		return err
	}},
	{"ReadFrom vectors", func(w *Writer, plain []byte) error {
		_, err := w.ReadFrom(&vectorReader{oddReader{r: bytes.NewReader(plain), sizes: []int{3*ChunkSize + 5, 1, 100000, unitPlain, 7}}})
		return err
	}},
	{"Write, ReadFrom, Write", func(w *Writer, plain []byte) error {
		a := min(len(plain), 12345)
		b := a + max(0, len(plain)-a-ChunkSize-3)
		if _, err := w.Write(plain[:a]); err != nil {
			return err
		}
		if _, err := w.ReadFrom(bytes.NewReader(plain[a:b])); err != nil {
			return err
		}
		_, err := w.Write(plain[b:])
		return err
	}},
	{"ReadFromAt", readFromAtInPieces(1 << 40)},
	{"ReadFromAt pieces", readFromAtInPieces(3*batchPlain+100, 4096, ChunkSize, 5*unitPlain+ChunkSize)},
	{"Write then ReadFromAt", func(w *Writer, plain []byte) error {
		n := min(len(plain), batchPlain-7)
		if _, err := w.Write(plain[:n]); err != nil {
			return err
		}
		return readFromAtInPieces(1<<40)(w, plain[n:])
	}},
}

// oddReader returns at most sizes[i] bytes from its i-th read (in turn), as a
// pipe returns what its writer has put in so far.
type oddReader struct {
	r     io.Reader
	sizes []int
	i     int
}

func (o *oddReader) Read(p []byte) (int, error) {
	n := min(len(p), o.sizes[o.i%len(o.sizes)])
	o.i++
	return o.r.Read(p[:n])
}

// vectorReader is an oddReader that also fills several buffers per call, as
// readv does (cipher.VectorReader).
type vectorReader struct{ oddReader }

func (v *vectorReader) ReadVector(bufs [][]byte) (int, error) {
	room := v.sizes[v.i%len(v.sizes)]
	v.i++
	total := 0
	for _, b := range bufs {
		n, err := io.ReadFull(v.r, b[:min(len(b), room-total)])
		total += n
		if total == room || err != nil {
			if total > 0 {
				return total, nil
			}
			return 0, io.EOF
		}
	}
	return total, nil
}

// readFromAtInPieces feeds plain to ReadFromAt in pieces of the given sizes (in
// turn), each from a source of its own, and checks what progress was told.
func readFromAtInPieces(sizes ...int) func(w *Writer, plain []byte) error {
	return func(w *Writer, plain []byte) error {
		for i := 0; len(plain) > 0; i++ {
			n := min(len(plain), sizes[i%len(sizes)])
			var reported int64
			if err := w.ReadFromAt(bytes.NewReader(plain[:n]), int64(n), func(d int64) { reported += d }); err != nil {
				return err
			}
			if reported != int64(n) {
				return fmt.Errorf("progress told %d bytes of %d", reported, n)
			}
			plain = plain[n:]
		}
		return nil
	}
}

// destinations the Writer writes to: in order, and positionally (a file,
// written at offsets from where it was when the Writer started).
var destinations = []string{"in order", "file"}

// encryptTo encrypts plain with pattern into a fresh destination of kind dest
// and returns the bytes written.
func encryptTo(t *testing.T, key *SetKey, dest string, pattern writePattern, plain []byte) []byte {
	t.Helper()
	var dst io.Writer
	var buf bytes.Buffer
	var f *os.File
	lead := []byte("lead")
	switch dest {
	case "in order":
		dst = &buf
	case "file":
		var err error
		if f, err = os.Create(filepath.Join(t.TempDir(), "pages-1.img")); err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(lead); err != nil { // the Writer starts where the file is
			t.Fatal(err)
		}
		dst = f
	}
	w, err := key.NewWriter(dst, "pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.HashChunks(); err != nil {
		t.Fatal(err)
	}
	if dest == "file" && w.out.at == nil {
		t.Fatal("a file is not written positionally")
	}
	if err := pattern.write(w, plain); err != nil {
		t.Fatalf("%s: %v", pattern.name, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("%s: Close: %v", pattern.name, err)
	}
	if w.Size() != int64(len(plain)) {
		t.Fatalf("%s: Size %d, wrote %d", pattern.name, w.Size(), len(plain))
	}
	// The hashes the sealers kept are those of the stored chunks.
	defer func() {
		ct := buf.Bytes()
		if f != nil {
			data, _ := os.ReadFile(f.Name())
			ct = data[len(lead):]
		}
		want, err := HashStored(bytes.NewReader(ct), int64(len(ct)), true, "pages-1.img", nil)
		if err != nil || !bytes.Equal(w.ChunkHashes(), want) {
			t.Fatalf("%s to %s: the Writer's chunk hashes (%d) differ from the stored chunks' (%d, %v)",
				pattern.name, dest, w.ChunkHashes().Len(), want.Len(), err)
		}
	}()
	if f == nil {
		return buf.Bytes()
	}
	// Close leaves the offset at the end, where writing in order would have.
	pos, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(lead)) + CiphertextSize(int64(len(plain))); pos != want {
		t.Fatalf("%s: file offset %d after Close, want %d", pattern.name, pos, want)
	}
	data, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, lead) {
		t.Fatalf("%s: the bytes before the Writer's start were overwritten", pattern.name)
	}
	return data[len(lead):]
}

// TestWriterMatchesGolden checks that the Writer, whatever the sizes of the
// writes and wherever it writes, produces the very bytes the earlier in-order
// Writer produced (testdata/stream-golden.txt), and the bytes of EncryptAt.
func TestWriterMatchesGolden(t *testing.T) {
	data, err := os.ReadFile("testdata/stream-golden.txt")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			kv[k] = v
		}
		alg, _ := strconv.Atoi(kv["alg"])
		size, _ := strconv.Atoi(kv["size"])
		key := newSetKeyFrom(bytes.Repeat([]byte{7}, FileKeySize), SetID{1, 2, 3}, Algorithm(alg), 1)
		plain := testPlain(size)
		at := newMemFile()
		if _, _, err := key.EncryptAt(at, bytes.NewReader(plain), int64(size), "pages-1.img", nil, false); err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(at.data); hex.EncodeToString(sum[:]) != kv["sha256"] {
			t.Fatalf("%s: EncryptAt differs", line)
		}
		for di, dest := range destinations {
			for i, p := range writePatterns {
				if size > 3*batchPlain && i%2 == 1 {
					continue // half the patterns are enough for the largest sizes
				}
				// make test: a third of the patterns per size and destination, a different
				// third each time, so that every pattern meets small and large sizes.
				if !testlong.Sample(i, 3, checked+di) {
					continue
				}
				ct := encryptTo(t, key, dest, p, plain)
				if sum := sha256.Sum256(ct); hex.EncodeToString(sum[:]) != kv["sha256"] {
					t.Fatalf("%s: %s to %s: ciphertext of %d bytes differs", line, p.name, dest, len(ct))
				}
			}
		}
		checked++
	}
	if checked < 10 {
		t.Fatalf("checked %d sizes", checked)
	}
}

// failingWriter fails the write that would take it past limit bytes.
type failingWriter struct {
	buf   bytes.Buffer
	limit int
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.buf.Len()+len(p) > f.limit {
		return 0, errDiskFull
	}
	return f.buf.Write(p)
}

// failingFile is a positional destination whose writes at or past limit fail.
type failingFile struct {
	*memFile
	limit int64
	pos   int64
}

func (f *failingFile) Write(p []byte) (int, error) {
	n, err := f.WriteAt(p, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *failingFile) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.limit {
		return 0, errDiskFull
	}
	return f.memFile.WriteAt(p, off)
}

func (f *failingFile) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || off != 0 {
		f.pos = off
	}
	return f.pos, nil
}

// TestWriterReportsWriteErrors checks that a failing write, in order or at an
// offset, is reported by Write or at the latest by Close, for failures early,
// in the middle and at the very last chunk, and that nothing is written after it
// in order.
func TestWriterReportsWriteErrors(t *testing.T) {
	key, err := NewSetKey(AES256GCM)
	if err != nil {
		t.Fatal(err)
	}
	size := 5*batchPlain + 123
	plain := testPlain(size)
	full := int(CiphertextSize(int64(size)))
	for li, limit := range []int{PrefixSize + 10, PrefixSize + batchCT + 7, full / 2, full - 1} {
		for di, dest := range []string{"in order", "file"} {
			for pi, p := range writePatterns {
				if !testlong.Sample(pi, 3, li*2+di) {
					continue
				}
				var dst io.Writer
				fw := &failingWriter{limit: limit}
				ff := &failingFile{memFile: newMemFile(), limit: int64(limit)}
				if dest == "in order" {
					dst = fw
				} else {
					dst = ff
				}
				w, err := key.NewWriter(dst, "pages-1.img")
				if err != nil {
					t.Fatal(err)
				}
				werr := p.write(w, plain)
				cerr := w.Close()
				name := fmt.Sprintf("limit %d, %s, %s", limit, dest, p.name)
				if !errors.Is(werr, errDiskFull) && !errors.Is(cerr, errDiskFull) {
					t.Fatalf("%s: write error %v, close error %v; want the disk full error", name, werr, cerr)
				}
				if werr != nil && !errors.Is(cerr, errDiskFull) {
					t.Fatalf("%s: Close after a failed Write says %v", name, cerr)
				}
				if dest == "in order" && fw.buf.Len() > limit {
					t.Fatalf("%s: %d bytes written past the failure", name, fw.buf.Len())
				}
			}
		}
	}
}

// TestWriterAppendFileInOrder checks that a file opened for appending, which
// refuses positional writes, is written in order.
func TestWriterAppendFileInOrder(t *testing.T) {
	key, err := NewSetKey(AES256GCM)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pages-1.img")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := key.NewWriter(f, "pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	if w.out.at != nil {
		t.Fatal("an O_APPEND file is written positionally")
	}
	plain := testPlain(3*batchPlain + 5)
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ct, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi := w.Info()
	fi.Size = -1
	if got, err := key.Decrypt(ct, fi); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("does not decrypt: %v", err)
	}
}

// TestWriterAbort checks that an aborted Writer writes no final chunk and
// refuses further writes.
func TestWriterAbort(t *testing.T) {
	key, err := NewSetKey(AES256GCM)
	if err != nil {
		t.Fatal(err)
	}
	for _, dest := range destinations {
		dst := &failingFile{memFile: newMemFile(), limit: 1 << 40}
		var out io.Writer = dst
		var buf bytes.Buffer
		if dest == "in order" {
			out = &buf
		}
		w, err := key.NewWriter(out, "pages-1.img")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(testPlain(4*batchPlain + 9)); err != nil {
			t.Fatal(err)
		}
		w.Abort()
		if _, err := w.Write([]byte{1}); err == nil {
			t.Fatalf("%s: Write after Abort succeeded", dest)
		}
		if err := w.Close(); err == nil {
			t.Fatalf("%s: Close after Abort succeeded", dest)
		}
		written := buf.Bytes()
		if dest == "file" {
			written = dst.data
		}
		if int64(len(written)) >= CiphertextSize(4*batchPlain+9) {
			t.Fatalf("%s: an aborted file is complete (%d bytes)", dest, len(written))
		}
	}
}

// failingReaderAt fails every read that reaches past limit.
type failingReaderAt struct {
	r     io.ReaderAt
	limit int64
}

var errSource = errors.New("source failed")

func (f failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.limit {
		return 0, errSource
	}
	return f.r.ReadAt(p, off)
}

// TestWriterReadFromAtFails checks that a failing source fails ReadFromAt and
// every later call, whichever chunk fails, and leaves no complete file.
func TestWriterReadFromAtFails(t *testing.T) {
	key := newSetKeyFrom(bytes.Repeat([]byte{7}, FileKeySize), SetID{1, 2, 3}, AES256GCM, HeaderVersion)
	plain := testPlain(40*unitPlain + 123)
	for _, dest := range destinations {
		for _, limit := range []int64{0, ChunkSize + 1, 17 * unitPlain, int64(len(plain)) - 1} {
			var buf bytes.Buffer
			var dst io.Writer = &buf
			if dest == "file" {
				f, err := os.Create(filepath.Join(t.TempDir(), "pages-1.img"))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				dst = f
			}
			w, err := key.NewWriter(dst, "pages-1.img")
			if err != nil {
				t.Fatal(err)
			}
			src := failingReaderAt{bytes.NewReader(plain), limit}
			if err := w.ReadFromAt(src, int64(len(plain)), nil); !errors.Is(err, errSource) {
				t.Fatalf("%s, limit %d: ReadFromAt: %v, want the source's error", dest, limit, err)
			}
			if _, err := w.Write([]byte("x")); err == nil {
				t.Fatalf("%s, limit %d: Write after a failed ReadFromAt succeeded", dest, limit)
			}
			if err := w.Close(); err == nil {
				t.Fatalf("%s, limit %d: Close after a failed ReadFromAt succeeded", dest, limit)
			}
		}
	}
}
