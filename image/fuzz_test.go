package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"
)

// addFixtureSeeds adds every real image (raw ones too: they must be refused) as a seed.
func addFixtureSeeds(f *testing.F) {
	for _, ff := range fixtureFiles(f) {
		f.Add(ff.data)
	}
}

// checkReadWrite is the property every fuzz target ends with: whatever reads without
// error writes back, reads again to the same entries, and writes the same bytes.
func checkReadWrite(t *testing.T, img *Image) {
	var first bytes.Buffer
	if _, err := img.WriteTo(&first); err != nil {
		t.Fatalf("read, but cannot write back: %v", err)
	}
	again, err := ReadImage(bytes.NewReader(first.Bytes()))
	if err != nil {
		t.Fatalf("written, but cannot read back: %v", err)
	}
	sameEntries(t, img.Kind.Name, again.Entries, img.Entries)
	var second bytes.Buffer
	if _, err := again.WriteTo(&second); err != nil || !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Fatalf("second write differs (%v)", err)
	}
}

// FuzzReader drives NewReader, Next and Read over arbitrary bytes, with sized and
// unsized input, and checks that failures are *FormatErrors.
func FuzzReader(f *testing.F) {
	addFixtureSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, src := range []io.Reader{bytes.NewReader(data), plainReader{bytes.NewReader(data)}} {
			rd, err := NewReader(src)
			if err != nil {
				if !isFormatError(err) {
					t.Fatalf("NewReader: %v is not a *FormatError", err)
				}
				continue
			}
			buf := make([]byte, 13)
			for {
				_, err := rd.Next()
				if isEnd(err) {
					break
				}
				if err != nil {
					if !isFormatError(err) {
						t.Fatalf("Next: %v is not a *FormatError", err)
					}
					break
				}
				var n int
				for err == nil {
					n, err = rd.Read(buf)
					if n < 0 || n > len(buf) {
						t.Fatalf("Read returned %d", n)
					}
				}
				if err != io.EOF {
					if !isFormatError(err) {
						t.Fatalf("Read: %v is not a *FormatError", err)
					}
					break
				}
			}
			if rd.Offset() > int64(len(data)) {
				t.Fatalf("offset %d beyond %d bytes", rd.Offset(), len(data))
			}
		}
		img, err := ReadImage(bytes.NewReader(data))
		if err != nil {
			if !isFormatError(err) {
				t.Fatalf("ReadImage: %v is not a *FormatError", err)
			}
			return
		}
		checkReadWrite(t, img)
	})
}

// payloadKinds returns the kinds whose entries carry payloads, in a fixed order.
func payloadKinds() []*Kind {
	var out []*Kind
	for _, k := range Kinds() {
		if k.HasPayload() {
			out = append(out, k)
		}
	}
	return out
}

// FuzzPayload fuzzes the entries after the magic of each image type with a payload
// codec: the fuzzer picks the type and writes the body.
func FuzzPayload(f *testing.F) {
	kinds := payloadKinds()
	for i, k := range kinds {
		img := buildImage(f, k)
		f.Add(uint8(i), mustEncode(f, img)[8:])
	}
	for _, ff := range fixtureFiles(f) {
		for i, k := range kinds {
			if ff.kind == k && len(ff.data) >= 8 {
				f.Add(uint8(i), ff.data[8:])
			}
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		k := kinds[int(which)%len(kinds)]
		data := binary.LittleEndian.AppendUint32(nil, k.Head)
		data = binary.LittleEndian.AppendUint32(data, k.Magic)
		data = append(data, body...)
		for _, src := range []io.Reader{bytes.NewReader(data), plainReader{bytes.NewReader(data)}} {
			img, err := ReadImage(src)
			if err != nil {
				if !isFormatError(err) {
					t.Fatalf("%s: %v is not a *FormatError", k.Name, err)
				}
				continue
			}
			if img.Kind != k {
				t.Fatalf("read as %s, want %s", img.Kind.Name, k.Name)
			}
			checkReadWrite(t, img)
		}
	})
}

// FuzzPageMap indexes arbitrary pagemap images and checks the index's invariants.
func FuzzPageMap(f *testing.F) {
	for _, ff := range fixtureFiles(f) {
		if ff.kind != nil && ff.kind.Name == "PAGEMAP" {
			f.Add(ff.data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pm, err := ReadPageMap(bytes.NewReader(data))
		if err != nil {
			if !isFormatError(err) {
				t.Fatalf("%v is not a *FormatError", err)
			}
			return
		}
		img, err := ReadImage(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("ReadPageMap accepted what ReadImage refuses: %v", err)
		}
		pm2, err := NewPageMap(img)
		if err != nil || pm2.PagesSize() != pm.PagesSize() || len(pm2.Entries) != len(pm.Entries) {
			t.Fatalf("NewPageMap disagrees: %v", err)
		}
		var sum int64
		for i, e := range pm.Entries {
			if !proto.Equal(e, pm2.Entries[i]) {
				t.Fatalf("entry %d differs", i)
			}
			n := NrPages(e)
			if n == 0 {
				continue
			}
			if j, ok := pm.Find(e.GetVaddr()); !ok || j != i {
				t.Fatalf("Find(start of entry %d) = %d, %v", i, j, ok)
			}
			last := e.GetVaddr() + (n-1)*PageSize
			off, ok := pm.Offset(last)
			if Flags(e)&PagemapPresent == 0 {
				if ok {
					t.Fatalf("entry %d without PE_PRESENT has offset %d", i, off)
				}
				continue
			}
			if !ok || pm.EntryOffset(i) != sum || off != sum+int64(n-1)*PageSize {
				t.Fatalf("entry %d: offset %d, EntryOffset %d, want %d", i, off, pm.EntryOffset(i), sum)
			}
			sum += int64(n) * PageSize
		}
		if sum != pm.PagesSize() {
			t.Fatalf("PagesSize %d, entries sum to %d", pm.PagesSize(), sum)
		}
		err = pm.ReadPage(bytes.NewReader(nil), 0, make([]byte, PageSize))
		if err == nil && pm.PagesSize() > 0 {
			t.Fatal("ReadPage from an empty pages file succeeded")
		}
		if err != nil && errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("ReadPage: bare io.EOF: %v", err)
		}
	})
}
