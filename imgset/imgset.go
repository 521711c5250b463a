// Package imgset is an image set on disk: the folder of files one checkpoint consists
// of, plain or encrypted. Reading gives a plaintext view of each file (decrypted and
// authenticated chunk by chunk when the set is encrypted); writing streams each file to
// a temporary folder and puts the whole set in place atomically on Commit.
package imgset

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// OpenOptions says how to open a set.
type OpenOptions struct {
	// RequireEncrypted refuses a set without a valid sealed header, so that removing
	// the header cannot silently downgrade a set to plaintext.
	RequireEncrypted bool
}

// Set is an image set opened for reading.
type Set struct {
	dir   string
	names []string
}

// Open opens the image set in dir.
func Open(dir string, opts OpenOptions) (*Set, error) {
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
	if opts.RequireEncrypted {
		return nil, fmt.Errorf("image set %s is not encrypted (no sealed header) and encryption is required", dir)
	}
	return &Set{dir: dir, names: names}, nil
}

// listFiles returns the regular files of dir, sorted.
func listFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("image set %s: %w", dir, err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Dir returns the set's folder.
func (s *Set) Dir() string { return s.dir }

// Encrypted reports whether the set is encrypted.
func (s *Set) Encrypted() bool { return false }

// Names returns the names of the set's files, sorted, without the sealed header.
func (s *Set) Names() []string { return append([]string(nil), s.names...) }

// Has reports whether the set holds a file of that name.
func (s *Set) Has(name string) bool {
	i := sort.SearchStrings(s.names, name)
	return i < len(s.names) && s.names[i] == name
}

// Open opens one file of the set for reading its plaintext.
func (s *Set) Open(name string) (*File, error) {
	if !validName(name) {
		return nil, fmt.Errorf("image set %s: bad file name %q", s.dir, name)
	}
	if !s.Has(name) {
		return nil, fmt.Errorf("image set %s: no file %s: %w", s.dir, name, os.ErrNotExist)
	}
	f, err := os.Open(filepath.Join(s.dir, name))
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &File{name: name, f: f, size: st.Size()}, nil
}

// validName accepts plain file names only: no separators, no "." or "..".
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && filepath.Base(name) == name
}

// File is the plaintext of one file of a set. It reads sequentially and at offsets.
type File struct {
	name string
	f    *os.File
	size int64
}

// Name returns the file's name within the set.
func (f *File) Name() string { return f.name }

// Size returns the plaintext size.
func (f *File) Size() int64 { return f.size }

func (f *File) Read(p []byte) (int, error) { return f.f.Read(p) }

// ReadAt reads plaintext at off.
func (f *File) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// CreateOptions says how to write a new set.
type CreateOptions struct{}

// Writer writes a new image set. Files go to a temporary folder beside the target,
// which Commit renames into place; until then the target does not change.
type Writer struct {
	dir, tmp string
	open     map[string]*os.File
	done     bool
}

// Create starts writing a new set that Commit will place at dir. dir must not exist,
// or be an empty folder.
func Create(dir string, opts CreateOptions) (*Writer, error) {
	if err := checkTarget(dir); err != nil {
		return nil, err
	}
	parent, base := filepath.Split(filepath.Clean(dir))
	if parent == "" {
		parent = "."
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".imgtool-tmp-")
	if err != nil {
		return nil, fmt.Errorf("image set %s: %w", dir, err)
	}
	return &Writer{dir: dir, tmp: tmp, open: map[string]*os.File{}}, nil
}

func checkTarget(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("image set %s: %w", dir, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("image set %s: folder exists and is not empty", dir)
	}
	return nil
}

// Create creates one file of the set.
func (w *Writer) Create(name string) (io.WriteCloser, error) {
	if w.done {
		return nil, errors.New("image set: writer already committed or aborted")
	}
	if !validName(name) {
		return nil, fmt.Errorf("image set %s: bad file name %q", w.dir, name)
	}
	if _, dup := w.open[name]; dup {
		return nil, fmt.Errorf("image set %s: file %s written twice", w.dir, name)
	}
	f, err := os.OpenFile(filepath.Join(w.tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	w.open[name] = f
	return &setFile{f: f}, nil
}

type setFile struct {
	f      *os.File
	closed bool
}

func (s *setFile) Write(p []byte) (int, error) { return s.f.Write(p) }

func (s *setFile) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.f.Sync(); err != nil {
		s.f.Close()
		return err
	}
	return s.f.Close()
}

// Commit makes the set durable and puts it in place at dir.
func (w *Writer) Commit() error {
	if w.done {
		return errors.New("image set: writer already committed or aborted")
	}
	w.done = true
	for name, f := range w.open {
		// Closing twice is harmless; files the caller did not close are synced here.
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			os.RemoveAll(w.tmp)
			return fmt.Errorf("image set %s: %s: %w", w.dir, name, err)
		}
		f.Close()
	}
	if err := syncDir(w.tmp); err != nil {
		os.RemoveAll(w.tmp)
		return err
	}
	if err := checkTarget(w.dir); err != nil {
		os.RemoveAll(w.tmp)
		return err
	}
	os.Remove(w.dir) // an empty target folder, if any
	if err := os.Rename(w.tmp, w.dir); err != nil {
		os.RemoveAll(w.tmp)
		return fmt.Errorf("image set %s: %w", w.dir, err)
	}
	if err := os.Chmod(w.dir, 0o700); err != nil {
		return err
	}
	return syncDir(filepath.Dir(filepath.Clean(w.dir)))
}

// Abort removes everything written. It is safe to call after Commit (it does nothing).
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	for _, f := range w.open {
		f.Close()
	}
	return os.RemoveAll(w.tmp)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
