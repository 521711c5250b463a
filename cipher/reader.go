package cipher

import (
	"bytes"
	stdcipher "crypto/cipher"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// ReaderAt decrypts one encrypted file of a set. Every read decrypts and
// authenticates only the chunks it touches, so any byte of a large file (a page of
// pages-N.img) costs one 64 KiB chunk; no byte is returned before its chunk is
// authenticated. It is safe for concurrent use.
type ReaderAt struct {
	src    io.ReaderAt
	aead   stdcipher.AEAD
	auth   *tagAuth // checks tags without decrypting; nil: open to check
	name   string
	size   int64 // plaintext size
	chunks int64
	signed ChunkHashes // the signed hash of each stored chunk; nil: none

	mu     sync.Mutex
	cached int64 // index of the chunk in buf, -1 when none
	ct     []byte
	buf    []byte
}

// NewReaderAt checks the prefix of the encrypted file f (its manifest entry), of
// ctSize bytes in src, and returns a ReaderAt for its plaintext. f.Size is the
// size the manifest records; with it the file's length is checked before anything
// else, so truncation or extension fails here. Pass a size of -1 when there is no
// manifest: the size is then inferred from ctSize, and truncation at a chunk
// boundary is caught by the last-chunk flag when the last chunk is read.
func (k *OpenKey) NewReaderAt(src io.ReaderAt, ctSize int64, f FileInfo) (*ReaderAt, error) {
	name, plainSize := f.Name, f.Size
	aead, auth, err := k.fileCipher(f, true)
	if err != nil {
		return nil, err
	}
	if plainSize < 0 {
		if plainSize, err = PlaintextSize(ctSize); err != nil {
			return nil, &Error{File: name, Offset: ctSize, Reason: err.Error(), Err: ErrMalformed}
		}
	} else if want := CiphertextSize(plainSize); ctSize != want {
		return nil, errorf(ErrSizeMismatch, name, min(ctSize, want),
			"file is %d bytes, but %d plaintext bytes encrypt to %d: truncated or extended", ctSize, plainSize, want)
	}
	if err := k.checkPrefix(src, name); err != nil {
		return nil, err
	}
	return &ReaderAt{src: src, aead: aead, auth: auth, name: name, size: plainSize, chunks: numChunks(plainSize), cached: -1}, nil
}

// checkPrefix checks the magic and the set id at the start of an encrypted file.
func (k *OpenKey) checkPrefix(src io.ReaderAt, name string) error {
	_, err := CheckPrefix(src, name, k.id)
	return err
}

// CheckPrefix reads the prefix of an encrypted file and checks it: the magic, and
// that the set id is want. It needs no key: verify uses it to find files of another
// set without one. It returns the set id found.
func CheckPrefix(src io.ReaderAt, name string, want SetID) (SetID, error) {
	var id SetID
	var prefix [PrefixSize]byte
	if n, err := src.ReadAt(prefix[:], 0); n < PrefixSize {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return id, &Error{File: name, Offset: int64(n), Reason: "reading the prefix: " + err.Error(), Err: ErrMalformed}
	}
	if string(prefix[:len(FileMagic)]) != FileMagic || len(FileMagic) != 8 {
		return id, errorf(ErrMalformed, name, 0, "no encrypted-file magic (% x): not encrypted, or damaged", prefix[:len(FileMagic)])
	}
	copy(id[:], prefix[len(FileMagic):])
	if id != want {
		return id, errorf(ErrForeignFile, name, int64(len(FileMagic)), "set id %s, this set is %s", id, want)
	}
	return id, nil
}

// Size returns the plaintext size.
func (r *ReaderAt) Size() int64 { return r.size }

// CheckSigned makes every read check each chunk against hashes, the SHA-256 of
// each stored chunk (ciphertext and tag) that a verified signature lists, before
// the chunk is authenticated or decrypted: one that differs fails with
// ErrSignedChunk. The hash is computed where the chunk is authenticated, while it
// is in that core's cache. Call it before any read.
func (r *ReaderAt) CheckSigned(hashes ChunkHashes) error {
	if int64(hashes.Len()) != r.chunks || len(hashes)%HashSize != 0 {
		return errorf(ErrSignedChunk, r.name, -1, "the signature lists %d chunks, the file has %d", hashes.Len(), r.chunks)
	}
	r.signed = hashes
	return nil
}

// checkSigned checks one stored chunk against the signature, if any.
func (r *ReaderAt) checkSigned(idx int64, sealed []byte) error {
	if r.signed == nil || r.signed.matches(idx, sealed) {
		return nil
	}
	return errorf(ErrSignedChunk, r.name, int64(PrefixSize)+idx*chunkCT, "chunk %d of %d is not the one signed", idx, r.chunks)
}

// ReadAt implements io.ReaderAt over the plaintext.
func (r *ReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", r.name, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for n < len(p) && off < r.size {
		idx := off / ChunkSize
		plain, err := r.chunkLocked(idx)
		if err != nil {
			return n, err
		}
		c := copy(p[n:], plain[off-idx*ChunkSize:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// chunkLocked returns the plaintext of chunk idx, authenticated, from the cache or
// decrypted into it.
func (r *ReaderAt) chunkLocked(idx int64) ([]byte, error) {
	plen := chunkPlainLen(r.size, idx)
	if r.cached == idx {
		return r.buf[:plen], nil
	}
	if r.ct == nil {
		r.ct = make([]byte, chunkCT)
		r.buf = make([]byte, ChunkSize)
	}
	r.cached = -1
	ct := r.ct[:plen+TagSize]
	at := int64(PrefixSize) + idx*chunkCT
	if n, err := r.src.ReadAt(ct, at); n < len(ct) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, &Error{File: r.name, Offset: at + int64(n), Reason: fmt.Sprintf("reading chunk %d: %v", idx, err), Err: err}
	}
	if err := r.checkSigned(idx, ct); err != nil {
		return nil, err
	}
	if err := openChunk(r.aead, r.buf[:0], ct, uint64(idx), idx == r.chunks-1); err != nil {
		return nil, errorf(ErrChunkAuth, r.name, at, "chunk %d of %d", idx, r.chunks)
	}
	r.cached = idx
	return r.buf[:plen], nil
}

// chunkPlainLen returns the plaintext length of chunk idx of a file of size bytes.
func chunkPlainLen(size, idx int64) int {
	return int(min(ChunkSize, size-idx*ChunkSize))
}

func openChunk(aead stdcipher.AEAD, dst, ct []byte, idx uint64, last bool) error {
	nc := nonce(idx, last)
	_, err := aead.Open(dst, nc[:], ct, nil)
	return err
}

// WriteTo decrypts the whole file to w, in order, through a pipeline that reads
// 1 MiB batches on one goroutine and opens them on two. Each batch is written only
// once all its chunks are authenticated; on failure, w has received the
// authenticated plaintext before the failing batch.
func (r *ReaderAt) WriteTo(w io.Writer) (int64, error) {
	var n int64
	err := r.pipeline(func(plain []byte) error {
		m, err := w.Write(plain)
		n += int64(m)
		return err
	})
	return n, err
}

// Verify authenticates every chunk of the file without keeping any plaintext.
// progress, if not nil, is called with the plaintext bytes checked after each batch,
// always from the caller's goroutine.
//
// Batches are checked by pipelineWorkers goroutines (the caller's and helpers),
// each reading its own batch with one large read: nothing needs to be in order, so
// there is no reader to wait for and no handing over. Where the AEAD allows
// (AES-GCM, see tagAuth), tags are checked without decrypting. The error is that
// of the first failing chunk in file order, as a sequential check would report.
func (r *ReaderAt) Verify(progress func(n int64)) error {
	v := &batchVerifier{r: r, batches: (r.chunks + batchChunks - 1) / batchChunks}
	v.failed = v.batches
	var wg sync.WaitGroup
	for range min(v.batches, pipelineWorkers) - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.run(nil)
		}()
	}
	var reported int64
	report := func() {
		if d := v.done.Load(); progress != nil && d > reported {
			progress(d - reported)
			reported = d
		}
	}
	v.run(report)
	wg.Wait()
	report()
	return v.err
}

// batchVerifier shares the batches of one file among the goroutines of Verify.
type batchVerifier struct {
	r       *ReaderAt
	batches int64
	next    atomic.Int64 // next batch to take
	done    atomic.Int64 // plaintext bytes authenticated

	mu     sync.Mutex
	failed int64 // lowest failing batch; batches while none failed
	err    error // its error
}

// run checks batches until none is left, or a failure makes the rest moot: every
// batch before a failing one is still checked, since an earlier failure wins.
func (v *batchVerifier) run(after func()) {
	j := &openJob{}
	for {
		b := v.next.Add(1) - 1
		if b >= v.batches || b > v.lowestFailure() {
			return
		}
		j.first, j.n, j.err = b*batchChunks, int(min(batchChunks, v.r.chunks-b*batchChunks)), nil
		v.r.fill(j)
		if j.err == nil {
			v.r.authenticate(j)
		}
		if j.err != nil {
			v.fail(b, j.err)
			return
		}
		v.done.Add(min(v.r.size, (b+1)*batchPlain) - b*batchPlain)
		if after != nil {
			after()
		}
	}
}

func (v *batchVerifier) lowestFailure() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.failed
}

func (v *batchVerifier) fail(b int64, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if b < v.failed {
		v.failed, v.err = b, err
	}
}

// authenticate checks every chunk of a batch read by fill, without keeping its
// plaintext: by tag alone where the AEAD allows, else by opening it in place over
// its ciphertext (which it then destroys).
func (r *ReaderAt) authenticate(j *openJob) {
	ct := j.ct
	for i := 0; i < j.n; i++ {
		idx := j.first + int64(i)
		sealed := ct[:chunkPlainLen(r.size, idx)+TagSize]
		if j.err = r.checkSigned(idx, sealed); j.err != nil {
			return
		}
		nc := nonce(uint64(idx), idx == r.chunks-1)
		var ok bool
		if r.auth != nil {
			ok = r.auth.check(nc[:], sealed)
		} else {
			_, err := r.aead.Open(sealed[:0], nc[:], sealed, nil)
			ok = err == nil
		}
		if !ok {
			j.err = errorf(ErrChunkAuth, r.name, int64(PrefixSize)+idx*chunkCT, "chunk %d of %d", idx, r.chunks)
			return
		}
		ct = ct[len(sealed):]
	}
}

// openJob is one batch of a decryption pipeline.
type openJob struct {
	ct    []byte
	plain []byte
	first int64 // first chunk index
	n     int   // chunks in the batch
	err   error
	done  chan struct{}
}

// pipeline streams the file through pipelineWorkers openers in batches, calling
// consume in order with each batch's authenticated plaintext. The plaintext buffer
// is reused once consume returns. It stops at the first failing batch.
func (r *ReaderAt) pipeline(consume func(plain []byte) error) error {
	nb := (r.chunks + batchChunks - 1) / batchChunks
	if nb == 1 {
		j := &openJob{first: 0, n: int(r.chunks)}
		r.fill(j)
		if j.err == nil {
			r.open(j)
		}
		if j.err != nil {
			return j.err
		}
		return consume(j.plain)
	}
	work := make(chan *openJob, pipelineSlots)
	order := make(chan *openJob, pipelineSlots)
	free := make(chan *openJob, pipelineSlots)
	stop := make(chan struct{})
	for range pipelineSlots {
		j := &openJob{ct: make([]byte, batchCT), plain: make([]byte, 0, batchPlain), done: make(chan struct{}, 1)}
		free <- j
	}
	var wg sync.WaitGroup
	for range pipelineWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				if j.err == nil {
					r.open(j)
				}
				j.done <- struct{}{}
			}
		}()
	}
	go func() { // the reader
		defer close(work)
		defer close(order)
		for b := int64(0); b < nb; b++ {
			var j *openJob
			select {
			case j = <-free:
			case <-stop:
				return
			}
			j.first, j.n, j.err = b*batchChunks, int(min(batchChunks, r.chunks-b*batchChunks)), nil
			r.fill(j)
			work <- j
			order <- j
		}
	}()
	var err error
	for j := range order {
		<-j.done
		if err == nil {
			if err = j.err; err == nil {
				err = consume(j.plain)
			}
			if err != nil {
				close(stop)
			}
		}
		free <- j
	}
	wg.Wait()
	return err
}

// fill reads the ciphertext of a batch.
func (r *ReaderAt) fill(j *openJob) {
	last := j.first + int64(j.n) - 1
	ctLen := int(last-j.first)*chunkCT + chunkPlainLen(r.size, last) + TagSize
	if cap(j.ct) < ctLen {
		j.ct = make([]byte, ctLen)
	}
	j.ct = j.ct[:ctLen]
	at := int64(PrefixSize) + j.first*chunkCT
	if n, err := r.src.ReadAt(j.ct, at); n < ctLen {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		j.err = &Error{File: r.name, Offset: at + int64(n), Reason: fmt.Sprintf("reading chunk %d: %v", j.first, err), Err: err}
	}
}

// open authenticates and decrypts every chunk of a batch into j.plain.
func (r *ReaderAt) open(j *openJob) {
	if j.plain == nil {
		j.plain = make([]byte, 0, int(r.size-j.first*ChunkSize))
	}
	j.plain = j.plain[:0]
	ct := j.ct
	for i := 0; i < j.n; i++ {
		idx := j.first + int64(i)
		clen := chunkPlainLen(r.size, idx) + TagSize
		if j.err = r.checkSigned(idx, ct[:clen]); j.err != nil {
			return
		}
		var err error
		j.plain, err = r.aead.Open(j.plain, nonceSlice(uint64(idx), idx == r.chunks-1), ct[:clen], nil)
		if err != nil {
			j.err = errorf(ErrChunkAuth, r.name, int64(PrefixSize)+idx*chunkCT, "chunk %d of %d", idx, r.chunks)
			return
		}
		ct = ct[clen:]
	}
}

func nonceSlice(i uint64, last bool) []byte {
	n := nonce(i, last)
	return n[:]
}

// Decrypt decrypts a whole encrypted file held in memory, the file f of the set
// (f.Size -1: the size comes from the data). It is meant for tests and small files.
func (k *OpenKey) Decrypt(ct []byte, f FileInfo) ([]byte, error) {
	r, err := k.NewReaderAt(bytes.NewReader(ct), int64(len(ct)), f)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if _, err := r.WriteTo(&out); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
