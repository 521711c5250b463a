package stream

import (
	"errors"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// PipeReader reads one of CRIU's pipes (non-blocking, so that closing it
// interrupts a read) in as few system calls as its consumer allows:
//
//   - ReadVector fills several buffers with one readv(2): an encrypting writer
//     reads a unit of chunks, each into its sealed place, per call
//     (cipher.VectorReader). A pipe read by CRIU's writer in 64 KiB steps would
//     wake CRIU up for every 64 KiB (it sleeps on the full pipe); one call per
//     unit frees the pipe in larger steps.
//   - WriteTo an *os.File splices the pipe into it (splice(2)): the pages CRIU
//     spliced into the pipe are copied once, by the kernel, into the file, as
//     CRIU itself writes them without a streamer. A plaintext set is written so.
type PipeReader struct {
	f *os.File
}

// NewPipeReader reads the pipe f.
func NewPipeReader(f *os.File) *PipeReader { return &PipeReader{f: f} }

// Read reads the pipe.
func (p *PipeReader) Read(b []byte) (int, error) { return p.f.Read(b) }

// ReadVector reads into bufs in order, as one read: it returns once some bytes
// came (or the pipe's end, io.EOF).
func (p *PipeReader) ReadVector(bufs [][]byte) (int, error) {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Readv(int(fd), bufs)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	switch {
	case err != nil:
		return 0, err // closed: the capture failed
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// WriteTo copies the pipe to w until its end: spliced into a regular file,
// copied through memory into anything else.
func (p *PipeReader) WriteTo(w io.Writer) (int64, error) {
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			return p.spliceTo(f)
		}
	}
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	return io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{p}, *buf)
}

// spliceTo splices the whole pipe into the file dst, at its offset.
func (p *PipeReader) spliceTo(dst *os.File) (int64, error) {
	src, err := p.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	out, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	var serr error
	cerr := out.Control(func(dfd uintptr) {
		for serr == nil {
			var n int64
			rerr := src.Read(func(sfd uintptr) bool {
				n, serr = unix.Splice(int(sfd), nil, int(dfd), nil, spliceMax, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				return !errors.Is(serr, unix.EAGAIN)
			})
			if rerr != nil {
				serr = rerr
			}
			if serr != nil || n == 0 {
				return
			}
			total += n
		}
	})
	return total, errors.Join(cerr, wrapSplice(serr))
}

// spliceMax is the most one splice asks for: a pipe holds less.
const spliceMax = 1 << 30

func wrapSplice(err error) error {
	if err == nil {
		return nil
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return os.NewSyscallError("splice", err)
	}
	return err
}
