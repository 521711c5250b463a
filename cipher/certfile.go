package cipher

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"time"
)

// Key and certificate files: PEM (any number of blocks) or DER (one private key, or
// one or more concatenated certificates, as openssl -outform DER writes them).

// FileError is an error about a key or certificate file. It names the file once:
// the error it wraps never repeats the path.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// SkippedCertificate is a certificate of a file that names no recipient, and why.
type SkippedCertificate struct {
	Index  int // 1-based position in the file
	Cert   *x509.Certificate
	Reason string
}

// String names the certificate and says why it was skipped, for a warning.
func (s SkippedCertificate) String() string {
	return fmt.Sprintf("certificate %d %q: %s", s.Index, s.Cert.Subject.String(), s.Reason)
}

// Bundle is what a certificate file holds: its recipients, and the certificates
// that are not recipients (with a reason), so that a caller can say so rather
// than drop them silently.
type Bundle struct {
	Recipients []*X509Recipient
	Skipped    []SkippedCertificate
}

// ParseBundle reads the certificates of PEM or DER data.
//
// A file may hold several recipients' certificates, or a certificate chain (a
// leaf and the CAs that issued it, as PKIs hand them out). A CA certificate
// (BasicConstraints CA:TRUE) is taken as a recipient only when the data holds no
// other kind: with a chain, only the leaves are recipients, so that encrypting
// "for fullchain.pem" does not also encrypt for the CA's key. A file of CA
// certificates only (such as self-signed certificates, which OpenSSL marks CA)
// gives all of them. A certificate whose key cannot be a recipient (Ed25519, a
// weak RSA key) is skipped when the file holds a usable one, and is the error
// when it holds none.
func ParseBundle(data []byte) (*Bundle, error) {
	certs, err := parseCertificates(data)
	if err != nil {
		return nil, err
	}
	var leaves, cas []int
	for i, c := range certs {
		if isCA(c) {
			cas = append(cas, i)
		} else {
			leaves = append(leaves, i)
		}
	}
	b := &Bundle{}
	use := leaves
	if len(leaves) == 0 {
		use = cas
	} else {
		for _, i := range cas {
			b.Skipped = append(b.Skipped, SkippedCertificate{i + 1, certs[i], "a CA certificate (CA:TRUE) beside leaf certificates: not a recipient"})
		}
	}
	var firstErr error
	for _, i := range use {
		r, err := recipientOf(certs[i])
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("certificate %q: %w", certs[i].Subject.String(), err)
			}
			b.Skipped = append(b.Skipped, SkippedCertificate{i + 1, certs[i], "not usable: " + err.Error()})
			continue
		}
		b.Recipients = append(b.Recipients, r)
	}
	if len(b.Recipients) == 0 {
		if len(certs) == 1 {
			return nil, firstErr
		}
		return nil, fmt.Errorf("none of the %d certificates is usable: %w", len(certs), firstErr)
	}
	slices.SortFunc(b.Skipped, func(a, b SkippedCertificate) int { return a.Index - b.Index })
	return b, nil
}

// ParseRecipients returns the recipients of PEM or DER certificate data (see
// ParseBundle, which also says which certificates were skipped).
func ParseRecipients(data []byte) ([]*X509Recipient, error) {
	b, err := ParseBundle(data)
	if err != nil {
		return nil, err
	}
	return b.Recipients, nil
}

// ReadBundle reads a certificate file (see ParseBundle). Its errors are
// *FileError.
func ReadBundle(path string) (*Bundle, error) {
	data, err := readKeyFile(path)
	if err == nil {
		var b *Bundle
		if b, err = ParseBundle(data); err == nil {
			return b, nil
		}
	}
	return nil, &FileError{Path: path, Err: err}
}

// ReadRecipients reads the recipients of a certificate file (see ReadBundle).
func ReadRecipients(path string) ([]*X509Recipient, error) {
	b, err := ReadBundle(path)
	if err != nil {
		return nil, err
	}
	return b.Recipients, nil
}

// isPEM reports whether data holds a PEM block: anything else is taken as DER.
func isPEM(data []byte) bool { return bytes.Contains(data, []byte("-----BEGIN ")) }

// parseCertificates returns every certificate of PEM or DER data, in order.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	if !isPEM(data) {
		return parseDERCertificates(data)
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: certificate %d: %v", ErrUnreadableKey, len(certs)+1, err)
			}
			certs = append(certs, cert)
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("%w: found a %s where a certificate was expected", ErrUnsupportedKey, block.Type)
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE block", ErrUnreadableKey)
	}
	return certs, nil
}

// parseDERCertificates reads DER certificates, telling a DER private key apart.
func parseDERCertificates(der []byte) ([]*x509.Certificate, error) {
	certs, err := x509.ParseCertificates(der)
	if err == nil && len(certs) > 0 {
		return certs, nil
	}
	if _, kerr := parseDERKey(der); kerr == nil {
		return nil, fmt.Errorf("%w: found a DER private key where a certificate was expected", ErrUnsupportedKey)
	}
	return nil, fmt.Errorf("%w: neither PEM nor a DER certificate", ErrUnreadableKey)
}

// ParseIdentity reads the first private key of PEM data (PKCS#1 "RSA PRIVATE
// KEY", PKCS#8 "PRIVATE KEY" or SEC1 "EC PRIVATE KEY"), or a DER key in one of
// those encodings.
func ParseIdentity(data []byte) (*KeyIdentity, error) {
	if !isPEM(data) {
		return parseDERIdentity(data)
	}
	rest := data
	sawCert := false
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if _, ok := block.Headers["Proc-Type"]; ok {
			return nil, fmt.Errorf("%w: password-protected PEM (%s); decrypt it first", ErrUnreadableKey, block.Type)
		}
		var key any
		var err error
		switch block.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("%w: password-protected PKCS#8 key; decrypt it first", ErrUnreadableKey)
		case "CERTIFICATE", "PUBLIC KEY":
			sawCert = true
			continue
		default: // EC PARAMETERS and other companions
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrUnreadableKey, block.Type, err)
		}
		return NewKeyIdentity(key)
	}
	if sawCert {
		return nil, fmt.Errorf("%w: a certificate or public key, not a private key", ErrUnsupportedKey)
	}
	return nil, fmt.Errorf("%w: no PEM private key block", ErrUnreadableKey)
}

// parseDERIdentity reads a DER private key, telling a DER certificate or public
// key apart.
func parseDERIdentity(der []byte) (*KeyIdentity, error) {
	key, err := parseDERKey(der)
	if err == nil {
		return NewKeyIdentity(key)
	}
	if _, cerr := x509.ParseCertificate(der); cerr == nil {
		return nil, fmt.Errorf("%w: a DER certificate, not a private key", ErrUnsupportedKey)
	}
	if _, perr := x509.ParsePKIXPublicKey(der); perr == nil {
		return nil, fmt.Errorf("%w: a DER public key, not a private key", ErrUnsupportedKey)
	}
	return nil, fmt.Errorf("%w: neither PEM nor a DER private key (PKCS#8, PKCS#1 or SEC1)", ErrUnreadableKey)
}

// parseDERKey tries the three DER encodings of a private key.
func parseDERKey(der []byte) (any, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return x509.ParseECPrivateKey(der)
}

// ReadIdentity reads a private key file (see ParseIdentity). Its errors are
// *FileError.
func ReadIdentity(path string) (*KeyIdentity, error) {
	data, err := readKeyFile(path)
	if err == nil {
		var id *KeyIdentity
		if id, err = ParseIdentity(data); err == nil {
			return id, nil
		}
	}
	return nil, &FileError{Path: path, Err: err}
}

// CheckValidity returns an error wrapping ErrCertificateValidity when now is
// outside the certificate's validity period, saying which end it is past.
func CheckValidity(cert *x509.Certificate, now time.Time) error {
	const day = "2006-01-02"
	switch {
	case now.After(cert.NotAfter):
		return fmt.Errorf("%w: certificate %q expired on %s", ErrCertificateValidity, cert.Subject.String(), cert.NotAfter.UTC().Format(day))
	case now.Before(cert.NotBefore):
		return fmt.Errorf("%w: certificate %q is not valid before %s", ErrCertificateValidity, cert.Subject.String(), cert.NotBefore.UTC().Format(day))
	}
	return nil
}

// maxKeyFile bounds a key or certificate file: a chain of a few certificates.
const maxKeyFile = 1 << 20

// readKeyFile reads a small regular file. Its errors do not name the file: the
// callers wrap them in a *FileError, which does.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreadableKey, withoutPath(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreadableKey, withoutPath(err))
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxKeyFile {
		return nil, fmt.Errorf("%w: not a regular file of at most %d bytes", ErrUnreadableKey, maxKeyFile)
	}
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreadableKey, withoutPath(err))
	}
	return data, nil
}

// withoutPath drops the "open PATH: " of an *fs.PathError: the file is named by
// the *FileError around it.
func withoutPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// isCA reports whether a certificate is a CA's: BasicConstraints CA:TRUE.
func isCA(cert *x509.Certificate) bool { return cert.BasicConstraintsValid && cert.IsCA }
