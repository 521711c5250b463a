package cipher

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
)

// sequentialHashes hashes the stored chunks of data one after the other, the
// plain way, to check the parallel and in-pass hashing against.
func sequentialHashes(data []byte, encrypted bool) ChunkHashes {
	l, err := layoutOf(int64(len(data)), encrypted)
	if err != nil {
		panic(err)
	}
	var out ChunkHashes
	for i := int64(0); i < l.chunks; i++ {
		off, n := l.chunk(i)
		h := sha256.Sum256(data[off : off+int64(n)])
		out = append(out, h[:]...)
	}
	return out
}

func TestStoredChunks(t *testing.T) {
	for _, tc := range []struct {
		size      int64
		encrypted bool
		want      int64
	}{
		{0, false, 0}, {1, false, 1}, {ChunkSize, false, 1}, {ChunkSize + 1, false, 2},
		{CiphertextSize(0), true, 1}, {CiphertextSize(ChunkSize), true, 1}, {CiphertextSize(ChunkSize + 1), true, 2},
		{CiphertextSize(5*ChunkSize + 3), true, 6},
	} {
		if n, err := StoredChunks(tc.size, tc.encrypted); err != nil || n != tc.want {
			t.Errorf("StoredChunks(%d, %v) = %d, %v; want %d", tc.size, tc.encrypted, n, err, tc.want)
		}
	}
	for _, size := range []int64{-1, 0, PrefixSize, PrefixSize + TagSize + chunkCT} {
		if _, err := StoredChunks(size, true); !errors.Is(err, ErrMalformed) {
			t.Errorf("StoredChunks(%d, encrypted): %v, want ErrMalformed", size, err)
		}
	}
}

// TestHashStored checks the parallel hashing and checking of stored chunks
// against a sequential hash, for plain and encrypted files of every shape, and
// that CheckStored names the first chunk that differs.
func TestHashStored(t *testing.T) {
	key, _ := NewSetKey(AES256GCM)
	for _, size := range []int{0, 1, ChunkSize, ChunkSize + 1, batchPlain, batchPlain + 1, 3*batchPlain + 7} {
		plain := testPlain(size)
		f := testFile("pages-1.img")
		for _, stored := range []struct {
			data      []byte
			encrypted bool
		}{{plain, false}, {streamEncrypt(t, key, f, plain), true}} {
			data, enc := stored.data, stored.encrypted
			want := sequentialHashes(data, enc)
			var progress int64
			got, err := HashStored(bytes.NewReader(data), int64(len(data)), enc, "f", func(n int64) { progress += n })
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("size %d, encrypted %v: hashes differ (%v)", size, enc, err)
			}
			if progress != int64(size) {
				t.Errorf("size %d, encrypted %v: progress %d", size, enc, progress)
			}
			if err := CheckStored(bytes.NewReader(data), int64(len(data)), enc, want, "f", nil); err != nil {
				t.Fatalf("size %d, encrypted %v: %v", size, enc, err)
			}
			n := want.Len()
			if n == 0 {
				continue
			}
			l, _ := layoutOf(int64(len(data)), enc)
			bad := bytes.Clone(data)
			for _, i := range slices.Compact([]int{n - 1, n / 2}) { // the later one first
				off, clen := l.chunk(int64(i))
				bad[off+int64(clen)-1] ^= 1
			}
			err = CheckStored(bytes.NewReader(bad), int64(len(bad)), enc, want, "f", nil)
			off, _ := l.chunk(int64(n / 2))
			var e *Error
			if !errors.Is(err, ErrSignedChunk) || !errors.As(err, &e) || e.Offset != off {
				t.Fatalf("size %d, encrypted %v: %v, want ErrSignedChunk at %d", size, enc, err, off)
			}
			if err := CheckStored(bytes.NewReader(data), int64(len(data)), enc, want[HashSize:], "f", nil); !errors.Is(err, ErrSignedChunk) {
				t.Fatalf("size %d: a list one hash short: %v", size, err)
			}
		}
	}
}

// TestForgeryByKeyHolder is the attack the chunk hashes exist for: a recipient,
// who holds the file key, writes other plaintext under the very key and nonce of
// a signed file. Every chunk of the forgery authenticates, but none of the
// forged chunks gets past the signed hashes, on any way of reading, and no byte
// of one is handed out.
func TestForgeryByKeyHolder(t *testing.T) {
	key, _ := NewSetKey(AES256GCM)
	size := 3*batchPlain + 2*ChunkSize + 99
	plain := testPlain(size)
	f := testFile("pages-1.img")
	genuine := streamEncrypt(t, key, f, plain)
	signed := sequentialHashes(genuine, true)
	evil := bytes.Clone(plain)
	forgedChunk := int64(batchChunks + 2)
	copy(evil[forgedChunk*ChunkSize:], "rm -rf / # forged by a recipient")
	holder := newSetKeyFrom(key.fileKey[:], key.id, key.algorithm, key.version)
	forged := streamEncrypt(t, holder, f, evil)
	f.Size = int64(size)

	r, err := key.NewReaderAt(bytes.NewReader(forged), int64(len(forged)), f)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(nil); err != nil {
		t.Fatalf("the forgery does not even authenticate: %v", err)
	}
	open := func() *ReaderAt {
		r, err := key.NewReaderAt(bytes.NewReader(forged), int64(len(forged)), f)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.CheckSigned(signed); err != nil {
			t.Fatal(err)
		}
		return r
	}
	forgedAt := int64(PrefixSize) + forgedChunk*chunkCT
	isForged := func(what string, err error) {
		t.Helper()
		var e *Error
		if !errors.Is(err, ErrSignedChunk) || !errors.As(err, &e) || e.Offset != forgedAt {
			t.Errorf("%s: %v, want ErrSignedChunk at %d", what, err, forgedAt)
		}
	}
	isForged("Verify", open().Verify(nil))
	var sink bytes.Buffer
	_, err = open().WriteTo(&sink)
	isForged("WriteTo", err)
	if int64(sink.Len()) > forgedChunk*ChunkSize {
		t.Errorf("WriteTo handed out %d bytes, past the forged chunk at %d", sink.Len(), forgedChunk*ChunkSize)
	}
	out := newMemFile()
	isForged("DecryptAt", open().DecryptAt(out, nil))
	for i, w := range out.written {
		if w && int64(i)/ChunkSize == forgedChunk {
			t.Fatalf("DecryptAt wrote byte %d of the forged chunk", i)
		}
	}
	isForged("DecryptEach", open().DecryptEach(func(chunks [][]byte, off int64) error {
		for _, c := range chunks {
			if off/ChunkSize == forgedChunk {
				return errors.New("the forged chunk was handed out")
			}
			off += int64(len(c))
		}
		return nil
	}, nil))
	ra := open()
	buf := make([]byte, 2*ChunkSize)
	n, err := ra.ReadAt(buf, forgedChunk*ChunkSize-10)
	isForged("ReadAt", err)
	if n != 10 {
		t.Errorf("ReadAt returned %d bytes before the forged chunk, want 10", n)
	}
	if _, err := ra.ReadAt(buf[:100], 0); err != nil {
		t.Errorf("ReadAt of a genuine chunk: %v", err)
	}
	// The genuine file passes every way.
	g, _ := key.NewReaderAt(bytes.NewReader(genuine), int64(len(genuine)), f)
	if err := g.CheckSigned(signed); err != nil {
		t.Fatal(err)
	}
	if err := g.Verify(nil); err != nil {
		t.Fatalf("genuine file: %v", err)
	}
	sink.Reset()
	if _, err := g.WriteTo(&sink); err != nil || !bytes.Equal(sink.Bytes(), plain) {
		t.Fatalf("genuine file: WriteTo: %v", err)
	}
	if err := g.CheckSigned(signed[:len(signed)-1]); !errors.Is(err, ErrSignedChunk) {
		t.Errorf("a list of the wrong length: %v", err)
	}
}

// TestSignedReaderAt reads a plain file at random offsets and sizes, whole
// blocks and pieces, through the check, with one block changed since signing:
// every read that does not touch it returns the file's bytes, every read that
// does fails at it with ErrSignedChunk and returns only the bytes before it.
func TestSignedReaderAt(t *testing.T) {
	for _, size := range []int{0, 1, ChunkSize, 3*ChunkSize + 5, 20 * ChunkSize} {
		data := testPlain(size)
		hashes := sequentialHashes(data, false)
		bad := bytes.Clone(data)
		badBlock := int64(-1)
		if size > 2*ChunkSize {
			badBlock = 2
			bad[badBlock*ChunkSize+7] ^= 1
		}
		r, err := NewSignedReaderAt(bytes.NewReader(bad), int64(size), "f", hashes)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(5, uint64(size)))
		for i := range 300 {
			off := int64(rng.IntN(size + 1))
			n := rng.IntN(4 * ChunkSize)
			if i%3 == 0 { // whole blocks, as readAhead reads
				off = off / ChunkSize * ChunkSize
				n = (1 + rng.IntN(5)) * ChunkSize
			}
			buf := make([]byte, n)
			m, err := r.ReadAt(buf, off)
			end := min(int64(size), off+int64(n))
			touches := badBlock >= 0 && off < (badBlock+1)*ChunkSize && end > badBlock*ChunkSize
			switch {
			case touches:
				want := max(0, badBlock*ChunkSize-off)
				if !errors.Is(err, ErrSignedChunk) || int64(m) > want || !bytes.Equal(buf[:m], data[off:off+int64(m)]) {
					t.Fatalf("size %d: ReadAt(%d, %d) over the changed block = %d, %v", size, n, off, m, err)
				}
			default:
				if int64(m) != end-off || (err != nil && err != io.EOF) || (err == nil && int64(m) < int64(n)) ||
					!bytes.Equal(buf[:m], data[off:end]) {
					t.Fatalf("size %d: ReadAt(%d, %d) = %d, %v", size, n, off, m, err)
				}
			}
		}
		if _, err := NewSignedReaderAt(bytes.NewReader(data), int64(size)+ChunkSize, "f", hashes); err == nil {
			t.Errorf("size %d: a size the hashes do not fit was accepted", size)
		}
	}
}

// TestHashCountLimit checks that nothing hashes a file whose chunk hashes a
// signature could not hold, before allocating them.
func TestHashCountLimit(t *testing.T) {
	huge := int64(MaxSignFileSize/HashSize+1) * ChunkSize
	if _, err := HashStored(bytes.NewReader(nil), huge, false, "huge", nil); err == nil {
		t.Error("HashStored of a file too large to sign")
	}
	key, _ := NewSetKey(AES256GCM)
	if _, _, err := key.EncryptAt(newMemFile(), bytes.NewReader(nil), huge, "huge", nil, true); err == nil {
		t.Error("EncryptAt hashing a file too large to sign")
	}
	var ct bytes.Buffer
	w, _ := key.NewWriter(&ct, "huge")
	w.HashChunks()
	w.hashes = make(ChunkHashes, 0)
	if err := w.growHashes(uint64(MaxSignFileSize/HashSize + 1)); err == nil {
		t.Error("a Writer kept more chunk hashes than a signature can list")
	}
}
