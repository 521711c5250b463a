package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// encodeSample writes two interleaved files and a small one.
func encodeSample(t *testing.T) ([]byte, map[string][]byte) {
	t.Helper()
	want := map[string][]byte{"a.img": pattern("a", 3*MaxRecord+5), "b.img": pattern("b", 1000), "empty.img": nil}
	var out bytes.Buffer
	e, err := NewEncoder(&out)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := e.Create("a.img")
	b, _ := e.Create("b.img")
	empty, _ := e.Create("empty.img")
	mustWrite(t, a, want["a.img"][:10])
	mustWrite(t, b, want["b.img"])
	mustWrite(t, a, want["a.img"][10:])
	for _, f := range []io.Closer{empty, b, a} {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), want
}

func unpackAll(data []byte) (map[string]*bytes.Buffer, error) {
	sink := &memSink{files: map[string]*bytes.Buffer{}}
	_, err := Unpack(bytes.NewReader(data), sink.Create)
	return sink.files, err
}

func TestFormatRoundTrip(t *testing.T) {
	data, want := encodeSample(t)
	got, err := unpackAll(data)
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want {
		if g := got[name]; g == nil || !bytes.Equal(g.Bytes(), w) {
			t.Errorf("%s: not the bytes written", name)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d files, want %d", len(got), len(want))
	}
	// Bytes after the end record are not read.
	if _, err := unpackAll(append(data, "trailing"...)); err != nil {
		t.Errorf("trailing bytes: %v", err)
	}
}

// TestFormatRefuses: every cut and every inconsistency is refused.
func TestFormatRefuses(t *testing.T) {
	data, _ := encodeSample(t)
	for n := 0; n < len(data); n += 1 + n/7 {
		if _, err := unpackAll(data[:n]); !errors.Is(err, ErrBadStream) {
			t.Fatalf("cut at %d of %d: %v, want ErrBadStream", n, len(data), err)
		}
	}
	bad := func(name string, mutate func([]byte)) {
		d := append([]byte(nil), data...)
		mutate(d)
		if _, err := unpackAll(d); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	bad("magic", func(d []byte) { d[0] ^= 1 })
	bad("record type", func(d []byte) { d[len(Magic)] = 'X' })
	bad("end count", func(d []byte) { d[len(d)-12]++ })
	bad("end bytes", func(d []byte) { d[len(d)-8]++ })
	// A close record whose size disagrees: the last close before the end record.
	bad("close size", func(d []byte) { d[len(d)-13-8]++ })
	// A name with a separator.
	var e bytes.Buffer
	e.WriteString(Magic)
	e.WriteByte(recOpen)
	binary.Write(&e, binary.LittleEndian, uint32(0))
	binary.Write(&e, binary.LittleEndian, uint16(5))
	e.WriteString("../x1")
	if _, err := unpackAll(e.Bytes()); !errors.Is(err, ErrBadStream) {
		t.Errorf("a path as a name: %v", err)
	}
	// A data record larger than MaxRecord.
	e.Reset()
	e.WriteString(Magic)
	e.Write([]byte{recOpen, 0, 0, 0, 0, 1, 0, 'a'})
	e.WriteByte(recData)
	binary.Write(&e, binary.LittleEndian, uint32(0))
	binary.Write(&e, binary.LittleEndian, uint32(MaxRecord+1))
	if _, err := unpackAll(e.Bytes()); !errors.Is(err, ErrBadStream) {
		t.Errorf("an oversized record: %v", err)
	}
}

func TestEncoderRefuses(t *testing.T) {
	e, _ := NewEncoder(io.Discard)
	if _, err := e.Create("a/b"); err == nil {
		t.Error("a path as a name")
	}
	f, _ := e.Create("a")
	if _, err := e.Create("a"); err == nil {
		t.Error("a name twice")
	}
	if err := e.Close(); err == nil {
		t.Error("end with a file open")
	}
	f.Close()
	if err := e.Close(); err != nil {
		t.Error(err)
	}
}
