package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// ErrNotSealed is wrapped by the errors of Rekey and VerifySealed for a file that is
// an archive but not an encrypted one.
var ErrNotSealed = errors.New("not an encrypted archive")

// RekeyOptions says how Rekey changes an encrypted archive's recipients.
type RekeyOptions struct {
	// Identities are tried to open the header: one must be a current recipient.
	Identities []cipher.Identity
	// Add are recipients to add (with Rotate: every recipient of the new key).
	Add []cipher.Recipient
	// Remove are the fingerprints of recipients to drop; each must be there.
	Remove []cipher.Fingerprint
	// Rotate re-encrypts the original under a new file key for exactly Add.
	Rotate bool
	// Algorithm is the AEAD of a rotated archive; 0 keeps the archive's.
	Algorithm cipher.Algorithm
}

// SealedHeader returns the header of the encrypted archive at path, parsed and
// checked against the archive's shape but not authenticated (no key).
func SealedHeader(path string) (*cipher.Header, error) {
	f, size, err := openSealedFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, _, err := sealedParts(f, size)
	if err != nil {
		return nil, fmt.Errorf("archive %s: encrypted archive: %w", path, err)
	}
	return h, nil
}

// Rekey writes to w the encrypted archive held by ra (size bytes) with its
// recipients changed. Without opts.Rotate only the header changes: it is resealed
// with the new stanzas (same file key, set id and manifest), and the encrypted
// original's bytes are copied unchanged; decrypting the result gives the same
// original. With opts.Rotate the original is decrypted, every chunk authenticated,
// and encrypted again under a new file key, as Encrypt does. ctx stops the copy.
func Rekey(ctx context.Context, w io.Writer, ra io.ReaderAt, size int64, opts RekeyOptions) error {
	if !opts.Rotate && len(opts.Add) == 0 && len(opts.Remove) == 0 {
		return errors.New("rekey needs recipients to add or remove")
	}
	if opts.Rotate && len(opts.Add) == 0 {
		return errors.New("rotating needs the certificate of every recipient of the new key")
	}
	if !sealed(ra, size) {
		return ErrNotSealed
	}
	h, ct, err := sealedParts(ra, size)
	if err != nil {
		return fmt.Errorf("encrypted archive: %w", err)
	}
	key, err := h.Unwrap(opts.Identities...)
	if err != nil {
		return fmt.Errorf("encrypted archive: %s: %w", imgset.HeaderName, err)
	}
	if opts.Rotate {
		for _, r := range opts.Add {
			if fr, ok := r.(interface{ Fingerprint() cipher.Fingerprint }); ok && slices.Contains(opts.Remove, fr.Fingerprint()) {
				return fmt.Errorf("recipient %s is both added and removed", fr.Fingerprint())
			}
		}
		dec, err := key.NewReaderAt(ct, ct.Size(), h.Files[0])
		if err != nil {
			return fmt.Errorf("encrypted archive: %w", err)
		}
		alg := opts.Algorithm
		if alg == 0 {
			alg = h.Algorithm
		}
		orig := &ctxReader{ctx: ctx, r: io.NewSectionReader(dec, 0, h.Files[0].Size)}
		return Encrypt(w, orig, h.Files[0].Size, opts.Add, alg)
	}
	stanzas := slices.Clone(h.Stanzas)
	for _, fp := range opts.Remove {
		n := len(stanzas)
		stanzas = slices.DeleteFunc(stanzas, func(s *cipher.Stanza) bool { return s.Fingerprint == fp })
		if len(stanzas) == n {
			return fmt.Errorf("recipient %s is not in the archive", fp)
		}
	}
	added, err := key.Wrap(opts.Add...)
	if err != nil {
		return err
	}
	for _, s := range added {
		if slices.Contains(opts.Remove, s.Fingerprint) {
			return fmt.Errorf("recipient %s is both added and removed", s.Fingerprint)
		}
		stanzas = slices.DeleteFunc(stanzas, func(o *cipher.Stanza) bool { return o.Fingerprint == s.Fingerprint })
		stanzas = append(stanzas, s)
	}
	if len(stanzas) == 0 {
		return errors.New("no recipient would be left")
	}
	hdr, err := h.Reseal(key, stanzas)
	if err != nil {
		return err
	}
	tw, err := writeFraming(w, hdr, ct.Size())
	if err != nil {
		return err
	}
	if _, err := io.Copy(tw, &ctxReader{ctx: ctx, r: ct}); err != nil {
		return err
	}
	return tw.Close()
}

// ctxReader fails once ctx is done, so that an interrupted copy stops.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if c.ctx != nil && c.ctx.Err() != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.r.Read(p)
}
