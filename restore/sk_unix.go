package restore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	sk_opts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/sockdiag"
)

// Socket states of unix_sk_entry (the kernel's TCP names).
const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
)

// unixSkKind is a UNIX socket (unix_sk_entry), created in imgtool as CRIU's restore creates
// it: two sockets connected to each other (a socketpair, or a client and the socket a
// listener accepted for it) are made with socketpair(2); a listening socket is bound to its
// path or abstract name and listens (a socket file left at the path by the dumped socket is
// removed first; anything else there refuses the set); a dgram socket connected to a named
// one connects to it (one connected to itself, to its own name, once bound); a stream
// connection whose peer had gone (shut down both ways) is a socketpair whose other end is
// closed. The bytes queued in each socket (sk-queues.img, by
// the file id of the receiving socket) are sent again by its peer, or by a helper end for a
// socket without one (a dgram socket gets it through socketpair(2) and connect(AF_UNSPEC),
// which leaves the helper able to send to it), with the send and receive buffers raised
// for the while; then the saved socket options (sk_opts_entry) and shutdown state are set.
//
// A socket whose peer's entry has USK_EXTERN (a peer outside the tree: dump --ext-unix-sk,
// criu dump --ext-unix-sk) is connected to that peer's name again, as CRIU's restore does;
// the peer itself, which lives outside, is never made, bound or listened to, nor its file
// removed. It needs Options.ExtUnixSk, as criu restore needs --ext-unix-sk (checkExternalPeer).
//
// Refused, before anything exists: a peer that is not in the set, an external peer
// without Options.ExtUnixSk or one that cannot be connected to again (checkExternalPeer),
// a connection not accepted yet (an in-flight connection to a listening socket), a socket
// connected to itself without a name, descriptors in flight (SCM_RIGHTS in
// sk-queues.img), a socket filter, a bound socket whose file was deleted, CRIU's service
// and plugin sockets.
type unixSkKind struct{}

// uskExtern is USK_EXTERN of unix_sk_entry.uflags (CRIU's sk-unix.c): the entry of a
// peer outside the tree, saved by its name.
const uskExtern = 1

// external tells whether u is the entry of a peer outside the tree.
func external(u *sk_unix.UnixSkEntry) bool { return u.GetUflags()&uskExtern != 0 }

// unixSockets are the UNIX sockets of the set being created: an end created with its peer
// (a socketpair), or before its own description because a socket connected to it needed
// it, waits in made, by inode, until its description is opened; created holds every inode
// created so far, so that a socket is made once however many connect to it.
type unixSockets struct {
	made    map[uint32]*os.File
	created map[uint32]bool
}

func (u *unixSockets) close() {
	for _, f := range u.made {
		f.Close()
	}
}

// unixEntry returns the unix_sk_entry of inode ino in the set, or nil.
func unixEntry(pl *plan, ino uint32) *sk_unix.UnixSkEntry {
	for _, fe := range pl.files {
		if fe.Usk != nil && fe.Usk.GetIno() == ino {
			return fe.Usk
		}
	}
	return nil
}

// sockPath is the path a socket bound in the filesystem binds to, "" for an abstract or no
// name.
func sockPath(u *sk_unix.UnixSkEntry) string {
	n := u.GetName()
	if len(n) == 0 || n[0] == 0 {
		return ""
	}
	// The kernel reports (and CRIU saves) a path with its terminating NUL.
	p := string(bytes.TrimRight(n, "\x00"))
	if p[0] != '/' && u.GetNameDir() != "" {
		return filepath.Join(u.GetNameDir(), p)
	}
	return p
}

// binds tells whether the socket is bound again at restore: CRIU binds every named socket
// but a connected stream or seqpacket one (an accepted socket reports its listener's name).
func binds(u *sk_unix.UnixSkEntry) bool {
	return len(u.GetName()) > 0 && (u.GetType() == unix.SOCK_DGRAM || u.GetState() != tcpEstablished)
}

// mutualPeer returns the entry of u's peer when the two are connected to each other.
func mutualPeer(pl *plan, u *sk_unix.UnixSkEntry) *sk_unix.UnixSkEntry {
	if u.GetPeer() == 0 || u.GetPeer() == u.GetIno() {
		return nil
	}
	if p := unixEntry(pl, u.GetPeer()); p != nil && p.GetPeer() == u.GetIno() {
		return p
	}
	return nil
}

func (unixSkKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	u := fe.Usk
	if u == nil {
		return noEntry(what, fe)
	}
	no := func(format string, args ...any) error {
		return fmt.Errorf("%s: UNIX socket:[%d]: %s", what, u.GetIno(), fmt.Sprintf(format, args...))
	}
	switch u.GetType() {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return no("type %d is not supported", u.GetType())
	}
	switch u.GetState() {
	case tcpListen, tcpEstablished, tcpClose:
	default:
		return no("state %d is not supported", u.GetState())
	}
	if u.GetUflags() != 0 {
		return no("an external, service or plugin socket (uflags %#x): not supported", u.GetUflags())
	}
	if u.GetDeleted() {
		return no("bound to a deleted file: not supported")
	}
	if n := u.GetName(); binds(u) && len(n) > 0 && n[0] == '/' {
		// Bound again by imgtool, in its own root: a name the process bound in its
		// chroot would be made outside it (imgtool's dumps refuse it).
		if root := pl.files[p.fs.GetRootId()]; root != nil && root.Reg != nil && root.Reg.GetName() != "/" {
			return no("bound to %q inside the chroot %s: not supported", sockPath(u), root.Reg.GetName())
		}
	}
	if len(u.GetOpts().GetSoFilter()) > 0 {
		return no("a socket filter: not supported")
	}
	if peer := u.GetPeer(); peer != 0 {
		pe := unixEntry(pl, peer)
		switch {
		case peer == u.GetIno() && (u.GetType() != unix.SOCK_DGRAM || !binds(u)):
			return no("connected to itself without a name to connect to: not supported")
		case peer == u.GetIno(): // a named dgram socket connected to itself: bound, then connected to its name
		case pe == nil:
			return no("its peer socket:[%d] is not in the set (an external socket): not supported", peer)
		case external(pe):
			if why := checkExternalPeer(pl, u, pe); why != "" {
				return no("%s", why)
			}
		case pe.GetPeer() != u.GetIno() && u.GetType() != unix.SOCK_DGRAM:
			return no("a connection not accepted yet (in-flight, to socket:[%d]): not supported", peer)
		case pe.GetPeer() != u.GetIno() && (len(pe.GetName()) == 0 || !binds(pe)):
			return no("connected to socket:[%d], which has no name to connect to", peer)
		}
	} else if u.GetState() == tcpEstablished && u.GetType() != unix.SOCK_DGRAM && u.GetShutdown() != sk_opts.SkShutdown_BOTH {
		return no("a connection without a peer, not shut down: not supported")
	}
	for _, pk := range pl.skQueues[fe.GetId()] {
		if len(pk.GetScm()) > 0 {
			return no("file descriptors in flight (SCM_RIGHTS in its queue): not supported")
		}
	}
	if !binds(u) {
		return nil
	}
	if path := sockPath(u); path != "" {
		if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
			return no("its path %s is too long to bind to", path)
		}
		var st unix.Stat_t
		err := unix.Lstat(path, &st)
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil
		case err != nil:
			return no("%s: %v", path, err)
		case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
			return no("something else than a socket is at %s", path)
		}
		if all, err := sockdiag.All(); err == nil {
			for _, s := range all {
				if s.HasVFS && uint64(s.VFSIno) == st.Ino {
					return no("the socket file %s is in use by a live socket", path)
				}
			}
		}
		return nil
	}
	all, err := sockdiag.All()
	if err != nil {
		return err
	}
	for _, s := range all {
		if bytes.Equal(s.Name, u.GetName()) {
			return no("the abstract name @%s is in use by a live socket", u.GetName()[1:])
		}
	}
	return nil
}

// checkExternalPeer says why u, connected to pe, a peer outside the set (USK_EXTERN), cannot
// be restored, or "" when it can. CRIU's restore (open_unixsk_standalone and
// post_open_standalone, sk-unix.c) needs --ext-unix-sk and connects u to pe's name,
// whatever u's type: a stream socket would get a new connection (if anything listens
// there), not its own; CRIU's dump only saves one for a restore handed the socket with
// --inherit-fd, which imgtool has not: refused. So is a peer without a name (the same),
// and, where CRIU would fail the restore midway, a name that is relative (CRIU resolves it
// from its own working directory) or at which no unconnected datagram socket is bound
// now (the connect would fail: ECONNREFUSED, or EPERM from a socket connected elsewhere).
func checkExternalPeer(pl *plan, u, pe *sk_unix.UnixSkEntry) string {
	held := fmt.Sprintf("its peer socket:[%d] is outside the set (dumped with --ext-unix-sk)", pe.GetIno())
	if !pl.extUnixSk {
		return held + ": it is connected to by its name again only with --ext-unix-sk (criu restore needs it too)"
	}
	if u.GetType() != unix.SOCK_DGRAM {
		return fmt.Sprintf("%s and this is a %s connection: it cannot be made again (CRIU saves one only for a restore handed the socket with --inherit-fd, which imgtool has not)",
			held, sockTypeName(u.GetType()))
	}
	if len(pe.GetName()) == 0 {
		return held + " and has no name to connect to (CRIU saves one only for a restore handed the socket with --inherit-fd, which imgtool has not)"
	}
	path := sockPath(pe)
	if path != "" && !filepath.IsAbs(path) {
		return fmt.Sprintf("%s and is bound to %q, a name relative to a working directory the set does not record", held, path)
	}
	name := unixAddr(pe).Name
	s, err := liveSocketAt(pe, path)
	switch {
	case err != nil:
		return fmt.Sprintf("%s at %q: %v", held, name, err)
	case s == nil || s.Type != unix.SOCK_DGRAM:
		return fmt.Sprintf("%s and no datagram socket is bound at %q now: nothing to connect to", held, name)
	case s.Peer != 0:
		return fmt.Sprintf("%s and the socket at %q is connected to socket:[%d]: it would refuse the connection (EPERM)", held, name, s.Peer)
	}
	return ""
}

// sockTypeName names a socket type.
func sockTypeName(t uint32) string {
	switch t {
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_SEQPACKET:
		return "seqpacket"
	case unix.SOCK_DGRAM:
		return "dgram"
	}
	return fmt.Sprintf("type %d", t)
}

// liveSocketAt returns the live socket bound to u's name (path when it is one in the
// filesystem, the file's inode telling which), or nil.
func liveSocketAt(u *sk_unix.UnixSkEntry, path string) (*sockdiag.Unix, error) {
	var st unix.Stat_t
	if path != "" {
		if err := unix.Stat(path, &st); errors.Is(err, unix.ENOENT) {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
	}
	all, err := sockdiag.All()
	if err != nil {
		return nil, err
	}
	for _, s := range all {
		if path == "" && bytes.Equal(s.Name, u.GetName()) ||
			path != "" && s.HasVFS && uint64(s.VFSIno) == st.Ino && s.FileDev() == st.Dev {
			return s, nil
		}
	}
	return nil, nil
}

func (unixSkKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	f, err := d.unixSock(pl, fe.Usk)
	if err != nil {
		return nil, err
	}
	if err := setStatusFlags(f, fe.Usk.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (unixSkKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Usk.GetFown() }
func (unixSkKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Usk.GetFlags() }

// loadLegacy reads sk-queues.img, the bytes queued in the sockets of the set, into
// pl.skQueues.
func (unixSkKind) loadLegacy(pl *plan) error {
	if !pl.src.has("sk-queues.img") {
		return nil
	}
	img, err := readImage(pl.src, "sk-queues.img")
	if err != nil {
		return err
	}
	for i, e := range img.Entries {
		pk, ok := e.Msg.(*sk_packet.SkPacketEntry)
		if !ok {
			return fmt.Errorf("sk-queues.img: entry %d has type %T", i, e.Msg)
		}
		if uint32(len(e.Payload)) != pk.GetLength() {
			return fmt.Errorf("sk-queues.img: packet for file id %d: %d bytes, entry says %d", pk.GetIdFor(), len(e.Payload), pk.GetLength())
		}
		pl.skQueues[pk.GetIdFor()] = append(pl.skQueues[pk.GetIdFor()], queued{pk, e.Payload})
	}
	return nil
}

// queued is one packet of sk-queues.img and its bytes.
type queued struct {
	*sk_packet.SkPacketEntry
	data []byte
}

// unixSock returns the socket of u: created before with its peer, or now.
func (d *descriptions) unixSock(pl *plan, u *sk_unix.UnixSkEntry) (*os.File, error) {
	if d.unix.made == nil {
		d.unix.made, d.unix.created = map[uint32]*os.File{}, map[uint32]bool{}
	}
	if f := d.unix.made[u.GetIno()]; f != nil {
		delete(d.unix.made, u.GetIno())
		return f, nil
	}
	d.unix.created[u.GetIno()] = true
	name := func(u *sk_unix.UnixSkEntry) string {
		return fmt.Sprintf("socket:[%d] (file id %d)", u.GetIno(), u.GetId())
	}
	typ := int(u.GetType())
	var f *os.File
	pair := func() (*os.File, *os.File, error) {
		fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: socketpair: %w", name(u), err)
		}
		return os.NewFile(uintptr(fds[0]), name(u)), os.NewFile(uintptr(fds[1]), "its peer"), nil
	}
	fail := func(err error) (*os.File, error) {
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	if pe := mutualPeer(pl, u); pe != nil {
		a, b, err := pair()
		if err != nil {
			return nil, err
		}
		b = renamed(b, name(pe))
		err = fillQueue(b, a, pl.skQueues[u.GetId()])
		if err == nil {
			err = fillQueue(a, b, pl.skQueues[pe.GetId()])
		}
		for _, s := range []struct {
			f *os.File
			u *sk_unix.UnixSkEntry
		}{{a, u}, {b, pe}} {
			if err == nil && binds(s.u) {
				err = bindUnix(s.f, s.u)
			}
			if err == nil {
				err = sockFinish(s.f, s.u)
			}
		}
		if err != nil {
			a.Close()
			b.Close()
			return nil, err
		}
		d.unix.made[pe.GetIno()] = b
		d.unix.created[pe.GetIno()] = true
		return a, nil
	}
	switch {
	case u.GetState() == tcpEstablished && u.GetType() != unix.SOCK_DGRAM && u.GetPeer() == 0:
		// A connection whose peer is gone: a socketpair whose other end sends the queue and
		// closes.
		a, b, err := pair()
		if err != nil {
			return nil, err
		}
		err = fillQueue(b, a, pl.skQueues[u.GetId()])
		b.Close()
		if f = a; err != nil {
			return fail(err)
		}
	case u.GetType() == unix.SOCK_DGRAM && len(pl.skQueues[u.GetId()]) > 0:
		// A helper end of a socketpair sends the queue once the socket has let go of it as
		// its peer (connect AF_UNSPEC): the helper may still send to it.
		a, b, err := pair()
		if err != nil {
			return nil, err
		}
		sa := unix.RawSockaddr{Family: unix.AF_UNSPEC}
		if _, _, e := unix.Syscall(unix.SYS_CONNECT, a.Fd(), uintptr(unsafe.Pointer(&sa)), 2); e != 0 {
			err = fmt.Errorf("connect AF_UNSPEC: %w", e)
		}
		if err == nil {
			err = fillQueue(b, a, pl.skQueues[u.GetId()])
		}
		b.Close()
		if f = a; err != nil {
			return fail(fmt.Errorf("%s: refilling its queue: %w", name(u), err))
		}
	default:
		fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: socket: %w", name(u), err)
		}
		f = os.NewFile(uintptr(fd), name(u))
	}
	if binds(u) {
		if err := bindUnix(f, u); err != nil {
			return fail(err)
		}
	}
	if u.GetState() == tcpListen {
		if err := unix.Listen(int(f.Fd()), int(u.GetBacklog())); err != nil {
			return fail(fmt.Errorf("%s: listen: %w", name(u), err))
		}
	}
	if peer := u.GetPeer(); peer != 0 && u.GetType() == unix.SOCK_DGRAM {
		// Connected to a named socket: made (and bound) first, unless it was already (its
		// own description, or for another socket connected to it: zdtm's
		// socket_dgram_data), is this socket, or lives outside the set (external: only its
		// name is saved, and it is still there, checkExternalPeer).
		pe := unixEntry(pl, peer)
		if !external(pe) && peer != u.GetIno() && !d.unix.created[peer] {
			pf, err := d.unixSock(pl, pe)
			if err != nil {
				return fail(err)
			}
			d.unix.made[peer] = pf
		}
		if err := unix.Connect(int(f.Fd()), unixAddr(pe)); err != nil {
			return fail(fmt.Errorf("%s: connecting to socket:[%d] at %q: %w", name(u), peer, unixAddr(pe).Name, err))
		}
	}
	if err := sockFinish(f, u); err != nil {
		return fail(err)
	}
	return f, nil
}

// renamed gives f another name.
func renamed(f *os.File, name string) *os.File {
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return f
	}
	unix.CloseOnExec(fd)
	f.Close()
	return os.NewFile(uintptr(fd), name)
}

// unixAddr is the address socket u was bound to.
func unixAddr(u *sk_unix.UnixSkEntry) *unix.SockaddrUnix {
	if p := sockPath(u); p != "" {
		return &unix.SockaddrUnix{Name: p}
	}
	n := u.GetName()
	return &unix.SockaddrUnix{Name: "@" + string(n[1:])}
}

// bindUnix binds f to u's name: a path (after removing the socket file the dumped socket
// left there; check refused anything else) with its mode and owner, or an abstract name.
func bindUnix(f *os.File, u *sk_unix.UnixSkEntry) error {
	path := sockPath(u)
	if path != "" {
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			if err := unix.Unlink(path); err != nil {
				return fmt.Errorf("%s: removing the old socket file %s: %w", f.Name(), path, err)
			}
		}
	}
	if err := unix.Bind(int(f.Fd()), unixAddr(u)); err != nil {
		return fmt.Errorf("%s: binding to %q: %w", f.Name(), unixAddr(u).Name, err)
	}
	if perms := u.GetFilePerms(); perms != nil && path != "" {
		if err := unix.Fchownat(unix.AT_FDCWD, path, int(perms.GetUid()), int(perms.GetGid()), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("%s: chown %s: %w", f.Name(), path, err)
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, path, perms.GetMode()&07777, 0); err != nil {
			return fmt.Errorf("%s: chmod %s: %w", f.Name(), path, err)
		}
	}
	return nil
}

// maxBuf is the buffer size (halved, as setsockopt doubles it) sockets get while their
// queues are refilled, as CRIU's restore_prepare_socket sets it.
const maxBuf = (1<<31 - 1) / 2

// setBufs sets the send and receive buffers (SO_*BUFFORCE, which ignores the sysctl
// limits, or the plain options without CAP_NET_ADMIN).
func setBufs(fd int, snd, rcv int) error {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, snd) == nil &&
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcv) == nil {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, snd); err != nil {
		return fmt.Errorf("SO_SNDBUF: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcv); err != nil {
		return fmt.Errorf("SO_RCVBUF: %w", err)
	}
	return nil
}

// fillQueue queues pkts in to by sending them from from, each packet in one send (datagram
// boundaries kept).
func fillQueue(from, to *os.File, pkts []queued) error {
	if len(pkts) == 0 {
		return nil
	}
	if err := setBufs(int(from.Fd()), maxBuf, maxBuf); err != nil {
		return fmt.Errorf("%s: %w", from.Name(), err)
	}
	if err := setBufs(int(to.Fd()), maxBuf, maxBuf); err != nil {
		return fmt.Errorf("%s: %w", to.Name(), err)
	}
	for _, p := range pkts {
		n, err := unix.SendmsgN(int(from.Fd()), p.data, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err != nil || n != len(p.data) {
			return fmt.Errorf("%s: queueing %d bytes: sent %d: %v", to.Name(), len(p.data), n, err)
		}
	}
	return nil
}

// sockFinish sets the saved socket options and shutdown state of a socket whose queue is
// in place.
func sockFinish(f *os.File, u *sk_unix.UnixSkEntry) error {
	fd := int(f.Fd())
	errs, err := setSkOpts(fd, u.GetOpts())
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	if how := u.GetShutdown(); how != sk_opts.SkShutdown_NONE {
		if err := unix.Shutdown(fd, int(how)-1); err != nil { // READ, WRITE, BOTH: SHUT_RD, SHUT_WR, SHUT_RDWR
			errs = append(errs, fmt.Errorf("shutdown %v: %w", how, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	return nil
}

// setSkOpts sets the socket options of sk_opts_entry o on fd (the flags only when on): err
// is about the buffer sizes, errs about the rest.
func setSkOpts(fd int, o *sk_opts.SkOptsEntry) (errs []error, err error) {
	if err := setBufs(fd, int(o.GetSoSndbuf()/2), int(o.GetSoRcvbuf()/2)); err != nil {
		return nil, err
	}
	set := func(opt, v int) {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v); err != nil {
			errs = append(errs, fmt.Errorf("setsockopt %d to %d: %w", opt, v, err))
		}
	}
	flag := func(opt int, v *bool) {
		if v != nil && *v {
			set(opt, 1)
		}
	}
	if o.SoBufLock != nil {
		set(unix.SO_BUF_LOCK, int(o.GetSoBufLock()))
	}
	if o.SoPriority != nil {
		set(unix.SO_PRIORITY, int(o.GetSoPriority()))
	}
	if o.SoRcvlowat != nil {
		set(unix.SO_RCVLOWAT, int(o.GetSoRcvlowat()))
	}
	if o.SoMark != nil {
		set(unix.SO_MARK, int(o.GetSoMark()))
	}
	flag(unix.SO_PASSCRED, o.SoPasscred)
	flag(unix.SO_PASSSEC, o.SoPasssec)
	flag(unix.SO_DONTROUTE, o.SoDontroute)
	flag(unix.SO_NO_CHECK, o.SoNoCheck)
	flag(unix.SO_BROADCAST, o.SoBroadcast)
	flag(unix.SO_KEEPALIVE, o.SoKeepalive)
	flag(unix.SO_REUSEADDR, o.Reuseaddr)
	if o.GetSoOobinline() != 0 {
		set(unix.SO_OOBINLINE, 1)
	}
	if o.SoLinger != nil {
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: int32(o.GetSoLinger())}); err != nil {
			errs = append(errs, fmt.Errorf("SO_LINGER: %w", err))
		}
	}
	for _, t := range []struct {
		opt       int
		sec, usec uint64
	}{{unix.SO_SNDTIMEO, o.GetSoSndTmoSec(), o.GetSoSndTmoUsec()}, {unix.SO_RCVTIMEO, o.GetSoRcvTmoSec(), o.GetSoRcvTmoUsec()}} {
		tv := unix.Timeval{Sec: int64(t.sec), Usec: int64(t.usec)}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt, &tv); err != nil {
			errs = append(errs, fmt.Errorf("timeout %d: %w", t.opt, err))
		}
	}
	if dev := o.GetSoBoundDev(); dev != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev); err != nil {
			errs = append(errs, fmt.Errorf("SO_BINDTODEVICE %s: %w", dev, err))
		}
	}
	return errs, nil
}
