package cipher

import (
	stdcipher "crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Layout of an encrypted file: a prefix, then the chunks of its STREAM.
const (
	// ChunkSize is the plaintext size of every chunk but the last.
	ChunkSize = 64 << 10
	// TagSize is the size of the AEAD tag that follows each chunk's ciphertext.
	TagSize = 16
	// PrefixSize is the size of the plaintext prefix of an encrypted file: FileMagic
	// and the set id.
	PrefixSize = 8 + SetIDSize // len(FileMagic) + SetIDSize
	// chunkCT is the size of a full chunk on disk.
	chunkCT = ChunkSize + TagSize
	// batchChunks chunks are read, sealed or opened and written together: 1 MiB
	// reads and writes were the sweet spot measured for this design.
	batchChunks = 16
	batchPlain  = batchChunks * ChunkSize
	batchCT     = batchChunks * chunkCT
	// pipelineSlots is the number of batches in flight in a pipeline: the whole
	// memory a pipeline ever uses is pipelineSlots * (batchPlain + batchCT).
	pipelineSlots = 4
	// pipelineWorkers seal or open batches in parallel while another goroutine does
	// the I/O.
	pipelineWorkers = 2
	// firstRead is the first read of Writer.ReadFrom: enough for most small images.
	firstRead = 16 << 10
)

// FileMagic starts every encrypted file of a set.
const FileMagic = "\x89ISEAL\x01\n"

// numChunks returns the number of chunks of a plaintext of size n: an empty
// plaintext is one empty final chunk, any other has no empty chunk.
func numChunks(n int64) int64 {
	if n == 0 {
		return 1
	}
	return (n + ChunkSize - 1) / ChunkSize
}

// CiphertextSize returns the size of the encrypted file of a plaintext of n bytes.
func CiphertextSize(n int64) int64 { return int64(PrefixSize) + n + TagSize*numChunks(n) }

// PlaintextSize returns the plaintext size of an encrypted file of c bytes, or an
// error if no plaintext encrypts to that size.
func PlaintextSize(c int64) (int64, error) {
	body := c - int64(PrefixSize)
	if body < TagSize {
		return 0, fmt.Errorf("%w: %d bytes is too short for an encrypted file (at least %d)", ErrMalformed, c, PrefixSize+TagSize)
	}
	full, rest := body/chunkCT, body%chunkCT
	switch {
	case rest == 0:
		return full * ChunkSize, nil
	case rest > TagSize:
		return full*ChunkSize + rest - TagSize, nil
	case rest == TagSize && full == 0:
		return 0, nil
	}
	return 0, fmt.Errorf("%w: %d bytes is not the size of any encrypted file (a chunk of %d bytes cannot exist)", ErrMalformed, c, rest)
}

// nonce returns the nonce of chunk i: an 11-byte big-endian counter, then 0x01 for
// the last chunk of the file and 0x00 for every other.
func nonce(i uint64, last bool) [12]byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[3:11], i)
	if last {
		n[11] = 1
	}
	return n
}

// sealBatch seals the plaintext plain (whole chunks, except possibly the last)
// into ct, chunk by chunk starting at chunk index first; if last, its final chunk
// is the file's last. It returns the ciphertext length.
func sealBatch(aead stdcipher.AEAD, ct, plain []byte, first uint64, last bool) int {
	n := len(plain)
	chunks := (n + ChunkSize - 1) / ChunkSize
	if chunks == 0 {
		chunks = 1 // the empty last chunk of an empty file
	}
	out := 0
	for j := 0; j < chunks; j++ {
		lo := j * ChunkSize
		hi := min(lo+ChunkSize, n)
		nc := nonce(first+uint64(j), last && j == chunks-1)
		out += len(aead.Seal(ct[out:out], nc[:], plain[lo:hi], nil))
	}
	return out
}

// sealJob is one batch of a Writer: plaintext in, ciphertext out.
type sealJob struct {
	plain []byte
	ct    []byte
	ctLen int
	first uint64
	last  bool
	done  chan struct{}
}

// Writer encrypts one file of a set as it is written. Full batches of 16 chunks are
// sealed by two worker goroutines and written in order by a third, so that
// sealing overlaps I/O; a small file is sealed at Close in the caller's goroutine
// and never starts one. Close must be called to write the final chunk.
type Writer struct {
	dst   io.Writer
	aead  stdcipher.AEAD
	name  string
	cur   *sealJob // batch being filled
	chunk uint64   // index of cur's first chunk
	size  int64    // plaintext bytes accepted
	pipe  *sealPipe
	err   error
	done  bool
}

// NewWriter writes the prefix of the encrypted file called name to dst and returns
// a Writer for its plaintext. name binds the file: renamed, it no longer opens.
func (k *SetKey) NewWriter(dst io.Writer, name string) (*Writer, error) {
	aead, err := k.fileAEAD(name)
	if err != nil {
		return nil, err
	}
	prefix := make([]byte, 0, PrefixSize)
	prefix = append(append(prefix, FileMagic...), k.id[:]...)
	if _, err := dst.Write(prefix); err != nil {
		return nil, err
	}
	return &Writer{dst: dst, aead: aead, name: name, cur: &sealJob{}}, nil
}

// Size returns the plaintext bytes written so far: after Close, the file's size
// for the manifest.
func (w *Writer) Size() int64 { return w.size }

// Write encrypts p. It returns an error if an earlier batch failed to be written.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.check(); err != nil {
		return 0, err
	}
	if w.size+int64(len(p)) > MaxFileSize {
		return 0, fmt.Errorf("%s: file larger than %d bytes", w.name, int64(MaxFileSize))
	}
	n := 0
	for len(p) > 0 {
		if len(w.cur.plain) == batchPlain {
			if err := w.submit(); err != nil {
				return n, err
			}
		}
		room := batchPlain - len(w.cur.plain)
		take := min(room, len(p))
		w.cur.plain = append(w.cur.plain, p[:take]...)
		p = p[take:]
		n += take
		w.size += int64(take)
	}
	return n, nil
}

// ReadFrom encrypts everything r yields, reading straight into the batch buffers
// (io.Copy uses it).
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if err := w.check(); err != nil {
			return total, err
		}
		if len(w.cur.plain) == batchPlain {
			// Full: seal it only once we know more follows, or Close will mark
			// it last. Peek by reading into the next batch.
			var b [1]byte
			n, err := io.ReadFull(r, b[:])
			if n == 0 {
				if err == io.EOF || err == io.ErrUnexpectedEOF {
					return total, nil
				}
				return total, err
			}
			if err := w.submit(); err != nil {
				return total, err
			}
			w.cur.plain = append(w.cur.plain, b[0])
			total++
			w.size++
		}
		if len(w.cur.plain) == cap(w.cur.plain) {
			// Grow geometrically: most files of a set are small, and a whole
			// batch buffer for each (allocated and zeroed) cost more than the
			// encryption of such a file.
			grown := min(batchPlain, max(2*cap(w.cur.plain), firstRead))
			w.cur.plain = append(make([]byte, 0, grown), w.cur.plain...)
		}
		buf := w.cur.plain[len(w.cur.plain):cap(w.cur.plain)]
		n, err := io.ReadFull(r, buf)
		w.cur.plain = w.cur.plain[:len(w.cur.plain)+n]
		total += int64(n)
		w.size += int64(n)
		if w.size > MaxFileSize {
			return total, fmt.Errorf("%s: file larger than %d bytes", w.name, int64(MaxFileSize))
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return total, nil
		default:
			return total, err
		}
	}
}

// Close seals the last chunk, waits for every batch to be written, and reports the
// first error. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.done {
		return w.err
	}
	w.done = true
	if w.err != nil {
		w.stop()
		return w.err
	}
	w.cur.last = true
	if w.pipe == nil {
		w.cur.ct = make([]byte, len(w.cur.plain)+TagSize*int(numChunks(int64(len(w.cur.plain)))))
		n := sealBatch(w.aead, w.cur.ct, w.cur.plain, w.chunk, true)
		_, w.err = w.dst.Write(w.cur.ct[:n])
		w.cur = nil
		return w.err
	}
	w.pipe.submit(w.cur)
	w.cur = nil
	w.err = w.pipe.finish()
	w.pipe = nil
	return w.err
}

// Abort stops the Writer without writing the final chunk: the output is then an
// incomplete encrypted file that fails authentication. Use it to abandon a file.
func (w *Writer) Abort() {
	if !w.done {
		w.done = true
		if w.err == nil {
			w.err = errors.New("writer aborted")
		}
		w.stop()
	}
}

func (w *Writer) stop() {
	if w.pipe != nil {
		w.pipe.finish()
		w.pipe = nil
	}
}

func (w *Writer) check() error {
	if w.done {
		return fmt.Errorf("%s: write after close", w.name)
	}
	if w.err == nil && w.pipe != nil {
		w.err = w.pipe.failed()
	}
	return w.err
}

// submit hands the full current batch to the pipeline (starting it on first use)
// and takes a free batch to fill.
func (w *Writer) submit() error {
	if w.pipe == nil {
		w.pipe = newSealPipe(w.dst, w.aead)
	}
	w.cur.last = false
	w.cur.first = w.chunk
	w.pipe.submit(w.cur)
	w.chunk += batchChunks
	w.cur = w.pipe.next()
	w.cur.first = w.chunk
	if err := w.pipe.failed(); err != nil {
		w.err = err
		return err
	}
	return nil
}

// sealPipe seals batches on pipelineWorkers goroutines and writes them in order
// on another, reusing a fixed set of pipelineSlots batches.
type sealPipe struct {
	dst   io.Writer
	aead  stdcipher.AEAD
	work  chan *sealJob
	order chan *sealJob
	free  chan *sealJob
	slots int // batches allocated so far
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error
}

func newSealPipe(dst io.Writer, aead stdcipher.AEAD) *sealPipe {
	p := &sealPipe{
		dst:   dst,
		aead:  aead,
		work:  make(chan *sealJob, pipelineSlots),
		order: make(chan *sealJob, pipelineSlots),
		free:  make(chan *sealJob, pipelineSlots),
		slots: 1, // the Writer's first batch
	}
	for range pipelineWorkers {
		p.wg.Add(1)
		go p.sealer()
	}
	p.wg.Add(1)
	go p.writer()
	return p
}

func (p *sealPipe) sealer() {
	defer p.wg.Done()
	for j := range p.work {
		if j.ct == nil {
			j.ct = make([]byte, batchCT)
		}
		j.ctLen = sealBatch(p.aead, j.ct, j.plain, j.first, j.last)
		j.done <- struct{}{}
	}
}

func (p *sealPipe) writer() {
	defer p.wg.Done()
	for j := range p.order {
		<-j.done
		if p.failed() == nil {
			if _, err := p.dst.Write(j.ct[:j.ctLen]); err != nil {
				p.fail(err)
			}
		}
		j.plain = j.plain[:0]
		p.free <- j
	}
}

func (p *sealPipe) submit(j *sealJob) {
	if j.done == nil {
		j.done = make(chan struct{}, 1)
	}
	p.work <- j
	p.order <- j
}

// next returns a free batch, allocating one while fewer than pipelineSlots exist.
func (p *sealPipe) next() *sealJob {
	select {
	case j := <-p.free:
		return j
	default:
	}
	if p.slots < pipelineSlots {
		p.slots++
		return &sealJob{plain: make([]byte, 0, batchPlain)}
	}
	return <-p.free
}

// finish stops the goroutines once every submitted batch is written.
func (p *sealPipe) finish() error {
	close(p.work)
	close(p.order)
	p.wg.Wait()
	return p.failed()
}

func (p *sealPipe) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

func (p *sealPipe) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}
