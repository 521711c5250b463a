package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	sk_opts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// fdInetSk is a TCP or UDP socket, IPv4 or IPv6.
const fdInetSk = fdUnixSk + 1

// tcpStates names the kernel's TCP states (include/net/tcp_states.h).
var tcpStates = map[uint8]string{
	1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
	7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV",
}

// inetSkKind is a TCP or UDP socket, IPv4 or IPv6, as CRIU 4.2 saves it: an
// inet_sk_entry in files.img (family, type, protocol, state, bound and connected address
// and port, the backlog of a listener (a connection's: its send queue), IPV6_V6ONLY, the socket
// options of sk_opts_entry, the IP options of ip_opts_entry, the TCP options of
// tcp_opts_entry). Everything is read from a copy of the socket (pidfd_getfd):
// getsockname, getpeername, getsockopt; a TCP socket's state, the backlog of a listener
// and its connections not accepted yet from TCP_INFO. A UDP socket's state is connected
// (TCP_ESTABLISHED) when it has a peer, else TCP_CLOSE, as the kernel reports it; its
// shutdown state is not read (a shut-down UDP socket is saved as one that is not).
//
// A TCP connection (ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING) is sk_tcp.go's:
// refused without Options.TCPEstablished or TCPClose, locked and saved with its stream with
// the first. Refused, naming the fd: TCP sockets in other states than LISTEN, CLOSE and
// the connected ones (SYN_SENT...), a closed socket that gave up the port it reports, a listener
// with connections not accepted yet, a UDP socket with datagrams queued in its receive
// queue (CRIU drops them with a warning), a corked UDP socket (UDP_CORK), a socket filter,
// an IPv6 address that needs a scope (link-local), other protocols (raw sockets...).
type inetSkKind struct{}

func (inetSkKind) typ() fdinfo.FdTypes { return fdinfo.FdTypes_INETSK }

// sockKind classifies the socket fd of pid: TCP and UDP sockets are inet sockets, every
// other one goes to unixSkKind (whose check refuses what is not AF_UNIX).
func sockKind(pid, fd int) fdKind {
	local, err := fdCopy(pid, fd)
	if err != nil {
		return fdUnixSk // its check reports the error
	}
	defer unix.Close(local)
	dom, _ := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, _ := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_TYPE)
	pr, _ := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if (dom == unix.AF_INET || dom == unix.AF_INET6) &&
		((typ == unix.SOCK_STREAM && pr == unix.IPPROTO_TCP) || (typ == unix.SOCK_DGRAM && pr == unix.IPPROTO_UDP)) {
		return fdInetSk
	}
	return fdUnixSk
}

// inetSk is what the dump reads of an inet socket.
type inetSk struct {
	family, typ, proto int
	state              uint8
	src, dst           netip.AddrPort
	backlog, pending   uint32
}

// sockAddr converts a socket address to an address and port.
func sockAddr(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// readInetSk reads the state of the inet socket open at local.
func readInetSk(local int) (*inetSk, error) {
	s := &inetSk{}
	var err error
	if s.family, err = unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return nil, fmt.Errorf("SO_DOMAIN: %w", err)
	}
	if s.typ, err = unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		return nil, fmt.Errorf("SO_TYPE: %w", err)
	}
	if s.proto, err = unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil {
		return nil, fmt.Errorf("SO_PROTOCOL: %w", err)
	}
	sa, err := unix.Getsockname(local)
	if err != nil {
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	s.src = sockAddr(sa)
	if pa, err := unix.Getpeername(local); err == nil {
		s.dst = sockAddr(pa)
	} else if !errors.Is(err, unix.ENOTCONN) {
		return nil, fmt.Errorf("getpeername: %w", err)
	}
	if s.proto == unix.IPPROTO_TCP {
		ti, err := unix.GetsockoptTCPInfo(local, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return nil, fmt.Errorf("TCP_INFO: %w", err)
		}
		s.state = ti.State
		if s.state == tcpListen { // the accept queue's length and limit
			s.pending, s.backlog = ti.Unacked, ti.Sacked
		}
	} else {
		s.state = tcpClose
		if s.dst.IsValid() && s.dst.Port() != 0 {
			s.state = tcpEstablished
		}
	}
	if s.family == unix.AF_INET {
		// An IPv4 socket reports its unbound address as 0.0.0.0 (not the 16-byte form).
		if !s.dst.IsValid() {
			s.dst = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		}
	} else if !s.dst.IsValid() {
		s.dst = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	}
	return s, nil
}

func (inetSkKind) check(pid int, f *fdDesc) error {
	local, err := fdCopy(pid, f.fd)
	if err != nil {
		return err
	}
	defer unix.Close(local)
	s, err := readInetSk(local)
	if err != nil {
		return fmt.Errorf("process %d fd %d (%s): %w", pid, f.fd, f.link, err)
	}
	return checkInetSk(pid, f, local, s)
}

// checkInetSk refuses what cannot be saved of inet socket s, open at local.
func checkInetSk(pid int, f *fdDesc, local int, s *inetSk) error {
	name := familyName(local)
	no := func(why string) error { return refuse(pid, f.fd, f.link, name+" socket "+why) }
	switch {
	case s.proto == unix.IPPROTO_TCP && s.state == tcpListen:
		if s.pending > 0 {
			return no(fmt.Sprintf("listening at %s, with %d connection(s) not accepted yet: not supported", s.src, s.pending))
		}
	case s.proto == unix.IPPROTO_TCP && s.state == tcpClose:
		// A socket whose connection ended still reports the port connect gave it, but
		// gave it up (unless bind chose it): a restore would bind it, if it can.
		if ti, err := unix.GetsockoptTCPInfo(local, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil && ti.Segs_out > 0 && s.src.Port() != 0 {
			held, err := holdsPort(s.family, f.st.Ino)
			if err != nil {
				return err
			}
			if !held {
				return no(fmt.Sprintf("is closed and reports port %d, which it gave up when its connection ended: not supported (a restore would take the port)", s.src.Port()))
			}
		}
	case s.proto == unix.IPPROTO_TCP && tcpConnStates[s.state]:
		// A connection: what the options allow is decided by tcpConns.check (sk_tcp.go).
	case s.proto == unix.IPPROTO_TCP:
		st := tcpStates[s.state]
		if st == "" {
			st = fmt.Sprint(s.state)
		}
		return no(fmt.Sprintf("in state %s (%s to %s): not supported", st, s.src, s.dst))
	case s.proto == unix.IPPROTO_UDP:
		if cork, err := unix.GetsockoptInt(local, unix.IPPROTO_UDP, unix.UDP_CORK); err == nil && cork != 0 {
			return no("is corked (UDP_CORK): not supported")
		}
		buf := make([]byte, 1)
		if _, _, err := unix.Recvfrom(local, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_TRUNC); !errors.Is(err, unix.EAGAIN) {
			return no(fmt.Sprintf("bound to %s has datagrams queued in its receive queue: not supported (they would be lost)", s.src))
		}
	}
	if s.family == unix.AF_INET6 && s.src.Addr().Is6() && (s.src.Addr().IsLinkLocalUnicast() || s.src.Addr().IsLinkLocalMulticast() || s.src.Addr().IsInterfaceLocalMulticast()) {
		return no(fmt.Sprintf("bound to %s, which needs a scope: not supported", s.src))
	}
	var n uint32
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(local), unix.SOL_SOCKET, unix.SO_GET_FILTER, 0,
		uintptr(unsafe.Pointer(&n)), 0); e == 0 && n > 0 {
		return no("has a socket filter (SO_ATTACH_FILTER) attached: not supported")
	}
	return nil
}

// inetWords is an address as CRIU saves it: its bytes in network order, as 32-bit words in
// host (little-endian) order; one word for IPv4, four for IPv6.
func inetWords(family int, a netip.Addr) []uint32 {
	var b []byte
	if family == unix.AF_INET {
		v := a.Unmap().As4()
		b = v[:]
	} else {
		v := a.As16()
		b = v[:]
	}
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return out
}

func (inetSkKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	local, err := unix.PidfdGetfd(r.pidfd, r.f.fd, 0)
	if err != nil {
		return r.errorf("pidfd_getfd: %v", err)
	}
	defer unix.Close(local)
	sk, err := readInetSk(local)
	if err != nil {
		return r.errorf("%v", err)
	}
	if err := checkInetSk(r.pid, r.f, local, sk); err != nil {
		return err
	}
	conn := sk.proto == unix.IPPROTO_TCP && tcpConnStates[sk.state]
	if conn {
		if err := s.tcp.check(r.pid, r.f, local, sk); err != nil {
			return err
		}
	}
	opts, err := dumpSkOpts(local) // before repair mode, which changes SO_REUSEADDR
	if err != nil {
		return r.errorf("%v", err)
	}
	e := &sk_inet.InetSkEntry{
		Id: proto.Uint32(fe.GetId()), Ino: proto.Uint32(uint32(r.f.st.Ino)),
		Family: proto.Uint32(uint32(sk.family)), Type: proto.Uint32(uint32(sk.typ)), Proto: proto.Uint32(uint32(sk.proto)),
		State: proto.Uint32(uint32(sk.state)), SrcPort: proto.Uint32(uint32(sk.src.Port())), DstPort: proto.Uint32(uint32(sk.dst.Port())),
		Flags: proto.Uint32(flags), Backlog: proto.Uint32(sk.backlog),
		SrcAddr: inetWords(sk.family, sk.src.Addr()), DstAddr: inetWords(sk.family, sk.dst.Addr()),
		Fown: own, Opts: opts, NsId: proto.Uint32(netNsID),
	}
	var errs []error
	geti := func(level, opt int) int {
		v, err := unix.GetsockoptInt(local, level, opt)
		if err != nil {
			errs = append(errs, fmt.Errorf("getsockopt %d/%d: %w", level, opt, err))
		}
		return v
	}
	// ip_opts_entry: each option only when it is not zero, as CRIU saves them.
	ipo := &sk_inet.IpOptsEntry{}
	u32 := func(v int) *uint32 {
		if v == 0 {
			return nil
		}
		return proto.Uint32(uint32(v))
	}
	b := func(v int) *bool {
		if v == 0 {
			return nil
		}
		return proto.Bool(true)
	}
	if sk.family == unix.AF_INET6 {
		e.V6Only = proto.Bool(geti(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY) != 0)
		ipo.Freebind = b(geti(unix.IPPROTO_IPV6, unix.IPV6_FREEBIND))
		ipo.Pktinfo = b(geti(unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO))
	} else {
		ipo.Freebind = b(geti(unix.IPPROTO_IP, unix.IP_FREEBIND))
		ipo.Pktinfo = b(geti(unix.IPPROTO_IP, unix.IP_PKTINFO))
		ipo.Tos = u32(geti(unix.IPPROTO_IP, unix.IP_TOS))
		ipo.Ttl = u32(geti(unix.IPPROTO_IP, unix.IP_TTL))
	}
	e.IpOpts = ipo
	e.TcpOpts = &tcp_stream.TcpOptsEntry{} // empty for UDP, as CRIU writes it
	if sk.proto == unix.IPPROTO_TCP {
		e.TcpOpts = &tcp_stream.TcpOptsEntry{
			Nodelay: b(geti(unix.IPPROTO_TCP, unix.TCP_NODELAY)), Cork: b(geti(unix.IPPROTO_TCP, unix.TCP_CORK)),
			Keepcnt: u32(geti(unix.IPPROTO_TCP, unix.TCP_KEEPCNT)), Keepidle: u32(geti(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)),
			Keepintvl: u32(geti(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL)),
		}
	}
	if err := errors.Join(errs...); err != nil {
		return r.errorf("%v", err)
	}
	if conn {
		// As CRIU: the backlog of a connection is its send queue's length (sock_diag's
		// idiag_wqueue, a FIN not sent or not acknowledged included), its shutdown state
		// only when there is one; both as locked, when it is.
		if s.tcp.repairs() {
			c, err := s.tcp.lock(r.pid, r.f, local, sk)
			if err != nil {
				return r.errorf("TCP connection from %s to %s: %v", sk.src, sk.dst, err)
			}
			sk.state = c.state
			e.State = proto.Uint32(uint32(c.state))
		}
		if q, err := unix.IoctlGetInt(local, unix.SIOCOUTQ); err == nil {
			e.Backlog = proto.Uint32(uint32(q))
		}
		if how := tcpShutdown(local, sk); how != 0 {
			e.Shutdown = sk_opts.SkShutdown(how).Enum()
		}
	}
	fe.Isk = e
	return nil
}
