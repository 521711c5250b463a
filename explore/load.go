// Package explore computes, from an image set, what crit's "x" command shows (the
// process tree, each process's files, memory areas and resident pages) and more:
// the set's sockets and a summary of the whole set.
//
// Everything is read through the image codec and imgset, so plain and encrypted sets
// look the same. Only the small protobuf images are loaded; pages files are read
// only by ProcessArgs (command lines and environments) and SearchMemory, a page
// range at a time (resident pages come from the pagemaps alone).
//
// Where crit prints an uninformative or wrong value, the model keeps the right one in
// its exported fields; the test checks that crit's text can still be derived from it.
package explore

import (
	"errors"
	"fmt"
	"io/fs"

	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
)

// FileError reports a file of the set that is missing, of another type than the one
// needed, or without the entries it must have.
type FileError struct {
	File   string // name of the file in the set
	Reason string // what was wrong, e.g. "missing" or "not a CORE image (magic FDINFO)"
	Err    error  // underlying error, if any
}

func (e *FileError) Error() string {
	if e.Err != nil {
		return e.File + ": " + e.Reason + ": " + e.Err.Error()
	}
	return e.File + ": " + e.Reason
}

func (e *FileError) Unwrap() error { return e.Err }

// ErrMissing is wrapped by the FileError of a file the set does not hold.
var ErrMissing = errors.New("file missing from the image set")

func missing(name string) error {
	return &FileError{File: name, Reason: "missing"}
}

// Is lets errors.Is(err, ErrMissing) match a missing file.
func (e *FileError) Is(target error) bool { return target == ErrMissing && e.Reason == "missing" }

// loader reads the images of one set, each at most once.
type loader struct {
	set    *imgset.Set
	images map[string]*image.Image
	files  *fileTable // built on first use
}

func newLoader(set *imgset.Set) *loader {
	return &loader{set: set, images: map[string]*image.Image{}}
}

// image reads the image name, which must be of the kind crit calls kind.
func (l *loader) image(name, kind string) (*image.Image, error) {
	if img, ok := l.images[name]; ok {
		return img, nil
	}
	f, err := l.set.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, missing(name)
	}
	if err != nil {
		return nil, &FileError{File: name, Reason: "cannot open", Err: err}
	}
	defer f.Close()
	if k := image.KindByFileName(name); k != nil && k.Raw {
		return nil, &FileError{File: name, Reason: "a raw image, not a " + kind + " image"}
	}
	img, err := image.ReadImage(f)
	if err != nil {
		var fe *image.FormatError
		if errors.As(err, &fe) {
			return nil, err // already names the file and the offset
		}
		return nil, &FileError{File: name, Reason: "unreadable", Err: err}
	}
	if img.Kind.Name != kind {
		return nil, &FileError{File: name, Reason: fmt.Sprintf("not a %s image (magic %s)", kind, img.Kind.Name)}
	}
	l.images[name] = img
	return img, nil
}

// optional reads the image name when the set holds it, and returns nil when not.
func (l *loader) optional(name, kind string) (*image.Image, error) {
	img, err := l.image(name, kind)
	if errors.Is(err, ErrMissing) {
		return nil, nil
	}
	return img, err
}

// first returns the first entry of the image name, of type T.
func first[T proto.Message](l *loader, name, kind string) (T, error) {
	var zero T
	img, err := l.image(name, kind)
	if err != nil {
		return zero, err
	}
	if len(img.Entries) == 0 {
		return zero, &FileError{File: name, Reason: "no entries"}
	}
	m, ok := img.Entries[0].Msg.(T)
	if !ok {
		return zero, &FileError{File: name, Reason: fmt.Sprintf("entry is a %T", img.Entries[0].Msg)}
	}
	return m, nil
}

// entries returns the entries of an image, all of type T.
func entries[T proto.Message](img *image.Image, name string) ([]T, error) {
	out := make([]T, 0, len(img.Entries))
	for i, e := range img.Entries {
		m, ok := e.Msg.(T)
		if !ok {
			return nil, &FileError{File: name, Reason: fmt.Sprintf("entry %d is a %T", i, e.Msg)}
		}
		out = append(out, m)
	}
	return out, nil
}
