package stream

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// benchPages is the size of the pages file of the capture benchmarks: the 256
// MiB of make bench's big program.
const benchPages = 256 << 20

// BenchmarkCapture measures Capture alone, without CRIU: a fake CRIU sends a
// pages file of benchPages as CRIU does, by reference (vmsplice, as CRIU's
// splice from the parasite's pipe costs next to nothing), then inventory.img;
// the set is written to tmpfs when there is one, plain or encrypted. Its MB/s is
// the capture's own throughput (make bench section 6 measures it with CRIU).
func BenchmarkCapture(b *testing.B) {
	for _, enc := range []bool{false, true} {
		name := "plain"
		if enc {
			name = "encrypted"
		}
		b.Run(name, func(b *testing.B) {
			var opts imgset.CreateOptions
			if enc {
				opts.Recipients = []cipher.Recipient{benchRecipient(b)}
			}
			root := benchDir(b)
			src := make([]byte, 4<<20)
			for i := range src {
				src[i] = byte(i*7 + i>>12)
			}
			b.SetBytes(benchPages)
			for i := 0; b.Loop(); i++ {
				set := filepath.Join(root, "set")
				b.StopTimer()
				os.RemoveAll(set)
				b.StartTimer()
				benchCaptureOnce(b, root, set, opts, src)
			}
		})
	}
}

// benchCaptureOnce captures one fake dump into set.
func benchCaptureOnce(b *testing.B, root, set string, opts imgset.CreateOptions, src []byte) {
	w, err := imgset.Create(set, opts)
	if err != nil {
		b.Fatal(err)
	}
	sink := readFromSet{w}
	l, err := Listen(root, CaptureSocket)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept(context.Background())
		if err == nil {
			_, err = Capture(context.Background(), conn, sink)
			conn.Close()
		}
		done <- err
	}()
	criu := dialCRIU(b, root, CaptureSocket)
	if err := benchSend(criu, "pages-1.img", src, benchPages); err != nil {
		b.Fatal(err)
	}
	if err := benchSend(criu, Inventory, src, 64); err != nil {
		b.Fatal(err)
	}
	criu.conn.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		b.Fatal(err)
	}
}

// benchSend sends a file of size bytes of src, repeated, by vmsplice.
func benchSend(criu *fakeCRIU, name string, src []byte, size int) error {
	w, err := criu.openDump(name)
	if err != nil {
		return err
	}
	defer w.Close()
	for size > 0 {
		p := src[:min(len(src), size)]
		for len(p) > 0 {
			iov := []unix.Iovec{{Base: &p[0]}}
			iov[0].SetLen(len(p))
			n, err := unix.Vmsplice(int(w.Fd()), iov, 0)
			if err != nil {
				return err
			}
			p, size = p[n:], size-n
		}
	}
	return nil
}

// readFromSet is a set as imgtool's capture gives it: a ReadFromSink.
type readFromSet struct{ *imgset.Writer }

func (readFromSet) ReadsFromPipes() {}

// benchRecipient makes a P-256 recipient.
func benchRecipient(b *testing.B) cipher.Recipient {
	certPEM, _, err := cipher.Keygen(cipher.KeygenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		b.Fatal(err)
	}
	r, err := cipher.NewX509Recipient(cert)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// benchDir is a folder in tmpfs when there is one, so that the benchmark
// measures the capture rather than the disk.
func benchDir(b *testing.B) string {
	if d, err := os.MkdirTemp("/dev/shm", "stream-bench-"); err == nil {
		b.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return b.TempDir()
}
