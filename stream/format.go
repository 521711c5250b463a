package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// The stream format (docs/format.md, "The stream format") carries a whole set
// through one byte stream: the magic, then records, each a type byte and
// little-endian fields. Files are interleaved (CRIU writes several at once), so
// each has an id given by its open record:
//
//	'O' id:u32 namelen:u16 name       a new file
//	'D' id:u32 len:u32 bytes          len (1..MaxRecord) more bytes of file id
//	'C' id:u32 size:u64               file id is complete, size bytes in all
//	'E' files:u32 bytes:u64           end of the set: files complete files, bytes in all
//
// A stream that stops before its 'E' record is incomplete: its writer failed.
const Magic = "imgtool-stream\x00\x01"

// Record types.
const (
	recOpen  = 'O'
	recData  = 'D'
	recClose = 'C'
	recEnd   = 'E'
)

// MaxRecord bounds the data of one 'D' record.
const MaxRecord = 1 << 20

// ErrBadStream reports bytes that do not follow the stream format.
var ErrBadStream = errors.New("not a valid imgtool stream")

// Encoder writes the stream format. Its files may be written concurrently.
type Encoder struct {
	mu    sync.Mutex
	w     io.Writer
	next  uint32 // the next file id
	open  int    // files created and not closed
	files uint32 // files closed
	bytes uint64
	names map[string]bool
	err   error // sticky: once a write failed, the stream is cut
}

// NewEncoder writes the magic to w and returns an Encoder.
func NewEncoder(w io.Writer) (*Encoder, error) {
	if _, err := io.WriteString(w, Magic); err != nil {
		return nil, err
	}
	return &Encoder{w: w, names: map[string]bool{}}, nil
}

// Create starts a new file of the stream.
func (e *Encoder) Create(name string) (io.WriteCloser, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("stream: bad file name %q", name)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.names[name] {
		return nil, fmt.Errorf("stream: file %s written twice", name)
	}
	if len(e.names) >= MaxFiles {
		return nil, fmt.Errorf("stream: more than %d files", MaxFiles)
	}
	id := e.next
	hdr := binary.LittleEndian.AppendUint32([]byte{recOpen}, id)
	hdr = binary.LittleEndian.AppendUint16(hdr, uint16(len(name)))
	if err := e.write(append(hdr, name...)); err != nil {
		return nil, err
	}
	e.next++
	e.open++
	e.names[name] = true
	return &encFile{e: e, id: id}, nil
}

// write writes to the stream; the caller holds mu.
func (e *Encoder) write(parts ...[]byte) error {
	if e.err != nil {
		return e.err
	}
	for _, p := range parts {
		if _, err := e.w.Write(p); err != nil {
			e.err = err
			return err
		}
	}
	return nil
}

// Close writes the end record. Every file must be closed.
func (e *Encoder) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.open > 0 {
		return fmt.Errorf("stream: %d files not closed", e.open)
	}
	end := binary.LittleEndian.AppendUint32([]byte{recEnd}, e.files)
	return e.write(binary.LittleEndian.AppendUint64(end, e.bytes))
}

// encFile is one file of an Encoder.
type encFile struct {
	e      *Encoder
	id     uint32
	size   uint64
	closed bool
}

// Write writes p as data records of at most MaxRecord bytes.
func (f *encFile) Write(p []byte) (int, error) {
	done := 0
	for len(p) > 0 {
		n := min(len(p), MaxRecord)
		hdr := binary.LittleEndian.AppendUint32([]byte{recData}, f.id)
		hdr = binary.LittleEndian.AppendUint32(hdr, uint32(n))
		f.e.mu.Lock()
		err := f.e.write(hdr, p[:n])
		f.e.mu.Unlock()
		if err != nil {
			return done, err
		}
		f.size += uint64(n)
		done += n
		p = p[n:]
	}
	return done, nil
}

// Close writes the file's close record.
func (f *encFile) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	rec := binary.LittleEndian.AppendUint32([]byte{recClose}, f.id)
	f.e.mu.Lock()
	defer f.e.mu.Unlock()
	f.e.open--
	if err := f.e.write(binary.LittleEndian.AppendUint64(rec, f.size)); err != nil {
		return err
	}
	f.e.files++
	f.e.bytes += f.size
	return nil
}

// Unpack reads a whole stream from r, up to and including its end record, and
// writes each file through create. It fails on anything out of format: an
// unknown record, a file id not open, a name repeated, a size that does not add
// up, a stream that ends before its end record.
func Unpack(r io.Reader, create func(name string) (io.WriteCloser, error)) (Summary, error) {
	u := &unpacker{r: r, create: create, open: map[uint32]*unpackFile{}, names: map[string]bool{}}
	magic := make([]byte, len(Magic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != Magic {
		if err != nil {
			return Summary{}, fmt.Errorf("%w: reading its magic: %w", ErrBadStream, err)
		}
		return Summary{}, fmt.Errorf("%w: bad magic", ErrBadStream)
	}
	err := u.run()
	for _, f := range u.open {
		f.w.Close()
	}
	return u.sum, err
}

type unpacker struct {
	r      io.Reader
	create func(string) (io.WriteCloser, error)
	open   map[uint32]*unpackFile
	names  map[string]bool
	nextID uint32 // ids are given in order, each once
	sum    Summary
}

type unpackFile struct {
	name string
	w    io.WriteCloser
	size uint64
}

func (u *unpacker) run() error {
	for {
		var typ [1]byte
		if _, err := io.ReadFull(u.r, typ[:]); err != nil {
			return u.cut(err)
		}
		var err error
		switch typ[0] {
		case recOpen:
			err = u.openFile()
		case recData:
			err = u.data()
		case recClose:
			err = u.closeFile()
		case recEnd:
			return u.end()
		default:
			err = fmt.Errorf("%w: unknown record type 0x%02x", ErrBadStream, typ[0])
		}
		if err != nil {
			return err
		}
	}
}

// cut explains a read error: the end of input before the end record.
func (u *unpacker) cut(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: it ends before its end record (%d files received): the capture failed or the transfer was cut", ErrBadStream, u.sum.Files)
	}
	return err
}

// fields reads n bytes of a record's fields.
func (u *unpacker) fields(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(u.r, b); err != nil {
		return nil, u.cut(err)
	}
	return b, nil
}

func (u *unpacker) openFile() error {
	b, err := u.fields(6)
	if err != nil {
		return err
	}
	id, n := binary.LittleEndian.Uint32(b), int(binary.LittleEndian.Uint16(b[4:]))
	if id != u.nextID {
		return fmt.Errorf("%w: file id %d where %d was next", ErrBadStream, id, u.nextID)
	}
	if n == 0 || n > MaxName {
		return fmt.Errorf("%w: a file name of %d bytes", ErrBadStream, n)
	}
	nb, err := u.fields(n)
	if err != nil {
		return err
	}
	name := string(nb)
	if !ValidName(name) || u.names[name] {
		return fmt.Errorf("%w: bad or repeated file name %q", ErrBadStream, name)
	}
	if len(u.names) >= MaxFiles {
		return fmt.Errorf("%w: more than %d files", ErrBadStream, MaxFiles)
	}
	w, err := u.create(name)
	if err != nil {
		return err
	}
	u.nextID++
	u.names[name] = true
	u.open[id] = &unpackFile{name: name, w: w}
	return nil
}

func (u *unpacker) file(id uint32) (*unpackFile, error) {
	f := u.open[id]
	if f == nil {
		return nil, fmt.Errorf("%w: file id %d is not open", ErrBadStream, id)
	}
	return f, nil
}

func (u *unpacker) data() error {
	b, err := u.fields(8)
	if err != nil {
		return err
	}
	f, err := u.file(binary.LittleEndian.Uint32(b))
	if err != nil {
		return err
	}
	n := binary.LittleEndian.Uint32(b[4:])
	if n == 0 || n > MaxRecord {
		return fmt.Errorf("%w: %s: a data record of %d bytes", ErrBadStream, f.name, n)
	}
	got, err := io.CopyN(f.w, u.r, int64(n))
	f.size += uint64(got)
	if err != nil {
		return fmt.Errorf("%s: %w", f.name, u.cut(err))
	}
	return nil
}

func (u *unpacker) closeFile() error {
	b, err := u.fields(12)
	if err != nil {
		return err
	}
	id := binary.LittleEndian.Uint32(b)
	f, err := u.file(id)
	if err != nil {
		return err
	}
	if size := binary.LittleEndian.Uint64(b[4:]); size != f.size {
		return fmt.Errorf("%w: %s: %d bytes received, its close record says %d", ErrBadStream, f.name, f.size, size)
	}
	delete(u.open, id)
	if err := f.w.Close(); err != nil {
		return fmt.Errorf("%s: %w", f.name, err)
	}
	u.sum.Files++
	u.sum.Bytes += int64(f.size)
	return nil
}

func (u *unpacker) end() error {
	b, err := u.fields(12)
	if err != nil {
		return err
	}
	if len(u.open) > 0 {
		return fmt.Errorf("%w: it ends with %d files not closed", ErrBadStream, len(u.open))
	}
	files, bytes := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint64(b[4:])
	if int(files) != u.sum.Files || bytes != uint64(u.sum.Bytes) {
		return fmt.Errorf("%w: its end record counts %d files, %d bytes; %d files, %d bytes were received",
			ErrBadStream, files, bytes, u.sum.Files, u.sum.Bytes)
	}
	return nil
}
