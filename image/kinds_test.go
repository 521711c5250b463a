package image

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/magic"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// allKinds returns every row of the table, the rows that share a magic with another
// (pagemap-shmem, signal-p, binfmt-misc-N) included.
func allKinds() []*Kind { return append(Kinds(), aliasKinds...) }

// filler sets every field of a message to a non-default value. Integers are small
// (1 to 7) so that fields announcing payloads or records stay small, and vary so that
// odd lengths exercise padding. Recursive message types (apparmor namespaces) recurse
// once: a type already twice among its ancestors gets no optional children.
type filler struct {
	n     int
	no    bool // set bools to false (still present: proto2 keeps an explicit false)
	chain map[protoreflect.FullName]int
}

func (f *filler) next() int { f.n++; return f.n%7 + 1 }

func (f *filler) fill(m protoreflect.Message, depth int) {
	if depth > 12 {
		panic("message nesting too deep: " + string(m.Descriptor().FullName()))
	}
	if f.chain == nil {
		f.chain = map[protoreflect.FullName]int{}
	}
	f.chain[m.Descriptor().FullName()]++
	defer func() { f.chain[m.Descriptor().FullName()]-- }()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if md := fd.Message(); md != nil && !fd.IsMap() && fd.Cardinality() != protoreflect.Required && f.chain[md.FullName()] >= 2 {
			continue
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && od.Fields().Get(0) != fd {
			continue // one member per oneof
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			if fd.MapValue().Message() != nil {
				v := mp.NewValue()
				f.fill(v.Message(), depth+1)
				mp.Set(f.scalar(fd.MapKey()).MapKey(), v)
			} else {
				mp.Set(f.scalar(fd.MapKey()).MapKey(), f.scalar(fd.MapValue()))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range 2 {
				if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
					e := l.NewElement()
					f.fill(e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(f.scalar(fd))
				}
			}
		default:
			m.Set(fd, f.value(m, fd, depth))
		}
	}
}

func (f *filler) value(m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int) protoreflect.Value {
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		v := m.NewField(fd)
		f.fill(v.Message(), depth+1)
		return v
	}
	return f.scalar(fd)
}

func (f *filler) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	n := f.next()
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(!f.no)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(vals.Len() - 1).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(n))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(n))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(n))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(n) + 0.5)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(n) + 0.25)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprintf("s%d", n))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(bytes.Repeat([]byte{byte(n)}, n))
	}
	panic("unhandled field kind " + fd.Kind().String())
}

// payloadBytes returns n bytes of data with no zero byte, so padding is told apart.
func fakePayload(n int64, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(1 + (i*7+seed)%255)
	}
	return b
}

// buildImage makes an image of kind k with three entries (PAGEMAP: a head and two
// entries; GHOST_FILE: a chunked file and two chunks; IPCNS_MSG: each queue with the
// records it announces), every field of every message set, every payload present.
// Bools are true in entries 0 and 2, false in entry 1 (so ipcns-shm has a segment
// with in_pagemaps and one with its payload).
func buildImage(t testing.TB, k *Kind) *Image {
	t.Helper()
	img := &Image{Kind: k, Head: k.Head}
	f := &filler{}
	for i := range 3 {
		m := k.newEntry(i)
		f.no = i == 1
		f.fill(m.ProtoReflect(), 0)
		img.Entries = append(img.Entries, Entry{Msg: m, Payload: payloadFor(t, k.payload, m, i)})
		if k.sub == nil {
			continue
		}
		n, err := k.sub.count(m)
		if err != nil || n == 0 {
			t.Fatalf("%s: entry announces %d records (%v)", k.Name, n, err)
		}
		for j := range n {
			rec := k.sub.newRecord()
			f.fill(rec.ProtoReflect(), 0)
			img.Entries = append(img.Entries, Entry{Msg: rec, Payload: payloadFor(t, k.sub, rec, int(j))})
		}
	}
	return img
}

func payloadFor(t testing.TB, pc payloadCodec, m proto.Message, seed int) []byte {
	if pc == nil {
		return nil
	}
	data, _, err := pc.size(m)
	if err != nil {
		t.Fatal(err)
	}
	if data == toEOF {
		data = 5000 + int64(seed)
	}
	if data == 0 {
		return nil
	}
	return fakePayload(data, seed)
}

// TestEveryKindRoundTrips builds an image of every type in the table from its message
// types, writes it, reads it back and writes it again.
func TestEveryKindRoundTrips(t *testing.T) {
	for _, k := range allKinds() {
		if k.Raw {
			continue
		}
		t.Run(k.Name+"/"+k.File, func(t *testing.T) {
			if k.Opaque() {
				testOpaqueRoundTrip(t, k)
				return
			}
			img := buildImage(t, k)
			data := mustEncode(t, img)
			var back *Image
			var err error
			if k.sharedMagic {
				t.Fatalf("%s: entries under a shared magic", k.Name)
			}
			back, err = ReadImage(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if back.Kind.Magic != k.Magic || back.Kind.Name != k.Name || back.Head != k.Head {
				t.Fatalf("read back as %s head %#x", back.Kind.Name, back.Head)
			}
			sameEntries(t, k.Name, back.Entries, img.Entries)
			for i, e := range back.Entries {
				if len(e.Msg.ProtoReflect().GetUnknown()) != 0 {
					t.Errorf("entry %d has unknown fields", i)
				}
			}
			if again := mustEncode(t, back); !bytes.Equal(again, data) {
				t.Fatal("second write differs")
			}
			if k.HasPayload() != hasPayload(img) {
				t.Errorf("HasPayload %v, payloads present %v", k.HasPayload(), hasPayload(img))
			}
		})
	}
}

func hasPayload(img *Image) bool {
	for _, e := range img.Entries {
		if len(e.Payload) > 0 {
			return true
		}
	}
	return false
}

// testOpaqueRoundTrip writes and reads back an image whose body is opaque bytes.
func testOpaqueRoundTrip(t *testing.T, k *Kind) {
	body := fakePayload(10000, 3)
	var buf bytes.Buffer
	w, err := NewWriter(&buf, k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rd, err := NewReaderKind(bytes.NewReader(buf.Bytes()), k)
	if err != nil {
		t.Fatal(err)
	}
	if rd.Kind() != k || rd.Head() != k.Head {
		t.Fatalf("read back as %s head %#x", rd.Kind().Name, rd.Head())
	}
	got, err := io.ReadAll(rd)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("body: %d bytes, %v", len(got), err)
	}
	if _, err := rd.Next(); err == nil {
		t.Fatal("Next on an opaque image did not fail")
	}
	if _, err := ReadImage(bytes.NewReader(buf.Bytes())); err == nil && !k.sharedMagic {
		t.Fatal("ReadImage of an opaque image did not fail")
	}
}

// TestTableMatchesGoCriu checks every magic go-criu knows against the table, and
// that every magic in the table is one go-criu knows or one this project adds.
func TestTableMatchesGoCriu(t *testing.T) {
	known := magic.LoadMagic()
	notImages := map[string]bool{"IMG_COMMON": true, "IMG_SERVICE": true, "CRTOOLS_IMAGES_V1_1": true}
	for name, v := range known.ByName {
		if notImages[name] {
			continue
		}
		k := KindByName(name)
		if k == nil {
			t.Errorf("go-criu's %s (%#x) is not in the table", name, v)
			continue
		}
		if uint64(k.Magic) != v {
			t.Errorf("%s: magic %#x, go-criu says %#x", name, k.Magic, v)
		}
		if KindByMagic(uint32(v)) != k {
			t.Errorf("KindByMagic(%#x) is not %s", v, name)
		}
	}
	// go-criu lacks CRIU 4.2's PIDFD, and the legacy names whose magic is PAGEMAP's.
	ours := map[string]bool{"PIDFD": true, "SEAL": true, "SIGN": true, "FORK_PAGES": true, "PAGES_OLD": true, "SHM_PAGES_OLD": true}
	for _, k := range allKinds() {
		if k.Raw || ours[k.Name] {
			continue
		}
		if v, ok := known.ByName[k.Name]; !ok || uint32(v) != k.Magic {
			t.Errorf("%s %#x: go-criu has %#x (%v)", k.Name, k.Magic, v, ok)
		}
	}
	if k := KindByMagic(MagicPidfd); k == nil || k.Name != "PIDFD" {
		t.Errorf("PIDFD magic %#x not in the table", MagicPidfd)
	}
	if KindByMagic(MagicImgCommon) != nil || KindByMagic(MagicImgService) != nil {
		t.Error("a head magic is an image kind")
	}
}

// TestKindFileNames checks that each kind's file name pattern leads back to it, and
// the head each kind is written with.
func TestKindFileNames(t *testing.T) {
	for _, k := range allKinds() {
		name := k.File
		switch {
		case strings.Contains(name, "%d"):
			name = k.FileName(4242)
		case strings.Contains(name, "%x"):
			name = k.FileName(0x4a2f)
		case strings.Contains(name, "%s"):
			name = k.FileName("dump")
		}
		got := KindByFileName("/some/dir/" + name)
		if k.Name == "PAGES_OLD" {
			if got == nil || got.Name != "PAGES" {
				t.Errorf("%s: KindByFileName gives %v, want PAGES", name, got)
			}
			continue
		}
		if got != k {
			t.Errorf("%s: KindByFileName gives %v, want %s", name, got, k.Name)
		}
		var wantHead uint32
		switch {
		case k.Raw, k.Name == "INVENTORY", k.Name == "KDAT":
		case k.Name == "STATS", k.Name == "IRMAP_CACHE":
			wantHead = MagicImgService
		default:
			wantHead = MagicImgCommon
		}
		if k.Head != wantHead {
			t.Errorf("%s: head %#x, want %#x", k.Name, k.Head, wantHead)
		}
	}
	for _, bad := range []string{"pages-x.img", "core-.img", "core-12a.img", "ghost-file-XYZ.img", "foo.img", "netns-ct.img"} {
		if k := KindByFileName(bad); k != nil {
			t.Errorf("%s: KindByFileName gives %s", bad, k.Name)
		}
	}
}
