// Package archive reads container checkpoint archives: the one tar file (plain, gzip
// or zstd) that Podman (podman container checkpoint --export), CRI-O and the
// kubelet's checkpoint API write. It holds CRIU's image set under checkpoint/ and
// the container's metadata beside it (config.dump, spec.dump, stats-dump,
// network.status, rootfs-diff.tar, ...).
//
// The compression is told from the content (magic bytes), never from the name:
// Podman 4.3 writes zstd under a .tar.gz name. The archive is read once, as a
// stream, and nothing is unpacked to disk:
//
//   - an uncompressed archive in a regular file is indexed: each member is read in
//     place, at its offset in the file, when it is needed (pages files of any size
//     cost no memory);
//   - a compressed archive cannot be read at an offset, so the members a reader
//     needs (the image set under checkpoint/ and the small metadata files) are kept
//     in memory, at most Options.MaxMemory bytes in all (DefaultMaxMemory); the
//     others (rootfs-diff.tar, devshm-checkpoint.tar, ...) are only sized. An
//     archive over the limit is refused with an error that says so; decompressing
//     it to a file first (zstd -d, gunzip) makes it an indexed one.
package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// Limits. A hostile archive is refused with an error when it goes beyond one.
const (
	// DefaultMaxMemory is how many bytes of a compressed archive's members are kept
	// in memory when Options.MaxMemory is 0.
	DefaultMaxMemory = 2 << 30
	// MaxMembers bounds the entries of an archive (a checkpoint has a few dozen).
	MaxMembers = 1 << 16
	// MaxMetaSize bounds a metadata file read whole (config.dump, spec.dump, ...).
	MaxMetaSize = 64 << 20
	// maxZstdWindow bounds the zstd decoder's window (and so its memory).
	maxZstdWindow = 128 << 20
)

// CheckpointDir is the folder of the archive that holds CRIU's image set.
const CheckpointDir = "checkpoint"

// Compression names how an archive is compressed.
type Compression string

// The compressions an archive may have.
const (
	None Compression = "none"
	Gzip Compression = "gzip"
	Zstd Compression = "zstd"
)

// ErrNotArchive is wrapped by the error of Open for a file that is not a tar
// archive, plain or compressed.
var ErrNotArchive = errors.New("not a container checkpoint archive (tar, tar.gz or tar.zst)")

// Options says how to read an archive.
type Options struct {
	// MaxMemory bounds the bytes of a compressed archive kept in memory; 0 is
	// DefaultMaxMemory.
	MaxMemory int64
	// Identities are the private keys tried on an encrypted archive (see Encrypt);
	// without one, Open of an encrypted archive fails with a *imgset.KeyRequiredError.
	Identities []cipher.Identity
}

// Member is one entry of the archive.
type Member struct {
	Name    string    `json:"name"` // cleaned: no leading "./", no trailing "/"
	Type    string    `json:"type"` // "file", "dir", "symlink", "link", or "other"
	Size    int64     `json:"size"`
	Mode    int64     `json:"mode"`
	ModTime time.Time `json:"mtime"`
}

// Archive is an opened container checkpoint archive.
type Archive struct {
	path        string
	compression Compression
	members     []Member
	data        map[string]io.ReaderAt // regular members that can be read, by name
	sizes       map[string]int64
	file        *os.File       // the archive's file while members are read from it; nil otherwise
	header      *cipher.Header // an encrypted archive's, authenticated; nil for a plain one
	plain       io.ReaderAt    // an encrypted archive's original, decrypting; nil for a plain one
}

func openFile(path string) (*os.File, error) { return os.Open(path) }

// Detect tells the compression of an archive from its first bytes: gzip and zstd
// by their magic, a tar by the ustar magic of its first header.
func Detect(head []byte) (Compression, error) {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return Gzip, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd, nil
	case len(head) >= 263 && string(head[257:262]) == "ustar":
		return None, nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "", fmt.Errorf("%w: xz compression is not supported (decompress it with xz -d)", ErrNotArchive)
	case bytes.HasPrefix(head, []byte("BZh")):
		return "", fmt.Errorf("%w: bzip2 compression is not supported (decompress it with bunzip2)", ErrNotArchive)
	}
	return "", ErrNotArchive
}

// IsArchive reports whether path is a regular file whose content starts like an
// archive Open reads. A folder (an image set) is not.
func IsArchive(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return false
	}
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	_, err = Detect(head[:n])
	return err == nil
}

// Open reads the archive at path: its members' names and sizes, and the data of
// those a reader needs (see the package comment).
func Open(path string, opts Options) (*Archive, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", path, err)
	}
	a, err := open(path, f, opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("archive %s: %w", path, err)
	}
	if a.file == nil {
		f.Close()
	}
	return a, nil
}

// Read reads an archive from a stream (it cannot be indexed: what is needed is
// kept in memory, within opts.MaxMemory). name labels it in errors.
func Read(name string, r io.Reader, opts Options) (*Archive, error) {
	a, err := read(name, nil, r, opts)
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", name, err)
	}
	return a, nil
}

func open(name string, f *os.File, opts Options) (*Archive, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file", ErrNotArchive)
	}
	if sealed(f, st.Size()) {
		a, err := openSealed(name, f, st.Size(), opts)
		if err == nil {
			a.file = f
		}
		return a, err
	}
	a, err := read(name, &indexed{ra: f, size: st.Size()}, nil, opts)
	if err == nil && a.compression == None {
		a.file = f
	}
	return a, err
}

// indexed is an archive that can be read at any offset: a file, or the plaintext
// of an encrypted archive. An uncompressed one is read in place.
type indexed struct {
	ra   io.ReaderAt
	size int64
}

// read reads an archive from idx, or when idx is nil from the stream r.
func read(name string, idx *indexed, r io.Reader, opts Options) (*Archive, error) {
	if idx != nil {
		r = io.NewSectionReader(idx.ra, 0, idx.size)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	maxMem := opts.MaxMemory
	if maxMem <= 0 {
		maxMem = DefaultMaxMemory
	}
	head, _ := br.Peek(512)
	comp, err := Detect(head)
	if err != nil {
		return nil, err
	}
	a := &Archive{path: name, compression: comp, data: map[string]io.ReaderAt{}, sizes: map[string]int64{}}
	var src io.Reader = br
	switch comp {
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		src = zr
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		src = zr
	}
	var pos *posReader
	if comp == None && idx != nil {
		// The tar reader reads headers in 512-byte blocks and nothing ahead, so
		// the position of the stream after Next is the member's data.
		pos = &posReader{r: io.NewSectionReader(idx.ra, 0, idx.size)}
		src = pos
	}
	tr := tar.NewReader(src)
	var memory int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("tar: %w", err)
		}
		if len(a.members) >= MaxMembers {
			return nil, fmt.Errorf("more than %d members", MaxMembers)
		}
		m, err := member(hdr)
		if err != nil {
			return nil, err
		}
		if len(a.members) == 0 && m.Name == imgset.HeaderName && idx == nil {
			return nil, errors.New("an encrypted archive: it is read from a file, with a key")
		}
		if _, dup := a.sizes[m.Name]; dup && m.Type == "file" {
			return nil, fmt.Errorf("member %s appears twice", m.Name)
		}
		a.members = append(a.members, m)
		if m.Type != "file" {
			continue
		}
		a.sizes[m.Name] = m.Size
		if pos != nil {
			if m.Size > idx.size-pos.pos {
				return nil, fmt.Errorf("member %s: %d bytes, beyond the end of the file: truncated", m.Name, m.Size)
			}
			a.data[m.Name] = io.NewSectionReader(idx.ra, pos.pos, m.Size)
			continue
		}
		if !kept(m) {
			continue
		}
		if m.Size > maxMem-memory {
			return nil, fmt.Errorf("member %s: %d bytes would take more than the %d bytes a compressed archive may keep in memory (decompress the archive to a file first)", m.Name, m.Size, maxMem)
		}
		buf := make([]byte, m.Size)
		if _, err := io.ReadFull(tr, buf); err != nil {
			return nil, fmt.Errorf("member %s: %w", m.Name, unexpected(err))
		}
		memory += m.Size
		a.data[m.Name] = bytes.NewReader(buf)
	}
	if len(a.members) == 0 {
		return nil, fmt.Errorf("%w: an empty tar", ErrNotArchive)
	}
	return a, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// kept reports whether a compressed archive's member is kept in memory: the files
// of the image set and the metadata files at the top (not the tars of files).
func kept(m Member) bool {
	if dir, _ := path.Split(m.Name); dir == CheckpointDir+"/" {
		return true
	}
	return !strings.Contains(m.Name, "/") && !strings.HasSuffix(m.Name, ".tar") && m.Size <= MaxMetaSize
}

// member describes a tar header, with its name cleaned.
func member(hdr *tar.Header) (Member, error) {
	name := strings.TrimPrefix(hdr.Name, "./")
	name = strings.TrimSuffix(name, "/")
	if name == "" || name == "." {
		name = "."
	} else {
		name = path.Clean(name)
	}
	if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
		return Member{}, fmt.Errorf("member %q: a name outside the archive", hdr.Name)
	}
	if hdr.Size < 0 {
		return Member{}, fmt.Errorf("member %s: negative size", name)
	}
	m := Member{Name: name, Size: hdr.Size, Mode: hdr.Mode, ModTime: hdr.ModTime.UTC()}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		m.Type = "file"
	case tar.TypeDir:
		m.Type = "dir"
	case tar.TypeSymlink:
		m.Type = "symlink"
	case tar.TypeLink:
		m.Type = "link"
	case tar.TypeGNUSparse:
		return Member{}, fmt.Errorf("member %s: sparse files are not supported", name)
	default:
		m.Type = "other"
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return Member{}, fmt.Errorf("member %s: sparse files are not supported", name)
		}
	}
	return m, nil
}

// posReader reads and counts the position; Seek lets the tar reader skip
// members' data without reading it.
type posReader struct {
	r   io.ReadSeeker
	pos int64
}

func (p *posReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.pos += int64(n)
	return n, err
}

func (p *posReader) Seek(off int64, whence int) (int64, error) {
	n, err := p.r.Seek(off, whence)
	if err == nil {
		p.pos = n
	}
	return n, err
}

// Close releases the archive's file.
func (a *Archive) Close() error {
	if a.file == nil {
		return nil
	}
	err := a.file.Close()
	a.file = nil
	return err
}

// Path returns the name the archive was opened by.
func (a *Archive) Path() string { return a.path }

// Compression returns how the archive is compressed.
func (a *Archive) Compression() Compression { return a.compression }

// Members returns the archive's entries, in archive order.
func (a *Archive) Members() []Member { return append([]Member(nil), a.members...) }

// Size returns the size of the regular member name, and whether there is one.
func (a *Archive) Size(name string) (int64, bool) {
	n, ok := a.sizes[name]
	return n, ok
}

// SizeUnder returns the bytes of the regular members under folder dir.
func (a *Archive) SizeUnder(dir string) int64 {
	var n int64
	for _, m := range a.members {
		if m.Type == "file" && strings.HasPrefix(m.Name, dir+"/") {
			n += m.Size
		}
	}
	return n
}

// ReadFile returns the whole content of the regular member name, at most
// MaxMetaSize bytes; an error wrapping os.ErrNotExist when the archive has none.
func (a *Archive) ReadFile(name string) ([]byte, error) {
	size, ok := a.sizes[name]
	if !ok {
		return nil, fmt.Errorf("archive %s: no member %s: %w", a.path, name, os.ErrNotExist)
	}
	if size > MaxMetaSize {
		return nil, fmt.Errorf("archive %s: member %s: %d bytes, more than the %d read whole", a.path, name, size, MaxMetaSize)
	}
	ra, ok := a.data[name]
	if !ok {
		return nil, fmt.Errorf("archive %s: member %s was not kept in memory", a.path, name)
	}
	buf := make([]byte, size)
	if n, err := ra.ReadAt(buf, 0); n < len(buf) {
		return nil, fmt.Errorf("archive %s: member %s: %w", a.path, name, unexpected(err))
	}
	return buf, nil
}

// Set opens the CRIU image set of the archive (its checkpoint/ folder) through
// imgset: explore reads it as it reads a folder.
func (a *Archive) Set(opts imgset.OpenOptions) (*imgset.Set, error) {
	src := &source{files: map[string]io.ReaderAt{}, sizes: map[string]int64{}}
	for name, ra := range a.data {
		dir, base := path.Split(name)
		if dir != CheckpointDir+"/" {
			continue
		}
		src.names = append(src.names, base)
		src.files[base] = ra
		src.sizes[base] = a.sizes[name]
	}
	if len(src.names) == 0 {
		return nil, fmt.Errorf("archive %s: no CRIU image set (no %s/ folder)", a.path, CheckpointDir)
	}
	sort.Strings(src.names)
	return imgset.OpenSource(a.path+":"+CheckpointDir, src, opts)
}

// source is the image set of an archive, for imgset.OpenSource.
type source struct {
	names []string
	files map[string]io.ReaderAt
	sizes map[string]int64
}

func (s *source) Names() []string { return s.names }

func (s *source) Open(name string) (io.ReaderAt, int64, error) {
	ra, ok := s.files[name]
	if !ok {
		return nil, 0, fmt.Errorf("no file %s: %w", name, os.ErrNotExist)
	}
	return ra, s.sizes[name], nil
}

// OpenMember returns a reader of the content of the regular member name (as
// Members names it: "checkpoint/core-1.img", "stats-dump"), read in place or from
// memory; an error wrapping os.ErrNotExist when the archive has no such regular
// member.
func (a *Archive) OpenMember(name string) (*io.SectionReader, error) {
	size, ok := a.sizes[name]
	if !ok {
		return nil, fmt.Errorf("archive %s: no member %s: %w", a.path, name, os.ErrNotExist)
	}
	ra, ok := a.data[name]
	if !ok {
		return nil, fmt.Errorf("archive %s: member %s of a compressed archive is not kept in memory (only %s/ and the metadata files are): decompress the archive to a file first", a.path, name, CheckpointDir)
	}
	return io.NewSectionReader(ra, 0, size), nil
}
