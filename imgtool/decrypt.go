package imgtool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/imgset"
)

// decryptOptions are the options of imgtool decrypt.
type decryptOptions struct {
	Dir      string   // -D: the encrypted set
	Output   string   // -o: where the plaintext set goes; "" is in place
	KeyFiles []string // --tls-key
	// ExpectSetID (--expect-set-id) refuses any other set: an older copy put back.
	ExpectSetID string
	Signature   signaturePolicy // --trust, --require-signed
	Quiet       bool
	Out         io.Writer
	Err         io.Writer
}

func decryptCommand() *cli.Command {
	return &cli.Command{
		Name:      "decrypt",
		Usage:     "decrypt an encrypted image set back to a plain CRIU image set",
		ArgsUsage: " ",
		Description: `Decrypts the encrypted image set in DIR with a private key whose certificate is
one of the set's recipients (PEM PKCS#1, PKCS#8 or SEC1; --tls-key may be repeated,
the keys are tried in order). The header, the manifest and every chunk of every
file are authenticated before any plaintext is put in place: if any fails,
nothing changes and the error names the file.

Without -o the set is decrypted in place, atomically (the same guarantee as
encrypt: DIR is at every moment the whole encrypted set or the whole plaintext
one). With -o OUT (a new or empty folder) DIR is left as it is. SIGINT, SIGTERM
or SIGHUP stop it and remove the plaintext written so far (exit 1); what a SIGKILL
or a crash leaves beside the target is removed by the next run writing it.

Without --tls-key, ` + defaultKeyPath + ` is used if it exists (CRIUsec's default).
To read an encrypted set without writing plaintext to disk, use x, inspect or
restore with --tls-key instead.

With --trust (or ` + defaultTrustPath + `) a signature of the set is checked first;
--require-signed refuses a set without a valid one (exit 3).

Examples:
   imgtool decrypt -D /tmp/ckpt --tls-key me.key
   imgtool decrypt -D /tmp/ckpt --tls-key me.key -o /tmp/ckpt.plain

Exit codes: 0 success, 1 failure (wrong, unreadable or non-recipient key, damaged
set, interrupted: nothing changed), 2 wrong command line, 3 the signature check
failed.`,
		Flags: []cli.Flag{
			imagesDirFlag(),
			&cli.StringFlag{Name: flagOutput, Aliases: []string{"o"}, Usage: "write the plaintext set to `OUT` (new or empty) instead of in place"},
			tlsKeyFlag(),
			expectSetIDFlag(),
			trustFlag(),
			requireSignedFlag(),
			quietFlag(),
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError(err) },
		Action: func(c *cli.Context) error {
			return runDecrypt(c.Context, decryptOptions{
				Dir:         c.String(flagImagesDir),
				Output:      c.String(flagOutput),
				KeyFiles:    c.StringSlice(flagTLSKey),
				ExpectSetID: c.String(flagExpectSetID),
				Signature:   signaturePolicy{Trust: c.StringSlice(flagTrust), Require: c.Bool(flagRequireSigned)},
				Quiet:       c.Bool(flagQuiet),
				Out:         outWriter(c),
				Err:         errWriter(c),
			}, c.Args().Slice())
		},
	}
}

// runDecrypt decrypts the set opts.Dir (or the one positional argument).
func runDecrypt(ctx context.Context, opts decryptOptions, args []string) error {
	dir, err := setDirArg("decrypt", opts.Dir, args)
	if err != nil {
		return err
	}
	ids, err := identitiesOrDefault(opts.KeyFiles)
	if err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	if len(ids) == 0 {
		return usageError(fmt.Errorf("decrypt: need the private key: --%s KEY.pem", flagTLSKey))
	}
	if archive.IsSealed(dir) { // an encrypted container checkpoint archive (archivecrypt.go)
		return decryptArchive(ctx, opts, dir, ids)
	}
	if opts.ExpectSetID != "" {
		// The id read here is checked again when decrypt authenticates the header.
		h, err := imgset.ReadHeader(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("decrypt: %w", err)
		}
		if err := checkSetID(dir, opts.ExpectSetID, h); err != nil {
			return fmt.Errorf("decrypt: %w", err)
		}
	}
	// Who wrote the set, before anything of it is decrypted: checked when a trust
	// anchor is given (--trust, or the default trust file) or --require-signed.
	sig, err := checkSignature(dir, opts.Signature, nil)
	if err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	if ctx.Err() != nil {
		return stoppedBefore("decrypt", ctx)
	}
	if opts.Output != "" {
		warnLeftovers(opts.Err, dir)
	}
	ip, err := resolveInPlace(dir)
	if err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	progress, done := newProgress(opts.Err, opts.Quiet, "decrypting")
	err = imgset.DecryptContext(ctx, dir, imgset.DecryptOptions{
		Identities: ids, Output: opts.Output, Progress: progress, Signature: sig,
		Cleaned: noteCleaned(opts.Err, cmp.Or(opts.Output, dir)),
	})
	done()
	if errors.Is(err, imgset.ErrNotEncrypted) {
		return fmt.Errorf("decrypt: image set %s has no %s, nothing to decrypt: %w", dir, imgset.HeaderName, imgset.ErrNotEncrypted)
	}
	if err != nil {
		return fmt.Errorf("decrypt: %w", explainSigned(explainOpenError(dir, ids, err)))
	}
	where, counted := dir, ip.abs
	if opts.Output != "" {
		where, counted = opts.Output, opts.Output
	} else {
		ip.note(opts.Err)
	}
	if opts.Quiet {
		return nil
	}
	files, size := dirBytes(counted)
	_, err = fmt.Fprintf(opts.Out, "decrypted %s: %d files, %s, every chunk authenticated\n", where, files, humanBytes(size))
	return err
}
