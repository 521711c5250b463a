package cipher

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// Whole-file encryption and decryption between files at known offsets.
//
// Every chunk of an encrypted file has a fixed place (chunk i at PrefixSize +
// i*chunkCT, its plaintext at i*ChunkSize), so a whole file needs no ordered
// stream: each of pipelineWorkers goroutines takes the next batch, reads it with
// one positional read into its own buffer, seals or opens it there in place, and
// writes it at its own offset. Nothing is handed between goroutines, and each
// keeps one batch buffer hot in its cache, where the decrypting stream (WriteTo)
// passes every batch through a reader, openers and an in-order consumer and two
// buffers. (The encrypting stream, Writer, works much like this path when its
// destination takes positional writes.) How fast the reads and writes themselves
// are is up to dst and src (imgset gives files of tmpfs raw system calls).

// EncryptAt encrypts the size bytes at the start of src, the whole plaintext of
// a new file called name, into dst as that file's encrypted form: the prefix at
// offset 0 and each chunk at its place. dst should be empty; its bytes past the
// encrypted file are left alone. progress, if not nil, is called with the
// plaintext bytes done as batches are written, from the caller's goroutine.
// It returns the file's manifest entry (with its new nonce) and, with hash, the
// SHA-256 of every sealed chunk, each computed right after the chunk is sealed.
// On error dst holds an incomplete file, to be discarded.
func (k *SetKey) EncryptAt(dst io.WriterAt, src io.ReaderAt, size int64, name string, progress func(n int64), hash bool) (FileInfo, ChunkHashes, error) {
	if size < 0 || size > MaxFileSize {
		return FileInfo{}, nil, fmt.Errorf("%s: plaintext size %d out of range (0 to %d bytes)", name, size, int64(MaxFileSize))
	}
	f, err := k.NewFile(name)
	if err != nil {
		return FileInfo{}, nil, err
	}
	if err := k.take(f); err != nil {
		return FileInfo{}, nil, err
	}
	hashes, err := k.encryptAt(dst, src, size, f, progress, hash)
	if err != nil {
		return FileInfo{}, nil, err
	}
	f.Size = size
	return f, hashes, nil
}

// encryptAt is EncryptAt for the file f, whatever its nonce.
func (k *SetKey) encryptAt(dst io.WriterAt, src io.ReaderAt, size int64, f FileInfo, progress func(n int64), hash bool) (ChunkHashes, error) {
	name := f.Name
	aead, _, err := k.fileCipher(f, false)
	if err != nil {
		return nil, err
	}
	prefix := make([]byte, 0, PrefixSize)
	prefix = append(append(prefix, FileMagic...), k.id[:]...)
	if _, err := dst.WriteAt(prefix, 0); err != nil {
		return nil, err
	}
	chunks := numChunks(size)
	var hashes ChunkHashes
	if hash {
		if err := checkHashCount(name, chunks); err != nil {
			return nil, err
		}
		hashes = make(ChunkHashes, chunks*HashSize)
	}
	err = runBatches(chunks, size, batchChunks, progress, func(b int64, buf []byte) error {
		first := b * batchChunks
		n := int(min(batchChunks, chunks-first))
		plain := int(min(batchPlain, size-first*ChunkSize))
		// The plaintext is read to the start of buf, then each chunk is moved
		// to its sealed place (back to front, the places being further on) and
		// sealed there, since AEADs refuse a destination that only partly
		// overlaps the source.
		if err := readFull(src, buf[:plain], first*ChunkSize); err != nil {
			return fmt.Errorf("%s: reading plaintext at %d: %w", name, first*ChunkSize+int64(errOffset(err)), err)
		}
		ctLen := plain + n*TagSize
		for j := n - 1; j >= 0; j-- {
			lo, hi := j*ChunkSize, min((j+1)*ChunkSize, plain)
			at := j * chunkCT
			copy(buf[at:at+hi-lo], buf[lo:hi])
			idx := uint64(first) + uint64(j)
			nc := nonce(idx, idx == uint64(chunks-1))
			hashes.put(idx, aead.Seal(buf[at:at], nc[:], buf[at:at+hi-lo], nil))
		}
		_, err := dst.WriteAt(buf[:ctLen], int64(PrefixSize)+first*chunkCT)
		return err
	})
	if err != nil {
		return nil, err
	}
	return hashes, nil
}

// DecryptAt decrypts the whole file into dst, each plaintext byte at its offset in
// the file. Every chunk is authenticated before any of its plaintext is written,
// but batches are written as they are done, in no set order: on error dst holds
// only authenticated plaintext but may miss parts before the failing chunk, and
// is to be discarded. progress is as for EncryptAt.
func (r *ReaderAt) DecryptAt(dst io.WriterAt, progress func(n int64)) error {
	return runBatches(r.chunks, r.size, batchChunks, progress, func(b int64, buf []byte) error {
		j := openJob{first: b * batchChunks, n: int(min(batchChunks, r.chunks-b*batchChunks)), ct: buf}
		r.fill(&j)
		if j.err != nil {
			return j.err
		}
		// Each chunk is opened in place, then moved down over the tags before
		// it (front to back, the places being further back).
		ct, plain := j.ct, 0
		for i := 0; i < j.n; i++ {
			idx := j.first + int64(i)
			clen := chunkPlainLen(r.size, idx) + TagSize
			if err := r.checkSigned(idx, ct[:clen]); err != nil {
				return err
			}
			nc := nonce(uint64(idx), idx == r.chunks-1)
			if _, err := r.aead.Open(ct[:0], nc[:], ct[:clen], nil); err != nil {
				return errorf(ErrChunkAuth, r.name, int64(PrefixSize)+idx*chunkCT, "chunk %d of %d", idx, r.chunks)
			}
			plain += copy(buf[plain:], ct[:clen-TagSize])
			ct = ct[clen:]
		}
		_, err := dst.WriteAt(buf[:plain], j.first*ChunkSize)
		return err
	})
}

// openChunks chunks are DecryptEach's unit: read, opened and handed over while
// they are in the core's cache.
const openChunks = unitChunks

// DecryptEach decrypts the whole file and hands its plaintext to put, unit by
// unit: each call gets the authenticated plaintext of a few consecutive chunks, one
// slice per chunk, the first at offset off of the file. put is called from
// pipelineWorkers goroutines at once, in no set order, and must be done with the
// slices when it returns. progress is as for EncryptAt.
//
// It is the copy-free way out: each goroutine reads a unit's ciphertext into a
// buffer that stays in its cache and opens every chunk there in place, and put
// takes the plaintext from there. Every chunk is authenticated before put sees
// it. On error put may not have seen parts before the failing chunk; the error is
// that of the first failing unit in file order.
func (r *ReaderAt) DecryptEach(put func(chunks [][]byte, off int64) error, progress func(n int64)) error {
	return runBatches(r.chunks, r.size, openChunks, progress, func(b int64, buf []byte) error {
		j := openJob{first: b * openChunks, n: int(min(openChunks, r.chunks-b*openChunks)), ct: buf}
		r.fill(&j)
		if j.err != nil {
			return j.err
		}
		var chunks [openChunks][]byte
		ct := j.ct
		for i := 0; i < j.n; i++ {
			idx := j.first + int64(i)
			clen := chunkPlainLen(r.size, idx) + TagSize
			if err := r.checkSigned(idx, ct[:clen]); err != nil {
				return err
			}
			nc := nonce(uint64(idx), idx == r.chunks-1)
			plain, err := r.aead.Open(ct[:0], nc[:], ct[:clen], nil)
			if err != nil {
				return errorf(ErrChunkAuth, r.name, int64(PrefixSize)+idx*chunkCT, "chunk %d of %d", idx, r.chunks)
			}
			chunks[i] = plain
			ct = ct[clen:]
		}
		return put(chunks[:j.n], j.first*ChunkSize)
	})
}

// runBatches runs do on every batch of per chunks of a file of chunks chunks and
// size plaintext bytes, on pipelineWorkers goroutines (the caller's and helpers),
// each with its own buffer of one sealed batch. It stops at the first failure and
// returns the error of the first failing batch in file order.
func runBatches(chunks, size, per int64, progress func(int64), do func(b int64, buf []byte) error) error {
	batches := (chunks + per - 1) / per
	// A small file needs a buffer of its own size only, and no helper.
	bufLen := int(min(per*chunkCT, size+chunks*TagSize))
	s := &batchRun{batches: batches, plain: per * ChunkSize, failed: batches, do: do}
	var wg sync.WaitGroup
	for range min(batches, pipelineWorkers) - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(make([]byte, bufLen), size, nil)
		}()
	}
	var reported int64
	report := func() {
		if d := s.done.Load(); progress != nil && d > reported {
			progress(d - reported)
			reported = d
		}
	}
	s.run(make([]byte, bufLen), size, report)
	wg.Wait()
	report()
	return s.err
}

// batchRun shares the batches of one file among the goroutines of runBatches.
type batchRun struct {
	batches int64
	plain   int64 // plaintext bytes of a batch
	do      func(b int64, buf []byte) error
	next    atomic.Int64 // next batch to take
	done    atomic.Int64 // plaintext bytes done

	mu     sync.Mutex
	failed int64 // lowest failing batch; batches while none failed
	err    error // its error
}

// run does batches until none is left or one failed: every batch before a
// failing one is still done, since an earlier failure wins.
func (s *batchRun) run(buf []byte, size int64, after func()) {
	for {
		b := s.next.Add(1) - 1
		if b >= s.batches || b > s.lowestFailure() {
			return
		}
		if err := s.do(b, buf); err != nil {
			s.fail(b, err)
			return
		}
		s.done.Add(min(size, (b+1)*s.plain) - b*s.plain)
		if after != nil {
			after()
		}
	}
}

func (s *batchRun) lowestFailure() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

func (s *batchRun) fail(b int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b < s.failed {
		s.failed, s.err = b, err
	}
}

// shortReadError is a read that ended before the bytes expected.
type shortReadError struct {
	n   int // bytes read
	err error
}

func (e *shortReadError) Error() string { return e.err.Error() }
func (e *shortReadError) Unwrap() error { return e.err }

// readFull fills p from src at off; a short read is an io.ErrUnexpectedEOF.
func readFull(src io.ReaderAt, p []byte, off int64) error {
	n, err := src.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &shortReadError{n: n, err: err}
}

// errOffset returns the bytes read before a readFull error.
func errOffset(err error) int {
	if e, ok := err.(*shortReadError); ok {
		return e.n
	}
	return 0
}
