package imgset

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/image"
)

// SignName is a set's signature: who wrote the set, the SHA-256 of its header,
// and the SHA-256 of every stored chunk of every file of it (the ciphertext for
// an encrypted set). It is not one of the set's files (Names leaves it out), and
// a plain set may have one as well as an encrypted one. See docs/format.md,
// part 5.
const SignName = image.SignFileName

// SignFraming is the 8-byte framing of SignName: IMG_COMMON then image.MagicSign.
var SignFraming = func() cipher.Framing {
	var f cipher.Framing
	binary.LittleEndian.PutUint32(f[0:], image.MagicImgCommon)
	binary.LittleEndian.PutUint32(f[4:], image.MagicSign)
	return f
}()

// Errors of a set's signature, for errors.Is (with cipher.ErrBadSignature,
// cipher.ErrUntrustedSigner and cipher.ErrSignedChunk).
var (
	// ErrNoSignature: the set has no SignName.
	ErrNoSignature = errors.New("no signature")
	// ErrSignedFile: a file differs from what the signature lists (its size or a
	// chunk), is missing, or is not listed; or the header is not the one signed.
	ErrSignedFile = errors.New("file does not match the signature")
)

// Sign signs the set in dir with signer: it hashes every stored chunk of every
// file (and the header of an encrypted set), and writes SignName atomically (a
// new file is synced beside the set and renamed into it), replacing any
// signature there. The set id is the header's for an encrypted set, a new
// random one for a plain set.
func Sign(dir string, signer *cipher.Signer) (*cipher.Signature, error) {
	return SignAt(dir, signer, time.Now())
}

// SignAt is Sign with the creation time given.
func SignAt(dir string, signer *cipher.Signer, now time.Time) (*cipher.Signature, error) {
	data, err := signatureOf(dir, signer, now, nil)
	if err != nil {
		return nil, err
	}
	if err := replaceSetFile(dir, SignName, data, "the signature"); err != nil {
		return nil, err
	}
	return cipher.ParseSignature(data, SignFraming)
}

// signatureOf returns the signature file of the set in dir. known holds the
// chunk hashes of files already hashed as they were written (nil: none); every
// other file is read and hashed here.
func signatureOf(dir string, signer *cipher.Signer, now time.Time, known map[string]cipher.ChunkHashes) ([]byte, error) {
	names, err := listFiles(dir)
	if err != nil {
		return nil, err
	}
	if odd := nonRegular(dir); len(odd) > 0 {
		return nil, fmt.Errorf("image set %s: %s is not a regular file: cannot be signed", dir, odd[0])
	}
	var setID cipher.SetID
	var sealHash [cipher.HashSize]byte
	encrypted := contains(names, HeaderName)
	if encrypted {
		h, data, err := readHeader(dir)
		if err != nil {
			return nil, err
		}
		setID, sealHash = h.SetID, sha256.Sum256(data)
	} else if _, err := rand.Read(setID[:]); err != nil {
		return nil, err
	}
	files, errs := hashFiles(dir, without(names, HeaderName), encrypted, setID, known)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("image set %s: %w", dir, err)
	}
	data, err := signer.Sign(SignFraming, setID, now, sealHash, files)
	if err != nil {
		return nil, fmt.Errorf("image set %s: %w", dir, err)
	}
	return data, nil
}

// RemoveSignature removes the signature of the set in dir, if any, and syncs the
// folder; removed says whether there was one.
func RemoveSignature(dir string) (removed bool, err error) {
	err = os.Remove(filepath.Join(dir, SignName))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("image set %s: %w", dir, err)
	}
	return true, syncDir(dir)
}

// HasSignature reports whether the set in dir has a signature file.
func HasSignature(dir string) bool {
	st, err := os.Lstat(filepath.Join(dir, SignName))
	return err == nil && st.Mode().IsRegular()
}

// ReadSignature reads and parses the signature of the set in dir, unverified. It
// returns an error wrapping ErrNoSignature when there is none.
func ReadSignature(dir string) (*cipher.Signature, error) {
	data, err := readSetFile(dir, SignName, cipher.MaxSignFileSize)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("image set %s: %w (%s)", dir, ErrNoSignature, SignName)
	}
	if err != nil {
		return nil, err
	}
	s, err := cipher.ParseSignature(data, SignFraming)
	if err != nil {
		return nil, fmt.Errorf("image set %s: %s: %w", dir, SignName, err)
	}
	return s, nil
}

// SignatureOptions configures CheckSignature and VerifySignature.
type SignatureOptions struct {
	// Trust are the trust anchors: signer certificates, or CAs that issue them.
	Trust []*x509.Certificate
	// Now is the time a signature must not be later than; zero is now.
	Now time.Time
}

// CheckSignature checks the signature of the set in dir, in this order, and
// stops at the first failure: it parses (ErrNoSignature when there is none);
// the signer chains to opts.Trust and the signature verifies
// (cipher.ErrUntrustedSigner, cipher.ErrBadSignature); the header is the one
// signed and carries the signed set id, or there is no header and the signature
// lists none; the folder holds exactly the files listed, each of the size signed
// (ErrSignedFile, naming the file). It reads the signature and the header, and
// no byte of any file: the returned signature is for OpenOptions.Signature,
// VerifyOptions.Signature or DecryptOptions.Signature, which check every stored
// chunk against it where they read it anyway. VerifySignature checks them all
// at once.
func CheckSignature(dir string, opts SignatureOptions) (*cipher.Signature, error) {
	sig, err := ReadSignature(dir)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	if err := sig.Verify(opts.Trust, now); err != nil {
		return sig, fmt.Errorf("image set %s: %s: %w", dir, SignName, err)
	}
	names, err := listFiles(dir)
	if err != nil {
		return sig, err
	}
	if contains(names, HeaderName) {
		h, data, err := readHeader(dir)
		if err != nil {
			return sig, err
		}
		if sha256.Sum256(data) != sig.SealHash {
			return sig, fmt.Errorf("image set %s: %s: %w: the header is not the one signed", dir, HeaderName, ErrSignedFile)
		}
		if h.SetID != sig.SetID {
			return sig, fmt.Errorf("image set %s: %w: the header's set id %s is not the signed %s", dir, ErrSignedFile, h.SetID, sig.SetID)
		}
	} else if sig.Encrypted() {
		return sig, fmt.Errorf("image set %s: %s: %w: the signed set was encrypted, its header is gone", dir, HeaderName, ErrSignedFile)
	}
	files := without(names, HeaderName)
	if odd := nonRegular(dir); len(odd) > 0 {
		return sig, fmt.Errorf("image set %s: %s: %w: not a regular file, not signed", dir, odd[0], ErrSignedFile)
	}
	for _, n := range files {
		if _, ok := sig.File(n); !ok {
			return sig, fmt.Errorf("image set %s: %s: %w: not listed in the signature (added)", dir, n, ErrSignedFile)
		}
	}
	for _, f := range sig.Files {
		if !contains(files, f.Name) {
			return sig, fmt.Errorf("image set %s: %s: %w: signed, but missing", dir, f.Name, ErrSignedFile)
		}
		st, err := os.Lstat(filepath.Join(dir, f.Name))
		if err == nil && st.Size() != f.Size {
			return sig, fmt.Errorf("image set %s: %s: %w: %d bytes, %d signed", dir, f.Name, ErrSignedFile, st.Size(), f.Size)
		}
		if sig.Encrypted() {
			// A file of another set (an older signed one, say) shows in its prefix.
			if err := checkPrefix(dir, f.Name, sig.SetID); err != nil {
				return sig, fmt.Errorf("image set %s: %w", dir, signedFileError{err})
			}
		}
	}
	return sig, nil
}

// checkPrefix checks the prefix of the encrypted file name of dir: the file
// magic and the set id id.
func checkPrefix(dir, name string, id cipher.SetID) error {
	f, _, err := openRegular(filepath.Join(dir, name))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	_, err = cipher.CheckPrefix(f, name, id)
	return err
}

// VerifySignature is CheckSignature, then the check of every stored chunk of
// every file against the signature: it reads every stored byte of the set once,
// and decrypts nothing. A chunk that differs fails with ErrSignedFile (and
// cipher.ErrSignedChunk), naming the file.
func VerifySignature(dir string, opts SignatureOptions) (*cipher.Signature, error) {
	sig, err := CheckSignature(dir, opts)
	if err != nil {
		return sig, err
	}
	for _, err := range checkFiles(dir, sig, sig.Files, nil) {
		if err != nil {
			return sig, fmt.Errorf("image set %s: %w", dir, err)
		}
	}
	return sig, nil
}

// fileWorkers is the number of files hashed or checked at once; each large file
// also spreads its chunks over the cores (cipher.HashStored, CheckStored).
const fileWorkers = 2

// eachFile runs do on every index of n, fileWorkers at a time, and returns the
// errors in order.
func eachFile(n int, do func(i int) error) []error {
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(n, fileWorkers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs[i] = do(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

// hashFiles returns the signature entries of the named stored files of dir:
// the hashes of known, or else the hashes of every stored chunk read now. The
// files of an encrypted set (whose id is setID) must start with the prefix of
// this set. Entries and errors are in the order of names.
func hashFiles(dir string, names []string, encrypted bool, setID cipher.SetID, known map[string]cipher.ChunkHashes) ([]cipher.SignedFile, []error) {
	out := make([]cipher.SignedFile, len(names))
	errs := eachFile(len(names), func(i int) error {
		name := names[i]
		f, st, err := openRegular(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer f.Close()
		if encrypted {
			if _, err := cipher.CheckPrefix(f, name, setID); err != nil {
				return err // a file of another set, not to be signed as this one's
			}
		}
		out[i] = cipher.SignedFile{Name: name, Size: st.Size(), Chunks: known[name]}
		if n, err := cipher.StoredChunks(st.Size(), encrypted); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		} else if known[name] != nil && int64(known[name].Len()) == n {
			return nil
		}
		out[i].Chunks, err = cipher.HashStored(positional(f), st.Size(), encrypted, name, nil)
		return err
	})
	return out, errs
}

// checkFiles checks every stored chunk of the files of dir against the signed
// entries files (of a verified signature), reporting each file's first failure
// in order. progress, if not nil, is told the bytes checked, from several
// goroutines.
func checkFiles(dir string, sig *cipher.Signature, files []cipher.SignedFile, progress func(int64)) []error {
	return eachFile(len(files), func(i int) error {
		sf := files[i]
		f, st, err := openRegular(filepath.Join(dir, sf.Name))
		if err != nil {
			return fmt.Errorf("%s: %w", sf.Name, err)
		}
		defer f.Close()
		if st.Size() != sf.Size {
			return fmt.Errorf("%s: %w: %d bytes, %d signed", sf.Name, ErrSignedFile, st.Size(), sf.Size)
		}
		if err := cipher.CheckStored(positional(f), sf.Size, sig.Encrypted(), sf.Chunks, sf.Name, progress); err != nil {
			return signedFileError{err}
		}
		return nil
	})
}

// signedFileError is a stored chunk that differs from its signed hash (a
// cipher error wrapping cipher.ErrSignedChunk, naming the file and the offset):
// it is also ErrSignedFile.
type signedFileError struct{ err error }

func (e signedFileError) Error() string   { return e.err.Error() }
func (e signedFileError) Unwrap() []error { return []error{e.err, ErrSignedFile} }

// readSetFile reads a small file of the set (a header, a signature), refusing
// anything but a regular file of at most limit bytes.
func readSetFile(dir, name string, limit int64) ([]byte, error) {
	f, st, err := openRegular(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("image set %s: %w", dir, err)
	}
	defer f.Close()
	if st.Size() > limit {
		return nil, fmt.Errorf("image set %s: %s: %d bytes exceeds the limit of %d", dir, name, st.Size(), limit)
	}
	var b bytes.Buffer
	if _, err := io.Copy(&b, io.LimitReader(f, limit+1)); err != nil {
		return nil, fmt.Errorf("image set %s: %s: %w", dir, name, err)
	}
	if int64(b.Len()) > limit {
		return nil, fmt.Errorf("image set %s: %s: longer than the limit of %d bytes", dir, name, limit)
	}
	return b.Bytes(), nil
}
