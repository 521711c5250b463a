package imgtool

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// archiveKeys makes a recipient's certificate and key for the archive tests.
func archiveKeys(t *testing.T, name string) (cert, key string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if _, _, err := runApp(t, "keygen", "--cert", cert, "--key", key, "--type", "p256"); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// sealedVariants encrypts every variant of the fixture archive for cert.
func sealedVariants(t *testing.T, cert string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	out := map[string]string{}
	for comp, path := range podmanVariants(t) {
		sealed := filepath.Join(dir, comp+".sealed.tar")
		if _, _, err := runApp(t, "encrypt", path, "-o", sealed, "--cert", cert, "-q"); err != nil {
			t.Fatalf("%s: %v", comp, err)
		}
		out[comp] = sealed
	}
	return out
}

// TestDecodeArchive: decode -D ARCHIVE and -i ARCHIVE:MEMBER write exactly what
// decoding the unpacked set writes, for every compression, plain and encrypted.
func TestDecodeArchive(t *testing.T) {
	set := extractSet(t)
	want := filepath.Join(t.TempDir(), "want")
	if _, _, err := runApp(t, "decode", "-D", set, "-o", want); err != nil {
		t.Fatal(err)
	}
	wantFiles, err := os.ReadDir(want)
	if err != nil || len(wantFiles) < 20 {
		t.Fatalf("%v: %d files", err, len(wantFiles))
	}
	cert, key := archiveKeys(t, "me")
	archives := podmanVariants(t)
	for comp, p := range sealedVariants(t, cert) {
		archives["sealed "+comp] = p
	}
	for name, path := range archives {
		var keyArgs []string
		if strings.HasPrefix(name, "sealed") {
			keyArgs = []string{"--tls-key", key}
		}
		got := filepath.Join(t.TempDir(), "got")
		if _, _, err := runApp(t, append([]string{"decode", "-D", path, "-o", got}, keyArgs...)...); err != nil {
			t.Fatalf("%s: decode -D: %v", name, err)
		}
		gotFiles, _ := os.ReadDir(got)
		if len(gotFiles) != len(wantFiles) {
			t.Errorf("%s: %d files decoded, want %d", name, len(gotFiles), len(wantFiles))
		}
		for _, f := range wantFiles {
			w, _ := os.ReadFile(filepath.Join(want, f.Name()))
			g, err := os.ReadFile(filepath.Join(got, f.Name()))
			if err != nil || !bytes.Equal(g, w) {
				t.Errorf("%s: %s differs from the unpacked set's: %v", name, f.Name(), err)
			}
		}
		for _, img := range []string{"core-1.img", "pstree.img", "mm-122.img", "pagemap-1.img", "fdinfo-2.img"} {
			for _, pretty := range [][]string{nil, {"--pretty"}} {
				args := append([]string{"decode", "-i", filepath.Join(set, img)}, pretty...)
				w, _, err := runApp(t, args...)
				if err != nil {
					t.Fatal(err)
				}
				args = append(append([]string{"decode", "-i", path + ":checkpoint/" + img}, pretty...), keyArgs...)
				g, _, err := runApp(t, args...)
				if err != nil || g != w {
					t.Errorf("%s: decode -i :checkpoint/%s %v: %v, output differs: %t", name, img, pretty, err, g != w)
				}
			}
		}
		if keyArgs != nil {
			_, _, err := runApp(t, "decode", "-i", path+":checkpoint/core-1.img")
			wantErr(t, err, ExitError, nil, "--tls-key")
			_, _, err = runApp(t, "decode", "-D", path, "-o", filepath.Join(t.TempDir(), "x"))
			wantErr(t, err, ExitError, nil, "--tls-key")
		}
	}
	// The statistics at the top of the archive are a CRIU image too.
	if out, _, err := runApp(t, "decode", "-i", podmanArchive+":stats-dump"); err != nil || !strings.HasPrefix(out, `{"magic": "STATS"`) {
		t.Errorf("stats-dump: %v %q", err, out)
	}
	// A real file wins over the ARCHIVE:MEMBER reading of its name.
	dir := t.TempDir()
	odd := filepath.Join(dir, "a.tar:checkpoint")
	data, _ := os.ReadFile(filepath.Join(set, "core-1.img"))
	if err := os.WriteFile(odd, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a.tar"), mustRead(t, podmanArchive), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, _, err := runApp(t, "decode", "-i", odd); err != nil || !strings.Contains(out, `"CORE"`) {
		t.Errorf("real file a.tar:checkpoint: %v", err)
	}
	if out, _, err := runApp(t, "decode", "-i", filepath.Join(dir, "a.tar")+":checkpoint/pstree.img"); err != nil || !strings.Contains(out, `"PSTREE"`) {
		t.Errorf("a.tar:checkpoint/pstree.img: %v", err)
	}

	_, _, err = runApp(t, "decode", "-i", podmanArchive+":core-1.img")
	wantErr(t, err, ExitError, os.ErrNotExist, "no member core-1.img", "did you mean "+podmanArchive+":checkpoint/core-1.img", "under checkpoint/")
	_, _, err = runApp(t, "decode", "-i", podmanArchive+":checkpoint/core-9.img")
	wantErr(t, err, ExitError, os.ErrNotExist, "no member checkpoint/core-9.img", "core-122.img")
	_, _, err = runApp(t, "decode", "-i", podmanArchive)
	wantErr(t, err, ExitUsage, nil, "container checkpoint archive", ":checkpoint/NAME.img", "-D")
	_, _, err = runApp(t, "decode", "-i", podmanArchive+":")
	wantErr(t, err, ExitUsage, nil, "no member named")
	_, _, err = runApp(t, "decode", "-i", podmanArchive+":checkpoint/pages-1.img")
	wantErr(t, err, ExitError, nil, "raw PAGES image")
	_, _, err = runApp(t, "decode", "-D", podmanArchive)
	wantErr(t, err, ExitUsage, nil, "-o")
}

// TestVerifyArchive: verify authenticates an encrypted archive whole with a key,
// checks what it can without, catches a flipped bit anywhere, and fails a plain
// archive, writing nothing.
func TestVerifyArchive(t *testing.T) {
	cert, key := archiveKeys(t, "me")
	_, other := archiveKeys(t, "other")
	for comp, sealed := range sealedVariants(t, cert) {
		before := dirNames(t, filepath.Dir(sealed))
		out, _, err := runApp(t, "verify", sealed, "--tls-key", key)
		if err != nil || !strings.Contains(out, "OK: the framing, the header and every chunk") || !strings.Contains(out, "not supported") {
			t.Errorf("%s: %v\n%s", comp, err, out)
		}
		out, _, err = runApp(t, "verify", "-D", sealed)
		wantErr(t, err, ExitUnchecked, nil, "--tls-key")
		if !strings.Contains(out, "UNCHECKED") || !strings.Contains(out, "ECDSA-P-256") {
			t.Errorf("%s without a key:\n%s", comp, out)
		}
		_, _, err = runApp(t, "verify", sealed, "--tls-key", other)
		wantErr(t, err, ExitError, cipher.ErrNoRecipient, "not a recipient")
		_, _, err = runApp(t, "verify", sealed, "--tls-key", key, "--require-signed")
		wantErr(t, err, ExitVerify, nil, "not supported")
		_, _, err = runApp(t, "verify", sealed, "--tls-key", key, "--expect-set-id", strings.Repeat("ab", 16))
		if err == nil {
			t.Errorf("%s: --expect-set-id of another set passed", comp)
		}
		if after := dirNames(t, filepath.Dir(sealed)); after != before {
			t.Errorf("%s: verify wrote files: %s, before %s", comp, after, before)
		}
	}
	for comp, path := range podmanVariants(t) {
		out, _, err := runApp(t, "verify", path)
		wantErr(t, err, ExitVerify, imgset.ErrNotEncrypted, "nothing to authenticate")
		if !strings.Contains(out, "not encrypted") || !strings.Contains(out, "("+comp+")") {
			t.Errorf("%s plain:\n%s", comp, out)
		}
	}

	// A flipped bit anywhere: the tar header of either member, the sealed header,
	// its padding, the encrypted archive (start, middle, last chunk), the end.
	sealed := sealedVariants(t, cert)["zstd"]
	data := mustRead(t, sealed)
	hdrLen := int(tarSize(data[:512]))
	body := 512 + (hdrLen+511)/512*512 + 512
	offsets := map[string]int{
		"first tar header (name)":   3,
		"first tar header (mtime)":  140,
		"sealed header":             512 + hdrLen/2,
		"sealed header's MAC":       512 + hdrLen - 1,
		"second tar header":         body - 512 + 130,
		"encrypted archive, prefix": body + 5,
		"encrypted archive, middle": body + (len(data)-body)/2,
		"encrypted archive, end":    len(data) - 1024 - 600,
		"end of the tar":            len(data) - 3,
	}
	if hdrLen%512 != 0 {
		offsets["padding of the sealed header"] = 512 + hdrLen + 1
	}
	dir := t.TempDir()
	for what, off := range offsets {
		bad := bytes.Clone(data)
		bad[off] ^= 0x10
		p := filepath.Join(dir, "bad.tar")
		if err := os.WriteFile(p, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := runApp(t, "verify", p, "--tls-key", key)
		if ExitCode(err) != ExitVerify || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s (byte %d): %v (exit %d), want exit %d", what, off, err, ExitCode(err), ExitVerify)
		}
	}
}

// tarSize reads the size field of a ustar header block.
func tarSize(block []byte) int64 {
	var n int64
	for _, c := range block[124:136] {
		if c >= '0' && c <= '7' {
			n = n*8 + int64(c-'0')
		}
	}
	return n
}

func dirNames(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, ",")
}

// sealedBody returns the encrypted original (the second member) of an
// encrypted archive.
func sealedBody(t *testing.T, path string) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(mustRead(t, path)))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Name == archive.SealedName {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// TestRekeyArchive: rekey changes an encrypted archive's recipients in its
// header only (the encrypted original is copied unchanged), or with --rotate
// re-encrypts it; decrypting gives the original archive byte for byte; a removed
// key no longer opens it; failures change nothing and leave nothing.
func TestRekeyArchive(t *testing.T) {
	certA, keyA := archiveKeys(t, "a")
	certB, keyB := archiveKeys(t, "b")
	_, keyC := archiveKeys(t, "c")
	orig := mustRead(t, podmanArchive)
	sealed := sealedVariants(t, certA)["none"]
	dir := filepath.Dir(sealed)
	listing := dirNames(t, dir)
	if err := os.Chmod(sealed, 0o640); err != nil {
		t.Fatal(err)
	}
	decrypts := func(key string) error {
		back := filepath.Join(t.TempDir(), "back.tar")
		if _, _, err := runApp(t, "decrypt", sealed, "-o", back, "--tls-key", key, "-q"); err != nil {
			return err
		}
		if !bytes.Equal(mustRead(t, back), orig) {
			t.Errorf("decrypt with %s: not the original archive", filepath.Base(key))
		}
		return nil
	}
	fp := func(cert string) string {
		c, err := cipher.ParseRecipients(mustRead(t, cert))
		if err != nil {
			t.Fatal(err)
		}
		return c[0].Fingerprint().String()
	}

	body := sealedBody(t, sealed)
	out, _, err := runApp(t, "rekey", sealed, "--tls-key", keyA, "--cert", certB)
	if err != nil || !strings.Contains(out, "header rewritten") || !strings.Contains(out, "recipients (2)") {
		t.Fatalf("add: %v\n%s", err, out)
	}
	if !bytes.Equal(sealedBody(t, sealed), body) {
		t.Error("add: the encrypted original changed")
	}
	if st, err := os.Stat(sealed); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("add: mode %v", st.Mode())
	}
	for _, k := range []string{keyA, keyB} {
		if err := decrypts(k); err != nil {
			t.Errorf("after add, %s: %v", filepath.Base(k), err)
		}
	}
	if _, _, err := runApp(t, "verify", sealed, "--tls-key", keyB, "-q"); err != nil {
		t.Errorf("verify after add: %v", err)
	}
	// Adding a recipient already there changes nothing.
	before := mustRead(t, sealed)
	out, _, err = runApp(t, "rekey", sealed, "--tls-key", keyA, "--cert", certB)
	if err != nil || !strings.Contains(out, "nothing changed") || !bytes.Equal(mustRead(t, sealed), before) {
		t.Errorf("again: %v\n%s", err, out)
	}

	// --remove: the removed key no longer opens it.
	_, errOut, err := runApp(t, "rekey", "-D", sealed, "--tls-key", keyB, "--remove", fp(certA))
	if err != nil || !strings.Contains(errOut, "only --rotate") {
		t.Fatalf("remove: %v\n%s", err, errOut)
	}
	if !bytes.Equal(sealedBody(t, sealed), body) {
		t.Error("remove: the encrypted original changed")
	}
	wantErr(t, decrypts(keyA), ExitError, cipher.ErrNoRecipient)
	if err := decrypts(keyB); err != nil {
		t.Errorf("after remove, b: %v", err)
	}

	// --rotate: a new file key, for exactly the --cert recipients.
	out, _, err = runApp(t, "rekey", sealed, "--tls-key", keyB, "--rotate", "--cert", certA)
	if err != nil || !strings.Contains(out, "under a new file key") {
		t.Fatalf("rotate: %v\n%s", err, out)
	}
	if bytes.Equal(sealedBody(t, sealed), body) {
		t.Error("rotate: the encrypted original is the same")
	}
	wantErr(t, decrypts(keyB), ExitError, cipher.ErrNoRecipient)
	if err := decrypts(keyA); err != nil {
		t.Errorf("after rotate, a: %v", err)
	}
	if _, _, err := runApp(t, "verify", sealed, "--tls-key", keyA, "-q"); err != nil {
		t.Errorf("verify after rotate: %v", err)
	}

	// Failures change nothing and leave nothing beside the archive.
	before = mustRead(t, sealed)
	plain := filepath.Join(dir, "plain.tar")
	if err := os.WriteFile(plain, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	listing = dirNames(t, dir)
	for _, c := range []struct {
		args     []string
		code     int
		sentinel error
		msg      string
	}{
		{[]string{"rekey", sealed, "--tls-key", keyC, "--cert", certB}, ExitError, cipher.ErrNoRecipient, "not a recipient"},
		{[]string{"rekey", sealed, "--tls-key", keyA, "--remove", fp(certB)}, ExitError, nil, "not in the archive"},
		{[]string{"rekey", sealed, "--tls-key", keyA, "--remove", fp(certA)}, ExitError, nil, "no recipient would be left"},
		{[]string{"rekey", sealed, "--tls-key", keyA, "--cert", certB, "--sign-key", keyA, "--sign-cert", certA}, ExitUsage, nil, "not signed"},
		{[]string{"rekey", sealed, "--tls-key", keyA}, ExitUsage, nil, "nothing to do"},
		{[]string{"rekey", plain, "--tls-key", keyA, "--cert", certB}, ExitError, imgset.ErrNotEncrypted, "not encrypted"},
	} {
		_, _, err := runApp(t, c.args...)
		wantErr(t, err, c.code, c.sentinel, c.msg)
	}
	if !bytes.Equal(mustRead(t, sealed), before) || !bytes.Equal(mustRead(t, plain), orig) {
		t.Error("a failed rekey changed the archive")
	}
	if got := dirNames(t, dir); got != listing {
		t.Errorf("left behind: %s, want %s", got, listing)
	}

	// Interrupted (the context cancelled, as SIGINT does): nothing changes.
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(&InterruptedError{Signal: syscall.SIGINT})
	err = runRekey(ctx, rekeyOptions{Dir: sealed, KeyFiles: []string{keyA}, Certs: []string{certB}, Out: io.Discard, Err: io.Discard}, nil)
	if err == nil || !strings.Contains(err.Error(), "SIGINT") {
		t.Errorf("interrupted: %v", err)
	}
	// Stopped while the new archive is written: the temporary file goes.
	err = writeFileAtomic(context.Background(), fileOutput{path: sealed, perm: 0o600}, func(w io.Writer) error {
		w.Write(bytes.Repeat([]byte{1}, 100000))
		cancel(nil)
		return errors.New("stopped midway")
	})
	if err == nil {
		t.Error("a failed write succeeded")
	}
	err = writeFileAtomic(ctx, fileOutput{path: sealed, perm: 0o600}, func(w io.Writer) error { return nil })
	if err == nil {
		t.Error("an interrupted write was renamed into place")
	}
	if !bytes.Equal(mustRead(t, sealed), before) {
		t.Error("an interrupted rekey changed the archive")
	}
	if got := dirNames(t, dir); got != listing {
		t.Errorf("left behind: %s, want %s", got, listing)
	}
}
