package restore

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Pages take the shortest way from the set to where they belong. A plain pages file is
// streamed in file order, its runs in the order they are stored: it is read ahead into a
// few large reused buffers by a goroutine while the previous buffer is written. An
// encrypted file is read by both cores at once, a unit of a few chunks at a time
// (imgset's File.ReadEach): each unit is read into a buffer that stays in the core's
// cache, authenticated and decrypted there in place, and written to the target from
// there, so the plaintext is never copied between buffers. Each buffer or unit reaches
// the target with one process_vm_writev (one remote iovec per run it holds). The
// plaintext of an encrypted set exists only in those buffers and in the restored memory:
// nothing is written anywhere else.

const (
	// readBufSize is the size of one read-ahead buffer of a plain pages file: large enough
	// that the per-call costs vanish, small enough to stay cache-friendly.
	readBufSize = 4 << 20
	// readBufs buffers circulate: one being read, one being written, one spare.
	readBufs = 3
	// maxIov is the most iovecs one process_vm_writev takes (IOV_MAX).
	maxIov = 1024
)

// iovecs are the buffers of a writeMemory call, kept in iovPool between calls.
type iovecs struct {
	local  []unix.Iovec
	remote []unix.RemoteIovec
}

var iovPool = sync.Pool{New: func() any { return new(iovecs) }}

// readBufPool keeps read-ahead buffers from one pages file to the next.
var readBufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// segment is bytes of a pages file and the address (or memfd offset) they go to.
type segment struct {
	addr uint64
	b    []byte
}

// streamRuns streams the pages file name of src and hands every byte of runs (sorted by
// offset, not overlapping) to put, in batches of segments; progress, when set, is told how
// many bytes each batch held. The batches of an encrypted file are handed over from two
// goroutines at once, in no set order (see placeEach): put must be safe for that.
func streamRuns(src source, name string, runs []pageRun, put func([]segment) error, progress func(int64)) error {
	if len(runs) == 0 {
		return nil
	}
	f, err := src.open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if e, ok := f.(eachReader); ok && src.encrypted() {
		// Decrypted and authenticated unit by unit on both cores, each unit
		// written from where it was decrypted.
		return placeEach(e, f.Size(), name, runs, put, progress)
	}
	w := &runWriter{name: name, runs: runs, put: put, progress: progress, pos: runs[0].off}
	last := runs[len(runs)-1]
	if err := readAhead([]io.ReaderAt{f}, name, runs[0].off, last.off+last.size, w); err != nil {
		return err
	}
	return w.finish()
}

// readAhead reads [from, to) of a file in order into w, in blocks of readBufSize at
// multiples of readBufSize. Block i is read by goroutine i mod len(srcs) (each srcs[k] is
// its own handle on the file), ahead of w writing the blocks before it.
func readAhead(srcs []io.ReaderAt, name string, from, to int64, w io.Writer) error {
	type block struct {
		buf *[]byte
		n   int
		err error
	}
	type reader struct {
		free chan *[]byte // its own buffers, back from w
		full chan block
	}
	const perReader = 2
	base := from / readBufSize * readBufSize
	nblocks := (to - base + readBufSize - 1) / readBufSize
	stop := make(chan struct{})
	var wg sync.WaitGroup
	readers := make([]reader, len(srcs))
	for k, src := range srcs {
		rd := reader{free: make(chan *[]byte, perReader), full: make(chan block, perReader)}
		for range perReader {
			rd.free <- readBufPool.Get().(*[]byte)
		}
		readers[k] = rd
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(rd.full)
			for b := int64(k); b < nblocks; b += int64(len(srcs)) {
				var buf *[]byte
				select {
				case buf = <-rd.free:
				case <-stop:
					return
				}
				off := max(from, base+b*readBufSize)
				n := int(min(to, base+(b+1)*readBufSize) - off)
				got, err := src.ReadAt((*buf)[:n], off)
				if got == n {
					err = nil
				} else {
					if err == nil || err == io.EOF {
						err = io.ErrUnexpectedEOF
					}
					err = fmt.Errorf("%s: reading %d bytes at %d: %w", name, n, off+int64(got), err)
				}
				rd.full <- block{buf, n, err} // never blocks: room for every buffer
				if err != nil {
					return
				}
			}
		}()
	}
	var err error
	for b := int64(0); b < nblocks && err == nil; b++ {
		rd := readers[b%int64(len(srcs))]
		blk, ok := <-rd.full
		if !ok { // cannot happen: readers stop only after an error, or with stop
			err = fmt.Errorf("%s: block %d was not read", name, b)
			break // and still stop the readers and take the buffers back, below
		}
		if err = blk.err; err == nil {
			_, err = w.Write((*blk.buf)[:blk.n])
		}
		rd.free <- blk.buf
	}
	close(stop)
	wg.Wait()
	// Every reader has ended: each buffer is in its free or full channel.
	for _, rd := range readers {
		for blk := range rd.full {
			readBufPool.Put(blk.buf)
		}
		for len(rd.free) > 0 {
			readBufPool.Put(<-rd.free)
		}
	}
	return err
}

// eachReader is a file read in parallel, part by part (*imgset.File).
type eachReader interface {
	ReadEach(put func(parts [][]byte, off int64) error, progress func(n int64)) error
}

// placeEach hands every byte of runs (sorted by offset, not overlapping) of the file f
// of size bytes to put, as the parts of f come, from several goroutines at once.
func placeEach(f eachReader, size int64, name string, runs []pageRun, put func([]segment) error, progress func(int64)) error {
	for _, r := range runs {
		if r.off+r.size > size {
			return fmt.Errorf("%s: ends at %d, before the pages at %d (%d bytes) for %#x", name, size, r.off, r.size, r.vaddr)
		}
	}
	var placed atomic.Int64
	var reported int64
	report := func(int64) {
		if d := placed.Load(); progress != nil && d > reported {
			progress(d - reported)
			reported = d
		}
	}
	err := f.ReadEach(func(parts [][]byte, off int64) error {
		var segs []segment
		var n int64
		for _, b := range parts {
			segs, n = appendSegments(segs, runs, b, off, n)
			off += int64(len(b))
		}
		if len(segs) == 0 {
			return nil
		}
		if err := put(segs); err != nil {
			return err
		}
		placed.Add(n)
		return nil
	}, report)
	report(0)
	return err
}

// appendSegments appends the segments of runs that b, the bytes at offset off of the
// file, holds, and adds their length to n.
func appendSegments(segs []segment, runs []pageRun, b []byte, off, n int64) ([]segment, int64) {
	end := off + int64(len(b))
	for i := sort.Search(len(runs), func(i int) bool { return runs[i].off+runs[i].size > off }); i < len(runs) && runs[i].off < end; i++ {
		r := runs[i]
		lo, hi := max(r.off, off), min(r.off+r.size, end)
		segs = append(segs, segment{addr: r.vaddr + uint64(lo-r.off), b: b[lo-off : hi-off]})
		n += hi - lo
	}
	return segs, n
}

// runWriter takes a pages file's bytes in file order (io.Writer) and passes on those of
// its runs as segments.
type runWriter struct {
	name     string
	runs     []pageRun
	next     int   // first run not yet wholly passed on
	pos      int64 // file offset of the next byte written
	segs     []segment
	put      func([]segment) error
	progress func(int64)
}

func (w *runWriter) Write(b []byte) (int, error) {
	start, end := w.pos, w.pos+int64(len(b))
	w.segs = w.segs[:0]
	var placed int64
	for w.next < len(w.runs) {
		r := w.runs[w.next]
		if r.off >= end {
			break
		}
		lo, hi := max(r.off, start), min(r.off+r.size, end)
		if lo < hi {
			w.segs = append(w.segs, segment{addr: r.vaddr + uint64(lo-r.off), b: b[lo-start : hi-start]})
			placed += hi - lo
		}
		if r.off+r.size > end {
			break
		}
		w.next++
	}
	w.pos = end
	if len(w.segs) > 0 {
		if err := w.put(w.segs); err != nil {
			return 0, err
		}
		if w.progress != nil {
			w.progress(placed)
		}
	}
	return len(b), nil
}

// finish fails when the file ended before the last run.
func (w *runWriter) finish() error {
	if w.next < len(w.runs) {
		r := w.runs[w.next]
		return fmt.Errorf("%s: ends at %d, before the pages at %d (%d bytes) for %#x", w.name, w.pos, r.off, r.size, r.vaddr)
	}
	return nil
}

// writeMemory writes segments into the process's memory with process_vm_writev, up to
// IOV_MAX segments a call. That call honours the mappings' protections: a segment it cannot
// write (in a read-only or PROT_NONE mapping) goes through /proc/PID/mem instead, which
// writes the way a debugger does.
func (p *process) writeMemory(segs []segment) error {
	// The pages of an encrypted file are written from several goroutines at once:
	// each call takes iovec buffers of its own.
	iov := iovPool.Get().(*iovecs)
	defer iovPool.Put(iov)
	for len(segs) > 0 {
		n := min(len(segs), maxIov)
		local, remote := iov.local[:0], iov.remote[:0]
		for _, s := range segs[:n] {
			iov := unix.Iovec{Base: &s.b[0]}
			iov.SetLen(len(s.b))
			local = append(local, iov)
			remote = append(remote, unix.RemoteIovec{Base: uintptr(s.addr), Len: len(s.b)})
		}
		iov.local, iov.remote = local, remote
		done, err := unix.ProcessVMWritev(p.pid, local, remote, 0)
		if err != nil {
			done = 0
			if errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("writing memory of %d: %w", p.pid, err)
			}
		}
		k := 0
		for k < n && done >= len(segs[k].b) {
			done -= len(segs[k].b)
			k++
		}
		segs = segs[k:]
		if k == n {
			continue
		}
		if done > 0 { // stopped inside segs[0]: go on from there (the next call says why)
			s := segs[0]
			segs[0] = segment{addr: s.addr + uint64(done), b: s.b[done:]}
			continue
		}
		if err := p.poke(segs[0].addr, segs[0].b); err != nil {
			return err
		}
		segs = segs[1:]
	}
	return nil
}
