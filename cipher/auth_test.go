package cipher

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// TestTagAuthMatchesGCM checks the tag-only check against AES-GCM's own Open on
// real sealed chunks of every interesting length: it accepts exactly what Open
// accepts.
func TestTagAuthMatchesGCM(t *testing.T) {
	key, _ := NewSetKey(AES256GCM)
	aead, auth, err := key.fileCipher(testFile("pages-1.img"), true)
	if err != nil || auth == nil {
		t.Fatalf("no tag checker for AES-GCM: %v", err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 15, 16, 17, 100, 4095, 4096, ChunkSize - 1, ChunkSize} {
		plain := make([]byte, n)
		for i := range plain {
			plain[i] = byte(rng.Uint32())
		}
		for _, last := range []bool{false, true} {
			nc := nonce(uint64(n), last)
			sealed := aead.Seal(nil, nc[:], plain, nil)
			if !auth.check(nc[:], sealed) {
				t.Fatalf("%d bytes, last=%v: a valid chunk fails", n, last)
			}
			other := nonce(uint64(n), !last)
			if _, err := aead.Open(nil, other[:], sealed, nil); err == nil || auth.check(other[:], sealed) {
				t.Fatalf("%d bytes: accepted under the other last-chunk flag", n)
			}
			for range 20 {
				bad := bytes.Clone(sealed)
				bad[rng.IntN(len(bad))] ^= byte(1 << rng.IntN(8))
				_, openErr := aead.Open(nil, nc[:], bad, nil)
				if openErr == nil || auth.check(nc[:], bad) {
					t.Fatalf("%d bytes: a flipped bit is accepted (Open: %v)", n, openErr)
				}
			}
			if n > 0 && auth.check(nc[:], sealed[1:]) {
				t.Fatalf("%d bytes: a chunk missing its first byte is accepted", n)
			}
		}
	}
	if auth.check(make([]byte, 12), make([]byte, TagSize-1)) {
		t.Fatal("a chunk shorter than a tag is accepted")
	}
}

// TestVerifyReportsLikeDecrypt damages multi-batch files in one or two places and
// checks that Verify, which checks batches in parallel and by tag alone, reports
// exactly the error a sequential decryption reports: the first failing chunk.
func TestVerifyReportsLikeDecrypt(t *testing.T) {
	for _, alg := range []Algorithm{AES256GCM, ChaCha20Poly1305} {
		key, _ := NewSetKey(alg)
		plain := bytes.Repeat([]byte("page"), (5*batchPlain+3*ChunkSize+77)/4)
		ct, fi := roundTrip(t, key, "pages-7.img", plain, true)
		chunkAt := func(i int) int { return PrefixSize + i*chunkCT }
		lastChunk := int(numChunks(int64(len(plain)))) - 1
		for _, tc := range []struct {
			name  string
			flips []int
		}{
			{"first chunk", []int{chunkAt(0) + 3}},
			{"a middle batch", []int{chunkAt(3*batchChunks+2) + 9}},
			{"a tag", []int{chunkAt(batchChunks) + chunkCT - 1}},
			{"the last chunk", []int{len(ct) - 1}},
			{"two batches, later one first", []int{chunkAt(4*batchChunks) + 1, chunkAt(batchChunks+5) + 1}},
			{"two chunks of one batch", []int{chunkAt(2*batchChunks+9) + 1, chunkAt(2*batchChunks + 3)}},
			{"last batch and first", []int{chunkAt(lastChunk), chunkAt(1)}},
		} {
			bad := bytes.Clone(ct)
			for _, off := range tc.flips {
				bad[off] ^= 0x40
			}
			r, err := key.NewReaderAt(bytes.NewReader(bad), int64(len(bad)), fi)
			if err != nil {
				t.Fatal(err)
			}
			var sink bytes.Buffer
			_, decErr := r.WriteTo(&sink)
			var checked int64
			verErr := r.Verify(func(n int64) { checked += n })
			if !errors.Is(verErr, ErrChunkAuth) || decErr == nil || verErr.Error() != decErr.Error() {
				t.Errorf("%v, %s: Verify says %v, decryption %v", alg, tc.name, verErr, decErr)
			}
			if checked > int64(len(plain)) {
				t.Errorf("%v, %s: progress reported %d of %d bytes", alg, tc.name, checked, len(plain))
			}
		}
		// A truncated file without a manifest: the last-chunk flag catches it.
		cut := ct[:chunkAt(3*batchChunks)]
		unsized := fi
		unsized.Size = -1
		r, err := key.NewReaderAt(bytes.NewReader(cut), int64(len(cut)), unsized)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Verify(nil); !errors.Is(err, ErrChunkAuth) {
			t.Errorf("%v: truncated at a batch boundary: %v", alg, err)
		}
		// An intact file reports every byte.
		r, _ = key.NewReaderAt(bytes.NewReader(ct), int64(len(ct)), fi)
		var checked int64
		if err := r.Verify(func(n int64) { checked += n }); err != nil || checked != int64(len(plain)) {
			t.Errorf("%v: intact file: %v, %d of %d bytes reported", alg, err, checked, len(plain))
		}
	}
}
