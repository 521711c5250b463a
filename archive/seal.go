package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// An encrypted archive (docs/format.md, part 4) is an uncompressed tar of exactly
// two regular members, in this order: imgset.HeaderName, the sealed header of a
// one-file set whose manifest lists SealedName and the original archive's size, and
// SealedName, the original archive's bytes (compressed or not, as they were)
// encrypted as that file of the set. Nothing of the original, not even its members'
// names, is readable without a key; decrypting gives back its exact bytes, and an
// uncompressed original is still read in place, chunk by chunk, through the
// decrypting reader.

// SealedName is the name of the encrypted original in an encrypted archive, and
// the file name its key and chunks are bound to.
const SealedName = "checkpoint-archive"

// sealedTime is the modification time of an encrypted archive's members: a
// constant, so they say nothing about the original.
var sealedTime = time.Unix(0, 0)

// Encrypt writes to w the encrypted form of the archive that src holds (size
// bytes, which must start like an archive), for recipients, with alg (zero:
// cipher.AES256GCM).
func Encrypt(w io.Writer, src io.Reader, size int64, recipients []cipher.Recipient, alg cipher.Algorithm) error {
	if len(recipients) == 0 {
		return errors.New("encrypt archive: no recipients")
	}
	if size < 0 || size > cipher.MaxFileSize {
		return fmt.Errorf("encrypt archive: %d bytes, want 0 to %d", size, int64(cipher.MaxFileSize))
	}
	if alg == 0 {
		alg = cipher.AES256GCM
	}
	key, err := cipher.NewSetKey(alg)
	if err != nil {
		return err
	}
	stanzas, err := key.Wrap(recipients...)
	if err != nil {
		return err
	}
	// The header comes first in the archive: the file's nonce is drawn before
	// the file is written.
	file, err := key.NewFile(SealedName)
	if err != nil {
		return err
	}
	file.Size = size
	hdr, err := cipher.SealHeader(imgset.HeaderFraming, key, stanzas, []cipher.FileInfo{file})
	if err != nil {
		return err
	}
	tw, err := writeFraming(w, hdr, cipher.CiphertextSize(size))
	if err != nil {
		return err
	}
	cw, err := key.NewWriterFor(tw, file)
	if err != nil {
		return err
	}
	n, err := io.Copy(cw, io.LimitReader(src, size+1))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("encrypt archive: read %d bytes, expected %d (changed while read?)", n, size)
	}
	if err := cw.Close(); err != nil {
		return err
	}
	return tw.Close()
}

// writeFraming starts an encrypted archive on w: the tar header of the sealed
// header's member, the sealed header hdr, and the tar header of the encrypted
// original's member, ctSize bytes, which the caller writes to the tar writer
// returned before closing it. Every encrypted archive is framed so, byte for byte
// (VerifySealed checks it).
func writeFraming(w io.Writer, hdr []byte, ctSize int64) (*tar.Writer, error) {
	tw := tar.NewWriter(w)
	member := func(name string, n int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600, Size: n,
			ModTime: sealedTime, Format: tar.FormatUSTAR})
	}
	if err := member(imgset.HeaderName, int64(len(hdr))); err != nil {
		return nil, err
	}
	if _, err := tw.Write(hdr); err != nil {
		return nil, err
	}
	if err := member(SealedName, ctSize); err != nil {
		return nil, err
	}
	return tw, nil
}

// openSealedFile opens the encrypted archive at path and returns it with its size;
// a file that is not one (not regular, or not sealed) is ErrNotSealed. Errors name path.
func openSealedFile(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("archive %s: %w", path, err)
	}
	st, err := f.Stat()
	if err == nil && (!st.Mode().IsRegular() || !sealed(f, st.Size())) {
		err = ErrNotSealed
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("archive %s: %w", path, err)
	}
	return f, st.Size(), nil
}

// sealed reports whether the file starts like an encrypted archive: a tar whose
// first member is the sealed header.
func sealed(ra io.ReaderAt, size int64) bool {
	head := make([]byte, 512)
	n, _ := ra.ReadAt(head, 0)
	if c, err := Detect(head[:n]); err != nil || c != None {
		return false
	}
	hdr, err := tar.NewReader(io.NewSectionReader(ra, 0, size)).Next()
	return err == nil && hdr.Name == imgset.HeaderName
}

// openSealed opens an encrypted archive: it authenticates the header with one of
// opts.Identities and reads the original through the decrypting reader.
func openSealed(name string, ra io.ReaderAt, size int64, opts Options) (*Archive, error) {
	h, ct, err := sealedParts(ra, size)
	if err != nil {
		return nil, fmt.Errorf("encrypted archive: %w", err)
	}
	if len(opts.Identities) == 0 {
		return nil, &imgset.KeyRequiredError{Dir: name, Recipients: h.Recipients()}
	}
	key, err := h.Unwrap(opts.Identities...)
	if err != nil {
		return nil, fmt.Errorf("encrypted archive: %w", err)
	}
	dec, err := key.NewReaderAt(ct, ct.Size(), h.Files[0])
	if err != nil {
		return nil, fmt.Errorf("encrypted archive: %w", err)
	}
	a, err := read(name, &indexed{ra: dec, size: h.Files[0].Size}, nil, opts)
	if err != nil {
		return nil, fmt.Errorf("encrypted archive: %w", err)
	}
	a.header = h
	a.plain = dec
	return a, nil
}

// sealedParts reads an encrypted archive's header (not yet authenticated) and
// returns it with the encrypted original, checking their shape against each other.
func sealedParts(ra io.ReaderAt, size int64) (*cipher.Header, *io.SectionReader, error) {
	h, _, ct, err := sealedPartsRaw(ra, size)
	return h, ct, err
}

// sealedPartsRaw is sealedParts that also returns the header's bytes.
func sealedPartsRaw(ra io.ReaderAt, size int64) (*cipher.Header, []byte, *io.SectionReader, error) {
	pos := &posReader{r: io.NewSectionReader(ra, 0, size)}
	tr := tar.NewReader(pos)
	hdr, err := tr.Next()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tar: %w", err)
	}
	if hdr.Name != imgset.HeaderName || hdr.Typeflag != tar.TypeReg {
		return nil, nil, nil, fmt.Errorf("first member %q, want the regular file %s", hdr.Name, imgset.HeaderName)
	}
	if hdr.Size < 0 || hdr.Size > cipher.MaxHeaderSize {
		return nil, nil, nil, fmt.Errorf("%s: %d bytes, more than the limit of %d", imgset.HeaderName, hdr.Size, cipher.MaxHeaderSize)
	}
	data := make([]byte, hdr.Size)
	if _, err := io.ReadFull(tr, data); err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", imgset.HeaderName, unexpected(err))
	}
	h, err := cipher.ParseHeader(data, imgset.HeaderFraming)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", imgset.HeaderName, err)
	}
	hdr, err = tr.Next()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tar: %w", unexpected(err))
	}
	if hdr.Name != SealedName || hdr.Typeflag != tar.TypeReg {
		return nil, nil, nil, fmt.Errorf("second member %q, want the regular file %s", hdr.Name, SealedName)
	}
	off := pos.pos
	if hdr.Size < 0 || hdr.Size > size-off {
		return nil, nil, nil, fmt.Errorf("%s: %d bytes, beyond the end of the file: truncated", SealedName, hdr.Size)
	}
	if _, err := tr.Next(); err != io.EOF {
		if err == nil {
			err = errors.New("more than two members")
		}
		return nil, nil, nil, fmt.Errorf("tar: %w", err)
	}
	if len(h.Files) != 1 || h.Files[0].Name != SealedName {
		return nil, nil, nil, fmt.Errorf("%s: the manifest does not list exactly %s", imgset.HeaderName, SealedName)
	}
	if want := cipher.CiphertextSize(h.Files[0].Size); hdr.Size != want {
		return nil, nil, nil, fmt.Errorf("%s: %d bytes, but its %d plaintext bytes encrypt to %d: truncated or extended",
			SealedName, hdr.Size, h.Files[0].Size, want)
	}
	ct := io.NewSectionReader(ra, off, hdr.Size)
	if _, err := cipher.CheckPrefix(ct, SealedName, h.SetID); err != nil {
		return nil, nil, nil, err
	}
	return h, data, ct, nil
}

// Encrypted reports whether the archive was encrypted (and opened with a key).
func (a *Archive) Encrypted() bool { return a.header != nil }

// Header returns an encrypted archive's authenticated header; nil for a plain one.
func (a *Archive) Header() *cipher.Header { return a.header }

// Original returns a reader of the original archive's bytes: for an encrypted
// archive, decrypted and authenticated chunk by chunk as they are read; nil for a
// plain archive.
func (a *Archive) Original() *io.SectionReader {
	if a.plain == nil {
		return nil
	}
	return io.NewSectionReader(a.plain, 0, a.header.Files[0].Size)
}

// IsSealed reports whether path is an encrypted archive (Encrypt's output).
func IsSealed(path string) bool {
	f, err := openFile(path)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	return err == nil && st.Mode().IsRegular() && sealed(f, st.Size())
}
