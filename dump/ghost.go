package dump

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	criutime "github.com/checkpoint-restore/go-criu/v8/crit/images/time"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
)

// Ghost files, as CRIU's files-reg.c has them: a file a process holds open (or maps, or
// has as its working directory or executable) whose last name was removed (link count 0)
// cannot be reopened by path. Its reg_file_entry keeps the name it had (without the
// " (deleted)" /proc adds), and a remap_file_path_entry (remap-fpath.img, REMAP_TYPE
// GHOST) points it at ghost-file-ID.img: mode, owner, times and, for a regular file, the
// content. A restore recreates the file next to its old name, opens it wherever the set
// uses it and unlinks it again. One ghost per inode, however many descriptions, mappings
// and processes use it.

// DefaultGhostLimit is the largest content of a ghost file a dump saves unless
// Options.GhostLimit says otherwise: 1 MiB, CRIU's default --ghost-limit.
const DefaultGhostLimit = 1 << 20

// ghostChunksThresh: from this size on a regular ghost file is saved in chunks, its holes
// left out (CRIU's GHOST_CHUNKS_THRESH); smaller ones whole, after the entry.
const ghostChunksThresh = 3 * 4096

const deletedSuffix = " (deleted)"

// extent is a run of bytes of a ghost file that holds data.
type extent struct{ off, len int64 }

// ghostFile is one ghost of the set.
type ghostFile struct {
	id      uint32
	entry   *ghost_file.GhostFileEntry
	open    string   // a /proc link that opens the file while the tree is stopped
	extents []extent // the data saved (regular files): the whole file when not chunked
}

// ghostState is what setState keeps of the ghosts of the tree.
type ghostState struct {
	limit int64 // Options.GhostLimit, resolved: -1 for none
	byIno map[devIno]*ghostFile
	list  []*ghostFile
	// remaps are remap-fpath.img's entries, the ghosts' and the links' (remap.go), in the
	// order the files were met, as CRIU writes them.
	remaps []*remap_file_path.RemapFilePathEntry
}

// ghostLimit resolves Options.GhostLimit: 0 is the default, a negative value allows no
// content at all (-1).
func ghostLimit(opt int64) int64 {
	switch {
	case opt == 0:
		return DefaultGhostLimit
	case opt < 0:
		return -1
	}
	return opt
}

// isGhost tells whether a file opened through a /proc link (link its target) is a
// ghost: an inode of a file system path without a name left. Shared memory (memfds, and
// MAP_SHARED anonymous memory, "/dev/zero (deleted)") has none either, but is saved as
// shared memory; the other files of the kernel's internal shmem mount (SysV segments)
// and pseudo files ("anon_inode:...") are not files a restore can make again.
func isGhost(link string, st *unix.Stat_t) bool {
	if st.Nlink != 0 || !strings.HasPrefix(link, "/") || isShmem(link, st) {
		return false
	}
	dev, err := shmemDev()
	return err == nil && st.Dev != dev
}

// ghostName is the name a ghost's reg entry records: the link without " (deleted)".
func ghostName(link string) string { return strings.TrimSuffix(link, deletedSuffix) }

var shmemDevOnce struct {
	sync.Once
	dev uint64
	err error
}

// shmemDev returns the device of the kernel's internal shmem mount, where memfds and
// MAP_SHARED anonymous memory live (CRIU's kdat.shmem_dev), from a memfd of ours.
func shmemDev() (uint64, error) {
	s := &shmemDevOnce
	s.Do(func() {
		fd, err := unix.MemfdCreate("imgtool-shmem-dev", unix.MFD_CLOEXEC)
		if err != nil {
			s.err = fmt.Errorf("memfd_create: %w", err)
			return
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			s.err = fmt.Errorf("fstat a memfd: %w", err)
			return
		}
		s.dev = st.Dev
	})
	return s.dev, s.err
}

// isShmem tells whether a regular file is a shmem object the dump saves as a memfd: a
// memfd, or MAP_SHARED anonymous memory, which the kernel names "/dev/zero (deleted)"
// and which a process may hold an fd of (opened through /proc/PID/map_files, zdtm's
// shmemfd).
func isShmem(link string, st *unix.Stat_t) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	if strings.HasPrefix(link, "/memfd:") {
		return true
	}
	if link != "/dev/zero"+deletedSuffix {
		return false
	}
	dev, err := shmemDev()
	return err == nil && st.Dev == dev
}

// ghostKind tells whether mode is a file type a ghost can be: regular files (with their content),
// directories (a removed working directory or open directory) and FIFOs (their queued
// bytes are saved as for any FIFO). Removed device nodes, sockets and symlinks are
// refused where they are met.
func ghostKind(mode uint32) bool {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFIFO:
		return true
	}
	return false
}

// ghostData lists the bytes of a regular file a ghost saves, as CRIU does: a file of
// fewer than ghostChunksThresh bytes whole, a larger one by its data extents
// (SEEK_DATA/SEEK_HOLE; the whole file on a file system without them). It returns the
// extents, whether they are chunks, and their total size, and gives up as soon as the
// total passes limit (over is then true).
func ghostData(f *os.File, size, limit int64) (ext []extent, chunks bool, total int64, over bool, err error) {
	if size < ghostChunksThresh {
		if size > 0 {
			ext = []extent{{0, size}}
		}
		return ext, false, size, size > max(limit, 0), nil
	}
	fd := int(f.Fd())
	for hole := int64(0); hole < size; {
		data, err := unix.Seek(fd, hole, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			return ext, true, total, false, nil
		case err != nil && hole == 0: // no SEEK_DATA here: all of it is data
			data, hole = 0, size
		case err != nil:
			return nil, true, 0, false, fmt.Errorf("SEEK_DATA at %d: %w", hole, err)
		default:
			if hole, err = unix.Seek(fd, data, unix.SEEK_HOLE); err != nil {
				return nil, true, 0, false, fmt.Errorf("SEEK_HOLE at %d: %w", data, err)
			}
		}
		hole = min(hole, size)
		if hole <= data {
			break
		}
		total += hole - data
		if total > limit {
			return nil, true, total, true, nil
		}
		ext = append(ext, extent{data, hole - data})
	}
	return ext, true, total, false, nil
}

// limitReason is the refusal of a ghost file whose content passes the limit.
func limitReason(total, limit int64) string {
	if limit < 0 {
		return fmt.Sprintf("it was deleted and its content (%d bytes) would be saved as a ghost file, but the ghost file limit allows none (--ghost-limit)", total)
	}
	return fmt.Sprintf("it was deleted and its content, %d bytes, is over the ghost file limit of %d bytes (--ghost-limit)", total, limit)
}

// ghostTooBig measures the content of a regular ghost file opened through open, touching
// nothing, and returns its size when it passes limit, else 0. A file it cannot measure is
// measured again once the tree is stopped, where a failure is reported.
func ghostTooBig(open string, st *unix.Stat_t, limit int64) int64 {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0
	}
	f, err := os.OpenFile(open, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer f.Close()
	if _, _, total, over, err := ghostData(f, st.Size, limit); err == nil && over {
		return total
	}
	return 0
}

// checkGhosts refuses, before the tree is touched, every ghost file among the tree's
// deleted files whose content passes the limit (Options.GhostLimit): fds, mappings and
// executables, each inode once. It touches nothing (the files are read through /proc).
func checkGhosts(files []*treeFile, opt int64, refused *Refusals) {
	limit := ghostLimit(opt)
	seen := map[devIno]bool{}
	for _, f := range files { // deletedTreeFiles, remap.go
		k := devIno{f.st.Dev, f.st.Ino}
		if !isGhost(f.link, &f.st) || seen[k] {
			continue
		}
		seen[k] = true
		if total := ghostTooBig(f.open, &f.st, limit); total != 0 {
			refused.add(refuse(f.pid, f.fd, f.resource("unlinked file "), limitReason(total, limit)))
		}
	}
}

// ghostFor records that reg entry regID (named name) is a ghost file, the inode st opened
// through open: the first time the inode is met its ghost is measured (the tree is
// stopped); every time a remap entry is added. refusal makes the refusal naming the user
// (the process and its fd, mapping, working directory or executable).
func (s *setState) ghostFor(regID uint32, open string, st *unix.Stat_t, refusal func(reason string) error) error {
	gs := &s.ghosts
	if !ghostKind(st.Mode) {
		return refusal("a deleted file of this type cannot be restored")
	}
	k := devIno{st.Dev, st.Ino}
	g := gs.byIno[k]
	if g == nil {
		g = &ghostFile{id: uint32(len(gs.list) + 1), open: open, entry: &ghost_file.GhostFileEntry{
			Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid), Mode: proto.Uint32(st.Mode),
			Dev: proto.Uint32(kdev(st.Dev)), Ino: proto.Uint64(st.Ino),
			Atim: timeval(st.Atim), Mtim: timeval(st.Mtim),
		}}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			f, err := os.OpenFile(open, unix.O_RDONLY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("open the deleted file %s: %w", open, err)
			}
			ext, chunks, total, over, err := ghostData(f, st.Size, gs.limit)
			f.Close()
			if err != nil {
				return fmt.Errorf("deleted file %s: %w", open, err)
			}
			if over {
				return refusal(limitReason(total, gs.limit))
			}
			g.extents = ext
			if chunks {
				g.entry.Chunks, g.entry.Size = proto.Bool(true), proto.Uint64(uint64(st.Size))
			}
		}
		if gs.byIno == nil {
			gs.byIno = map[devIno]*ghostFile{}
		}
		gs.byIno[k] = g
		gs.list = append(gs.list, g)
	}
	gs.remaps = append(gs.remaps, &remap_file_path.RemapFilePathEntry{OrigId: proto.Uint32(regID),
		RemapId: proto.Uint32(g.id), RemapType: remap_file_path.RemapType_GHOST.Enum()})
	return nil
}

// kdev is a device number as the kernel keeps it (major << 20 | minor), the form CRIU
// writes ghost_file_entry.dev in.
func kdev(dev uint64) uint32 { return unix.Major(dev)<<20 | unix.Minor(dev) }

func timeval(ts unix.Timespec) *criutime.Timeval {
	return &criutime.Timeval{TvSec: proto.Uint64(uint64(ts.Sec)), TvUsec: proto.Uint64(uint64(ts.Nsec / 1000))}
}

// writeGhosts writes remap-fpath.img and one ghost-file-ID.img per ghost, the content
// read through the stopped tree's own fds and mappings.
func (d *dumper) writeGhosts() error {
	gs := &d.set.ghosts
	if len(gs.remaps) == 0 {
		return nil
	}
	ms := make([]proto.Message, len(gs.remaps))
	for i, r := range gs.remaps {
		ms[i] = r
	}
	if err := d.writeImage("remap-fpath.img", ms...); err != nil {
		return err
	}
	for _, g := range gs.list {
		if err := d.writeGhost(g); err != nil {
			return err
		}
	}
	return nil
}

// writeGhost writes one ghost-file-ID.img: the entry, then the content whole, or each
// chunk's entry followed by its bytes.
func (d *dumper) writeGhost(g *ghostFile) error {
	name := image.KindByName("GHOST_FILE").FileName(g.id)
	w, err := d.create(name)
	if err != nil {
		return err
	}
	iw, err := image.NewWriter(w, image.KindByName("GHOST_FILE"))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := iw.WriteEntry(g.entry); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if len(g.extents) > 0 {
		f, err := os.OpenFile(g.open, unix.O_RDONLY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open the deleted file %s: %w", g.open, err)
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		for _, e := range g.extents {
			if g.entry.GetChunks() {
				if err := iw.WriteEntry(&ghost_file.GhostChunkEntry{Len: proto.Uint64(uint64(e.len)), Off: proto.Uint64(uint64(e.off))}); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			if err := d.copyGhost(iw, f, e, buf); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	if err := iw.Close(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return d.finish(w)
}

// copyGhost copies the bytes of one extent into the image.
func (d *dumper) copyGhost(w io.Writer, f *os.File, e extent, buf []byte) error {
	for off := e.off; off < e.off+e.len; {
		if err := d.checkCtx(); err != nil {
			return err
		}
		n := min(int64(len(buf)), e.off+e.len-off)
		got, err := f.ReadAt(buf[:n], off)
		if int64(got) != n {
			return fmt.Errorf("the deleted file shrank: %d bytes at %d: %v", got, off, err)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		off += n
	}
	return nil
}
