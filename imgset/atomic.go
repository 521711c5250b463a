package imgset

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Leftover folders and files of interrupted writes live beside the set, never in
// it, and are named "." + the set's name + ".imgtool-" + what + "-" + random, so that
// a crash never adds a file to a set (Open would refuse it) and leftovers are easy
// to find (Leftovers).
const (
	tmpInfix    = ".imgtool-tmp-"  // a new set being written
	oldInfix    = ".imgtool-old-"  // an old set moved aside (fallback without RENAME_EXCHANGE)
	headerInfix = ".imgtool-seal-" // a new header being written by Rekey
)

func parentDir(dir string) string { return filepath.Dir(filepath.Clean(dir)) }

func tempPrefix(dir string) string { return "." + filepath.Base(filepath.Clean(dir)) + tmpInfix }

// Leftovers lists what interrupted writes of the set in dir left beside it. dir
// itself always holds a whole set, old or new: every leftover can be removed once
// no imgtool process works on the set any more. A leftover "-tmp-" folder is an
// unfinished new set, or (after the swap) the old set being deleted; "-old-" is an
// old set moved aside; "-seal-" an unfinished header.
func Leftovers(dir string) ([]string, error) {
	parent, base := parentDir(dir), filepath.Base(filepath.Clean(dir))
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, "."+base+".imgtool-") {
			continue
		}
		rest := strings.TrimPrefix(n, "."+base)
		for _, infix := range []string{tmpInfix, oldInfix, headerInfix} {
			if strings.HasPrefix(rest, infix) {
				out = append(out, filepath.Join(parent, n))
				break
			}
		}
	}
	return out, nil
}

// exchangeInto atomically replaces the set at dir with the finished set at tmp,
// then deletes the old one. With RENAME_EXCHANGE both paths exist at every moment:
// before the swap dir is the old set, after it the new one, and a crash leaves the
// other in tmp to be deleted. Without it (filesystems that lack the flag), dir is
// first moved aside; a crash between the two renames leaves no dir, with the old
// set in the "-old-" leftover and the new one in "-tmp-": rename either back.
func exchangeInto(tmp, dir string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		return moveInto(tmp, dir)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("image set %s: exchanging with the new set: %w", dir, err)
	}
	if err := syncDir(parentDir(dir)); err != nil {
		return err
	}
	// tmp now holds the old set.
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("image set %s: the new set is in place, but removing the old one from %s: %w", dir, tmp, err)
	}
	return syncDir(parentDir(dir))
}

func moveInto(tmp, dir string) error {
	old, err := os.MkdirTemp(parentDir(dir), "."+filepath.Base(filepath.Clean(dir))+oldInfix)
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(dir, old); err != nil { // replaces the empty folder old
		os.Remove(old)
		os.RemoveAll(tmp)
		return fmt.Errorf("image set %s: moving the old set aside: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if rerr := os.Rename(old, dir); rerr != nil {
			return fmt.Errorf("image set %s: %v; the old set is in %s, the new one in %s", dir, err, old, tmp)
		}
		os.RemoveAll(tmp)
		return fmt.Errorf("image set %s: %w", dir, err)
	}
	if err := syncDir(parentDir(dir)); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

// replaceHeader atomically replaces the header of the set at dir with data: it is
// written and synced beside the set, then renamed over the old header.
func replaceHeader(dir string, data []byte) error {
	f, err := os.CreateTemp(parentDir(dir), "."+filepath.Base(filepath.Clean(dir))+headerInfix)
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, HeaderName))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("image set %s: writing the new header: %w", dir, err)
	}
	return syncDir(dir)
}
