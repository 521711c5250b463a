package imgtool

// Signatures: imgtool sign, the flags that sign what a command writes
// (--sign-key, --sign-cert) and those that check who signed what a command
// reads (--trust, --require-signed, --allow-unsigned). See docs/format.md,
// Signatures.

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// defaultTrustPath is the trust file read when no --trust is given and it exists,
// beside CRIUsec's default key and certificate.
const defaultTrustPath = "/etc/pki/criu/trust.pem"

const (
	flagTrust         = "trust"
	flagRequireSigned = "require-signed"
	flagAllowUnsigned = "allow-unsigned"
	flagSignKey       = "sign-key"
	flagSignCert      = "sign-cert"
)

// trustFlag is --trust: the certificates whose signatures are accepted.
func trustFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: flagTrust, Usage: "trust signatures by the signer certificate, or by signers the CA " +
		"certificate issued, in `CERT.pem` (PEM or DER); repeatable. Default: " + defaultTrustPath + " if it exists"}
}

// requireSignedFlag is --require-signed: refuse a set without a valid signature
// from a trusted signer, plain or encrypted.
func requireSignedFlag() cli.Flag {
	return &cli.BoolFlag{Name: flagRequireSigned, Usage: "refuse a set, plain or encrypted, without a valid signature from a trusted signer (--" + flagTrust + ")"}
}

// allowUnsignedFlag is --allow-unsigned (restore): run an encrypted set without a
// valid signature from a trusted signer.
func allowUnsignedFlag() cli.Flag {
	return &cli.BoolFlag{Name: flagAllowUnsigned, Usage: "restore an encrypted set without a valid signature from a trusted " +
		"signer (anyone with a recipient's certificate can make an encrypted set)"}
}

// signFlags are --sign-key and --sign-cert, for the commands that write a set.
func signFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagSignKey, Usage: "sign the set with the private key `KEY.pem` (ECDSA, Ed25519 or RSA; needs --" + flagSignCert + ")"},
		&cli.StringFlag{Name: flagSignCert, Usage: "the signer's certificate `CERT.pem`, then any intermediate CAs (PEM or DER)"},
	}
}

// signOptions are --sign-key and --sign-cert.
type signOptions struct {
	Key, Cert string
}

func signOptionsFrom(c *cli.Context) signOptions {
	return signOptions{Key: c.String(flagSignKey), Cert: c.String(flagSignCert)}
}

// loadSigner reads the signer of --sign-key and --sign-cert for cmd: nil when
// neither is given, a usage error when only one is.
func loadSigner(cmd string, o signOptions) (*cipher.Signer, error) {
	switch {
	case o.Key == "" && o.Cert == "":
		return nil, nil
	case o.Key == "" || o.Cert == "":
		return nil, usageError(fmt.Errorf("%s: --%s and --%s go together", cmd, flagSignKey, flagSignCert))
	}
	s, err := cipher.ReadSigner(o.Key, o.Cert)
	if err != nil {
		var fe *cipher.FileError
		if errors.As(err, &fe) && fe.Path == o.Key {
			return nil, fmt.Errorf("%s: --%s %s: %w", cmd, flagSignKey, o.Key, fe.Err)
		} else if errors.As(err, &fe) {
			return nil, fmt.Errorf("%s: --%s %s: %w", cmd, flagSignCert, o.Cert, fe.Err)
		}
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return s, nil
}

// loadTrust reads the trust anchors of paths, or of defaultTrustPath when paths
// is empty and it exists.
func loadTrust(paths []string) ([]*x509.Certificate, error) {
	if len(paths) == 0 && fileExists(defaultTrustPath) {
		paths = []string{defaultTrustPath}
	}
	var out []*x509.Certificate
	for _, p := range paths {
		certs, err := cipher.ReadTrust(p)
		if err != nil {
			return nil, keyFileError(flagTrust, p, "certificate", err)
		}
		out = append(out, certs...)
	}
	return out, nil
}

// signaturePolicy is what a reader demands of a set's signature.
type signaturePolicy struct {
	Trust []string // --trust
	// Require refuses a set without a valid signature from a trusted signer.
	Require bool
	// AllowUnsigned turns a missing or failing signature into a warning.
	AllowUnsigned bool
}

// checkSignature applies p to the set in dir, before anything of it is
// decrypted: without a signature, it refuses when required; with one, it
// checks it when trust anchors are given or it is required: the signer, the
// signature, the header, the files' names, sizes and prefixes. The stored chunks
// are not read here: the signature returned must be passed on to the reads
// (imgset's OpenOptions, VerifyOptions, DecryptOptions), which check every chunk
// against it as they read it. With --allow-unsigned the chunks are all checked
// here, so that a failure is a warning (given to warn) before anything is used.
// A failure is ExitVerify, one line naming what is missing or wrong. sig is the
// verified signature, nil when none was verified.
func checkSignature(dir string, p signaturePolicy, warn io.Writer) (sig *cipher.Signature, err error) {
	trust, err := loadTrust(p.Trust)
	if err != nil {
		return nil, err
	}
	if !imgset.HasSignature(dir) {
		if p.Require && !p.AllowUnsigned {
			return nil, withExitCode(ExitVerify, fmt.Errorf("image set %s has no signature (%s): it is required; "+
				"sign it with imgtool sign, or --%s to use it anyway", dir, imgset.SignName, flagAllowUnsigned))
		}
		return nil, nil
	}
	if len(trust) == 0 && !p.Require {
		return nil, nil // nothing to judge it by: readers say it is not verified
	}
	check := imgset.CheckSignature
	if p.AllowUnsigned {
		check = imgset.VerifySignature
	}
	sig, err = check(dir, imgset.SignatureOptions{Trust: trust})
	if err == nil {
		return sig, nil
	}
	err = signatureFailure(err, len(trust) == 0)
	if p.AllowUnsigned {
		if warn != nil {
			fmt.Fprintf(warn, "imgtool: warning: %v (--%s: going on)\n", err, flagAllowUnsigned)
		}
		return nil, nil
	}
	return nil, withExitCode(ExitVerify, err)
}

// signatureFailure says what a failed signature check means, in one line.
func signatureFailure(err error, noTrust bool) error {
	what := "bad signature"
	switch {
	case errors.Is(err, cipher.ErrUntrustedSigner):
		what = "untrusted signer"
		if noTrust {
			what += " (no --" + flagTrust + " given, and no " + defaultTrustPath + ")"
		}
	case signedFileError(err):
		what = "a file differs from the signed one"
	case errors.Is(err, cipher.ErrMalformed):
		what = "malformed signature"
	}
	return fmt.Errorf("signature check failed: %s: %w", what, err)
}

// explainSigned says, of an error that is a stored chunk found not to be the one
// signed as it was read, that the signature check failed (exit 3); any other
// error is returned as it is.
func explainSigned(err error) error {
	if err == nil || !signedFileError(err) || strings.HasPrefix(err.Error(), "signature check failed") {
		return err
	}
	return withExitCode(ExitVerify, signatureFailure(err, false))
}

// signedFileError reports whether err is a stored file or chunk that is not the
// one signed (found up front, or as it was read).
func signedFileError(err error) bool {
	return errors.Is(err, imgset.ErrSignedFile) || errors.Is(err, cipher.ErrSignedChunk)
}

// signerLine says who signed a set and when, for verify and inspect.
func signerLine(sig *cipher.Signature, verified bool) string {
	state := "verified"
	if !verified {
		state = "NOT verified: no --" + flagTrust
	}
	return fmt.Sprintf("signed by %q (%s) at %s, set id %s (%s)", sig.Signer().Subject.String(), sig.Algorithm,
		sig.Created.UTC().Format(time.RFC3339), sig.SetID, state)
}

// signCommand is imgtool sign.
func signCommand() *cli.Command {
	return &cli.Command{
		Name:      "sign",
		Usage:     "sign an image set, plain or encrypted, in place",
		ArgsUsage: " ",
		Description: `Signs the image set in DIR with the private key --sign-key, whose certificate
(and any intermediate CAs after it) is --sign-cert: it hashes every 64 KiB chunk of
every stored file of the set (the ciphertext of an encrypted set) and its header,
and writes ` + imgset.SignName + ` into the set, atomically (written and synced beside,
then renamed in). An existing signature is replaced. Nothing else changes.

Readers check it against their trust anchors (--trust, default ` + defaultTrustPath + `):
restore refuses an encrypted set without a valid signature from a trusted signer.
Make a signing identity with imgtool keygen --usage sign.

Examples:
   imgtool keygen --usage sign --cert signer.pem --key signer.key
   imgtool sign -D /tmp/ckpt --sign-key signer.key --sign-cert signer.pem
   imgtool verify -D /tmp/ckpt --trust signer.pem

Exit codes: 0 success, 1 failure (the set is as it was), 2 wrong command line.`,
		Flags:        append([]cli.Flag{imagesDirFlag(), quietFlag()}, signFlags()...),
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError(err) },
		Action: func(c *cli.Context) error {
			return runSign(c.Context, c.String(flagImagesDir), signOptionsFrom(c), c.Bool(flagQuiet), outWriter(c), c.Args().Slice())
		},
	}
}

// runSign signs the set dir in place.
func runSign(ctx context.Context, dir string, o signOptions, quiet bool, out io.Writer, args []string) error {
	dir, err := setDirArg("sign", dir, args)
	if err != nil {
		return err
	}
	if o.Key == "" || o.Cert == "" {
		return usageError(fmt.Errorf("sign: need --%s KEY.pem and --%s CERT.pem", flagSignKey, flagSignCert))
	}
	signer, err := loadSigner("sign", o)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	sig, err := imgset.Sign(dir, signer)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if !quiet {
		_, err = fmt.Fprintf(out, "%s: %d files signed by %q (%s), set id %s\n", dir, len(sig.Files),
			sig.Signer().Subject.String(), sig.Algorithm, sig.SetID)
	}
	return err
}

// printSigner prints who signed the set in dir, for inspect, once openSet has
// checked the signature as k asks: verified when a trust anchor was given (a
// failure would have stopped openSet), else said to be unverified. Nothing for an
// unsigned set.
func printSigner(w io.Writer, dir string, k keyOptions) error {
	sig, err := imgset.ReadSignature(dir)
	if err != nil {
		if imgset.HasSignature(dir) {
			_, err = fmt.Fprintf(w, "signature: unreadable: %v\n", err)
			return err
		}
		return nil
	}
	trust, _ := loadTrust(k.Trust)
	_, err = fmt.Fprintf(w, "signature: %s\n", signerLine(sig, len(trust) > 0 || k.RequireSigned))
	return err
}
