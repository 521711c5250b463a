package imgset

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgtool/imgtool/cipher"
)

// benchDir is a tmpfs when there is one, so the benchmarks measure imgtool rather
// than the disk (compare with `cp -r` of the same set on the same filesystem).
func benchDir(b *testing.B) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "imgset-bench-")
		if err == nil {
			b.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return b.TempDir()
}

// benchSet makes a plaintext set: the small files of the files fixture plus a
// pages-1.img of size random bytes.
func benchSet(b *testing.B, size int64) string {
	dir := filepath.Join(benchDir(b), "set")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(fixtures, "files"))); err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "pages-1.img"))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	for n := int64(0); n < size; n += int64(len(buf)) {
		f.Write(buf)
	}
	f.Close()
	return dir
}

const benchSize = 256 << 20

func BenchmarkEncrypt(b *testing.B) {
	src := benchSet(b, benchSize)
	rs := []cipher.Recipient{recipient(b, "bob-p256")}
	b.SetBytes(benchSize)
	for i := 0; b.Loop(); i++ {
		out := filepath.Join(filepath.Dir(src), "enc")
		b.StopTimer()
		os.RemoveAll(out)
		b.StartTimer()
		if err := Encrypt(src, EncryptOptions{Recipients: rs, Output: out}); err != nil {
			b.Fatal(err)
		}
	}
}

func encryptedBenchSet(b *testing.B) (string, []cipher.Identity) {
	src := benchSet(b, benchSize)
	out := filepath.Join(filepath.Dir(src), "enc")
	if err := Encrypt(src, EncryptOptions{Recipients: []cipher.Recipient{recipient(b, "bob-p256")}, Output: out}); err != nil {
		b.Fatal(err)
	}
	os.RemoveAll(src)
	return out, []cipher.Identity{identity(b, "bob-p256")}
}

func BenchmarkDecrypt(b *testing.B) {
	enc, ids := encryptedBenchSet(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		out := filepath.Join(filepath.Dir(enc), "dec")
		b.StopTimer()
		os.RemoveAll(out)
		b.StartTimer()
		if err := Decrypt(enc, DecryptOptions{Identities: ids, Output: out}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	enc, ids := encryptedBenchSet(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		rep, err := Verify(enc, VerifyOptions{Identities: ids})
		if err != nil || !rep.OK() {
			b.Fatal(err, rep.Err())
		}
	}
}

func BenchmarkRekey(b *testing.B) {
	enc, ids := encryptedBenchSet(b)
	carol := []cipher.Recipient{recipient(b, "carol-p384")}
	for b.Loop() {
		if err := Rekey(enc, RekeyOptions{Identities: ids, Add: carol}); err != nil {
			b.Fatal(err)
		}
	}
}
