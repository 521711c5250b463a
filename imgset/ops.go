package imgset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/imgtool/imgtool/cipher"
)

// Progress is called as a long operation advances, with the plaintext bytes done
// so far and the total. It is called from the operation's goroutine.
type Progress func(done, total int64)

// EncryptOptions configures Encrypt.
type EncryptOptions struct {
	Recipients []cipher.Recipient // at least one
	Algorithm  cipher.Algorithm   // zero: cipher.AES256GCM
	Output     string             // "" (or dir itself): encrypt in place, atomically
	Progress   Progress
	Cleaned    func(removed []string) // told the leftovers of dead earlier runs removed first
	Signer     *cipher.Signer         // signs the new set (see CreateOptions.Signer)
}

// Encrypt encrypts the plaintext set in dir for opts.Recipients, into opts.Output
// or in place. In place, the encrypted set is built beside dir and swapped in
// atomically: at every moment dir is the whole old set or the whole new one. The
// old plaintext files are deleted, not shredded: encrypt at dump time (Create with
// recipients) to never have plaintext on disk.
func Encrypt(dir string, opts EncryptOptions) error {
	return EncryptContext(context.Background(), dir, opts)
}

// EncryptContext is Encrypt, stopped when ctx is done: between files, within a
// file at its next batch of chunks, or just before the new set is put in place
// (not after: then the operation completes). A stopped operation removes what
// it wrote and returns a *StoppedError; dir is as it was.
func EncryptContext(ctx context.Context, dir string, opts EncryptOptions) error {
	if len(opts.Recipients) == 0 {
		return fmt.Errorf("image set %s: encrypt needs at least one recipient", dir)
	}
	return withSet(ctx, dir, opts.Output, opts.Cleaned, func(lock *setLock) error {
		src, err := Open(dir, OpenOptions{})
		if errors.Is(err, ErrKeyRequired) {
			return fmt.Errorf("image set %s: %w: use rekey to change its recipients", dir, ErrEncrypted)
		}
		if err != nil {
			return err
		}
		copts := CreateOptions{Recipients: opts.Recipients, Algorithm: opts.Algorithm, Cleaned: opts.Cleaned, Signer: opts.Signer}
		return rewrite(ctx, src, lock, opts.Output, copts, opts.Progress)
	})
}

// withSet runs op on the set in dir. For an in-place operation (out is "" or dir
// itself) it first takes the set's lock, failing fast with ErrBusy if another
// process holds it, and removes the leftovers of earlier runs that died (see
// RemoveLeftovers), telling cleaned; op gets the lock, nil when not in place
// (the leftovers beside out are for the Writer to remove).
func withSet(ctx context.Context, dir, out string, cleaned func([]string), op func(lock *setLock) error) error {
	inPlace, err := sameDir(dir, out)
	if err != nil {
		return fmt.Errorf("image set %s: %w", dir, missingSetHint(dir, err))
	}
	if ctx.Err() != nil {
		return stopped(ctx, dir, "", nil, inPlace)
	}
	if !inPlace {
		return op(nil)
	}
	lock, err := lockSet(dir)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	removed, err := removeStale(dir, lock)
	if len(removed) > 0 && cleaned != nil {
		cleaned(removed)
	}
	if err != nil {
		return err
	}
	return op(lock)
}

// DecryptOptions configures Decrypt.
type DecryptOptions struct {
	Identities []cipher.Identity
	Output     string // "" (or dir itself): decrypt in place, atomically
	Progress   Progress
	Cleaned    func(removed []string) // told the leftovers of dead earlier runs removed first
	// Signature, if not nil, is the set's verified signature (CheckSignature):
	// every stored chunk is checked against it before it is decrypted.
	Signature *cipher.Signature
}

// Decrypt decrypts the encrypted set in dir into opts.Output or in place, with the
// same atomicity as Encrypt. Every chunk is authenticated before its plaintext is
// written; if any fails, nothing is put in place and the error names the file.
func Decrypt(dir string, opts DecryptOptions) error {
	return DecryptContext(context.Background(), dir, opts)
}

// DecryptContext is Decrypt, stopped when ctx is done, as EncryptContext is: the
// partial plaintext written so far is removed.
func DecryptContext(ctx context.Context, dir string, opts DecryptOptions) error {
	return withSet(ctx, dir, opts.Output, opts.Cleaned, func(lock *setLock) error {
		src, err := Open(dir, OpenOptions{Identities: opts.Identities, RequireEncrypted: true, Signature: opts.Signature})
		if err != nil {
			return err
		}
		return rewrite(ctx, src, lock, opts.Output, CreateOptions{Cleaned: opts.Cleaned}, opts.Progress)
	})
}

// RekeyOptions configures Rekey.
type RekeyOptions struct {
	// Identities open the current header: one must be a recipient.
	Identities []cipher.Identity
	// Add are new recipients. A recipient already in the set is wrapped afresh.
	Add []cipher.Recipient
	// Remove are the fingerprints of recipients to drop; each must be in the set.
	Remove []cipher.Fingerprint
	// Rotate re-encrypts the whole set under a new file key and set id, for exactly
	// the Add recipients (the others' certificates are not in the set, so they
	// cannot be kept): the only way to shut out the holder of a leaked key or of a
	// removed recipient's key who may have read the old header.
	Rotate bool
	// Algorithm is the AEAD of a rotated set; zero keeps the current one.
	Algorithm cipher.Algorithm
	// Progress reports a rotation's progress (a header-only rekey is instant).
	Progress Progress
	// Cleaned is told the leftovers of dead earlier runs removed first.
	Cleaned func(removed []string)
	// Signer re-signs the set. Without it, the set's signature (which no longer
	// matches the new header) is removed.
	Signer *cipher.Signer
}

// Rekey changes the recipients of the encrypted set in dir. Without Rotate it
// rewrites only the header (the file key, the set id and every data file stay
// as they are), atomically: a new header is written beside the set, synced, and
// renamed over the old one. Its time depends on the number of recipients and
// files, not on the set's size.
func Rekey(dir string, opts RekeyOptions) error {
	return RekeyContext(context.Background(), dir, opts)
}

// RekeyContext is Rekey, stopped when ctx is done, as EncryptContext is. A
// header-only rekey checks ctx once, before it writes the new header (which
// takes a moment only).
func RekeyContext(ctx context.Context, dir string, opts RekeyOptions) error {
	if !opts.Rotate && len(opts.Add) == 0 && len(opts.Remove) == 0 {
		return fmt.Errorf("image set %s: rekey needs recipients to add or remove", dir)
	}
	if opts.Rotate && len(opts.Add) == 0 {
		return fmt.Errorf("image set %s: rotating needs the certificate of every recipient of the new key", dir)
	}
	return withSet(ctx, dir, "", opts.Cleaned, func(lock *setLock) error {
		if opts.Rotate {
			return rotate(ctx, dir, lock, opts)
		}
		return rekeyHeader(ctx, dir, opts)
	})
}

// rekeyHeader rewrites the header of the set in dir (locked) for Rekey.
func rekeyHeader(ctx context.Context, dir string, opts RekeyOptions) error {
	h, err := ReadHeader(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("image set %s: %w", dir, ErrNotEncrypted)
	}
	if err != nil {
		return err
	}
	key, err := h.Unwrap(opts.Identities...)
	if err != nil {
		return fmt.Errorf("image set %s: %s: %w", dir, HeaderName, err)
	}
	stanzas, err := editStanzas(h.Stanzas, opts.Remove)
	if err != nil {
		return fmt.Errorf("image set %s: %w", dir, err)
	}
	added, err := key.Wrap(opts.Add...)
	if err != nil {
		return fmt.Errorf("image set %s: %w", dir, err)
	}
	for _, s := range added {
		if slices.Contains(opts.Remove, s.Fingerprint) {
			return fmt.Errorf("image set %s: recipient %s is both added and removed", dir, s.Fingerprint)
		}
		stanzas = slices.DeleteFunc(stanzas, func(o *cipher.Stanza) bool { return o.Fingerprint == s.Fingerprint })
		stanzas = append(stanzas, s)
	}
	if len(stanzas) == 0 {
		return fmt.Errorf("image set %s: no recipient would be left", dir)
	}
	hdr, err := h.Reseal(key, stanzas)
	if err != nil {
		return fmt.Errorf("image set %s: %w", dir, err)
	}
	if ctx.Err() != nil {
		return stopped(ctx, dir, "", nil, true)
	}
	// The old signature covers the old header: it goes first, so that no moment
	// shows the new header beside it, and a new one is made after.
	if _, err := RemoveSignature(dir); err != nil {
		return err
	}
	if err := replaceHeader(dir, hdr); err != nil {
		return err
	}
	if opts.Signer != nil {
		if _, err := Sign(dir, opts.Signer); err != nil {
			return err
		}
	}
	return nil
}

// editStanzas returns stanzas without the removed fingerprints, each of which must
// be present.
func editStanzas(stanzas []*cipher.Stanza, remove []cipher.Fingerprint) ([]*cipher.Stanza, error) {
	out := slices.Clone(stanzas)
	for _, fp := range remove {
		n := len(out)
		out = slices.DeleteFunc(out, func(s *cipher.Stanza) bool { return s.Fingerprint == fp })
		if len(out) == n {
			return nil, fmt.Errorf("recipient %s is not in the set", fp)
		}
	}
	return out, nil
}

func rotate(ctx context.Context, dir string, lock *setLock, opts RekeyOptions) error {
	src, err := Open(dir, OpenOptions{Identities: opts.Identities, RequireEncrypted: true})
	if err != nil {
		return err
	}
	for _, r := range opts.Add {
		if fr, ok := r.(interface{ Fingerprint() cipher.Fingerprint }); ok && slices.Contains(opts.Remove, fr.Fingerprint()) {
			return fmt.Errorf("image set %s: recipient %s is both added and removed", dir, fr.Fingerprint())
		}
	}
	alg := opts.Algorithm
	if alg == 0 {
		alg = src.header.Algorithm
	}
	return rewrite(ctx, src, lock, "", CreateOptions{Recipients: opts.Add, Algorithm: alg, Signer: opts.Signer}, opts.Progress)
}

// rewrite copies every file of src into a new set made with copts: at out, or,
// with lock (the lock of src's folder), in place of src (built beside it, then
// swapped in atomically). The new set keeps the permission bits of src's folder
// and of each of its files. It stops when ctx is done (see EncryptContext).
func rewrite(ctx context.Context, src *Set, lock *setLock, out string, copts CreateOptions, progress Progress) error {
	if err := checkFlat(src.dir); err != nil {
		return err
	}
	dirSt, err := os.Stat(src.dir)
	if err != nil {
		return err
	}
	var w *Writer
	if lock != nil {
		abs, err := filepath.Abs(src.dir)
		if err != nil {
			return err
		}
		if w, err = createBeside(abs, copts, lock, dirSt.Mode()); err != nil {
			return err
		}
	} else {
		if err := checkTarget(out); err != nil {
			return err
		}
		if w, err = createBeside(out, copts, nil, dirSt.Mode()); err != nil {
			return err
		}
	}
	w.ctx = ctx
	var total int64
	for _, name := range src.names {
		size, err := src.Size(name)
		if err != nil {
			w.Abort()
			return err
		}
		total += size
	}
	pw := &progressCounter{total: total, report: progress}
	for _, name := range src.names {
		if ctx.Err() != nil {
			return w.stop()
		}
		if err := copyFile(w, src, name, pw); err != nil {
			if ctx.Err() != nil {
				return w.stop() // the error is most likely the cancellation itself
			}
			w.Abort()
			return fmt.Errorf("image set %s: %s: %w", src.dir, name, err)
		}
	}
	return w.Commit()
}

// copyFile streams one file of src into w.
func copyFile(w *Writer, src *Set, name string, pw *progressCounter) error {
	in, err := src.Open(name)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.f.Stat()
	if err != nil {
		return err
	}
	// A plaintext file being encrypted, or an encrypted one decrypted, goes
	// through the positional path; only a rotation streams one set into another.
	rotating := w.Encrypted() && src.Encrypted()
	out, err := w.createFile(name, st.Mode(), rotating)
	if err != nil {
		return err
	}
	if !rotating {
		var progress func(int64)
		if pw.report != nil {
			progress = func(n int64) {
				pw.done += n
				pw.report(pw.done, pw.total)
			}
		}
		if err := out.copyAt(in, progress); err != nil {
			return err
		}
		return out.Close()
	}
	var dst io.Writer = out
	if pw.report != nil {
		dst = &countingWriter{w: out, pc: pw}
	}
	if _, err := io.Copy(dst, in); err != nil {
		return err
	}
	return out.Close()
}

// sameDir reports whether out names dir itself (an in-place operation).
func sameDir(dir, out string) (bool, error) {
	if out == "" {
		return true, nil
	}
	a, err := os.Stat(dir)
	if err != nil {
		return false, err
	}
	b, err := os.Stat(out)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// checkFlat refuses a set with entries other than regular files: a rewrite would
// lose them.
func checkFlat(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			return fmt.Errorf("image set %s: %s is not a regular file; only flat sets can be rewritten", dir, e.Name())
		}
	}
	return nil
}

// progressCounter adds up bytes copied and reports them.
type progressCounter struct {
	done, total int64
	report      Progress
}

// countingWriter counts what passes through it; it hides the ReadFrom of the set
// file, so it is used only when progress is wanted.
type countingWriter struct {
	w  io.Writer
	pc *progressCounter
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.pc.done += int64(n)
	c.pc.report(c.pc.done, c.pc.total)
	return n, err
}

// ReadFrom keeps the fast path of the set file, counting what its reader yields.
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.w.(io.ReaderFrom); ok {
		return rf.ReadFrom(&countingReader{r: r, pc: c.pc})
	}
	return io.Copy(struct{ io.Writer }{c}, r)
}

type countingReader struct {
	r  io.Reader
	pc *progressCounter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.pc.done += int64(n)
	c.pc.report(c.pc.done, c.pc.total)
	return n, err
}
