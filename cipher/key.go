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
	"sync"

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

// Versions of the format (the header's version field; see docs/format.md, part 2).
const (
	// HeaderVersion is the version this package writes.
	HeaderVersion = 2
	// MinHeaderVersion is the oldest version it reads. v1 sets are read, never
	// written: their files have no nonce of their own (see FileNonce).
	MinHeaderVersion = 1
)

// FileNonceSize is the size of a file's random nonce.
const FileNonceSize = 16

// FileNonce is the random nonce of one file of a v2 set, drawn when the file is
// created and recorded in the manifest. It is part of the file's payload key, so
// every writing of a file, even of the same name in the same set under the same
// file key, has a key of its own: no rewrite can ever reuse an AEAD nonce. It is
// zero in v1, whose payload keys depend on the name alone.
type FileNonce [FileNonceSize]byte

// labels are the domain-separation strings of one version's key schedule.
type labels struct{ headerMAC, payload, rsa, hpke string }

func labelsOf(version int) labels {
	if version == 1 {
		return labels{"imgtool-seal/v1 header mac", "imgtool-seal/v1 payload", "imgtool-seal/v1 rsa-oaep-sha256", "imgtool-seal/v1 hpke"}
	}
	return labels{"imgtool-seal/v2 header mac", "imgtool-seal/v2 payload", "imgtool-seal/v2 rsa-oaep-sha256", "imgtool-seal/v2 hpke"}
}

// WrapContext is what a stanza is bound to: the version of its header and the set
// id. From v2 on the set id is in the RSA-OAEP label and in the HPKE info, so a
// stanza opens in no other set; v1 binds neither.
type WrapContext struct {
	Version int
	SetID   SetID
}

// rsaLabel is the OAEP label of the context.
func (c WrapContext) rsaLabel() []byte {
	l := []byte(labelsOf(c.Version).rsa)
	if c.Version >= 2 {
		l = append(append(l, 0), c.SetID[:]...)
	}
	return l
}

// hpkeInfo is the HPKE info of a stanza for the recipient fp.
func (c WrapContext) hpkeInfo(fp Fingerprint) []byte {
	info := append(append([]byte(labelsOf(c.Version).hpke), 0), fp[:]...)
	if c.Version >= 2 {
		info = append(info, c.SetID[:]...)
	}
	return info
}

// OpenKey opens the files of one set: the file key, the set id, the AEAD and the
// version, recovered from a header by Header.Unwrap. It only decrypts: nothing
// made from a header can encrypt, so no file can be written under a file key that
// already sealed files (a nonce reused). It can wrap the same file key for more
// recipients and reseal the header it came from (Header.Reseal), which rekey does.
type OpenKey struct {
	fileKey   [FileKeySize]byte
	id        SetID
	algorithm Algorithm
	version   int
}

// SetKey is the key of a new set, from NewSetKey: it encrypts files (each with a
// nonce of its own), seals the header, and opens what it sealed.
type SetKey struct {
	OpenKey

	mu    sync.Mutex
	files map[FileNonce]nonceUse // the nonces drawn by NewFile
}

// nonceUse is a nonce drawn for a file: its name, and whether a writer took it.
type nonceUse struct {
	name  string
	taken bool
}

// NewSetKey returns a fresh random file key and set id for a new set sealed with alg.
func NewSetKey(alg Algorithm) (*SetKey, error) {
	if !alg.valid() {
		return nil, fmt.Errorf("unknown AEAD %d", uint16(alg))
	}
	k := &SetKey{OpenKey: OpenKey{algorithm: alg, version: HeaderVersion}}
	rand.Read(k.fileKey[:])
	rand.Read(k.id[:])
	return k, nil
}

// newSetKeyFrom builds a SetKey from known parts, of any version (the known
// answers of v1 and v2).
func newSetKeyFrom(fileKey []byte, id SetID, alg Algorithm, version int) *SetKey {
	k := &SetKey{OpenKey: *newOpenKey(fileKey, id, alg, version)}
	return k
}

func newOpenKey(fileKey []byte, id SetID, alg Algorithm, version int) *OpenKey {
	k := &OpenKey{id: id, algorithm: alg, version: version}
	copy(k.fileKey[:], fileKey)
	return k
}

// ID returns the set id.
func (k *OpenKey) ID() SetID { return k.id }

// Algorithm returns the AEAD that seals the set's chunks.
func (k *OpenKey) Algorithm() Algorithm { return k.algorithm }

// Version returns the format version of the set.
func (k *OpenKey) Version() int { return k.version }

// context is what the set's stanzas are bound to.
func (k *OpenKey) context() WrapContext { return WrapContext{Version: k.version, SetID: k.id} }

// Wrap wraps the file key for each recipient, in order, bound to this set.
func (k *OpenKey) Wrap(recipients ...Recipient) ([]*Stanza, error) {
	stanzas := make([]*Stanza, 0, len(recipients))
	for i, r := range recipients {
		s, err := r.Wrap(k.fileKey[:], k.context())
		if err != nil {
			return nil, fmt.Errorf("wrapping the file key for recipient %d: %w", i+1, err)
		}
		stanzas = append(stanzas, s)
	}
	return stanzas, nil
}

// NewFile draws the random nonce of a new file of the set called name and returns
// its manifest entry (size 0), for a caller that writes the header before the
// file (an encrypted archive); NewWriterFor then writes the file, once.
func (k *SetKey) NewFile(name string) (FileInfo, error) {
	if err := checkName(name); err != nil {
		return FileInfo{}, err
	}
	f := FileInfo{Name: name}
	if k.version < 2 {
		return f, nil // v1: no nonce (only the known answers write v1)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.files) >= MaxFiles {
		return FileInfo{}, fmt.Errorf("too many files: the limit is %d", MaxFiles)
	}
	if k.files == nil {
		k.files = make(map[FileNonce]nonceUse)
	}
	for {
		rand.Read(f.Nonce[:])
		if _, dup := k.files[f.Nonce]; !dup && f.Nonce != (FileNonce{}) {
			break
		}
	}
	k.files[f.Nonce] = nonceUse{name: name}
	return f, nil
}

// take marks the nonce of f as used by a writer: each is used once.
func (k *SetKey) take(f FileInfo) error {
	if k.version < 2 {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	u, ok := k.files[f.Nonce]
	switch {
	case !ok || u.name != f.Name:
		return fmt.Errorf("%s: the file was not made by this key's NewFile", f.Name)
	case u.taken:
		return fmt.Errorf("%s: its nonce was used already: a file is written once", f.Name)
	}
	u.taken = true
	k.files[f.Nonce] = u
	return nil
}

// drew reports whether the nonce of f was drawn by this key for its name.
func (k *SetKey) drew(f FileInfo) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	u, ok := k.files[f.Nonce]
	return ok && u.name == f.Name
}

// macKey derives the key of the header MAC.
func (k *OpenKey) macKey() []byte {
	key, err := hkdf.Key(sha256.New, k.fileKey[:], k.id[:], labelsOf(k.version).headerMAC, 32)
	if err != nil {
		panic("cipher: HKDF failed: " + err.Error()) // only on absurd lengths
	}
	return key
}

// headerMAC returns HMAC-SHA-256 of the header bytes under the MAC key.
func (k *OpenKey) headerMAC(signed []byte) []byte {
	h := hmac.New(sha256.New, k.macKey())
	h.Write(signed)
	return h.Sum(nil)
}

// payloadKey derives the key that seals the chunks of the file f. The info string
// binds the AEAD, the chunk size, the file's nonce (v2) and its name, so a file
// renamed, read with other parameters, or written again, does not open.
func (k *OpenKey) payloadKey(f FileInfo) []byte {
	l := labelsOf(k.version)
	info := make([]byte, 0, len(l.payload)+1+2+4+FileNonceSize+len(f.Name))
	info = append(info, l.payload...)
	info = append(info, 0)
	info = binary.LittleEndian.AppendUint16(info, uint16(k.algorithm))
	info = binary.LittleEndian.AppendUint32(info, ChunkSize)
	if k.version >= 2 {
		info = append(info, f.Nonce[:]...)
	}
	info = append(info, f.Name...)
	key, err := hkdf.Key(sha256.New, k.fileKey[:], k.id[:], string(info), 32)
	if err != nil {
		panic("cipher: HKDF failed: " + err.Error())
	}
	return key
}

// fileCipher returns the AEAD instance for the file f and, with withAuth and
// where the algorithm has one, the checker that authenticates its chunks without
// decrypting them.
func (k *OpenKey) fileCipher(f FileInfo, withAuth bool) (stdcipher.AEAD, *tagAuth, error) {
	if err := checkName(f.Name); err != nil {
		return nil, nil, err
	}
	if k.version >= 2 && f.Nonce == (FileNonce{}) {
		return nil, nil, fmt.Errorf("%s: no file nonce (a v%d set gives each file one)", f.Name, k.version)
	}
	key := k.payloadKey(f)
	aead, err := k.algorithm.newAEAD(key)
	if err != nil || !withAuth {
		return aead, nil, err
	}
	return aead, newTagAuth(k.algorithm, key, aead), nil
}
