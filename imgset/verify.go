package imgset

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/imgtool/imgtool/cipher"
)

// VerifyOptions configures Verify.
type VerifyOptions struct {
	// Identities open the header. Without any, Verify checks what needs no key.
	Identities []cipher.Identity
	// Signature, if not nil, is the set's verified signature (CheckSignature):
	// every stored chunk is also checked against its signed hash, in the same
	// pass and on the same core that authenticates it; a plain set's files, and
	// an encrypted set's without a key, are checked against it alone.
	Signature *cipher.Signature
	Progress  Progress
}

// Problem is one thing wrong with a set: the file it concerns (HeaderName for the
// header) and the error, which wraps a sentinel of this package or of cipher.
type Problem struct {
	File string
	Err  error
}

func (p Problem) Error() string { return p.Err.Error() }

// Report is what Verify found.
type Report struct {
	Dir        string
	Encrypted  bool                 // the set has a header
	Recipients []cipher.Fingerprint // from the header (authentic only if Authenticated)
	Stanzas    []*cipher.Stanza     // the header's recipient stanzas, in order (ditto)
	SetID      cipher.SetID         // the header's set id (ditto)
	Algorithm  cipher.Algorithm
	// Authenticated: a key opened the header, its MAC matched, and every chunk of
	// every file present was authenticated (failures are in Problems).
	Authenticated bool
	Files         int   // files in the manifest (or the folder, for a plain set)
	Bytes         int64 // plaintext bytes authenticated
	Problems      []Problem
	// Unchecked says what could not be checked (without a key).
	Unchecked []string
}

// OK reports whether the set passed every check that was made.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Err returns nil for a set that passed, else all problems joined.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	errs := make([]error, len(r.Problems))
	for i, p := range r.Problems {
		errs[i] = p.Err
	}
	return fmt.Errorf("image set %s: %d problem(s): %w", r.Dir, len(r.Problems), errors.Join(errs...))
}

// Verify checks the set in dir without writing anything: the header's structure,
// the manifest against the folder (missing, added, truncated or foreign files), and
// with a key the header MAC and every chunk of every file. It reports every file
// that fails and why, and goes on after a failure. The error is for a set that
// could not be examined at all (no such folder); a damaged set gives a Report
// with Problems.
func Verify(dir string, opts VerifyOptions) (*Report, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("image set %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("image set %s: not a directory", dir)
	}
	names, err := listFiles(dir)
	if err != nil {
		return nil, err
	}
	rep := &Report{Dir: dir}
	sig := opts.Signature
	if sig != nil && !sig.Verified() {
		return nil, fmt.Errorf("image set %s: %s: the signature given was not verified", dir, SignName)
	}
	if !contains(names, HeaderName) {
		rep.Files = len(names)
		verifyPlain(rep, dir, names, sig, opts.Progress)
		return rep, nil
	}
	rep.Encrypted = true
	h, data, err := readHeader(dir)
	if err != nil {
		rep.add(HeaderName, err)
		rep.Unchecked = append(rep.Unchecked, "the manifest and every file (the header does not parse)")
		return rep, nil
	}
	rep.Recipients, rep.Stanzas, rep.Algorithm, rep.Files = h.Recipients(), h.Stanzas, h.Algorithm, len(h.Files)
	rep.SetID = h.SetID
	files := without(names, HeaderName)
	if sig != nil && sha256.Sum256(data) != sig.SealHash {
		rep.add(HeaderName, fmt.Errorf("%s: %w: the header is not the one signed", HeaderName, ErrSignedFile))
		rep.Unchecked = append(rep.Unchecked, "the files: the header is not the one signed")
		return rep, nil
	}
	if len(opts.Identities) == 0 && sig != nil {
		// The signature makes the header authentic (its hash is signed), and
		// every stored chunk is checked against it; only the tags are left.
		bad := map[string]bool{}
		for _, p := range checkManifest(dir, h, files) {
			rep.add(p.file, p.err)
			bad[p.file] = true
		}
		checkSignedFiles(rep, dir, sig, bad, opts.Progress, func(name string) int64 { fi, _ := h.File(name); return fi.Size })
		rep.Unchecked = append(rep.Unchecked, "the chunks' tags (no key): every stored chunk is the one signed, but none was decrypted")
		return rep, nil
	}
	if len(opts.Identities) == 0 {
		checkUnauthenticated(rep, dir, h, files)
		rep.Unchecked = append(rep.Unchecked,
			"the header MAC: recipients, parameters and manifest are unauthenticated (no key)",
			"the chunks of every file (no key)")
		return rep, nil
	}
	key, err := h.Unwrap(opts.Identities...)
	switch {
	case err != nil && HeaderDamaged(err):
		// The manifest, the sizes and the set id are the header's: a file that does
		// not match a damaged header says nothing about the file.
		rep.add(HeaderName, err)
		rep.Unchecked = append(rep.Unchecked, "the files: the header is damaged, so its manifest cannot be trusted to judge them")
		return rep, nil
	case err != nil:
		rep.add(HeaderName, err)
		checkUnauthenticated(rep, dir, h, files)
		rep.Unchecked = append(rep.Unchecked, "the chunks of every file (the header did not open)")
		return rep, nil
	}
	bad := map[string]bool{}
	for _, p := range checkManifest(dir, h, files) {
		rep.add(p.file, p.err)
		bad[p.file] = true
	}
	signed := map[string]cipher.SignedFile{}
	if sig != nil {
		for _, f := range sig.Files {
			signed[f.Name] = f
		}
	}
	sizes := make([]int64, len(h.Files))
	for i, f := range h.Files {
		sizes[i] = f.Size
		if _, ok := signed[f.Name]; sig != nil && !ok && !bad[f.Name] {
			rep.add(f.Name, fmt.Errorf("%s: %w: not listed in the signature", f.Name, ErrSignedFile))
			bad[f.Name] = true
		}
	}
	errs := eachFileProgress(len(h.Files), sizes, func(i int) bool { return bad[h.Files[i].Name] }, opts.Progress,
		func(i int, progress func(int64)) error {
			return verifyFile(key, dir, h.Files[i], signed[h.Files[i].Name].Chunks, sig != nil, progress)
		})
	for i, f := range h.Files {
		if bad[f.Name] {
			continue
		}
		if errs[i] != nil {
			rep.add(f.Name, errs[i])
		} else {
			rep.Bytes += f.Size
		}
	}
	rep.Authenticated = true
	return rep, nil
}

// HeaderDamaged reports whether an error of opening a header means the header
// itself was changed (its MAC fails, or a stanza naming the key does not open),
// rather than that the key is not a recipient.
func HeaderDamaged(err error) bool {
	return errors.Is(err, cipher.ErrHeaderAuth) || errors.Is(err, cipher.ErrWrongKey)
}

// checkUnauthenticated compares the folder with a manifest no key has
// authenticated: each mismatch is the file's fault or the header's, which only
// a key can tell, and the problem says so.
func checkUnauthenticated(rep *Report, dir string, h *cipher.Header, files []string) {
	for _, p := range checkManifest(dir, h, files) {
		rep.add(p.file, &unauthenticatedError{p.err})
	}
}

// unauthenticatedError is a mismatch between a file and a manifest that was not
// authenticated.
type unauthenticatedError struct{ err error }

func (e *unauthenticatedError) Error() string {
	return e.err.Error() + " (or the header was changed: without a key it is not authenticated)"
}

func (e *unauthenticatedError) Unwrap() error { return e.err }

func (r *Report) add(file string, err error) {
	r.Problems = append(r.Problems, Problem{File: file, Err: err})
}

// verifyPlain reports a plaintext set: not encrypted (a problem for verify),
// any file that is encrypted although the header is gone, and, with a verified
// signature, every file whose stored bytes are not the signed ones.
func verifyPlain(rep *Report, dir string, names []string, sig *cipher.Signature, progress Progress) {
	rep.add(HeaderName, fmt.Errorf("%w: no %s", ErrNotEncrypted, HeaderName))
	for _, n := range names {
		if isEncryptedFile(filepath.Join(dir, n)) {
			rep.add(n, fmt.Errorf("%s: %w", n, ErrHeaderMissing))
		}
	}
	if sig == nil {
		rep.Unchecked = append(rep.Unchecked, "the files: a plaintext set carries nothing to authenticate")
		return
	}
	if sig.Encrypted() {
		rep.add(HeaderName, fmt.Errorf("%s: %w: the signed set was encrypted, its header is gone", HeaderName, ErrSignedFile))
		return
	}
	checkSignedFiles(rep, dir, sig, nil, progress, func(name string) int64 {
		f, _ := sig.File(name)
		return f.Size
	})
}

// checkSignedFiles checks every stored chunk of the signed files of dir against
// sig, all but the bad ones, adding a problem for each file that fails and the
// plaintext size (sizeOf) of each that passes to rep.Bytes.
func checkSignedFiles(rep *Report, dir string, sig *cipher.Signature, bad map[string]bool, progress Progress, sizeOf func(string) int64) {
	sizes := make([]int64, len(sig.Files))
	for i, f := range sig.Files {
		sizes[i] = f.Size
	}
	errs := eachFileProgress(len(sig.Files), sizes, func(i int) bool { return bad[sig.Files[i].Name] }, progress,
		func(i int, progress func(int64)) error {
			return checkFiles(dir, sig, sig.Files[i:i+1], progress)[0]
		})
	for i, f := range sig.Files {
		switch {
		case bad[f.Name]:
		case errs[i] != nil:
			rep.add(f.Name, errs[i])
		default:
			rep.Bytes += sizeOf(f.Name)
		}
	}
}

// eachFileProgress runs check on every file i of n but the skipped ones,
// verifyWorkers at a time (a set is mostly small files, whose cost is opening
// and keying rather than bytes; a large file also spreads its batches over the
// cores), and returns each one's error in order. sizes are the files' sizes for
// progress, which is called from the calling goroutine only; a file that fails
// or is skipped counts as done.
func eachFileProgress(n int, sizes []int64, skip func(i int) bool, progress Progress, check func(i int, progress func(int64)) error) []error {
	var total int64
	for _, s := range sizes {
		total += s
	}
	errs := make([]error, n)
	next := make(chan int)
	checked := make(chan int64, 64)
	var wg sync.WaitGroup
	for range min(n, verifyWorkers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var done int64
				errs[i] = check(i, func(d int64) {
					done += d
					checked <- d
				})
				if rest := sizes[i] - done; rest > 0 {
					checked <- rest
				}
			}
		}()
	}
	go func() {
		for i := range n {
			if skip(i) {
				checked <- sizes[i]
			} else {
				next <- i
			}
		}
		close(next)
		wg.Wait()
		close(checked)
	}()
	var done int64
	for d := range checked {
		done += d
		if progress != nil {
			progress(done, total)
		}
	}
	return errs
}

// verifyWorkers is the number of files verified at once.
const verifyWorkers = 2

// verifyFile authenticates every chunk of one file and, when signed, checks it
// against its signed hash first.
func verifyFile(key *cipher.OpenKey, dir string, fi cipher.FileInfo, hashes cipher.ChunkHashes, signed bool, progress func(int64)) error {
	f, st, err := openRegular(filepath.Join(dir, fi.Name))
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := key.NewReaderAt(positional(f), st.Size(), fi)
	if err != nil {
		return err
	}
	if signed {
		if err := r.CheckSigned(hashes); err != nil {
			return err
		}
	}
	return r.Verify(progress)
}
