package restore

import (
	"fmt"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/fhandle"
)

// inotifyKind is an inotify instance (inotify_file_entry, CRIU's fsnotify.c). It is created
// empty with the description, and its watches are added (armer) from imgtool once the
// whole tree exists, just before it runs, so that the restore's own opening of files
// queues no event: each on the file its handle's path names (CRIU's path hint; checked to
// be the same inode), or else on the file its handle opens, with its saved number
// (INOTIFY_IOC_SETNEXTWD before each inotify_add_watch) and mask.
type inotifyKind struct{}

// inotifyIocSetNextWd is INOTIFY_IOC_SETNEXTWD: _IOW('I', 0, __s32).
const inotifyIocSetNextWd = 0x40044900

// inotifyWatchFlags are the mask bits inotify_add_watch takes back: the events and the
// flags fdinfo shows with them.
const inotifyWatchFlags = unix.IN_ALL_EVENTS | unix.IN_ONESHOT | unix.IN_EXCL_UNLINK

func (inotifyKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	e := fe.Ify
	if e == nil {
		return noEntry(what, fe)
	}
	seen := map[uint32]bool{}
	for _, w := range e.Wd {
		if w.GetWd() == 0 || w.GetWd() > 1<<31-1 || seen[w.GetWd()] {
			return fmt.Errorf("%s: inotify watch number %d", what, w.GetWd())
		}
		seen[w.GetWd()] = true
		if w.GetMask()&^inotifyWatchFlags != 0 {
			return fmt.Errorf("%s: inotify watch %d: mask %#x", what, w.GetWd(), w.GetMask())
		}
		f, err := openWatched(w)
		if err != nil {
			return fmt.Errorf("%s: inotify watch %d: %w", what, w.GetWd(), err)
		}
		f.Close()
	}
	return nil
}

func (inotifyKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating inotify (file id %d): %w", fe.GetId(), err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("inotify (file id %d)", fe.GetId()))
	if err := setStatusFlags(f, fe.Ify.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (inotifyKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Ify.GetFown() }
func (inotifyKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Ify.GetFlags() }

// arm adds the watches, in their numbers' order, each with its own number.
func (inotifyKind) arm(f *os.File, fe *fdinfo.FileEntry) error {
	ws := append([]*fsnotify.InotifyWdEntry(nil), fe.Ify.Wd...)
	sort.Slice(ws, func(i, j int) bool { return ws[i].GetWd() < ws[j].GetWd() })
	for _, w := range ws {
		target, err := openWatched(w)
		if err != nil {
			return fmt.Errorf("%s: watch %d: %w", f.Name(), w.GetWd(), err)
		}
		err = addWatch(f, target, w)
		target.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// addWatch adds watch w on target with its saved number.
func addWatch(f, target *os.File, w *fsnotify.InotifyWdEntry) error {
	if err := unix.IoctlSetInt(int(f.Fd()), inotifyIocSetNextWd, int(w.GetWd())); err != nil { // the value itself, not a pointer
		return fmt.Errorf("%s: setting the next watch number to %d: %w", f.Name(), w.GetWd(), err)
	}
	got, err := unix.InotifyAddWatch(int(f.Fd()), fmt.Sprintf("/proc/self/fd/%d", target.Fd()), w.GetMask()&inotifyWatchFlags)
	if err != nil {
		return fmt.Errorf("%s: watch %d on %s: %w", f.Name(), w.GetWd(), target.Name(), err)
	}
	if uint32(got) != w.GetWd() {
		return fmt.Errorf("%s: watch on %s numbered %d, not %d", f.Name(), target.Name(), got, w.GetWd())
	}
	return nil
}

// openWatched opens (O_PATH) the file a watch is on: by the path of its handle when it
// still names the same inode, else by the handle.
func openWatched(w *fsnotify.InotifyWdEntry) (*os.File, error) {
	h := w.GetFHandle()
	if path := h.GetPath(); path != "" {
		fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err == nil {
			var st unix.Stat_t
			if unix.Fstat(fd, &st) == nil && st.Ino == w.GetIIno() && st.Dev == fhandle.KernelDev(w.GetSDev()) {
				return os.NewFile(uintptr(fd), path), nil
			}
			unix.Close(fd)
		}
	}
	hd, err := fhandle.FromWords(h.GetBytes(), h.GetType(), h.GetHandle())
	if err != nil {
		return nil, err
	}
	f, err := fhandle.Open(w.GetSDev(), hd)
	if err != nil {
		return nil, fmt.Errorf("inode %d of device %d:%d is gone: %w", w.GetIIno(), w.GetSDev()>>20, w.GetSDev()&(1<<20-1), err)
	}
	return f, nil
}
