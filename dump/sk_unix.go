package dump

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	sk_opts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/sockdiag"
)

// fdUnixSk is a socket; only AF_UNIX ones pass the check.
const fdUnixSk = fdEpoll + 1

// Socket states as UNIX_DIAG reports them (the TCP names).
const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
	siocUnixFile   = unix.SIOCPROTOPRIVATE // SIOCUNIXFILE: an O_PATH fd of a bound socket's file
	netNsID        = 2                     // the id CRIU 4.2 gives the host's network namespace
)

// unixSkKind is a UNIX socket, as CRIU 4.2 saves it: a unix_sk_entry in files.img (type,
// state, name, peer inode, shutdown, the socket options of sk_opts_entry, the mode and
// owner of a bound socket's file) and the bytes queued in its receive queue in
// sk-queues.img, one sk_packet_entry per datagram (per chunk for a stream) with the file
// id of the receiving socket. The queue is read from a copy of the socket (pidfd_getfd)
// with MSG_PEEK at an advancing SO_PEEK_OFF, as CRIU's parasite reads it: nothing is
// consumed, and the peek offset is put back. State comes from sock_diag (UNIX_DIAG), by
// inode.
//
// A socket whose peer no process of the tree holds (an external peer) is refused unless
// Options.ExtUnixSk (CRIU's --ext-unix-sk), and then saved as CRIU 4.2 saves it: its own
// entry as any other (peer: the external inode) and, once per external peer, an entry of
// its own with USK_EXTERN for a restore to connect to by name (see outsidePeer and
// externEntry).
//
// Refused, naming the fd: other address families (TCP, UDP, netlink, packet...), types
// other than stream, dgram and seqpacket, sockets in other states than listening,
// connected or closed, a listening socket with connections not accepted yet, a stream
// connection whose peer is gone but which is not shut down both ways, a peer that no
// process of the tree holds (checkUnixPeers) without Options.ExtUnixSk, or with it one
// that a restore could not connect to again (outsidePeer), descriptors in flight
// (SCM_RIGHTS in a queue), a datagram queued by a socket with a name (namedSender), a
// socket filter, a bound socket whose file was deleted, renamed or moved, or bound to an
// absolute name in a chroot (socketFile).
type unixSkKind struct{}

func (unixSkKind) typ() fdinfo.FdTypes { return fdinfo.FdTypes_UNIXSK }

// familyName names a socket that is not AF_UNIX.
func familyName(fd int) string {
	dom, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	proto, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	switch dom {
	case unix.AF_INET, unix.AF_INET6:
		v := "IPv4"
		if dom == unix.AF_INET6 {
			v = "IPv6"
		}
		switch {
		case proto == unix.IPPROTO_TCP:
			return "TCP (" + v + ")"
		case proto == unix.IPPROTO_UDP:
			return "UDP (" + v + ")"
		case typ == unix.SOCK_RAW:
			return "raw " + v
		}
		return fmt.Sprintf("%s protocol %d", v, proto)
	case unix.AF_NETLINK:
		return "netlink"
	case unix.AF_PACKET:
		return "packet"
	}
	return fmt.Sprintf("address family %d", dom)
}

var sockTypes = map[uint8]string{unix.SOCK_STREAM: "stream", unix.SOCK_DGRAM: "dgram", unix.SOCK_SEQPACKET: "seqpacket"}

func (unixSkKind) check(pid int, f *fdDesc) error {
	local, err := fdCopy(pid, f.fd)
	if err != nil {
		return err
	}
	defer unix.Close(local)
	if dom, err := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return fmt.Errorf("process %d fd %d: SO_DOMAIN: %w", pid, f.fd, err)
	} else if dom != unix.AF_UNIX {
		return refuse(pid, f.fd, f.link, familyName(local)+" sockets are not supported (only UNIX, TCP and UDP sockets are)")
	}
	d, err := sockdiag.Lookup(uint32(f.st.Ino))
	if err != nil {
		return fmt.Errorf("process %d fd %d (%s): %w", pid, f.fd, f.link, err)
	}
	return checkUnixSk(pid, f, local, d)
}

// checkUnixSk refuses what cannot be saved of UNIX socket d, open at local.
func checkUnixSk(pid int, f *fdDesc, local int, d *sockdiag.Unix) error {
	no := func(why string) error { return refuse(pid, f.fd, f.link, why) }
	if sockTypes[d.Type] == "" {
		return no(fmt.Sprintf("UNIX sockets of type %d are not supported (only stream, dgram and seqpacket)", d.Type))
	}
	switch d.State {
	case tcpListen:
		if len(d.Icons) > 0 {
			return no(fmt.Sprintf("listening, with %d connection(s) not accepted yet: not supported", len(d.Icons)))
		}
	case tcpEstablished:
		if d.Peer == 0 && d.Type != unix.SOCK_DGRAM && d.Shutdown != 3 {
			// A client whose connection a listener has not accepted yet (the listener lists
			// it in its icons), or a connection whose peer is gone.
			if l := listenerOf(d.Ino); l != 0 {
				return no(fmt.Sprintf("in the middle of a connect: its connection waits, not accepted yet, in the queue of listening socket:[%d]: not supported", l))
			}
			return no("a connection whose peer is gone, not shut down: not supported")
		}
	case tcpClose:
	default:
		return no(fmt.Sprintf("in the middle of a connect (state %d): not supported", d.State))
	}
	if len(d.Name) > 0 && d.Name[0] != 0 {
		if _, _, err := socketFile(pid, local, d.Name); err != nil {
			var re *RefusedError
			if errors.As(err, &re) {
				return no(re.Reason)
			}
			return fmt.Errorf("process %d fd %d: %w", pid, f.fd, err)
		}
	}
	var n uint32
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(local), unix.SOL_SOCKET, unix.SO_GET_FILTER, 0,
		uintptr(unsafe.Pointer(&n)), 0); e == 0 && n > 0 {
		return no("a socket filter (SO_ATTACH_FILTER) is attached: not supported")
	}
	if hasQueue(d) {
		_, senders, rights, err := peekQueue(local, d.Type == unix.SOCK_STREAM)
		if err != nil {
			return fmt.Errorf("process %d fd %d: reading its queue: %w", pid, f.fd, err)
		}
		if rights {
			return no("file descriptors in flight (SCM_RIGHTS queued in the socket): not supported")
		}
		if from := namedSender(d, senders); from != nil {
			return no(fmt.Sprintf("a datagram queued in it was sent by the socket named %s: a restore would deliver it "+
				"from a socket without a name (the sender is not in the images; CRIU's restore loses it so): not supported", addrName(from)))
		}
	}
	return nil
}

// namedSender returns the address of the first datagram queued in dgram socket d that a
// socket with a name sent, or nil. A restore queues the datagrams again from a socket
// without a name (sk_packet_entry has no place for the sender, CRIU's restore does the
// same): a program reading them with recvfrom, to answer, would get no address (zdtm's
// socket_snd_addr). Stream and seqpacket sockets are read without addresses.
func namedSender(d *sockdiag.Unix, senders [][]byte) []byte {
	if d.Type != unix.SOCK_DGRAM {
		return nil
	}
	for _, s := range senders {
		if len(s) > 0 {
			return s
		}
	}
	return nil
}

// addrName shows a UNIX socket address: a path, or @NAME for an abstract one.
func addrName(b []byte) string {
	if len(b) > 0 && b[0] == 0 {
		return fmt.Sprintf("%q", "@"+string(b[1:]))
	}
	return fmt.Sprintf("%q", boundName(b))
}

// hasQueue tells whether socket d may hold a receive queue to save: not a listening
// socket (its queue holds connections), nor a stream or seqpacket socket never connected
// (state close), which has none and whose recvmsg fails with EINVAL (zdtm's
// sk-unix-unconn). CRIU reads a queue only when UNIX_DIAG_RQLEN is not 0.
func hasQueue(d *sockdiag.Unix) bool {
	return d.State != tcpListen && (d.Type == unix.SOCK_DGRAM || d.State != tcpClose)
}

// socketFile returns the path of the file of a socket of process pid bound to name
// (SIOCUNIXFILE) and its stat. Refused: a file that was deleted; one renamed or moved
// since the bind (Java's attach listener binds NAME.tmp, then renames it to NAME): the
// restore binds the socket at its name, which would make a file the tree did not have and
// leave the path its clients use without a listener; an absolute name bound in a chroot,
// which the restore, binding in imgtool's own root, would put outside it.
func socketFile(pid, local int, name []byte) (string, *unix.Stat_t, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(local), siocUnixFile, 0)
	if e != 0 {
		return "", nil, fmt.Errorf("SIOCUNIXFILE: %w", e)
	}
	fd := int(r)
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", nil, err
	}
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", nil, err
	}
	if strings.HasSuffix(path, " (deleted)") {
		return "", nil, refuse(0, 0, "", "bound to "+strings.TrimSuffix(path, " (deleted)")+", whose socket file was deleted: not supported")
	}
	if _, ok := nameDir(path, name); !ok {
		if root, _ := os.Readlink(procfs.Path(pid, "root")); root != "/" && path == filepath.Join(root, boundName(name)) {
			return "", nil, refuse(0, 0, "", fmt.Sprintf("bound to %s inside its chroot %s: not supported", addrName(name), root))
		}
		return "", nil, refuse(0, 0, "", fmt.Sprintf("bound to %s, whose socket file is now %s (renamed or moved): not supported", addrName(name), path))
	}
	return path, &st, nil
}

// boundName is a socket's path name, without the NUL the kernel reports it with.
func boundName(name []byte) string { return strings.TrimRight(string(name), "\x00") }

// nameDir tells whether path, where a socket's file is, is where its name leads (in
// imgtool's root), and for a relative name the directory it was bound from.
func nameDir(path string, name []byte) (string, bool) {
	bound := filepath.Clean(boundName(name))
	if filepath.IsAbs(bound) {
		return "", path == bound
	}
	dir, ok := strings.CutSuffix(path, "/"+bound)
	return filepath.Clean(dir), ok
}

// peekQueue copies every packet queued in socket fd's receive queue without consuming it
// (MSG_PEEK at an advancing SO_PEEK_OFF, put back after), with the address of the socket
// that sent each (nil when it had no name). rights tells whether one carries file
// descriptors (SCM_RIGHTS; they are closed here).
func peekQueue(fd int, stream bool) (pkts, senders [][]byte, rights bool, err error) {
	orig, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, nil, false, fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, nil, false, fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	defer func() {
		if e := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, orig); e != nil && err == nil {
			err = fmt.Errorf("putting SO_PEEK_OFF back: %w", e)
		}
	}()
	size := 1 << 16
	if sb, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF); err == nil && sb > size {
		size = sb
	}
	buf := make([]byte, size)
	oob := make([]byte, 1024)
	off := 0
	for {
		flags := unix.MSG_DONTWAIT | unix.MSG_PEEK | unix.MSG_CMSG_CLOEXEC
		if !stream {
			flags |= unix.MSG_TRUNC // the whole datagram's length, to grow the buffer
		}
		n, oobn, rflags, from, err := recvmsgFrom(fd, buf, oob, flags)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return pkts, senders, rights, nil
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, nil, false, fmt.Errorf("recvmsg: %w", err)
		}
		if rflags&unix.MSG_CTRUNC != 0 {
			rights = true
		}
		if oobn > 0 {
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_RIGHTS {
					rights = true
					fds, _ := unix.ParseUnixRights(&m)
					for _, f := range fds {
						unix.Close(f)
					}
				}
			}
		}
		if n == 0 {
			return pkts, senders, rights, nil // end of stream (or an empty datagram, as CRIU stops too)
		}
		if n > len(buf) { // a datagram longer than the buffer: again, whole
			buf = make([]byte, n)
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, off); err != nil {
				return nil, nil, false, fmt.Errorf("SO_PEEK_OFF: %w", err)
			}
			continue
		}
		pkts = append(pkts, append([]byte(nil), buf[:n]...))
		senders = append(senders, from)
		off += n
	}
}

// recvmsgFrom is recvmsg(2) on fd with the sender's address as the kernel gives it (the
// bytes of sun_path, nil for a socket without a name): unix.Recvmsg cuts an abstract name
// at its first NUL.
func recvmsgFrom(fd int, buf, oob []byte, flags int) (n, oobn, rflags int, from []byte, err error) {
	var rsa unix.RawSockaddrUnix
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	msg := unix.Msghdr{Name: (*byte)(unsafe.Pointer(&rsa)), Namelen: uint32(unsafe.Sizeof(rsa)), Iov: &iov, Iovlen: 1,
		Control: &oob[0]}
	msg.SetControllen(len(oob))
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if e != 0 {
		return 0, 0, 0, nil, e
	}
	if l := int(msg.Namelen) - int(unsafe.Offsetof(rsa.Path)); l > 0 && l <= len(rsa.Path) {
		from = make([]byte, l)
		for i := range from {
			from[i] = byte(rsa.Path[i])
		}
	}
	return int(r), int(msg.Controllen), int(msg.Flags), from, nil
}

// skPacket is one queued packet: the file id of the socket that holds it, its bytes.
type skPacket struct {
	idFor uint32
	data  []byte
}

// unixState is what the dump keeps of the tree's UNIX sockets.
type unixState struct {
	packets []skPacket
	entries []*sk_unix.UnixSkEntry
	where   map[uint32]fdRef // inode -> the fd it was dumped through
}

func (unixSkKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	local, err := unix.PidfdGetfd(r.pidfd, r.f.fd, 0)
	if err != nil {
		return r.errorf("pidfd_getfd: %v", err)
	}
	defer unix.Close(local)
	d, err := sockdiag.Lookup(uint32(r.f.st.Ino))
	if err != nil {
		return r.errorf("%v", err)
	}
	if err := checkUnixSk(r.pid, r.f, local, d); err != nil {
		return err
	}
	opts, err := dumpSkOpts(local)
	if err != nil {
		return r.errorf("%v", err)
	}
	e := &sk_unix.UnixSkEntry{
		Id: proto.Uint32(fe.GetId()), Ino: proto.Uint32(d.Ino), Type: proto.Uint32(uint32(d.Type)),
		State: proto.Uint32(uint32(d.State)), Flags: proto.Uint32(flags), Uflags: proto.Uint32(0),
		Backlog: proto.Uint32(d.WQueue), Peer: proto.Uint32(d.Peer), Fown: own, Opts: opts,
		Name: append([]byte{}, d.Name...), NsId: proto.Uint32(netNsID),
	}
	if d.Shutdown != 0 {
		e.Shutdown = sk_opts.SkShutdown(d.Shutdown).Enum()
	}
	if len(d.Name) > 0 && d.Name[0] != 0 {
		path, st, err := socketFile(r.pid, local, d.Name)
		if err != nil {
			return r.errorf("%v", err)
		}
		e.FilePerms = &sk_unix.FilePermsEntry{Mode: proto.Uint32(st.Mode), Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid)}
		if d.Name[0] != '/' { // a relative name (the kernel reports it with its NUL)
			dir, _ := nameDir(path, d.Name) // socketFile checked it
			e.NameDir = proto.String(dir)
		}
	}
	if hasQueue(d) {
		pkts, _, _, err := peekQueue(local, d.Type == unix.SOCK_STREAM)
		if err != nil {
			return r.errorf("reading its queue: %v", err)
		}
		for _, p := range pkts {
			s.unix.packets = append(s.unix.packets, skPacket{idFor: fe.GetId(), data: p})
		}
	}
	if s.unix.where == nil {
		s.unix.where = map[uint32]fdRef{}
	}
	s.unix.where[d.Ino] = r
	s.unix.entries = append(s.unix.entries, e)
	fe.Usk = e
	return nil
}

// dumpSkOpts reads the socket options CRIU saves in sk_opts_entry.
func dumpSkOpts(fd int) (*sk_opts.SkOptsEntry, error) {
	var firstErr error
	geti := func(opt int) int {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("getsockopt %d: %w", opt, err)
		}
		return v
	}
	getb := func(opt int) *bool { return proto.Bool(geti(opt) != 0) }
	o := &sk_opts.SkOptsEntry{
		SoSndbuf: proto.Uint32(uint32(geti(unix.SO_SNDBUF))), SoRcvbuf: proto.Uint32(uint32(geti(unix.SO_RCVBUF))),
		SoPriority: proto.Uint32(uint32(geti(unix.SO_PRIORITY))), SoRcvlowat: proto.Uint32(uint32(geti(unix.SO_RCVLOWAT))),
		Reuseaddr: getb(unix.SO_REUSEADDR), SoReuseport: getb(unix.SO_REUSEPORT),
		SoDontroute: getb(unix.SO_DONTROUTE), SoNoCheck: getb(unix.SO_NO_CHECK),
		SoBroadcast: getb(unix.SO_BROADCAST), SoKeepalive: getb(unix.SO_KEEPALIVE),
		SoOobinline: proto.Uint32(uint32(geti(unix.SO_OOBINLINE))),
	}
	if dom, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); dom == unix.AF_UNIX || dom == unix.AF_NETLINK {
		o.SoPasscred, o.SoPasssec = getb(unix.SO_PASSCRED), getb(unix.SO_PASSSEC) // UNIX and netlink only
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK); err == nil {
		o.SoBufLock = proto.Uint32(uint32(v))
	}
	if m := geti(unix.SO_MARK); m != 0 {
		o.SoMark = proto.Uint32(uint32(m))
	}
	for _, t := range []struct {
		opt      int
		sec, use **uint64
	}{{unix.SO_SNDTIMEO, &o.SoSndTmoSec, &o.SoSndTmoUsec}, {unix.SO_RCVTIMEO, &o.SoRcvTmoSec, &o.SoRcvTmoUsec}} {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt)
		if err != nil {
			return nil, fmt.Errorf("getsockopt %d: %w", t.opt, err)
		}
		*t.sec, *t.use = proto.Uint64(uint64(tv.Sec)), proto.Uint64(uint64(tv.Usec))
	}
	l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
	if err != nil {
		return nil, fmt.Errorf("SO_LINGER: %w", err)
	}
	if l.Onoff != 0 {
		o.SoLinger = proto.Uint32(uint32(l.Linger))
	}
	if dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err == nil && dev != "" {
		o.SoBoundDev = proto.String(dev)
	}
	return o, firstErr
}

// listenerOf returns the listening socket whose queue holds the connection of client ino
// (UNIX_DIAG lists the clients' inodes as a listener's icons), or 0.
func listenerOf(ino uint32) uint32 {
	all, err := sockdiag.All()
	if err != nil {
		return 0
	}
	for _, l := range all {
		for _, ic := range l.Icons {
			if ic == ino {
				return l.Ino
			}
		}
	}
	return 0
}

// uskExtern is USK_EXTERN of unix_sk_entry.uflags (CRIU's sk-unix.c): the entry of a
// peer no process of the tree holds, which a restore connects to by its name.
const uskExtern = 1

// checkUnixPeers refuses every UNIX socket of the tree whose peer no process of the tree
// holds, unless ext (Options.ExtUnixSk) and the peer is one a restore can connect to again
// (outsidePeer). procs is the whole tree, its fds as precheck read them; it touches
// nothing.
func checkUnixPeers(procs []*liveProc, ext bool, refused *Refusals) error {
	type at struct {
		pid, fd int
		link    string
	}
	var socks []at
	inTree := map[uint32]bool{}
	for _, p := range procs {
		for _, f := range p.fds {
			pid, fd, link := p.pid, f.fd, f.link
			ino, ok := strings.CutPrefix(link, "socket:[")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSuffix(ino, "]"), 10, 32)
			if err != nil {
				continue
			}
			inTree[uint32(n)] = true
			socks = append(socks, at{pid, fd, link})
		}
	}
	if len(socks) == 0 {
		return nil
	}
	all, err := sockdiag.All()
	if err != nil {
		return err
	}
	for _, s := range socks {
		var ino uint32
		fmt.Sscanf(s.link, "socket:[%d]", &ino)
		d := all[ino]
		if d == nil || d.Peer == 0 || inTree[d.Peer] {
			continue
		}
		if why := outsidePeer(d.Peer, all[d.Peer], ext); why != "" {
			refused.add(refuse(s.pid, s.fd, s.link, why))
		}
	}
	return nil
}

// outsidePeer says why a socket connected to peer ino, which no process of the tree holds
// (p: its sock_diag, nil if it cannot be seen), cannot be dumped, or "" when it can. As
// CRIU 4.2's __dump_external_socket (sk-unix.c), it needs ext (--ext-unix-sk) and takes
// only a datagram peer with a name: a restore connects a new socket to that name. CRIU
// also dumps a stream socket or a peer without a name when --ext-unix-sk=INO names the
// socket, for a restore that is handed the socket with --inherit-fd, which imgtool has
// not: refused. Refused too, although CRIU dumps them, as a restore could not connect to
// the same peer again: a peer that is itself connected (it then refuses any other
// socket's connect, EPERM, even once this one is gone), a name relative to the binder's
// working directory, a path that no longer leads to the peer.
func outsidePeer(ino uint32, p *sockdiag.Unix, ext bool) string {
	held := fmt.Sprintf("its peer socket:[%d] is held by no process of the tree", ino)
	switch {
	case !ext:
		return held + ": refused without --ext-unix-sk (CRIU's: a datagram socket connected to a named socket outside the tree)"
	case p == nil:
		return held + " and cannot be seen (another network namespace?): not supported"
	case p.Type != unix.SOCK_DGRAM:
		return fmt.Sprintf("%s and it is a %s connection: --ext-unix-sk takes datagram sockets only, as CRIU's "+
			"(a connection cannot be made again; CRIU dumps one only for a restore handed the socket with --inherit-fd, which imgtool has not)",
			held, sockTypes[p.Type])
	case len(p.Name) == 0:
		return held + " and has no name to connect to again (an end of a socketpair): not supported, as with CRIU's --ext-unix-sk"
	case p.Peer != 0:
		return fmt.Sprintf("%s and is itself connected, to socket:[%d]: it would refuse a restored socket's connect (EPERM)", held, p.Peer)
	case p.Name[0] == 0:
		return "" // an abstract name: the peer's own as long as it lives
	}
	path := boundName(p.Name)
	if !filepath.IsAbs(path) {
		return fmt.Sprintf("%s and is bound to %q, a name relative to its binder's working directory: a restore could not find it", held, path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || !p.HasVFS || st.Ino != uint64(p.VFSIno) || st.Dev != p.FileDev() {
		return fmt.Sprintf("%s and its socket file %s is gone or is another socket's now: a restore could not connect to it", held, path)
	}
	return ""
}

// externEntry is the entry CRIU 4.2 writes for an external peer (fix_external_unix_sockets,
// sk-unix.c): its inode and name, type dgram and state listen whatever they are, USK_EXTERN,
// everything else zero.
func externEntry(id uint32, p *sockdiag.Unix) *fdinfo.FileEntry {
	opts := &sk_opts.SkOptsEntry{SoSndbuf: proto.Uint32(0), SoRcvbuf: proto.Uint32(0),
		SoSndTmoSec: proto.Uint64(0), SoSndTmoUsec: proto.Uint64(0), SoRcvTmoSec: proto.Uint64(0), SoRcvTmoUsec: proto.Uint64(0)}
	e := &sk_unix.UnixSkEntry{
		Id: proto.Uint32(id), Ino: proto.Uint32(p.Ino), Type: proto.Uint32(unix.SOCK_DGRAM), State: proto.Uint32(tcpListen),
		Flags: proto.Uint32(0), Uflags: proto.Uint32(uskExtern), Backlog: proto.Uint32(0), Peer: proto.Uint32(0),
		Fown: zeroFown(), Opts: opts, Name: append([]byte{}, p.Name...),
	}
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_UNIXSK.Enum(), Id: proto.Uint32(id), Usk: e}
}

// finishUnix checks, once every fd of the stopped tree has its entry, that the peer of every
// UNIX socket is in the set (the tree may have changed since precheck) or, with ext
// (Options.ExtUnixSk), an external peer a restore can connect to, which gets its entry then
// (once, however many sockets of the tree are connected to it).
func (s *setState) finishUnix(ext bool) error {
	extern := map[uint32]bool{}
	for _, e := range s.unix.entries {
		p := e.GetPeer()
		if _, ok := s.unix.where[p]; p == 0 || ok || extern[p] {
			continue
		}
		r := s.unix.where[e.GetIno()]
		d, err := sockdiag.Lookup(p)
		if err != nil && !errors.Is(err, sockdiag.ErrNotFound) {
			return r.errorf("its peer socket:[%d]: %v", p, err)
		}
		if why := outsidePeer(p, d, ext); why != "" {
			return refuse(r.pid, r.f.fd, r.f.link, why)
		}
		extern[p] = true
		s.files = append(s.files, externEntry(s.newID(), d))
	}
	return nil
}

// orderUnixPeers returns files with the entry of every UNIX socket after its peer's, but
// for two sockets connected to each other, as CRIU 4.2's dump writes them (it holds an
// entry back until its peer's is written: dump_one_unix_fd, fix_external_unix_sockets):
// CRIU's restore looks a socket's peer up only among the entries read before it
// (collect_one_unixsk, try_resolve_unix_peer) and fails on a peer it has not found
// ("Peer ... unresolved"). A socket connected to a named one (an external peer, or a
// listening or datagram socket of the tree) comes after it. Entries that cannot be put so
// (a ring of three datagram sockets each connected to the next) keep their order, at the
// end.
func orderUnixPeers(files []*fdinfo.FileEntry) []*fdinfo.FileEntry {
	byIno := map[uint32]*sk_unix.UnixSkEntry{}
	for _, f := range files {
		if u := f.GetUsk(); u != nil {
			byIno[u.GetIno()] = u
		}
	}
	out := make([]*fdinfo.FileEntry, 0, len(files))
	written := map[uint32]bool{}
	waiting := map[uint32][]*fdinfo.FileEntry{} // entries held back, by the peer they wait for
	var emit func(f *fdinfo.FileEntry)
	emit = func(f *fdinfo.FileEntry) {
		out = append(out, f)
		if u := f.GetUsk(); u != nil {
			written[u.GetIno()] = true
			held := waiting[u.GetIno()]
			delete(waiting, u.GetIno())
			for _, h := range held {
				emit(h)
			}
		}
	}
	for _, f := range files {
		u := f.GetUsk()
		if u == nil || u.GetPeer() == 0 || written[u.GetPeer()] || byIno[u.GetPeer()] == nil || byIno[u.GetPeer()].GetPeer() == u.GetIno() {
			emit(f)
			continue
		}
		waiting[u.GetPeer()] = append(waiting[u.GetPeer()], f)
	}
	if len(out) < len(files) { // a ring: what is still held, in its order
		held := map[*fdinfo.FileEntry]bool{}
		for _, fs := range waiting {
			for _, f := range fs {
				held[f] = true
			}
		}
		for _, f := range files {
			if held[f] {
				out = append(out, f)
			}
		}
	}
	return out
}

// writeSkQueues writes sk-queues.img: every queued packet, its entry then its bytes.
func (d *dumper) writeSkQueues(s *setState) error {
	if len(s.unix.packets) == 0 {
		return nil
	}
	const name = "sk-queues.img"
	w, err := d.create(name)
	if err != nil {
		return err
	}
	iw, err := image.NewWriter(w, image.KindByName("SK_QUEUES"))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, p := range s.unix.packets {
		e := &sk_packet.SkPacketEntry{IdFor: proto.Uint32(p.idFor), Length: proto.Uint32(uint32(len(p.data)))}
		if err := iw.WriteEntry(e); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if _, err := iw.Write(p.data); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := iw.Close(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return d.finish(w)
}
