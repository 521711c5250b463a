package explore

import (
	"fmt"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	fsimg "github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"

	"github.com/imgtool/imgtool/imgset"
)

// FD is one open file descriptor of a process.
type FD struct {
	FD     int    `json:"fd"`
	Type   string `json:"type"`             // CRIU's fd type: REG, PIPE, FIFO, UNIXSK, INETSK, EVENTFD, MEMFD, ...
	ID     uint32 `json:"id"`               // the file object's id in files.img
	Name   string `json:"name"`             // crit's name: a path, pipe[ID], unix[INO (PEER)], or TYPE.ID
	Path   string `json:"path,omitempty"`   // the file's path when it has one (FIFOs and memfds too)
	Detail string `json:"detail,omitempty"` // what crit does not say: socket addresses, deleted files
}

// ProcessFDs is one process's file descriptors and its working and root directories.
type ProcessFDs struct {
	PID     int    `json:"pid"`
	FilesID uint32 `json:"files_id"` // shared by the processes that share a file table
	FDs     []FD   `json:"fds"`
	Cwd     string `json:"cwd"`
	Root    string `json:"root"`
}

// FDs returns each process's file descriptors, in pstree.img order, as crit x fds
// lists them.
func FDs(set *imgset.Set) ([]ProcessFDs, error) {
	return newLoader(set).fds()
}

func (l *loader) fds() ([]ProcessFDs, error) {
	list, err := l.pstree()
	if err != nil {
		return nil, err
	}
	files, err := l.fileTable()
	if err != nil {
		return nil, err
	}
	socks, err := l.sockets()
	if err != nil {
		return nil, err
	}
	sockByID := map[uint32]*Socket{}
	for i := range socks {
		sockByID[socks[i].ID] = &socks[i]
	}
	var out []ProcessFDs
	for _, p := range list {
		pid := int(p.GetPid())
		ids, err := first[*criu_core.TaskKobjIdsEntry](l, fmt.Sprintf("ids-%d.img", pid), "IDS")
		if err != nil {
			return nil, err
		}
		fdName := fmt.Sprintf("fdinfo-%d.img", ids.GetFilesId())
		img, err := l.image(fdName, "FDINFO")
		if err != nil {
			return nil, err
		}
		fdis, err := entries[*fdinfo.FdinfoEntry](img, fdName)
		if err != nil {
			return nil, err
		}
		pf := ProcessFDs{PID: pid, FilesID: ids.GetFilesId(), FDs: []FD{}}
		for _, fd := range fdis {
			pf.FDs = append(pf.FDs, files.describe(fd, sockByID))
		}
		fsName := fmt.Sprintf("fs-%d.img", pid)
		fse, err := first[*fsimg.FsEntry](l, fsName, "FS")
		if err != nil {
			return nil, err
		}
		pf.Cwd = files.critRegName(fse.GetCwdId())
		pf.Root = files.critRegName(fse.GetRootId())
		out = append(out, pf)
	}
	return out, nil
}

// describe names the file an fd refers to.
func (t *fileTable) describe(fd *fdinfo.FdinfoEntry, socks map[uint32]*Socket) FD {
	typ, id := fd.GetType(), fd.GetId()
	d := FD{FD: int(fd.GetFd()), Type: typ.String(), ID: id, Name: t.critName(typ, id)}
	e := t.byID[id]
	switch typ {
	case fdinfo.FdTypes_REG:
		d.Path, _ = t.regPath(id)
		if r := t.remaps[id]; r != nil {
			d.Detail = remapDetail(r)
		}
	case fdinfo.FdTypes_FIFO:
		if e != nil && e.GetFifo() != nil {
			d.Path, _ = t.regPath(e.GetFifo().GetRegfId())
			d.Detail = fmt.Sprintf("pipe %d", e.GetFifo().GetPipeId())
		}
	case fdinfo.FdTypes_TTY:
		if e != nil && e.GetTty() != nil {
			d.Path, _ = t.regPath(e.GetTty().GetRegfId())
			d.Detail = fmt.Sprintf("tty_info %d", e.GetTty().GetTtyInfoId())
		}
	case fdinfo.FdTypes_MEMFD:
		if name, ok := t.memfdName(id); ok {
			d.Path = "memfd:" + name
		}
	case fdinfo.FdTypes_INETSK, fdinfo.FdTypes_UNIXSK, fdinfo.FdTypes_PACKETSK, fdinfo.FdTypes_NETLINKSK:
		if s := socks[id]; s != nil {
			d.Detail = s.Summary()
		}
	}
	return d
}

// remapDetail says how CRIU saved a file that was unlinked or is reached otherwise.
func remapDetail(r *remap_file_path.RemapFilePathEntry) string {
	switch r.GetRemapType() {
	case remap_file_path.RemapType_GHOST:
		return fmt.Sprintf("deleted; contents in ghost-file-%x.img", r.GetRemapId())
	case remap_file_path.RemapType_LINKED:
		return "deleted; linked back on restore"
	case remap_file_path.RemapType_PROCFS:
		return "a /proc file of a dead task"
	}
	return "remapped"
}
