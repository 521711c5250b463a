package restore

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"golang.org/x/sys/unix"
)

// Link remaps (dump/remap.go says what they are; CRIU's --link-remap): a reg entry that
// remap-fpath.img points at another reg entry (REMAP_TYPE LINKED) names a file whose name
// was removed while another remained; the other entry names the hard link the dump made
// for it (CRIU's link_remap.N, in the same directory). The pre-check checks, before any
// process exists, that the link is there and is the file the set saved (the mode, size and
// build id of the file's own entry, read through the link) and that the old name's
// directory can be written. The first time the restore needs the file (an fd's
// description, a mapping, an executable) it does what CRIU's open_path does: the link is
// linked to the old name, that name opened (an O_PATH handle, then each use reopens it
// through /proc/self/fd with its own flags) and removed again, so the restored process
// sees "NAME (deleted)" in /proc as before, on the same inode as the name that remains
// (ghost.go's nameGhost: the same steps; a name that exists again is left alone, the file
// then reached through the link's own name, with a warning). Once the whole tree is
// restored, before it runs, every link of the set is removed, as CRIU's
// try_clean_remaps. A restore that fails leaves the links, as CRIU's does (it cleans only
// ghosts then): the set can be restored again.

// linkPlan is one link of the set.
type linkPlan struct {
	id    uint32   // the link's reg entry
	path  string   // its name
	names []string // the names of the entries remapped to it, sorted, each once
}

// addLink notes that reg entry fe was saved through the link of reg entry linkID.
func (pl *plan) addLink(fe *fdinfo.FileEntry, linkID uint32) error {
	le := pl.files[linkID]
	if le == nil || le.Reg == nil {
		return fmt.Errorf("remap-fpath.img: file id %d is remapped to file id %d, which is not a regular file of files.img", fe.GetId(), linkID)
	}
	for _, n := range []string{fe.Reg.GetName(), le.Reg.GetName()} {
		if !filepath.IsAbs(n) || filepath.Clean(n) != n || n == "/" {
			return fmt.Errorf("remap-fpath.img: file id %d through link file id %d: %q is not a clean absolute path", fe.GetId(), linkID, n)
		}
	}
	if pl.links == nil {
		pl.links = map[uint32]*linkPlan{}
	}
	var lp *linkPlan
	for _, x := range pl.links {
		if x.id == linkID {
			lp = x
		}
	}
	if lp == nil {
		lp = &linkPlan{id: linkID, path: le.Reg.GetName()}
	}
	pl.links[fe.GetId()] = lp
	if !containsString(lp.names, fe.Reg.GetName()) {
		lp.names = append(lp.names, fe.Reg.GetName())
		sort.Strings(lp.names)
	}
	return nil
}

// linkList returns the links of the set, by id.
func (pl *plan) linkList() []*linkPlan {
	seen := map[*linkPlan]bool{}
	var out []*linkPlan
	for _, lp := range pl.links {
		if !seen[lp] {
			seen[lp] = true
			out = append(out, lp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// checkLinks refuses, before any process exists, a link remap the restore could not
// make: its link gone (or a symbolic link), not the file saved (mode, size, build id of
// the file's entry), or the file's old name in a directory that cannot be written.
func checkLinks(pl *plan) error {
	ids := make([]uint32, 0, len(pl.links))
	for id := range pl.links {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		lp, r := pl.links[id], pl.files[id].Reg
		name := r.GetName()
		var st unix.Stat_t
		if err := unix.Lstat(lp.path, &st); err != nil {
			return fmt.Errorf("%s (file id %d) is saved through the link %s a dump made for it (--link-remap), which is gone "+
				"(a dump with --leave-running removes it, as CRIU's): %w", name, id, lp.path, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK { // a link is the file itself, never a symlink to one
			return fmt.Errorf("%s (file id %d): its link %s is a symbolic link", name, id, lp.path)
		}
		through := &regfile.RegFileEntry{Name: &lp.path, Mode: r.Mode, Size: r.Size, BuildId: r.BuildId}
		if err := checkRegFile(through); err != nil {
			return fmt.Errorf("%s (file id %d), through its link: %w", name, id, err)
		}
		dir := existingDir(filepath.Dir(name))
		if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("%s (file id %d) cannot be named again in %s to be reopened: %w", name, id, dir, err)
		}
	}
	return nil
}

// existingDir returns dir, or its nearest parent that exists.
func existingDir(dir string) string {
	var st unix.Stat_t
	for dir != "/" && unix.Stat(dir, &st) != nil {
		dir = filepath.Dir(dir)
	}
	return dir
}

// linkPath returns a /proc/self/fd path of imgtool's handle of the file lp links, on a
// dentry of its old name name, made on first use.
func (d *descriptions) linkPath(lp *linkPlan, name string) (string, error) {
	hs := d.links[lp.id]
	if hs == nil {
		hs = map[string]*os.File{}
		d.links[lp.id] = hs
	}
	h := hs[name]
	if h == nil {
		var err error
		if h, err = openThroughLink(lp.path, name, d.warn); err != nil {
			return "", fmt.Errorf("reopening %s through its link %s: %w", name, lp.path, err)
		}
		hs[name] = h
	}
	return fmt.Sprint(ownHandle, h.Fd()), nil
}

// openThroughLink gives the file at link the name name for a moment and returns a handle
// opened through that name, once it is removed again (ghost.go's nameGhost).
func openThroughLink(link, name string, warn func(string)) (*os.File, error) {
	h, err := openHandle(link)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return nameGhost(h, link, name, false, warn)
}

// removeLinks removes every link of the set, once the tree is restored and before it
// runs, as CRIU's try_clean_remaps after a restore; one gone already is no error.
func (r *restorer) removeLinks() error {
	var first error
	for _, lp := range r.pl.linkList() {
		if err := removeName(lp.path, false); err != nil && first == nil {
			first = fmt.Errorf("the link of %s (--link-remap): %w", lp.names[0], err)
		}
	}
	return first
}
