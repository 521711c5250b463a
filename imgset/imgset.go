// Package imgset is an image set on disk: the folder of files one checkpoint consists
// of, plain or encrypted. Reading gives a plaintext view of each file (decrypted and
// authenticated chunk by chunk when the set is encrypted); writing streams each file to
// a temporary folder (encrypting it as it goes, so no plaintext of an encrypted set
// ever reaches the disk) and puts the whole set in place atomically on Commit.
//
// An encrypted set holds the same files as the plain one, each encrypted, plus the
// sealed header HeaderName. See docs/format.md (part 2) for the format.
package imgset

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/cipher"
)

// OpenOptions says how to open a set.
type OpenOptions struct {
	// Identities are the private keys tried on an encrypted set's header. None is
	// needed for a plaintext set; for an encrypted one, Open fails with a
	// *KeyRequiredError naming the recipients.
	Identities []cipher.Identity
	// RequireEncrypted refuses a set without a valid sealed header, so that removing
	// the header cannot silently downgrade a set to plaintext.
	RequireEncrypted bool
	// Signature, if not nil, is the set's signature, verified (CheckSignature):
	// the header must be the one it signed, and every stored chunk of every file
	// is checked against its signed hash as it is read, before it is decrypted or
	// handed out.
	Signature *cipher.Signature
}

// Set is an image set opened for reading.
type Set struct {
	dir    string // the folder, or the label of a Source
	src    Source // nil for a folder
	names  []string
	header *cipher.Header             // nil for a plaintext set
	key    *cipher.OpenKey            // nil for a plaintext set
	files  map[string]cipher.FileInfo // the manifest
	signed map[string]cipher.SignedFile
}

// Open opens the image set in dir. For an encrypted set it authenticates the header
// with one of opts.Identities and checks the manifest against the folder: every
// listed file present with the size its plaintext size encrypts to and this set's
// id, and no file that is not listed. The files' chunks are authenticated as they
// are read (Verify authenticates all of them).
func Open(dir string, opts OpenOptions) (*Set, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("image set %s: %w", dir, missingSetHint(dir, err))
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("image set %s: not a directory", dir)
	}
	names, err := listFiles(dir)
	if err != nil {
		return nil, err
	}
	signed, err := signedFiles(dir, opts.Signature)
	if err != nil {
		return nil, err
	}
	if !contains(names, HeaderName) {
		if opts.Signature != nil && opts.Signature.Encrypted() {
			return nil, fmt.Errorf("image set %s: %s: %w: the signed set was encrypted, its header is gone", dir, HeaderName, ErrSignedFile)
		}
		s, err := openPlain(dir, names, opts)
		if err == nil {
			s.signed = signed
		}
		return s, err
	}
	h, data, err := readHeader(dir)
	if err != nil {
		return nil, err
	}
	if opts.Signature != nil && sha256.Sum256(data) != opts.Signature.SealHash {
		return nil, fmt.Errorf("image set %s: %s: %w: the header is not the one signed", dir, HeaderName, ErrSignedFile)
	}
	if len(opts.Identities) == 0 {
		return nil, &KeyRequiredError{Dir: dir, Recipients: h.Recipients()}
	}
	key, err := h.Unwrap(opts.Identities...)
	if err != nil {
		return nil, fmt.Errorf("image set %s: %s: %w", dir, HeaderName, err)
	}
	if probs := checkManifest(dir, h, without(names, HeaderName)); len(probs) > 0 {
		return nil, fmt.Errorf("image set %s: %w", dir, joinProblems(probs))
	}
	s := &Set{dir: dir, header: h, key: key, files: make(map[string]cipher.FileInfo, len(h.Files)), signed: signed}
	for _, f := range h.Files {
		s.names = append(s.names, f.Name)
		s.files[f.Name] = f
	}
	return s, nil
}

// signedFiles returns the files of a verified signature by name, nil without one.
func signedFiles(dir string, sig *cipher.Signature) (map[string]cipher.SignedFile, error) {
	if sig == nil {
		return nil, nil
	}
	if !sig.Verified() {
		return nil, fmt.Errorf("image set %s: %s: the signature given was not verified", dir, SignName)
	}
	out := make(map[string]cipher.SignedFile, len(sig.Files))
	for _, f := range sig.Files {
		out[f.Name] = f
	}
	return out, nil
}

// Source is what a set that is not a folder reads its files from: the members of
// an archive (package archive), files in memory. A source holds a plaintext set.
type Source interface {
	// Names returns the names of the set's files, plain names, sorted.
	Names() []string
	// Open returns the named file's bytes, readable at any offset and concurrently,
	// and its size; an error wrapping os.ErrNotExist when there is no such file.
	Open(name string) (io.ReaderAt, int64, error)
}

// OpenSource opens the plaintext set that src holds; label names it in errors and
// is what Dir returns. A file that starts like an encrypted file of a set is
// refused: the sealed header and manifest are only checked in a folder.
func OpenSource(label string, src Source, opts OpenOptions) (*Set, error) {
	names := src.Names()
	if !sort.StringsAreSorted(names) {
		return nil, fmt.Errorf("image set %s: names not sorted", label)
	}
	for _, n := range names {
		if !validName(n) {
			return nil, fmt.Errorf("image set %s: bad file name %q", label, n)
		}
	}
	if contains(names, HeaderName) {
		return nil, fmt.Errorf("image set %s: an encrypted set (%s) can only be read from a folder", label, HeaderName)
	}
	if opts.RequireEncrypted {
		return nil, fmt.Errorf("image set %s: %w (no %s) and encryption is required", label, ErrNotEncrypted, HeaderName)
	}
	for _, n := range names {
		ra, _, err := src.Open(n)
		if err != nil {
			return nil, fmt.Errorf("image set %s: %w", label, err)
		}
		var magic [len(cipher.FileMagic)]byte
		if k, _ := ra.ReadAt(magic[:], 0); k == len(magic) && string(magic[:]) == cipher.FileMagic {
			return nil, fmt.Errorf("image set %s: %s: %w (%s)", label, n, ErrHeaderMissing, HeaderName)
		}
	}
	return &Set{dir: label, src: src, names: append([]string(nil), names...)}, nil
}

func openPlain(dir string, names []string, opts OpenOptions) (*Set, error) {
	if opts.RequireEncrypted {
		return nil, fmt.Errorf("image set %s: %w (no %s) and encryption is required", dir, ErrNotEncrypted, HeaderName)
	}
	// A set whose header was deleted is named as such at once by its first file; every
	// other file is checked as it is opened (Set.open): checking all of them here took a
	// tree of 200 processes (1,400 files) 5 ms, a fortieth of its restore.
	if len(names) > 0 && isEncryptedFile(filepath.Join(dir, names[0])) {
		return nil, fmt.Errorf("image set %s: %s: %w (%s)", dir, names[0], ErrHeaderMissing, HeaderName)
	}
	return &Set{dir: dir, names: names}, nil
}

// listFiles returns the regular files of dir, sorted, without the signature
// SignName: it is not one of the set's files (it is checked by VerifySignature).
func listFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("image set %s: %w", dir, err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && e.Name() != SignName {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

func contains(sorted []string, name string) bool {
	i := sort.SearchStrings(sorted, name)
	return i < len(sorted) && sorted[i] == name
}

func without(names []string, name string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if n != name {
			out = append(out, n)
		}
	}
	return out
}

// Dir returns the set's folder (the label of a set opened with OpenSource).
func (s *Set) Dir() string { return s.dir }

// Encrypted reports whether the set is encrypted.
func (s *Set) Encrypted() bool { return s.header != nil }

// Header returns the authenticated header of an encrypted set, nil for a plain one.
func (s *Set) Header() *cipher.Header { return s.header }

// Recipients returns the fingerprints an encrypted set is encrypted for.
func (s *Set) Recipients() []cipher.Fingerprint {
	if s.header == nil {
		return nil
	}
	return s.header.Recipients()
}

// Names returns the names of the set's files, sorted, without the sealed header.
func (s *Set) Names() []string { return append([]string(nil), s.names...) }

// Has reports whether the set holds a file of that name.
func (s *Set) Has(name string) bool { return contains(s.names, name) }

// Size returns the plaintext size of a file of the set.
func (s *Set) Size(name string) (int64, error) {
	if s.header != nil {
		f, ok := s.files[name]
		if !ok {
			return 0, fmt.Errorf("image set %s: no file %s: %w", s.dir, name, os.ErrNotExist)
		}
		return f.Size, nil
	}
	if s.src != nil {
		if !s.Has(name) {
			return 0, fmt.Errorf("image set %s: no file %s: %w", s.dir, name, os.ErrNotExist)
		}
		_, size, err := s.src.Open(name)
		return size, err
	}
	st, err := os.Stat(filepath.Join(s.dir, name))
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Open opens one file of the set for reading its plaintext. For an encrypted set
// every read is authenticated chunk by chunk; nothing is decrypted to disk.
func (s *Set) Open(name string) (*File, error) {
	if !validName(name) {
		return nil, fmt.Errorf("image set %s: bad file name %q", s.dir, name)
	}
	if !s.Has(name) {
		return nil, fmt.Errorf("image set %s: no file %s: %w", s.dir, name, os.ErrNotExist)
	}
	if s.src != nil {
		ra, size, err := s.src.Open(name)
		if err != nil {
			return nil, fmt.Errorf("image set %s: %w", s.dir, err)
		}
		return &File{name: name, size: size, ra: ra}, nil
	}
	f, st, err := openRegular(filepath.Join(s.dir, name))
	if err != nil {
		return nil, err
	}
	file, err := s.open(name, f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("image set %s: %w", s.dir, err)
	}
	return file, nil
}

// open makes the File of name, stored as f of size bytes: decrypting it, and
// checking each stored chunk against the signature, as the set needs.
func (s *Set) open(name string, f *os.File, size int64) (*File, error) {
	var hashes cipher.ChunkHashes
	if s.signed != nil {
		sf, ok := s.signed[name]
		switch {
		case !ok:
			return nil, fmt.Errorf("%s: %w: not listed in the signature (added)", name, ErrSignedFile)
		case sf.Size != size:
			return nil, fmt.Errorf("%s: %w: %d bytes, %d signed", name, ErrSignedFile, size, sf.Size)
		}
		hashes = sf.Chunks
	}
	if s.header == nil {
		var magic [len(cipher.FileMagic)]byte
		if n, _ := unix.Pread(int(f.Fd()), magic[:], 0); n == len(magic) && string(magic[:]) == cipher.FileMagic {
			return nil, fmt.Errorf("%s: %w (%s)", name, ErrHeaderMissing, HeaderName)
		}
		var ra io.ReaderAt = positional(f)
		if s.signed != nil {
			sra, err := cipher.NewSignedReaderAt(ra, size, name, hashes)
			if err != nil {
				return nil, err
			}
			ra = sra
		}
		return &File{name: name, f: f, size: size, ra: ra}, nil
	}
	dec, err := s.key.NewReaderAt(positional(f), size, s.files[name])
	if err != nil {
		return nil, err
	}
	if s.signed != nil {
		if err := dec.CheckSigned(hashes); err != nil {
			return nil, err
		}
	}
	return &File{name: name, f: f, size: dec.Size(), ra: dec, dec: dec}, nil
}

// Signed reports whether the set was opened with a verified signature: then
// every stored chunk read is checked against it.
func (s *Set) Signed() bool { return s.signed != nil }

// validName accepts plain file names only: no separators, no "." or "..".
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && filepath.Base(name) == name
}

// File is the plaintext of one file of a set. It reads sequentially (Read, Seek,
// WriteTo) and at offsets (ReadAt, safe for concurrent use).
type File struct {
	name string
	f    *os.File // nil for a file of a Source
	size int64
	ra   io.ReaderAt      // f, or dec
	dec  *cipher.ReaderAt // nil for a plaintext file
	off  int64            // position of Read
}

// Name returns the file's name within the set.
func (f *File) Name() string { return f.name }

// Size returns the plaintext size.
func (f *File) Size() int64 { return f.size }

// Read reads plaintext from the current position.
func (f *File) Read(p []byte) (int, error) {
	if f.off >= f.size {
		return 0, io.EOF
	}
	n, err := f.ra.ReadAt(p[:min(int64(len(p)), f.size-f.off)], f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// ReadAt reads plaintext at off.
func (f *File) ReadAt(p []byte, off int64) (int, error) { return f.ra.ReadAt(p, off) }

// Seek sets the position of Read.
func (f *File) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.size
	default:
		return 0, fmt.Errorf("%s: bad whence %d", f.name, whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("%s: negative position %d", f.name, offset)
	}
	f.off = offset
	return offset, nil
}

// WriteTo writes the rest of the plaintext to w. A whole encrypted file goes
// through the parallel decryption pipeline.
func (f *File) WriteTo(w io.Writer) (int64, error) {
	if f.dec != nil && f.off == 0 {
		n, err := f.dec.WriteTo(w)
		f.off = n
		return n, err
	}
	n, err := io.Copy(w, io.NewSectionReader(f.ra, f.off, f.size-f.off))
	f.off += n
	return n, err
}

// ReadEach reads the whole plaintext and hands it to put, a part at a time: each
// call gets consecutive slices of plaintext, the first at offset off. put is
// called from several goroutines at once, in no set order, and must be done with
// the slices when it returns; progress, if not nil, is told the bytes done from
// the caller's goroutine. An encrypted file is read and opened in place unit by
// unit (cipher.ReaderAt.DecryptEach): put takes the plaintext from where it was
// decrypted, in the decrypting core's cache, and sees only authenticated bytes.
func (f *File) ReadEach(put func(parts [][]byte, off int64) error, progress func(n int64)) error {
	if f.dec != nil {
		return f.dec.DecryptEach(put, progress)
	}
	return readEach(f.name, f.ra, f.size, put, progress)
}

// MapAt maps n bytes at off (a multiple of the page size) of a plaintext file of a
// folder read-only into memory, for a caller that hands them to the kernel without
// reading them itself (restore's process_vm_writev copies pages from the page cache to
// the process, where a read copied them to a buffer first): a concurrent truncation
// makes a read of the mapping in user space fault, where the kernel's copy fails with
// EFAULT. Unmap releases it. It fails with errors.ErrUnsupported for an encrypted file
// or one of a Source, whose bytes must be read.
func (f *File) MapAt(off int64, n int) ([]byte, error) {
	if f.dec != nil || f.f == nil {
		return nil, errors.ErrUnsupported
	}
	if off < 0 || n <= 0 || off+int64(n) > f.size {
		return nil, fmt.Errorf("%s: mapping %d bytes at %d of %d", f.name, n, off, f.size)
	}
	b, err := unix.Mmap(int(f.f.Fd()), off, n, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("%s: mapping %d bytes at %d: %w", f.name, n, off, err)
	}
	return b, nil
}

// Unmap releases what MapAt mapped.
func Unmap(b []byte) error { return unix.Munmap(b) }

// Close closes the file.
func (f *File) Close() error {
	if f.f == nil {
		return nil
	}
	return f.f.Close()
}

// problem is one thing wrong with a set: the file it concerns and the error.
type problem struct {
	file string
	err  error
}

func joinProblems(probs []problem) error {
	errs := make([]error, len(probs))
	for i, p := range probs {
		errs[i] = p.err
	}
	return errors.Join(errs...)
}

// checkManifest compares the folder's files (without the header) with the manifest
// of h: each listed file must be present, have the size its plaintext size
// encrypts to, and carry the set's id; no other file may be there. It needs no key.
func checkManifest(dir string, h *cipher.Header, present []string) []problem {
	var probs []problem
	listed := make(map[string]bool, len(h.Files))
	for _, fi := range h.Files {
		listed[fi.Name] = true
		if !contains(present, fi.Name) {
			probs = append(probs, problem{fi.Name, fmt.Errorf("%s: %w", fi.Name, ErrMissingFile)})
			continue
		}
		if err := checkFile(dir, h, fi); err != nil {
			probs = append(probs, problem{fi.Name, err})
		}
	}
	for _, n := range present {
		if !listed[n] {
			probs = append(probs, problem{n, fmt.Errorf("%s: %w", n, ErrUnexpectedFile)})
		}
	}
	// Anything else in the folder (a subfolder, a symlink, a FIFO) is added too:
	// the manifest is the whole set.
	for _, n := range nonRegular(dir) {
		if !listed[n] && n != HeaderName && n != SignName {
			probs = append(probs, problem{n, fmt.Errorf("%s: %w (not a regular file)", n, ErrUnexpectedFile)})
		}
	}
	return probs
}

// nonRegular returns the entries of dir that are not regular files, sorted.
func nonRegular(dir string) []string {
	ents, err := os.ReadDir(dir) // sorted; dir was just listed, an error here is moot
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if !e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	return out
}

// checkFile checks one encrypted file's length and prefix against the manifest.
func checkFile(dir string, h *cipher.Header, fi cipher.FileInfo) error {
	f, st, err := openRegular(filepath.Join(dir, fi.Name))
	if err != nil {
		return err
	}
	defer f.Close()
	if want := cipher.CiphertextSize(fi.Size); st.Size() != want {
		return &cipher.Error{File: fi.Name, Offset: min(st.Size(), want), Err: cipher.ErrSizeMismatch,
			Reason: fmt.Sprintf("file is %d bytes, but its %d plaintext bytes encrypt to %d: truncated or extended", st.Size(), fi.Size, want)}
	}
	_, err = cipher.CheckPrefix(f, fi.Name, h.SetID)
	return err
}

// regularOpenFlags open a file of a set for reading (openRegular, isEncryptedFile).
const regularOpenFlags = os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_NOFOLLOW

// openRegular opens a file of a set for reading, refusing anything but a regular file.
// The flags make the check safe against a file swapped after the folder was listed:
// O_NOFOLLOW refuses a symlink, and O_NONBLOCK keeps a FIFO from blocking the open for
// ever (it changes nothing for regular files).
func openRegular(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, regularOpenFlags, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s: not a regular file (%s)", path, st.Mode().Type())
	}
	return f, st, nil
}
