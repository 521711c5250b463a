package cipher

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"
)

// KeyType selects the key Keygen makes.
type KeyType string

// Key types Keygen makes.
const (
	KeyRSA2048 KeyType = "rsa2048"
	KeyRSA3072 KeyType = "rsa3072"
	KeyRSA4096 KeyType = "rsa4096"
	KeyP256    KeyType = "p256"    // ECDSA P-256 (HPKE recipient); the default
	KeyP384    KeyType = "p384"    // ECDSA P-384 (HPKE recipient)
	KeyEd25519 KeyType = "ed25519" // Ed25519: signing identities only
)

// SignKeyTypes lists the key types Keygen accepts for a signing identity, the
// default first.
var SignKeyTypes = []KeyType{KeyP256, KeyEd25519, KeyP384, KeyRSA3072}

// KeyTypes lists the key types Keygen accepts, the default first.
var KeyTypes = []KeyType{KeyP256, KeyP384, KeyRSA2048, KeyRSA3072, KeyRSA4096}

// KeygenOptions describes the certificate Keygen makes.
type KeygenOptions struct {
	Type       KeyType       // default KeyP256
	CommonName string        // subject CN; default "imgtool"
	Validity   time.Duration // default ten years
	// Sign makes a signing identity (imgtool sign, --sign-key): KeyUsage
	// DigitalSignature only, not a CA. Otherwise a recipient's key is made.
	Sign bool
}

// Keygen makes a new private key and a self-signed certificate for it, both PEM:
// the certificate is what encrypt takes (--cert), the key (PKCS#8) what decrypt
// takes (--tls-key).
func Keygen(opts KeygenOptions) (certPEM, keyPEM []byte, err error) {
	if opts.Type == "" {
		opts.Type = KeyP256
	}
	if opts.CommonName == "" {
		opts.CommonName = "imgtool"
	}
	if opts.Validity <= 0 {
		opts.Validity = 10 * 365 * 24 * time.Hour
	}
	key, err := generateKey(opts.Type)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	// A recipient's certificate: its key wraps (RSA-OAEP) or agrees (ECDH, in HPKE) file
	// keys and does nothing else. No CertSign: the certificate is not a CA (CA:FALSE), and
	// a key that may sign certificates must not be handed out as an encryption key.
	usage := x509.KeyUsageKeyAgreement
	if _, ok := key.(*rsa.PrivateKey); ok {
		usage = x509.KeyUsageKeyEncipherment
	}
	if opts.Sign {
		// A signer's certificate signs sets and nothing else: no encryption, no
		// certificates (CA:FALSE).
		usage = x509.KeyUsageDigitalSignature
	} else if opts.Type == KeyEd25519 {
		return nil, nil, fmt.Errorf("%w: an Ed25519 key can only sign (a signing identity), not be a recipient", ErrUnsupportedKey)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CommonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(opts.Validity),
		KeyUsage:              usage,
		BasicConstraintsValid: true,
	}
	pub := key.(crypto.Signer).Public()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	return certPEM, keyPEM, nil
}

func generateKey(t KeyType) (crypto.PrivateKey, error) {
	switch t {
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case KeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	case KeyP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("unknown key type %q (want one of %v)", t, KeyTypes)
}
