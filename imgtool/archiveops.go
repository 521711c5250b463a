package imgtool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// verify and rekey of container checkpoint archives (docs/format.md, part 4).

// archiveNotSigned is verify's signature line for an archive: an archive has
// no folder to hold imgtool-sign.img, and no signature format of its own.
const archiveNotSigned = "not signed (signatures of container checkpoint archives are not supported)"

// verifyArchive verifies the archive at path: an encrypted one is authenticated
// whole with a key (the framing byte for byte, the header, every chunk), or
// checked as far as it can be without; a plain one carries nothing to
// authenticate and fails, as a plain set does.
func verifyArchive(ctx context.Context, opts verifyOptions, path string, ids []cipher.Identity) error {
	if opts.Signature.Require {
		return withExitCode(ExitVerify, fmt.Errorf("verify: archive %s: --%s: signatures of container checkpoint archives are not supported, so none can be valid",
			path, flagRequireSigned))
	}
	if !archive.IsSealed(path) {
		ar, err := archive.Open(path, archive.Options{})
		var pe *os.PathError
		if err != nil && !errors.As(err, &pe) {
			// It reads as an archive but does not parse: damaged (an encrypted
			// archive whose first tar header was changed reads so too).
			return withExitCode(ExitVerify, fmt.Errorf("verify: %s failed: %w", path, err))
		}
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		comp := ar.Compression()
		ar.Close()
		fmt.Fprintf(opts.Out, "%s: container checkpoint archive (%s), not encrypted: it carries nothing to authenticate\n%s\n", path, comp, archiveNotSigned)
		return withExitCode(ExitVerify, fmt.Errorf("verify: archive %s failed: %w: nothing to authenticate (imgtool encrypt %s -o OUT --cert ...)",
			path, imgset.ErrNotEncrypted, path))
	}
	progress, done := newProgress(opts.Err, opts.Quiet, "verifying")
	var count func(int64)
	if progress != nil {
		var total, n int64
		if h, err := archive.SealedHeader(path); err == nil {
			total = h.Files[0].Size
		}
		count = func(d int64) { n += d; progress(n, total) }
	}
	v, err := archive.VerifySealed(ctx, path, ids, count)
	done()
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	noRecipient := errors.Is(v.Failure, cipher.ErrNoRecipient)
	if !opts.Quiet || v.Failure != nil || !v.Authenticated {
		var b strings.Builder
		if h := v.Header; h != nil {
			fmt.Fprintf(&b, "%s: encrypted container checkpoint archive, %s, set id %s, original archive %s\n",
				path, h.Algorithm, h.SetID, humanBytes(h.Files[0].Size))
			writeRecipients(&b, stanzaRecipientLines(h.Stanzas, nil))
		} else {
			fmt.Fprintf(&b, "%s: encrypted container checkpoint archive\n", path)
		}
		if v.Failure != nil {
			fmt.Fprintf(&b, "FAIL %s: %v\n", path, v.Failure)
		}
		if len(ids) == 0 && v.Failure == nil {
			fmt.Fprintf(&b, "not checked: the header MAC: recipients, parameters and manifest are unauthenticated (no key)\n")
			fmt.Fprintf(&b, "not checked: the chunks of the encrypted archive (no key)\n")
		}
		fmt.Fprintln(&b, archiveNotSigned)
		switch {
		case v.Failure == nil && v.Authenticated:
			fmt.Fprintf(&b, "OK: the framing, the header and every chunk of the archive (%s of plaintext) are authentic\n", humanBytes(v.Bytes))
		case v.Failure == nil:
			fmt.Fprintf(&b, "UNCHECKED: framing, header structure, manifest and prefix match, but nothing was authenticated without a key (exit status %d)\n", ExitUnchecked)
		}
		if _, err := io.WriteString(opts.Out, b.String()); err != nil {
			return err
		}
	}
	switch {
	case noRecipient:
		return fmt.Errorf("verify: %w", explainOpenError(path, ids, v.Failure))
	case v.Failure != nil && imgset.HeaderDamaged(v.Failure):
		return withExitCode(ExitVerify, fmt.Errorf("verify: %s failed: header %s damaged: %w", path, imgset.HeaderName, v.Failure))
	case v.Failure != nil:
		return withExitCode(ExitVerify, fmt.Errorf("verify: %s failed: %w", path, v.Failure))
	case !v.Authenticated:
		return withExitCode(ExitUnchecked, fmt.Errorf("verify: %s: nothing failed, but nothing was authenticated: give a recipient's key with --%s", path, flagTLSKey))
	}
	if err := checkSetID(path, opts.ExpectSetID, v.Header); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	return nil
}

// rekeyArchive changes the recipients of the encrypted archive at path, as
// rekey does for a set: only the header changes (the encrypted body is copied
// byte for byte), or with --rotate everything is encrypted again under a new
// file key. The new archive is written beside the old one, synced and renamed
// over it: path is the old archive or the new one, never a mix.
func rekeyArchive(ctx context.Context, opts rekeyOptions, path string, ro imgset.RekeyOptions) error {
	if opts.Sign.Key != "" || opts.Sign.Cert != "" {
		return usageError(fmt.Errorf("rekey: %s is an archive: archives are not signed (--%s is for image set folders)", path, flagSignKey))
	}
	if !archive.IsSealed(path) {
		return fmt.Errorf("rekey: archive %s is not encrypted, nothing to rekey (imgtool encrypt %s -o OUT): %w", path, path, imgset.ErrNotEncrypted)
	}
	// The file itself is rewritten, not a symbolic link to it.
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("rekey: %w", err)
	}
	cleaned := noteCleaned(opts.Err, path)
	known := ro.Add
	if !ro.Rotate && len(ro.Remove) == 0 {
		var already []string
		if ro.Add, already = newArchiveRecipients(real, ro); len(ro.Add) == 0 {
			removeDeadTemps(real, cleaned) // as any run on the archive does
			return reportUnchanged(opts, path, already)
		}
		if !opts.Quiet && len(already) > 0 {
			fmt.Fprintf(opts.Err, "imgtool: note: already a recipient, left as it is: %s\n", strings.Join(already, "; "))
		}
	}
	if err := ctx.Err(); err != nil {
		return stoppedBefore("rekey", ctx)
	}
	f, err := os.Open(real)
	if err != nil {
		return fmt.Errorf("rekey: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("rekey: %w", err)
	}
	aro := archive.RekeyOptions{Identities: ro.Identities, Add: ro.Add, Remove: ro.Remove, Rotate: ro.Rotate, Algorithm: ro.Algorithm}
	out := fileOutput{path: real, perm: st.Mode().Perm(), inPlace: true, cleaned: cleaned}
	err = writeFileAtomic(ctx, out, func(w io.Writer) error {
		return archive.Rekey(ctx, w, f, st.Size(), aro)
	})
	var se *imgset.StoppedError
	if errors.As(err, &se) {
		return fmt.Errorf("rekey: %w", se)
	}
	if err != nil {
		return fmt.Errorf("rekey: archive %s: %w", path, explainOpenError(path, ro.Identities, err))
	}
	if len(ro.Remove) > 0 && !ro.Rotate {
		fmt.Fprintf(opts.Err, "imgtool: warning: rekey --remove: a removed recipient can still read any old copy of this archive, "+
			"and knows its file key; only --rotate (a new file key) shuts them out of new versions\n")
	}
	if opts.Quiet {
		return nil
	}
	h, err := archive.SealedHeader(real)
	if err != nil {
		return fmt.Errorf("rekey: reading back the new header: %w", err)
	}
	if ro.Rotate {
		fmt.Fprintf(opts.Out, "re-encrypted archive %s under a new file key (set id %s, %s)\n", path, h.SetID, h.Algorithm)
	} else {
		fmt.Fprintf(opts.Out, "rekeyed archive %s: header rewritten, encrypted archive copied unchanged\n", path)
	}
	return writeRecipients(opts.Out, stanzaRecipientLines(h.Stanzas, known))
}

// newArchiveRecipients is newRecipients for an encrypted archive.
func newArchiveRecipients(path string, ro imgset.RekeyOptions) (add []cipher.Recipient, already []string) {
	h, err := archive.SealedHeader(path)
	if err != nil {
		return ro.Add, nil
	}
	return splitRecipients(h, ro)
}
