package cipher

import (
	stdcipher "crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
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
	// unitChunks chunks are a Writer's unit of work: sealed into a buffer that
	// stays in the sealer's cache, then written. Small units share a Write's data
	// evenly between the sealers.
	unitChunks = 4
	unitPlain  = unitChunks * ChunkSize
	unitCT     = unitChunks * chunkCT
	// unitBuffers is the number of ciphertext buffers of each sealer of a
	// Writer: it goes on sealing while another goroutine writes its last units
	// (four measured better than two in `make bench`'s dump -e).
	unitBuffers = 4
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
// is the file's last. It returns the ciphertext length. With hashes (not nil),
// the SHA-256 of each sealed chunk is put in its place there, while the chunk is
// still in the core's cache.
func sealBatch(aead stdcipher.AEAD, ct, plain []byte, first uint64, last bool, hashes ChunkHashes) int {
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
		sealed := aead.Seal(ct[out:out], nc[:], plain[lo:hi], nil)
		hashes.put(first+uint64(j), sealed)
		out += len(sealed)
	}
	return out
}

// Writer encrypts one file of a set as it is written.
//
// A chunk's place in the file is fixed by its index, and the only thing that
// depends on what follows a chunk is its last flag. So a Writer seals the
// caller's data where it lies, without copying it: in units of a few chunks,
// shared between the caller's goroutine and pipelineWorkers-1 helpers, each
// sealing into buffers of its own. Only the end of the data written so far (its
// last chunk, or the last batch of small writes), which may turn out to end the
// file, is copied and held back until more data or Close says which it is.
// Write returns once its data is sealed, so nothing is kept of the caller's
// buffer; the sealed units are written by whichever sealer finds the file free,
// one at a time (concurrent writes to one file only contend in the kernel). A
// small file is sealed at Close in the caller's goroutine and never starts a
// helper. Close must be called to write the final chunk.
type Writer struct {
	out  *sealOut
	aead stdcipher.AEAD
	name string
	info FileInfo // name and nonce; the size once closed

	hashing bool        // keep the SHA-256 of every sealed chunk
	hashes  ChunkHashes // one per chunk index, grown before each round

	pend   []byte // plaintext not sealed yet, since it may end the file
	chunk  uint64 // index of pend's first chunk
	size   int64  // plaintext bytes accepted
	home   *sealerBuffers
	crew   *sealCrew
	units  []span // the current round's units (reused)
	direct int64  // bytes of the current ReadFromAt reported to its progress
	err    error
	done   bool
}

// NewWriter writes the prefix of a new encrypted file called name to dst and
// returns a Writer for its plaintext. The file gets a random nonce of its own
// (Info gives it, for the manifest); name and nonce bind the file: renamed, or
// read as another writing of the same name, it does not open.
//
// If dst is also an io.WriterAt and an io.Seeker (an *os.File not opened for
// appending, say), sealed chunks are written at their offsets from the position
// dst is at, as they are ready, and Close moves dst's offset to the end of the
// file, where sequential writes would have left it.
func (k *SetKey) NewWriter(dst io.Writer, name string) (*Writer, error) {
	f, err := k.NewFile(name)
	if err != nil {
		return nil, err
	}
	return k.NewWriterFor(dst, f)
}

// NewWriterFor is NewWriter for the file f made by NewFile. Each file is written
// once: a second Writer for the same f is refused.
func (k *SetKey) NewWriterFor(dst io.Writer, f FileInfo) (*Writer, error) {
	if err := checkName(f.Name); err != nil {
		return nil, err
	}
	if err := k.take(f); err != nil {
		return nil, err
	}
	return k.newWriter(dst, f)
}

// newWriter is NewWriterFor without the check that f's nonce is new.
func (k *SetKey) newWriter(dst io.Writer, f FileInfo) (*Writer, error) {
	aead, _, err := k.fileCipher(f, false)
	if err != nil {
		return nil, err
	}
	name := f.Name
	prefix := make([]byte, 0, PrefixSize)
	prefix = append(append(prefix, FileMagic...), k.id[:]...)
	if _, err := dst.Write(prefix); err != nil {
		return nil, err
	}
	out := &sealOut{dst: dst}
	if pd, ok := dst.(interface {
		io.WriterAt
		io.Seeker
	}); ok {
		// A file that cannot tell its offset (a pipe) or refuses positional
		// writes (O_APPEND) is written in order.
		if pos, err := pd.Seek(0, io.SeekCurrent); err == nil {
			if _, err := pd.WriteAt(nil, pos); err == nil {
				out.at, out.seek, out.base = pd, pd, pos
			}
		}
	}
	return &Writer{out: out, aead: aead, name: name, info: FileInfo{Name: name, Nonce: f.Nonce}}, nil
}

// Size returns the plaintext bytes written so far: after Close, the file's size
// for the manifest.
func (w *Writer) Size() int64 { return w.size }

// Info returns the file's manifest entry: its name, nonce and the plaintext
// bytes written so far (after Close, its size).
func (w *Writer) Info() FileInfo {
	f := w.info
	f.Size = w.size
	return f
}

// HashChunks makes the Writer keep the SHA-256 of every sealed chunk, computed as
// each is sealed (ChunkHashes, after Close): what a signature commits to. It
// must be called before anything is written.
func (w *Writer) HashChunks() error {
	if w.size > 0 || w.done {
		return fmt.Errorf("%s: HashChunks after data was written", w.name)
	}
	w.hashing = true
	return nil
}

// ChunkHashes returns the SHA-256 of every sealed chunk of the file, in order,
// once Close succeeded with HashChunks; nil otherwise.
func (w *Writer) ChunkHashes() ChunkHashes {
	if !w.hashing || !w.done || w.err != nil {
		return nil
	}
	return w.hashes
}

// growHashes makes room in hashes for the chunks before index end. It runs on
// the caller's goroutine before a round, when no sealer touches hashes.
func (w *Writer) growHashes(end uint64) error {
	if !w.hashing || uint64(w.hashes.Len()) >= end {
		return nil
	}
	if err := checkHashCount(w.name, int64(end)); err != nil {
		return err
	}
	w.hashes = append(w.hashes, make([]byte, int(end)*HashSize-len(w.hashes))...)
	return nil
}

// keep returns where sealed chunks put their hashes: nil when not hashing.
func (w *Writer) keep() ChunkHashes {
	if !w.hashing {
		return nil
	}
	return w.hashes
}

// Write encrypts p. It returns an error if an earlier batch failed to be written.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.check(); err != nil {
		return 0, err
	}
	if w.size+int64(len(p)) > MaxFileSize {
		return 0, fmt.Errorf("%s: file larger than %d bytes", w.name, int64(MaxFileSize))
	}
	if err := w.write(p); err != nil {
		w.err = err
		return 0, err
	}
	w.size += int64(len(p))
	return len(p), nil
}

// write seals all of pend and p but their last chunk (or, while they fit in one
// batch, gathers p into pend).
func (w *Writer) write(p []byte) error {
	if len(w.pend)+len(p) <= batchPlain {
		w.growPend(len(w.pend) + len(p))
		w.pend = append(w.pend, p...)
		return nil
	}
	// Complete pend's last chunk, so that p goes on from a chunk boundary. Since
	// pend and p are more than a batch, some of p is left.
	if r := len(w.pend) % ChunkSize; r != 0 {
		take := ChunkSize - r
		w.growPend(len(w.pend) + take)
		w.pend = append(w.pend, p[:take]...)
		p = p[take:]
	}
	keep := len(p) % ChunkSize
	if keep == 0 {
		keep = ChunkSize
	}
	w.units = w.units[:0]
	next := w.addUnits(w.pend, w.chunk)
	next = w.addUnits(p[:len(p)-keep], next)
	if err := w.growHashes(next); err != nil {
		return err
	}
	w.seal()
	if err := w.out.failed(); err != nil {
		return err
	}
	w.chunk = next
	w.growPend(keep)
	w.pend = append(w.pend[:0], p[len(p)-keep:]...)
	return nil
}

// growPend makes room for n bytes in pend, growing it geometrically: most files
// of a set are small, and a whole batch buffer for each (allocated and zeroed)
// costs more than the encryption of such a file.
func (w *Writer) growPend(n int) {
	if n <= cap(w.pend) {
		return
	}
	grown := max(n, min(batchPlain, max(2*cap(w.pend), firstRead)))
	w.pend = append(make([]byte, 0, grown), w.pend...)
}

// addUnits adds plain, whole chunks starting at chunk first, to the round as
// units, and returns the index of the chunk after it.
func (w *Writer) addUnits(plain []byte, first uint64) uint64 {
	for len(plain) > 0 {
		n := min(len(plain), unitPlain)
		w.units = append(w.units, span{plain: plain[:n], first: first})
		plain = plain[n:]
		first += uint64(n / ChunkSize)
	}
	return first
}

// readDone tells whether an io.ReadFull error ends ReadFrom, and with which error.
func readDone(err error) (bool, error) {
	switch err {
	case nil:
		return false, nil
	case io.EOF, io.ErrUnexpectedEOF:
		return true, nil
	}
	return true, err
}

// Close seals the last chunk, waits for every unit to be written, and reports the
// first error. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.done {
		return w.err
	}
	w.done = true
	defer w.stop()
	if w.err == nil {
		w.err = w.finish()
	}
	w.pend = nil
	return w.err
}

// finish seals pend as the end of the file and writes it after everything else.
func (w *Writer) finish() error {
	n := len(w.pend) + TagSize*int(numChunks(int64(len(w.pend))))
	u := sealedUnit{first: w.chunk, chunks: numChunks(int64(len(w.pend)))}
	if err := w.growHashes(w.chunk + uint64(u.chunks)); err != nil {
		return err
	}
	if w.home != nil && n <= unitCT {
		u.ct, u.home = w.home.get(w.out), w.home
	} else {
		u.ct = make([]byte, n) // a small file, or a last batch of small writes
	}
	u.n = sealBatch(w.aead, u.ct, w.pend, w.chunk, true, w.keep())
	if w.hashing {
		w.hashes = w.hashes[:int(w.chunk+uint64(u.chunks))*HashSize]
	}
	w.out.push(u)
	w.out.drain(true)
	if err := w.out.failed(); err != nil {
		return err
	}
	if w.out.at != nil {
		end := w.out.base + int64(w.chunk)*chunkCT + int64(u.n)
		if _, err := w.out.seek.Seek(end, io.SeekStart); err != nil {
			return err
		}
	}
	return nil
}

// Abort stops the Writer without writing the final chunk: the output is then an
// incomplete encrypted file that fails authentication. Use it to abandon a file.
func (w *Writer) Abort() {
	if !w.done {
		w.done = true
		if w.err == nil {
			w.err = errors.New("writer aborted")
		}
		w.out.fail(w.err)
		w.out.drain(true) // waits for a write under way; writes nothing more
		w.stop()
	}
}

func (w *Writer) check() error {
	if w.done {
		return fmt.Errorf("%s: write after close", w.name)
	}
	if w.err == nil {
		w.err = w.out.failed()
	}
	return w.err
}

// span is plaintext of whole chunks, none of them the file's last, starting at
// chunk first.
type span struct {
	plain []byte
	first uint64
}

// ReadFromAt encrypts the size bytes of src at offsets 0 to size, as if they were
// written with Write, and reports the plaintext bytes done to progress (if not
// nil) from the caller's goroutine as it goes. src must be safe for concurrent
// use.
//
// It is the copy-free way in: every chunk but the last is read by src.ReadAt
// straight into its sealed place in a sealer's unit buffer (laid out as the
// ciphertext, a tag's room after each chunk), sealed there in place while it is
// in the sealer's cache, and written from there. The caller's goroutine and the
// helpers read, seal and write units in parallel, so src is read at several
// offsets at once, in no set order. The last chunk is held back like Write's. On
// a read error nothing more is written and the Writer fails.
func (w *Writer) ReadFromAt(src io.ReaderAt, size int64, progress func(n int64)) error {
	if err := w.check(); err != nil {
		return err
	}
	if size < 0 || w.size+size > MaxFileSize {
		return fmt.Errorf("%s: file larger than %d bytes", w.name, int64(MaxFileSize))
	}
	if len(w.pend)+int(size) <= batchPlain {
		// Small: gathered in pend, like a small Write.
		if err := w.readPend(src, 0, int(size)); err != nil {
			return err
		}
		if progress != nil {
			progress(size)
		}
		return nil
	}
	// Complete pend's last chunk, so that the rest goes on from a chunk boundary.
	// pend rounded up to a chunk still fits in a batch, so some of src is left.
	off := int64((ChunkSize - len(w.pend)%ChunkSize) % ChunkSize)
	if err := w.readPend(src, 0, int(off)); err != nil {
		return err
	}
	// Everything in pend now precedes more data: none of it ends the file.
	w.units = w.units[:0]
	next := w.addUnits(w.pend, w.chunk)
	if err := w.growHashes(next + uint64(max(0, (size-off)/ChunkSize))); err != nil {
		w.err = err
		return err
	}
	w.seal()
	if err := w.out.failed(); err != nil {
		w.err = err
		return err
	}
	w.chunk, w.pend = next, w.pend[:0]
	keep := (size - off) % ChunkSize
	if keep == 0 {
		keep = ChunkSize
	}
	w.direct = 0
	if direct := size - off - keep; direct > 0 {
		r := &round{w: w, src: src, srcOff: off, first: w.chunk, chunks: direct / ChunkSize, sealed: make(chan struct{})}
		r.count = int((r.chunks + unitChunks - 1) / unitChunks)
		w.runRound(r, progress)
		err := r.failure()
		if err == nil {
			err = w.out.failed()
		}
		if err != nil {
			w.err = err
			return err
		}
		w.chunk += uint64(r.chunks)
		w.size += direct
		off += direct
	}
	if err := w.readPend(src, off, int(keep)); err != nil {
		return err
	}
	if progress != nil {
		progress(size - w.direct)
	}
	return nil
}

// readPend appends n bytes of src at off to pend.
func (w *Writer) readPend(src io.ReaderAt, off int64, n int) error {
	w.growPend(len(w.pend) + n)
	p := w.pend[len(w.pend) : len(w.pend)+n]
	if err := readFull(src, p, off); err != nil {
		w.err = fmt.Errorf("%s: reading plaintext at %d: %w", w.name, off+int64(errOffset(err)), err)
		return w.err
	}
	w.pend = w.pend[:len(w.pend)+n]
	w.size += int64(n)
	return nil
}

// seal seals the units of the current round, alone when there is one, else
// with the helpers, and returns once all are sealed (not necessarily written).
func (w *Writer) seal() {
	if len(w.units) == 0 {
		return
	}
	r := &round{w: w, units: w.units, count: len(w.units), sealed: make(chan struct{})}
	w.runRound(r, nil)
}

// runRound runs r on the caller's goroutine, and on the helpers when it has more
// than one unit, and returns once every unit is done (sealed, not necessarily
// written). progress, if not nil, is called from the caller's goroutine with the
// plaintext bytes of a read round sealed.
func (w *Writer) runRound(r *round, progress func(int64)) {
	if w.home == nil {
		w.home = newSealerBuffers()
	}
	if r.count > 1 {
		if w.crew == nil {
			w.crew = startCrew(pipelineWorkers - 1)
		}
		for range w.crew.helpers {
			w.crew.rounds <- r
		}
	}
	var after func()
	if progress != nil {
		after = func() {
			if d := r.bytes.Load(); d > w.direct {
				progress(d - w.direct)
				w.direct = d
			}
		}
	}
	r.run(w.home, after)
	<-r.sealed
	if after != nil {
		after()
	}
}

func (w *Writer) stop() {
	if w.crew != nil {
		close(w.crew.rounds)
		w.crew = nil
	}
}

// round is the sealing of the units of one Write (units) or one ReadFromAt
// (chunks of src), shared by whoever runs it.
type round struct {
	w     *Writer
	count int    // units in the round
	units []span // a Write's units

	src    io.ReaderAt // a ReadFromAt's source, nil for a Write
	srcOff int64       // offset in src of chunk first
	first  uint64
	chunks int64 // chunks read from src, none of them the file's last

	next   atomic.Int64  // next unit to take
	done   atomic.Int64  // units sealed, or skipped after a failure
	bytes  atomic.Int64  // plaintext bytes sealed
	sealed chan struct{} // closed once every unit is done

	mu  sync.Mutex
	err error // the first read error
}

// run seals units into buffers from home, handing each to be written, until
// none is left. after, if not nil, is called after each unit.
func (r *round) run(home *sealerBuffers, after func()) {
	w := r.w
	for {
		// The buffer first, then the unit: so a unit is taken only by a
		// goroutine that can seal it at once, which writing in order needs.
		ct := home.get(w.out)
		i := int(r.next.Add(1) - 1)
		if i >= r.count {
			home.put(ct)
			return
		}
		u, err := r.sealUnit(ct, i)
		if err == nil {
			u.home = home
			w.out.push(u)
		} else {
			home.put(ct)
		}
		if r.done.Add(1) == int64(r.count) {
			close(r.sealed) // the caller may go on while this unit is written
		}
		if err == nil {
			w.out.drain(false)
		}
		if after != nil {
			after()
		}
	}
}

// errSkipped marks a unit left out after another failed.
var errSkipped = errors.New("skipped after a failure")

// sealUnit seals unit i of the round into ct.
func (r *round) sealUnit(ct []byte, i int) (sealedUnit, error) {
	w := r.w
	if r.src == nil {
		u := r.units[i]
		n := sealBatch(w.aead, ct, u.plain, u.first, false, w.keep())
		r.bytes.Add(int64(len(u.plain)))
		return sealedUnit{ct: ct, n: n, first: u.first, chunks: int64(len(u.plain) / ChunkSize)}, nil
	}
	if r.failure() != nil {
		return sealedUnit{}, errSkipped
	}
	lo := int64(i) * unitChunks
	n := int(min(unitChunks, r.chunks-lo))
	first := r.first + uint64(lo)
	for j := 0; j < n; j++ {
		// Each chunk is read into its sealed place and sealed there: an AEAD
		// takes a destination that overlaps its source exactly.
		slot := ct[j*chunkCT : j*chunkCT+ChunkSize]
		off := r.srcOff + (lo+int64(j))*ChunkSize
		if err := readFull(r.src, slot, off); err != nil {
			err = fmt.Errorf("%s: reading plaintext at %d: %w", w.name, off+int64(errOffset(err)), err)
			r.fail(err)
			return sealedUnit{}, err
		}
		nc := nonce(first+uint64(j), false)
		w.keep().put(first+uint64(j), w.aead.Seal(slot[:0], nc[:], slot, nil))
	}
	r.bytes.Add(int64(n) * ChunkSize)
	return sealedUnit{ct: ct, n: n * chunkCT, first: first, chunks: int64(n)}, nil
}

// fail records a read error, and makes the output drop every unit from now on
// (so that units waiting behind the missing one do not hold their buffers).
func (r *round) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	r.w.out.fail(err)
}

func (r *round) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// sealerBuffers are the ciphertext buffers of one sealer (or of a streamed
// ReadFrom: its reader takes them, its sealers give them back once written).
type sealerBuffers struct {
	free  chan []byte
	count int // allocated so far
	max   int // allocated at most; free holds them all
}

func newSealerBuffers() *sealerBuffers {
	return &sealerBuffers{free: make(chan []byte, unitBuffers), max: unitBuffers}
}

// get returns a free buffer: one not allocated yet, or one written, writing
// sealed units first if nobody else is.
func (b *sealerBuffers) get(out *sealOut) []byte {
	select {
	case ct := <-b.free:
		return ct
	default:
	}
	if b.count < b.max {
		b.count++
		return make([]byte, unitCT)
	}
	out.drain(false)
	return <-b.free
}

func (b *sealerBuffers) put(ct []byte) { b.free <- ct[:cap(ct)] }

// sealedUnit is a sealed unit waiting to be written.
type sealedUnit struct {
	ct     []byte // n bytes of it: the sealed chunks
	n      int
	first  uint64 // index of its first chunk
	chunks int64
	home   *sealerBuffers // takes ct back once written; nil: none
}

// sealOut writes the sealed units of a Writer: at their offsets through at, or
// in order through dst. Whoever seals a unit writes it and any other waiting,
// unless another goroutine is writing, which then writes it too.
type sealOut struct {
	dst  io.Writer
	at   io.WriterAt // nil: write in order through dst
	seek io.Seeker
	base int64 // offset of chunk 0 in at

	writing sync.Mutex // held by the goroutine writing

	mu      sync.Mutex // guards what follows
	pending []sealedUnit
	next    uint64 // in order: the first chunk of the next unit to write
	err     error  // the first write error
}

func (o *sealOut) push(u sealedUnit) {
	o.mu.Lock()
	o.pending = append(o.pending, u)
	o.mu.Unlock()
}

// drain writes every unit that can be written, unless another goroutine is
// writing (and so will write them) or, with wait, after it is done.
func (o *sealOut) drain(wait bool) {
	for {
		if wait {
			o.writing.Lock()
		} else if !o.writing.TryLock() {
			return
		}
		for {
			u, ok := o.take()
			if !ok {
				break
			}
			o.write(u)
		}
		o.writing.Unlock()
		// A unit pushed after the last take but before the unlock found the
		// lock held: it is this goroutine's to write.
		if _, ok := o.peek(); !ok {
			return
		}
	}
}

// take removes a unit that can be written now from pending.
func (o *sealOut) take() (sealedUnit, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	i, ok := o.writable()
	if !ok {
		return sealedUnit{}, false
	}
	u := o.pending[i]
	last := len(o.pending) - 1
	o.pending[i] = o.pending[last]
	o.pending[last] = sealedUnit{}
	o.pending = o.pending[:last]
	if o.at == nil {
		o.next += uint64(u.chunks)
	}
	return u, true
}

// peek tells whether a unit can be written now.
func (o *sealOut) peek() (int, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.writable()
}

// writable returns the index in pending of a unit that can be written now: any,
// or in order the next one. o.mu is held.
func (o *sealOut) writable() (int, bool) {
	for i, u := range o.pending {
		// After a failure nothing is written: any unit is taken, to be dropped.
		if o.at != nil || o.err != nil || u.first == o.next {
			return i, true
		}
	}
	return 0, false
}

// write writes u (unless a write failed before) and gives its buffer back.
func (o *sealOut) write(u sealedUnit) {
	if o.failed() == nil {
		var err error
		if o.at != nil {
			_, err = o.at.WriteAt(u.ct[:u.n], o.base+int64(u.first)*chunkCT)
		} else {
			_, err = o.dst.Write(u.ct[:u.n])
		}
		if err != nil {
			o.fail(err)
		}
	}
	if u.home != nil {
		u.home.put(u.ct)
	}
}

func (o *sealOut) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
}

func (o *sealOut) failed() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// sealCrew is the helper goroutines of a Writer: each seals units of the rounds
// it is given into buffers of its own.
type sealCrew struct {
	helpers int
	rounds  chan *round // one send per helper per round; closed to stop them
}

func startCrew(helpers int) *sealCrew {
	c := &sealCrew{helpers: helpers, rounds: make(chan *round, helpers)}
	for range helpers {
		go func() {
			home := newSealerBuffers()
			for r := range c.rounds {
				r.run(home, nil)
			}
		}()
	}
	return c
}
