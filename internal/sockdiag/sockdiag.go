// Package sockdiag asks the kernel about UNIX sockets through the sock_diag netlink
// interface (NETLINK_SOCK_DIAG, UNIX_DIAG), as CRIU does: a socket's type and state, its
// bound name and the inode of its socket file, its peer, the connections waiting in a
// listening socket's queue (icons), its queue lengths and its shutdown state, all by inode.
// It only sees the network namespace of the caller.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// UNIX_DIAG request flags and attributes (linux/unix_diag.h).
const (
	showName     = 0x01
	showVFS      = 0x02
	showPeer     = 0x04
	showIcons    = 0x08
	showRQLen    = 0x10
	showMemInfo  = 0x20
	attrName     = 0
	attrVFS      = 1
	attrPeer     = 2
	attrIcons    = 3
	attrRQLen    = 4
	attrShutdown = 6
	showAll      = showName | showVFS | showPeer | showIcons | showRQLen | showMemInfo
)

// ErrNotFound is the error of a lookup of an inode that is no UNIX socket of this network
// namespace.
var ErrNotFound = errors.New("no such UNIX socket")

// Unix is what UNIX_DIAG reports about one socket.
type Unix struct {
	Ino         uint32
	Type, State uint8  // SOCK_STREAM...; TCP_ESTABLISHED (1), TCP_CLOSE (7), TCP_LISTEN (10)
	Name        []byte // the bound address (abstract names start with 0); nil if unbound
	VFSDev      uint32 // device and inode of the socket file of a name in the filesystem
	VFSIno      uint32
	HasVFS      bool
	Peer        uint32   // inode of the peer, 0 for none
	Icons       []uint32 // a listening socket's connections not accepted yet
	RQueue      uint32   // receive queue: bytes (stream, seqpacket), the first datagram's
	WQueue      uint32   // bytes (dgram); a listener's pending connections and backlog
	Shutdown    uint8    // RCV_SHUTDOWN (1) | SEND_SHUTDOWN (2)
	HasShutdown bool
}

// FileDev is the device of the socket file as stat(2) reports it (st_dev): UNIX_DIAG_VFS
// gives the kernel's internal encoding, major << 20 | minor.
func (u *Unix) FileDev() uint64 { return unix.Mkdev(u.VFSDev>>20, u.VFSDev&0xfffff) }

// Lookup asks for the socket of inode ino.
func Lookup(ino uint32) (*Unix, error) {
	out, err := query(ino, false)
	if err != nil {
		return nil, err
	}
	for _, u := range out {
		if u.Ino == ino {
			return u, nil
		}
	}
	return nil, ErrNotFound
}

// All lists every UNIX socket of the namespace, by inode.
func All() (map[uint32]*Unix, error) {
	out, err := query(0, true)
	if err != nil {
		return nil, err
	}
	m := make(map[uint32]*Unix, len(out))
	for _, u := range out {
		m[u.Ino] = u
	}
	return m, nil
}

var le = binary.LittleEndian

func query(ino uint32, dump bool) ([]*Unix, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: bind: %w", err)
	}
	// nlmsghdr (16 bytes) + unix_diag_req (24 bytes).
	req := make([]byte, 40)
	flags := uint16(unix.NLM_F_REQUEST)
	if dump {
		flags |= unix.NLM_F_DUMP
	}
	le.PutUint32(req[0:], uint32(len(req)))
	le.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	le.PutUint16(req[6:], flags)
	le.PutUint32(req[8:], 1) // seq
	req[16] = unix.AF_UNIX
	le.PutUint32(req[20:], ^uint32(0)) // every state
	le.PutUint32(req[24:], ino)
	le.PutUint32(req[28:], showAll)
	le.PutUint32(req[32:], ^uint32(0)) // cookie: INET_DIAG_NOCOOKIE
	le.PutUint32(req[36:], ^uint32(0))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: send: %w", err)
	}
	var out []*Unix
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return nil, fmt.Errorf("sock_diag: receive: %w", err)
		}
		b := buf[:n]
		for len(b) >= 16 {
			l := int(le.Uint32(b))
			typ := le.Uint16(b[4:])
			if l < 16 || l > len(b) {
				return nil, errors.New("sock_diag: malformed netlink message")
			}
			msg := b[16:l]
			b = b[min(len(b), (l+3)&^3):]
			switch typ {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(msg) < 4 {
					return nil, errors.New("sock_diag: short error message")
				}
				e := int32(le.Uint32(msg))
				if e == 0 {
					return out, nil // an acknowledgement
				}
				if unix.Errno(-e) == unix.ENOENT {
					return nil, ErrNotFound
				}
				return nil, fmt.Errorf("sock_diag: %w", os.NewSyscallError("UNIX_DIAG", unix.Errno(-e)))
			case unix.SOCK_DIAG_BY_FAMILY:
				u, err := parse(msg)
				if err != nil {
					return nil, err
				}
				out = append(out, u)
			}
		}
		if !dump && len(out) > 0 {
			return out, nil
		}
	}
}

// parse reads a unix_diag_msg and its attributes.
func parse(m []byte) (*Unix, error) {
	if len(m) < 16 {
		return nil, errors.New("sock_diag: short unix_diag_msg")
	}
	u := &Unix{Type: m[1], State: m[2], Ino: le.Uint32(m[4:])}
	a := m[16:]
	for len(a) >= 4 {
		l := int(le.Uint16(a))
		typ := le.Uint16(a[2:]) & 0x3fff
		if l < 4 || l > len(a) {
			return nil, errors.New("sock_diag: malformed attribute")
		}
		v := a[4:l]
		a = a[min(len(a), (l+3)&^3):]
		switch typ {
		case attrName:
			u.Name = append([]byte{}, v...)
		case attrVFS:
			if len(v) >= 8 {
				u.VFSIno, u.VFSDev, u.HasVFS = le.Uint32(v), le.Uint32(v[4:]), true
			}
		case attrPeer:
			if len(v) >= 4 {
				u.Peer = le.Uint32(v)
			}
		case attrIcons:
			for ; len(v) >= 4; v = v[4:] {
				u.Icons = append(u.Icons, le.Uint32(v))
			}
		case attrRQLen:
			if len(v) >= 8 {
				u.RQueue, u.WQueue = le.Uint32(v), le.Uint32(v[4:])
			}
		case attrShutdown:
			if len(v) >= 1 {
				u.Shutdown, u.HasShutdown = v[0], true
			}
		}
	}
	return u, nil
}
