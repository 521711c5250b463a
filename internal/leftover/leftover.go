// Package leftover tells the leftovers of interrupted writes that are dead from
// those a live process is still writing, and removes the dead ones.
//
// A writer holds an exclusive flock(2) on its temporary file or folder from the
// moment it creates it until it has renamed it into place or removed it. The
// kernel drops the lock when the process dies (SIGKILL, a crash), so a leftover
// whose lock can be taken belongs to no live process and can go, while one whose
// lock is held is left alone. The lock is taken on the file or folder itself, so
// no lock file is ever left anywhere. Where the filesystem has no flock nothing
// is proved, and nothing is removed.
//
// imgset uses it for the temporary folders and headers beside a set, imgtool for
// the temporary files beside an archive it rewrites.
package leftover

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Lock is an exclusive flock(2) on a file or folder, held through an open
// descriptor of it until Unlock.
type Lock struct {
	f      *os.File
	ino    uint64
	locked bool // false where the filesystem has no flock: nothing is proved
}

// Take opens path and flocks it, waiting for the lock or not. It fails with
// unix.EWOULDBLOCK when another process holds the lock and wait is false. It
// returns nil, nil when path no longer names the file locked (renamed or
// removed meanwhile): the caller retries, or takes it as gone.
func Take(path string, wait bool) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	l, err := lockOpen(f, path, wait)
	if l == nil {
		f.Close()
	}
	return l, err
}

// lockOpen flocks the open file f, which was opened as path, and checks that
// path still names it; nil, nil if it no longer does.
func lockOpen(f *os.File, path string, wait bool) (*Lock, error) {
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	l := &Lock{f: f, locked: true}
	var err error
	for {
		err = unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, unix.ENOLCK), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
		l.locked = false // no flock here: work unlocked, prove nothing
	default:
		return nil, err
	}
	var have, now unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &have); err != nil {
		return nil, err
	}
	if err := unix.Lstat(path, &now); err != nil || now.Ino != have.Ino || now.Dev != have.Dev {
		return nil, nil
	}
	l.ino = have.Ino
	return l, nil
}

// File is the open descriptor that holds the lock.
func (l *Lock) File() *os.File { return l.f }

// Ino is the inode number of the file or folder locked.
func (l *Lock) Ino() uint64 { return l.ino }

// Locked reports whether the lock is a real flock: false where the filesystem
// has none, and nothing was proved.
func (l *Lock) Locked() bool { return l.locked }

// Unlock drops the lock (closing its descriptor). A nil Lock is fine.
func (l *Lock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// CreateTemp creates a new file in dir as os.CreateTemp does (pattern's last
// "*" is replaced by a random string), mode 0600, and locks it: it reads as in
// use for as long as the returned file stays open. Keep it open until it is
// renamed into place or removed; closing it first would let a cleaner take it.
func CreateTemp(dir, pattern string) (*os.File, error) {
	for range 5 {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		// A cleaner may take the lock in the instant between the creation and
		// the flock, and remove the file: then make another.
		l, err := lockOpen(f, f.Name(), true)
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, err
		}
		if l != nil {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("%s: temporary files keep disappearing", dir)
}

// RemoveDead removes each path whose lock it can take at once, that is, that no
// live process holds, and returns those it removed. A path in use, or gone
// meanwhile, is skipped; where the filesystem has no flock, every path is.
func RemoveDead(paths []string) ([]string, error) {
	var removed []string
	var errs []error
	for _, path := range paths {
		lk, err := Take(path, false)
		if lk == nil || errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, os.ErrNotExist) {
			continue // in use, or already gone
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if lk.locked {
			err = Remove(path, lk)
		}
		lk.Unlock()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if lk.locked {
			removed = append(removed, path)
		}
	}
	return removed, errors.Join(errs...)
}

// Remove removes the file or folder at path, open and locked as l: a folder's
// files first, through its descriptor (so they are the files of the folder
// locked, wherever it was renamed), then the folder.
func Remove(path string, l *Lock) error {
	st, err := l.f.Stat()
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return os.Remove(path)
	}
	if err := RemoveFilesOf(l.f, path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.Remove(path)
}

// RemoveFilesOf unlinks every entry of the open folder d, now at path. A set is
// flat; anything else (a folder someone put there) is removed with os.RemoveAll.
func RemoveFilesOf(d *os.File, path string) error {
	if _, err := d.Seek(0, io.SeekStart); err != nil {
		return err
	}
	ents, err := d.ReadDir(-1)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		err := unix.Unlinkat(int(d.Fd()), e.Name(), 0)
		if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EPERM) && e.IsDir() {
			err = os.RemoveAll(filepath.Join(path, e.Name()))
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}
