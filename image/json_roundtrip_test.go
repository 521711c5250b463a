package image

import (
	"bytes"
	"fmt"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// jsonFiller sets every field of a message, recursively, with values chosen by variant,
// so that every image type CRIU defines can be built without a fixture.
type jsonFiller struct {
	variant int
	big     bool // allow values that would make payload sizes huge
	n       int  // counter that varies the values
}

// Variants: 0 small positive values, bools true; 1 negative and edge values, bools
// false; 2 awkward strings and bytes, lists of one (IPv4) or four (IPv6) addresses.
const jsonFillVariants = 3

func (f *jsonFiller) fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			continue
		case fd.IsList():
			list := m.Mutable(fd).List()
			n := 2
			if fieldOptions(fd).ipadd {
				n = []int{1, 2, 4}[f.variant]
			}
			if fd.Kind() == protoreflect.MessageKind && depth > 6 {
				n = 0
			}
			for j := 0; j < n; j++ {
				if fd.Kind() == protoreflect.MessageKind {
					e := list.NewElement()
					f.fill(e.Message(), depth+1)
					list.Append(e)
				} else {
					list.Append(f.scalar(fd))
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			if depth <= 6 || fd.Cardinality() == protoreflect.Required {
				f.fill(m.Mutable(fd).Message(), depth+1)
			}
		default:
			m.Set(fd, f.scalar(fd))
		}
	}
}

func (f *jsonFiller) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	f.n++
	small := uint64(f.n%13 + 1)
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(f.variant == 0)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(f.n % vals.Len()).Number())
	case protoreflect.StringKind:
		return protoreflect.ValueOfString([]string{"name", "", "é\"\\\n\x01\x7f😀\xff\xed\xa0\x80"}[f.variant])
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([][]byte{
			[]byte("\x00abstract-socket"),
			{},
			[]byte(" a\r\nb\n=. \t\x00\xff" + string(bytes.Repeat([]byte("x"), 80)) + " "),
		}[f.variant])
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if f.variant == 1 && f.big {
			return protoreflect.ValueOfInt32(math.MinInt32)
		}
		if f.variant == 1 {
			return protoreflect.ValueOfInt32(-int32(small))
		}
		return protoreflect.ValueOfInt32(int32(small))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if f.variant == 1 && f.big {
			return protoreflect.ValueOfInt64(math.MinInt64)
		}
		if f.variant == 1 {
			return protoreflect.ValueOfInt64(-int64(small))
		}
		return protoreflect.ValueOfInt64(int64(small))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if f.big && f.variant == 1 {
			return protoreflect.ValueOfUint32(math.MaxUint32)
		}
		if f.big && f.variant == 2 {
			return protoreflect.ValueOfUint32(0x0a0b0c0d + uint32(f.n))
		}
		return protoreflect.ValueOfUint32(uint32(small))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if f.big && f.variant == 1 {
			return protoreflect.ValueOfUint64(math.MaxUint64)
		}
		return protoreflect.ValueOfUint64(small)
	}
	panic(fmt.Sprintf("jsonFiller: unsupported kind %s", fd.Kind()))
}

// buildJSONTestImage writes an image of kind k with a few entries of filled messages and
// payloads of the sizes they announce.
func buildJSONTestImage(t *testing.T, k *Kind, variant int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, k)
	if err != nil {
		t.Fatal(err)
	}
	f := &jsonFiller{variant: variant, big: !k.HasPayload()}
	payload := func(m proto.Message, pc payloadCodec) {
		n, _, err := pc.size(m)
		if err != nil {
			t.Fatal(err)
		}
		if n == toEOF {
			n = 300
		}
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + variant)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatalf("%s: payload: %v", k.Name, err)
		}
	}
	for i := 0; i < 3; i++ {
		m := k.newEntry(i)
		f.fill(m.ProtoReflect(), 0)
		if err := w.WriteEntry(m); err != nil {
			t.Fatalf("%s entry %d: %v", k.Name, i, err)
		}
		if k.payload != nil {
			payload(m, k.payload)
			if n, _, _ := k.payload.size(m); n == toEOF {
				break
			}
		}
		if k.sub != nil {
			n, err := k.sub.count(m)
			if err != nil {
				t.Fatal(err)
			}
			for j := int64(0); j < n; j++ {
				rec := k.sub.newRecord()
				f.fill(rec.ProtoReflect(), 0)
				if err := w.WriteEntry(rec); err != nil {
					t.Fatal(err)
				}
				payload(rec, k.sub)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("%s: %v", k.Name, err)
	}
	return buf.Bytes()
}

// TestJSONRoundTripAllKinds builds an image of every type with every field set and
// checks that decode then encode, plain and pretty, gives back the same bytes.
func TestJSONRoundTripAllKinds(t *testing.T) {
	for _, k := range Kinds() {
		if k.New == nil {
			continue
		}
		for variant := 0; variant < jsonFillVariants; variant++ {
			img := buildJSONTestImage(t, k, variant)
			for _, pretty := range []bool{false, true} {
				var js bytes.Buffer
				if err := DecodeJSON(bytes.NewReader(img), &js, JSONOptions{Pretty: pretty}); err != nil {
					t.Errorf("%s variant %d pretty=%v: decode: %v", k.Name, variant, pretty, err)
					continue
				}
				var back bytes.Buffer
				if err := EncodeJSON(bytes.NewReader(js.Bytes()), &back); err != nil {
					t.Errorf("%s variant %d pretty=%v: encode: %v\n%s", k.Name, variant, pretty, err, js.Bytes())
					continue
				}
				if !bytes.Equal(back.Bytes(), img) {
					t.Errorf("%s variant %d pretty=%v: round trip differs: %s", k.Name, variant, pretty, jsonFirstDiff(back.Bytes(), img))
				}
			}
		}
	}
}
