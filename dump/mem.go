package dump

import (
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
)

// /proc/PID/pagemap entry bits and CRIU's pagemap entry flags.
const (
	pmePresent = 1 << 63
	pmeSwap    = 1 << 62
	pmeFile    = 1 << 61 // file page or shared anonymous page (not copied on write)
	// pmeExclusive: the page is mapped by this process only (PM_MMAP_EXCLUSIVE)
	pmeExclusive = 1 << 56
	pmePFNMask   = 1<<55 - 1

	pagemapChunk = 1 << 16 // pagemap entries read per pread (512 KiB)
	iovMax       = 1024    // IOV_MAX: remote iovecs per process_vm_readv
)

// pageRun is a range of consecutive pages dumped with the same pagemap flags.
type pageRun struct {
	addr, n uint64
	flags   uint32
	viaMem  bool // the mapping is not readable, or the pages are shared: copy through /proc/PID/mem
}

// memState is what the memory images of one process hold.
type memState struct {
	vmas    []*vmaDesc
	runs    []pageRun
	pages   uint64
	pagesID uint32
}

// zeroFrames are the page frames of the kernel's shared zero pages: the 4 KiB one, and
// the 2 MiB huge one (512 frames) that read faults map in transparent-huge-page areas.
// Anonymous pages that map them were only ever read and are not dumped, as CRIU does.
// Frames are 0 when the kernel hides them (no CAP_SYS_ADMIN): every page is dumped then.
type zeroFrames struct {
	small          uint64
	hugeBase, huge uint64 // the huge zero page's frames: [hugeBase, hugeBase+huge)
}

func (z zeroFrames) has(pfn uint64) bool {
	return z.small != 0 && pfn == z.small || z.huge != 0 && pfn-z.hugeBase < z.huge
}

// hugePage is the size of a transparent huge page on x86-64.
const hugePage = 2 << 20

// zeroPFNs finds the zero pages' frames once, by read-faulting areas of our own. The
// faults are made by madvise(MADV_POPULATE_READ), which the compiler cannot drop (a
// plain read of the mapping that nothing uses can be).
var zeroPFNs = sync.OnceValue(func() zeroFrames {
	var z zeroFrames
	z.small = readFaultedFrame(pageSize, false)
	if hz := readFaultedFrame(hugePage, true); hz != 0 && hz != z.small && hz%(hugePage/pageSize) == 0 {
		z.hugeBase, z.huge = hz, hugePage/pageSize
	}
	return z
})

// readFaultedFrame maps size bytes of private anonymous memory (2 MiB aligned, with
// MADV_HUGEPAGE, when huge), read-faults it and returns the frame of its first page, 0
// if the kernel does not say.
func readFaultedFrame(size uint64, huge bool) uint64 {
	m, err := unix.Mmap(-1, 0, int(size+hugePage), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0
	}
	defer unix.Munmap(m)
	base := uintptr(unsafe.Pointer(&m[0]))
	off := (hugePage - base%hugePage) % hugePage
	area := m[off : off+uintptr(size)]
	if huge && unix.Madvise(area, unix.MADV_HUGEPAGE) != nil {
		return 0
	}
	if unix.Madvise(area, unix.MADV_POPULATE_READ) != nil {
		return 0
	}
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64((base+off)/pageSize*8)); err != nil {
		return 0
	}
	e := le64(b[:])
	if e&pmePresent == 0 {
		return 0
	}
	return e & pmePFNMask
}

// scanPages reads /proc/PID/pagemap for every mapping with private pages and returns the
// runs of pages to dump, in address order.
func (d *dumper) scanPages(pid int, vmas []*vmaDesc) ([]pageRun, uint64, error) {
	f, err := os.Open(procfs.Path(pid, "pagemap"))
	if err != nil {
		return nil, 0, fmt.Errorf("open pagemap of %d: %w", pid, err)
	}
	defer f.Close()
	zero := zeroPFNs()
	var runs []pageRun
	var total uint64
	add := func(addr uint64, flags uint32, viaMem bool) {
		total++
		if n := len(runs); n > 0 {
			r := &runs[n-1]
			if r.addr+r.n*pageSize == addr && r.flags == flags && r.viaMem == viaMem {
				r.n++
				return
			}
		}
		runs = append(runs, pageRun{addr: addr, n: 1, flags: flags, viaMem: viaMem})
	}
	if d.pagemapBuf == nil {
		d.pagemapBuf = make([]byte, pagemapChunk*8)
	}
	pm := &pagemapWindow{f: f, buf: d.pagemapBuf}
	reach := pagemapReach(vmas, scansPages)
	for iv, v := range vmas {
		var flags uint32
		switch v.kind {
		case vmaVdso:
			for a := v.start; a < v.end; a += pageSize {
				add(a, image.PagemapPresent, !v.readable)
			}
			d.stats.pagesScanned += (v.end - v.start) / pageSize
			continue
		case vmaAnon:
			if v.flags&unix.MAP_DROPPABLE != 0 {
				continue // the kernel may drop these pages whenever it likes: CRIU saves none
			}
			flags = image.PagemapPresent
			if v.flags&unix.MAP_LOCKED == 0 {
				flags |= image.PagemapLazy
			}
		case vmaFilePriv, vmaFilePrivMem:
			flags = image.PagemapPresent
		default:
			continue
		}
		for a := v.start; a < v.end; {
			if err := d.checkCtx(); err != nil {
				return nil, 0, err
			}
			n := min((v.end-a)/pageSize, pagemapChunk)
			b, err := pm.entries(a, n, reach[iv])
			if err != nil {
				return nil, 0, fmt.Errorf("read pagemap of %d at %#x: %w", pid, a, err)
			}
			for i := uint64(0); i < n; i++ {
				e := le64(b[i*8:])
				dump := false
				switch {
				case e&pmeSwap != 0:
					dump = true
				case e&pmePresent == 0:
				case v.kind == vmaAnon:
					dump = !zero.has(e & pmePFNMask)
				default: // private file mapping: only pages copied on write
					dump = e&pmeFile == 0
				}
				if dump {
					// A page mapped by other processes too (copy-on-write after fork) is
					// read through /proc/PID/mem: process_vm_readv pins what it reads, and
					// pinning a shared page makes the kernel give the process its own copy,
					// undoing the sharing of a tree left running.
					shared := e&pmePresent != 0 && e&pmeExclusive == 0
					add(a+i*pageSize, flags, !v.readable || shared)
				}
			}
			d.stats.pagesScanned += n
			a += n * pageSize
		}
	}
	return runs, total, nil
}

// scansPages tells whether scanPages reads the pagemap of v.
func scansPages(v *vmaDesc) bool {
	switch v.kind {
	case vmaAnon:
		return v.flags&unix.MAP_DROPPABLE == 0
	case vmaFilePriv, vmaFilePrivMem:
		return true
	}
	return false
}

// pagemapGap is the widest gap, in pages, between two mappings whose pagemap entries are
// read in one go: the entries of the gap come along, and cost little.
const pagemapGap = 16

// pagemapReach returns, for each mapping of vmas (in address order) that scanned says is
// read, where the pagemap reads from it may reach: the end of the last of the mappings
// after it that are each less than pagemapGap pages from the one before.
func pagemapReach(vmas []*vmaDesc, scanned func(*vmaDesc) bool) []uint64 {
	reach := make([]uint64, len(vmas))
	var next uint64 // the reach of the next scanned mapping, 0 if none
	var nextStart uint64
	for i := len(vmas) - 1; i >= 0; i-- {
		v := vmas[i]
		if !scanned(v) {
			continue
		}
		reach[i] = v.end
		if next != 0 && nextStart >= v.end && nextStart-v.end <= pagemapGap*pageSize {
			reach[i] = next
		}
		next, nextStart = reach[i], v.start
	}
	return reach
}

// pagemapWindow reads /proc/PID/pagemap a window at a time: the entries of mappings close
// together come with one pread (20,000 one-page mappings took 20,000 of them).
type pagemapWindow struct {
	f          *os.File
	buf        []byte // pagemapChunk entries
	start, end uint64 // the addresses whose entries buf holds
}

// entries returns the entries of the n (at most pagemapChunk) pages at a; reach is how
// far the caller will ask next (pagemapReach): a new window read goes that far, as far as
// it fits.
func (w *pagemapWindow) entries(a, n, reach uint64) ([]byte, error) {
	if a >= w.start && a+n*pageSize <= w.end {
		return w.buf[(a-w.start)/pageSize*8:][:n*8], nil
	}
	end := max(a+n*pageSize, min(reach, a+pagemapChunk*pageSize))
	b := w.buf[:(end-a)/pageSize*8]
	if _, err := w.f.ReadAt(b, int64(a/pageSize*8)); err != nil {
		w.start, w.end = 0, 0
		return nil, err
	}
	w.start, w.end = a, end
	return b[:n*8], nil
}

// copyUnit is what copyPages copies at a time.
const copyUnit = 1 << 20

// copyPages copies the pages of src into w, in order, a unit at a time: for a sink whose
// files cannot take them from an io.ReaderAt on every core (readerFromAt).
func (d *dumper) copyPages(src *procPages, w io.Writer) error {
	buf := make([]byte, min(copyUnit, src.size))
	for off := int64(0); off < src.size; {
		b := buf[:min(int64(len(buf)), src.size-off)]
		if _, err := src.ReadAt(b, off); err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("write pages of %d: %w", src.pid, err)
		}
		d.progressAdd(int64(len(b)))
		off += int64(len(b))
	}
	return nil
}

// pageReader walks runs, filling buffers.
type pageReader struct {
	pid  int
	runs []pageRun
	i    int    // current run
	off  uint64 // bytes of runs[i] already copied
}

func (r *pageReader) done() bool { return r.i >= len(r.runs) }

// fill copies as many pages as fit in buf. Readable memory goes through process_vm_readv
// with up to iovMax remote ranges per call; unreadable mappings (PROT_NONE, exec-only)
// through /proc/PID/mem.
func (r *pageReader) fill(buf []byte, openMem func() (*os.File, error)) (int, error) {
	filled := 0
	for !r.done() && filled < len(buf) {
		run := r.runs[r.i]
		if run.viaMem {
			mem, err := openMem()
			if err != nil {
				return filled, err
			}
			n := min(uint64(len(buf)-filled), run.n*pageSize-r.off)
			if _, err := mem.ReadAt(buf[filled:filled+int(n)], int64(run.addr+r.off)); err != nil {
				return filled, fmt.Errorf("read memory of %d at %#x: %w", r.pid, run.addr+r.off, err)
			}
			filled += int(n)
			r.advance(n)
			continue
		}
		// Gather consecutive readable runs into one call.
		var remote []unix.RemoteIovec
		want := 0
		i, off := r.i, r.off
		for i < len(r.runs) && !r.runs[i].viaMem && filled+want < len(buf) && len(remote) < iovMax {
			rr := r.runs[i]
			n := min(uint64(len(buf)-filled-want), rr.n*pageSize-off)
			remote = append(remote, unix.RemoteIovec{Base: uintptr(rr.addr + off), Len: int(n)})
			want += int(n)
			off += n
			if off == rr.n*pageSize {
				i, off = i+1, 0
			}
		}
		local := []unix.Iovec{{Base: &buf[filled]}}
		local[0].SetLen(want)
		got, err := unix.ProcessVMReadv(r.pid, local, remote, 0)
		if err != nil {
			return filled, fmt.Errorf("read memory of %d at %#x: %w", r.pid, remote[0].Base, err)
		}
		if got == 0 {
			return filled, fmt.Errorf("read memory of %d at %#x: nothing read", r.pid, remote[0].Base)
		}
		filled += got
		r.advance(uint64(got))
	}
	return filled, nil
}

// advance moves the cursor n bytes forward across runs.
func (r *pageReader) advance(n uint64) {
	for n > 0 && !r.done() {
		left := r.runs[r.i].n*pageSize - r.off
		if n < left {
			r.off += n
			return
		}
		n -= left
		r.i, r.off = r.i+1, 0
	}
}

func (d *dumper) progressAdd(n int64) {
	d.progressMu.Lock() // several processes' pages are written at once
	defer d.progressMu.Unlock()
	d.progressDone += n
	if d.opts.Progress != nil {
		d.opts.Progress(d.progressDone, d.progressTotal)
	}
}

// readerFromAt is a pages file that takes its plaintext from an io.ReaderAt, read at
// several offsets at once (a file of an *imgset.Writer: each core reads a part straight
// into the buffer it is written, or sealed, from).
type readerFromAt interface {
	ReadFromAt(src io.ReaderAt, size int64, progress func(n int64)) error
}

// procPages is the pages of runs of a process, as the bytes of its pages file: an
// io.ReaderAt safe for concurrent use.
type procPages struct {
	d      *dumper
	pid    int
	runs   []pageRun
	starts []int64 // offset of each run in the file
	size   int64

	memOnce sync.Once
	mem     *os.File // /proc/PID/mem, for the runs not readable by process_vm_readv
	memErr  error
}

func newProcPages(d *dumper, pid int, runs []pageRun) *procPages {
	p := &procPages{d: d, pid: pid, runs: runs, starts: make([]int64, len(runs))}
	for i, r := range runs {
		p.starts[i] = p.size
		p.size += int64(r.n * pageSize)
	}
	return p
}

func (p *procPages) close() {
	if p.mem != nil {
		p.mem.Close()
	}
}

// ReadAt copies the pages at offset off of the file, gathering the readable runs it
// spans into process_vm_readv calls.
func (p *procPages) ReadAt(b []byte, off int64) (int, error) {
	if err := p.d.ctx.Err(); err != nil {
		return 0, fmt.Errorf("dump interrupted: %w", err)
	}
	if off < 0 || off+int64(len(b)) > p.size {
		return 0, fmt.Errorf("read of %d bytes at %d outside the %d bytes of pages of %d", len(b), off, p.size, p.pid)
	}
	i := sort.Search(len(p.starts), func(i int) bool { return p.starts[i] > off }) - 1
	r := pageReader{pid: p.pid, runs: p.runs, i: i, off: uint64(off - p.starts[i])}
	filled := 0
	for filled < len(b) {
		n, err := r.fill(b[filled:], p.openMem)
		filled += n
		if err != nil {
			return filled, err
		}
		if n == 0 {
			return filled, fmt.Errorf("read memory of %d: pages end before %d", p.pid, off+int64(filled))
		}
	}
	return filled, nil
}

// openMem opens /proc/PID/mem once.
func (p *procPages) openMem() (*os.File, error) {
	p.memOnce.Do(func() {
		f, err := os.Open(procfs.Path(p.pid, "mem"))
		if err != nil {
			p.memErr = fmt.Errorf("open memory of %d: %w", p.pid, err)
			return
		}
		p.mem = f
	})
	return p.mem, p.memErr
}
