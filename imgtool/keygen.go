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
	CertPath string // --cert: where the certificate goes
	KeyPath  string // --key: where the private key goes
	Type     string // --type: one of cipher.KeyTypes
	CN       string // --cn: the subject's common name
	Quiet    bool
	Out      io.Writer
}

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
CA works the same way: only its public key is used.

Key types: ` + strings.Join(types, ", ") + ` (default ` + types[0] + `; ECDSA keys use HPKE, RSA keys RSA-OAEP-SHA-256).

Examples:
   imgtool keygen --cert me.pem --key me.key
   imgtool keygen --cert ops.pem --key ops.key --type rsa3072 --cn "ops team"

Exit codes: 0 success, 1 failure (a file exists: nothing written), 2 wrong command line.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagCert, Aliases: []string{"tls-cert"}, Usage: "write the certificate to `CERT.pem`"},
			&cli.StringFlag{Name: "key", Aliases: []string{flagTLSKey}, Usage: "write the private key to `KEY.pem`"},
			&cli.StringFlag{Name: "type", Value: types[0], Usage: "key `TYPE`: " + strings.Join(types, ", ")},
			&cli.StringFlag{Name: "cn", Value: "imgtool", Usage: "the certificate's subject common `NAME`"},
			quietFlag(),
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError(err) },
		Action: func(c *cli.Context) error {
			return runKeygen(c.Context, keygenOptions{
				CertPath: c.String(flagCert),
				KeyPath:  c.String("key"),
				Type:     c.String("type"),
				CN:       c.String("cn"),
				Quiet:    c.Bool(flagQuiet),
				Out:      outWriter(c),
			}, c.Args().Slice())
		},
	}
}

// runKeygen makes the key and certificate and writes them, never over an existing
// file, and never one without the other.
func runKeygen(ctx context.Context, opts keygenOptions, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Errorf("keygen: unexpected argument %q (use --cert and --key)", args[0]))
	}
	if opts.CertPath == "" || opts.KeyPath == "" {
		return usageError(errors.New("keygen: need both --cert CERT.pem and --key KEY.pem (the files to write)"))
	}
	if opts.CertPath == opts.KeyPath {
		return usageError(errors.New("keygen: --cert and --key must be different files"))
	}
	if !slices.Contains(cipher.KeyTypes, cipher.KeyType(opts.Type)) {
		return usageError(fmt.Errorf("keygen: --type %q: want one of %v", opts.Type, cipher.KeyTypes))
	}
	// Check before the (slow, for RSA) generation; the writes below check again.
	for _, p := range []string{opts.CertPath, opts.KeyPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("keygen: %s exists; refusing to overwrite it", p)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	certPEM, keyPEM, err := cipher.Keygen(cipher.KeygenOptions{Type: cipher.KeyType(opts.Type), CommonName: opts.CN})
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := writeNewFile(opts.KeyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := writeNewFile(opts.CertPath, certPEM, 0o644); err != nil {
		os.Remove(opts.KeyPath)
		return fmt.Errorf("keygen: %w", err)
	}
	if opts.Quiet {
		return nil
	}
	rs, err := cipher.ParseRecipients(certPEM)
	if err != nil {
		return fmt.Errorf("keygen: reading back the certificate: %w", err)
	}
	_, err = fmt.Fprintf(opts.Out, "wrote certificate %s and private key %s (keep it secret)\nrecipient: %s\n",
		opts.CertPath, opts.KeyPath, rs[0])
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
