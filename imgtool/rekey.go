package imgtool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// rekeyOptions are the options of imgtool rekey.
type rekeyOptions struct {
	Dir      string           // -D: the encrypted set
	KeyFiles []string         // --tls-key: a current recipient's key
	Certs    []string         // --cert: recipients to add (with --rotate: the new recipients)
	Remove   []string         // --remove: fingerprints of recipients to drop
	Rotate   bool             // --rotate: re-encrypt under a new file key
	Cipher   string           // --cipher: the AEAD of a rotated set; "" keeps it
	Load     recipientOptions // --allow-expired, and where --cert warnings go
	Sign     signOptions      // --sign-key, --sign-cert: re-sign the set
	Quiet    bool
	Out      io.Writer
	Err      io.Writer
}

func rekeyCommand() *cli.Command {
	return &cli.Command{
		Name:      "rekey",
		Usage:     "add or remove recipients of an encrypted image set or archive, or rotate its key",
		ArgsUsage: " ",
		Description: `Changes who can open the encrypted set in DIR. --tls-key is the private key of a
current recipient; --cert adds the recipients of a certificate file (repeatable);
--remove drops a recipient by the fingerprint that verify, inspect and encrypt
print (SHA-256 of its public key, 64 hex digits; repeatable).

Without --rotate only the header ` + imgset.HeaderName + ` is rewritten (the file key and
every data file stay as they are), atomically, in a time that does not depend on
the set's size. But whoever held a removed key, or read the old header with a
leaked key, may have kept the file key: to shut them out, --rotate re-encrypts the
whole set under a new file key for exactly the --cert recipients (atomically, like
encrypt). --cipher changes the AEAD of a rotated set.

Without --tls-key, ` + defaultKeyPath + ` is used if it exists.

A signature (` + imgset.SignName + `) covers the header, so a rekey invalidates it: with
--sign-key and --sign-cert the set is signed again; without them the signature is
removed, with a warning.

DIR may also be an encrypted container checkpoint archive (imgtool encrypt
ARCHIVE -o OUT), with the same flags and warnings: without --rotate only its
header changes (the encrypted original's bytes are copied unchanged), with
--rotate the original is decrypted, every chunk authenticated, and encrypted
again under a new file key. The new archive is written to a temporary file in
the same folder, synced and renamed over the old one (which keeps its
permissions): a failure or an interruption (SIGINT, SIGTERM, SIGHUP) leaves the
old archive as it was and nothing beside it. decrypt of the result gives back the
original archive byte for byte. Archives are not signed (--sign-key is refused).

Examples:
   imgtool rekey -D /tmp/ckpt --tls-key me.key --cert colleague.pem
   imgtool rekey -D /tmp/ckpt --tls-key me.key --remove 3f2a...c9
   imgtool rekey -D /tmp/ckpt --tls-key me.key --rotate --cert me.pem --cert new-ops.pem
   imgtool rekey ctr.sealed.tar --tls-key me.key --remove 3f2a...c9

Exit codes: 0 success, 1 failure (nothing changed), 2 wrong command line.`,
		Flags: []cli.Flag{
			imagesDirFlag(),
			tlsKeyFlag(),
			certFlag("add the recipients of `CERT.pem`; repeatable (with --rotate: the new recipients, all of them)"),
			&cli.StringSliceFlag{Name: "remove", Usage: "drop the recipient with this `FINGERPRINT`; repeatable"},
			&cli.BoolFlag{Name: "rotate", Usage: "re-encrypt the whole set under a new file key, for exactly the --cert recipients"},
			cipherFlag("with --rotate, the new AEAD", ""),
			allowExpiredFlag(),
			quietFlag(),
			signFlags()[0], signFlags()[1],
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError(err) },
		Action: func(c *cli.Context) error {
			return runRekey(c.Context, rekeyOptions{
				Dir:      c.String(flagImagesDir),
				KeyFiles: c.StringSlice(flagTLSKey),
				Certs:    c.StringSlice(flagCert),
				Remove:   c.StringSlice("remove"),
				Rotate:   c.Bool("rotate"),
				Cipher:   c.String(flagCipher),
				Load:     recipientOptionsFrom(c),
				Sign:     signOptionsFrom(c),
				Quiet:    c.Bool(flagQuiet),
				Out:      outWriter(c),
				Err:      errWriter(c),
			}, c.Args().Slice())
		},
	}
}

// runRekey changes the recipients of the set opts.Dir (or the one positional argument).
func runRekey(ctx context.Context, opts rekeyOptions, args []string) error {
	dir, err := setDirArg("rekey", opts.Dir, args)
	if err != nil {
		return err
	}
	ro, err := rekeyRequest(opts)
	if err != nil {
		return err
	}
	if archive.IsArchive(dir) { // a container checkpoint archive (archiveops.go)
		return rekeyArchive(ctx, opts, dir, ro)
	}
	if ro.Signer, err = loadSigner("rekey", opts.Sign); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return stoppedBefore("rekey", ctx)
	}
	wasSigned := imgset.HasSignature(dir)
	known := ro.Add // every --cert, for the subjects of the recipients printed
	// Only a pure addition can be a no-op; with --remove, imgset checks the whole
	// edit (a recipient both added and removed is refused there).
	if !ro.Rotate && len(ro.Remove) == 0 {
		var already []string
		if ro.Add, already = newRecipients(dir, ro); len(ro.Add) == 0 {
			return reportUnchanged(opts, dir, already)
		}
		if !opts.Quiet && len(already) > 0 {
			fmt.Fprintf(opts.Err, "imgtool: note: already a recipient, left as it is: %s\n", strings.Join(already, "; "))
		}
	}
	ip, err := resolveInPlace(dir)
	if err != nil {
		return fmt.Errorf("rekey: %w", err)
	}
	progress, done := newProgress(opts.Err, opts.Quiet, "re-encrypting")
	ro.Progress, ro.Cleaned = progress, noteCleaned(opts.Err, dir)
	err = imgset.RekeyContext(ctx, dir, ro)
	done()
	if errors.Is(err, imgset.ErrNotEncrypted) {
		return fmt.Errorf("rekey: image set %s has no %s, nothing to rekey (use encrypt): %w", dir, imgset.HeaderName, imgset.ErrNotEncrypted)
	}
	if err != nil {
		return fmt.Errorf("rekey: %w", explainOpenError(dir, ro.Identities, err))
	}
	if opts.Rotate { // only --rotate rewrites the folder; a header change keeps it
		ip.note(opts.Err)
	}
	if wasSigned && ro.Signer == nil {
		fmt.Fprintf(opts.Err, "imgtool: warning: rekey: the set's signature %s covered the old header and was removed: "+
			"the set is now unsigned (sign it again with --%s and --%s, or imgtool sign)\n", imgset.SignName, flagSignKey, flagSignCert)
	}
	if len(ro.Remove) > 0 && !opts.Rotate {
		// The file key is unchanged: whoever held a removed key still opens every copy
		// of the set made before, and could open this one from an old header.
		fmt.Fprintf(opts.Err, "imgtool: warning: rekey --remove: a removed recipient can still read any old copy of this set, "+
			"and knows its file key; only --rotate (a new file key) shuts them out of new versions\n")
	}
	if opts.Quiet {
		return nil
	}
	return printRekeyed(opts.Out, ip.abs, opts.Rotate, known)
}

// newRecipients splits the recipients to add into those the set does not have
// yet and the lines of those it has. It decides only once the key given opened
// the header (so that an unauthentic header cannot make rekey skip anyone); when
// it cannot tell, every recipient is new, and Rekey reports why.
func newRecipients(dir string, ro imgset.RekeyOptions) (add []cipher.Recipient, already []string) {
	h, err := imgset.ReadHeader(dir)
	if err != nil {
		return ro.Add, nil
	}
	return splitRecipients(h, ro)
}

// splitRecipients is newRecipients once the header h is read (a set's or an archive's).
func splitRecipients(h *cipher.Header, ro imgset.RekeyOptions) (add []cipher.Recipient, already []string) {
	if _, err := h.Unwrap(ro.Identities...); err != nil {
		return ro.Add, nil
	}
	for _, r := range ro.Add {
		if f, ok := r.(interface{ Fingerprint() cipher.Fingerprint }); ok && slices.Contains(h.Recipients(), f.Fingerprint()) {
			already = append(already, certRecipientLine(r))
		} else {
			add = append(add, r)
		}
	}
	return add, already
}

// reportUnchanged ends a rekey that had nothing to do: every --cert was already
// a recipient. The header is not rewritten.
func reportUnchanged(opts rekeyOptions, dir string, already []string) error {
	if opts.Quiet {
		return nil
	}
	_, err := fmt.Fprintf(opts.Out, "rekey: nothing changed in %s: already a recipient: %s\n", dir, strings.Join(already, "; "))
	return err
}

// rekeyRequest checks the command line and loads its keys and certificates.
func rekeyRequest(opts rekeyOptions) (imgset.RekeyOptions, error) {
	var ro imgset.RekeyOptions
	if opts.Rotate && len(opts.Certs) == 0 {
		return ro, usageError(fmt.Errorf("rekey --rotate: need the --%s of every recipient of the new key", flagCert))
	}
	if !opts.Rotate && len(opts.Certs) == 0 && len(opts.Remove) == 0 {
		return ro, usageError(fmt.Errorf("rekey: nothing to do: give --%s to add, --remove to drop, or --rotate", flagCert))
	}
	if opts.Cipher != "" {
		if !opts.Rotate {
			return ro, usageError(fmt.Errorf("rekey: --%s needs --rotate (the data stays as it is otherwise)", flagCipher))
		}
		alg, err := parseCipher("rekey", opts.Cipher)
		if err != nil {
			return ro, err
		}
		ro.Algorithm = alg
	}
	ro.Rotate = opts.Rotate
	for _, s := range opts.Remove {
		fp, err := cipher.ParseFingerprint(s)
		if err != nil {
			return ro, usageError(fmt.Errorf("rekey: --remove %q: %w", s, err))
		}
		ro.Remove = append(ro.Remove, fp)
	}
	var err error
	if ro.Add, err = loadRecipients(opts.Certs, opts.Load); err != nil {
		return ro, fmt.Errorf("rekey: %w", err)
	}
	if ro.Identities, err = identitiesOrDefault(opts.KeyFiles); err != nil {
		return ro, fmt.Errorf("rekey: %w", err)
	}
	if len(ro.Identities) == 0 {
		return ro, usageError(fmt.Errorf("rekey: need the private key of a current recipient: --%s KEY.pem", flagTLSKey))
	}
	return ro, nil
}

// printRekeyed says what the set is now encrypted for (read back from the new
// header, which this process just sealed).
func printRekeyed(w io.Writer, dir string, rotated bool, known []cipher.Recipient) error {
	h, err := imgset.ReadHeader(dir)
	if err != nil {
		return fmt.Errorf("rekey: reading back the new header: %w", err)
	}
	if rotated {
		fmt.Fprintf(w, "re-encrypted %s under a new file key (set id %s, %s)\n", dir, h.SetID, h.Algorithm)
	} else {
		fmt.Fprintf(w, "rekeyed %s: header rewritten, data files untouched\n", dir)
	}
	return writeRecipients(w, stanzaRecipientLines(h.Stanzas, known))
}
