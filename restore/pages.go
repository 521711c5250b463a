package restore

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/internal/par"
)

// Pages take the shortest way from the set to where they belong, on every core. A plain
// pages file is cut in units of unitSize bytes, which the cores take in turn: each reads
// its unit into a buffer of its own, which stays in its cache, and writes it to the
// target from there (placeUnits). An encrypted file is read the same way, a unit of a few
// chunks at a time (imgset's File.ReadEach): each unit is read, authenticated and
// decrypted in place, and written to the target from there, so the plaintext is never
// copied between buffers. Each unit reaches the target with one process_vm_writev (one
// remote iovec per run it holds), or, in fresh anonymous memory, with UFFDIO_COPY
// (userfault.go). Writing into the target (a page fault, the page zeroed,
// then the copy) is most of the cost: on two cores at once it takes about half as long
// as one core writing what another read ahead. The plaintext of an encrypted set exists
// only in those buffers and in the restored memory: nothing is written anywhere else.

const (
	// unitSize is the part of a plain pages file one core reads and writes at a time:
	// large enough that the per-call costs vanish, small enough to stay in its cache.
	unitSize = 1 << 20
	// maxIov is the most iovecs one process_vm_writev takes (IOV_MAX).
	maxIov = 1024
)

// iovecs are the buffers of a writeMemory call, kept in iovPool between calls.
type iovecs struct {
	local    []unix.Iovec
	remote   []unix.RemoteIovec
	writable []segment
}

var iovPool = sync.Pool{New: func() any { return new(iovecs) }}

// unitPool keeps the unit buffers from one pages file to the next.
var unitPool = sync.Pool{New: func() any { b := make([]byte, unitSize); return &b }}

// segment is bytes of a pages file and the address (or memfd offset) they go to.
type segment struct {
	addr uint64
	b    []byte
}

// streamRuns streams the pages file name of src and hands every byte of runs (sorted by
// offset, not overlapping) to put, in batches of segments; progress, when set, is told how
// many bytes each batch held. The batches of an encrypted file are handed over from two
// goroutines at once, in no set order (see placeEach): put must be safe for that.
//
// direct says that put only hands the bytes to the kernel with process_vm_writev or
// pwrite, never reads them itself: a plain file is then mapped a unit at a time instead
// of read (mappedFile), and the kernel copies each page once, from the page cache to its
// place.
func streamRuns(src source, name string, runs []pageRun, put func([]segment) error, progress func(int64), direct bool) error {
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
	if m, ok := f.(mappedFile); ok && direct {
		return placeUnits(f, f.Size(), name, runs, put, progress, m)
	}
	return placeUnits(f, f.Size(), name, runs, put, progress, nil)
}

// mappedFile is a plain pages file that can be mapped a part at a time (*imgset.File):
// reading the pages into buffers (_copy_to_iter) was a fifth of the CPU perf saw in a
// 256 MiB restore through process_vm_writev; mapping instead saved 4% of the CPU and the
// buffers' 3 MiB. Not where the pages go through a userfaultfd: UFFDIO_COPY from a unit
// just read, still in the cache, beat mapping and unmapping each unit, 117 -> 88 ms for
// the 256 MiB restore (medians of 11 paired runs, system CPU 0.20 -> 0.16 s).
type mappedFile interface {
	MapAt(off int64, n int) ([]byte, error)
}

// checkRuns fails when a run lies past the end of its file of size bytes.
func checkRuns(size int64, name string, runs []pageRun) error {
	for _, r := range runs {
		if r.off+r.size > size {
			return fmt.Errorf("%s: ends at %d, before the pages at %d (%d bytes) for %#x", name, size, r.off, r.size, r.vaddr)
		}
	}
	return nil
}

// placeUnits hands every byte of runs (sorted by offset, not overlapping) of the plain
// file f of size bytes to put, unit by unit, on every core (par.EachUntil): each unit is
// read into a buffer of the pool, or, with m, mapped, and put from there. It stops at the
// first error.
func placeUnits(f io.ReaderAt, size int64, name string, runs []pageRun, put func([]segment) error, progress func(int64), m mappedFile) error {
	if err := checkRuns(size, name, runs); err != nil {
		return err
	}
	last := runs[len(runs)-1]
	from, to := runs[0].off/unitSize*unitSize, last.off+last.size
	var mu sync.Mutex // progress
	return par.EachUntil(int((to-from+unitSize-1)/unitSize), func(u int) error {
		off := max(from+int64(u)*unitSize, runs[0].off)
		n := min(from+int64(u+1)*unitSize, to) - off
		var b []byte
		if m != nil {
			// A file system that cannot map the file is read instead.
			if mb, err := m.MapAt(off, int(n)); err == nil {
				b = mb
				defer imgset.Unmap(b)
			}
		}
		if b == nil {
			bp := unitPool.Get().(*[]byte)
			defer unitPool.Put(bp)
			b = (*bp)[:n]
			if got, err := f.ReadAt(b, off); got != len(b) {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("%s: reading %d bytes at %d: %w", name, len(b), off+int64(got), err)
			}
		}
		segs, n := appendSegments(nil, runs, b, off, 0)
		if len(segs) == 0 {
			return nil
		}
		if err := put(segs); err != nil {
			return err
		}
		if progress != nil {
			mu.Lock()
			progress(n)
			mu.Unlock()
		}
		return nil
	})
}

// eachReader is a file read in parallel, part by part (*imgset.File).
type eachReader interface {
	ReadEach(put func(parts [][]byte, off int64) error, progress func(n int64)) error
}

// placeEach hands every byte of runs (sorted by offset, not overlapping) of the file f
// of size bytes to put, as the parts of f come, from several goroutines at once.
func placeEach(f eachReader, size int64, name string, runs []pageRun, put func([]segment) error, progress func(int64)) error {
	if err := checkRuns(size, name, runs); err != nil {
		return err
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

// writeMemory writes segments into the process's memory with process_vm_writev, up to
// IOV_MAX segments a call. That call honours the mappings' protections: a segment it cannot
// write (in a read-only or PROT_NONE mapping) goes through /proc/PID/mem instead, which
// writes the way a debugger does.
//
// The parts of segments in mappings the process cannot write (process.readOnly) go
// through /proc/PID/mem at once, the rest through process_vm_writev: one pages file run
// often spans many mappings, writable and read-only in turn (a run of 20,000 one-page
// mappings, every other one read-only, was written whole through /proc/PID/mem, a page
// at a time through a buffer of the kernel, at a third of the speed).
func (p *process) writeMemory(segs []segment) error {
	// The pages of an encrypted file are written from several goroutines at once:
	// each call takes iovec buffers of its own.
	iov := iovPool.Get().(*iovecs)
	defer iovPool.Put(iov)
	if len(p.readOnly) > 0 {
		w := iov.writable[:0]
		for _, s := range segs {
			for _, pc := range p.readOnly.split(s) {
				if !pc.inside {
					w = append(w, pc.segment)
				} else if err := p.poke(pc.addr, pc.b); err != nil {
					return err
				}
			}
		}
		iov.writable, segs = w, w
	}
	for len(segs) > 0 {
		n := 0
		for n < len(segs) && n < maxIov && !p.readOnly.has(segs[n].addr) {
			n++
		}
		if n == 0 {
			if err := p.poke(segs[0].addr, segs[0].b); err != nil {
				return err
			}
			segs = segs[1:]
			continue
		}
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
