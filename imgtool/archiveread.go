package imgtool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/imgtool/imgtool/archive"
)

// One member of a container checkpoint archive is named ARCHIVE:MEMBER where a
// command takes one image file (decode -i, info, show): MEMBER is the member's name
// in the archive, as tar tf prints it ("checkpoint/core-1.img", "stats-dump"). A
// path that exists is always that file; otherwise the path is split at the last
// ':' whose left side is an archive (so ARCHIVE may hold ':' itself).

// splitArchiveMember splits p into an archive and a member name, when p names no
// file and a prefix of it before a ':' is an archive.
func splitArchiveMember(p string) (arch, member string, ok bool) {
	if _, err := os.Lstat(p); err == nil {
		return "", "", false // a real file path always wins
	}
	for i := strings.LastIndexByte(p, ':'); i > 0; i = strings.LastIndexByte(p[:i], ':') {
		if archive.IsArchive(p[:i]) {
			return p[:i], p[i+1:], true
		}
	}
	return "", "", false
}

// openArchiveMember opens ARCHIVE:MEMBER (decrypted in memory for an encrypted
// archive, with the keys given). handled is false when path is not of that form;
// an archive given alone is refused with the forms to use.
func openArchiveMember(p string, keys keyOptions) (rc io.ReadCloser, handled bool, err error) {
	arch, member, ok := splitArchiveMember(p)
	if !ok {
		if archive.IsArchive(p) {
			return nil, true, usageError(fmt.Errorf("%s is a container checkpoint archive, not an image: name one of its images as %s:%s/NAME.img, "+
				"or decode them all with -D %s -o FOLDER", p, p, archive.CheckpointDir, p))
		}
		return nil, false, nil
	}
	name := path.Clean(strings.TrimPrefix(member, "./"))
	if member == "" {
		return nil, true, usageError(fmt.Errorf("%s: no member named after the ':' (e.g. %s:%s/inventory.img)", p, arch, archive.CheckpointDir))
	}
	ar, err := openArchive(arch, keys)
	if err != nil {
		return nil, true, err
	}
	r, err := ar.OpenMember(name)
	if err != nil {
		ar.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, true, noMemberError(ar, arch, name)
		}
		return nil, true, err
	}
	return &memberReader{SectionReader: r, ar: ar, name: p}, true, nil
}

// noMemberError says that the archive has no member name, and where to look:
// its CRIU images are under checkpoint/, and a few of them are named.
func noMemberError(ar *archive.Archive, arch, name string) error {
	var images []string
	hint := ""
	for _, m := range ar.Members() {
		if m.Type != "file" {
			continue
		}
		if dir, base := path.Split(m.Name); dir == archive.CheckpointDir+"/" {
			images = append(images, base)
			if base == path.Base(name) && hint == "" {
				hint = fmt.Sprintf(" (did you mean %s:%s?)", arch, m.Name)
			}
		}
	}
	list := strings.Join(images, ", ")
	if len(images) > 8 {
		list = strings.Join(images[:8], ", ") + fmt.Sprintf(", ... (%d in all)", len(images))
	}
	if len(images) == 0 {
		return reworded(os.ErrNotExist, "archive %s has no member %s%s, and no CRIU images under %s/", arch, name, hint, archive.CheckpointDir)
	}
	return reworded(os.ErrNotExist, "archive %s has no member %s%s: its CRIU images are under %s/ (%s:%s/NAME): %s",
		arch, name, hint, archive.CheckpointDir, arch, archive.CheckpointDir, list)
}

// memberReader reads one member of an archive, named ARCHIVE:MEMBER in errors;
// Close closes the archive.
type memberReader struct {
	*io.SectionReader
	ar   *archive.Archive
	name string
}

func (m *memberReader) Name() string { return m.name }
func (m *memberReader) Close() error { return m.ar.Close() }
