package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// Writer writes one image file, mirroring Reader: WriteEntry writes an entry, and
// Write writes the payload that entry announces. Close checks that nothing is owed.
type Writer struct {
	w       io.Writer
	kind    *Kind
	index   int64
	data    int64 // payload bytes still owed for the current entry; toEOF: unbounded
	pad     int64
	records int64
	buf     []byte
	err     error
}

// NewWriter writes the magic(s) of an image of kind k to w, with k's usual head magic.
func NewWriter(w io.Writer, k *Kind) (*Writer, error) { return NewWriterHead(w, k, k.Head) }

// NewWriterHead is NewWriter with an explicit head magic (0 for none), for writing back
// a file exactly as it was read (Reader.Head).
func NewWriterHead(w io.Writer, k *Kind, head uint32) (*Writer, error) {
	if k == nil || k.Raw {
		return nil, errors.New("image: raw images have no magic and no entries")
	}
	var b [8]byte
	n := 0
	if head != 0 {
		binary.LittleEndian.PutUint32(b[:], head)
		n = 4
	}
	binary.LittleEndian.PutUint32(b[n:], k.Magic)
	wr := &Writer{w: w, kind: k}
	if k.New == nil {
		wr.data = toEOF
	}
	if _, err := w.Write(b[:n+4]); err != nil {
		return nil, err
	}
	return wr, nil
}

// WriteEntry writes m as the next entry. The payload m announces (if any) must then be
// written with Write before the next entry or Close. An entry the Reader would refuse
// (wrong type, payload or record count over the limits) is refused before anything
// is written.
func (w *Writer) WriteEntry(m proto.Message) error {
	if w.err != nil {
		return w.err
	}
	if err := w.checkNext(m); err != nil {
		return w.fail(err)
	}
	next, err := w.plan(m)
	if err != nil {
		return w.fail(err)
	}
	body, err := proto.Marshal(m)
	if err != nil {
		return w.fail(fmt.Errorf("image: marshal %s: %w", proto.MessageName(m), err))
	}
	if len(body) > MaxEntrySize {
		return w.fail(fmt.Errorf("image: %s entry of %d bytes exceeds limit %d", proto.MessageName(m), len(body), MaxEntrySize))
	}
	w.buf = binary.LittleEndian.AppendUint32(w.buf[:0], uint32(len(body)))
	w.buf = append(w.buf, body...)
	if _, err := w.w.Write(w.buf); err != nil {
		return w.fail(err)
	}
	w.index, w.records, w.data, w.pad = next.index, next.records, next.data, next.pad
	return w.fail(w.finishPayload())
}

// checkNext verifies that m has the type the next entry must have.
func (w *Writer) checkNext(m proto.Message) error {
	switch {
	case w.data == toEOF:
		return fmt.Errorf("image: %s: the previous entry's payload runs to the end of the file; no entry may follow", w.kind.Name)
	case w.data != 0:
		return fmt.Errorf("image: %s: %d payload bytes still owed before the next entry", w.kind.Name, w.data)
	}
	var want proto.Message
	if w.records > 0 {
		want = w.kind.sub.newRecord()
	} else {
		want = w.kind.newEntry(int(w.index))
	}
	if want == nil || m == nil || proto.MessageName(want) != proto.MessageName(m) {
		return fmt.Errorf("image: %s entry %d cannot be a %T", w.kind.Name, w.index, m)
	}
	return nil
}

// writerState is what the Writer owes after an entry.
type writerState struct {
	index, records, data, pad int64
}

// plan returns the state after entry m: the payload and records m owes.
func (w *Writer) plan(m proto.Message) (writerState, error) {
	st := writerState{index: w.index, records: w.records}
	var pc payloadCodec = w.kind.payload
	if st.records > 0 {
		st.records--
		pc = w.kind.sub
	} else {
		st.index++
		if w.kind.sub != nil {
			n, err := w.kind.sub.count(m)
			if err != nil {
				return st, fmt.Errorf("image: %s: %w", w.kind.Name, err)
			}
			if n > MaxSubEntries {
				return st, fmt.Errorf("image: %s: entry announces %d records, limit %d", w.kind.Name, n, MaxSubEntries)
			}
			st.records = n
		}
	}
	if pc == nil {
		return st, nil
	}
	data, pad, err := payloadSize(pc, m)
	if err != nil {
		return st, fmt.Errorf("image: %s: %w", w.kind.Name, err)
	}
	st.data, st.pad = data, pad
	return st, nil
}

// Write writes payload bytes of the current entry.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.data != toEOF && int64(len(p)) > w.data {
		return 0, w.fail(fmt.Errorf("image: %s: payload write of %d bytes, only %d owed", w.kind.Name, len(p), w.data))
	}
	n, err := w.w.Write(p)
	if w.data != toEOF {
		w.data -= int64(n)
	}
	if err != nil {
		return n, w.fail(err)
	}
	return n, w.fail(w.finishPayload())
}

// finishPayload writes the padding once the payload is complete.
func (w *Writer) finishPayload() error {
	if w.data != 0 || w.pad == 0 {
		return nil
	}
	var zeros [8]byte
	_, err := w.w.Write(zeros[:w.pad])
	w.pad = 0
	return err
}

// Close checks that every announced payload and record was written. It does not close
// the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.data > 0 {
		return w.fail(fmt.Errorf("image: %s: %d payload bytes never written", w.kind.Name, w.data))
	}
	if w.records > 0 {
		return w.fail(fmt.Errorf("image: %s: %d records never written", w.kind.Name, w.records))
	}
	w.err = errors.New("image: writer closed")
	return nil
}

func (w *Writer) fail(err error) error {
	if err != nil && w.err == nil {
		w.err = err
	}
	return err
}
