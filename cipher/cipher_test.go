package cipher

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var testFraming = Framing{0x19, 0x43, 0x56, 0x54, 0xed, 0xa1, 0x45, 0x53}

func keyPath(name string) string { return filepath.Join("testdata", "keys", name) }

func mustRecipient(t testing.TB, name string) *X509Recipient {
	t.Helper()
	rs, err := ReadRecipients(keyPath(name + ".crt"))
	if err != nil {
		t.Fatal(err)
	}
	return rs[0]
}

func mustIdentity(t testing.TB, file string) *KeyIdentity {
	t.Helper()
	id, err := ReadIdentity(keyPath(file))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestFingerprintsMatchOpenSSL checks our fingerprints against the ones OpenSSL
// computed when it made the keys (testdata/keys/FINGERPRINTS), for certificates
// and for every encoding of their private keys.
func TestFingerprintsMatchOpenSSL(t *testing.T) {
	f, err := os.Open(keyPath("FINGERPRINTS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		want, name := fields[0], fields[1]
		if got := mustRecipient(t, name).Fingerprint().String(); got != want {
			t.Errorf("%s.crt: fingerprint %s, openssl says %s", name, got, want)
		}
		keys, _ := filepath.Glob(keyPath(name + "*.key"))
		for _, k := range keys {
			if strings.Contains(k, "encrypted") {
				continue
			}
			if got := mustIdentity(t, filepath.Base(k)).Fingerprint().String(); got != want {
				t.Errorf("%s: fingerprint %s, openssl says %s", k, got, want)
			}
		}
		n++
	}
	if n != 4 {
		t.Fatalf("read %d fingerprints, want 4", n)
	}
}

func TestKeyLoadingErrors(t *testing.T) {
	for _, tc := range []struct {
		file string
		want error
	}{
		{"missing.key", ErrUnreadableKey},
		{"make-keys.sh", ErrUnreadableKey},
		{"bob-p256.encrypted.key", ErrUnreadableKey},
		{"bob-p256.crt", ErrUnsupportedKey},
		{"weak-rsa1024.key", ErrUnsupportedKey},
		{"p521.key", ErrUnsupportedKey},
		{"ed25519.key", ErrUnsupportedKey},
	} {
		_, err := ReadIdentity(keyPath(tc.file))
		if !errors.Is(err, tc.want) {
			t.Errorf("ReadIdentity(%s) = %v, want %v", tc.file, err, tc.want)
		}
	}
	for _, tc := range []struct {
		file string
		want error
	}{
		{"missing.crt", ErrUnreadableKey},
		{"make-keys.sh", ErrUnreadableKey},
		{"bob-p256.key", ErrUnsupportedKey},
		{"weak-rsa1024.crt", ErrUnsupportedKey},
		{"p521.crt", ErrUnsupportedKey},
		{"ed25519.crt", ErrUnsupportedKey},
	} {
		_, err := ReadRecipients(keyPath(tc.file))
		if !errors.Is(err, tc.want) {
			t.Errorf("ReadRecipients(%s) = %v, want %v", tc.file, err, tc.want)
		}
	}
	// A damaged DER body inside a good PEM block.
	pemData, _ := os.ReadFile(keyPath("carol-p384.key"))
	damaged := bytes.Replace(pemData, []byte("MI"), []byte("AA"), 1)
	if _, err := ParseIdentity(damaged); !errors.Is(err, ErrUnreadableKey) {
		t.Errorf("damaged key: %v, want ErrUnreadableKey", err)
	}
}

// roundTrip encrypts plain as name and decrypts it three ways: sequentially through
// WriteTo, at random offsets, and with Verify.
func roundTrip(t *testing.T, key *SetKey, name string, plain []byte, viaReadFrom bool) ([]byte, FileInfo) {
	t.Helper()
	var ct bytes.Buffer
	w, err := key.NewWriter(&ct, name)
	if err != nil {
		t.Fatal(err)
	}
	if viaReadFrom {
		_, err = w.ReadFrom(bytes.NewReader(plain))
	} else {
		// Odd-sized writes exercise the batch boundaries.
		for p := plain; len(p) > 0 && err == nil; {
			n := min(len(p), 7919+len(p)%65536)
			_, err = w.Write(p[:n])
			p = p[n:]
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Size() != int64(len(plain)) || int64(ct.Len()) != CiphertextSize(int64(len(plain))) {
		t.Fatalf("size %d: writer says %d, ciphertext %d, want %d", len(plain), w.Size(), ct.Len(), CiphertextSize(int64(len(plain))))
	}
	fi := w.Info()
	if fi.Name != name || fi.Size != int64(len(plain)) || fi.Nonce == (FileNonce{}) {
		t.Fatalf("size %d: Info() = %+v", len(plain), fi)
	}
	unsized := fi
	unsized.Size = -1
	got, err := key.Decrypt(ct.Bytes(), unsized)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Fatalf("size %d: decrypted plaintext differs", len(plain))
	}
	r, err := key.NewReaderAt(bytes.NewReader(ct.Bytes()), int64(ct.Len()), fi)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(nil); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, uint64(len(plain))))
	for range 50 {
		if len(plain) == 0 {
			break
		}
		off := rng.IntN(len(plain))
		n := rng.IntN(3 * ChunkSize)
		buf := make([]byte, n)
		m, err := r.ReadAt(buf, int64(off))
		want := min(n, len(plain)-off)
		if m != want || (err != nil && !(err == io.EOF && m < n)) || !bytes.Equal(buf[:m], plain[off:off+m]) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v; want %d bytes", n, off, m, err, want)
		}
	}
	return ct.Bytes(), fi
}

func TestStreamRoundTrip(t *testing.T) {
	for _, alg := range []Algorithm{AES256GCM, ChaCha20Poly1305} {
		key, err := NewSetKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{0, 1, 100, ChunkSize - 1, ChunkSize, ChunkSize + 1, 2 * ChunkSize,
			batchPlain - 1, batchPlain, batchPlain + 1, 3*batchPlain + 5, 2*batchPlain + ChunkSize} {
			plain := make([]byte, size)
			for i := range plain {
				plain[i] = byte(i * 7 / 5)
			}
			roundTrip(t, key, "pages-1.img", plain, false)
			roundTrip(t, key, "pages-1.img", plain, true)
		}
	}
}

func TestPlaintextSize(t *testing.T) {
	for n := int64(0); n < 3*ChunkSize+50; n += 1 + n/3 {
		c := CiphertextSize(n)
		if got, err := PlaintextSize(c); err != nil || got != n {
			t.Errorf("PlaintextSize(CiphertextSize(%d)) = %d, %v", n, got, err)
		}
	}
	for _, c := range []int64{0, PrefixSize, PrefixSize + TagSize - 1, PrefixSize + chunkCT + 1, PrefixSize + chunkCT + TagSize} {
		if _, err := PlaintextSize(c); !errors.Is(err, ErrMalformed) {
			t.Errorf("PlaintextSize(%d): %v, want ErrMalformed", c, err)
		}
	}
}

// TestStreamAttacks damages a three-chunk file in the ways STREAM must catch.
func TestStreamAttacks(t *testing.T) {
	key, _ := NewSetKey(AES256GCM)
	plain := bytes.Repeat([]byte("PAGE"), (2*ChunkSize+1000)/4)
	ct, fi := roundTrip(t, key, "pages-1.img", plain, false)
	fi.Size = -1
	renamed := fi
	renamed.Name = "pages-2.img"
	renonced := fi
	renonced.Nonce[3] ^= 1
	chunk := func(i int) []byte { return ct[PrefixSize+i*chunkCT : min(len(ct), PrefixSize+(i+1)*chunkCT)] }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	prefix := ct[:PrefixSize]
	other, _ := NewSetKey(AES256GCM)
	for _, tc := range []struct {
		name string
		ct   []byte
		key  *SetKey
		as   FileInfo
		want error
	}{
		{"truncated at chunk boundary", cat(prefix, chunk(0), chunk(1)), key, fi, ErrChunkAuth},
		{"truncated after first chunk", cat(prefix, chunk(0)), key, fi, ErrChunkAuth},
		{"truncated inside last chunk", ct[:len(ct)-100], key, fi, ErrChunkAuth},
		{"truncated to a tag-sized tail", ct[:PrefixSize+chunkCT+10], key, fi, ErrMalformed},
		{"chunks swapped", cat(prefix, chunk(1), chunk(0), chunk(2)), key, fi, ErrChunkAuth},
		{"chunk duplicated", cat(prefix, chunk(0), chunk(0), chunk(2)), key, fi, ErrChunkAuth},
		{"extra chunk appended", cat(prefix, chunk(0), chunk(1), chunk(1), chunk(2)), key, fi, ErrChunkAuth},
		{"renamed", ct, key, renamed, ErrChunkAuth},
		{"another writing of the same name (other nonce)", ct, key, renonced, ErrChunkAuth},
		{"other set's key", ct, other, fi, ErrForeignFile},
		{"not encrypted", plain, key, fi, ErrMalformed},
	} {
		_, err := tc.key.Decrypt(tc.ct, tc.as)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Every bit of the file matters.
	for _, off := range []int{0, 7, 8, PrefixSize - 1, PrefixSize, PrefixSize + ChunkSize, PrefixSize + chunkCT - 1,
		PrefixSize + chunkCT + 5, len(ct) - TagSize - 1, len(ct) - 1} {
		bad := bytes.Clone(ct)
		bad[off] ^= 0x10
		if _, err := key.Decrypt(bad, fi); err == nil {
			t.Errorf("bit flipped at %d: no error", off)
		}
	}
}

// TestReaderAtNeverLeaksUnauthenticated reads around a damaged chunk: reads of
// other chunks succeed, reads touching it fail and return only earlier bytes.
func TestReaderAtNeverLeaksUnauthenticated(t *testing.T) {
	key, _ := NewSetKey(ChaCha20Poly1305)
	plain := bytes.Repeat([]byte{0xAB}, 3*ChunkSize)
	ct, fi := roundTrip(t, key, "x", plain, true)
	ct[PrefixSize+chunkCT+100] ^= 1
	r, err := key.NewReaderAt(bytes.NewReader(ct), int64(len(ct)), fi)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := r.ReadAt(buf, 2*ChunkSize+5); err != nil {
		t.Fatalf("intact chunk: %v", err)
	}
	big := make([]byte, 2*ChunkSize)
	n, err := r.ReadAt(big, ChunkSize-10)
	if !errors.Is(err, ErrChunkAuth) || n != 10 {
		t.Fatalf("read across damaged chunk: n=%d err=%v, want 10 bytes and ErrChunkAuth", n, err)
	}
	if !bytes.Equal(big[10:], make([]byte, len(big)-10)) {
		t.Fatal("bytes of the damaged chunk were handed out")
	}
	var sink bytes.Buffer
	if _, err := r.WriteTo(&sink); !errors.Is(err, ErrChunkAuth) || sink.Len() != 0 {
		t.Fatalf("WriteTo: %d bytes, %v; want 0 bytes (the batch failed) and ErrChunkAuth", sink.Len(), err)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	alice, bob, carol := mustRecipient(t, "alice-rsa2048"), mustRecipient(t, "bob-p256"), mustRecipient(t, "carol-p384")
	key, _ := NewSetKey(AES256GCM)
	stanzas, err := key.Wrap(alice, bob, carol)
	if err != nil {
		t.Fatal(err)
	}
	files := testManifest(t, key, map[string]int64{"pstree.img": 26, "inventory.img": 86, "pages-1.img": 1 << 20})
	hdr, err := SealHeader(testFraming, key, stanzas, files)
	if err != nil {
		t.Fatal(err)
	}
	for _, idFile := range []string{"alice-rsa2048.key", "alice-rsa2048.pkcs1.key", "bob-p256.key", "bob-p256.sec1.key", "carol-p384.key"} {
		h, err := ParseHeader(hdr, testFraming)
		if err != nil {
			t.Fatal(err)
		}
		got, err := h.Unwrap(mustIdentity(t, idFile))
		if err != nil {
			t.Fatalf("%s: %v", idFile, err)
		}
		if got.fileKey != key.fileKey || got.ID() != key.ID() || got.Algorithm() != AES256GCM || got.Version() != HeaderVersion {
			t.Fatalf("%s: unwrapped another key", idFile)
		}
		if fi, ok := h.File("pages-1.img"); !ok || fi.Size != 1<<20 || h.Files[0].Name != "inventory.img" || fi.Nonce == (FileNonce{}) {
			t.Fatalf("manifest not sorted or lost: %v", h.Files)
		}
	}
	h, _ := ParseHeader(hdr, testFraming)
	if _, err := h.Unwrap(mustIdentity(t, "mallory-p256.key")); !errors.Is(err, ErrNoRecipient) {
		t.Fatalf("stranger: %v, want ErrNoRecipient", err)
	}
	// A recipient removed: the MAC no longer matches.
	bad, _ := SealHeader(testFraming, key, stanzas[:2], files)
	hb, _ := ParseHeader(bad, testFraming)
	copy(hb.MAC[:], h.MAC[:])
	if _, err := hb.Unwrap(mustIdentity(t, "bob-p256.key")); !errors.Is(err, ErrHeaderAuth) {
		t.Fatalf("edited recipients: %v, want ErrHeaderAuth", err)
	}
	// Every single-bit flip is caught, by the parser or by Unwrap.
	for off := 0; off < len(hdr); off++ {
		damaged := bytes.Clone(hdr)
		damaged[off] ^= 0x04
		hd, err := ParseHeader(damaged, testFraming)
		if err != nil {
			continue
		}
		if _, err := hd.Unwrap(mustIdentity(t, "bob-p256.key")); err == nil {
			t.Fatalf("bit flipped at offset %d of %d went unnoticed", off, len(hdr))
		}
	}
}

// testManifest makes the manifest entries of files of the given sizes, each with
// a nonce drawn by key.
func testManifest(t testing.TB, key *SetKey, sizes map[string]int64) []FileInfo {
	t.Helper()
	var files []FileInfo
	for name, size := range sizes {
		f, err := key.NewFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f.Size = size
		files = append(files, f)
	}
	return files
}
