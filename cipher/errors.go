package cipher

import (
	"errors"
	"fmt"
)

// Sentinel errors, for errors.Is. The errors returned carry more detail (the file,
// the offset, the fingerprints involved) and wrap one of these.
var (
	// ErrUnreadableKey: a key or certificate file could not be read or decoded
	// (not PEM, damaged DER, a password-protected key).
	ErrUnreadableKey = errors.New("unreadable key")
	// ErrUnsupportedKey: the file holds something else than a usable key of the
	// right kind: a certificate where a private key was expected, an Ed25519 or DSA
	// key, an RSA key outside MinRSABits..MaxRSABits, a curve other than P-256/P-384.
	ErrUnsupportedKey = errors.New("unsupported key")
	// ErrCertificateValidity: a certificate is expired or not yet valid (see
	// CheckValidity); a set is not encrypted for it unless the caller allows it.
	ErrCertificateValidity = errors.New("certificate outside its validity period")
	// ErrNoRecipient: the identity is a good key, but no stanza of the header names
	// it: the set was not encrypted for this key.
	ErrNoRecipient = errors.New("key is not a recipient of this set")
	// ErrWrongKey: a stanza names the identity's fingerprint, but does not open with
	// its key: the stanza was damaged or forged.
	ErrWrongKey = errors.New("recipient stanza does not open with this key")
	// ErrHeaderAuth: the file key was recovered but the header MAC does not match:
	// the header (parameters, recipients or manifest) was changed after sealing.
	ErrHeaderAuth = errors.New("header authentication failed")
	// ErrChunkAuth: a chunk of an encrypted file failed authentication: a flipped
	// bit, a truncated, reordered, duplicated or foreign chunk, or a renamed file.
	ErrChunkAuth = errors.New("chunk authentication failed")
	// ErrSizeMismatch: an encrypted file's length is not what the manifest's
	// plaintext size encrypts to: the file was truncated or extended.
	ErrSizeMismatch = errors.New("file size does not match the manifest")
	// ErrForeignFile: an encrypted file carries the set id of another set.
	ErrForeignFile = errors.New("file belongs to another set")
	// ErrSignedChunk: a stored chunk (or, in a plain set, a 64 KiB block) is not
	// the one the set's signature lists: changed, swapped or forged since signing.
	ErrSignedChunk = errors.New("stored chunk differs from the signed one")
	// ErrMalformed: the bytes do not follow the format (bad magic, a length out of
	// range, a size that no encryption of the manifest's size can have).
	ErrMalformed = errors.New("malformed encrypted data")
)

// Error describes a failure at a place in a file: which file, the byte offset at
// which the problem was found, what was wrong, and the sentinel it is an instance of.
type Error struct {
	File   string // file name (the manifest name for set files), empty when unknown
	Offset int64  // byte offset from the start of the file, -1 when not meaningful
	Reason string // what was wrong, for humans
	Err    error  // one of the sentinel errors above, or an underlying error
}

func (e *Error) Error() string {
	msg := e.Reason
	if e.Err != nil && e.Reason != e.Err.Error() {
		if msg == "" {
			msg = e.Err.Error()
		} else {
			msg = e.Err.Error() + ": " + msg
		}
	}
	switch {
	case e.File != "" && e.Offset >= 0:
		return fmt.Sprintf("%s: offset %d: %s", e.File, e.Offset, msg)
	case e.File != "":
		return fmt.Sprintf("%s: %s", e.File, msg)
	case e.Offset >= 0:
		return fmt.Sprintf("offset %d: %s", e.Offset, msg)
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// errorf builds an *Error wrapping kind.
func errorf(kind error, file string, off int64, format string, args ...any) *Error {
	return &Error{File: file, Offset: off, Reason: fmt.Sprintf(format, args...), Err: kind}
}
