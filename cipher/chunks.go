package cipher

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"
)

// What a signature commits to: the SHA-256 of every stored chunk of every file.
//
// A stored file is cut into chunks the way its readers already cut it: an
// encrypted file into its sealed chunks (ciphertext and tag, after the prefix),
// a plain file into blocks of ChunkSize bytes. Each chunk is hashed where it is
// sealed, authenticated or decrypted, on the same core, while it is in that
// core's cache, so a signature costs one SHA-256 of the bytes on top of the
// work a writer or reader does anyway, and no second pass over the set. The
// signature lists every hash, so any chunk is checked on its own: pages stay
// randomly readable. An AEAD tag would not do: whoever holds a set's file key
// can make another ciphertext with the same tag; SHA-256 is collision resistant.

// HashSize is the size of a chunk hash (SHA-256).
const HashSize = sha256.Size

// ChunkHashes are the SHA-256 of a file's stored chunks, in order, each HashSize
// bytes, one after the other.
type ChunkHashes []byte

// Len returns the number of hashes.
func (c ChunkHashes) Len() int { return len(c) / HashSize }

// At returns hash i.
func (c ChunkHashes) At(i int) []byte { return c[i*HashSize : (i+1)*HashSize] }

// put stores the hash of chunk i, when c is not nil.
func (c ChunkHashes) put(i uint64, chunk []byte) {
	if c != nil {
		h := sha256.Sum256(chunk)
		copy(c[i*HashSize:], h[:])
	}
}

// matches reports whether chunk is the one whose hash is i.
func (c ChunkHashes) matches(i int64, chunk []byte) bool {
	h := sha256.Sum256(chunk)
	return i >= 0 && i < int64(c.Len()) && bytes.Equal(c.At(int(i)), h[:])
}

// checkHashCount refuses to hash more chunks than a signature can list (a file
// of about 2 TiB), before the hashes are allocated.
func checkHashCount(name string, chunks int64) error {
	if chunks > MaxSignFileSize/HashSize {
		return fmt.Errorf("%s: %d chunks: more than a signature can list (%d bytes of hashes at most)", name, chunks, int64(MaxSignFileSize))
	}
	return nil
}

// StoredChunks returns the number of chunks of a stored file of size bytes: the
// sealed chunks of an encrypted file (at least one), the ChunkSize blocks of a
// plain one (none when it is empty). An encrypted file of a size no plaintext
// encrypts to is an error.
func StoredChunks(size int64, encrypted bool) (int64, error) {
	if size < 0 {
		return 0, fmt.Errorf("%w: size %d", ErrMalformed, size)
	}
	if !encrypted {
		return (size + ChunkSize - 1) / ChunkSize, nil
	}
	plain, err := PlaintextSize(size)
	if err != nil {
		return 0, err
	}
	return numChunks(plain), nil
}

// storedLayout is where the chunks of a stored file are.
type storedLayout struct {
	size      int64 // stored size
	plain     int64 // plaintext size (the stored size of a plain file)
	chunks    int64
	encrypted bool
}

func layoutOf(size int64, encrypted bool) (storedLayout, error) {
	n, err := StoredChunks(size, encrypted)
	if err != nil {
		return storedLayout{}, err
	}
	l := storedLayout{size: size, plain: size, chunks: n, encrypted: encrypted}
	if encrypted {
		l.plain, _ = PlaintextSize(size)
	}
	return l, nil
}

// chunk returns the offset and length of stored chunk i.
func (l storedLayout) chunk(i int64) (int64, int) {
	if l.encrypted {
		return int64(PrefixSize) + i*chunkCT, chunkPlainLen(l.plain, i) + TagSize
	}
	return i * ChunkSize, chunkPlainLen(l.size, i)
}

// HashStored returns the SHA-256 of every stored chunk of the file name of size
// bytes in src (encrypted or plain, see StoredChunks), reading a batch of chunks
// at a time on pipelineWorkers goroutines. It reads the stored bytes as they are:
// it checks no prefix, tag or signature. progress is as for EncryptAt.
func HashStored(src io.ReaderAt, size int64, encrypted bool, name string, progress func(int64)) (ChunkHashes, error) {
	l, err := layoutOf(size, encrypted)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := checkHashCount(name, l.chunks); err != nil {
		return nil, err
	}
	hashes := make(ChunkHashes, l.chunks*HashSize)
	err = l.eachBatch(src, name, progress, func(i int64, chunk []byte) error {
		hashes.put(uint64(i), chunk)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return hashes, nil
}

// CheckStored checks every stored chunk of the file name of size bytes in src
// against want, the hashes a verified signature lists for it, on
// pipelineWorkers goroutines; the error is the first chunk in file order that
// differs (ErrSignedChunk). It checks nothing else (no tag): for a plain file,
// or an encrypted one read without its key.
func CheckStored(src io.ReaderAt, size int64, encrypted bool, want ChunkHashes, name string, progress func(int64)) error {
	l, err := layoutOf(size, encrypted)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if int64(want.Len()) != l.chunks || len(want)%HashSize != 0 {
		return errorf(ErrSignedChunk, name, -1, "the signature lists %d chunks, the file has %d", want.Len(), l.chunks)
	}
	return l.eachBatch(src, name, progress, func(i int64, chunk []byte) error {
		if !want.matches(i, chunk) {
			off, _ := l.chunk(i)
			return errorf(ErrSignedChunk, name, off, "chunk %d of %d is not the one signed", i, l.chunks)
		}
		return nil
	})
}

// eachBatch reads the stored chunks a batch at a time (one read per batch into
// the goroutine's buffer) and calls do on each chunk, on pipelineWorkers
// goroutines; the error is that of the first failing batch in file order.
func (l storedLayout) eachBatch(src io.ReaderAt, name string, progress func(int64), do func(i int64, chunk []byte) error) error {
	return runBatches(l.chunks, l.plain, batchChunks, progress, func(b int64, buf []byte) error {
		first := b * batchChunks
		n := min(batchChunks, l.chunks-first)
		off, _ := l.chunk(first)
		lastOff, lastLen := l.chunk(first + n - 1)
		span := buf[:lastOff+int64(lastLen)-off]
		if err := readFull(src, span, off); err != nil {
			return &Error{File: name, Offset: off + int64(errOffset(err)), Reason: fmt.Sprintf("reading chunk %d: %v", first, err), Err: err}
		}
		for i := first; i < first+n; i++ {
			at, clen := l.chunk(i)
			if err := do(i, span[at-off:at-off+int64(clen)]); err != nil {
				return err
			}
		}
		return nil
	})
}

// SignedReaderAt reads a plain file whose blocks a verified signature lists:
// every byte it returns comes from a block whose SHA-256 it has just checked. A
// read of whole blocks is read into the caller's buffer and checked there; any
// other read goes through a one-block cache. It is safe for concurrent use.
type SignedReaderAt struct {
	src    io.ReaderAt
	name   string
	l      storedLayout
	hashes ChunkHashes

	mu     sync.Mutex
	cached int64 // the block in buf, -1 when none
	buf    []byte
}

// NewSignedReaderAt returns a reader of the plain file name of size bytes in src
// whose block hashes are hashes.
func NewSignedReaderAt(src io.ReaderAt, size int64, name string, hashes ChunkHashes) (*SignedReaderAt, error) {
	l, err := layoutOf(size, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(hashes.Len()) != l.chunks || len(hashes)%HashSize != 0 {
		return nil, errorf(ErrSignedChunk, name, -1, "the signature lists %d blocks, the file has %d", hashes.Len(), l.chunks)
	}
	return &SignedReaderAt{src: src, name: name, l: l, hashes: hashes, cached: -1}, nil
}

// Size returns the file's size.
func (r *SignedReaderAt) Size() int64 { return r.l.size }

// ReadAt implements io.ReaderAt.
func (r *SignedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", r.name, off)
	}
	n := 0
	for n < len(p) && off < r.l.size {
		idx := off / ChunkSize
		if whole := r.wholeBlocks(idx, off, len(p)-n); whole > 0 {
			// Whole blocks: read where the caller wants them and checked there.
			end := min(r.l.size, (idx+whole)*ChunkSize)
			dst := p[n : n+int(end-off)]
			if err := readFull(r.src, dst, off); err != nil {
				return n, &Error{File: r.name, Offset: off + int64(errOffset(err)), Reason: fmt.Sprintf("reading block %d: %v", idx, err), Err: err}
			}
			for i := int64(0); i < whole; i++ {
				lo := i * ChunkSize
				if err := r.check(idx+i, dst[lo:min(int64(len(dst)), lo+ChunkSize)]); err != nil {
					return n + int(lo), err
				}
			}
			n += len(dst)
			off = end
			continue
		}
		c, err := r.copyCached(p[n:], idx, off)
		n += c
		off += int64(c)
		if err != nil {
			return n, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// wholeBlocks returns how many whole blocks from block idx a read at off of room
// bytes takes in full (the last block of the file may be short); 0 when off is
// not at the start of a block or the first block does not fit.
func (r *SignedReaderAt) wholeBlocks(idx, off int64, room int) int64 {
	if off != idx*ChunkSize {
		return 0
	}
	end := min(r.l.size, off+int64(room))
	if end == r.l.size {
		return r.l.chunks - idx
	}
	return (end - off) / ChunkSize
}

// copyCached copies from block idx, at off, through the cache.
func (r *SignedReaderAt) copyCached(p []byte, idx, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, clen := r.l.chunk(idx)
	if r.cached != idx {
		if r.buf == nil {
			r.buf = make([]byte, ChunkSize)
		}
		r.cached = -1
		if err := readFull(r.src, r.buf[:clen], at); err != nil {
			return 0, &Error{File: r.name, Offset: at + int64(errOffset(err)), Reason: fmt.Sprintf("reading block %d: %v", idx, err), Err: err}
		}
		if err := r.check(idx, r.buf[:clen]); err != nil {
			return 0, err
		}
		r.cached = idx
	}
	return copy(p, r.buf[off-at:clen]), nil
}

func (r *SignedReaderAt) check(idx int64, block []byte) error {
	if r.hashes.matches(idx, block) {
		return nil
	}
	return errorf(ErrSignedChunk, r.name, idx*ChunkSize, "block %d of %d is not the one signed", idx, r.l.chunks)
}
