package imgset

import (
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
	Progress   Progress
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
	if !contains(names, HeaderName) {
		rep.Files = len(names)
		verifyPlain(rep, dir, names)
		return rep, nil
	}
	rep.Encrypted = true
	h, err := ReadHeader(dir)
	if err != nil {
		rep.add(HeaderName, err)
		rep.Unchecked = append(rep.Unchecked, "the manifest and every file (the header does not parse)")
		return rep, nil
	}
	rep.Recipients, rep.Stanzas, rep.Algorithm, rep.Files = h.Recipients(), h.Stanzas, h.Algorithm, len(h.Files)
	rep.SetID = h.SetID
	files := without(names, HeaderName)
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
	errs := verifyFiles(key, dir, h.Files, bad, opts.Progress)
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

// verifyPlain reports a plaintext set: not encrypted (a problem for verify), and
// any file that is encrypted although the header is gone.
func verifyPlain(rep *Report, dir string, names []string) {
	rep.add(HeaderName, fmt.Errorf("%w: no %s", ErrNotEncrypted, HeaderName))
	for _, n := range names {
		if isEncryptedFile(filepath.Join(dir, n)) {
			rep.add(n, fmt.Errorf("%s: %w", n, ErrHeaderMissing))
		}
	}
	rep.Unchecked = append(rep.Unchecked, "the files: a plaintext set carries nothing to authenticate")
}

// verifyFiles authenticates every file of the manifest but the bad ones and
// returns each one's error, in manifest order. Files are checked by
// pipelineWorkers goroutines at once, since a set is mostly small files whose cost
// is opening and keying rather than bytes; a large file also spreads its batches
// over both cores (cipher.ReaderAt.Verify). progress is called from the calling
// goroutine only.
func verifyFiles(key *cipher.SetKey, dir string, files []cipher.FileInfo, bad map[string]bool, progress Progress) []error {
	var total int64
	for _, f := range files {
		total += f.Size
	}
	errs := make([]error, len(files))
	next := make(chan int)
	checked := make(chan int64, 64)
	var wg sync.WaitGroup
	for range min(len(files), verifyWorkers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var done int64
				errs[i] = verifyFile(key, dir, files[i], func(n int64) {
					done += n
					checked <- n
				})
				if rest := files[i].Size - done; rest > 0 {
					checked <- rest // a failed file counts as done
				}
			}
		}()
	}
	go func() {
		for i, f := range files {
			if !bad[f.Name] {
				next <- i
			}
		}
		close(next)
		wg.Wait()
		close(checked)
	}()
	var done int64
	for n := range checked {
		done += n
		if progress != nil {
			progress(done, total)
		}
	}
	return errs
}

// verifyWorkers is the number of files verified at once.
const verifyWorkers = 2

// verifyFile authenticates every chunk of one file.
func verifyFile(key *cipher.SetKey, dir string, fi cipher.FileInfo, progress func(int64)) error {
	f, st, err := openRegular(filepath.Join(dir, fi.Name))
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := key.NewReaderAt(f, st.Size(), fi.Name, fi.Size)
	if err != nil {
		return err
	}
	return r.Verify(progress)
}
