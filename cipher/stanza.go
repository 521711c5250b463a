package cipher

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// A Stanza is one recipient's section of a header: the file key wrapped for one
// public key. Like age's stanzas, a stanza names its type; unlike them it also names
// its recipient by fingerprint, so a key finds its stanza without trial decryption
// and a wrong key is told apart from a damaged stanza.
type Stanza struct {
	Type        string      // how the body wraps the key, e.g. "x509-rsa-oaep-sha256"
	Fingerprint Fingerprint // the recipient's public key
	Body        []byte      // the wrapped file key
}

// Recipient wraps a file key for one public key, bound to the set c names (see
// WrapContext). Implementations must not reuse randomness between calls.
type Recipient interface {
	Wrap(fileKey []byte, c WrapContext) (*Stanza, error)
}

// Identity recovers the file key from the stanzas of a header whose version and
// set id are c. It returns an error wrapping ErrNoRecipient when no stanza is
// meant for it, so that callers can try the next identity; any other error is
// final (ErrWrongKey: the stanza named this identity but did not open). Stanzas
// of types it does not know are skipped unless they name its fingerprint.
type Identity interface {
	Unwrap(stanzas []*Stanza, c WrapContext) (fileKey []byte, err error)
}

// FingerprintSize is the size of a recipient fingerprint: a SHA-256 digest.
const FingerprintSize = sha256.Size

// Fingerprint names a recipient: the SHA-256 of its DER SubjectPublicKeyInfo.
// For a certificate it is `openssl x509 -pubkey -noout | openssl pkey -pubin
// -outform DER | sha256sum`.
type Fingerprint [FingerprintSize]byte

// String returns the fingerprint as 64 lower-case hex digits.
func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

// ParseFingerprint reads a fingerprint written as 64 hex digits, optionally with
// colons between bytes (as openssl prints digests) and a "sha256:" prefix.
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	t := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:")
	t = strings.ReplaceAll(t, ":", "")
	b, err := hex.DecodeString(t)
	if err != nil || len(b) != FingerprintSize {
		return f, fmt.Errorf("bad fingerprint %q: want 64 hex digits (SHA-256 of the public key)", s)
	}
	copy(f[:], b)
	return f, nil
}

// fingerprintOf hashes a DER SubjectPublicKeyInfo.
func fingerprintOf(spki []byte) Fingerprint { return sha256.Sum256(spki) }

// NoRecipientError says that no stanza of a header names any of the keys tried:
// the set was not encrypted for them. It names every key tried and every
// recipient of the set, and wraps ErrNoRecipient.
type NoRecipientError struct {
	Keys       []Fingerprint // the keys tried, in order
	Recipients []Fingerprint // the recipients the header names
}

func (e *NoRecipientError) Error() string {
	what := "key"
	if len(e.Keys) != 1 {
		what = "keys"
	}
	return fmt.Sprintf("%v: %s %s; the set is for %s", ErrNoRecipient, what, joinFingerprints(e.Keys), joinFingerprints(e.Recipients))
}

func (e *NoRecipientError) Unwrap() error { return ErrNoRecipient }

func joinFingerprints(fps []Fingerprint) string {
	if len(fps) == 0 {
		return "none"
	}
	names := make([]string, len(fps))
	for i, fp := range fps {
		names[i] = fp.String()
	}
	return strings.Join(names, ", ")
}

// noRecipientError reports that none of stanzas names fp.
func noRecipientError(fp Fingerprint, stanzas []*Stanza) error {
	e := &NoRecipientError{Keys: []Fingerprint{fp}}
	for _, s := range stanzas {
		e.Recipients = append(e.Recipients, s.Fingerprint)
	}
	return e
}
