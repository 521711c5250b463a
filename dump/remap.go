package dump

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/internal/par"
	"github.com/imgtool/imgtool/internal/procfs"
)

// Link remaps, as CRIU 4.2's files-reg.c has them (--link-remap: check_path_remap,
// dump_linked_remap, create_link_remap): a file the tree uses (an open fd, a mapping, the
// executable) whose name it was opened by was removed while another name of it remains
// (link count above 0, "NAME (deleted)" in /proc, and no file of that very name) cannot be
// reopened by its name, and is no ghost either: its content lives on under the other name.
// With Options.LinkRemap the dump gives it one more name, a hard link link_remap.ID in the
// directory of the name it had (in the nearest parent that still exists when that
// directory is gone, as CRIU's trim_last_parent), made from the stopped tree's own file
// (linkat through /proc/self/fd of an O_PATH handle opened through the tree's /proc link:
// CRIU links its parasite's copy of the fd with AT_EMPTY_PATH, which needs
// CAP_DAC_READ_SEARCH; the link is the same). ID is a new reg entry id, written to
// files.img just before the file's own entry with only id, flags 0, pos 0, an empty owner
// and the link's name (as CRIU writes it: no mode, size or build id); remap-fpath.img
// gets orig_id the file's entry, remap_id ID, remap_type LINKED. Each reg entry of such a
// file gets its own link (two descriptions, or an fd and a mapping, two links), as CRIU's.
//
// The link is a visible name in the target's directory, and it is the set's: it stays
// after a successful dump until a restore opens the file through it and removes it. A
// dump that fails or is interrupted (context cancelled) removes every link it made before
// the tree runs again; so does one with LeaveRunning once the set is complete, as CRIU's
// delete_link_remaps (the tree goes on using its file; such a set restores only where the
// link exists again). A SIGKILL of imgtool between the link and the end of the dump leaves
// it, as a killed CRIU does. Without Options.LinkRemap such a file is refused before
// anything is touched (checkLinkRemaps), naming it, as CRIU refuses it ("Use link-remap
// option"); once the tree is stopped, in a process that appeared meanwhile, too.

// linkRemapPrefix starts the name of every link the dump makes: CRIU's.
const linkRemapPrefix = "link_remap."

// madeLink is a link the dump made, and the inode it names.
type madeLink struct {
	path string
	k    devIno
}

// linkState is what setState keeps of the link remaps of the tree.
type linkState struct {
	allowed bool       // Options.LinkRemap
	made    []madeLink // the links made so far, removed again by remove unless the dump succeeds
}

// isRemapped tells whether a file opened through a /proc link (link its target) still
// has a name, but not the one it was opened by: CRIU's link-remap case. As CRIU's
// check_path_remap, that is a name /proc reports " (deleted)" for, which does not open the
// same file: a file really named "x (deleted)" is not one. Shared memory and /proc files
// are not (see isShmem; files of /proc are refused where they are met).
func isRemapped(link string, st *unix.Stat_t) bool {
	if st.Nlink == 0 || !strings.HasPrefix(link, "/") || !strings.HasSuffix(link, deletedSuffix) ||
		isShmem(link, st) || strings.HasPrefix(link, "/proc/") {
		return false
	}
	var named unix.Stat_t
	return unix.Stat(link, &named) != nil || named.Dev != st.Dev || named.Ino != st.Ino
}

// isDeadProc tells whether a /proc link names the /proc directory of a process that has
// exited ("/proc/PID (deleted)", zdtm's unhashed_proc): CRIU's REMAP_TYPE PROCFS, which
// restores it with a helper process of that PID; imgtool refuses it.
func isDeadProc(link string) bool {
	return strings.HasPrefix(link, "/proc/") && strings.HasSuffix(link, deletedSuffix)
}

// deadProcReason is the refusal of a file isDeadProc names.
const deadProcReason = "it is in the /proc directory of a process that has exited: not supported (CRIU restores it with a helper process of that pid)"

// savedName is the name a file's reg entry records: for a ghost or a link remap the name
// it had, without the " (deleted)" of /proc.
func savedName(link string, st *unix.Stat_t) string {
	if isGhost(link, st) || isRemapped(link, st) {
		return ghostName(link)
	}
	return link
}

// linkable tells whether a file of this mode can be saved through a link: regular files
// and FIFOs (a FIFO's queued bytes are saved as for any FIFO). A directory has one name
// (rmdir leaves it none: a ghost); device nodes and sockets are refused.
func linkable(mode uint32) bool {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFIFO:
		return true
	}
	return false
}

// linkRemapRefusal says why the file st, named name before its name was removed, cannot
// be saved through a link, or "" when it can: without Options.LinkRemap (allowed), of a
// type a link cannot save, or in a directory (or nearest existing parent) the dump cannot
// write in. It touches nothing.
func linkRemapRefusal(allowed bool, st *unix.Stat_t, name string) string {
	switch {
	case !allowed:
		return "its name was removed while another name of it remains (a hard link): use --link-remap to save it through " +
			"a link made next to it (" + linkRemapPrefix + "N, as CRIU does)"
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return "a directory whose name was removed while it keeps another cannot be linked again (link-remap)"
	case !linkable(st.Mode):
		return fmt.Sprintf("its name was removed while another name of it remains, and a file of mode %#o cannot be saved "+
			"through a link (link-remap saves regular files and FIFOs)", st.Mode&unix.S_IFMT)
	}
	dir := existingDir(filepath.Dir(name))
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Sprintf("its name was removed while another name of it remains, and its link (link-remap) cannot be made in %s: %v", dir, err)
	}
	return ""
}

// existingDir returns dir, or its nearest parent that exists: where the link goes.
func existingDir(dir string) string {
	var st unix.Stat_t
	for dir != "/" && unix.Stat(dir, &st) != nil {
		dir = filepath.Dir(dir)
	}
	return dir
}

// treeFile is one file a process of the tree uses, as the precheck sees it.
type treeFile struct {
	pid, fd int    // fd -1 but for an open fd
	open    string // the /proc link that opens it
	what    string // "" for an fd, else "executable", "working directory", "mapping A-B"
	link    string // the link's target
	st      unix.Stat_t
}

// resource names the file in a refusal: what and the link, or for an fd the link after
// fdWhat.
func (f *treeFile) resource(fdWhat string) string {
	if f.what == "" {
		return fdWhat + f.link
	}
	return f.what + " " + f.link
}

// deletedTreeFiles lists, touching nothing, every file the processes procs use whose
// /proc name says it was deleted (its name removed): open fds (as precheck read them),
// executables, working directories and file mappings, in the order of procs, each
// process's looked at on every core at once. A process or file gone meanwhile is skipped
// (the stopped tree is looked at again). vmas are each process's mappings as precheck
// read them.
func deletedTreeFiles(procs []*liveProc, vmas map[int][]*vmaDesc) ([]*treeFile, error) {
	files := make([][]*treeFile, len(procs))
	if err := par.EachUntil(len(procs), func(i int) (err error) {
		files[i], err = deletedFilesOf(procs[i], vmas[procs[i].pid])
		return err
	}); err != nil {
		return nil, err
	}
	var all []*treeFile
	for i := range procs {
		all = append(all, files[i]...)
	}
	return all, nil
}

// deletedFilesOf is deletedTreeFiles for one process.
func deletedFilesOf(p *liveProc, vmas []*vmaDesc) ([]*treeFile, error) {
	pid := p.pid
	var out []*treeFile
	one := func(fd int, open, what string) error {
		f := &treeFile{pid: pid, fd: fd, open: open, what: what}
		var err error
		if f.link, err = os.Readlink(open); err != nil || !strings.HasSuffix(f.link, deletedSuffix) {
			return err
		}
		if err := unix.Stat(open, &f.st); err != nil {
			return err
		}
		out = append(out, f)
		return nil
	}
	skip := func(err error) error {
		if err != nil && !vanished(err) {
			return err
		}
		return nil
	}
	for _, f := range p.fds { // as precheck read them
		if strings.HasSuffix(f.link, deletedSuffix) {
			out = append(out, &treeFile{pid: pid, fd: f.fd, open: procfs.Path(pid, "fd", strconv.Itoa(f.fd)), link: f.link, st: f.st})
		}
	}
	for _, f := range []struct{ name, what string }{{"exe", "executable"}, {"cwd", "working directory"}} {
		if err := skip(one(-1, procfs.Path(pid, f.name), f.what)); err != nil {
			return nil, fmt.Errorf("process %d: %w", pid, err)
		}
	}
	for _, v := range vmas {
		if v.mapFile == "" || !strings.HasSuffix(v.path, deletedSuffix) {
			continue
		}
		if err := skip(one(-1, v.mapFile, fmt.Sprintf("mapping %#x-%#x", v.start, v.end))); err != nil {
			return nil, fmt.Errorf("process %d: %w", pid, err)
		}
	}
	return out, nil
}

// checkLinkRemaps refuses, before the tree is touched, every file of the tree that would
// be saved through a link (isRemapped) but cannot be: without Options.LinkRemap (allowed)
// all of them, naming each; with it, the ones linkRemapRefusal refuses. And the third
// kind of CRIU's remaps, which imgtool does not make: a working directory (or mapping)
// in the /proc directory of a process that has exited (open files of /proc are refused
// by inspectFd).
func checkLinkRemaps(files []*treeFile, allowed bool, refused *Refusals) {
	for _, f := range files {
		if f.fd < 0 && isDeadProc(f.link) {
			refused.add(refuse(f.pid, f.fd, f.resource(""), deadProcReason))
			continue
		}
		if !isRemapped(f.link, &f.st) {
			continue
		}
		if reason := linkRemapRefusal(allowed, &f.st, ghostName(f.link)); reason != "" {
			refused.add(refuse(f.pid, f.fd, f.resource(""), reason))
		}
	}
}

// remapOf records how a restore reopens reg entry regID, the file st opened through open
// (link its /proc target), when it has no name (a ghost, ghost.go) or not the one it was
// opened by (a link remap: a link is made now). refusal names the user in a refusal.
// Called before the entry itself joins files.img, so that a link's entry precedes it, as
// in CRIU's files.img.
func (s *setState) remapOf(regID uint32, link, open string, st *unix.Stat_t, refusal func(reason string) error) error {
	switch {
	case isGhost(link, st):
		return s.ghostFor(regID, open, st, refusal)
	case isRemapped(link, st):
		return s.linkFor(regID, ghostName(link), open, st, refusal)
	case isDeadProc(link):
		return refusal(deadProcReason)
	}
	return nil
}

// linkFor saves reg entry regID, the file st named name before its name was removed,
// through a new link: the link is made, its reg entry added to files.img and the remap
// to remap-fpath.img, as CRIU's dump_linked_remap.
func (s *setState) linkFor(regID uint32, name, open string, st *unix.Stat_t, refusal func(reason string) error) error {
	if reason := linkRemapRefusal(s.links.allowed, st, name); reason != "" {
		return refusal(reason)
	}
	id := s.newID()
	path, err := s.links.link(open, name, id, st)
	if err != nil {
		return err
	}
	s.files = append(s.files, &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(id),
		Reg: &regfile.RegFileEntry{Id: proto.Uint32(id), Flags: proto.Uint32(0), Pos: proto.Uint64(0),
			Fown: zeroFown(), Name: proto.String(path)}})
	s.ghosts.remaps = append(s.ghosts.remaps, &remap_file_path.RemapFilePathEntry{OrigId: proto.Uint32(regID),
		RemapId: proto.Uint32(id), RemapType: remap_file_path.RemapType_LINKED.Enum()})
	return nil
}

// link makes the link of file st (opened through open in the stopped tree, named name
// before) for reg entry id, and returns its path: link_remap.ID in name's directory, or in
// the nearest parent when the directory is gone (linkat says ENOENT), as CRIU's
// create_link_remap.
func (l *linkState) link(open, name string, id uint32, st *unix.Stat_t) (string, error) {
	fd, err := unix.Open(open, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("link-remap of %s: opening %s: %w", name, open, err)
	}
	defer unix.Close(fd)
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return "", fmt.Errorf("link-remap of %s: %w", name, err)
	}
	if fst.Dev != st.Dev || fst.Ino != st.Ino {
		return "", fmt.Errorf("link-remap of %s: %s is another file now", name, open)
	}
	base := linkRemapPrefix + strconv.FormatUint(uint64(id), 10)
	self := fmt.Sprintf("/proc/self/fd/%d", fd)
	for dir := filepath.Dir(name); ; dir = filepath.Dir(dir) {
		path := filepath.Join(dir, base)
		err := unix.Linkat(unix.AT_FDCWD, self, unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
		switch {
		case err == nil:
			l.made = append(l.made, madeLink{path, devIno{st.Dev, st.Ino}})
			return path, nil
		case errors.Is(err, unix.EEXIST):
			return "", fmt.Errorf("link-remap of %s: %s exists (a link an earlier dump made, not restored yet?)", name, path)
		case !errors.Is(err, unix.ENOENT) || dir == "/":
			return "", fmt.Errorf("link-remap of %s: linking it as %s: %w", name, path, err)
		}
		if _, serr := os.Stat(dir); serr == nil {
			// The directory is there: the file itself lost its last name meanwhile.
			return "", fmt.Errorf("link-remap of %s: linking it as %s: %w (its other names were removed meanwhile)", name, path, err)
		}
	}
}

// remove removes every link made so far that still names its file (a name something
// else took meanwhile is left alone), and forgets them.
func (l *linkState) remove() error {
	var failed []string
	for _, m := range l.made {
		var st unix.Stat_t
		if err := unix.Lstat(m.path, &st); err != nil || st.Dev != m.k.dev || st.Ino != m.k.ino {
			continue
		}
		if err := unix.Unlink(m.path); err != nil && !errors.Is(err, unix.ENOENT) {
			failed = append(failed, fmt.Sprintf("%s: %v", m.path, err))
		}
	}
	l.made = nil
	if len(failed) > 0 { // one line, as every error of the dump
		return fmt.Errorf("removing the link-remap links: %s", strings.Join(failed, "; "))
	}
	return nil
}

// removeLinks removes the links the dump made (link-remap): on failure, and after a dump
// that leaves the tree running, as CRIU's delete_link_remaps.
func (d *dumper) removeLinks() error {
	if d.set == nil {
		return nil
	}
	return d.set.links.remove()
}
