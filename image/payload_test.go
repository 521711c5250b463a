package image

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	ipc_desc "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-desc"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"google.golang.org/protobuf/proto"
)

// layout builds the bytes CRIU writes, piece by piece, to compare the codec against:
// head and magic, then for each entry its u32 size, message, data and zero padding.
type layout struct{ bytes.Buffer }

func newLayout(k *Kind) *layout {
	l := &layout{}
	if k.Head != 0 {
		l.u32(k.Head)
	}
	l.u32(k.Magic)
	return l
}

func (l *layout) u32(v uint32) { _ = binary.Write(&l.Buffer, binary.LittleEndian, v) }

func (l *layout) entry(t *testing.T, m proto.Message, data []byte, pad int) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	l.u32(uint32(len(b)))
	l.Write(b)
	l.Write(data)
	l.Write(make([]byte, pad))
}

// checkImage writes img, compares with the expected layout, and reads it back.
func checkImage(t *testing.T, img *Image, want []byte) {
	t.Helper()
	got := mustEncode(t, img)
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: wrote\n%x\nwant\n%x", img.Kind.Name, got, want)
	}
	for _, src := range []io.Reader{bytes.NewReader(want), plainReader{bytes.NewReader(want)}} {
		back, err := ReadImage(src)
		if err != nil {
			t.Fatal(err)
		}
		sameEntries(t, img.Kind.Name, back.Entries, img.Entries)
	}
}

func desc(id uint32) *ipc_desc.IpcDescEntry {
	return &ipc_desc.IpcDescEntry{Key: proto.Uint32(id), Uid: proto.Uint32(0), Gid: proto.Uint32(0),
		Cuid: proto.Uint32(0), Cgid: proto.Uint32(0), Mode: proto.Uint32(0o600), Id: proto.Uint32(id)}
}

// TestShmPayload: two segments with their data padded to 4, and one in_pagemaps
// segment between them with nothing after it.
func TestShmPayload(t *testing.T) {
	k := KindByName("IPCNS_SHM")
	seg := func(id uint32, size uint64, inPagemaps *bool) *ipc_shm.IpcShmEntry {
		return &ipc_shm.IpcShmEntry{Desc: desc(id), Size: proto.Uint64(size), InPagemaps: inPagemaps}
	}
	a, b := fakePayload(5, 1), fakePayload(8, 2)
	img := &Image{Kind: k, Head: k.Head, Entries: []Entry{
		{Msg: seg(1, 5, nil), Payload: a},
		{Msg: seg(2, 1<<20, proto.Bool(true))},
		{Msg: seg(3, 8, proto.Bool(false)), Payload: b},
	}}
	l := newLayout(k)
	l.entry(t, img.Entries[0].Msg, a, 3)
	l.entry(t, img.Entries[1].Msg, nil, 0)
	l.entry(t, img.Entries[2].Msg, b, 0)
	checkImage(t, img, l.Bytes())
}

// TestSemPayload: nsems u16 values padded to 8 bytes.
func TestSemPayload(t *testing.T) {
	k := KindByName("IPCNS_SEM")
	l := newLayout(k)
	img := &Image{Kind: k, Head: k.Head}
	for i, nsems := range []uint32{1, 3, 4, 5} {
		m := &ipc_sem.IpcSemEntry{Desc: desc(uint32(i)), Nsems: proto.Uint32(nsems)}
		data := fakePayload(int64(2*nsems), i)
		img.Entries = append(img.Entries, Entry{Msg: m, Payload: data})
		l.entry(t, m, data, int(padTo(int64(2*nsems), 8)))
	}
	checkImage(t, img, l.Bytes())
}

// TestMsgRecords: a queue of three messages, each an ipc_msg record and its text
// padded to 8, then an empty queue.
func TestMsgRecords(t *testing.T) {
	k := KindByName("IPCNS_MSG")
	l := newLayout(k)
	q := &ipc_msg.IpcMsgEntry{Desc: desc(7), Qbytes: proto.Uint32(1 << 14), Qnum: proto.Uint32(3)}
	img := &Image{Kind: k, Head: k.Head, Entries: []Entry{{Msg: q}}}
	l.entry(t, q, nil, 0)
	for i, size := range []uint32{1, 8, 13} {
		m := &ipc_msg.IpcMsg{Mtype: proto.Uint64(uint64(i + 1)), Msize: proto.Uint32(size)}
		data := fakePayload(int64(size), i)
		img.Entries = append(img.Entries, Entry{Msg: m, Payload: data})
		l.entry(t, m, data, int(padTo(int64(size), 8)))
	}
	empty := &ipc_msg.IpcMsgEntry{Desc: desc(8), Qbytes: proto.Uint32(1), Qnum: proto.Uint32(0)}
	img.Entries = append(img.Entries, Entry{Msg: empty})
	l.entry(t, empty, nil, 0)
	checkImage(t, img, l.Bytes())

	// A queue whose messages are missing is truncated, not a shorter valid image.
	short := l.Bytes()[:l.Len()-len(mustMarshal(t, empty))-4-(13+3)]
	if _, err := ReadImage(bytes.NewReader(short)); !isFormatError(err) {
		t.Fatalf("queue without its last message: %v", err)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGhostInline: a ghost file's content follows its entry to the end of the file.
func TestGhostInline(t *testing.T) {
	k := KindByName("GHOST_FILE")
	m := &ghost_file.GhostFileEntry{Uid: proto.Uint32(1), Gid: proto.Uint32(2), Mode: proto.Uint32(0o100644), Size: proto.Uint64(2048)}
	data := fakePayload(2048, 9)
	l := newLayout(k)
	l.entry(t, m, data, 0)
	checkImage(t, &Image{Kind: k, Head: k.Head, Entries: []Entry{{Msg: m, Payload: data}}}, l.Bytes())

	rd, err := NewReader(bytes.NewReader(l.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	if rd.PayloadSize() != -1 {
		t.Errorf("inline ghost PayloadSize %d, want -1", rd.PayloadSize())
	}
	if _, err := rd.Next(); !isEnd(err) {
		t.Errorf("after an inline ghost payload: %v, want io.EOF", err)
	}

	// Nothing may follow an inline payload.
	var out bytes.Buffer
	w, _ := NewWriter(&out, k)
	if err := w.WriteEntry(m); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteEntry(&ghost_file.GhostChunkEntry{Len: proto.Uint64(1), Off: proto.Uint64(0)}); err == nil {
		t.Error("an entry after an inline ghost payload was accepted")
	}
}

// TestGhostChunks: a chunked ghost file, each ghost_chunk_entry followed by len bytes.
func TestGhostChunks(t *testing.T) {
	k := KindByName("GHOST_FILE")
	m := &ghost_file.GhostFileEntry{Uid: proto.Uint32(1), Gid: proto.Uint32(2), Mode: proto.Uint32(0o100644),
		Size: proto.Uint64(40960), Chunks: proto.Bool(true)}
	l := newLayout(k)
	l.entry(t, m, nil, 0)
	img := &Image{Kind: k, Head: k.Head, Entries: []Entry{{Msg: m}}}
	for i, c := range [][2]uint64{{0, 4096}, {32768, 8192}, {40959, 1}} {
		ce := &ghost_file.GhostChunkEntry{Off: proto.Uint64(c[0]), Len: proto.Uint64(c[1])}
		data := fakePayload(int64(c[1]), i)
		img.Entries = append(img.Entries, Entry{Msg: ce, Payload: data})
		l.entry(t, ce, data, 0)
	}
	checkImage(t, img, l.Bytes())
}

// TestTCPStreamOrder: the receive queue, then the send queue.
func TestTCPStreamOrder(t *testing.T) {
	k := KindByName("TCP_STREAM")
	m := &tcp_stream.TcpStreamEntry{InqLen: proto.Uint32(3), InqSeq: proto.Uint32(1), OutqLen: proto.Uint32(5),
		OutqSeq: proto.Uint32(2), OptMask: proto.Uint32(0), SndWscale: proto.Uint32(0), MssClamp: proto.Uint32(0)}
	inq, outq := []byte("in!"), []byte("out!!")
	l := newLayout(k)
	l.entry(t, m, append(append([]byte{}, inq...), outq...), 0)
	checkImage(t, &Image{Kind: k, Head: k.Head, Entries: []Entry{{Msg: m, Payload: []byte("in!out!!")}}}, l.Bytes())
}

// TestV1Images: images of the v1 layout have no head magic; they read, and write
// back the same way.
func TestV1Images(t *testing.T) {
	for _, name := range []string{"CORE", "PIPES_DATA", "STATS", "PAGEMAP"} {
		k := KindByName(name)
		img := buildImage(t, k)
		img.Head = 0
		data := mustEncode(t, img)
		if binary.LittleEndian.Uint32(data) != k.Magic {
			t.Fatalf("%s: v1 image starts %x", name, data[:4])
		}
		back, err := ReadImage(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if back.Head != 0 || back.Kind != k {
			t.Fatalf("%s: read back as %s head %#x", name, back.Kind.Name, back.Head)
		}
		sameEntries(t, name, back.Entries, img.Entries)
		if !bytes.Equal(mustEncode(t, back), data) {
			t.Fatalf("%s: v1 round trip differs", name)
		}
	}
}

func semEntry(nsems uint32) proto.Message {
	return &ipc_sem.IpcSemEntry{Desc: desc(1), Nsems: proto.Uint32(nsems)}
}

func shmEntry(size uint64) proto.Message {
	return &ipc_shm.IpcShmEntry{Desc: desc(1), Size: proto.Uint64(size)}
}

func ghostChunk(t *testing.T, n uint64) []byte {
	k := KindByName("GHOST_FILE")
	l := newLayout(k)
	l.entry(t, &ghost_file.GhostFileEntry{Uid: proto.Uint32(1), Gid: proto.Uint32(2), Mode: proto.Uint32(0o100644), Chunks: proto.Bool(true)}, nil, 0)
	l.entry(t, &ghost_file.GhostChunkEntry{Off: proto.Uint64(0), Len: proto.Uint64(n)}, []byte("abc"), 0)
	return l.Bytes()
}
