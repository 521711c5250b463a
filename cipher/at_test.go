package cipher

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
)

// memFile is an in-memory io.WriterAt that records which bytes were written.
type memFile struct {
	mu      sync.Mutex
	data    []byte
	written []bool
	failAt  int64 // a write at this offset fails; -1: none
}

func newMemFile() *memFile { return &memFile{failAt: -1} }

var errDiskFull = errors.New("disk full")

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off == m.failAt {
		return 0, errDiskFull
	}
	if end := int(off) + len(p); end > len(m.data) {
		m.data = append(m.data, make([]byte, end-len(m.data))...)
		m.written = append(m.written, make([]bool, end-len(m.written))...)
	}
	copy(m.data[off:], p)
	for i := range p {
		m.written[int(off)+i] = true
	}
	return len(p), nil
}

func testPlain(size int) []byte {
	plain := make([]byte, size)
	for i := range plain {
		plain[i] = byte(i*7/5 + i>>16)
	}
	return plain
}

// testFile is a file of a set with a fixed nonce, for tests that encrypt the
// same file several ways and compare the bytes.
func testFile(name string) FileInfo {
	return FileInfo{Name: name, Size: -1, Nonce: FileNonce{0xf1, 0x1e}}
}

// streamEncrypt encrypts plain as the file f with the streaming Writer.
func streamEncrypt(t *testing.T, key *SetKey, f FileInfo, plain []byte) []byte {
	t.Helper()
	var ct bytes.Buffer
	w, err := key.newWriter(&ct, f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return ct.Bytes()
}

// TestEncryptAtMatchesStream checks that the positional path writes exactly the
// bytes of the stream, and that DecryptAt gives the plaintext back, with progress
// adding up to the size, at every batch boundary.
func TestEncryptAtMatchesStream(t *testing.T) {
	for _, alg := range []Algorithm{AES256GCM, ChaCha20Poly1305} {
		key, err := NewSetKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, batchPlain - 1, batchPlain,
			batchPlain + 1, 2*batchPlain + ChunkSize, 5*batchPlain + 17} {
			plain := testPlain(size)
			ct := newMemFile()
			var progress int64
			f := testFile("pages-1.img")
			hashes, err := key.encryptAt(ct, bytes.NewReader(plain), int64(size), f, func(n int64) { progress += n }, true)
			if err != nil {
				t.Fatalf("%v, size %d: %v", alg, size, err)
			}
			if want := streamEncrypt(t, key, f, plain); !bytes.Equal(ct.data, want) {
				t.Fatalf("%v, size %d: EncryptAt wrote %d bytes that differ from the stream's %d", alg, size, len(ct.data), len(want))
			}
			if progress != int64(size) {
				t.Errorf("%v, size %d: encrypt progress added up to %d", alg, size, progress)
			}
			if want, err := HashStored(bytes.NewReader(ct.data), int64(len(ct.data)), true, "f", nil); err != nil || !bytes.Equal(hashes, want) {
				t.Fatalf("%v, size %d: EncryptAt's chunk hashes differ from the stored chunks' (%v)", alg, size, err)
			}
			f.Size = int64(size)
			r, err := key.NewReaderAt(bytes.NewReader(ct.data), int64(len(ct.data)), f)
			if err != nil {
				t.Fatal(err)
			}
			out := newMemFile()
			progress = 0
			if err := r.DecryptAt(out, func(n int64) { progress += n }); err != nil {
				t.Fatalf("%v, size %d: DecryptAt: %v", alg, size, err)
			}
			if !bytes.Equal(out.data, plain) || progress != int64(size) {
				t.Fatalf("%v, size %d: DecryptAt gave %d bytes (equal: %v), progress %d", alg, size, len(out.data), bytes.Equal(out.data, plain), progress)
			}
		}
	}
}

func TestEncryptAtErrors(t *testing.T) {
	key, _ := NewSetKey(AES256GCM)
	plain := testPlain(3*batchPlain + 100)
	// A source shorter than announced (a file that shrank) fails, naming the file.
	_, _, err := key.EncryptAt(newMemFile(), bytes.NewReader(plain[:2*batchPlain+5]), int64(len(plain)), "pages-1.img", nil, false)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short source: %v, want io.ErrUnexpectedEOF", err)
	}
	// A failing write is reported.
	dst := newMemFile()
	dst.failAt = PrefixSize + 2*batchCT
	if _, _, err := key.EncryptAt(dst, bytes.NewReader(plain), int64(len(plain)), "pages-1.img", nil, true); !errors.Is(err, errDiskFull) {
		t.Errorf("failing write: %v, want %v", err, errDiskFull)
	}
	if _, _, err := key.EncryptAt(newMemFile(), bytes.NewReader(nil), -1, "x", nil, false); err == nil {
		t.Error("negative size: no error")
	}
}

// TestDecryptAtWritesOnlyAuthenticated damages chunks in two batches of a file:
// DecryptAt reports the first, and never writes a byte of a batch that failed.
func TestDecryptAtWritesOnlyAuthenticated(t *testing.T) {
	key, _ := NewSetKey(AES256GCM)
	plain := testPlain(4*batchPlain + 1000)
	f := testFile("pages-1.img")
	ct := streamEncrypt(t, key, f, plain)
	bad := bytes.Clone(ct)
	firstBad := int64(batchChunks + 3) // in batch 1
	bad[PrefixSize+firstBad*chunkCT+10] ^= 1
	bad[PrefixSize+(3*batchChunks+1)*chunkCT+10] ^= 1 // in batch 3
	f.Size = int64(len(plain))
	r, err := key.NewReaderAt(bytes.NewReader(bad), int64(len(bad)), f)
	if err != nil {
		t.Fatal(err)
	}
	out := newMemFile()
	err = r.DecryptAt(out, nil)
	var ce *Error
	if !errors.As(err, &ce) || !errors.Is(err, ErrChunkAuth) || ce.Offset != PrefixSize+firstBad*chunkCT {
		t.Fatalf("got %v, want ErrChunkAuth at chunk %d", err, firstBad)
	}
	for i, w := range out.written {
		if !w {
			continue
		}
		if b := i / batchPlain; b == 1 || b == 3 {
			t.Fatalf("byte %d of failed batch %d written", i, b)
		}
		if out.data[i] != plain[i] {
			t.Fatalf("byte %d written wrong", i)
		}
	}
}

// TestDecryptEach checks that DecryptEach hands over every byte of the plaintext
// once, at its offset, in consecutive chunks, with progress adding up to the size;
// and that a damaged chunk fails it with the chunk's error while no put ever sees
// that chunk.
func TestDecryptEach(t *testing.T) {
	for _, alg := range []Algorithm{AES256GCM, ChaCha20Poly1305} {
		key, err := NewSetKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{0, 1, ChunkSize, ChunkSize + 1, unitPlain - 1, unitPlain, unitPlain + 1,
			batchPlain + 17, 7*unitPlain + ChunkSize} {
			plain := testPlain(size)
			f := testFile("pages-1.img")
			ct := streamEncrypt(t, key, f, plain)
			f.Size = int64(size)
			last := int(numChunks(int64(size))) - 1
			for _, damaged := range []int{-1, 0, last / 2, last} {
				data := append([]byte(nil), ct...)
				if damaged >= 0 {
					data[PrefixSize+damaged*chunkCT+3] ^= 1
				}
				r, err := key.NewReaderAt(bytes.NewReader(data), int64(len(data)), f)
				if err != nil {
					t.Fatal(err)
				}
				got := newMemFile()
				var progress int64
				err = r.DecryptEach(func(chunks [][]byte, off int64) error {
					if off%ChunkSize != 0 || len(chunks) == 0 || len(chunks) > unitChunks {
						return errors.New("a unit not on a chunk boundary, or of a bad count of chunks")
					}
					for _, c := range chunks {
						if damaged >= 0 && off/ChunkSize == int64(damaged) {
							return errors.New("the damaged chunk was handed out")
						}
						if _, err := got.WriteAt(c, off); err != nil {
							return err
						}
						off += int64(len(c))
					}
					return nil
				}, func(n int64) { progress += n })
				if damaged >= 0 {
					if !errors.Is(err, ErrChunkAuth) {
						t.Fatalf("%v, size %d, chunk %d damaged: %v, want ErrChunkAuth", alg, size, damaged, err)
					}
					var e *Error
					if !errors.As(err, &e) || e.Offset != int64(PrefixSize+damaged*chunkCT) {
						t.Fatalf("%v, size %d, chunk %d damaged: error %v names the wrong place", alg, size, damaged, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%v, size %d: %v", alg, size, err)
				}
				if !bytes.Equal(got.data, plain) || progress != int64(size) {
					t.Fatalf("%v, size %d: plaintext differs, or progress %d", alg, size, progress)
				}
				for i, w := range got.written {
					if !w {
						t.Fatalf("%v, size %d: byte %d never handed out", alg, size, i)
					}
				}
			}
		}
	}
}
