package imgset

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fileAt is what the positional paths of cipher read and write through.
type fileAt interface {
	io.ReaderAt
	io.WriterAt
}

// positional returns f for positional reads and writes (cipher.EncryptAt,
// DecryptAt, Verify, ReadAt): f itself, or, when f is on a memory-backed
// filesystem (tmpfs, ramfs: where image sets are usually put for speed), a
// memFile.
func positional(f *os.File) fileAt {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return f
	}
	if st.Type != unix.TMPFS_MAGIC && st.Type != unix.RAMFS_MAGIC {
		return f
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return f
	}
	return &memFile{f: f, rc: rc}
}

// ctxAt fails every write once ctx is done. cipher's positional copies and its
// stream write one batch (about 1 MiB) at a time and stop at the first failure,
// so a cancelled copy of a large file stops within a batch, without cipher
// knowing about contexts.
type ctxAt struct {
	fileAt
	ctx context.Context
}

// WriteAt implements io.WriterAt.
func (c ctxAt) WriteAt(p []byte, off int64) (int, error) {
	if c.ctx.Err() != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.fileAt.WriteAt(p, off)
}

// streamFile is the file an encrypting stream (cipher.Writer) writes to: the
// prefix through f, each sealed batch at its offset through the positional
// path of f, which the stream takes from WriteAt and Seek.
type streamFile struct {
	*os.File
	at fileAt
}

// WriteAt implements io.WriterAt through the positional path.
func (s streamFile) WriteAt(p []byte, off int64) (int, error) { return s.at.WriteAt(p, off) }

// memFile reads and writes a file of a memory-backed filesystem with raw system
// calls, which skip the Go scheduler's bookkeeping for calls that may block.
//
// On such a filesystem pread and pwrite are memory copies that never wait for a
// device. Through os.File, the scheduler takes each call of more than about 20µs
// as blocking: with every P busy (the workers of a whole-file encryption on
// two cores), sysmon takes the caller's P away and wakes a spinning thread to look
// for other work, and the caller must get a P back afterwards. Per 1 MiB batch
// that costs more than the copy: encrypting or decrypting a 256 MiB set in tmpfs
// took 1.3x the time of cp -r that way, and no more than cp with raw calls. A raw
// call keeps its P for its duration (well under a millisecond for 1 MiB), like
// any computation.
type memFile struct {
	f  *os.File
	rc syscall.RawConn // keeps the descriptor open during each call
}

// ReadAt implements io.ReaderAt.
func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := m.rw(unix.SYS_PREAD64, p, off)
	if err != nil && err != io.EOF {
		err = &os.PathError{Op: "read", Path: m.f.Name(), Err: err}
	}
	return n, err
}

// WriteAt implements io.WriterAt.
func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := m.rw(unix.SYS_PWRITE64, p, off)
	if err != nil {
		err = &os.PathError{Op: "write", Path: m.f.Name(), Err: err}
	}
	return n, err
}

// rw runs pread or pwrite (trap) until p is done, the end of the file is
// reached (a read of 0 bytes: io.EOF), or an error.
func (m *memFile) rw(trap uintptr, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, unix.EINVAL
	}
	n := 0
	var ioErr error
	err := m.rc.Control(func(fd uintptr) {
		for n < len(p) {
			// At most 1 GiB per call, as os.File does.
			chunk := p[n:min(len(p), n+1<<30)]
			r, _, e := syscall.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&chunk[0])), uintptr(len(chunk)), uintptr(off+int64(n)), 0, 0)
			switch {
			case e == unix.EINTR:
				continue
			case e != 0:
				ioErr = e
				return
			case r == 0:
				if trap == unix.SYS_PREAD64 {
					ioErr = io.EOF
				} else {
					ioErr = io.ErrShortWrite
				}
				return
			}
			n += int(r)
		}
	})
	if err != nil {
		return n, os.ErrClosed // Control fails only on a closed file, as os.File says
	}
	return n, ioErr
}

// eachBlock is the unit of readEach: small enough to stay in a core's cache
// between its read and its write.
const eachBlock = 256 << 10

// readEach reads the size bytes of src block by block on two goroutines (the
// caller's and a helper), each into a buffer of its own, and hands each block to
// put (see File.ReadEach).
func readEach(name string, src io.ReaderAt, size int64, put func(parts [][]byte, off int64) error, progress func(int64)) error {
	blocks := (size + eachBlock - 1) / eachBlock
	var next, done atomic.Int64
	var mu sync.Mutex
	var first error
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return first != nil }
	run := func(after func()) {
		buf := make([]byte, min(eachBlock, size))
		for !failed() {
			b := next.Add(1) - 1
			if b >= blocks {
				return
			}
			off := b * eachBlock
			p := buf[:min(eachBlock, size-off)]
			n, err := src.ReadAt(p, off)
			if n == len(p) {
				err = put([][]byte{p}, off)
			} else {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				err = fmt.Errorf("%s: reading %d bytes at %d: %w", name, len(p), off+int64(n), err)
			}
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				return
			}
			done.Add(int64(len(p)))
			if after != nil {
				after()
			}
		}
	}
	var wg sync.WaitGroup
	if blocks > 1 {
		wg.Add(1)
		go func() { defer wg.Done(); run(nil) }()
	}
	var reported int64
	report := func() {
		if d := done.Load(); progress != nil && d > reported {
			progress(d - reported)
			reported = d
		}
	}
	run(report)
	wg.Wait()
	report()
	return first
}
