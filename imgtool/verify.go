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

// verifyOptions are the options of imgtool verify.
type verifyOptions struct {
	Dir      string   // -D: the set
	KeyFiles []string // --tls-key; none: check what needs no key
	// ExpectSetID (--expect-set-id) refuses any other set: an older copy put back.
	ExpectSetID string
	Signature   signaturePolicy // --trust, --require-signed
	Quiet       bool
	Out         io.Writer
	Err         io.Writer
}

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "authenticate every file of an encrypted image set (or an encrypted archive) without decrypting it to disk",
		ArgsUsage: " ",
		Description: `Checks the encrypted image set in DIR and writes no plaintext anywhere. With a
recipient's key (--tls-key) it authenticates the header (its recipients,
parameters and manifest) and every chunk of every file; it goes on after a
failure and lists every file that fails, and why: a flipped bit, a truncated,
extended, renamed, swapped, deleted or added file, a file from another set.

Without a key it checks what needs none: the header's structure, the manifest
against the folder (missing, added, truncated or foreign files) and each file's
prefix; it then says what it could not check, and exits 4 if that much passed:
nothing was authenticated (a mismatch it finds may be the file's or the
header's: only a key tells which). Without --tls-key, ` + defaultKeyPath + ` is
used if it exists.

A header that fails authentication is reported as the header, alone: its
manifest cannot be trusted to judge the files.

A plaintext set fails: it carries nothing to authenticate.

DIR may also be a container checkpoint archive (podman container checkpoint
--export, CRI-O's, the kubelet's). An encrypted one (imgtool encrypt ARCHIVE -o
OUT) is checked whole, with the same exit codes: every byte outside its sealed
header and its encrypted original (tar headers, padding, end) must be the one
encrypt writes, then, with a key, the header's MAC and every chunk of the original
are authenticated, decrypted into nothing (no plaintext is written anywhere).
Without a key the framing, the header's structure, the manifest and the
encrypted original's size and prefix are checked (exit 4 if they pass). A plain
archive (tar, tar.gz or tar.zst) fails, as a plain set does: it carries nothing
to authenticate. Archives are not signed: signatures of archives are not
supported, and --require-signed fails for any archive.

Examples:
   imgtool verify -D /tmp/ckpt --tls-key me.key
   imgtool verify -D /tmp/ckpt
   imgtool verify ctr.sealed.tar --tls-key me.key

Exit codes: 0 the header and every chunk of every file are authentic, 1 the set
could not be examined or the key is not a recipient of the set, 2 wrong command
line, 3 the header or files failed verification, 4 no check failed but nothing
was authenticated (no key).`,
		Flags: []cli.Flag{
			imagesDirFlag(),
			tlsKeyFlag(),
			expectSetIDFlag(),
			trustFlag(),
			requireSignedFlag(),
			quietFlag(),
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError(err) },
		Action: func(c *cli.Context) error {
			return runVerify(c.Context, verifyOptions{
				Dir:         c.String(flagImagesDir),
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

// runVerify verifies the set opts.Dir (or the one positional argument).
func runVerify(ctx context.Context, opts verifyOptions, args []string) error {
	dir, err := setDirArg("verify", opts.Dir, args)
	if err != nil {
		return err
	}
	ids, err := identitiesOrDefault(opts.KeyFiles)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if archive.IsArchive(dir) { // a container checkpoint archive (archiveops.go)
		return verifyArchive(ctx, opts, dir, ids)
	}
	// The signature first: who wrote the set, its header, its files' names and
	// sizes. Every stored chunk is checked against it as Verify authenticates it.
	sig, sigErr := checkSignature(dir, opts.Signature, nil)
	if sigErr != nil && ExitCode(sigErr) != ExitVerify {
		return fmt.Errorf("verify: %w", sigErr)
	}
	progress, done := newProgress(opts.Err, opts.Quiet, "verifying")
	rep, err := imgset.Verify(dir, imgset.VerifyOptions{Identities: ids, Signature: sig, Progress: progress})
	done()
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if sig != nil && !rep.Encrypted {
		// A plain set whose signature verified: what is left to say is whether
		// every file is the one signed.
		rep.Problems = slices.DeleteFunc(rep.Problems, func(p imgset.Problem) bool { return errors.Is(p.Err, imgset.ErrNotEncrypted) })
		rep.Unchecked = nil
	}
	if sig != nil && sigErr == nil {
		// A file that is not the one signed fails the signature check.
		for _, p := range rep.Problems {
			if signedFileError(p.Err) {
				sigErr = withExitCode(ExitVerify, signatureFailure(p.Err, false))
				break
			}
		}
	}
	if !opts.Quiet || !rep.OK() || sigErr != nil {
		if err := printReport(opts.Out, rep, signatureReport(dir, sig, sigErr), sig != nil && sigErr == nil); err != nil {
			return err
		}
	}
	if sigErr != nil {
		return fmt.Errorf("verify: %w", sigErr)
	}
	if sig != nil && !rep.Encrypted && rep.OK() {
		// A plain set's id is its signature's, verified.
		if err := checkSetID(dir, opts.ExpectSetID, &cipher.Header{SetID: sig.SetID}); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		return nil
	}
	if opts.ExpectSetID != "" && rep.Encrypted {
		if err := checkSetID(dir, opts.ExpectSetID, &cipher.Header{SetID: rep.SetID}); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
	} else if opts.ExpectSetID != "" {
		return fmt.Errorf("verify: %w", checkSetID(dir, opts.ExpectSetID, nil))
	}
	return reportError(dir, ids, rep)
}

// printReport prints what Verify found: the set's parameters and recipients,
// each problem as "FAIL file: why", what could not be checked, and a last line
// that says what the exit status will.
func printReport(w io.Writer, rep *imgset.Report, signature string, signed bool) error {
	var b strings.Builder
	if rep.Encrypted {
		fmt.Fprintf(&b, "%s: encrypted with %s, %d files in the manifest, set id %s\n", rep.Dir, rep.Algorithm, rep.Files, rep.SetID)
		writeRecipients(&b, stanzaRecipientLines(rep.Stanzas, nil))
	} else {
		fmt.Fprintf(&b, "%s: %d files, not encrypted\n", rep.Dir, rep.Files)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(&b, "FAIL %s: %s\n", p.File, problemReason(p))
	}
	for _, u := range rep.Unchecked {
		fmt.Fprintf(&b, "not checked: %s\n", u)
	}
	fmt.Fprintln(&b, signature)
	switch {
	case rep.OK() && rep.Authenticated:
		fmt.Fprintf(&b, "OK: the header and all %d files (%s of plaintext) are authentic\n", rep.Files, humanBytes(rep.Bytes))
	case rep.OK() && signed && rep.Encrypted:
		fmt.Fprintf(&b, "UNCHECKED: every stored chunk is the one signed, but no chunk was authenticated without a key (exit status %d)\n", ExitUnchecked)
	case rep.OK():
		fmt.Fprintf(&b, "UNCHECKED: structure, manifest and file prefixes match, but nothing was authenticated without a key (exit status %d)\n", ExitUnchecked)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// problemReason is a problem's error without the file name it repeats.
func problemReason(p imgset.Problem) string {
	msg := p.Err.Error()
	for _, prefix := range []string{p.File + ": ", "image set " + p.File + ": "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return msg
}

// reportError maps a report to the command's outcome: a key that is no recipient
// of the set says nothing about the set (ExitError); any other problem is a failed
// verification (ExitVerify), a damaged header named as such; an encrypted set
// that passed without a key was not authenticated (ExitUnchecked).
func reportError(dir string, ids []cipher.Identity, rep *imgset.Report) error {
	if rep.OK() && !rep.Authenticated {
		return withExitCode(ExitUnchecked, fmt.Errorf("verify: %s: nothing failed, but nothing was authenticated: give a recipient's key with --%s", dir, flagTLSKey))
	}
	if rep.OK() {
		return nil
	}
	if len(rep.Problems) == 1 && errors.Is(rep.Problems[0].Err, cipher.ErrNoRecipient) {
		return fmt.Errorf("verify: %w", explainOpenError(dir, ids, rep.Problems[0].Err))
	}
	for _, p := range rep.Problems {
		if p.File == imgset.HeaderName && imgset.HeaderDamaged(p.Err) {
			return withExitCode(ExitVerify, fmt.Errorf("verify: %s failed: header %s damaged: %w", dir, imgset.HeaderName, p.Err))
		}
	}
	files := map[string]bool{}
	for _, p := range rep.Problems {
		files[p.File] = true
	}
	return withExitCode(ExitVerify, fmt.Errorf("verify: %s failed: %d problem(s) in %d file(s), listed above", dir, len(rep.Problems), len(files)))
}

// signatureReport says who signed the set and whether that was verified, or why
// the signature failed: a line of verify's report.
func signatureReport(dir string, sig *cipher.Signature, sigErr error) string {
	var line string
	switch {
	case sigErr != nil:
		line = fmt.Sprintf("FAIL %s: %v", imgset.SignName, sigErr)
	case sig != nil:
		line = signerLine(sig, true) + ": every stored chunk is the one signed"
	default:
		if s, err := imgset.ReadSignature(dir); err == nil {
			line = signerLine(s, false)
		} else if imgset.HasSignature(dir) {
			line = fmt.Sprintf("FAIL %s: %v", imgset.SignName, err)
		} else {
			line = "not signed"
		}
	}
	return line
}
