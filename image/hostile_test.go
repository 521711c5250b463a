package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/internal/testlong"
)

func isFormatError(err error) bool {
	var fe *FormatError
	return errors.As(err, &fe)
}

// boundaries returns the offsets at which data could end and still be a whole image:
// after the magic, and after each entry with its payload and every record it
// announces. toEOF reports an inline payload running to the end, after which any
// length is whole.
func boundaries(t *testing.T, data []byte) (cuts map[int64]bool, toEOFAt int64) {
	rd, err := NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	cuts = map[int64]bool{rd.Offset(): true}
	toEOFAt = -1
	for {
		_, err := rd.Next()
		if isEnd(err) {
			return cuts, toEOFAt
		}
		if err != nil {
			t.Fatal(err)
		}
		if rd.PayloadSize() == toEOF {
			toEOFAt = rd.Offset()
		}
		if _, err := io.Copy(io.Discard, rd); err != nil {
			t.Fatal(err)
		}
		if rd.records == 0 {
			cuts[rd.Offset()] = true
		}
	}
}

// nearCut tells whether n lies within d bytes of an entry boundary.
func nearCut(cuts map[int64]bool, n, d int64) bool {
	for c := n - d; c <= n+d; c++ {
		if cuts[c] {
			return true
		}
	}
	return false
}

// TestTruncatedFixtures cuts every real image at every byte offset. Each prefix must
// either be a whole image (cut at an entry boundary, or inside an inline payload)
// whose entries start the original's, or fail with a *FormatError; never panic. `make
// test` cuts within 16 bytes of every entry boundary (every length prefix and header)
// and at every 7th offset elsewhere; `make test-long` at every offset.
func TestTruncatedFixtures(t *testing.T) {
	for fi, f := range imageFixtures(t) {
		full, err := ReadImage(bytes.NewReader(f.data))
		if err != nil {
			t.Fatal(err)
		}
		cuts, toEOFAt := boundaries(t, f.data)
		for n := range int64(len(f.data)) {
			if !nearCut(cuts, n, 16) && !testlong.Sample(int(n), 7, fi) {
				continue
			}
			prefix := f.data[:n]
			whole := cuts[n] || (toEOFAt >= 0 && n >= toEOFAt)
			for _, src := range []io.Reader{bytes.NewReader(prefix), plainReader{bytes.NewReader(prefix)}} {
				img, err := ReadImage(src)
				switch {
				case whole && err != nil:
					t.Fatalf("%s cut at %d (a boundary): %v", f.path, n, err)
				case whole:
					if len(img.Entries) > len(full.Entries) {
						t.Fatalf("%s cut at %d: more entries than the whole", f.path, n)
					}
					for i, e := range img.Entries {
						if !proto.Equal(e.Msg, full.Entries[i].Msg) {
							t.Fatalf("%s cut at %d: entry %d differs", f.path, n, i)
						}
					}
				case !isFormatError(err):
					t.Fatalf("%s cut at %d: got %v, want a *FormatError", f.path, n, err)
				}
			}
		}
	}
}

// allocated returns the bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// hostile builds an image of kind k whose single entry is m followed by tail.
func hostile(t *testing.T, k *Kind, m proto.Message, tail []byte) []byte {
	l := newLayout(k)
	l.entry(t, m, tail, 0)
	return l.Bytes()
}

// TestHugeSizesDoNotAllocate feeds size fields far larger than the data and checks
// that reading fails with a *FormatError without allocating what they claim.
func TestHugeSizesDoNotAllocate(t *testing.T) {
	core := KindByName("CORE")
	bigEntry := func(size uint32) []byte {
		l := newLayout(core)
		l.u32(size)
		l.Write([]byte("only a few bytes"))
		return l.Bytes()
	}
	cases := map[string][]byte{
		"entry just under the limit": bigEntry(MaxEntrySize - 1),
		"entry over the limit":       bigEntry(0xffffffff),
		"pipe data of 4 GiB":         hostile(t, KindByName("PIPES_DATA"), &pipe_data.PipeDataEntry{PipeId: proto.Uint32(1), Bytes: proto.Uint32(0xffffffff)}, []byte("xy")),
		"ipc queue of 2^31 records":  hostile(t, KindByName("IPCNS_MSG"), msgQueue(1<<31), nil),
		"ipc queue of 2^19 records":  hostile(t, KindByName("IPCNS_MSG"), msgQueue(1<<19), nil),
		"sem set of 2^32-1":          hostile(t, KindByName("IPCNS_SEM"), semEntry(0xffffffff), nil),
		"shm segment of 2^63":        hostile(t, KindByName("IPCNS_SHM"), shmEntry(1<<63), nil),
		"shm segment of 3 GiB":       hostile(t, KindByName("IPCNS_SHM"), shmEntry(3<<30), nil),
		"ghost chunk of 2^64-1":      ghostChunk(t, 1<<64-1),
		"ghost chunk of 1 GiB":       ghostChunk(t, 1<<30),
	}
	for name, data := range cases {
		for _, sized := range []bool{true, false} {
			var src io.Reader = bytes.NewReader(data)
			if !sized {
				src = plainReader{src}
			}
			var err error
			n := allocated(func() { _, err = ReadImage(src) })
			if !isFormatError(err) {
				t.Errorf("%s (sized %v): got %v, want a *FormatError", name, sized, err)
			}
			// The reader's buffer, at most one eager allocation, and change.
			if limit := uint64(readBufferSize + eagerAlloc + 256<<10); n > limit {
				t.Errorf("%s (sized %v): allocated %d bytes, limit %d", name, sized, n, limit)
			}
		}
	}
}

// TestStreamingReadBoundedMemory reads a payload much larger than the reader's buffer
// from a source of unknown size, through Reader.Read: memory stays bounded.
func TestStreamingReadBoundedMemory(t *testing.T) {
	const size = 64 << 20
	k := KindByName("PIPES_DATA")
	head := hostile(t, k, &pipe_data.PipeDataEntry{PipeId: proto.Uint32(1), Bytes: proto.Uint32(size)}, nil)
	src := io.MultiReader(bytes.NewReader(head), io.LimitReader(zeros{}, size))
	var copied int64
	n := allocated(func() {
		rd, err := NewReader(src)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rd.Next(); err != nil {
			t.Fatal(err)
		}
		if copied, err = io.Copy(io.Discard, rd); err != nil {
			t.Fatal(err)
		}
	})
	if copied != size {
		t.Fatalf("copied %d bytes", copied)
	}
	if n > 1<<20 {
		t.Fatalf("streaming %d bytes allocated %d", size, n)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func msgQueue(qnum uint32) proto.Message {
	return &ipc_msg.IpcMsgEntry{Desc: desc(1), Qbytes: proto.Uint32(1), Qnum: proto.Uint32(qnum)}
}

// TestWrongMagic: unknown magics, a magic of the wrong kind, a head magic of the
// wrong kind, and files too short for a magic.
func TestWrongMagic(t *testing.T) {
	le := func(v ...uint32) []byte {
		var b []byte
		for _, x := range v {
			b = binary.LittleEndian.AppendUint32(b, x)
		}
		return b
	}
	cases := map[string][]byte{
		"empty":                 {},
		"short":                 {0x19, 0x43},
		"head only":             le(MagicImgCommon),
		"head and short magic":  append(le(MagicImgCommon), 1, 2),
		"unknown":               le(MagicImgCommon, 0x12345678),
		"unknown without head":  le(0x12345678),
		"two heads":             le(MagicImgCommon, MagicImgCommon),
		"service head for CORE": le(MagicImgService, KindByName("CORE").Magic),
		"common head for STATS": le(MagicImgCommon, KindByName("STATS").Magic),
		"head for INVENTORY":    le(MagicImgCommon, KindByName("INVENTORY").Magic),
		"raw pages":             bytes.Repeat([]byte{0}, 4096),
	}
	for name, data := range cases {
		if _, err := ReadImage(bytes.NewReader(data)); !isFormatError(err) {
			t.Errorf("%s: got %v, want a *FormatError", name, err)
		}
	}
	core := le(MagicImgCommon, KindByName("CORE").Magic)
	if _, err := NewReaderKind(bytes.NewReader(core), KindByName("MM")); !isFormatError(err) {
		t.Errorf("CORE read as MM: %v", err)
	}
	if _, err := NewReaderKind(bytes.NewReader(core), KindByName("PAGES")); err == nil {
		t.Error("NewReaderKind accepted a raw kind")
	}
}

// TestBadMessage: an entry whose bytes are not its message type.
func TestBadMessage(t *testing.T) {
	l := newLayout(KindByName("PSTREE"))
	l.u32(3)
	l.Write([]byte{0xff, 0xff, 0xff})
	_, err := ReadImage(bytes.NewReader(l.Bytes()))
	if !isFormatError(err) || !strings.Contains(err.Error(), "pstree_entry") {
		t.Fatalf("got %v", err)
	}
	// A missing required field is malformed too (CRIU would refuse it).
	partial, err := proto.MarshalOptions{AllowPartial: true}.Marshal(&pstree.PstreeEntry{Pid: proto.Uint32(1)})
	if err != nil {
		t.Fatal(err)
	}
	l = newLayout(KindByName("PSTREE"))
	l.u32(uint32(len(partial)))
	l.Write(partial)
	if _, err := ReadImage(bytes.NewReader(l.Bytes())); !isFormatError(err) || !strings.Contains(err.Error(), "required") {
		t.Fatalf("missing required field: got %v", err)
	}
}

// TestWriterMisuse: entries of the wrong type, payloads over- and under-written,
// records never written, raw kinds.
func TestWriterMisuse(t *testing.T) {
	pipes := KindByName("PIPES_DATA")
	entry := &pipe_data.PipeDataEntry{PipeId: proto.Uint32(1), Bytes: proto.Uint32(4)}
	newW := func(k *Kind) *Writer {
		w, err := NewWriter(io.Discard, k)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}

	if err := newW(pipes).WriteEntry(&pstree.PstreeEntry{Pid: proto.Uint32(1)}); err == nil {
		t.Error("a pstree entry in a PIPES_DATA image was accepted")
	}
	if err := newW(KindByName("PAGEMAP")).WriteEntry(&pagemap.PagemapEntry{Vaddr: proto.Uint64(0), CompatNrPages: proto.Uint32(1)}); err == nil {
		t.Error("a pagemap entry before the pagemap head was accepted")
	}
	if err := newW(pipes).WriteEntry(nil); err == nil {
		t.Error("a nil entry was accepted")
	}

	w := newW(pipes)
	if err := w.WriteEntry(entry); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("12345")); err == nil {
		t.Error("5 payload bytes for 4 were accepted")
	}

	w = newW(pipes)
	_ = w.WriteEntry(entry)
	_, _ = w.Write([]byte("123"))
	if err := w.WriteEntry(entry); err == nil {
		t.Error("an entry with 1 payload byte owed was accepted")
	}
	w = newW(pipes)
	_ = w.WriteEntry(entry)
	_, _ = w.Write([]byte("123"))
	if err := w.Close(); err == nil {
		t.Error("Close with 1 payload byte owed succeeded")
	}

	w = newW(KindByName("IPCNS_MSG"))
	if err := w.WriteEntry(msgQueue(2)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Error("Close with 2 records owed succeeded")
	}
	w = newW(KindByName("IPCNS_MSG"))
	if err := w.WriteEntry(msgQueue(1 << 30)); err == nil {
		t.Error("a queue of 2^30 records was accepted")
	}

	var out bytes.Buffer
	w, _ = NewWriter(&out, KindByName("IPCNS_SHM"))
	before := out.Len()
	if err := w.WriteEntry(shmEntry(1 << 40)); err == nil || out.Len() != before {
		t.Errorf("a 1 TiB shm payload: err %v, %d bytes written", err, out.Len()-before)
	}

	if _, err := NewWriter(io.Discard, KindByName("PAGES")); err == nil {
		t.Error("NewWriter accepted a raw kind")
	}
	w = newW(pipes)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteEntry(entry); err == nil {
		t.Error("WriteEntry after Close succeeded")
	}
}

// TestReaderStickyError: after a failure every call fails the same way.
func TestReaderStickyError(t *testing.T) {
	k := KindByName("PIPES_DATA")
	data := hostile(t, k, &pipe_data.PipeDataEntry{PipeId: proto.Uint32(1), Bytes: proto.Uint32(10)}, []byte("abc"))
	rd, err := NewReader(plainReader{bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	_, err1 := io.ReadAll(rd)
	_, err2 := rd.Next()
	if !isFormatError(err1) || err1 != err2 {
		t.Fatalf("errors %v then %v", err1, err2)
	}
}
