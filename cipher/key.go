package cipher

import (
	"crypto/aes"
	stdcipher "crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// Algorithm names the AEAD that seals the chunks of every file of a set.
type Algorithm uint16

const (
	// AES256GCM is AES-256 in Galois/Counter Mode: the fast path on CPUs with AES
	// instructions, and the default.
	AES256GCM Algorithm = 1
	// ChaCha20Poly1305 is the RFC 8439 AEAD: constant time in software, the choice
	// for CPUs without AES instructions.
	ChaCha20Poly1305 Algorithm = 2
)

// String returns the algorithm's name as the docs and the CLI spell it.
func (a Algorithm) String() string {
	switch a {
	case AES256GCM:
		return "aes-256-gcm"
	case ChaCha20Poly1305:
		return "chacha20-poly1305"
	}
	return fmt.Sprintf("algorithm-%d", uint16(a))
}

// ParseAlgorithm is the inverse of Algorithm.String.
func ParseAlgorithm(s string) (Algorithm, error) {
	for _, a := range []Algorithm{AES256GCM, ChaCha20Poly1305} {
		if s == a.String() {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown AEAD %q (want aes-256-gcm or chacha20-poly1305)", s)
}

func (a Algorithm) valid() bool { return a == AES256GCM || a == ChaCha20Poly1305 }

// newAEAD instantiates the algorithm with a 32-byte key.
func (a Algorithm) newAEAD(key []byte) (stdcipher.AEAD, error) {
	switch a {
	case AES256GCM:
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return stdcipher.NewGCM(block)
	case ChaCha20Poly1305:
		return chacha20poly1305.New(key)
	}
	return nil, fmt.Errorf("unknown AEAD %d", uint16(a))
}

// FileKeySize is the size of the random key of a set, wrapped once per recipient.
const FileKeySize = 32

// SetIDSize is the size of the random identifier of a set.
const SetIDSize = 16

// SetID is the random identifier of a set, written in its header and at the start of
// each of its files. It salts every key derived from the file key, so two sets never
// share a key even if they shared a file key.
type SetID [SetIDSize]byte

// String returns the id in lower-case hex.
func (id SetID) String() string { return hex.EncodeToString(id[:]) }

// Domain-separation labels of the key schedule (see docs/format.md (part 2)).
const (
	labelHeaderMAC = "imgtool-seal/v1 header mac"
	labelPayload   = "imgtool-seal/v1 payload"
	labelRSA       = "imgtool-seal/v1 rsa-oaep-sha256"
	labelHPKE      = "imgtool-seal/v1 hpke"
)

// SetKey is everything needed to encrypt or decrypt the files of one set: the file
// key, the set id and the AEAD. It is created by NewSetKey for a new set, or
// recovered from a header by Header.Unwrap.
type SetKey struct {
	fileKey   [FileKeySize]byte
	id        SetID
	algorithm Algorithm
}

// NewSetKey returns a fresh random file key and set id for a new set sealed with alg.
func NewSetKey(alg Algorithm) (*SetKey, error) {
	if !alg.valid() {
		return nil, fmt.Errorf("unknown AEAD %d", uint16(alg))
	}
	k := &SetKey{algorithm: alg}
	rand.Read(k.fileKey[:])
	rand.Read(k.id[:])
	return k, nil
}

// newSetKeyFrom builds a SetKey from known parts (tests and unwrapping).
func newSetKeyFrom(fileKey []byte, id SetID, alg Algorithm) *SetKey {
	k := &SetKey{id: id, algorithm: alg}
	copy(k.fileKey[:], fileKey)
	return k
}

// ID returns the set id.
func (k *SetKey) ID() SetID { return k.id }

// Algorithm returns the AEAD that seals the set's chunks.
func (k *SetKey) Algorithm() Algorithm { return k.algorithm }

// Wrap wraps the file key for each recipient, in order.
func (k *SetKey) Wrap(recipients ...Recipient) ([]*Stanza, error) {
	stanzas := make([]*Stanza, 0, len(recipients))
	for i, r := range recipients {
		s, err := r.Wrap(k.fileKey[:])
		if err != nil {
			return nil, fmt.Errorf("wrapping the file key for recipient %d: %w", i+1, err)
		}
		stanzas = append(stanzas, s)
	}
	return stanzas, nil
}

// macKey derives the key of the header MAC.
func (k *SetKey) macKey() []byte {
	key, err := hkdf.Key(sha256.New, k.fileKey[:], k.id[:], labelHeaderMAC, 32)
	if err != nil {
		panic("cipher: HKDF failed: " + err.Error()) // only on absurd lengths
	}
	return key
}

// headerMAC returns HMAC-SHA-256 of the header bytes under the MAC key.
func (k *SetKey) headerMAC(signed []byte) []byte {
	h := hmac.New(sha256.New, k.macKey())
	h.Write(signed)
	return h.Sum(nil)
}

// payloadKey derives the key that seals the chunks of the file called name. The info
// string binds the AEAD, the chunk size and the name, so a file renamed, or read
// with other parameters, does not open.
func (k *SetKey) payloadKey(name string) []byte {
	info := make([]byte, 0, len(labelPayload)+1+2+4+len(name))
	info = append(info, labelPayload...)
	info = append(info, 0)
	info = binary.LittleEndian.AppendUint16(info, uint16(k.algorithm))
	info = binary.LittleEndian.AppendUint32(info, ChunkSize)
	info = append(info, name...)
	key, err := hkdf.Key(sha256.New, k.fileKey[:], k.id[:], string(info), 32)
	if err != nil {
		panic("cipher: HKDF failed: " + err.Error())
	}
	return key
}

// fileAEAD returns the AEAD instance for the file called name.
func (k *SetKey) fileAEAD(name string) (stdcipher.AEAD, error) {
	aead, _, err := k.fileCipher(name, false)
	return aead, err
}

// fileCipher returns the AEAD instance for the file called name and, with
// withAuth and where the algorithm has one, the checker that authenticates its
// chunks without decrypting them.
func (k *SetKey) fileCipher(name string, withAuth bool) (stdcipher.AEAD, *tagAuth, error) {
	if err := checkName(name); err != nil {
		return nil, nil, err
	}
	key := k.payloadKey(name)
	aead, err := k.algorithm.newAEAD(key)
	if err != nil || !withAuth {
		return aead, nil, err
	}
	return aead, newTagAuth(k.algorithm, key, aead), nil
}
