package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Source gives the files Serve sends. Open returns an error wrapping
// fs.ErrNotExist for a file the set does not hold (CRIU asks for optional
// images). It is called from one goroutine; the readers it returns are read
// and closed concurrently. A reader that is an io.WriterTo writes the file
// itself (the parallel decryption of an encrypted set, which writes only
// authenticated batches); any other is copied in large reads.
type Source interface {
	Open(name string) (io.ReadCloser, error)
}

// Serve answers CRIU's requests through conn from src until CRIU closes the
// connection. Each file is written into CRIU's pipe from its own goroutine, so
// that CRIU may read files in any order. On the first failure of a file (an
// authentication failure of an encrypted chunk, say) or once ctx is done, it
// closes the connection, then every pipe: CRIU sees its next request fail or a
// pipe end early, and its restore fails. The error names the file.
//
// A pipe that CRIU closes before the file's end is not a failure (CRIU reads
// what it needs); such files are listed in Summary.Short.
func Serve(ctx context.Context, conn *Conn, src Source) (Summary, error) {
	s := &transfer{conn: conn, pipes: map[*os.File]bool{}}
	stop := context.AfterFunc(ctx, func() { s.fail(context.Cause(ctx)) })
	defer stop()
	for n := 0; ; n++ {
		name, err := conn.ReadRequest()
		if err == io.EOF {
			break
		}
		if err == nil && n >= MaxFiles {
			err = fmt.Errorf("more than %d requests", MaxFiles)
		}
		if err == nil {
			err = s.serveFile(name, src)
		}
		if err != nil {
			s.fail(err)
			break
		}
	}
	s.wg.Wait()
	return s.sum, s.failure()
}

// serveFile answers one request, and sends the file in a goroutine.
func (s *transfer) serveFile(name string, src Source) error {
	r, err := src.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return s.conn.Reply(false)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := s.conn.Reply(true); err != nil {
		r.Close()
		return err
	}
	pipe, err := s.conn.RecvPipe()
	if err != nil {
		r.Close()
		return fmt.Errorf("%s: receiving its pipe: %w", name, err)
	}
	if !s.track(pipe) {
		r.Close()
		return s.failure()
	}
	setPipeSize(pipe)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer r.Close()
		n, err := feed(pipe, r)
		s.untrack(pipe)
		switch {
		case err != nil && isBrokenPipe(err):
			s.fileShort(name, n)
		case err != nil:
			s.fail(fmt.Errorf("%s: %w", name, err))
		default:
			s.fileDone(name, n)
		}
	}()
	return nil
}

// feed writes r into the pipe.
func feed(pipe *os.File, r io.Reader) (int64, error) {
	if wt, ok := r.(io.WriterTo); ok {
		return wt.WriteTo(pipe)
	}
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	// Neither side's own copy path: os.File would copy in 32 KiB steps here.
	return io.CopyBuffer(struct{ io.Writer }{pipe}, struct{ io.Reader }{r}, *buf)
}

func (s *transfer) fileShort(name string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sum.Short = append(s.sum.Short, name)
	s.sum.Files++
	s.sum.Bytes += n
}
