package imgtool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
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
	out := fileOutput{path: opts.Output, stdout: opts.Out, perm: 0o644, cleaned: noteCleaned(opts.Err, opts.Output)}
	err = writeFileAtomic(ctx, out, func(w io.Writer) error {
		return archive.Encrypt(w, f, st.Size(), recipients, alg)
	})
	if err != nil {
		return archiveWriteError("encrypt", path, err)
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
	out := fileOutput{path: opts.Output, stdout: opts.Out, perm: 0o600, cleaned: noteCleaned(opts.Err, opts.Output)}
	err = writeFileAtomic(ctx, out, func(w io.Writer) error {
		_, err := io.Copy(w, orig)
		return err
	})
	if err != nil {
		return archiveWriteError("decrypt", path, err)
	}
	if opts.Quiet || opts.Output == "-" {
		return nil
	}
	_, err = fmt.Fprintf(opts.Out, "decrypted archive %s to %s: %s, every chunk authenticated\n", path, opts.Output, humanBytes(orig.Size()))
	return err
}

// fileOutput is a file that writeFileAtomic writes.
type fileOutput struct {
	path    string      // "-": stdout
	stdout  io.Writer   // for "-"
	perm    os.FileMode // the new file's mode
	inPlace bool        // path is the input being rewritten (rekey): unchanged when stopped
	cleaned func(removed []string)
}

// writeFileAtomic writes a file with write: to stdout for "-", else to a
// temporary file beside the path (created 0600, locked as in use while this
// process lives, see tempfile.go) renamed onto it once whole, so that the path
// is the old file or the complete new one. What earlier runs killed while
// writing the same path left beside it is removed first, and told to
// out.cleaned. Stopped by ctx before the rename, it removes the temporary file
// and returns an *imgset.StoppedError that says so.
func writeFileAtomic(ctx context.Context, out fileOutput, write func(io.Writer) error) error {
	if out.path == "-" {
		return write(ctxWriter{ctx, out.stdout})
	}
	path := out.path
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("creating %s: is a directory", path)
	}
	if err := refuseEncryptedSet(path); err != nil {
		return err
	}
	removeDeadTemps(path, out.cleaned)
	f, err := createTempBeside(path)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	defer f.Close() // after the rename: the lock is held until then
	err = write(ctxWriter{ctx, f})
	if err == nil {
		err = f.Chmod(out.perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if ctx.Err() != nil { // interrupted: path stays as it was
		return &imgset.StoppedError{Dir: path, Partial: f.Name(), RemoveErr: os.Remove(f.Name()), InPlace: out.inPlace, Cause: context.Cause(ctx)}
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

// archiveWriteError is the error of cmd writing from the archive at path: an
// interruption is one line as for sets ("CMD: interrupted by SIGINT; removed
// the partial output ..."), any other error names the archive.
func archiveWriteError(cmd, path string, err error) error {
	var se *imgset.StoppedError
	if errors.As(err, &se) {
		return fmt.Errorf("%s: %w", cmd, se)
	}
	return fmt.Errorf("%s: %s: %w", cmd, path, err)
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
