package imgtool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/cipher"
)

// keygenOptions are the options of imgtool keygen.
type keygenOptions struct {
	CertPath string // --cert: where the certificate goes; "-" is Out
	KeyPath  string // --key: where the private key goes; "-" is Out
	Type     string // --type: one of cipher.KeyTypes, in any case
	CN       string // --cn: the subject's common name
	Usage    string // --usage: "encrypt" (a recipient, the default) or "sign" (a signer)
	Quiet    bool
	Out      io.Writer // "-", and the summary when nothing goes to "-"
	Err      io.Writer // the summary when a file goes to "-"
}

// The values of keygen --usage.
const (
	usageEncrypt = "encrypt"
	usageSign    = "sign"
)

// stdoutPath is the --cert or --key that means standard output.
const stdoutPath = "-"

func keygenCommand() *cli.Command {
	types := make([]string, len(cipher.KeyTypes))
	for i, t := range cipher.KeyTypes {
		types[i] = string(t)
	}
	return &cli.Command{
		Name:      "keygen",
		Usage:     "make a private key and a self-signed certificate for encrypt and decrypt",
		ArgsUsage: " ",
		Description: `Writes a new private key (PEM PKCS#8, mode 0600) and a self-signed X.509
certificate for it (valid ten years): give the certificate to encrypt (--cert)
and keep the key for decrypt, verify, x, inspect and restore (--tls-key). It
refuses to overwrite either file. For production, a certificate from your own
CA works the same way: only its public key is used. Either file may be "-",
standard output (not both); the summary then goes to standard error.

Key types: ` + strings.Join(types, ", ") + ` (in any case; default ` + types[0] + `; ECDSA keys use HPKE, RSA keys RSA-OAEP-SHA-256).

--usage sign makes a signing identity instead (imgtool sign, --sign-key): KeyUsage
DigitalSignature only, not a CA; type p256 (default), ed25519, p384 or rsa3072.
Readers trust it with --trust CERT.pem (or put it in ` + defaultTrustPath + `).

Examples:
   imgtool keygen --cert me.pem --key me.key
   imgtool keygen --cert ops.pem --key ops.key --type rsa3072 --cn "ops team"
   imgtool keygen --cert - --key me.key > me.pem
   imgtool keygen --usage sign --cert signer.pem --key signer.key

Exit codes: 0 success, 1 failure (a file exists: nothing written), 2 wrong command line.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagCert, Aliases: []string{"tls-cert"}, Usage: "write the certificate to `CERT.pem`"},
			&cli.StringFlag{Name: "key", Aliases: []string{flagTLSKey}, Usage: "write the private key to `KEY.pem`"},
			&cli.StringFlag{Name: "type", Value: types[0], Usage: "key `TYPE`: " + strings.Join(types, ", ")},
			&cli.StringFlag{Name: "cn", Value: "imgtool", Usage: "the certificate's subject common `NAME`"},
			&cli.StringFlag{Name: "usage", Value: usageEncrypt, Usage: "`USE` of the key: " + usageEncrypt + " (a recipient) or " +
				usageSign + " (a signer for --sign-key: KeyUsage DigitalSignature only, not a CA; type p256 or ed25519)"},
			quietFlag(),
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError(err) },
		Action: func(c *cli.Context) error {
			return runKeygen(c.Context, keygenOptions{
				CertPath: c.String(flagCert),
				KeyPath:  c.String("key"),
				Type:     c.String("type"),
				CN:       c.String("cn"),
				Usage:    c.String("usage"),
				Quiet:    c.Bool(flagQuiet),
				Out:      outWriter(c),
				Err:      errWriter(c),
			}, c.Args().Slice())
		},
	}
}

// runKeygen makes the key and certificate and writes them, never over an existing
// file, and never one without the other.
func runKeygen(ctx context.Context, opts keygenOptions, args []string) error {
	typ, err := checkKeygen(opts, args)
	if err != nil {
		return err
	}
	// Check before the (slow, for RSA) generation; the writes below check again.
	for _, p := range []string{opts.CertPath, opts.KeyPath} {
		if _, err := os.Lstat(p); err == nil && p != stdoutPath {
			return fmt.Errorf("keygen: %s exists; refusing to overwrite it", p)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	sign := opts.Usage == usageSign
	certPEM, keyPEM, err := cipher.Keygen(cipher.KeygenOptions{Type: typ, CommonName: opts.CN, Sign: sign})
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := writeKeygenFiles(opts, certPEM, keyPEM); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if opts.Quiet {
		return nil
	}
	return printKeygen(opts, certPEM)
}

// checkKeygen checks the command line and returns the key type.
func checkKeygen(opts keygenOptions, args []string) (cipher.KeyType, error) {
	typ := cipher.KeyType(strings.ToLower(opts.Type))
	switch {
	case len(args) > 0:
		return "", usageError(fmt.Errorf("keygen: unexpected argument %q (use --cert and --key)", args[0]))
	case opts.CertPath == "" || opts.KeyPath == "":
		return "", usageError(errors.New("keygen: need both --cert CERT.pem and --key KEY.pem (the files to write)"))
	case opts.CertPath == stdoutPath && opts.KeyPath == stdoutPath:
		return "", usageError(errors.New("keygen: --cert and --key cannot both be - (standard output): one of them must be a file"))
	case opts.CertPath == opts.KeyPath:
		return "", usageError(errors.New("keygen: --cert and --key must be different files"))
	case opts.Usage != "" && opts.Usage != usageEncrypt && opts.Usage != usageSign:
		return "", usageError(fmt.Errorf("keygen: --usage %q: want %s or %s", opts.Usage, usageEncrypt, usageSign))
	case opts.Usage == usageSign && !slices.Contains(cipher.SignKeyTypes, typ):
		return "", usageError(fmt.Errorf("keygen: --type %q: a signer's key is one of %v", opts.Type, cipher.SignKeyTypes))
	case opts.Usage != usageSign && !slices.Contains(cipher.KeyTypes, typ):
		return "", usageError(fmt.Errorf("keygen: --type %q: want one of %v", opts.Type, cipher.KeyTypes))
	}
	return typ, nil
}

// writeKeygenFiles writes the key and the certificate: the file first, then what
// goes to standard output, so that a failure leaves neither.
func writeKeygenFiles(opts keygenOptions, certPEM, keyPEM []byte) error {
	type out struct {
		path string
		data []byte
		mode fs.FileMode
	}
	outs := []out{{opts.KeyPath, keyPEM, 0o600}, {opts.CertPath, certPEM, 0o644}}
	if opts.KeyPath == stdoutPath {
		outs[0], outs[1] = outs[1], outs[0]
	}
	if err := writeNewFile(outs[0].path, outs[0].data, outs[0].mode); err != nil {
		return err
	}
	var err error
	if outs[1].path == stdoutPath {
		_, err = opts.Out.Write(outs[1].data)
	} else {
		err = writeNewFile(outs[1].path, outs[1].data, outs[1].mode)
	}
	if err != nil {
		os.Remove(outs[0].path)
	}
	return err
}

// printKeygen says what was written and the recipient made: on Out, unless a
// file went there (then on Err, so that the PEM stays clean).
func printKeygen(opts keygenOptions, certPEM []byte) error {
	var line string
	if opts.Usage == usageSign {
		certs, err := cipher.ParseTrust(certPEM)
		if err != nil {
			return fmt.Errorf("keygen: reading back the certificate: %w", err)
		}
		line = fmt.Sprintf("signer: %q (give the certificate to readers' --%s, the key to --%s)", certs[0].Subject.String(), flagTrust, flagSignKey)
	} else {
		rs, err := cipher.ParseRecipients(certPEM)
		if err != nil {
			return fmt.Errorf("keygen: reading back the certificate: %w", err)
		}
		line = "recipient: " + certRecipientLine(rs[0])
	}
	w, name := opts.Out, func(p string) string { return p }
	if opts.CertPath == stdoutPath || opts.KeyPath == stdoutPath {
		w = opts.Err
		name = func(p string) string {
			if p == stdoutPath {
				return "to standard output"
			}
			return p
		}
	}
	_, err := fmt.Fprintf(w, "wrote certificate %s and private key %s (keep it secret)\n%s\n",
		name(opts.CertPath), name(opts.KeyPath), line)
	return err
}

// writeNewFile creates path (failing if it exists), writes data and syncs it; on
// failure nothing is left.
func writeNewFile(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; refusing to overwrite it", path)
	}
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
