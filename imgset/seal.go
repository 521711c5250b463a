package imgset

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/image"
)

// HeaderName is the file that makes a set encrypted: the sealed header, holding the
// set's parameters, the file key wrapped for each recipient, and the manifest. It is
// not one of the set's files (Names leaves it out). CRIUsec's cipher.img is a
// different format; the name differs so the two never meet.
const HeaderName = image.SealFileName

// MagicSeal is the image magic of HeaderName, after CRIU's IMG_COMMON magic: CRIU
// tools see a CRIU image of a type they do not know.
const MagicSeal = image.MagicSeal

// HeaderFraming is the 8-byte framing of HeaderName: IMG_COMMON then MagicSeal,
// both little-endian, as CRIU frames its own images.
var HeaderFraming = func() cipher.Framing {
	var f cipher.Framing
	binary.LittleEndian.PutUint32(f[0:], image.MagicImgCommon)
	binary.LittleEndian.PutUint32(f[4:], MagicSeal)
	return f
}()

// Errors about a set as a whole, for errors.Is. Errors from cipher (ErrNoRecipient,
// ErrHeaderAuth, ErrChunkAuth, ...) come wrapped with the set and file they concern.
var (
	// ErrNotEncrypted: the set has no sealed header and encryption was required,
	// or an operation needs an encrypted set.
	ErrNotEncrypted = errors.New("image set is not encrypted")
	// ErrEncrypted: an operation needs a plaintext set (encrypt on an encrypted set).
	ErrEncrypted = errors.New("image set is already encrypted")
	// ErrKeyRequired: the set is encrypted and no key was given.
	ErrKeyRequired = errors.New("image set is encrypted: a key is needed")
	// ErrHeaderMissing: the set's files are encrypted but its header is gone.
	ErrHeaderMissing = errors.New("files are encrypted but the sealed header is missing")
	// ErrMissingFile: a file the manifest lists is not in the set (deleted).
	ErrMissingFile = errors.New("file listed in the manifest is missing")
	// ErrUnexpectedFile: a file is in the set but not in the manifest (added).
	ErrUnexpectedFile = errors.New("file is not in the manifest")
)

// KeyRequiredError is returned by Open for an encrypted set when no key was given:
// it says for whom the set is encrypted.
type KeyRequiredError struct {
	Dir        string
	Recipients []cipher.Fingerprint
}

func (e *KeyRequiredError) Error() string {
	return fmt.Sprintf("image set %s is encrypted for %d recipient(s) %v: give a key", e.Dir, len(e.Recipients), e.Recipients)
}

func (e *KeyRequiredError) Unwrap() error { return ErrKeyRequired }

// ReadHeader reads and parses the sealed header of the set in dir, without a key:
// what it says (recipients, manifest, algorithm) is not yet authenticated. It
// returns an error wrapping os.ErrNotExist when the set has no header.
func ReadHeader(dir string) (*cipher.Header, error) {
	h, _, err := readHeader(dir)
	return h, err
}

// readHeader is ReadHeader that also returns the header's bytes (for a
// signature's hash of them).
func readHeader(dir string) (*cipher.Header, []byte, error) {
	data, err := readSetFile(dir, HeaderName, cipher.MaxHeaderSize)
	if err != nil {
		return nil, nil, err
	}
	h, err := cipher.ParseHeader(data, HeaderFraming)
	if err != nil {
		return nil, nil, fmt.Errorf("image set %s: %s: %w", dir, HeaderName, err)
	}
	return h, data, nil
}

// isEncryptedFile reports whether the file at path starts with the encrypted-file
// magic.
//
// It opens the file as openRegular does, with the system calls themselves: an *os.File
// costs an epoll registration and more, for the eight bytes read of each file of a set.
func isEncryptedFile(path string) bool {
	fd, err := unix.Open(path, regularOpenFlags|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	var magic [len(cipher.FileMagic)]byte
	n, _ := unix.Pread(fd, magic[:], 0)
	return n == len(magic) && string(magic[:]) == cipher.FileMagic
}
