package cipher

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
)

// Stanza types written by this package.
const (
	StanzaRSA     = "x509-rsa-oaep-sha256" // RSA-OAEP with SHA-256 and MGF1-SHA-256
	StanzaHPKE256 = "x509-hpke-p256"       // HPKE DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM
	StanzaHPKE384 = "x509-hpke-p384"       // HPKE DHKEM(P-384, HKDF-SHA384), HKDF-SHA384, AES-256-GCM
)

// hpkeSuite is the HPKE ciphersuite of one curve.
type hpkeSuite struct {
	stanza string
	kem    hpke.KEM
	kdf    hpke.KDF
	aead   hpke.AEAD
	body   int // size of enc || sealed file key
}

func suiteFor(c ecdh.Curve) (*hpkeSuite, error) {
	switch c {
	case ecdh.P256():
		return &hpkeSuite{StanzaHPKE256, hpke.DHKEM(c), hpke.HKDFSHA256(), hpke.AES256GCM(), 65 + FileKeySize + 16}, nil
	case ecdh.P384():
		return &hpkeSuite{StanzaHPKE384, hpke.DHKEM(c), hpke.HKDFSHA384(), hpke.AES256GCM(), 97 + FileKeySize + 16}, nil
	}
	return nil, fmt.Errorf("%w: ECDSA curve %v (want P-256 or P-384)", ErrUnsupportedKey, c)
}

// X509Recipient is a recipient named by an X.509 certificate with an RSA key
// (wrapped with RSA-OAEP-SHA-256) or an ECDSA P-256/P-384 key (wrapped with HPKE).
type X509Recipient struct {
	cert   *x509.Certificate
	fp     Fingerprint
	rsaPub *rsa.PublicKey
	hpkePk hpke.PublicKey
	suite  *hpkeSuite
}

// NewX509Recipient returns the recipient of a certificate's public key.
func NewX509Recipient(cert *x509.Certificate) (*X509Recipient, error) {
	r, err := recipientOf(cert)
	if err != nil {
		return nil, fmt.Errorf("certificate %q: %w", cert.Subject.String(), err)
	}
	return r, nil
}

// recipientOf is NewX509Recipient with errors that do not name the certificate,
// for callers that name it their own way.
func recipientOf(cert *x509.Certificate) (*X509Recipient, error) {
	spki, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	r := &X509Recipient{cert: cert, fp: fingerprintOf(spki)}
	switch pub := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		if err := checkRSASize(pub.N.BitLen()); err != nil {
			return nil, err
		}
		r.rsaPub = pub
	case *ecdsa.PublicKey:
		epub, err := pub.ECDH()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
		}
		if r.suite, err = suiteFor(epub.Curve()); err != nil {
			return nil, err
		}
		if r.hpkePk, err = hpke.NewDHKEMPublicKey(epub); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
		}
	default:
		return nil, fmt.Errorf("%w: the key is %s (want RSA or ECDSA P-256/P-384)", ErrUnsupportedKey, describeKey(cert.PublicKey))
	}
	return r, nil
}

// Fingerprint returns the SHA-256 of the certificate's SubjectPublicKeyInfo.
func (r *X509Recipient) Fingerprint() Fingerprint { return r.fp }

// Certificate returns the certificate the recipient was made from.
func (r *X509Recipient) Certificate() *x509.Certificate { return r.cert }

// String describes the recipient: key type, subject and fingerprint.
func (r *X509Recipient) String() string {
	return fmt.Sprintf("%s %q %s", describeKey(r.cert.PublicKey), r.cert.Subject.String(), r.fp)
}

// Wrap implements Recipient: RSA-OAEP with the context's label, or HPKE base mode
// with the context's info (which names the recipient) and no associated data.
func (r *X509Recipient) Wrap(fileKey []byte, c WrapContext) (*Stanza, error) {
	if r.rsaPub != nil {
		body, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, r.rsaPub, fileKey, c.rsaLabel())
		if err != nil {
			return nil, err
		}
		return &Stanza{Type: StanzaRSA, Fingerprint: r.fp, Body: body}, nil
	}
	body, err := hpke.Seal(r.hpkePk, r.suite.kdf, r.suite.aead, c.hpkeInfo(r.fp), fileKey)
	if err != nil {
		return nil, err
	}
	return &Stanza{Type: r.suite.stanza, Fingerprint: r.fp, Body: body}, nil
}

// KeyIdentity is the private key of an X509Recipient.
type KeyIdentity struct {
	fp      Fingerprint
	public  crypto.PublicKey
	rsaPriv *rsa.PrivateKey
	hpkeSk  hpke.PrivateKey
	suite   *hpkeSuite
}

// NewKeyIdentity returns the identity of an RSA or ECDSA private key.
func NewKeyIdentity(key crypto.PrivateKey) (*KeyIdentity, error) {
	id := &KeyIdentity{}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if err := checkRSASize(k.N.BitLen()); err != nil {
			return nil, err
		}
		id.rsaPriv, id.public = k, &k.PublicKey
	case *ecdsa.PrivateKey:
		ek, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
		}
		if id.suite, err = suiteFor(ek.Curve()); err != nil {
			return nil, err
		}
		if id.hpkeSk, err = hpke.NewDHKEMPrivateKey(ek); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
		}
		id.public = &k.PublicKey
	default:
		return nil, fmt.Errorf("%w: a %T private key (want RSA or ECDSA P-256/P-384)", ErrUnsupportedKey, key)
	}
	spki, err := x509.MarshalPKIXPublicKey(id.public)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	id.fp = fingerprintOf(spki)
	return id, nil
}

// Fingerprint returns the fingerprint of the identity's public key: the name of
// the recipient it opens.
func (id *KeyIdentity) Fingerprint() Fingerprint { return id.fp }

// String describes the identity: key type and fingerprint.
func (id *KeyIdentity) String() string { return describeKey(id.public) + " " + id.fp.String() }

// Unwrap implements Identity: only the stanza that names the key's fingerprint is
// opened, whatever the others are (of unknown types, say).
func (id *KeyIdentity) Unwrap(stanzas []*Stanza, c WrapContext) ([]byte, error) {
	for _, s := range stanzas {
		if s.Fingerprint != id.fp {
			continue
		}
		key, err := id.unwrapOne(s, c)
		if err != nil {
			return nil, fmt.Errorf("%w (key %s): %v", ErrWrongKey, id.fp, err)
		}
		return key, nil
	}
	return nil, noRecipientError(id.fp, stanzas)
}

func (id *KeyIdentity) unwrapOne(s *Stanza, c WrapContext) ([]byte, error) {
	var key []byte
	var err error
	switch {
	case id.rsaPriv != nil:
		if s.Type != StanzaRSA {
			return nil, fmt.Errorf("stanza type %q for an RSA key", s.Type)
		}
		key, err = rsa.DecryptOAEP(sha256.New(), nil, id.rsaPriv, s.Body, c.rsaLabel())
	default:
		if s.Type != id.suite.stanza {
			return nil, fmt.Errorf("stanza type %q for a %s key", s.Type, id.suite.stanza)
		}
		if len(s.Body) != id.suite.body {
			return nil, fmt.Errorf("stanza body is %d bytes, want %d", len(s.Body), id.suite.body)
		}
		key, err = hpke.Open(id.hpkeSk, id.suite.kdf, id.suite.aead, c.hpkeInfo(id.fp), s.Body)
	}
	if err != nil {
		return nil, err
	}
	if len(key) != FileKeySize {
		return nil, fmt.Errorf("unwrapped key is %d bytes, want %d", len(key), FileKeySize)
	}
	return key, nil
}

func checkRSASize(bits int) error {
	if bits < MinRSABits || bits > MaxRSABits {
		return fmt.Errorf("%w: RSA key of %d bits (want %d to %d)", ErrUnsupportedKey, bits, MinRSABits, MaxRSABits)
	}
	return nil
}

// describeKey names a public key's type, e.g. "RSA-3072" or "ECDSA-P-256".
func describeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA-" + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

// KeyType names the recipient's key type, e.g. "RSA-3072" or "ECDSA-P-256".
func (r *X509Recipient) KeyType() string { return describeKey(r.cert.PublicKey) }

// StanzaKeyType names the key type a stanza was wrapped for, in the words of
// X509Recipient.KeyType, so that a set's recipients read the same as the
// certificates they were made from. An RSA-OAEP body is as long as the modulus,
// which gives the key size; a stanza type of another tool is returned as is.
func StanzaKeyType(s *Stanza) string {
	switch s.Type {
	case StanzaRSA:
		return fmt.Sprintf("RSA-%d", len(s.Body)*8)
	case StanzaHPKE256:
		return "ECDSA-P-256"
	case StanzaHPKE384:
		return "ECDSA-P-384"
	}
	return s.Type
}
