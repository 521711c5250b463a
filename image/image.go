package image

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// Entry is one entry of an image held in memory, with the payload that follows it.
type Entry struct {
	Msg     proto.Message
	Payload []byte // nil when the entry has no payload
}

// Image is a whole image file held in memory: for the small protobuf images, never for
// pages.
type Image struct {
	Kind    *Kind
	Head    uint32 // head magic as read (see Reader.Head)
	Entries []Entry
}

// ReadImage reads a whole image into memory, within MaxEntries and MaxInMemoryPayload.
func ReadImage(r io.Reader) (*Image, error) {
	rd, err := NewReader(r)
	if err != nil {
		return nil, err
	}
	img := &Image{Kind: rd.Kind(), Head: rd.Head()}
	if rd.Kind().New == nil {
		return nil, rd.errorf(rd.Offset(), nil, "%s images hold no protobuf entries", rd.Kind().Name)
	}
	for {
		m, err := rd.Next()
		if errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return img, nil
		}
		if err != nil {
			return nil, err
		}
		if len(img.Entries) >= MaxEntries {
			return nil, rd.errorf(rd.Offset(), nil, "more than %d entries", MaxEntries)
		}
		e := Entry{Msg: m}
		if e.Payload, err = readPayload(rd); err != nil {
			return nil, err
		}
		img.Entries = append(img.Entries, e)
	}
}

func readPayload(rd *Reader) ([]byte, error) {
	n := rd.PayloadSize()
	switch {
	case n == 0:
		return nil, nil
	case n > MaxInMemoryPayload:
		return nil, rd.errorf(rd.Offset(), nil, "payload of %d bytes exceeds in-memory limit %d", n, MaxInMemoryPayload)
	case n > 0:
		b, err := readBytesEager(rd, n, rd.end >= 0)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(rd, MaxInMemoryPayload+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxInMemoryPayload {
		return nil, rd.errorf(rd.Offset(), nil, "payload exceeds in-memory limit %d", MaxInMemoryPayload)
	}
	return b, nil
}

// WriteTo writes the image to w, head magic, entries and payloads, exactly as read.
func (img *Image) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	wr, err := NewWriterHead(cw, img.Kind, img.Head)
	if err != nil {
		return cw.n, err
	}
	for i, e := range img.Entries {
		if err := wr.WriteEntry(e.Msg); err != nil {
			return cw.n, fmt.Errorf("entry %d: %w", i, err)
		}
		if _, err := wr.Write(e.Payload); err != nil {
			return cw.n, fmt.Errorf("entry %d payload: %w", i, err)
		}
	}
	return cw.n, wr.Close()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
