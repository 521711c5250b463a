package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"

	streamerpb "github.com/checkpoint-restore/go-criu/v8/crit/images/img-streamer"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// The socket names CRIU connects to, in its images folder (-D).
const (
	CaptureSocket = "streamer-capture.sock" // criu dump --stream
	ServeSocket   = "streamer-serve.sock"   // criu restore --stream
)

// Limits of the protocol.
const (
	// MaxMessage bounds one protobuf message from CRIU: a request holds one file
	// name, which CRIU keeps under PATH_MAX.
	MaxMessage = 4096
	// MaxName bounds a file name (NAME_MAX): the files of a set are plain names.
	MaxName = 255
	// maxSocketPath is the room in sockaddr_un.sun_path, without its NUL.
	maxSocketPath = 107
)

// ErrNotStreamer reports a peer that does not speak CRIU's protocol: a message
// too long or not a request, a pipe missing after a request.
var ErrNotStreamer = errors.New("not CRIU's image streamer protocol")

// Listener is the socket CRIU connects to. It accepts one connection: one CRIU
// run per streamer, as with criu-image-streamer.
type Listener struct {
	l    *net.UnixListener
	path string
}

// Listen creates the socket name (CaptureSocket or ServeSocket) in dir and
// listens on it: once it returns, CRIU can connect. A socket left by a dead
// streamer is replaced; one that a live streamer answers, or any other file of
// that name, is refused.
func Listen(dir, name string) (*Listener, error) {
	path := filepath.Join(dir, name)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("%s: socket path longer than %d bytes (a UNIX socket's limit): use a shorter -D", path, maxSocketPath)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(true)
	return &Listener{l: l, path: path}, nil
}

// removeStaleSocket removes a socket at path that nobody listens on.
func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("%s: another streamer is listening there", path)
	}
	return os.Remove(path)
}

// Path returns the socket's path.
func (l *Listener) Path() string { return l.path }

// Accept waits for CRIU's connection, then closes the listener (removing the
// socket). It returns ctx's cause if ctx is done first.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	stop := context.AfterFunc(ctx, func() { l.l.Close() })
	defer stop()
	c, err := l.l.AcceptUnix()
	l.l.Close()
	if ctx.Err() != nil {
		if c != nil {
			c.Close()
		}
		return nil, context.Cause(ctx)
	}
	if err != nil {
		return nil, err
	}
	return &Conn{c: c}, nil
}

// Close stops listening and removes the socket.
func (l *Listener) Close() error {
	err := l.l.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Conn is CRIU's connection to the streamer. Its reads are exact (never past a
// message), because the pipe's descriptor rides on the byte that follows a
// request: a read that took that byte with it would lose the descriptor.
type Conn struct {
	c *net.UnixConn
}

// NewConn wraps a connected UNIX stream socket (tests, or a caller that accepts
// connections itself).
func NewConn(c *net.UnixConn) *Conn { return &Conn{c: c} }

// PeerPID returns the PID of the process at the other end (CRIU), 0 if unknown.
func (c *Conn) PeerPID() int {
	raw, err := c.c.SyscallConn()
	if err != nil {
		return 0
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cred == nil {
		return 0
	}
	return int(cred.Pid)
}

// ReadRequest reads CRIU's next request and returns the file name. It returns
// io.EOF when CRIU closed the connection between messages (it needs no more
// files), io.ErrUnexpectedEOF when it closed it within one.
func (c *Conn) ReadRequest() (string, error) {
	msg, err := c.readMessage()
	if err != nil {
		return "", err
	}
	var req streamerpb.ImgStreamerRequestEntry
	if err := proto.Unmarshal(msg, &req); err != nil || req.Filename == nil {
		return "", fmt.Errorf("%w: a request that is not an img_streamer_request_entry", ErrNotStreamer)
	}
	name := req.GetFilename()
	if !ValidName(name) {
		return "", fmt.Errorf("%w: bad file name %q", ErrNotStreamer, name)
	}
	return name, nil
}

// readMessage reads one length-prefixed message.
func (c *Conn) readMessage() ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(c.c, size[:]); err != nil {
		return nil, err // io.EOF at a message boundary
	}
	n := binary.LittleEndian.Uint32(size[:])
	if n > MaxMessage {
		return nil, fmt.Errorf("%w: a message of %d bytes (the limit is %d)", ErrNotStreamer, n, MaxMessage)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(c.c, msg); err != nil {
		return nil, noEOF(err)
	}
	return msg, nil
}

// noEOF turns io.EOF within a message into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteRequest sends a request for name, as CRIU does (fake clients, tests).
func (c *Conn) WriteRequest(name string) error {
	return c.writeMessage(&streamerpb.ImgStreamerRequestEntry{Filename: proto.String(name)})
}

// Reply tells CRIU whether the file it asked for exists (restore only).
func (c *Conn) Reply(exists bool) error {
	return c.writeMessage(&streamerpb.ImgStreamerReplyEntry{Exists: proto.Bool(exists)})
}

// ReadReply reads the streamer's answer to a request, as CRIU does.
func (c *Conn) ReadReply() (bool, error) {
	msg, err := c.readMessage()
	if err != nil {
		return false, noEOF(err)
	}
	var rep streamerpb.ImgStreamerReplyEntry
	if err := proto.Unmarshal(msg, &rep); err != nil || rep.Exists == nil {
		return false, fmt.Errorf("%w: a reply that is not an img_streamer_reply_entry", ErrNotStreamer)
	}
	return rep.GetExists(), nil
}

func (c *Conn) writeMessage(m proto.Message) error {
	body, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	msg := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+len(body)), uint32(len(body)))
	_, err = c.c.Write(append(msg, body...))
	return err
}

// RecvPipe receives the pipe end CRIU sends after a request: the read end on
// dump, the write end on restore. The file is non-blocking, so that Close
// interrupts a read or write waiting on it.
func (c *Conn) RecvPipe() (*os.File, error) {
	var one [1]byte
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.c.ReadMsgUnix(one[:], oob)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, io.ErrUnexpectedEOF
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil {
		return nil, err
	}
	for _, fd := range fds[1:] {
		unix.Close(fd)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	unix.CloseOnExec(fds[0])
	return os.NewFile(uintptr(fds[0]), "pipe"), nil
}

// parseRights returns the descriptors of SCM_RIGHTS messages, at least one.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err == nil {
			fds = append(fds, got...)
		}
	}
	if len(fds) == 0 {
		return nil, fmt.Errorf("%w: no pipe after a request", ErrNotStreamer)
	}
	return fds, nil
}

// SendPipe sends a pipe end with one dummy byte, as CRIU does (fake clients, tests).
func (c *Conn) SendPipe(f *os.File) error {
	_, _, err := c.c.WriteMsgUnix([]byte{0}, unix.UnixRights(int(f.Fd())), nil)
	return err
}

// Close closes the connection: CRIU's next request or read fails.
func (c *Conn) Close() error { return c.c.Close() }

// ValidName accepts the names of a set's files: a plain name, no separator, no
// "." or "..", at most MaxName bytes.
func ValidName(name string) bool {
	return name != "" && len(name) <= MaxName && name != "." && name != ".." && filepath.Base(name) == name
}

// setPipeSize asks for a larger pipe buffer: fewer wake-ups for large files.
// Failing is harmless (an unprivileged user above pipe-max-size).
func setPipeSize(f *os.File) {
	raw, err := f.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		for _, size := range []int{pipeSize, pipeSizeFallback} {
			if _, err := unix.FcntlInt(fd, unix.F_SETPIPE_SZ, size); err == nil {
				return
			}
		}
	})
}

// Pipe buffer sizes: 4 MiB as criu-image-streamer asks (CRIU has trouble with
// more), 1 MiB (the default pipe-max-size) when that is refused.
const (
	pipeSize         = 4 << 20
	pipeSizeFallback = 1 << 20
)

// isBrokenPipe tells whether err is a write to a pipe whose reader is gone.
func isBrokenPipe(err error) bool { return errors.Is(err, syscall.EPIPE) }
