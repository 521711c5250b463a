package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/nftables"
	"github.com/imgtool/imgtool/internal/tcprepair"
)

// TCP connections, as CRIU 4.2's sk-tcp.c and libsoccr save them with --tcp-established
// (Options.TCPEstablished): the inet_sk_entry of sk_inet.go with the connection's state,
// and tcp-stream-INO.img (INO the socket's inode, in hex) with one tcp_stream_entry (the
// sequence numbers of both queues, their lengths and the unsent part of the send queue,
// the TCP options negotiated, the MSS clamp, the timestamp, the window) followed by the
// bytes of the receive queue and of the send queue.
//
// Each connection is read through a copy of the socket in imgtool (pidfd_getfd), not by
// calls injected into its process: TCP_REPAIR and the other options below are state of the
// socket, not of the fd, so a copy reaches the very socket the process uses; TCP_REPAIR
// asks CAP_NET_ADMIN of the caller, which imgtool has and the process may not; and the copy
// keeps the socket alive to the end of the dump whatever its processes do, as CRIU keeps
// its own. Once the tree is stopped, for each connection (numberFds, in fd order):
//
//  1. The connection is locked: a classic BPF socket filter that drops every packet
//     (SO_ATTACH_FILTER, "ret #0") is attached. TCP runs a socket's filter on every
//     incoming segment before the segment reaches TCP (tcp_v4_rcv, tcp_v6_rcv), and drops
//     it silently (no reset): from then on nothing the peer sends (data, acknowledgement,
//     window update, FIN, reset) changes the socket. This stands in for CRIU's nftables or
//     iptables lock, and needs no binary. Repair mode alone would not do: a socket in
//     repair mode still takes in data and acknowledges it (checked on Linux 6.18).
//  2. The socket is put in repair mode (TCP_REPAIR): its state can be read, and a socket
//     closed in repair mode goes away without sending a FIN or a reset.
//  3. Its state is read as libsoccr_save reads it: TCP_INFO (state, options, window
//     scales), SIOCOUTQ, SIOCOUTQNSD and SIOCINQ (queue lengths), TCP_MAXSEG (the MSS
//     clamp, in repair mode), TCP_TIMESTAMP, TCP_REPAIR_WINDOW, and for each queue
//     (TCP_REPAIR_QUEUE) its sequence number (TCP_QUEUE_SEQ) and its bytes, peeked
//     (MSG_PEEK) one byte more than its length to be sure of it. The queue selection is put
//     back to none.
//
// What this guarantees: the process is stopped, so it neither reads nor writes; the filter
// keeps every incoming segment from changing the socket; the socket itself may still send
// (a retransmission, a window probe, unsent data its window allows), which gives the peer
// nothing the image lacks: everything the peer acknowledged is out of the saved send
// queue and was acknowledged before the lock, and every byte the socket acknowledged is in
// the saved receive queue. Locking each socket before reading it keeps two ends of one
// connection, both in the tree, consistent with each other whatever order they are read
// in: the sender never forgets what the receiver has not saved. Segments the peer sent
// after the lock are sent again by the peer after the restore. Not saved, as with CRIU:
// segments received out of order (the peer sends them again; the window update one of
// them brought goes with it: snd_wl1 is saved at most rcv_nxt, tcprepair.ClampWl1, which
// a restore's TCP_REPAIR_WINDOW would refuse otherwise) and urgent data (refused).
//
// After a dump that kills the tree, the copies are closed while still in repair mode: the
// connections vanish without a word to their peers. The socket filter goes with them: a
// peer outside the tree that sent anything between the dump and the restore would get a
// reset from the kernel, as no socket has the connection any more. So, with the socket lock
// alone (Options.NetworkLock "socket", the default), a connection whose peer is not an end
// of the tree too is refused (precheck, and again once the tree is stopped: finishTCP),
// unless the tree is left running. With Options.NetworkLock nftables the dump also makes
// CRIU's own lock (internal/nftables): the table "inet CRIU-<dump_criu_run_id>", with a
// rule dropping each direction of each connection (packets carrying CRIU's SOCCR_MARK
// excepted), made over netlink before the connection is put in repair mode; it outlives
// the dump, the peer's packets are dropped without a reset until a restore (imgtool's or
// CRIU's, which both delete the table) brings the connection back, and peers outside the
// tree are fine. CRIU's restore needs it for a loopback connection with bytes not sent yet
// (libsoccr sends them out of repair mode, and the peer's socket, not made yet, would
// answer with a reset). With --leave-running, and when a dump fails or is interrupted
// (SIGINT, SIGTERM, SIGHUP), every connection is put back before the tree runs again: the
// nftables table deleted and the filters detached first, then repair mode left
// (TCP_REPAIR_OFF, which sends a window probe so that the peer sends again at once what
// was dropped) and SO_REUSEADDR set back (leaving repair mode clears it). A SIGKILL of
// imgtool after the lock cannot be caught: the tree then runs on with its connections in
// repair mode and locked, as CRIU's would with its firewall rules left in place.
//
// With Options.TCPClose (CRIU's --tcp-close) connections are saved as without repair
// mode: the inet_sk_entry with their state and peer, no stream; a restore with --tcp-close
// gives the process closed sockets. Without either option a connection refuses the dump
// (checkTCPConns, in precheck). Half-closed connections (FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT,
// LAST_ACK, CLOSING) are saved as libsoccr saves them: in their state, with this end's
// FIN left out of the send queue's lengths (SIOCOUTQ and SIOCOUTQNSD count it); its
// sequence number stays in outq_seq, as the peer's stays in inq_seq. Refused with
// --tcp-established, naming the fd: a peer outside the tree with the socket lock alone
// (see above), urgent data not read yet (MSG_OOB: the mark would be lost),
// SO_PEEK_OFF set (CRIU's images have no field for it), an upper layer protocol
// (TCP_ULP, kernel TLS: the queues hold its records), and a dumper without CAP_NET_ADMIN.

// tcpConnStates are the states of a TCP connection: a socket with a peer, SYN_SENT aside.
var tcpConnStates = map[uint8]bool{1: true, 4: true, 5: true, 8: true, 9: true, 11: true}

// tcpConns is what the dump does with TCP connections (Options.TCPEstablished and
// TCPClose), and the connections it locked.
type tcpConns struct {
	established, close bool
	leaveRunning       bool   // Options.LeaveRunning
	nftables           bool   // Options.NetworkLock is NetworkLockNftables
	table              string // the nftables table, named after the run id
	tableMade          bool
	locked             []*tcpConn
}

// newTCPConns is what opts say of connections, for a dump of run id runID.
func newTCPConns(opts Options, runID string) tcpConns {
	t := tcpConns{established: opts.TCPEstablished, close: opts.TCPClose, leaveRunning: opts.LeaveRunning,
		nftables: opts.NetworkLock == NetworkLockNftables}
	if t.nftables {
		t.table = nftables.TableName(runID)
	}
	return t
}

// peersMatter tells whether a connection whose peer is outside the tree is refused: its
// peer would get a reset if it sent anything between the dump, which kills the tree, and
// the restore, unless a lock outlives the dump (nftables).
func (t *tcpConns) peersMatter() bool { return t.repairs() && !t.leaveRunning && !t.nftables }

// tcpEnd is one end of a connection of the tree: where it is and its addresses.
type tcpEnd struct {
	pid      int
	f        *fdDesc
	name     string // familyName
	state    uint8
	src, dst netip.AddrPort
}

// outsidePeers refuses the ends whose peer is none of all, the ends of the tree, when that
// matters (peersMatter).
func (t *tcpConns) outsidePeers(ends, all []tcpEnd, refused *Refusals) {
	if !t.peersMatter() {
		return
	}
	key := func(a, b netip.AddrPort) [2]netip.AddrPort {
		return [2]netip.AddrPort{netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), netip.AddrPortFrom(b.Addr().Unmap(), b.Port())}
	}
	in := map[[2]netip.AddrPort]bool{}
	for _, e := range all {
		in[key(e.src, e.dst)] = true
	}
	for _, e := range ends {
		if !in[key(e.dst, e.src)] {
			refused.add(refuse(e.pid, e.f.fd, e.f.link, fmt.Sprintf("%s socket is a connection (%s) from %s to %s: its peer is outside the tree, "+
				"and would get a reset if it sent anything between the dump and the restore: use --network-lock nftables (a lock that outlives the dump, as CRIU's) or --leave-running",
				e.name, tcpStates[e.state], e.src, e.dst)))
		}
	}
}

// tcpConn is a connection the dump locked: imgtool's copy of the socket and what was
// read of it.
type tcpConn struct {
	fd       int    // imgtool's copy
	ino      uint32 // the socket's inode: tcp-stream-INO.img
	state    uint8  // its TCP state, read in repair mode
	end      tcpEnd // where it is, its addresses
	reuse    int    // SO_REUSEADDR as the process had it (repair mode changes it)
	filtered bool   // the drop filter is attached
	repair   bool   // in repair mode
	stream   *tcp_stream.TcpStreamEntry
	inq      []byte // the receive queue
	outq     []byte // the send queue
}

// repairs tells whether connections are locked and saved with their streams.
func (t *tcpConns) repairs() bool { return t.established && !t.close }

// checkTCPConns refuses, in precheck, every TCP connection of the tree that the options do
// not let the dump save; it touches nothing (the sockets are read through copies).
func checkTCPConns(procs []*liveProc, opts Options, refused *Refusals) error {
	mode := newTCPConns(opts, "")
	var ends, all []tcpEnd // the ends saved, every end
	for _, p := range procs {
		for _, fdesc := range p.fds {
			pid, fd, link := p.pid, fdesc.fd, fdesc.link
			if fdesc.refused || fdesc.kind != fdInetSk {
				continue
			}
			local, err := fdCopy(pid, fd)
			if err != nil {
				if vanished(err) {
					continue
				}
				return err
			}
			s, err := readInetSk(local)
			if err == nil && s.proto == unix.IPPROTO_TCP && tcpConnStates[s.state] {
				f := &fdDesc{fd: fd, link: link}
				e := tcpEnd{pid, f, familyName(local), s.state, s.src, s.dst}
				all = append(all, e)
				if cerr := mode.check(pid, f, local, s); cerr != nil {
					err = refused.add(cerr)
				} else {
					ends = append(ends, e)
				}
			}
			unix.Close(local)
			if err != nil {
				return fmt.Errorf("process %d fd %d (%s): %w", pid, fd, link, err)
			}
		}
	}
	mode.outsidePeers(ends, all, refused)
	return nil
}

// finishTCP refuses, once every fd of the stopped tree has its entry, the connections
// whose peer is outside the tree when that matters (the tree may have changed since
// precheck).
func (s *setState) finishTCP() error {
	var ends []tcpEnd
	for _, c := range s.tcp.locked {
		ends = append(ends, c.end)
	}
	var refused Refusals
	s.tcp.outsidePeers(ends, ends, &refused)
	return refused.err()
}

// check refuses TCP connection s (open at local, fd f of pid) if the dump cannot save it
// with these options.
func (t *tcpConns) check(pid int, f *fdDesc, local int, s *inetSk) error {
	no := func(why string) error {
		return refuse(pid, f.fd, f.link, fmt.Sprintf("%s socket is a connection (%s) from %s to %s: %s", familyName(local), tcpStates[s.state], s.src, s.dst, why))
	}
	switch {
	case t.close:
		return nil
	case !t.established:
		return no("connected TCP sockets are saved only with --tcp-established (or closed with --tcp-close)")
	case !hasCapability(tcprepair.CapNetAdmin):
		return no("TCP repair mode needs CAP_NET_ADMIN")
	}
	buf := make([]byte, 1)
	if _, _, err := unix.Recvfrom(local, buf, unix.MSG_OOB|unix.MSG_PEEK|unix.MSG_DONTWAIT); !errors.Is(err, unix.EINVAL) {
		return no("it has urgent data (MSG_OOB) not read yet: not supported")
	}
	if off, err := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_PEEK_OFF); err == nil && off >= 0 {
		return no("SO_PEEK_OFF is set: not supported (CRIU's images have no place for it)")
	}
	if ulp, err := unix.GetsockoptString(local, unix.IPPROTO_TCP, unix.TCP_ULP); err == nil && ulp != "" {
		return no(fmt.Sprintf("it runs the upper layer protocol %q (TCP_ULP): not supported", ulp))
	}
	return nil
}

// hasCapability tells whether imgtool has capability c in its effective set.
func hasCapability(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) != nil {
		return false
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}

// tcpShutdown is the shutdown state of TCP connection s (open at local), as sock_diag
// reports it and CRIU saves it: the sending side is shut once this end sent its FIN (the
// states after it), the receiving side when poll says so (the peer's FIN, or SHUT_RD).
func tcpShutdown(local int, s *inetSk) uint32 {
	var how uint32
	pfd := []unix.PollFd{{Fd: int32(local), Events: unix.POLLRDHUP}}
	if n, err := unix.Poll(pfd, 0); err == nil && n == 1 && pfd[0].Revents&unix.POLLRDHUP != 0 {
		how |= 1
	}
	switch s.state {
	case 4, 5, 9, 11: // FIN_WAIT1, FIN_WAIT2, LAST_ACK, CLOSING
		how |= 2
	}
	return how
}

// lock locks the connection s open at local (fd f of pid) and reads its stream; the
// connection is in t.locked as soon as it is touched, so that resume puts it back.
func (t *tcpConns) lock(pid int, f *fdDesc, local int, s *inetSk) (*tcpConn, error) {
	fd, err := unix.FcntlInt(uintptr(local), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup: %w", err)
	}
	c := &tcpConn{fd: fd, ino: uint32(f.st.Ino), end: tcpEnd{pid, f, familyName(local), s.state, s.src, s.dst}}
	t.locked = append(t.locked, c)
	if c.reuse, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR); err != nil {
		return nil, fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if err := attachDropFilter(fd); err != nil {
		return nil, err
	}
	c.filtered = true
	if t.nftables {
		if !t.tableMade {
			if err := nftables.Create(t.table); err != nil {
				return nil, err
			}
			t.tableMade = true
		}
		if err := nftables.Lock(t.table, s.src, s.dst); err != nil {
			return nil, err
		}
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return nil, fmt.Errorf("TCP_REPAIR: %w", err)
	}
	c.repair = true
	return c, c.read()
}

// attachDropFilter attaches a socket filter that drops every packet but those carrying
// CRIU's mark (SOCCR_MARK), as CRIU's own lock lets them through: those are made up by a
// restore (a FIN the peer sent, for a half-closed connection), never sent by a peer.
func attachDropFilter(fd int) error {
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: tcprepair.SkfAdMark},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: nftables.Mark},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fmt.Errorf("SO_ATTACH_FILTER: %w", err)
	}
	return nil
}

// tcpInfoHead is the start of struct tcp_info: state, options and the window scales
// (tcpi_snd_wscale in the low nibble of byte 6, tcpi_rcv_wscale in the high one), which
// unix.TCPInfo leaves out.
func tcpInfoHead(fd int) (state, opts, sndWscale, rcvWscale uint8, err error) {
	var b [8]byte
	l := uint32(len(b))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
		return 0, 0, 0, 0, fmt.Errorf("TCP_INFO: %w", e)
	}
	return b[0], b[5], b[6] & 0xf, b[6] >> 4, nil
}

// read reads the stream of a locked connection in repair mode, as libsoccr_save does.
func (c *tcpConn) read() error {
	state, opts, snd, rcv, err := tcpInfoHead(c.fd)
	if err != nil {
		return err
	}
	if !tcpConnStates[state] {
		return fmt.Errorf("the connection is %s in repair mode", tcpStates[state])
	}
	c.state = state
	ioctl := func(req uint) (uint32, error) {
		v, err := unix.IoctlGetInt(c.fd, req)
		if err != nil {
			return 0, fmt.Errorf("ioctl %#x: %w", req, err)
		}
		return uint32(v), nil
	}
	e := &tcp_stream.TcpStreamEntry{OptMask: proto.Uint32(uint32(opts)), SndWscale: proto.Uint32(0)}
	var outq, unsq, inq uint32
	if outq, err = ioctl(unix.SIOCOUTQ); err != nil {
		return err
	}
	if unsq, err = ioctl(unix.SIOCOUTQNSD); err != nil {
		return err
	}
	if inq, err = ioctl(unix.SIOCINQ); err != nil {
		return err
	}
	// This end's FIN, queued once it shut its sending side, holds no data: it is not
	// saved (a restore queues it again with shutdown). SIOCINQ leaves the peer's out.
	if state == 4 || state == 5 || state == 9 || state == 11 { // FIN_WAIT1, FIN_WAIT2, LAST_ACK, CLOSING
		outq -= min(outq, 1)
		unsq -= min(unsq, 1)
	}
	e.OutqLen, e.UnsqLen, e.InqLen = proto.Uint32(outq), proto.Uint32(unsq), proto.Uint32(inq)
	mss, err := unix.GetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return fmt.Errorf("TCP_MAXSEG: %w", err)
	}
	e.MssClamp = proto.Uint32(uint32(mss))
	if opts&tcprepair.OptWscale != 0 {
		e.SndWscale, e.RcvWscale = proto.Uint32(uint32(snd)), proto.Uint32(uint32(rcv))
	}
	if opts&tcprepair.OptTimestamps != 0 {
		ts, err := unix.GetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return fmt.Errorf("TCP_TIMESTAMP: %w", err)
		}
		e.Timestamp = proto.Uint32(uint32(ts))
	}
	var w [5]uint32 // struct tcp_repair_window: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup
	l := uint32(unsafe.Sizeof(w))
	if _, _, en := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(c.fd), unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW,
		uintptr(unsafe.Pointer(&w[0])), uintptr(unsafe.Pointer(&l)), 0); en == 0 {
		e.SndWl1, e.SndWnd, e.MaxWindow, e.RcvWnd, e.RcvWup = proto.Uint32(w[0]), proto.Uint32(w[1]), proto.Uint32(w[2]), proto.Uint32(w[3]), proto.Uint32(w[4])
	} else if en != unix.ENOPROTOOPT {
		return fmt.Errorf("TCP_REPAIR_WINDOW: %w", en)
	}
	var seq uint32
	if seq, c.inq, err = c.queue(tcprepair.RecvQueue, inq); err != nil {
		return err
	}
	e.InqSeq = proto.Uint32(seq)
	if e.SndWl1 != nil {
		// A window update carried by a segment received out of order, which is not saved:
		// as if it had not come (tcprepair.ClampWl1), or no restore could set the window.
		e.SndWl1 = proto.Uint32(tcprepair.ClampWl1(e.GetSndWl1(), seq))
	}
	if seq, c.outq, err = c.queue(tcprepair.SendQueue, outq); err != nil {
		return err
	}
	e.OutqSeq = proto.Uint32(seq)
	if err := unix.SetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcprepair.NoQueue); err != nil {
		return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
	}
	c.stream = e
	return nil
}

// queue returns the sequence number and the n bytes of queue q (tcprepair.RecvQueue or
// tcprepair.SendQueue) of a connection in repair mode, peeked.
func (c *tcpConn) queue(q int, n uint32) (uint32, []byte, error) {
	name := map[int]string{tcprepair.RecvQueue: "receive", tcprepair.SendQueue: "send"}[q]
	if err := unix.SetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return 0, nil, fmt.Errorf("TCP_REPAIR_QUEUE %s: %w", name, err)
	}
	seq, err := unix.GetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return 0, nil, fmt.Errorf("TCP_QUEUE_SEQ of the %s queue: %w", name, err)
	}
	if n == 0 {
		return uint32(seq), nil, nil
	}
	buf := make([]byte, n+1)
	got, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return 0, nil, fmt.Errorf("peeking the %s queue: %w", name, err)
	}
	if got != int(n) {
		return 0, nil, fmt.Errorf("the %s queue holds %d bytes, its length says %d", name, got, n)
	}
	return uint32(seq), buf[:n], nil
}

// resume puts every locked connection back as it was, for a tree that runs on: every
// filter detached first, then each socket out of repair mode (TCP_REPAIR_OFF sends a window
// probe, so that the peer sends again what the filter dropped) with its SO_REUSEADDR back.
func (t *tcpConns) resume() error {
	var errs []error
	if t.tableMade {
		if err := nftables.Delete(t.table); err != nil {
			errs = append(errs, err)
		}
		t.tableMade = false
	}
	for _, c := range t.locked {
		if c.filtered {
			if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0); err != nil {
				errs = append(errs, fmt.Errorf("socket:[%d]: SO_DETACH_FILTER: %w", c.ino, err))
			}
		}
	}
	for _, c := range t.locked {
		if c.repair {
			if err := unix.SetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
				errs = append(errs, fmt.Errorf("socket:[%d]: leaving repair mode: %w", c.ino, err))
			}
			if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, c.reuse); err != nil {
				errs = append(errs, fmt.Errorf("socket:[%d]: SO_REUSEADDR: %w", c.ino, err))
			}
		}
		unix.Close(c.fd)
	}
	t.locked = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("putting TCP connections back: %w", err)
	}
	return nil
}

// drop closes the copies of the locked connections, still in repair mode, once the tree
// is dead: the connections go away without a FIN or a reset.
func (t *tcpConns) drop() {
	for _, c := range t.locked {
		unix.Close(c.fd)
	}
	t.locked = nil
}

// resumeTCP puts the connections the dump locked back (a failed dump, or --leave-running).
func (d *dumper) resumeTCP() error {
	if d.set == nil {
		return nil
	}
	return d.set.tcp.resume()
}

// dropTCP closes the connections the dump locked once the tree was killed.
func (d *dumper) dropTCP() {
	if d.set != nil {
		d.set.tcp.drop()
	}
}

// networkLockMethod is the inventory's network_lock_method: nftables (1) with
// Options.NetworkLock nftables, as CRIU writes it; else "skip" (2) once connections were
// saved, as the socket lock does not outlive the dump (a CRIU restoring the set has
// nothing to unlock); else CRIU's default, iptables (0).
func (d *dumper) networkLockMethod() uint32 {
	switch {
	case d.set.tcp.nftables:
		return 1
	case len(d.set.tcp.locked) > 0:
		return 2
	}
	return 0
}

// writeTCPStreams writes tcp-stream-INO.img for every connection saved: its entry, then
// the receive queue's bytes, then the send queue's, as CRIU writes them.
func (d *dumper) writeTCPStreams() error {
	for _, c := range d.set.tcp.locked {
		name := fmt.Sprintf("tcp-stream-%x.img", c.ino)
		w, err := d.create(name)
		if err != nil {
			return err
		}
		iw, err := image.NewWriter(w, image.KindByName("TCP_STREAM"))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := iw.WriteEntry(c.stream); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for _, q := range [][]byte{c.inq, c.outq} {
			if _, err := iw.Write(q); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		if err := iw.Close(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := d.finish(w); err != nil {
			return err
		}
	}
	return nil
}

// tcpBoundInactive is TCP_BOUND_INACTIVE (include/net/tcp_states.h): in sock_diag's
// state mask, a socket that holds a local port but is neither listening nor connected.
const tcpBoundInactive = 13

// holdsPort tells whether the TCP socket of inode ino, of family, holds the local port it
// reports: sock_diag lists the sockets holding a port that are neither listening nor
// connected (TCP_BOUND_INACTIVE, Linux 6.6 and later). A socket whose connection ended
// still reports the port it was given at connect, but gave it up.
func holdsPort(family int, ino uint64) (bool, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return false, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	// nlmsghdr, then struct inet_diag_req_v2: family, protocol, ext, pad, states, and an
	// empty inet_diag_sockid (48 bytes).
	req := make([]byte, unix.SizeofNlMsghdr+56)
	binary.NativeEndian.PutUint32(req, uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req[16], req[17] = uint8(family), unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[20:], 1<<tcpBoundInactive)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return false, fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, 1<<16)
	found := false
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return false, fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return false, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return found, nil
			case unix.NLMSG_ERROR:
				return false, fmt.Errorf("sock_diag: %w", syscall.Errno(-int32(binary.NativeEndian.Uint32(m.Data))))
			}
			// struct inet_diag_msg: family, state, timer, retrans, the sockid (48
			// bytes), expires, rqueue, wqueue, uid, inode.
			if len(m.Data) >= 72 && uint64(binary.NativeEndian.Uint32(m.Data[68:])) == ino {
				found = true
			}
		}
	}
}
