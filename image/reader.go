package image

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/proto"
)

// Reader reads the entries of one image file in order, like archive/tar's Reader:
// Next returns the next entry's message, and Read reads the payload that follows it.
type Reader struct {
	r     *bufio.Reader
	name  string
	kind  *Kind
	head  uint32
	off   int64 // bytes consumed so far
	end   int64 // size of the file when known (bytes left at NewReader), else -1
	index int   // entries (not records) read so far

	data    int64 // payload bytes of the current entry not yet read; toEOF: unbounded
	pad     int64 // zero padding after the current payload
	records int64 // sub-records still owed by the last entry
	err     error // sticky
}

// NewReader reads the magic at the start of an image and returns a Reader for its
// entries. The image's type is the one its magic names (KindByMagic). If r has a Name
// method (as *os.File does), errors name that file.
//
// An image may start with a head magic (IMG_COMMON, or IMG_SERVICE for stats and
// irmap-cache: CRIU's images v1.1) or, in the older v1 layout and in inventory.img,
// directly with its own magic. A head magic that does not belong to the image's type
// is an error, as it is for CRIU.
func NewReader(r io.Reader) (*Reader, error) { return newReader(r, nil) }

// NewReaderKind is NewReader for a file whose type is known from elsewhere (its name,
// see KindByFileName): the magic must be k's. It is the way to open the legacy kinds
// that share another kind's magic (PAGES_OLD, SHM_PAGES_OLD).
func NewReaderKind(r io.Reader, k *Kind) (*Reader, error) {
	if k == nil || k.Raw {
		return nil, errors.New("image: raw images have no magic and no entries; read their bytes directly")
	}
	return newReader(r, k)
}

func newReader(r io.Reader, want *Kind) (*Reader, error) {
	rd := &Reader{end: bytesLeft(r)}
	if n, ok := r.(interface{ Name() string }); ok {
		rd.name = n.Name()
	}
	// Most images are a few hundred bytes: a buffer larger than the file is waste.
	bufSize := readBufferSize
	if rd.end >= 0 && rd.end < int64(bufSize) {
		bufSize = int(rd.end)
	}
	rd.r = bufio.NewReaderSize(r, bufSize) // at least bufio's minimum, 16
	magic, err := rd.u32("magic")
	if err != nil {
		return nil, err
	}
	if magic == MagicImgCommon || magic == MagicImgService {
		rd.head = magic
		if magic, err = rd.u32("magic after the head magic"); err != nil {
			return nil, err
		}
	}
	switch {
	case want == nil:
		rd.kind = KindByMagic(magic)
		if rd.kind == nil {
			return nil, rd.errorf(rd.off-4, nil, "unknown magic %#08x", magic)
		}
	case magic != want.Magic:
		return nil, rd.errorf(rd.off-4, nil, "magic %#08x is not %s's %#08x", magic, want.Name, want.Magic)
	default:
		rd.kind = want
	}
	if rd.head != 0 && rd.head != rd.kind.Head {
		return nil, rd.errorf(0, nil, "head magic %#08x does not belong to %s images", rd.head, rd.kind.Name)
	}
	if rd.kind.New == nil {
		rd.data = toEOF // an opaque body (SEAL, KDAT, legacy pages): all of it is read with Read
	}
	return rd, nil
}

// bytesLeft returns how many bytes r holds from its current position on, when r can
// tell without being read (bytes.Reader, strings.Reader, regular files, anything with
// Size and Seek); -1 otherwise.
func bytesLeft(r io.Reader) int64 {
	switch v := r.(type) {
	case interface{ Len() int }:
		return int64(v.Len())
	case *os.File:
		st, err := v.Stat()
		if err != nil || !st.Mode().IsRegular() {
			return -1
		}
		return sizeLeft(st.Size(), v)
	case interface {
		Size() int64
		io.Seeker
	}:
		return sizeLeft(v.Size(), v)
	}
	return -1
}

func sizeLeft(size int64, s io.Seeker) int64 {
	pos, err := s.Seek(0, io.SeekCurrent)
	if err != nil || pos > size {
		return -1
	}
	return size - pos
}

// left returns the bytes of the file not yet consumed, or -1 when unknown.
func (r *Reader) left() int64 {
	if r.end < 0 {
		return -1
	}
	return r.end - r.off
}

// exceedsLeft tells whether n bytes cannot all be in what is left of the file.
func (r *Reader) exceedsLeft(n int64) bool { return r.end >= 0 && n > r.left() }

// Kind returns the image's type.
func (r *Reader) Kind() *Kind { return r.kind }

// Head returns the head magic the file started with: MagicImgCommon, MagicImgService,
// or 0 for images without one.
func (r *Reader) Head() uint32 { return r.head }

// Offset returns the number of bytes consumed from the file so far.
func (r *Reader) Offset() int64 { return r.off }

// Next skips what is left of the current payload and returns the next entry's message.
// It returns io.EOF at a clean end of the image.
func (r *Reader) Next() (proto.Message, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.kind.New == nil {
		return nil, r.fail(r.errorf(r.off, nil, "%s images hold no protobuf entries", r.kind.Name))
	}
	if err := r.skipPayload(); err != nil {
		return nil, r.fail(err)
	}
	m, err := r.nextMessage()
	if err != nil {
		return nil, r.fail(err)
	}
	return m, nil
}

func (r *Reader) nextMessage() (proto.Message, error) {
	start := r.off
	if r.records > 0 {
		rec := r.kind.sub.newRecord()
		if err := r.readMessage(rec, false); err != nil {
			return nil, err
		}
		r.records--
		return rec, r.setPayload(start, r.kind.sub, rec)
	}
	m := r.kind.newEntry(r.index)
	if err := r.readMessage(m, true); err != nil {
		return nil, err
	}
	r.index++
	if r.kind.sub != nil {
		n, err := r.kind.sub.count(m)
		if err != nil {
			return nil, r.errorf(start, err, "bad entry")
		}
		if n > MaxSubEntries {
			return nil, r.errorf(start, nil, "entry announces %d records, limit %d", n, MaxSubEntries)
		}
		if r.exceedsLeft(4 * n) {
			return nil, r.errorf(start, nil, "entry announces %d records, but only %d bytes are left", n, r.left())
		}
		r.records = n
	}
	if r.kind.payload != nil {
		return m, r.setPayload(start, r.kind.payload, m)
	}
	return m, nil
}

// readMessage reads one size-prefixed message into m. A clean end of file before the
// size is io.EOF when eofOK, an error otherwise.
func (r *Reader) readMessage(m proto.Message, eofOK bool) error {
	start := r.off
	var sz [4]byte
	n, err := io.ReadFull(r.r, sz[:])
	r.off += int64(n)
	if err == io.EOF && eofOK {
		return io.EOF
	}
	if err != nil {
		return r.errorf(start, io.ErrUnexpectedEOF, "truncated entry size")
	}
	size := int64(binary.LittleEndian.Uint32(sz[:]))
	if size > MaxEntrySize {
		return r.errorf(start, nil, "entry size %d exceeds limit %d", size, MaxEntrySize)
	}
	if r.exceedsLeft(size) {
		return r.errorf(start, io.ErrUnexpectedEOF, "entry size %d, but only %d bytes are left", size, r.left())
	}
	buf, err := readBytesEager(r.r, size, r.end >= 0)
	r.off += int64(len(buf))
	if err != nil {
		return r.errorf(r.off, err, "entry of %d bytes truncated after %d", size, len(buf))
	}
	if err := proto.Unmarshal(buf, m); err != nil {
		return r.errorf(start+4, err, "bad %s entry", proto.MessageName(m).Name())
	}
	return nil
}

func (r *Reader) setPayload(start int64, pc payloadCodec, m proto.Message) error {
	data, pad, err := payloadSize(pc, m)
	if err != nil {
		return r.errorf(start, err, "bad entry")
	}
	if data > 0 && r.exceedsLeft(data+pad) {
		return r.errorf(start, io.ErrUnexpectedEOF, "entry announces %d payload bytes, but only %d are left", data+pad, r.left())
	}
	r.data, r.pad = data, pad
	return nil
}

// PayloadSize returns the number of payload bytes that follow the current entry
// (padding excluded), or -1 when the payload runs to the end of the file.
func (r *Reader) PayloadSize() int64 { return r.data }

// Read reads the current entry's payload. It returns io.EOF at the payload's end.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.data == 0 {
		return 0, io.EOF
	}
	if r.data > 0 && int64(len(p)) > r.data {
		p = p[:r.data]
	}
	n, err := r.r.Read(p)
	r.off += int64(n)
	if r.data > 0 {
		r.data -= int64(n)
		if err == io.EOF && r.data > 0 {
			return n, r.fail(r.errorf(r.off, io.ErrUnexpectedEOF, "payload truncated, %d bytes missing", r.data))
		}
		if r.data == 0 {
			if perr := r.skipPad(); perr != nil {
				return n, r.fail(perr)
			}
		}
	}
	if err == io.EOF && r.data == toEOF {
		r.data = 0
	}
	if err != nil && err != io.EOF {
		return n, r.fail(r.errorf(r.off, err, "reading payload"))
	}
	return n, err
}

// skipPayload discards what is left of the current payload and its padding.
func (r *Reader) skipPayload() error {
	if r.data == 0 {
		return nil
	}
	if r.data == toEOF {
		n, err := io.Copy(io.Discard, r.r)
		r.off += n
		r.data = 0
		if err != nil {
			return r.errorf(r.off, err, "reading payload")
		}
		return nil
	}
	n, err := io.CopyN(io.Discard, r.r, r.data)
	r.off += n
	r.data -= n
	if err != nil {
		return r.errorf(r.off, io.ErrUnexpectedEOF, "payload truncated, %d bytes missing", r.data)
	}
	return r.skipPad()
}

func (r *Reader) skipPad() error {
	if r.pad == 0 {
		return nil
	}
	n, err := io.CopyN(io.Discard, r.r, r.pad)
	r.off += n
	r.pad -= n
	if err != nil {
		return r.errorf(r.off, io.ErrUnexpectedEOF, "payload padding truncated")
	}
	return nil
}

func (r *Reader) u32(what string) (uint32, error) {
	var b [4]byte
	n, err := io.ReadFull(r.r, b[:])
	r.off += int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, r.errorf(r.off-int64(n), err, "reading %s", what)
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

func (r *Reader) errorf(off int64, err error, format string, args ...any) error {
	return &FormatError{File: r.name, Offset: off, Reason: fmt.Sprintf(format, args...), Err: err}
}

// fail makes err sticky: after a failure, or the end, every call returns it again.
func (r *Reader) fail(err error) error {
	if r.err == nil {
		r.err = err
	}
	return err
}

// readBytes reads exactly n bytes. Buffers above eagerAlloc grow only as bytes
// arrive, so a size field larger than the data cannot make it allocate the size.
func readBytes(r io.Reader, n int64) ([]byte, error) { return readBytesEager(r, n, false) }

// readBytesEager is readBytes that allocates the whole buffer at once when eager: when
// n is known to fit in what is left of the file.
func readBytesEager(r io.Reader, n int64, eager bool) ([]byte, error) {
	if eager || n <= eagerAlloc {
		b := make([]byte, n)
		m, err := io.ReadFull(r, b)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return b[:m], err
	}
	var buf bytes.Buffer
	m, err := io.CopyN(&buf, r, n)
	if err == io.EOF || (err == nil && m < n) {
		err = io.ErrUnexpectedEOF
	}
	return buf.Bytes(), err
}
