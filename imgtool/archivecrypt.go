package imgtool

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/cipher"
)

// Encryption of container checkpoint archives (docs/format.md, part 4): encrypt
// and decrypt take an archive where they take a set, and write a new file (-o).

// encryptArchive writes the encrypted form of the archive at path to opts.Output.
func encryptArchive(ctx context.Context, opts encryptOptions, path string, alg cipher.Algorithm, recipients []cipher.Recipient) error {
	if opts.Output == "" {
		return usageError(fmt.Errorf("encrypt: %s is an archive: give the encrypted archive's name with -o OUT", path))
	}
	if archive.IsSealed(path) {
		return fmt.Errorf("encrypt: %s is already an encrypted archive", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	err = writeFileAtomic(ctx, opts.Output, opts.Out, 0o644, func(w io.Writer) error {
		return archive.Encrypt(w, f, st.Size(), recipients, alg)
	})
	if err != nil {
		return fmt.Errorf("encrypt: %s: %w", path, err)
	}
	if opts.Quiet || opts.Output == "-" {
		return nil
	}
	fmt.Fprintf(opts.Out, "encrypted archive %s to %s with %s: %s\n", path, opts.Output, alg, humanBytes(st.Size()))
	return printRecipients(opts.Out, recipients)
}

// decryptArchive writes the original of the encrypted archive at path to
// opts.Output, every chunk authenticated before it is written.
func decryptArchive(ctx context.Context, opts decryptOptions, path string, ids []cipher.Identity) error {
	if opts.Output == "" {
		return usageError(fmt.Errorf("decrypt: %s is an encrypted archive: give the decrypted archive's name with -o OUT", path))
	}
	a, err := archive.Open(path, archive.Options{Identities: ids})
	if err != nil {
		return fmt.Errorf("decrypt: %w", explainOpenError(path, ids, err))
	}
	defer a.Close()
	if err := checkSetID(path, opts.ExpectSetID, a.Header()); err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	orig := a.Original()
	// The original holds the container's secrets: only its owner may read it.
	err = writeFileAtomic(ctx, opts.Output, opts.Out, 0o600, func(w io.Writer) error {
		_, err := io.Copy(w, orig)
		return err
	})
	if err != nil {
		return fmt.Errorf("decrypt: %s: %w", path, err)
	}
	if opts.Quiet || opts.Output == "-" {
		return nil
	}
	_, err = fmt.Fprintf(opts.Out, "decrypted archive %s to %s: %s, every chunk authenticated\n", path, opts.Output, humanBytes(orig.Size()))
	return err
}

// writeFileAtomic writes a file with write: to stdout for "-", else to a
// temporary file beside path (created 0600) renamed onto path once whole, so
// that path is the old file or the complete new one.
func writeFileAtomic(ctx context.Context, path string, stdout io.Writer, perm os.FileMode, write func(io.Writer) error) error {
	if path == "-" {
		return write(ctxWriter{ctx, stdout})
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("creating %s: is a directory", path)
	}
	if err := refuseEncryptedSet(path); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	err = write(ctxWriter{ctx, f})
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && ctx.Err() != nil {
		err = context.Cause(ctx) // interrupted: path stays as it was
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	// The rename itself made durable (best effort: the file is in place either way).
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ctxWriter fails once ctx is done, so an interrupted run stops.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.w.Write(p)
}
