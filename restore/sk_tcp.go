package restore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/nftables"
	"github.com/imgtool/imgtool/internal/tcprepair"
)

// TCP connections (an inet_sk_entry of a TCP socket with a peer port), as CRIU 4.2's
// sk-tcp.c and libsoccr restore them.
//
// With Options.TCPEstablished (criu restore --tcp-established) each connection, ESTABLISHED
// or half-closed (FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING), comes back from its
// tcp-stream-INO.img (read and checked before any process exists:
// present, one entry with the fields its options need, the queues' bytes all there), in
// imgtool, before the description is handed over, as libsoccr_restore makes it:
//
//  1. socket(2), IPV6_V6ONLY, SO_REUSEADDR and SO_REUSEPORT on, as for any inet socket;
//     then the socket is locked with a socket filter that drops every packet but those
//     with CRIU's mark (see dump/sk_tcp.go): nothing that arrives, from the peer or from
//     the kernel (a reset sent back when the peer's socket does not exist yet), changes it
//     before the tree runs;
//  2. repair mode (TCP_REPAIR); the buffers at their largest (SO_SNDBUFFORCE,
//     SO_RCVBUFFORCE) and O_NONBLOCK, so that no queue refill blocks (CRIU's
//     restore_prepare_socket; the saved sizes and flags are set afterwards);
//  3. bound to the saved local address (repair mode lets it bind an address in use);
//  4. the sequence numbers: TCP_QUEUE_SEQ of the receive queue at inq_seq - inq_len, of the
//     send queue at outq_seq - outq_len;
//  5. connect(2) to the saved peer, which in repair mode only sets the peer: no SYN;
//  6. TCP_REPAIR_OPTIONS: SACK permitted, the window scales, timestamps, as negotiated, and
//     the MSS clamp; TCP_TIMESTAMP (the clock the peer saw, continued);
//  7. the receive queue sent into it (TCP_REPAIR_QUEUE receive); the part of the send queue
//     already sent once, in repair mode (TCP_REPAIR_QUEUE send: queued as sent, to be
//     retransmitted until acknowledged); the part never sent, out of repair mode for the
//     moment, as new data;
//  8. TCP_REPAIR_WINDOW: the windows as saved, but for a snd_wl1 beyond the receive queue's
//     end (a window update an out-of-order segment brought; tcprepair.ClampWl1);
//  9. a half-closed connection's FINs (restoreFins): the sequence numbers of steps 4 and 8
//     left room for them; this end's is queued with shutdown(2) (as sent already when the
//     peer acknowledged it), the peer's comes in a TCP segment made up from the peer's
//     address and sent to the socket through a raw socket, with CRIU's mark, which the
//     lock lets through (as libsoccr's libnet packet), and so does the peer's
//     acknowledgement of this end's FIN; each step waits for the state it leads to;
//
// then the open flags, IP, socket and TCP options and the shutdown state as for any inet
// socket. The description is kept in imgtool; once every process is restored and just
// before the tree runs, every lock is removed (arm), then CRIU's own lock if CRIU dumped
// the set (unlockCRIU), then every connection leaves repair mode (TCP_REPAIR_OFF: a
// window probe tells the peer where this end stands) and gets its saved SO_REUSEADDR and
// SO_REUSEPORT (leaveTCPRepair): both ends of a connection within the tree are back
// before either is let go. The data in flight is retransmitted by TCP after its
// retransmission timeout, as after CRIU's restore.
//
// CRIU's dump leaves its network lock in place for its restore to remove: with nftables
// (inventory network_lock_method 1; imgtool's dump --network-lock nftables leaves the
// same), the table "inet CRIU-<dump_criu_run_id>" (cut to 26 characters, as CRIU names
// it; CRIU-<root pid> for images without a run id), which unlockCRIU deletes over netlink (internal/nftables; a table not there is
// fine); with iptables (0, CRIU's default, or no method recorded), a DROP rule per
// direction of each connection in INPUT and OUTPUT, which unlockCRIU deletes by running
// iptables (ip6tables for IPv6) -D with CRIU's own rule, as CRIU's restore does, when this
// host has the command (a rule that is not there is fine; without the command no rule can
// be there that CRIU put). imgtool's sets dumped with its socket lock say "skip" (2):
// nothing to remove.
//
// With Options.TCPClose (criu restore --tcp-close) a connection comes back closed, as
// CRIU's: a new TCP socket, shut down both ways (reads see the end of the stream, writes
// fail with EPIPE), with the saved flags and options; tcp-stream images are not read.
//
// Refused before anything exists: a connection without either option; with
// --tcp-established, one in another state (SYN_SENT, CLOSE with a peer), one without its
// tcp-stream image (dumped with --tcp-close), a stream image that does not hold what its
// entry says, a connection whose local and remote address and port another socket of this
// host has (/proc/net/tcp, tcp6: the dumped one still running, say), and restoring
// without CAP_NET_ADMIN.

// tcpPlan is what restore does with TCP connections (Options.TCPEstablished, TCPClose),
// and the streams read for it.
type tcpPlan struct {
	established, close bool
	streams            map[uint32]*tcpStream // by the socket's inode
}

// tcpStream is one tcp-stream-INO.img: its entry and the bytes of both queues.
type tcpStream struct {
	e         *tcp_stream.TcpStreamEntry
	inq, outq []byte
}

// TCP states as bits (TCPF_*), for the half-closed states, as libsoccr names their FINs.
const (
	tcpfEstablished = 1 << 1
	tcpfFinWait1    = 1 << 4
	tcpfFinWait2    = 1 << 5
	tcpfClose       = 1 << 7
	tcpfCloseWait   = 1 << 8
	tcpfLastAck     = 1 << 9
	tcpfClosing     = 1 << 11

	tcpfConnected = tcpfEstablished | tcpfFinWait1 | tcpfFinWait2 | tcpfCloseWait | tcpfLastAck | tcpfClosing

	sndqFirstFin  = tcpfFinWait1 | tcpfFinWait2 | tcpfClosing // this end's FIN, sent first
	sndqSecondFin = tcpfLastAck | tcpfClose                   // this end's FIN, sent after the peer's
	sndqFinAcked  = tcpfFinWait2 | tcpfClose                  // this end's FIN, acknowledged
	rcvqFirstFin  = tcpfCloseWait | tcpfLastAck | tcpfClose   // the peer's FIN, came first
	rcvqSecondFin = tcpfClosing                               // the peer's FIN, came after ours
	rcvqFinAcked  = tcpfClose
)

// isTCPConn tells whether e is a TCP connection (CRIU's tcp_connection()).
func isTCPConn(e *sk_inet.InetSkEntry) bool {
	return e.GetProto() == unix.IPPROTO_TCP && e.GetDstPort() != 0
}

// repairs tells whether connections are restored with their streams, in repair mode.
func (t *tcpPlan) repairs() bool { return t.established && !t.close }

// check says why connection e (from src to dst) cannot be restored with these options, or
// returns nil; it reads and keeps its stream.
func (t *tcpPlan) check(pl *plan, e *sk_inet.InetSkEntry, src, dst netip.AddrPort) error {
	state := tcpStates[e.GetState()]
	if state == "" {
		state = fmt.Sprint(e.GetState())
	}
	switch {
	case t.close:
		return nil
	case !t.established:
		return fmt.Errorf("a TCP connection (%s) from %s to %s: restored only with --tcp-established (or closed with --tcp-close)", state, src, dst)
	case tcpfConnected&(1<<e.GetState()) == 0:
		return fmt.Errorf("a TCP connection (%s) from %s to %s: this state is not supported", state, src, dst)
	case !hasCapability(tcprepair.CapNetAdmin):
		return fmt.Errorf("a TCP connection from %s to %s: TCP repair mode needs CAP_NET_ADMIN", src, dst)
	case (1<<e.GetState())&(rcvqFirstFin|rcvqSecondFin|sndqFinAcked) != 0 && !hasCapability(tcprepair.CapNetRaw):
		return fmt.Errorf("a TCP connection (%s) from %s to %s: the peer's FIN or acknowledgement is made up with a raw socket, which needs CAP_NET_RAW", state, src, dst)
	}
	if _, ok := t.streams[e.GetIno()]; ok {
		return nil
	}
	st, err := loadTCPStream(pl, e.GetIno())
	if err != nil {
		return fmt.Errorf("a TCP connection from %s to %s: %w", src, dst, err)
	}
	if held, err := tcpInUse(e.GetFamily(), src, dst); err != nil {
		return err
	} else if held {
		return fmt.Errorf("a TCP connection from %s to %s: this host has a socket with that connection already (is the dumped one still running?)", src, dst)
	}
	if t.streams == nil {
		t.streams = map[uint32]*tcpStream{}
	}
	t.streams[e.GetIno()] = st
	return nil
}

// loadTCPStream reads and checks tcp-stream-INO.img.
func loadTCPStream(pl *plan, ino uint32) (*tcpStream, error) {
	name := fmt.Sprintf("tcp-stream-%x.img", ino)
	if !pl.src.has(name) {
		return nil, fmt.Errorf("the set has no %s (dumped with --tcp-close? restore it with --tcp-close)", name)
	}
	img, err := readImage(pl.src, name)
	if err != nil {
		return nil, err
	}
	if len(img.Entries) != 1 {
		return nil, fmt.Errorf("%s: %d entries, want 1", name, len(img.Entries))
	}
	e, ok := img.Entries[0].Msg.(*tcp_stream.TcpStreamEntry)
	if !ok {
		return nil, fmt.Errorf("%s: entry has type %T", name, img.Entries[0].Msg)
	}
	in, out := int(e.GetInqLen()), int(e.GetOutqLen())
	switch {
	case e.UnsqLen == nil:
		return nil, fmt.Errorf("%s: no unsq_len (an image older than CRIU 3.0)", name)
	case e.GetUnsqLen() > e.GetOutqLen():
		return nil, fmt.Errorf("%s: %d bytes not sent of a send queue of %d", name, e.GetUnsqLen(), e.GetOutqLen())
	case e.GetOptMask()&tcprepair.OptWscale != 0 && e.RcvWscale == nil:
		return nil, fmt.Errorf("%s: window scaling without rcv_wscale", name)
	case e.GetOptMask()&tcprepair.OptTimestamps != 0 && e.Timestamp == nil:
		return nil, fmt.Errorf("%s: timestamps without a timestamp", name)
	case len(img.Entries[0].Payload) != in+out:
		return nil, fmt.Errorf("%s: %d bytes of queues, the entry says %d and %d", name, len(img.Entries[0].Payload), in, out)
	}
	p := img.Entries[0].Payload
	return &tcpStream{e: e, inq: p[:in:in], outq: p[in:]}, nil
}

// tcpInUse tells whether a socket of this host (in /proc/net/tcp for AF_INET, tcp6 for
// AF_INET6) has local address src and remote address dst, in a state other than
// TIME_WAIT.
func tcpInUse(family uint32, src, dst netip.AddrPort) (bool, error) {
	name := "/proc/net/tcp"
	if family == unix.AF_INET6 {
		name = "/proc/net/tcp6"
	}
	f, err := os.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	want := procNetAddr(family, src) + " " + procNetAddr(family, dst)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 3 && fs[1]+" "+fs[2] == want && fs[3] != "06" {
			return true, nil
		}
	}
	return false, sc.Err()
}

// procNetAddr is an address and port as /proc/net/tcp prints them: each 32-bit word of
// the address (network order bytes, read as a host-order word) in hex, then the port.
func procNetAddr(family uint32, a netip.AddrPort) string {
	var b []byte
	if family == unix.AF_INET {
		v := a.Addr().Unmap().As4()
		b = v[:]
	} else {
		v := a.Addr().As16()
		b = v[:]
	}
	var s strings.Builder
	for i := 0; i < len(b); i += 4 {
		fmt.Fprintf(&s, "%08X", binary.LittleEndian.Uint32(b[i:]))
	}
	fmt.Fprintf(&s, ":%04X", a.Port())
	return s.String()
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

// restoreConn makes fd (a new TCP socket, options for the bind set) the connection e
// from src to dst with its saved stream, locked and in repair mode, as libsoccr_restore
// does (steps 1 to 8 above).
func (t *tcpPlan) restoreConn(fd int, e *sk_inet.InetSkEntry, src, dst netip.AddrPort) error {
	st := t.streams[e.GetIno()]
	if st == nil {
		return fmt.Errorf("no stream read for socket:[%d]", e.GetIno())
	}
	s := st.e
	// The lock drops every packet but those with CRIU's mark: the FINs and ACKs
	// restoreFins makes up.
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: tcprepair.SkfAdMark},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: nftables.Mark},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		return fmt.Errorf("SO_ATTACH_FILTER: %w", err)
	}
	// A FIN is not saved with the queues: the sequence numbers leave it out (the receive
	// queue's when the peer's came, the send queue's when this end's went); restoreFins
	// queues them again.
	mstate := uint32(1) << e.GetState()
	inqSeq, outqSeq := s.GetInqSeq(), s.GetOutqSeq()
	if mstate&(rcvqFirstFin|rcvqSecondFin) != 0 {
		inqSeq--
	}
	if mstate&(sndqFirstFin|sndqSecondFin) != 0 {
		outqSeq--
	}
	repair := func(on int) error {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, on); err != nil {
			return fmt.Errorf("TCP_REPAIR %d: %w", on, err)
		}
		return nil
	}
	if err := repair(unix.TCP_REPAIR_ON); err != nil {
		return err
	}
	if err := setBufs(fd, maxBuf, maxBuf); err != nil {
		return err
	}
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil {
		return fmt.Errorf("F_GETFL: %w", err)
	} else if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
		return fmt.Errorf("F_SETFL: %w", err)
	}
	if err := unix.Bind(fd, sockaddr(e.GetFamily(), src, "")); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	seq := func(q int, v uint32) error {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
			return fmt.Errorf("TCP_REPAIR_QUEUE %d: %w", q, err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, int(int32(v))); err != nil {
			return fmt.Errorf("TCP_QUEUE_SEQ of queue %d: %w", q, err)
		}
		return nil
	}
	if err := seq(tcprepair.RecvQueue, inqSeq-s.GetInqLen()); err != nil {
		return err
	}
	if err := seq(tcprepair.SendQueue, outqSeq-s.GetOutqLen()); err != nil {
		return err
	}
	if err := unix.Connect(fd, sockaddr(e.GetFamily(), dst, "")); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return fmt.Errorf("connect to %s in repair mode: %w", dst, err)
	}
	var opts []unix.TCPRepairOpt
	if s.GetOptMask()&tcprepair.OptSack != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_SACK_PERMITTED})
	}
	if s.GetOptMask()&tcprepair.OptWscale != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_WINDOW, Val: s.GetSndWscale() + s.GetRcvWscale()<<16})
	}
	if s.GetOptMask()&tcprepair.OptTimestamps != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_TIMESTAMP})
	}
	opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_MAXSEG, Val: s.GetMssClamp()})
	if err := unix.SetsockoptTCPRepairOpt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, opts); err != nil {
		return fmt.Errorf("TCP_REPAIR_OPTIONS: %w", err)
	}
	if s.GetOptMask()&tcprepair.OptTimestamps != 0 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP, int(int32(s.GetTimestamp()))); err != nil {
			return fmt.Errorf("TCP_TIMESTAMP: %w", err)
		}
	}
	if err := refillTCPQueue(fd, tcprepair.RecvQueue, "receive", st.inq); err != nil {
		return err
	}
	sent := len(st.outq) - int(s.GetUnsqLen())
	if err := refillTCPQueue(fd, tcprepair.SendQueue, "send", st.outq[:sent]); err != nil {
		return err
	}
	if sent < len(st.outq) {
		// Never sent: queued out of repair mode, as new data. What goes out now is
		// dropped by the peer's lock (or, its socket not made yet, answered with a reset
		// that ours drops) and sent again by TCP.
		if err := repair(unix.TCP_REPAIR_OFF_NO_WP); err != nil {
			return err
		}
		if err := sendAll(fd, "send (not sent yet)", st.outq[sent:]); err != nil {
			return err
		}
		if err := repair(unix.TCP_REPAIR_ON); err != nil {
			return err
		}
	}
	if s.SndWnd != nil {
		w := [5]uint32{s.GetSndWl1(), s.GetSndWnd(), s.GetMaxWindow(), s.GetRcvWnd(), s.GetRcvWup()}
		if mstate&(rcvqFirstFin|rcvqSecondFin) != 0 { // the peer's FIN is not in yet
			w[4]--
			w[3]++
		}
		// A set whose snd_wl1 comes from a segment received out of order (not saved;
		// CRIU's dump keeps it as the kernel says) is restored as if it had not come.
		w[0] = tcprepair.ClampWl1(w[0], inqSeq)
		if _, _, en := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW,
			uintptr(unsafe.Pointer(&w[0])), unsafe.Sizeof(w), 0); en != 0 {
			return fmt.Errorf("TCP_REPAIR_WINDOW: %w", en)
		}
	}
	if err := restoreFins(fd, e, s, src, dst, mstate, inqSeq, outqSeq); err != nil {
		return err
	}
	// Older images kept these two here (now in tcp_opts_entry), as CRIU still reads them.
	for _, o := range []struct {
		on  bool
		opt int
	}{{s.GetNodelay(), unix.TCP_NODELAY}, {s.GetCork(), unix.TCP_CORK}} {
		if o.on {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, o.opt, 1); err != nil {
				return fmt.Errorf("setsockopt %d: %w", o.opt, err)
			}
		}
	}
	return nil
}

// refillTCPQueue sends data into queue q of a socket in repair mode.
func refillTCPQueue(fd, q int, name string, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return fmt.Errorf("TCP_REPAIR_QUEUE %s: %w", name, err)
	}
	return sendAll(fd, name, data)
}

// sendAll sends data, in smaller pieces when the kernel cannot take a piece whole (a
// receive queue refilled in repair mode is one buffer per send), as libsoccr does.
func sendAll(fd int, name string, data []byte) error {
	chunk := len(data)
	for len(data) > 0 {
		n, err := unix.SendmsgN(fd, data[:min(chunk, len(data))], nil, nil, unix.MSG_DONTWAIT)
		if err != nil || n <= 0 {
			if chunk > 1024 {
				chunk /= 2
				continue
			}
			return fmt.Errorf("refilling the %s queue: %d bytes left: %v", name, len(data), err)
		}
		data = data[n:]
	}
	return nil
}

// arm removes the lock of a connection restored in repair mode, just before the tree runs
// (the filter of restoreConn; other inet sockets have none: a saved filter is refused).
func (inetSkKind) arm(f *os.File, fe *fdinfo.FileEntry) error {
	if !isTCPConn(fe.Isk) {
		return nil
	}
	if err := unix.SetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s: SO_DETACH_FILTER: %w", f.Name(), err)
	}
	return nil
}

// leaveTCPRepair removes the network lock CRIU's dump left (unlockCRIU: whatever the
// options, as CRIU's restore does; an nftables table even without connections, as CRIU
// makes one for every dump with that method), then takes every connection restored in
// repair mode out of it, once all are unlocked (armDescriptions), and gives it its saved
// SO_REUSEADDR and SO_REUSEPORT (repair mode forced the one, leaving it clears it).
func (r *restorer) leaveTCPRepair() error {
	if err := r.pl.unlockCRIU(); err != nil {
		return err
	}
	if !r.pl.tcp.repairs() {
		return nil
	}
	for _, id := range usedFiles(r.pl) {
		fe := r.pl.files[id]
		if fe.GetType() != fdinfo.FdTypes_INETSK || !isTCPConn(fe.Isk) {
			continue
		}
		f := r.descs.armed[id]
		if f == nil {
			f = r.descs.owned[id]
		}
		if f == nil {
			return fmt.Errorf("file id %d: its description was not kept", id)
		}
		fd := int(f.Fd())
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
			return fmt.Errorf("%s: leaving repair mode: %w", f.Name(), err)
		}
		o := fe.Isk.GetOpts()
		for _, s := range []struct {
			opt int
			on  bool
		}{{unix.SO_REUSEADDR, o.GetReuseaddr()}, {unix.SO_REUSEPORT, o.GetSoReuseport()}} {
			v := 0
			if s.on {
				v = 1
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, s.opt, v); err != nil {
				return fmt.Errorf("%s: setsockopt %d: %w", f.Name(), s.opt, err)
			}
		}
	}
	return nil
}

// Network lock methods of the inventory (CRIU's enum NETWORK_LOCK_METHOD).
const (
	lockIptables = 0
	lockNftables = 1
)

// unlockCRIU removes the network lock CRIU's dump left for the connections of the set
// (see above), once they are restored and before they leave repair mode.
func (pl *plan) unlockCRIU() error {
	inv := pl.inv
	method := uint32(lockIptables)
	if inv.NetworkLockMethod != nil {
		method = inv.GetNetworkLockMethod()
	}
	switch method {
	case lockNftables:
		id := inv.GetDumpCriuRunId()
		if id == "" { // an image older than the run id: CRIU named the table after the root
			id = fmt.Sprint(pl.procs[0].pid)
		}
		return nftables.Delete(nftables.TableName(id))
	case lockIptables:
		for _, id := range usedFiles(pl) {
			fe := pl.files[id]
			if fe.GetType() != fdinfo.FdTypes_INETSK || !isTCPConn(fe.Isk) {
				continue
			}
			e := fe.Isk
			src := inetAddr(e.GetFamily(), e.GetSrcAddr(), e.GetSrcPort())
			dst := inetAddr(e.GetFamily(), e.GetDstAddr(), e.GetDstPort())
			iptablesUnlock(src, dst, "INPUT")
			iptablesUnlock(dst, src, "OUTPUT")
		}
	}
	return nil
}

// iptablesUnlock deletes the rule CRIU's dump adds to chain to lock the packets from src
// to dst (IPTABLES_CONN_CMD of criu/netfilter.c), when this host has the command. Errors
// are ignored, as CRIU ignores them: the rule may not be there.
func iptablesUnlock(src, dst netip.AddrPort, chain string) {
	cmd := "ip6tables"
	if src.Addr().Unmap().Is4() && dst.Addr().Unmap().Is4() {
		cmd = "iptables"
	}
	path, err := exec.LookPath(cmd)
	if err != nil {
		return
	}
	_ = exec.Command(path, "-w", "-t", "filter", "-D", chain, "--protocol", "tcp", "-m", "mark", "!", "--mark",
		fmt.Sprintf("0x%X", nftables.Mark), "--source", dst.Addr().Unmap().String(), "--sport", fmt.Sprint(dst.Port()),
		"--destination", src.Addr().Unmap().String(), "--dport", fmt.Sprint(src.Port()), "-j", "DROP").Run()
}

// restoreFins queues the FINs of a half-closed connection (its state the bit mstate) in a
// socket restored in repair mode, as libsoccr_restore does: this end's with shutdown(2)
// (as sent already, TCP_REPAIR_QUEUE send, when the peer acknowledged it), the peer's by a
// FIN made up and sent to the socket from the peer's address (a raw packet with CRIU's
// mark, which the lock lets through), and the peer's acknowledgement of this end's FIN
// the same way. inqSeq and outqSeq are the queues' sequence numbers without the FINs.
func restoreFins(fd int, e *sk_inet.InetSkEntry, s *tcp_stream.TcpStreamEntry, src, dst netip.AddrPort, mstate, inqSeq, outqSeq uint32) error {
	finOut := func(acked bool, want uint8) error {
		q := func(v int) error {
			if !acked {
				return nil
			}
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, v); err != nil {
				return fmt.Errorf("TCP_REPAIR_QUEUE %d: %w", v, err)
			}
			return nil
		}
		if err := q(tcprepair.SendQueue); err != nil {
			return err
		}
		if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
			return fmt.Errorf("shutdown (this end's FIN): %w", err)
		}
		if err := q(0); err != nil {
			return err
		}
		return waitTCPState(fd, want)
	}
	// The window the made-up packets advertise: the peer's, as this end saw it last.
	win := s.GetRcvWnd()
	if s.SndWnd != nil {
		win = s.GetSndWnd() >> s.GetSndWscale()
	}
	win = min(win, 0xffff)
	finIn := func(flags uint8, seq uint32, want uint8) error {
		if err := sendAsPeer(src, dst, seq, outqSeq-s.GetOutqLen(), flags, uint16(win)); err != nil {
			return err
		}
		return waitTCPState(fd, want)
	}
	const (
		fin = 0x01
		ack = 0x10
	)
	if mstate&sndqFirstFin != 0 { // FIN_WAIT1 (FIN_WAIT2 and CLOSING on the way)
		if err := finOut(mstate&sndqFinAcked != 0, 4); err != nil {
			return err
		}
	}
	if mstate&(rcvqFirstFin|rcvqSecondFin) != 0 {
		want := uint8(8) // CLOSE_WAIT
		if mstate&rcvqSecondFin != 0 {
			want = 11 // CLOSING
		}
		if err := finIn(ack|fin, inqSeq, want); err != nil {
			return err
		}
		inqSeq++
	}
	if mstate&sndqSecondFin != 0 { // LAST_ACK
		if err := finOut(mstate&sndqFinAcked != 0, 9); err != nil {
			return err
		}
	}
	if mstate&sndqFinAcked != 0 { // the peer acknowledged this end's FIN: FIN_WAIT2
		outqSeq++
		if err := finIn(ack, inqSeq, uint8(e.GetState())); err != nil {
			return err
		}
	}
	return nil
}

// waitTCPState waits (a second at most) for the socket to reach TCP state want.
func waitTCPState(fd int, want uint8) error {
	var st uint8
	for i := 0; i < 1000; i++ {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return fmt.Errorf("TCP_INFO: %w", err)
		}
		if st = ti.State; st == want {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("the connection is %s, not %s, after its FINs were queued", tcpStates[uint32(st)], tcpStates[uint32(want)])
}

// sendAsPeer sends, from dst to src, a TCP segment without data (flags, sequence number
// seq, acknowledging ack, window win) as a raw packet with CRIU's mark: the socket at src
// takes it for one its peer sent. An IPv4-mapped IPv6 connection gets an IPv4 packet.
func sendAsPeer(src, dst netip.AddrPort, seq, ack uint32, flags uint8, win uint16) error {
	from, to := dst.Addr().Unmap(), src.Addr().Unmap()
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], dst.Port())
	binary.BigEndian.PutUint16(tcp[2:], src.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], win)
	// The checksum covers a pseudo header: both addresses, the protocol and the length.
	pseudo := append(append(from.AsSlice(), to.AsSlice()...), 0, unix.IPPROTO_TCP, 0, byte(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], inetChecksum(append(pseudo, tcp...)))
	var pkt []byte
	var family int
	var sa unix.Sockaddr
	if from.Is4() && to.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: to.As4()}
		pkt = []byte{0x45, 0, 0, byte(20 + len(tcp)), 0, 0, 0, 0, 64, unix.IPPROTO_TCP, 0, 0}
		pkt = append(append(pkt, from.AsSlice()...), to.AsSlice()...)
	} else {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: to.As16()}
		pkt = []byte{0x60, 0, 0, 0, 0, byte(len(tcp)), unix.IPPROTO_TCP, 64}
		pkt = append(append(pkt, from.AsSlice()...), to.AsSlice()...)
	}
	pkt = append(pkt, tcp...)
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, nftables.Mark); err != nil {
		return fmt.Errorf("SO_MARK: %w", err)
	}
	if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
		return fmt.Errorf("sending the peer's FIN: %w", err)
	}
	return nil
}

// inetChecksum is the Internet checksum (RFC 1071) of b.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
