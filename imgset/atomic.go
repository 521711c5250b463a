package imgset

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/leftover"
)

// Leftover folders and files of interrupted writes live beside the set, never in
// it, and are named "." + the set's name + ".imgtool-" + what + "-" + random, so
// that a crash never adds a file to a set (Open would refuse it) and leftovers
// are easy to find (ListLeftovers).
//
// A new set that will replace an existing one is named after the inode number of
// the folder it replaces: "-new-i<INO>-<random>". The exchange of the two folders
// is one rename, after which that name holds the old set, until it is renamed
// "-old-"; comparing the folder's inode with INO tells which side of the exchange
// a leftover is on at every moment, so the old set is never taken for the new one.
const (
	newInfix    = ".imgtool-new-"  // a new set being written, or not yet put in place
	oldInfix    = ".imgtool-old-"  // an old set replaced, being deleted (or, see ListLeftovers, moved aside)
	headerInfix = ".imgtool-seal-" // a new header being written by Rekey
)

// ErrBusy: another process holds the set's lock (an in-place encrypt, decrypt or
// rekey of the same set is running).
var ErrBusy = errors.New("another imgtool process is changing this image set")

// ErrNotDurable: an in-place rewrite put the new set in place (and removed the
// old one), but syncing the folder that holds it failed, so a system crash may
// still bring back the old set. There is nothing to redo: the set on disk is the
// new one.
var ErrNotDurable = errors.New("the new set is in place, but it may not survive a system crash")

// StoppedError: an operation stopped because its context was cancelled (by a
// signal, in the CLI) before its result was put in place, and it removed what it
// had written, so that no partial output (for decrypt, plaintext) is left.
type StoppedError struct {
	Dir       string // the set or folder being written or rewritten
	Partial   string // the temporary folder or file written so far; "" if none was made
	RemoveErr error  // why Partial could not be removed, if it could not
	InPlace   bool   // Dir is a set that was being rewritten: it is as it was
	Cause     error  // context.Cause of the context
}

func (e *StoppedError) Error() string {
	var b strings.Builder
	b.WriteString(e.Cause.Error())
	switch {
	case e.Partial == "":
		b.WriteString(" before writing anything")
	case e.RemoveErr != nil:
		fmt.Fprintf(&b, "; could not remove the partial output %s: %v", filepath.Clean(e.Partial), e.RemoveErr)
	default:
		fmt.Fprintf(&b, "; removed the partial output %s", filepath.Clean(e.Partial))
	}
	if e.InPlace {
		fmt.Fprintf(&b, "; %s is unchanged", e.Dir)
	}
	return b.String()
}

func (e *StoppedError) Unwrap() error { return e.Cause }

// stopped is the error of an operation on dir stopped by ctx before it put
// anything in place, once it removed its partial output (partial, "" if none).
func stopped(ctx context.Context, dir, partial string, removeErr error, inPlace bool) error {
	return &StoppedError{Dir: dir, Partial: partial, RemoveErr: removeErr, InPlace: inPlace, Cause: context.Cause(ctx)}
}

func parentDir(dir string) string { return filepath.Dir(filepath.Clean(dir)) }

func setBase(dir string) string { return filepath.Base(filepath.Clean(dir)) }

func leftoverPrefix(dir string) string { return "." + setBase(dir) + ".imgtool-" }

// newPrefix is the name prefix of the temporary folder of a new set for dir; with
// replaces, of one that replaces the folder of that inode number.
func newPrefix(dir string, replaces uint64) string {
	p := "." + setBase(dir) + newInfix
	if replaces != 0 {
		p += "i" + strconv.FormatUint(replaces, 10) + "-"
	}
	return p
}

// LeftoverKind says what a leftover beside a set is.
type LeftoverKind int

const (
	// LeftoverNew is a new set: unfinished, or finished and never put in place.
	// The set folder is the old set and the leftover is of no use.
	LeftoverNew LeftoverKind = iota + 1
	// LeftoverOld is an old set that a rewrite replaced: when the set folder
	// exists, the set is the new one and this is (part of) the old one, which the
	// rewrite was deleting. When the set folder is missing, a rewrite on a
	// filesystem without RENAME_EXCHANGE was stopped between its two renames:
	// this is the whole old set; rename it back to the set's name to recover.
	LeftoverOld
	// LeftoverHeader is a new header (rekey) never put in place.
	LeftoverHeader
)

func (k LeftoverKind) String() string {
	switch k {
	case LeftoverNew:
		return "unfinished new set"
	case LeftoverOld:
		return "old set"
	case LeftoverHeader:
		return "unfinished header"
	}
	return "unknown"
}

// Leftover is one thing an interrupted write left beside a set.
type Leftover struct {
	Path string
	Kind LeftoverKind
}

// ListLeftovers lists what interrupted writes of the set in dir left beside it.
// While dir exists it holds a whole set, old or new, and every leftover can go
// (RemoveLeftovers, or the next in-place operation on the set, removes those of
// processes that are gone). If dir is missing, see LeftoverOld.
func ListLeftovers(dir string) ([]Leftover, error) {
	parent, prefix := parentDir(dir), leftoverPrefix(dir)
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil, err
	}
	var out []Leftover
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		path := filepath.Join(parent, e.Name())
		if kind := leftoverKind(path, strings.TrimPrefix(e.Name(), "."+setBase(dir))); kind != 0 {
			out = append(out, Leftover{Path: path, Kind: kind})
		}
	}
	return out, nil
}

// leftoverKind classifies the leftover at path whose name, without the leading
// "." + set name, is rest (".imgtool-...").
func leftoverKind(path, rest string) LeftoverKind {
	switch {
	case strings.HasPrefix(rest, oldInfix):
		return LeftoverOld
	case strings.HasPrefix(rest, headerInfix):
		return LeftoverHeader
	case strings.HasPrefix(rest, newInfix):
		ino, ok := replacedInode(strings.TrimPrefix(rest, newInfix))
		var st unix.Stat_t
		if ok && unix.Lstat(path, &st) == nil && st.Ino == ino {
			return LeftoverOld // exchanged: the name of the new set now holds the old one
		}
		return LeftoverNew
	}
	return 0
}

// replacedInode parses the "i<INO>-" that starts the random part of a new set
// that replaces a folder.
func replacedInode(s string) (uint64, bool) {
	num, _, ok := strings.Cut(strings.TrimPrefix(s, "i"), "-")
	if !ok || !strings.HasPrefix(s, "i") {
		return 0, false
	}
	ino, err := strconv.ParseUint(num, 10, 64)
	return ino, err == nil
}

// Leftovers lists the paths of ListLeftovers.
func Leftovers(dir string) ([]string, error) {
	left, err := ListLeftovers(dir)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(left))
	for i, l := range left {
		out[i] = l.Path
	}
	return out, nil
}

// RemoveLeftovers removes what interrupted writes of the set in dir left beside
// it, and returns what it removed. It takes the set's lock (ErrBusy if an
// in-place operation on the set runs) and removes only leftovers whose own lock
// it can take, that is, of processes that are gone. It refuses when dir is
// missing: then a leftover may be the only whole copy of the set (LeftoverOld).
func RemoveLeftovers(dir string) ([]string, error) {
	lock, err := lockSet(dir)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	return removeStale(dir, lock)
}

// setLock is an exclusive flock(2) on a folder (internal/leftover): the folder
// of a set for the whole of an in-place operation, or the temporary folder of a
// new set while it is written. The kernel drops it when the process dies, so a
// leftover whose lock can be taken is provably not in use.
type setLock = leftover.Lock

// lockSet takes the lock of the set folder dir without waiting: ErrBusy if another
// process holds it. The folder can be exchanged by the holder just before we
// lock it, so the lock is kept only if dir still names the folder locked.
func lockSet(dir string) (*setLock, error) {
	for range 5 {
		l, err := leftover.Take(dir, false)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("image set %s: %w (it holds the lock on the set folder); try again when it is done", dir, ErrBusy)
		}
		if err != nil {
			return nil, fmt.Errorf("image set %s: %w", dir, missingSetHint(dir, err))
		}
		if l != nil {
			return l, nil
		}
	}
	return nil, fmt.Errorf("image set %s: %w (the folder keeps being replaced)", dir, ErrBusy)
}

// makeTempDir creates a new folder beside dir named prefix + random and locks it
// (waiting only for a cleaner that took it in the instant between the two).
func makeTempDir(dir, prefix string) (string, *setLock, error) {
	for range 5 {
		tmp, err := os.MkdirTemp(parentDir(dir), prefix)
		if err != nil {
			return "", nil, err
		}
		l, err := leftover.Take(tmp, true)
		if err != nil {
			os.Remove(tmp)
			return "", nil, err
		}
		if l != nil {
			return tmp, l, nil
		}
	}
	return "", nil, fmt.Errorf("image set %s: temporary folders keep disappearing", dir)
}

// removeStale removes the leftovers of the set in dir that no live process holds,
// while the caller holds the set's lock. Without flock it removes nothing, since
// nothing proves a leftover is not in use.
func removeStale(dir string, set *setLock) ([]string, error) {
	if !set.Locked() {
		return nil, nil
	}
	left, err := ListLeftovers(dir)
	if err != nil {
		return nil, err
	}
	return removeDead(dir, left)
}

// removeStaleOutput removes the leftovers of dead runs beside out, the target of
// a new set or folder (missing, or an empty folder), before one is written there:
// otherwise the unfinished outputs of killed "-o OUT" runs (possibly plaintext)
// would stay forever, since only in-place operations cleaned up. It never
// removes anything that may be the only copy of a set: when out is missing and a
// non-empty old set is left beside it (see LeftoverOld), it removes nothing. Like
// removeStale it removes only what it can lock, so a live writer's folder stays.
// It is best effort: what it cannot remove stays, and the write goes on.
func removeStaleOutput(out string) []string {
	if lock, err := lockSet(out); err == nil {
		defer lock.Unlock()
		removed, _ := removeStale(out, lock)
		return removed
	} else if !errors.Is(err, os.ErrNotExist) || len(oldSetCandidates(out)) > 0 {
		return nil // busy, unreadable, or the only copy of a set may be beside it
	}
	left, err := ListLeftovers(out)
	if err != nil {
		return nil
	}
	removed, _ := removeDead(out, left)
	return removed
}

// removeDead removes the leftovers left of dir that it can lock, that is, that no
// live process holds, and returns those it removed.
func removeDead(dir string, left []Leftover) ([]string, error) {
	paths := make([]string, len(left))
	for i, l := range left {
		paths[i] = l.Path
	}
	removed, err := leftover.RemoveDead(paths)
	if len(removed) > 0 {
		err = errors.Join(err, syncDir(parentDir(dir)))
	}
	if err != nil {
		return removed, fmt.Errorf("image set %s: removing leftovers: %w", dir, err)
	}
	return removed, nil
}

// missingSetHint adds to err, when dir is missing and an interrupted rewrite left
// the old set beside it, how to get it back. Empty folders are no candidates (an
// older version created the "-old-" folder before renaming the set onto it); if
// several old sets are left (a rewrite killed while deleting one, without flock
// to remove it later), all are named, the one moved aside last first.
func missingSetHint(dir string, err error) error {
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	cands := oldSetCandidates(dir)
	switch len(cands) {
	case 0:
		return err
	case 1:
		return fmt.Errorf("%w; an interrupted in-place rewrite left the whole old set in %s: rename it to %s to recover it", err, cands[0], dir)
	}
	return fmt.Errorf("%w; interrupted in-place rewrites left old sets in %s (the one moved aside last first; the others may be partly deleted): rename the whole one to %s to recover it",
		err, strings.Join(cands, ", "), dir)
}

// oldSetCandidates lists the non-empty LeftoverOld folders beside dir, the most
// recently changed (renamed, or files unlinked) first.
func oldSetCandidates(dir string) []string {
	left, err := ListLeftovers(dir)
	if err != nil {
		return nil
	}
	type cand struct {
		path  string
		ctime unix.Timespec
	}
	var cands []cand
	for _, l := range left {
		var st unix.Stat_t
		if l.Kind != LeftoverOld || unix.Lstat(l.Path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || isEmptyDir(l.Path) {
			continue
		}
		cands = append(cands, cand{l.Path, st.Ctim})
	}
	slices.SortStableFunc(cands, func(a, b cand) int { return cmp.Compare(b.ctime.Nano(), a.ctime.Nano()) })
	out := make([]string, len(cands))
	for i, c := range cands {
		out[i] = c.path
	}
	return out
}

// isEmptyDir reports whether the folder at path has no entries (false if it
// cannot be read: better named than missed).
func isEmptyDir(path string) bool {
	d, err := os.Open(path)
	if err != nil {
		return false
	}
	defer d.Close()
	_, err = d.Readdirnames(1)
	return errors.Is(err, io.EOF)
}

// crashPoint is called at the points of an in-place rewrite where a crash leaves
// a distinct state on disk ("exchanged", "moved aside"); tests make it panic
// there to look at that state.
var crashPoint = func(string) {}

// renameExchange is renameat2(RENAME_EXCHANGE); tests replace it to exercise the
// fallback for filesystems without it.
var renameExchange = func(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}

// syncFolder fsyncs a folder once a new set is in place in it; tests replace it
// to make that fail.
var syncFolder = syncDir

// randomSuffix is the random part of an "-old-" name; tests replace it to force
// name collisions.
var randomSuffix = func() string { return strconv.FormatUint(uint64(rand.Uint32()), 10) }

// notDurable is the error of an in-place rewrite that put the new set in place
// but could not sync the parent folder (syncErr, possibly joined with an error
// removing the old set).
func notDurable(dir string, syncErr, removeErr error) error {
	err := fmt.Errorf("image set %s: %w: %w", dir, ErrNotDurable, syncErr) // syncErr names the folder
	return errors.Join(err, removeErr)
}

// exchangeInto atomically replaces the set at dir, locked as old, with the
// finished set at tmp, then deletes the old one. With RENAME_EXCHANGE both paths
// exist at every moment: before the swap dir is the old set, after it the new
// one; tmp then holds the old set (its inode tells, see newPrefix) and is renamed
// "-old-" at once, then its files are removed, then the folder. Without it (some
// filesystems lack the flag), see moveInto.
//
// Once the new set is in place, a failure to sync the parent folder does not
// stop the removal of the old set (for encrypt, the plaintext): the error,
// ErrNotDurable, says the set is the new one and only durability is uncertain.
func exchangeInto(tmp, dir string, old *setLock) error {
	err := renameExchange(tmp, dir)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		return moveInto(tmp, dir, old)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("image set %s: exchanging with the new set: %w", dir, err)
	}
	syncErr := syncFolder(parentDir(dir))
	crashPoint("exchanged")
	aside := oldName(dir, tmp)
	if err := os.Rename(tmp, aside); err != nil {
		aside = tmp // still removable under its name, which ListLeftovers reads as old
	}
	return removeOld(dir, aside, old, syncErr)
}

// oldName is the "-old-" name of a replaced set, with the random part of tmp.
func oldName(dir, tmp string) string {
	random := tmp[strings.LastIndexByte(tmp, '-')+1:]
	return filepath.Join(parentDir(dir), "."+setBase(dir)+oldInfix+random)
}

// moveInto is exchangeInto without RENAME_EXCHANGE: the old set is renamed to an
// "-old-" name, then the new one to dir. A crash between the two renames leaves
// no dir, with the whole old set in "-old-" (and the whole new one in "-new-"):
// ListLeftovers, Open and the docs say to rename the old one back.
func moveInto(tmp, dir string, old *setLock) error {
	crashPoint("moving aside")
	aside, err := renameAside(dir)
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("image set %s: moving the old set aside: %w", dir, err)
	}
	crashPoint("moved aside")
	if err := os.Rename(tmp, dir); err != nil {
		if rerr := os.Rename(aside, dir); rerr != nil {
			return fmt.Errorf("image set %s: %v; the old set is in %s (rename it to %s), the new one in %s", dir, err, aside, dir, tmp)
		}
		os.RemoveAll(tmp)
		return fmt.Errorf("image set %s: %w", dir, err)
	}
	return removeOld(dir, aside, old, syncFolder(parentDir(dir)))
}

// renameAside renames the set folder dir to a fresh "-old-" name beside it and
// returns that name. The name is never created first: an empty "-old-" folder
// left by a crash would be taken for the old set (and, without flock, nothing
// removes it). A name that exists is never replaced: the next one is tried.
func renameAside(dir string) (string, error) {
	for range 10 {
		aside := filepath.Join(parentDir(dir), "."+setBase(dir)+oldInfix+randomSuffix())
		err := renameNoReplace(dir, aside)
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return "", err
		}
		return aside, nil
	}
	return "", errors.New("no free name for the old set")
}

// renameNoReplace renames from to to, failing with EEXIST if to exists. Where the
// filesystem lacks RENAME_NOREPLACE (it may, as it lacks RENAME_EXCHANGE) it
// checks first and then uses rename(2), which still refuses a non-empty folder
// or a file in the way of a folder; the instant between the two only matters
// against someone creating this random name on purpose in our parent folder.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	if _, err := os.Lstat(to); !errors.Is(err, os.ErrNotExist) {
		if err == nil {
			return unix.EEXIST
		}
		return err
	}
	return unix.Rename(from, to)
}

// removeOld deletes the replaced set, now at aside, whose folder old holds open:
// its files, through that descriptor, then the folder; then syncs the parent so
// the deletion is durable. syncErr is the error of syncing the parent right
// after the new set was put in place: if not nil, the old set is removed all
// the same and the error is ErrNotDurable.
func removeOld(dir, aside string, old *setLock, syncErr error) error {
	err := leftover.RemoveFilesOf(old.File(), aside)
	if err == nil {
		err = os.Remove(aside)
	}
	if err != nil {
		err = fmt.Errorf("image set %s: the new set is in place, but removing the old one from %s: %w", dir, aside, err)
	}
	if syncErr == nil {
		syncErr = syncFolder(parentDir(dir))
	}
	if syncErr != nil {
		return notDurable(dir, syncErr, err)
	}
	return err
}

// replaceHeader atomically replaces the header of the set at dir with data: it is
// written and synced beside the set (locked, so no cleaner takes it), then
// renamed over the old header, whose mode it keeps.
func replaceHeader(dir string, data []byte) error {
	return replaceSetFile(dir, HeaderName, data, "the new header")
}

// replaceSetFile atomically replaces (or creates) the file name of the set at dir
// with data, as replaceHeader does; what names it in errors.
func replaceSetFile(dir, name string, data []byte, what string) error {
	mode := os.FileMode(0o600)
	if st, err := os.Stat(filepath.Join(dir, name)); err == nil {
		mode = st.Mode().Perm()
	}
	// Locked like a new set's folder, so that it too reads as in use while we live.
	f, err := leftover.CreateTemp(parentDir(dir), "."+setBase(dir)+headerInfix)
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("image set %s: writing %s: %w", dir, what, err)
	}
	return syncDir(dir)
}
