package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// fakeCRIU is CRIU's side of the protocol, as criu/img-streamer.c speaks it.
type fakeCRIU struct {
	t    testing.TB
	conn *Conn
}

func dialCRIU(t testing.TB, dir, socket string) *fakeCRIU {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: filepath.Join(dir, socket), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	return &fakeCRIU{t: t, conn: NewConn(c)}
}

// openDump asks to write name and returns the write end of its pipe.
func (f *fakeCRIU) openDump(name string) (*os.File, error) {
	if err := f.conn.WriteRequest(name); err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if err := f.conn.SendPipe(r); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// openRestore asks for name and returns the read end of its pipe, nil if the
// streamer says there is no such file.
func (f *fakeCRIU) openRestore(name string) (*os.File, error) {
	if err := f.conn.WriteRequest(name); err != nil {
		return nil, err
	}
	ok, err := f.conn.ReadReply()
	if err != nil || !ok {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if err := f.conn.SendPipe(w); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// memSink is a Sink in memory.
type memSink struct {
	mu    sync.Mutex
	files map[string]*bytes.Buffer
}

func (m *memSink) Create(name string) (io.WriteCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := &bytes.Buffer{}
	m.files[name] = b
	return &memFile{m: m, b: b}, nil
}

type memFile struct {
	m *memSink
	b *bytes.Buffer
}

func (f *memFile) Write(p []byte) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	return f.b.Write(p)
}
func (f *memFile) Close() error { return nil }

// pattern is n bytes that differ between files and offsets.
func pattern(seed string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed[i%len(seed)] ^ byte(i>>10)
	}
	return b
}

// startCapture listens in a new folder and runs Capture on the first connection.
func startCapture(t *testing.T, sink Sink) (dir string, result <-chan error) {
	t.Helper()
	dir = t.TempDir()
	l, err := Listen(dir, CaptureSocket)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() {
		conn, err := l.Accept(context.Background())
		if err != nil {
			ch <- err
			return
		}
		_, err = Capture(context.Background(), conn, sink)
		conn.Close()
		ch <- err
	}()
	return dir, ch
}

// TestCaptureInterleaved sends two large files written in turns (as CRIU writes
// pagemap and pages) and small ones: each arrives whole, no deadlock.
func TestCaptureInterleaved(t *testing.T) {
	for _, kind := range []string{"memory", "plain set", "encrypted set"} {
		t.Run(kind, func(t *testing.T) { testCaptureInterleaved(t, kind) })
	}
}

// testCaptureInterleaved captures into a sink of kind: in memory (written in
// large writes), or a set being written, plain or encrypted, whose files read
// the pipes themselves (splice, readv into the units sealed).
func testCaptureInterleaved(t *testing.T, kind string) {
	sink, result := newTestSink(t, kind)
	dir, done := startCapture(t, sink)
	criu := dialCRIU(t, dir, CaptureSocket)
	want := map[string][]byte{
		"pagemap-1.img": pattern("pagemap", 3<<20+17),
		"pages-1.img":   pattern("pages", 9<<20+4096),
		"core-1.img":    pattern("core", 100),
		Inventory:       pattern("inv", 40),
	}
	pm, err := criu.openDump("pagemap-1.img")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := criu.openDump("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	// In turns, 256 KiB at a time (then odd sizes): more than a pipe holds, so
	// the streamer must read both at once.
	a, b := want["pagemap-1.img"], want["pages-1.img"]
	for i := 0; len(a) > 0 || len(b) > 0; i++ {
		n := min(len(a), 256<<10-i%3*4097)
		mustWrite(t, pm, a[:n])
		a = a[n:]
		n = min(len(b), 256<<10+i%5*999)
		mustWrite(t, pg, b[:n])
		b = b[n:]
	}
	pm.Close()
	pg.Close()
	for _, name := range []string{"core-1.img", Inventory} {
		w, err := criu.openDump(name)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, w, want[name])
		w.Close()
	}
	criu.conn.Close()
	if err := <-done; err != nil {
		t.Fatalf("Capture: %v", err)
	}
	got := result()
	for name, data := range want {
		if !bytes.Equal(got[name], data) {
			t.Errorf("%s: not received whole (%d bytes of %d)", name, len(got[name]), len(data))
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, CaptureSocket)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the socket is still there after the connection: %v", err)
	}
}

// newTestSink makes a sink of kind (see testCaptureInterleaved) and a function
// that commits it and returns the files it received.
func newTestSink(t *testing.T, kind string) (Sink, func() map[string][]byte) {
	t.Helper()
	if kind == "memory" {
		sink := &memSink{files: map[string]*bytes.Buffer{}}
		return sink, func() map[string][]byte {
			got := map[string][]byte{}
			for name, b := range sink.files {
				got[name] = b.Bytes()
			}
			return got
		}
	}
	var opts imgset.CreateOptions
	var ids []cipher.Identity
	if kind == "encrypted set" {
		certPEM, keyPEM, err := cipher.Keygen(cipher.KeygenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rs, err := cipher.ParseRecipients(certPEM)
		if err != nil {
			t.Fatal(err)
		}
		id, err := cipher.ParseIdentity(keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		opts.Recipients, ids = []cipher.Recipient{rs[0]}, []cipher.Identity{id}
	}
	set := filepath.Join(t.TempDir(), "set")
	w, err := imgset.Create(set, opts)
	if err != nil {
		t.Fatal(err)
	}
	return readFromSet{w}, func() map[string][]byte {
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		s, err := imgset.Open(set, imgset.OpenOptions{Identities: ids})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]byte{}
		for _, name := range s.Names() {
			f, err := s.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			if got[name], err = io.ReadAll(f); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		return got
	}
}

func mustWrite(t *testing.T, w io.Writer, p []byte) {
	t.Helper()
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
}

// TestCaptureIncomplete: a CRIU that closes the connection without
// inventory.img failed its dump.
func TestCaptureIncomplete(t *testing.T) {
	sink := &memSink{files: map[string]*bytes.Buffer{}}
	dir, result := startCapture(t, sink)
	criu := dialCRIU(t, dir, CaptureSocket)
	w, err := criu.openDump("core-1.img")
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, []byte("core"))
	w.Close()
	criu.conn.Close()
	if err := <-result; !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Capture: %v, want ErrIncomplete", err)
	}
}

// TestCaptureCutMidMessage: a connection closed within a request (CRIU killed)
// is a failure, whatever was received.
func TestCaptureCutMidMessage(t *testing.T) {
	sink := &memSink{files: map[string]*bytes.Buffer{}}
	dir, result := startCapture(t, sink)
	criu := dialCRIU(t, dir, CaptureSocket)
	w, err := criu.openDump(Inventory)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	criu.conn.c.Write([]byte{9, 0}) // half a length
	criu.conn.Close()
	if err := <-result; !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Capture: %v, want io.ErrUnexpectedEOF", err)
	}
}

// failingSink fails the writes of one file, as a full disk would.
type failingSink struct{ memSink }

func (f *failingSink) Create(name string) (io.WriteCloser, error) {
	if name == "pages-1.img" {
		return failWriter{}, nil
	}
	return f.memSink.Create(name)
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }
func (failWriter) Close() error              { return nil }

// TestCaptureSinkFailureCutsCRIU: when a file cannot be written, CRIU's writes
// and its next request fail, so that its dump fails too.
func TestCaptureSinkFailureCutsCRIU(t *testing.T) {
	sink := &failingSink{memSink{files: map[string]*bytes.Buffer{}}}
	dir, result := startCapture(t, sink)
	criu := dialCRIU(t, dir, CaptureSocket)
	w, err := criu.openDump("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = w.Write(make([]byte, 1<<20))
	}
	if werr == nil {
		t.Error("CRIU's writes into the pipe kept succeeding after the failure")
	}
	w.Close()
	err = <-result
	if err == nil || !strings.Contains(err.Error(), "pages-1.img") || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("Capture: %v, want the file and its error", err)
	}
	if _, err := criu.openDump(Inventory); err == nil {
		// The request may be buffered; the pipe's fd cannot be sent on a closed peer.
		if _, err := criu.conn.ReadRequest(); err == nil {
			t.Error("the connection is still open after the failure")
		}
	}
}

// TestCaptureCancel: a done context cuts CRIU off and returns its cause, also
// while a set's file is reading the pipe itself (readv, splice).
func TestCaptureCancel(t *testing.T) {
	for _, kind := range []string{"memory", "plain set", "encrypted set"} {
		t.Run(kind, func(t *testing.T) {
			sink, _ := newTestSink(t, kind)
			testCaptureCancel(t, sink)
		})
	}
}

func testCaptureCancel(t *testing.T, sink Sink) {
	dir := t.TempDir()
	l, err := Listen(dir, CaptureSocket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	result := make(chan error, 1)
	go func() {
		conn, err := l.Accept(ctx)
		if err == nil {
			_, err = Capture(ctx, conn, sink)
		}
		result <- err
	}()
	criu := dialCRIU(t, dir, CaptureSocket)
	w, err := criu.openDump("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, pattern("some", 3<<20)) // a set's file is past its first batch: streaming
	stopped := errors.New("stopped by the test")
	cancel(stopped)
	if err := <-result; !errors.Is(err, stopped) {
		t.Fatalf("Capture: %v, want the cancel cause", err)
	}
	w.Close()
}

// memSource is a Source in memory; a file named in fail fails after half.
type memSource struct {
	files map[string][]byte
	fail  string
}

func (m memSource) Open(name string) (io.ReadCloser, error) {
	data, ok := m.files[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	var r io.Reader = bytes.NewReader(data)
	if name == m.fail {
		r = io.MultiReader(bytes.NewReader(data[:len(data)/2]), errReader{})
	}
	return io.NopCloser(r), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("chunk authentication failed") }

func startServe(t *testing.T, src Source) (string, <-chan error) {
	t.Helper()
	dir := t.TempDir()
	l, err := Listen(dir, ServeSocket)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() {
		conn, err := l.Accept(context.Background())
		if err == nil {
			_, err = Serve(context.Background(), conn, src)
			conn.Close()
		}
		ch <- err
	}()
	return dir, ch
}

// TestServe answers requests in CRIU's way: a missing file is said to be
// missing, present ones arrive whole, even read in turns.
func TestServe(t *testing.T) {
	src := memSource{files: map[string][]byte{
		"pagemap-1.img": pattern("pm", 2<<20),
		"pages-1.img":   pattern("pg", 5<<20+1),
		Inventory:       pattern("inv", 30),
	}}
	dir, result := startServe(t, src)
	criu := dialCRIU(t, dir, ServeSocket)
	if r, err := criu.openRestore("nothere.img"); r != nil || err != nil {
		t.Fatalf("a missing file: %v, %v", r, err)
	}
	pm, err := criu.openRestore("pagemap-1.img")
	if err != nil || pm == nil {
		t.Fatal(err)
	}
	pg, err := criu.openRestore("pages-1.img")
	if err != nil || pg == nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*os.File{"pages-1.img": pg, "pagemap-1.img": pm} {
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, src.files[name]) {
			t.Errorf("%s: %d bytes, %v", name, len(got), err)
		}
	}
	criu.conn.Close()
	if err := <-result; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestServeFailureCutsCRIU: a file that fails midway closes the socket and the
// pipe, and the error names it.
func TestServeFailureCutsCRIU(t *testing.T) {
	src := memSource{files: map[string][]byte{"pages-1.img": pattern("pg", 3<<20)}, fail: "pages-1.img"}
	dir, result := startServe(t, src)
	criu := dialCRIU(t, dir, ServeSocket)
	r, err := criu.openRestore("pages-1.img")
	if err != nil || r == nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if len(got) > len(src.files["pages-1.img"])/2 {
		t.Errorf("CRIU got %d bytes, more than came before the failure", len(got))
	}
	err = <-result
	if err == nil || !strings.Contains(err.Error(), "pages-1.img") {
		t.Fatalf("Serve: %v, want an error naming the file", err)
	}
	if _, err := criu.openRestore(Inventory); err == nil {
		t.Error("the next request succeeded after the failure")
	}
}

// TestListenRefuses: another streamer's live socket, or a file that is not a
// socket, is never replaced; a dead one is.
func TestListenRefuses(t *testing.T) {
	dir := t.TempDir()
	l, err := Listen(dir, CaptureSocket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(dir, CaptureSocket); err == nil || !strings.Contains(err.Error(), "another streamer") {
		t.Errorf("second listener: %v", err)
	}
	l.Close()
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, ServeSocket), []byte("x"), 0o600)
	if _, err := Listen(other, ServeSocket); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a regular file in the way: %v", err)
	}
	// A dead streamer's socket (bound, never listened on by anyone now).
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, ServeSocket), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	l2, err := Listen(dir, ServeSocket)
	if err != nil {
		t.Fatalf("a stale socket: %v", err)
	}
	l2.Close()
}

// TestRequestLimits: a peer that is not CRIU is refused.
func TestRequestLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"too long", []byte{0xff, 0xff, 0, 0}},
		{"not a request", []byte{2, 0, 0, 0, 0x10, 1}},
		{"a path", append([]byte{8, 0, 0, 0, 0x0a, 6}, "../etc"...)},
	} {
		a, b, err := socketPair()
		if err != nil {
			t.Fatal(err)
		}
		a.Write(tc.msg)
		if _, err := NewConn(b).ReadRequest(); !errors.Is(err, ErrNotStreamer) {
			t.Errorf("%s: %v, want ErrNotStreamer", tc.name, err)
		}
		a.Close()
		b.Close()
	}
}

func socketPair() (*net.UnixConn, *net.UnixConn, error) {
	dir, err := os.MkdirTemp("", "sp")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	a, err := net.DialUnix("unix", nil, l.Addr().(*net.UnixAddr))
	if err != nil {
		return nil, nil, err
	}
	b, err := l.AcceptUnix()
	return a, b, err
}
