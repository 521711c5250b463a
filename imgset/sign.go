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

// SignName is a set's signature: who wrote the set, and the SHA-256 of every
// stored byte of every file of it (the ciphertext for an encrypted set) and of
// its header. It is not one of the set's files (Names leaves it out), and a plain
// set may have one as well as an encrypted one. See docs/format.md, Signatures.
const SignName = image.SignFileName

// SignFraming is the 8-byte framing of SignName: IMG_COMMON then image.MagicSign.
var SignFraming = func() cipher.Framing {
	var f cipher.Framing
	binary.LittleEndian.PutUint32(f[0:], image.MagicImgCommon)
	binary.LittleEndian.PutUint32(f[4:], image.MagicSign)
	return f
}()

// Errors of a set's signature, for errors.Is (with cipher.ErrBadSignature and
// cipher.ErrUntrustedSigner).
var (
	// ErrNoSignature: the set has no SignName.
	ErrNoSignature = errors.New("no signature")
	// ErrSignedFile: a file differs from what the signature lists (its hash or
	// size), is missing, or is not listed; or the header is not the one signed.
	ErrSignedFile = errors.New("file does not match the signature")
)

// Sign signs the set in dir with signer: it hashes every stored file (and the
// header of an encrypted set), and writes SignName atomically (a new file is
// synced beside the set and renamed into it), replacing any signature there. The
// set id is the header's for an encrypted set, a new random one for a plain set.
func Sign(dir string, signer *cipher.Signer) (*cipher.Signature, error) {
	return SignAt(dir, signer, time.Now())
}

// SignAt is Sign with the creation time given.
func SignAt(dir string, signer *cipher.Signer, now time.Time) (*cipher.Signature, error) {
	data, err := signatureOf(dir, signer, now)
	if err != nil {
		return nil, err
	}
	if err := replaceSetFile(dir, SignName, data, "the signature"); err != nil {
		return nil, err
	}
	return cipher.ParseSignature(data, SignFraming)
}

// signatureOf hashes the set in dir and returns its signature file.
func signatureOf(dir string, signer *cipher.Signer, now time.Time) ([]byte, error) {
	names, err := listFiles(dir)
	if err != nil {
		return nil, err
	}
	if odd := nonRegular(dir); len(odd) > 0 {
		return nil, fmt.Errorf("image set %s: %s is not a regular file: cannot be signed", dir, odd[0])
	}
	var setID cipher.SetID
	var sealHash [cipher.HashSize]byte
	if contains(names, HeaderName) {
		data, err := readSetFile(dir, HeaderName, cipher.MaxHeaderSize)
		if err != nil {
			return nil, err
		}
		h, err := cipher.ParseHeader(data, HeaderFraming)
		if err != nil {
			return nil, fmt.Errorf("image set %s: %s: %w", dir, HeaderName, err)
		}
		setID, sealHash = h.SetID, sha256.Sum256(data)
	} else if _, err := rand.Read(setID[:]); err != nil {
		return nil, err
	}
	files, errs := hashFiles(dir, without(names, HeaderName))
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

// SignatureOptions configures VerifySignature.
type SignatureOptions struct {
	// Trust are the trust anchors: signer certificates, or CAs that issue them.
	Trust []*x509.Certificate
	// Now is the time a signature must not be later than; zero is now.
	Now time.Time
}

// VerifySignature checks the signature of the set in dir, in this order, and
// stops at the first failure: it parses (ErrNoSignature when there is none);
// the signer chains to opts.Trust and the signature verifies
// (cipher.ErrUntrustedSigner, cipher.ErrBadSignature); the header is the one
// signed and carries the signed set id, or there is no header and the signature
// lists none; the folder holds exactly the files listed, each of the size and
// SHA-256 signed (ErrSignedFile, naming the file). It reads every stored byte of
// the set once, and decrypts nothing.
func VerifySignature(dir string, opts SignatureOptions) (*cipher.Signature, error) {
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
	var zero [cipher.HashSize]byte
	if contains(names, HeaderName) {
		data, err := readSetFile(dir, HeaderName, cipher.MaxHeaderSize)
		if err != nil {
			return sig, err
		}
		if sha256.Sum256(data) != sig.SealHash {
			return sig, fmt.Errorf("image set %s: %s: %w: the header is not the one signed", dir, HeaderName, ErrSignedFile)
		}
		h, err := cipher.ParseHeader(data, HeaderFraming)
		if err != nil {
			return sig, fmt.Errorf("image set %s: %s: %w", dir, HeaderName, err)
		}
		if h.SetID != sig.SetID {
			return sig, fmt.Errorf("image set %s: %w: the header's set id %s is not the signed %s", dir, ErrSignedFile, h.SetID, sig.SetID)
		}
	} else if sig.SealHash != zero {
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
	}
	got, errs := hashFiles(dir, files)
	for i, f := range got {
		if errs[i] != nil {
			return sig, fmt.Errorf("image set %s: %w", dir, errs[i])
		}
		if want, _ := sig.File(f.Name); want.Size != f.Size || want.Hash != f.Hash {
			return sig, fmt.Errorf("image set %s: %s: %w: its SHA-256 is not the one signed (changed, or swapped from another set)", dir, f.Name, ErrSignedFile)
		}
	}
	return sig, nil
}

// hashWorkers is the number of files hashed at once.
const hashWorkers = 4

// hashFiles hashes the stored bytes of the named files of dir, pipelined over
// hashWorkers goroutines, and returns their entries and errors in order.
func hashFiles(dir string, names []string) ([]cipher.SignedFile, []error) {
	out := make([]cipher.SignedFile, len(names))
	errs := make([]error, len(names))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(len(names), hashWorkers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i], errs[i] = hashFile(dir, names[i])
			}
		}()
	}
	for i := range names {
		next <- i
	}
	close(next)
	wg.Wait()
	return out, errs
}

// hashFile hashes one stored file, refusing anything but a regular file.
func hashFile(dir, name string) (cipher.SignedFile, error) {
	f, _, err := openRegular(filepath.Join(dir, name))
	if err != nil {
		return cipher.SignedFile{}, fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return cipher.SignedFile{}, fmt.Errorf("%s: %w", name, err)
	}
	sf := cipher.SignedFile{Name: name, Size: n}
	h.Sum(sf.Hash[:0])
	return sf, nil
}

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
