package imgtool

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
)

// encryptOptions are the options of imgtool encrypt.
type encryptOptions struct {
	Dir    string           // -D: the plaintext set
	Output string           // -o: where the encrypted set goes; "" is in place
	Certs  []string         // --cert: the recipients' certificates
	Cipher string           // --cipher: the AEAD's name
	Load   recipientOptions // --allow-expired, and where --cert warnings go
	Sign   signOptions      // --sign-key, --sign-cert
	Quiet  bool
	Out    io.Writer // the summary
	Err    io.Writer // progress and notes
}

func encryptCommand() *cli.Command {
	return &cli.Command{
		Name:      "encrypt",
		Usage:     "encrypt an image set for one or more X.509 certificates",
		ArgsUsage: " ",
		Description: `Encrypts every file of the plaintext image set in DIR for the certificates given
with --cert (RSA 2048 to 8192 bits, or ECDSA P-256/P-384; a file may hold several):
each holder of a matching private key can open it. The set keeps its file names
and gains the sealed header ` + imgset.HeaderName + ` (recipients, parameters and the manifest of
every file, authenticated). See docs/format.md (part 2).

Without -o the set is encrypted in place, atomically: the encrypted set is built
beside DIR and swapped in, so a crash or a kill at any moment leaves either the
whole plaintext set or the whole encrypted one in DIR. Two in-place operations
on one set never interleave: the second fails at once. The files and the folder
keep their permission bits. The old plaintext files are deleted, not shredded: to
never have plaintext on disk, encrypt at dump time (dump -e).
With -o OUT (a new or empty folder) DIR is left as it is.

--sign-key and --sign-cert sign the encrypted set (` + imgset.SignName + `, written
into it before it is put in place): restore refuses an encrypted set without a
valid signature from a signer it trusts. A signature of the plaintext set does
not carry over.

SIGINT, SIGTERM or SIGHUP stop the command before it puts the new set in place:
it removes what it wrote and says so (exit 1). What a SIGKILL or a crash leaves
beside the target (.DIR.imgtool-* or .OUT.imgtool-*) is removed by the next run
writing the same target, which says so.

Without --cert, ` + defaultCertPath + ` is used if it exists (CRIUsec's default).

Examples:
   imgtool keygen --cert me.pem --key me.key
   imgtool encrypt -D /tmp/ckpt --cert me.pem
   imgtool encrypt -D /tmp/ckpt --cert ops.pem --cert backup.pem -o /tmp/ckpt.sealed
   imgtool encrypt -D /tmp/ckpt --cert me.pem --cipher chacha20-poly1305

Exit codes: 0 success, 1 failure or interrupted (nothing changed), 2 wrong command line.`,
		Flags: []cli.Flag{
			imagesDirFlag(),
			&cli.StringFlag{Name: flagOutput, Aliases: []string{"o"}, Usage: "write the encrypted set to `OUT` (new or empty) instead of in place"},
			certFlag("recipient certificate `CERT.pem`; repeatable (default " + defaultCertPath + " if it exists)"),
			cipherFlag("the AEAD", cipher.AES256GCM.String()),
			allowExpiredFlag(),
			quietFlag(),
			signFlags()[0], signFlags()[1],
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError(err) },
		Action: func(c *cli.Context) error {
			return runEncrypt(c.Context, encryptOptions{
				Dir:    c.String(flagImagesDir),
				Output: c.String(flagOutput),
				Certs:  c.StringSlice(flagCert),
				Cipher: c.String(flagCipher),
				Load:   recipientOptionsFrom(c),
				Sign:   signOptionsFrom(c),
				Quiet:  c.Bool(flagQuiet),
				Out:    outWriter(c),
				Err:    errWriter(c),
			}, c.Args().Slice())
		},
	}
}

// runEncrypt encrypts the set opts.Dir (or the one positional argument).
func runEncrypt(ctx context.Context, opts encryptOptions, args []string) error {
	dir, err := setDirArg("encrypt", opts.Dir, args)
	if err != nil {
		return err
	}
	if archive.IsArchive(dir) { // a container checkpoint archive (archivecrypt.go)
		if opts.Sign != (signOptions{}) {
			return usageError(fmt.Errorf("encrypt: %s is an archive: archives are not signed (--%s is for image set folders)", dir, flagSignKey))
		}
		alg, err := parseCipher("encrypt", opts.Cipher)
		if err != nil {
			return err
		}
		recipients, err := recipientsOrDefault("encrypt", opts.Certs, opts.Load)
		if err != nil {
			return err
		}
		return encryptArchive(ctx, opts, dir, alg, recipients)
	}
	// Every CRIU image set has an inventory: without one this is no set (an empty or
	// wrong folder), and sealing it would only hide the mistake.
	inventory := image.KindByName("INVENTORY").File
	if st, err := os.Stat(dir); err == nil && st.IsDir() && !fileExists(filepath.Join(dir, inventory)) {
		return fmt.Errorf("encrypt: %s is not an image set (no %s)", dir, inventory)
	}
	alg, err := parseCipher("encrypt", opts.Cipher)
	if err != nil {
		return err
	}
	recipients, err := recipientsOrDefault("encrypt", opts.Certs, opts.Load)
	if err != nil {
		return err
	}
	signer, err := loadSigner("encrypt", opts.Sign)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return stoppedBefore("encrypt", ctx)
	}
	if opts.Output != "" {
		warnLeftovers(opts.Err, dir)
	}
	ip, err := resolveInPlace(dir)
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	progress, done := newProgress(opts.Err, opts.Quiet, "encrypting")
	err = imgset.EncryptContext(ctx, dir, imgset.EncryptOptions{
		Recipients: recipients, Algorithm: alg, Output: opts.Output, Progress: progress, Signer: signer,
		Cleaned: noteCleaned(opts.Err, cmp.Or(opts.Output, dir)),
	})
	done()
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
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
	fmt.Fprintf(opts.Out, "encrypted %s with %s: %d files (header included), %s\n", where, alg, files, humanBytes(size))
	return printRecipients(opts.Out, recipients)
}

// printRecipients lists recipients, one a line, as every command prints them: key type,
// subject, fingerprint.
func printRecipients(w io.Writer, rs []cipher.Recipient) error {
	lines := make([]string, len(rs))
	for i, r := range rs {
		lines[i] = certRecipientLine(r)
	}
	return writeRecipients(w, lines)
}
