package cipher

import (
	"crypto/sha256"
	"fmt"
	"io"
	"sync"
)

// Reading a stream into a Writer (ReadFrom): a pipe from CRIU, say, which can
// only be read in order, by one goroutine, and as fast as its writer fills it.
//
// A pipe's bytes must be copied out of it once (read(2)); that copy goes
// straight to the chunk's sealed place in a unit buffer (a tag's room after each
// chunk), where the chunk is then sealed in place and written from: no other
// copy. Reading, sealing and writing overlap: the caller's goroutine only reads,
// and hands each full unit to streamSealers goroutines, which seal it and write
// it (whichever finds the file free), while the next unit is read. So the pipe
// is emptied as fast as it is filled, and its writer (CRIU, which blocks on a
// full pipe) is not kept waiting while earlier data is encrypted. A unit is
// handed over only once a byte after it has been read, since the file's last
// chunk must be sealed as the last: what is held back at the end of the input is
// its last chunk, which goes to pend, as with Write.
//
// Measured against it, in paired runs of criu dump --stream into capture -e
// (make bench section 6's setting), and found slower or no better: one sealer
// fewer with the reader sealing whenever its pipe is empty (the reader
// answers the pipe sooner, but the sealing falls behind); goroutines taking
// turns at the input under a lock, each sealing the unit read before its own
// (no hand-over, but each turn at the lock wakes a parked goroutine too); units
// of 8 or 16 chunks (fewer calls, less overlap); GOMAXPROCS above the cores.
const (
	// streamSealers seal and write the units a streamed ReadFrom reads: as many
	// as the sealers of a Write, since the reader mostly waits on its input.
	streamSealers = pipelineWorkers
	// streamBuffers is the number of unit buffers of a streamed ReadFrom (256
	// KiB each): the reader's two, one per sealer, and room for the reader to
	// run ahead while a unit waits to be written.
	streamBuffers = 12
)

// ReadFrom encrypts everything r yields (io.Copy uses it). A small file (up to a
// batch) is read straight into the buffer it is sealed from at Close. A larger
// one is streamed: read chunk by chunk into the buffers it is sealed in, sealed
// and written by helpers while the caller's goroutine goes on reading. A read
// error other than io.EOF fails the Writer.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	total, more, err := w.readSmall(r)
	if !more {
		return total, err
	}
	n, err := w.readStream(r)
	return total + n, err
}

// readSmall reads r into pend until pend holds a batch or r ends. more reports
// a full pend with r not known to be at its end.
func (w *Writer) readSmall(r io.Reader) (total int64, more bool, err error) {
	for len(w.pend) < batchPlain {
		if err := w.check(); err != nil {
			return total, false, err
		}
		if len(w.pend) == cap(w.pend) {
			w.growPend(len(w.pend) + 1)
		}
		n, err := io.ReadFull(r, w.pend[len(w.pend):cap(w.pend)])
		w.pend = w.pend[:len(w.pend)+n]
		total += int64(n)
		if err := w.grow(int64(n)); err != nil {
			return total, false, err
		}
		if done, err := readDone(err); done {
			return total, false, err
		}
	}
	return total, true, nil
}

// grow counts n more plaintext bytes, failing the Writer past MaxFileSize.
func (w *Writer) grow(n int64) error {
	w.size += n
	if w.size > MaxFileSize {
		w.err = fmt.Errorf("%s: file larger than %d bytes", w.name, int64(MaxFileSize))
	}
	return w.err
}

// readStream streams r into the file, after pend (a whole batch, none of which
// has been sealed, since more may follow). On return every unit handed over is
// sealed, and pend holds the last chunk read (nothing after it is known yet).
func (w *Writer) readStream(r io.Reader) (int64, error) {
	if err := w.check(); err != nil {
		return 0, err
	}
	prefix := w.pend
	w.pend = nil
	w.size -= int64(len(prefix)) // counted again as it is read below
	s := w.startStream()
	got, err := s.read(prefix, r)
	s.stop()
	w.chunk = s.next
	if err == nil {
		err = w.out.failed()
	}
	if err != nil {
		w.err = err
	}
	return got - int64(len(prefix)), err
}

// streamRead is one streamed ReadFrom.
type streamRead struct {
	w     *Writer
	bufs  *sealerBuffers // shared by the reader and the sealers
	units chan readUnit
	done  sync.WaitGroup // the sealers
	next  uint64         // index of the first chunk of the next unit handed over
	slots [][]byte       // the reader's, for slotsFrom

	hashMu sync.Mutex // guards w.hashes while the sealers run: the reader grows it
}

// readUnit is a unit read from the stream, its chunks in their sealed places.
type readUnit struct {
	ct     []byte
	first  uint64
	chunks int
}

// startStream starts the sealers of a streamed ReadFrom.
func (w *Writer) startStream() *streamRead {
	s := &streamRead{
		w:     w,
		bufs:  &sealerBuffers{free: make(chan []byte, streamBuffers), max: streamBuffers},
		units: make(chan readUnit, streamBuffers),
		next:  w.chunk,
	}
	for range streamSealers {
		s.done.Add(1)
		go func() {
			defer s.done.Done()
			for u := range s.units {
				s.seal(u)
			}
		}()
	}
	return s
}

// stop waits until every unit handed over is sealed and pushed to be written.
func (s *streamRead) stop() {
	close(s.units)
	s.done.Wait()
}

// VectorReader reads into several buffers with one call, in order, as
// readv(2) does, and returns once some bytes came (io.EOF at the end). A
// streamed ReadFrom fills the chunks of a unit, each in its sealed place, with
// one call: for a pipe, one system call and one wake-up of its writer per unit
// rather than per chunk.
type VectorReader interface {
	ReadVector(bufs [][]byte) (int, error)
}

// read reads prefix, then src to its end, into units, handing each over once
// more data follows it, and leaves the last chunk in pend. It returns the bytes
// read.
func (s *streamRead) read(prefix []byte, src io.Reader) (int64, error) {
	w := s.w
	vr, _ := src.(VectorReader)
	var got int64
	var held []byte // a full unit read, waiting for a byte after it
	cur, fill := s.bufs.get(w.out), 0
	for {
		if fill == unitPlain {
			held, cur, fill = cur, s.bufs.get(w.out), 0
		}
		var n int
		var rerr error
		switch {
		case len(prefix) > 0:
			n = copy(slotsFrom(cur, fill, s.slots[:0])[0], prefix)
			prefix = prefix[n:]
		case vr != nil:
			n, rerr = vr.ReadVector(slotsFrom(cur, fill, s.slots[:0]))
		default:
			n, rerr = src.Read(slotsFrom(cur, fill, s.slots[:0])[0])
		}
		if n > 0 {
			if held != nil {
				if err := s.send(held, unitChunks); err != nil {
					return got, err
				}
				held = nil
			}
			fill += n
			got += int64(n)
			if err := w.grow(int64(n)); err != nil {
				return got, err
			}
		}
		if rerr == io.EOF {
			return got, s.end(held, cur, fill)
		}
		if rerr != nil {
			return got, rerr
		}
		if err := w.out.failed(); err != nil {
			return got, err
		}
	}
}

// slotsFrom appends to slots the room left in the unit buffer ct after fill
// plaintext bytes: the rest of that chunk's place, then the following chunks'.
func slotsFrom(ct []byte, fill int, slots [][]byte) [][]byte {
	for j, off := fill/ChunkSize, fill%ChunkSize; j < unitChunks; j, off = j+1, 0 {
		slots = append(slots, ct[j*chunkCT+off:j*chunkCT+ChunkSize])
	}
	return slots
}

// end hands over all the data read but its last chunk, which it copies to pend:
// held (a full unit, or nil) then fill bytes of cur.
func (s *streamRead) end(held, cur []byte, fill int) error {
	if fill == 0 {
		cur, fill, held = held, unitPlain, nil
		if cur == nil { // nothing read at all
			return nil
		}
	}
	if held != nil {
		if err := s.send(held, unitChunks); err != nil {
			return err
		}
	}
	last := (fill - 1) / ChunkSize
	w := s.w
	w.growPend(fill - last*ChunkSize)
	w.pend = append(w.pend[:0], cur[last*chunkCT:last*chunkCT+fill-last*ChunkSize]...)
	if last == 0 {
		s.bufs.put(cur)
		return nil
	}
	return s.send(cur, last)
}

// send hands the first chunks of the unit buffer ct to the sealers.
func (s *streamRead) send(ct []byte, chunks int) error {
	w := s.w
	if w.hashing {
		s.hashMu.Lock()
		err := w.growHashes(s.next + uint64(chunks))
		s.hashMu.Unlock()
		if err != nil {
			return err
		}
	}
	s.units <- readUnit{ct: ct, first: s.next, chunks: chunks}
	s.next += uint64(chunks)
	return nil
}

// seal seals a unit in place, none of its chunks the file's last, and writes it
// unless another goroutine is writing (which then writes it).
func (s *streamRead) seal(u readUnit) {
	w := s.w
	var sums [unitChunks][HashSize]byte
	for j := range u.chunks {
		slot := u.ct[j*chunkCT : j*chunkCT+ChunkSize]
		nc := nonce(u.first+uint64(j), false)
		sealed := w.aead.Seal(slot[:0], nc[:], slot, nil)
		if w.hashing {
			sums[j] = sha256.Sum256(sealed)
		}
	}
	if w.hashing {
		s.hashMu.Lock()
		for j := range u.chunks {
			copy(w.hashes[(u.first+uint64(j))*HashSize:], sums[j][:])
		}
		s.hashMu.Unlock()
	}
	w.out.push(sealedUnit{ct: u.ct, n: u.chunks * chunkCT, first: u.first, chunks: int64(u.chunks), home: s.bufs})
	w.out.drain(false)
}
