package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// Verification is what VerifySealed found.
type Verification struct {
	// Header is the archive's header (authentic only if Authenticated); nil when
	// the archive's framing or its header did not parse.
	Header *cipher.Header
	// Authenticated: a key opened the header, its MAC matched, and every chunk of
	// the encrypted original was authenticated.
	Authenticated bool
	// Bytes is the size of the original archive (the plaintext authenticated).
	Bytes int64
	// Failure is the check that failed, nil when every check made passed. It wraps
	// cipher.ErrNoRecipient when no key given is a recipient (which says nothing
	// of the archive), else what was wrong: a framing byte, the header, a chunk.
	Failure error
}

// ErrFraming is wrapped by a Verification's Failure when a byte of the archive
// outside the sealed header and the encrypted original differs from what
// Encrypt writes.
var ErrFraming = errors.New("the archive's framing is not the one an encrypted archive has")

// VerifySealed checks the encrypted archive at path and writes nothing. Without
// a key it checks what needs none: every byte outside the header and the
// encrypted original (the tar headers, padding and end, compared with those
// Encrypt writes: nothing else is allowed there), the header's structure and
// manifest, the encrypted original's size and prefix. With ids it also checks the
// header's MAC and authenticates every chunk of the original, decrypting into
// nothing: every byte of the file is then covered. The error is for an archive that
// could not be examined (no such file) or that is not an encrypted archive
// (ErrNotSealed); what fails is in the Verification.
func VerifySealed(ctx context.Context, path string, ids []cipher.Identity, progress func(int64)) (*Verification, error) {
	f, size, err := openSealedFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	v := &Verification{}
	h, data, ct, err := sealedPartsRaw(f, size)
	if err != nil {
		v.Failure = err
		return v, nil
	}
	v.Header = h
	if err := checkFraming(f, size, data, ct); err != nil {
		v.Failure = err
		return v, nil
	}
	if len(ids) == 0 {
		return v, nil
	}
	key, err := h.Unwrap(ids...)
	if err != nil {
		v.Failure = fmt.Errorf("%s: %w", imgset.HeaderName, err)
		return v, nil
	}
	dec, err := key.NewReaderAt(ct, ct.Size(), h.Files[0])
	if err != nil {
		v.Failure = fmt.Errorf("%s: %w", SealedName, err)
		return v, nil
	}
	// Chunk by chunk, in order, into nothing: no plaintext is kept or written.
	buf := make([]byte, 4*cipher.ChunkSize)
	total := h.Files[0].Size
	for off := int64(0); off < total; {
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		n := int64(len(buf))
		if total-off < n {
			n = total - off
		}
		m, err := dec.ReadAt(buf[:n], off)
		if int64(m) < n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			v.Failure = fmt.Errorf("%s: %w", SealedName, err)
			return v, nil
		}
		off += n
		if progress != nil {
			progress(n)
		}
	}
	clear(buf)
	v.Authenticated, v.Bytes = true, total
	return v, nil
}

// checkFraming compares every byte of the file that is neither the sealed
// header's data nor the encrypted original with what writeFraming and the end of
// the archive write for them.
func checkFraming(ra io.ReaderAt, size int64, hdr []byte, ct *io.SectionReader) error {
	var b bytes.Buffer
	if _, err := writeFraming(&b, hdr, ct.Size()); err != nil {
		return err
	}
	before := b.Bytes()
	_, off, _ := ct.Outer()
	if off != int64(len(before)) {
		return fmt.Errorf("%w: the encrypted original starts at byte %d, not %d", ErrFraming, off, len(before))
	}
	pad := (512 - ct.Size()%512) % 512
	if want := off + ct.Size() + pad + 1024; size != want {
		return fmt.Errorf("%w: %d bytes, want %d (a tar padded and ended with two zero blocks)", ErrFraming, size, want)
	}
	got := make([]byte, len(before))
	if _, err := ra.ReadAt(got, 0); err != nil {
		return err
	}
	if i := firstDiff(got, before); i >= 0 {
		return fmt.Errorf("%w: byte %d differs", ErrFraming, i)
	}
	tail := make([]byte, pad+1024)
	if _, err := ra.ReadAt(tail, off+ct.Size()); err != nil {
		return err
	}
	if i := firstDiff(tail, make([]byte, len(tail))); i >= 0 {
		return fmt.Errorf("%w: byte %d differs (after the encrypted original: zeros only)", ErrFraming, off+ct.Size()+int64(i))
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
