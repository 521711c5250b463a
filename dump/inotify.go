package dump

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fh"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/internal/fhandle"
	"github.com/imgtool/imgtool/internal/procfs"
)

// fdInotify is an inotify instance (after the socket and terminal kinds).
const fdInotify = fdTTY + 1

// inotifyKind is an inotify instance, saved as CRIU 4.2 saves it (fsnotify.c): an
// inotify_file_entry with one inotify_wd_entry per watch, from the instance's fdinfo
// ("inotify wd:... ino:... sdev:... mask:... ignored_mask:... fhandle-bytes:...
// fhandle-type:... f_handle:..."): its number, the watched inode, device and file handle,
// and its mask. The watched file's path, found by opening the handle, goes into the
// handle's path (CRIU's path hint), so that a restore finds it by name (a file whose name
// was removed while another remains, link-remap's case, is found by its handle). Refused:
// a watch whose file cannot be opened by its handle (it was deleted), or that has no name
// left (deleted while an fd or mapping keeps it: the handle opens it now, but not once the
// tree is gone; CRIU watches the ghost file it restores, zdtm's inotify00, which imgtool
// does not), and events queued and not read yet (no image keeps them: a restore would
// lose them).
type inotifyKind struct{}

func (inotifyKind) typ() fdinfo.FdTypes { return fdinfo.FdTypes_INOTIFY }

func (inotifyKind) check(pid int, f *fdDesc) error {
	watches, err := inotifyWatches(pid, f.fd)
	if err != nil {
		return err
	}
	for _, w := range watches {
		if _, err := watchPath(w); err != nil {
			return refuse(pid, f.fd, f.link, fmt.Sprintf("watch %d (inode %d): %v: the file it watches cannot be found again", w.wd, w.ino, err))
		}
	}
	n, err := inotifyQueued(pid, f.fd)
	if err != nil {
		return err
	}
	if n > 0 {
		return refuse(pid, f.fd, f.link, fmt.Sprintf("%d bytes of events not read yet: no image keeps them", n))
	}
	return nil
}

func (inotifyKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	watches, err := inotifyWatches(r.pid, r.f.fd)
	if err != nil {
		return err
	}
	if n, err := inotifyQueued(r.pid, r.f.fd); err != nil || n > 0 {
		if err == nil {
			err = refuse(r.pid, r.f.fd, r.f.link, fmt.Sprintf("%d bytes of events not read yet: no image keeps them", n))
		}
		return err
	}
	e := &fsnotify.InotifyFileEntry{Id: proto.Uint32(fe.GetId()), Flags: proto.Uint32(flags), Fown: own}
	for _, w := range watches {
		path, err := watchPath(w)
		if err != nil {
			return refuse(r.pid, r.f.fd, r.f.link, fmt.Sprintf("watch %d: %v", w.wd, err))
		}
		e.Wd = append(e.Wd, &fsnotify.InotifyWdEntry{
			Id: proto.Uint32(fe.GetId()), IIno: proto.Uint64(w.ino), Mask: proto.Uint32(w.mask),
			IgnoredMask: proto.Uint32(w.ignored), SDev: proto.Uint32(w.sdev), Wd: proto.Uint32(w.wd),
			FHandle: &fh.FhEntry{Bytes: proto.Uint32(uint32(len(w.handle.Data))), Type: proto.Uint32(uint32(w.handle.Type)),
				Handle: w.handle.Words(), Path: proto.String(path)},
		})
	}
	fe.Ify = e
	return nil
}

// inotifyWatch is one watch of an inotify instance, from its fdinfo.
type inotifyWatch struct {
	wd, sdev, mask, ignored uint32
	ino                     uint64
	handle                  fhandle.Handle
}

// inotifyWatches parses the watches in the fdinfo of an inotify fd.
func inotifyWatches(pid, fd int) ([]inotifyWatch, error) {
	b, err := procfs.ReadFile(procfs.Path(pid, "fdinfo", strconv.Itoa(fd)))
	if err != nil {
		return nil, err
	}
	var out []inotifyWatch
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "inotify ")
		if !ok {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(f, ":"); ok {
				kv[k] = v
			}
		}
		hex := func(k string, bits int) (uint64, error) {
			v, err := strconv.ParseUint(kv[k], 16, bits)
			if err != nil {
				return 0, fmt.Errorf("process %d fd %d: inotify %s %q", pid, fd, k, kv[k])
			}
			return v, nil
		}
		var w inotifyWatch
		var v uint64
		if v, err = hex("wd", 32); err != nil {
			return nil, err
		}
		w.wd = uint32(v)
		if w.ino, err = hex("ino", 64); err != nil {
			return nil, err
		}
		if v, err = hex("sdev", 32); err != nil {
			return nil, err
		}
		w.sdev = uint32(v)
		if v, err = hex("mask", 32); err != nil {
			return nil, err
		}
		w.mask = uint32(v)
		if v, err = hex("ignored_mask", 32); err != nil {
			return nil, err
		}
		w.ignored = uint32(v)
		if w.handle, err = fhandle.Parse(kv["fhandle-bytes"], kv["fhandle-type"], kv["f_handle"]); err != nil {
			return nil, fmt.Errorf("process %d fd %d: inotify watch %d: %w", pid, fd, w.wd, err)
		}
		out = append(out, w)
	}
	return out, nil
}

// watchPath finds the file a watch is on, by its handle; a file without a name left is
// an error (the handle opens it only while the tree keeps it).
func watchPath(w inotifyWatch) (string, error) {
	f, err := fhandle.Open(w.sdev, w.handle)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", err
	}
	if st.Nlink == 0 {
		return "", errors.New("it was deleted (an open fd or mapping keeps it; a watch on a ghost file is not restored)")
	}
	return fhandle.Path(f)
}

// inotifyQueued returns the bytes of events queued on an inotify fd (FIONREAD on a copy
// of it: nothing is read).
func inotifyQueued(pid, fd int) (int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return 0, fmt.Errorf("process %d fd %d: pidfd_getfd: %w", pid, fd, err)
	}
	defer unix.Close(local)
	return unix.IoctlGetInt(local, unix.TIOCINQ) // FIONREAD
}
