package cipher

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// fuzzKey is a fixed set key, and fuzzFile a file of it with a fixed nonce, so
// that the fuzzer can mutate real ciphertext of it.
var (
	fuzzKey  = newSetKeyFrom(bytes.Repeat([]byte{7}, FileKeySize), SetID{1, 2, 3}, AES256GCM, HeaderVersion)
	fuzzFile = FileInfo{Name: "f", Size: -1, Nonce: FileNonce{9, 9, 9}}
)

// fixedFile registers a file of k with a chosen nonce (known answers, fuzzing):
// what NewFile does with a random one.
func fixedFile(k *SetKey, f FileInfo) FileInfo {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.files == nil {
		k.files = make(map[FileNonce]nonceUse)
	}
	k.files[f.Nonce] = nonceUse{name: f.Name}
	return f
}

// FuzzParseHeader feeds arbitrary bytes to the header parser: it must never panic
// or allocate beyond the input, and whatever parses must re-encode to the same bytes.
func FuzzParseHeader(f *testing.F) {
	r := mustRecipient(f, "bob-p256")
	stanzas, err := fuzzKey.Wrap(r, mustRecipient(f, "carol-p384"))
	if err != nil {
		f.Fatal(err)
	}
	good, err := SealHeader(testFraming, fuzzKey, stanzas, testManifest(f, fuzzKey, map[string]int64{"a": 1, "pages-1.img": 1 << 20}))
	if err != nil {
		f.Fatal(err)
	}
	v1 := newSetKeyFrom(bytes.Repeat([]byte{7}, FileKeySize), SetID{1, 2, 3}, AES256GCM, 1)
	goodV1, err := SealHeader(testFraming, v1, stanzas, []FileInfo{{Name: "a", Size: 1}, {Name: "pages-1.img", Size: 1 << 20}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(goodV1)
	f.Add(good[:40])
	f.Add(append(bytes.Clone(good), 0))
	f.Add(testFraming[:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHeader(data, testFraming)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("parse error is not ErrMalformed: %v", err)
			}
			return
		}
		// Re-encode with the same stanzas and manifest: the bytes before the MAC
		// must come back identical (the encoding is canonical).
		again, err := sealHeader(testFraming, newOpenKey(nil, h.SetID, h.Algorithm, h.Version), h.Stanzas, h.Files)
		if err != nil {
			t.Fatalf("a parsed header does not re-encode: %v", err)
		}
		if !bytes.Equal(again[:len(again)-MACSize], data[:len(data)-MACSize]) {
			t.Fatal("re-encoding differs")
		}
	})
}

// FuzzReaderAt decrypts arbitrary ciphertext at arbitrary offsets: it must never
// panic, and must return plaintext only when the whole file authenticates as well.
func FuzzReaderAt(f *testing.F) {
	for _, n := range []int{0, 1, 100, ChunkSize, ChunkSize + 1} {
		var ct bytes.Buffer
		w, _ := fuzzKey.newWriter(&ct, fuzzFile)
		w.Write(bytes.Repeat([]byte{0x5a}, n))
		w.Close()
		f.Add(ct.Bytes(), int64(n/2), uint16(10))
		damaged := bytes.Clone(ct.Bytes())
		damaged[len(damaged)-1] ^= 1
		f.Add(damaged, int64(0), uint16(100))
	}
	f.Fuzz(func(t *testing.T, ct []byte, off int64, n uint16) {
		r, err := fuzzKey.NewReaderAt(bytes.NewReader(ct), int64(len(ct)), fuzzFile)
		if err != nil {
			return
		}
		buf := make([]byte, n)
		m, err := r.ReadAt(buf, off)
		if m > 0 && off >= 0 {
			whole, werr := fuzzKey.Decrypt(ct, fuzzFile)
			end := off + int64(m)
			if werr == nil && !bytes.Equal(whole[off:end], buf[:m]) {
				t.Fatal("ReadAt and Decrypt disagree")
			}
			if werr != nil && m > 0 && errors.Is(werr, ErrChunkAuth) {
				// Only chunks before the failing one may have been returned.
				var e *Error
				if errors.As(werr, &e) && end > e.Offset {
					t.Fatalf("returned plaintext up to %d past a failing chunk at %d", end, e.Offset)
				}
			}
		}
		if err != nil && err != io.EOF && !errors.Is(err, ErrChunkAuth) && off >= 0 {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
