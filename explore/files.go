package explore

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fifo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	packet_sock "github.com/checkpoint-restore/go-criu/v8/crit/images/packet-sock"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	sk_netlink "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-netlink"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
)

// fileTable holds the set's open-file objects by id: files.img of CRIU >= 3.x, or the
// per-type images (reg-files.img, pipes.img, ...) of older sets.
type fileTable struct {
	byID   map[uint32]*fdinfo.FileEntry
	order  []*fdinfo.FileEntry // as stored
	memfds map[uint64]*memfd.MemfdInodeEntry
	remaps map[uint32]*remap_file_path.RemapFilePathEntry // by orig_id
}

// legacyFileImages are the per-type images that preceded files.img, with how each
// entry becomes a FileEntry.
var legacyFileImages = []struct {
	file, kind string
	wrap       func(any) *fdinfo.FileEntry
}{
	{"reg-files.img", "REG_FILES", func(m any) *fdinfo.FileEntry {
		e := m.(*regfile.RegFileEntry)
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: e.Id, Reg: e}
	}},
	{"pipes.img", "PIPES", func(m any) *fdinfo.FileEntry {
		e := m.(*pipe.PipeEntry)
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_PIPE.Enum(), Id: e.Id, Pipe: e}
	}},
	{"fifo.img", "FIFO", func(m any) *fdinfo.FileEntry {
		e := m.(*fifo.FifoEntry)
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_FIFO.Enum(), Id: e.Id, Fifo: e}
	}},
	{"unixsk.img", "UNIXSK", func(m any) *fdinfo.FileEntry {
		e := m.(*sk_unix.UnixSkEntry)
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_UNIXSK.Enum(), Id: e.Id, Usk: e}
	}},
	{"inetsk.img", "INETSK", func(m any) *fdinfo.FileEntry {
		e := m.(*sk_inet.InetSkEntry)
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_INETSK.Enum(), Id: e.Id, Isk: e}
	}},
	{"packetsk.img", "PACKETSK", func(m any) *fdinfo.FileEntry {
		e := m.(*packet_sock.PacketSockEntry)
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_PACKETSK.Enum(), Id: e.Id, Psk: e}
	}},
	{"netlinksk.img", "NETLINK_SK", func(m any) *fdinfo.FileEntry {
		e := m.(*sk_netlink.NetlinkSkEntry)
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_NETLINKSK.Enum(), Id: e.Id, Nlsk: e}
	}},
}

// fileTable returns the set's files, reading them on first use.
func (l *loader) fileTable() (*fileTable, error) {
	if l.files != nil {
		return l.files, nil
	}
	t := &fileTable{
		byID:   map[uint32]*fdinfo.FileEntry{},
		memfds: map[uint64]*memfd.MemfdInodeEntry{},
		remaps: map[uint32]*remap_file_path.RemapFilePathEntry{},
	}
	img, err := l.optional("files.img", "FILES")
	if err != nil {
		return nil, err
	}
	if img != nil {
		list, err := entries[*fdinfo.FileEntry](img, "files.img")
		if err != nil {
			return nil, err
		}
		for _, e := range list {
			t.add(e)
		}
	} else {
		for _, li := range legacyFileImages {
			img, err := l.optional(li.file, li.kind)
			if err != nil {
				return nil, err
			}
			if img == nil {
				continue
			}
			for _, e := range img.Entries {
				t.add(li.wrap(e.Msg))
			}
		}
	}
	if img, err := l.optional("memfd.img", "MEMFD_INODE"); err != nil {
		return nil, err
	} else if img != nil {
		list, err := entries[*memfd.MemfdInodeEntry](img, "memfd.img")
		if err != nil {
			return nil, err
		}
		for _, e := range list {
			t.memfds[e.GetInodeId()] = e
		}
	}
	if img, err := l.optional("remap-fpath.img", "REMAP_FPATH"); err != nil {
		return nil, err
	} else if img != nil {
		list, err := entries[*remap_file_path.RemapFilePathEntry](img, "remap-fpath.img")
		if err != nil {
			return nil, err
		}
		for _, e := range list {
			t.remaps[e.GetOrigId()] = e
		}
	}
	l.files = t
	return t, nil
}

// add records e; like crit, the first entry of an id wins.
func (t *fileTable) add(e *fdinfo.FileEntry) {
	t.order = append(t.order, e)
	if _, dup := t.byID[e.GetId()]; !dup {
		t.byID[e.GetId()] = e
	}
}

// regPath returns the path of regular file id, and whether the set names one.
func (t *fileTable) regPath(id uint32) (string, bool) {
	if e := t.byID[id]; e != nil && e.GetReg() != nil {
		return e.GetReg().GetName(), true
	}
	return "", false
}

// critRegName is what crit prints for a regular file: its path, or "unknown path"
// when the id is not a regular file (a memfd, for one).
func (t *fileTable) critRegName(id uint32) string {
	if p, ok := t.regPath(id); ok {
		return p
	}
	return "unknown path"
}

// critName is crit's name for the file object an fd refers to: a path for regular
// files, pipe[ID] for pipes, unix[INO (PEER) NAME] for unix sockets, TYPE.ID otherwise.
func (t *fileTable) critName(typ fdinfo.FdTypes, id uint32) string {
	e := t.byID[id]
	switch typ {
	case fdinfo.FdTypes_REG:
		return t.critRegName(id)
	case fdinfo.FdTypes_PIPE:
		if e == nil || e.GetPipe() == nil {
			return "pipe[?]"
		}
		return fmt.Sprintf("pipe[%d]", e.GetPipe().GetPipeId())
	case fdinfo.FdTypes_UNIXSK:
		if e == nil || e.GetUsk() == nil {
			return "unix[?]"
		}
		u := e.GetUsk()
		name := ""
		if len(u.GetName()) > 0 {
			name = " " + unixName(u.GetName())
		}
		return fmt.Sprintf("unix[%d (%d)%s]", u.GetIno(), u.GetPeer(), name)
	}
	return fmt.Sprintf("%s.%d", typ, id)
}

// memfdName returns the name of the memfd file id, and whether id is one.
func (t *fileTable) memfdName(id uint32) (string, bool) {
	e := t.byID[id]
	if e == nil || e.GetMemfd() == nil {
		return "", false
	}
	if ino := t.memfds[uint64(e.GetMemfd().GetInodeId())]; ino != nil {
		return ino.GetName(), true
	}
	return "", true
}

// memfdShmid returns the shared memory id whose pagemap holds memfd file id's pages.
func (t *fileTable) memfdShmid(id uint32) (uint32, bool) {
	e := t.byID[id]
	if e == nil || e.GetMemfd() == nil {
		return 0, false
	}
	ino := t.memfds[uint64(e.GetMemfd().GetInodeId())]
	if ino == nil {
		return 0, false
	}
	return ino.GetShmid(), true
}

// unixName renders a unix socket address: a path, or "@name" for the abstract
// namespace (a leading NUL), with unprintable bytes escaped. crit prints Python's
// repr of quoted-printable bytes here (b'...'), which names no socket; we do not.
func unixName(b []byte) string {
	s := b
	prefix := ""
	if len(s) > 0 && s[0] == 0 {
		prefix, s = "@", s[1:]
	}
	out := []byte(prefix)
	for _, c := range s {
		if c >= 0x20 && c < 0x7f && c != '\\' {
			out = append(out, c)
		} else {
			out = append(out, fmt.Sprintf("\\x%02x", c)...)
		}
	}
	return string(out)
}
