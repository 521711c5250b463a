package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Inventory is the image CRIU writes last on a successful dump.
const Inventory = "inventory.img"

// MaxFiles bounds the files of one set (CRIU writes a few per process).
const MaxFiles = 1 << 20

// copyBuffer is the size of the reads from CRIU's pipes and of the writes to
// the set: large, so that an encrypting writer seals whole batches in parallel.
const copyBuffer = 1 << 20

// ErrIncomplete reports a dump that CRIU did not finish: it closed the
// connection without sending a complete inventory.img.
var ErrIncomplete = errors.New("CRIU's dump did not complete")

// Sink receives the captured files. Create is called from one goroutine, in
// CRIU's order; the writers it returns are written and closed concurrently,
// each from its own goroutine (CRIU writes several files at once).
// *imgset.Writer and *Encoder are Sinks.
type Sink interface {
	Create(name string) (io.WriteCloser, error)
}

// Summary counts what went through the streamer.
type Summary struct {
	Files int   // files received or served
	Bytes int64 // their bytes (plaintext)
	// Short lists files CRIU stopped reading before their end (restore).
	Short []string
	// Largest is the largest file captured, and how long it took from its pipe
	// to its end: its rate is the streamer's throughput on a dump's pages,
	// bounded by CRIU's and by the capture's own (make bench, section 6).
	Largest FileTime
}

// FileTime is a file's size and the time it took to stream.
type FileTime struct {
	Name    string
	Bytes   int64
	Elapsed time.Duration
}

// Rate returns the file's bytes per second, 0 if unknown.
func (f FileTime) Rate() float64 {
	if f.Elapsed <= 0 {
		return 0
	}
	return float64(f.Bytes) / f.Elapsed.Seconds()
}

// Capture receives every file CRIU dumps through conn into sink, until CRIU
// closes the connection. It returns ErrIncomplete (wrapped) if CRIU never sent a
// whole inventory.img, the first error of a file otherwise. On any error, or
// once ctx is done, it closes the connection and every pipe, so that CRIU's
// dump fails at once (and CRIU resumes the processes) rather than completing
// into a set that will not be kept. The caller commits or aborts sink.
func Capture(ctx context.Context, conn *Conn, sink Sink) (Summary, error) {
	c := &transfer{conn: conn, pipes: map[*os.File]bool{}}
	stop := context.AfterFunc(ctx, func() { c.fail(context.Cause(ctx)) })
	defer stop()
	got := map[string]bool{}
	for {
		name, err := conn.ReadRequest()
		if err == io.EOF {
			break
		}
		if err == nil {
			err = c.startFile(name, got, sink)
		}
		if err != nil {
			c.fail(err)
			break
		}
	}
	c.wg.Wait()
	if err := c.failure(); err != nil {
		return c.sum, err
	}
	if !c.done[Inventory] {
		return c.sum, fmt.Errorf("%w: the connection closed without %s, which CRIU writes last", ErrIncomplete, Inventory)
	}
	return c.sum, nil
}

// startFile receives the pipe of name and drains it into sink in a goroutine.
func (c *transfer) startFile(name string, got map[string]bool, sink Sink) error {
	if got[name] {
		return fmt.Errorf("%w: CRIU sent %s twice", ErrNotStreamer, name)
	}
	if len(got) >= MaxFiles {
		return fmt.Errorf("more than %d files", MaxFiles)
	}
	got[name] = true
	pipe, err := c.conn.RecvPipe()
	if err != nil {
		return fmt.Errorf("%s: receiving its pipe: %w", name, err)
	}
	if !c.track(pipe) {
		return c.failure()
	}
	w, err := sink.Create(name)
	if err != nil {
		c.untrack(pipe)
		return err
	}
	setPipeSize(pipe)
	_, readFrom := sink.(ReadFromSink)
	start := time.Now()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		n, err := drain(w, pipe, readFrom)
		c.untrack(pipe)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			c.fail(fmt.Errorf("%s: %w", name, err))
			return
		}
		c.fileDone(name, n)
		c.fileTime(FileTime{Name: name, Bytes: n, Elapsed: time.Since(start)})
	}()
	return nil
}

// ReadFromSink marks a Sink whose writers read best by themselves (io.ReaderFrom),
// given a *PipeReader: an encrypting writer reads the pipe straight into the
// units it seals (PipeReader.ReadVector) while earlier ones are being sealed, so
// CRIU is not kept waiting on a full pipe; a plaintext file has the pipe spliced
// into it (PipeReader.WriteTo).
type ReadFromSink interface {
	Sink
	ReadsFromPipes()
}

// drain copies the pipe into w until CRIU closes its end: through w's ReadFrom
// when readFrom, else in large writes.
func drain(w io.Writer, pipe *os.File, readFrom bool) (int64, error) {
	if rf, ok := w.(io.ReaderFrom); ok && readFrom {
		return rf.ReadFrom(NewPipeReader(pipe))
	}
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	var total int64
	for {
		n, err := io.ReadFull(pipe, *buf)
		if n > 0 {
			if _, werr := w.Write((*buf)[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBuffer); return &b }}

// transfer is the state shared by the goroutines of one Capture or Serve.
type transfer struct {
	conn *Conn
	wg   sync.WaitGroup

	mu     sync.Mutex
	pipes  map[*os.File]bool // pipes in use, closed on failure
	err    error             // the first failure
	done   map[string]bool   // files complete
	sum    Summary
	closed bool
}

// track registers a pipe in use; false (and the pipe closed) once failed.
func (c *transfer) track(p *os.File) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		p.Close()
		return false
	}
	c.pipes[p] = true
	return true
}

// untrack closes a pipe that is done with.
func (c *transfer) untrack(p *os.File) {
	c.mu.Lock()
	delete(c.pipes, p)
	c.mu.Unlock()
	p.Close()
}

func (c *transfer) fileDone(name string, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = map[string]bool{}
	}
	c.done[name] = true
	c.sum.Files++
	c.sum.Bytes += n
}

// fileTime keeps the largest file's time.
func (c *transfer) fileTime(f FileTime) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.Bytes > c.sum.Largest.Bytes {
		c.sum.Largest = f
	}
}

// fail records the first error and cuts CRIU off: the socket first, so that
// CRIU's next request fails, then every pipe, so that its reads and writes do.
func (c *transfer) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	if c.closed {
		return
	}
	c.closed = true
	c.conn.Close()
	for p := range c.pipes {
		p.Close()
	}
}

func (c *transfer) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
