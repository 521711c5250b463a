package restore

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
)

// Ghost files (dump/ghost.go says what they are): a reg entry that remap-fpath.img points
// at a ghost-file-ID.img (REMAP_TYPE GHOST) names a file that was deleted. The first time
// the restore needs it, the file is made again as CRIU's files-reg.c makes it: under a
// temporary name in its old directory (NAME.cr.ID.ghost), with its content (the chunks
// of a sparse file written at their offsets, the holes left), owner, mode and times;
// then, for each name the set's entries give it, linked there (a directory: renamed
// there), opened O_PATH and unlinked, and the temporary name removed: the inode then
// lives on only in imgtool's handles, each on a dentry of its old name, so /proc shows
// the restored fds, mappings and working directories as "NAME (deleted)", as before.
// Every use reopens a handle through /proc/self/fd with its own flags. Directories
// missing on the way to a name are made for the moment and removed again. Nothing is left
// on disk once the ghost exists, whatever happens next. A name that exists again is not
// touched: the file keeps its temporary name (a warning says so). An encrypted set's
// ghost content is authenticated chunk by chunk as it is read, as every image is.

// remapGhostBit marks a ghost in remap_id in images older than remap_type.
const remapGhostBit = 0x80000000

// ghostPlan is one ghost file of the set.
type ghostPlan struct {
	id    uint32
	file  string // ghost-file-ID.img
	entry *ghost_file.GhostFileEntry
	size  int64    // a regular file's size
	names []string // the names its reg entries give it, sorted, each once
}

// temp is the name the ghost is made under before it takes its names: CRIU's.
func (g *ghostPlan) temp() string { return fmt.Sprintf("%s.cr.%x.ghost", g.names[0], g.id) }

// isDir tells whether the ghost is a directory.
func (g *ghostPlan) isDir() bool { return g.entry.GetMode()&unix.S_IFMT == unix.S_IFDIR }

// loadGhosts reads remap-fpath.img, when the set has one: pl.ghosts gets each reg file id
// that is a ghost, pl.links each one saved through a link (remap.go); remaps of other
// types are noted in pl.remapRefused for precheck.
func loadGhosts(pl *plan) error {
	const name = "remap-fpath.img"
	if !pl.src.has(name) {
		return nil
	}
	es, _, err := readEntries[remap_file_path.RemapFilePathEntry](pl.src, name)
	if err != nil {
		return err
	}
	byID := map[uint32]*ghostPlan{}
	for _, e := range es {
		typ, id := e.GetRemapType(), e.GetRemapId()
		if e.RemapType == nil { // images older than remap_type: the ghost bit, or LINKED
			typ = remap_file_path.RemapType_LINKED
			if id&remapGhostBit != 0 {
				typ, id = remap_file_path.RemapType_GHOST, id&^remapGhostBit
			}
		}
		fe := pl.files[e.GetOrigId()]
		if fe == nil || fe.Reg == nil {
			return fmt.Errorf("%s: remap of file id %d, which is not a regular file of files.img", name, e.GetOrigId())
		}
		switch typ {
		case remap_file_path.RemapType_GHOST:
		case remap_file_path.RemapType_LINKED:
			if pl.ghosts[fe.GetId()] != nil || pl.links[fe.GetId()] != nil {
				return fmt.Errorf("%s: file id %d is remapped twice", name, fe.GetId())
			}
			if err := pl.addLink(fe, id); err != nil { // remap.go
				return err
			}
			continue
		case remap_file_path.RemapType_PROCFS:
			pl.remapRefused = append(pl.remapRefused, fmt.Sprintf("%s (file id %d) is in the /proc directory of a process that had exited: not supported", fe.Reg.GetName(), fe.GetId()))
			continue
		default:
			return fmt.Errorf("%s: file id %d: unknown remap type %d", name, fe.GetId(), typ)
		}
		if pl.ghosts[fe.GetId()] != nil || pl.links[fe.GetId()] != nil {
			return fmt.Errorf("%s: file id %d is remapped twice", name, fe.GetId())
		}
		if n := fe.Reg.GetName(); !filepath.IsAbs(n) || filepath.Clean(n) != n || n == "/" {
			return fmt.Errorf("%s: deleted file id %d: %q is not a clean absolute path", name, fe.GetId(), n)
		}
		g := byID[id]
		if g == nil {
			g = &ghostPlan{id: id, file: image.KindByName("GHOST_FILE").FileName(id)}
			byID[id] = g
		}
		pl.ghosts[fe.GetId()] = g
		if !containsString(g.names, fe.Reg.GetName()) {
			g.names = append(g.names, fe.Reg.GetName())
			sort.Strings(g.names)
		}
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ghostList returns the ghosts of the set, by id.
func (pl *plan) ghostList() []*ghostPlan {
	seen := map[*ghostPlan]bool{}
	var out []*ghostPlan
	for _, g := range pl.ghosts {
		if !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// checkGhosts refuses, before any process exists, the remaps restore does not make and
// every ghost it could not make: its image unreadable, of a type other than a regular
// file, directory or FIFO, disagreeing with the entries that use it (mode, size), or its
// temporary name taken.
func checkGhosts(pl *plan) error {
	if len(pl.remapRefused) > 0 {
		return errors.New(strings.Join(pl.remapRefused, "; "))
	}
	for _, g := range pl.ghostList() {
		if err := readGhostHeader(pl.src, g); err != nil {
			return err
		}
		mode := g.entry.GetMode()
		for id, u := range pl.ghosts {
			if u != g {
				continue
			}
			r := pl.files[id].Reg
			if r.Mode != nil && r.GetMode() != mode {
				return fmt.Errorf("%s: deleted file %s (file id %d) has mode %#o, its ghost %#o", g.file, r.GetName(), id, r.GetMode(), mode)
			}
			if r.Size != nil && mode&unix.S_IFMT == unix.S_IFREG && int64(r.GetSize()) != g.size {
				return fmt.Errorf("%s: deleted file %s (file id %d) has size %d, its ghost %d bytes", g.file, r.GetName(), id, r.GetSize(), g.size)
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(g.temp(), &st); err == nil || !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("deleted file %s: %s, the name it is to be recreated under, is in the way", g.names[0], g.temp())
		}
		dir := filepath.Dir(g.names[0])
		for dir != "/" && unix.Stat(dir, &st) != nil {
			dir = filepath.Dir(dir)
		}
		if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("deleted file %s cannot be made again in %s: %w", g.names[0], dir, err)
		}
	}
	return nil
}

// readGhostHeader reads the entry of a ghost's image and the size of a regular file's
// content.
func readGhostHeader(src source, g *ghostPlan) error {
	f, err := src.open(g.file)
	if err != nil {
		return fmt.Errorf("deleted file %s: %w", g.names[0], err)
	}
	defer f.Close()
	rd, e, err := ghostReader(f, g.file)
	if err != nil {
		return err
	}
	g.entry = e
	switch e.GetMode() & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR, unix.S_IFIFO:
		return nil
	default:
		return fmt.Errorf("%s: deleted file %s has mode %#o: only regular files, directories and FIFOs are restored", g.file, g.names[0], e.GetMode())
	}
	if !e.GetChunks() {
		g.size = f.Size() - rd.Offset()
		if g.size < 0 {
			return fmt.Errorf("%s: truncated", g.file)
		}
		return nil
	}
	if e.Size == nil || e.GetSize() > math.MaxInt64 {
		return fmt.Errorf("%s: a chunked ghost file without a valid size (%v)", g.file, e.Size)
	}
	g.size = int64(e.GetSize())
	return nil
}

// ghostReader opens a ghost image and reads its entry.
func ghostReader(f imageFile, name string) (*image.Reader, *ghost_file.GhostFileEntry, error) {
	rd, err := image.NewReaderKind(f, image.KindByName("GHOST_FILE"))
	if err != nil {
		return nil, nil, err // the reader names the image
	}
	m, err := rd.Next()
	if err != nil {
		return nil, nil, err
	}
	e, ok := m.(*ghost_file.GhostFileEntry)
	if !ok {
		return nil, nil, fmt.Errorf("%s: first entry is %T", name, m)
	}
	return rd, e, nil
}

// regPath returns the path that opens the reg file fe: its name, or for a ghost a
// /proc/self/fd link of imgtool's handle of it, the ghost made on first use (for a file
// saved through a link, of the handle remap.go makes).
func (d *descriptions) regPath(pl *plan, fe *fdinfo.FileEntry) (string, error) {
	if lp := pl.links[fe.GetId()]; lp != nil {
		return d.linkPath(lp, fe.Reg.GetName())
	}
	g := pl.ghosts[fe.GetId()]
	if g == nil {
		return fe.Reg.GetName(), nil
	}
	hs := d.ghosts[g.id]
	if hs == nil {
		var err error
		if hs, err = makeGhost(pl.src, g, d.warn); err != nil {
			return "", fmt.Errorf("recreating deleted file %s: %w", g.names[0], err)
		}
		d.ghosts[g.id] = hs
	}
	h := hs[fe.Reg.GetName()]
	if h == nil {
		return "", fmt.Errorf("deleted file %s: no handle", fe.Reg.GetName())
	}
	return fmt.Sprint(ownHandle, h.Fd()), nil
}

// makeGhost makes the ghost g and returns an O_PATH handle of it for each of its names,
// on a dentry of that name, unlinked.
func makeGhost(src source, g *ghostPlan, warn func(string)) (hs map[string]*os.File, err error) {
	made, err := makeParents(filepath.Dir(g.names[0]))
	defer removeDirs(made)
	if err != nil {
		return nil, err
	}
	tmp := g.temp()
	h, err := createGhost(src, g, tmp)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	defer func() {
		if rerr := removeName(tmp, g.isDir()); rerr != nil && err == nil {
			err = rerr
		}
		if err != nil {
			for _, x := range hs {
				x.Close()
			}
			hs = nil
		}
	}()
	hs = map[string]*os.File{}
	for _, name := range g.names {
		nh, err := nameGhost(h, tmp, name, g.isDir(), warn)
		if err != nil {
			return hs, err
		}
		hs[name] = nh
	}
	return hs, nil
}

// nameGhost gives the ghost at tmp (handle h) the name name for a moment, and returns a
// handle opened through it once the name is removed again. A directory is renamed (it
// has one name). A name taken meanwhile is left alone: the handle is then h's.
func nameGhost(h *os.File, tmp, name string, dir bool, warn func(string)) (*os.File, error) {
	made, err := makeParents(filepath.Dir(name))
	defer removeDirs(made)
	if err != nil {
		return nil, err
	}
	if dir {
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, name, unix.RENAME_NOREPLACE)
		switch {
		case err == nil:
			// h's dentry moved with the directory: it is now name's.
			if err := removeName(name, true); err != nil {
				return nil, err
			}
			return dupHandle(h)
		case errors.Is(err, unix.ENOENT):
			// A directory has one name: it took an earlier one of its entries.
			return dupHandle(h)
		}
	} else {
		err = unix.Linkat(unix.AT_FDCWD, tmp, unix.AT_FDCWD, name, 0)
	}
	if errors.Is(err, unix.EEXIST) {
		warn(fmt.Sprintf("deleted file %s restored as %s (deleted): %s exists again", name, tmp, name))
		return dupHandle(h)
	}
	if err != nil {
		return nil, fmt.Errorf("naming it %s: %w", name, err)
	}
	nh, err := openHandle(name)
	if err == nil {
		err = sameInode(h, nh)
	}
	if rerr := removeName(name, false); err == nil {
		err = rerr
	}
	if err != nil {
		if nh != nil {
			nh.Close()
		}
		return nil, err
	}
	return nh, nil
}

// dupHandle returns a second handle of the same open file (a dentry and a mount).
func dupHandle(h *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(h.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup of %s: %w", h.Name(), err)
	}
	return os.NewFile(uintptr(fd), h.Name()), nil
}

// openHandle opens an O_PATH handle of name itself (never what a symlink there points at).
func openHandle(name string) (*os.File, error) {
	fd, err := unix.Open(name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// sameInode checks that two handles open the same inode.
func sameInode(a, b *os.File) error {
	var sa, sb unix.Stat_t
	if err := unix.Fstat(int(a.Fd()), &sa); err != nil {
		return err
	}
	if err := unix.Fstat(int(b.Fd()), &sb); err != nil {
		return err
	}
	if sa.Dev != sb.Dev || sa.Ino != sb.Ino {
		return fmt.Errorf("%s is not the file made at %s: changed meanwhile", b.Name(), a.Name())
	}
	return nil
}

// removeName removes a name of the ghost (rmdir for a directory); a name already gone is
// not an error.
func removeName(name string, dir bool) error {
	var err error
	if dir {
		err = unix.Rmdir(name)
	} else {
		err = unix.Unlink(name)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	return nil
}

// createGhost makes the ghost at tmp with its content and attributes and returns an
// O_PATH handle of it.
func createGhost(src source, g *ghostPlan, tmp string) (h *os.File, err error) {
	mode := g.entry.GetMode()
	defer func() {
		if err != nil {
			if h != nil {
				h.Close()
			}
			removeName(tmp, g.isDir())
		}
	}()
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		f, err := os.OpenFile(tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("creating %s: %w", tmp, err)
		}
		err = fillGhost(src, g, f)
		if err == nil { // the file f opened (following the magic link, as O_NOFOLLOW would not)
			var fd int
			if fd, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.O_PATH|unix.O_CLOEXEC, 0); err == nil {
				h = os.NewFile(uintptr(fd), tmp)
			}
		}
		f.Close()
		if err != nil {
			return h, err
		}
	case unix.S_IFDIR:
		if err := unix.Mkdir(tmp, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", tmp, err)
		}
		if h, err = openHandle(tmp); err != nil {
			return nil, err
		}
	case unix.S_IFIFO:
		if err := unix.Mknod(tmp, unix.S_IFIFO|0o600, 0); err != nil {
			return nil, fmt.Errorf("creating %s: %w", tmp, err)
		}
		if h, err = openHandle(tmp); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("mode %#o: not a regular file, directory or FIFO", mode)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(h.Fd()), &st); err != nil {
		return h, err
	}
	if st.Mode&unix.S_IFMT != mode&unix.S_IFMT || st.Uid != uint32(os.Geteuid()) {
		return h, fmt.Errorf("%s is not the file just made: changed meanwhile", tmp)
	}
	return h, setGhostAttrs(h, g.entry)
}

// setGhostAttrs gives the ghost its owner, mode (after the owner: chown clears set-id
// bits) and times, through its handle.
func setGhostAttrs(h *os.File, e *ghost_file.GhostFileEntry) error {
	p := fmt.Sprintf("/proc/self/fd/%d", h.Fd())
	if err := unix.Fchownat(unix.AT_FDCWD, p, int(e.GetUid()), int(e.GetGid()), 0); err != nil {
		return fmt.Errorf("owner %d:%d: %w", e.GetUid(), e.GetGid(), err)
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, p, e.GetMode()&0o7777, 0); err != nil {
		return fmt.Errorf("mode %#o: %w", e.GetMode()&0o7777, err)
	}
	if e.Atim == nil {
		return nil
	}
	ts := []unix.Timespec{
		{Sec: int64(e.Atim.GetTvSec()), Nsec: int64(e.Atim.GetTvUsec()) * 1000},
		{Sec: int64(e.GetMtim().GetTvSec()), Nsec: int64(e.GetMtim().GetTvUsec()) * 1000},
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, 0); err != nil {
		return fmt.Errorf("times: %w", err)
	}
	return nil
}

// fillGhost writes a regular ghost's content into f, read from its image: all of it after
// the entry, or each chunk at its offset in a file of the saved size (holes stay holes).
func fillGhost(src source, g *ghostPlan, f *os.File) error {
	img, err := src.open(g.file)
	if err != nil {
		return err
	}
	defer img.Close()
	rd, e, err := ghostReader(img, g.file)
	if err != nil {
		return err
	}
	if e.GetMode() != g.entry.GetMode() || e.GetChunks() != g.entry.GetChunks() {
		return fmt.Errorf("%s changed since it was checked", g.file)
	}
	if !e.GetChunks() {
		n, err := io.Copy(f, rd)
		if err != nil {
			return err // the reader names the image
		}
		if n != g.size {
			return fmt.Errorf("%s: %d bytes of content, %d expected", g.file, n, g.size)
		}
		return nil
	}
	if err := f.Truncate(g.size); err != nil {
		return fmt.Errorf("sizing to %d bytes: %w", g.size, err)
	}
	for {
		m, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		c, ok := m.(*ghost_file.GhostChunkEntry)
		if !ok {
			return fmt.Errorf("%s: entry %T", g.file, m)
		}
		off, n := c.GetOff(), c.GetLen()
		if off > uint64(g.size) || n > uint64(g.size)-off {
			return fmt.Errorf("%s: chunk of %d bytes at %d is past the file's size %d", g.file, n, off, g.size)
		}
		got, err := io.Copy(io.NewOffsetWriter(f, int64(off)), rd)
		if err != nil {
			return fmt.Errorf("chunk at %d: %w", off, err)
		}
		if uint64(got) != n {
			return fmt.Errorf("%s: chunk at %d: %d bytes, %d expected", g.file, off, got, n)
		}
	}
}

// makeParents makes the directories missing on the way to dir (mode 0700) and returns
// them, outermost first, for removeDirs.
func makeParents(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err == nil {
			break
		} else if !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: %w", d, err)
		}
		missing = append(missing, d)
		if d == "/" || d == "." {
			break
		}
	}
	var made []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := unix.Mkdir(missing[i], 0o700); err != nil {
			return made, fmt.Errorf("making the missing directory %s for the moment: %w", missing[i], err)
		}
		made = append(made, missing[i])
	}
	return made, nil
}

// removeDirs removes the directories makeParents made, innermost first.
func removeDirs(made []string) {
	for i := len(made) - 1; i >= 0; i-- {
		unix.Rmdir(made[i])
	}
}
