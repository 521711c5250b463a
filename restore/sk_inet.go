package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	sk_opts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	"golang.org/x/sys/unix"
)

// tcpStates names the kernel's TCP states (include/net/tcp_states.h).
var tcpStates = map[uint32]string{
	1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
	7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV",
}

// inetSkKind is a TCP or UDP socket, IPv4 or IPv6 (inet_sk_entry), created in imgtool as
// CRIU's restore creates one without --tcp-established: socket(2) of the saved family, type
// and protocol; IPV6_V6ONLY when saved; SO_REUSEADDR and SO_REUSEPORT on for the bind; bound
// to the saved address and port when it had a port (an IPv6 one with IP_FREEBIND on for
// the while, as CRIU binds it, and the interface of ifname as its scope); listening with
// the saved backlog (TCP_LISTEN); a UDP socket with a peer connected to it; then the saved
// open flags, IP options (ip_opts_entry), socket options (sk_opts_entry), TCP options
// (tcp_opts_entry), shutdown state, and SO_REUSEADDR and SO_REUSEPORT as saved.
//
// A TCP connection (a TCP socket with a peer port) is sk_tcp.go's. Refused, before
// anything exists: TCP sockets without a peer in other states than LISTEN and CLOSE, families, types and protocols other than TCP and UDP over IPv4 and IPv6 (raw
// sockets...), an address of the wrong length, packets saved for it in sk-queues.img, a
// socket filter, an interface (ifname) this host does not have.
type inetSkKind struct{}

// inetAddr is a saved address and port (CRIU's words: the bytes in network order).
func inetAddr(family uint32, words []uint32, port uint32) netip.AddrPort {
	b := make([]byte, 4*len(words))
	for i, w := range words {
		binary.LittleEndian.PutUint32(b[4*i:], w)
	}
	var a netip.Addr
	if family == unix.AF_INET {
		a = netip.AddrFrom4([4]byte(b[:4]))
	} else {
		a = netip.AddrFrom16([16]byte(b[:16]))
	}
	return netip.AddrPortFrom(a, uint16(port))
}

func (inetSkKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	e := fe.Isk
	if e == nil {
		return noEntry(what, fe)
	}
	no := func(format string, args ...any) error {
		return fmt.Errorf("%s: inet socket:[%d]: %s", what, e.GetIno(), fmt.Sprintf(format, args...))
	}
	switch e.GetFamily() {
	case unix.AF_INET:
		if len(e.GetSrcAddr()) < 1 || len(e.GetDstAddr()) < 1 {
			return no("IPv4 addresses of %d and %d words", len(e.GetSrcAddr()), len(e.GetDstAddr()))
		}
	case unix.AF_INET6:
		if len(e.GetSrcAddr()) != 4 || len(e.GetDstAddr()) != 4 {
			return no("IPv6 addresses of %d and %d words", len(e.GetSrcAddr()), len(e.GetDstAddr()))
		}
	default:
		return no("address family %d is not supported", e.GetFamily())
	}
	src := inetAddr(e.GetFamily(), e.GetSrcAddr(), e.GetSrcPort())
	dst := inetAddr(e.GetFamily(), e.GetDstAddr(), e.GetDstPort())
	switch {
	case e.GetType() == unix.SOCK_STREAM && e.GetProto() == unix.IPPROTO_TCP:
		switch {
		case e.GetDstPort() != 0: // a connection: sk_tcp.go
			if err := pl.tcp.check(pl, e, src, dst); err != nil {
				return no("%v", err)
			}
		case e.GetState() != tcpListen && e.GetState() != tcpClose:
			return no("a TCP socket in state %s: not supported", tcpStates[e.GetState()])
		}
	case e.GetType() == unix.SOCK_DGRAM && e.GetProto() == unix.IPPROTO_UDP:
	default:
		return no("type %d protocol %d is not supported (only TCP and UDP)", e.GetType(), e.GetProto())
	}
	if len(pl.skQueues[fe.GetId()]) > 0 {
		return no("packets queued for it in sk-queues.img: not supported")
	}
	if len(e.GetOpts().GetSoFilter()) > 0 {
		return no("a socket filter: not supported")
	}
	if n := e.GetIfname(); n != "" {
		if _, err := net.InterfaceByName(n); err != nil {
			return no("bound on interface %s: %v", n, err)
		}
	}
	return nil
}

func (inetSkKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	e := fe.Isk
	src := inetAddr(e.GetFamily(), e.GetSrcAddr(), e.GetSrcPort())
	dst := inetAddr(e.GetFamily(), e.GetDstAddr(), e.GetDstPort())
	name := fmt.Sprintf("inet socket:[%d] (file id %d) at %s", e.GetIno(), e.GetId(), src)
	fd, err := unix.Socket(int(e.GetFamily()), int(e.GetType())|unix.SOCK_CLOEXEC, int(e.GetProto()))
	if err != nil {
		return nil, fmt.Errorf("%s: socket: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	fail := func(format string, args ...any) (*os.File, error) {
		f.Close()
		return nil, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}
	if e.GetV6Only() {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail("IPV6_V6ONLY: %v", err)
		}
	}
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			return fail("setsockopt %d: %v", opt, err)
		}
	}
	ipo := e.GetIpOpts()
	conn := isTCPConn(e) // sk_tcp.go
	switch {
	case conn && pl.tcp.close: // closed, unbound, as CRIU's --tcp-close
		if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil && !errors.Is(err, unix.ENOTCONN) {
			return fail("shutdown: %v", err)
		}
	case conn:
		if err := pl.tcp.restoreConn(fd, e, src, dst); err != nil {
			return fail("TCP connection to %s: %v", dst, err)
		}
	default:
		if err := bindListenConnect(fd, e, src, dst); err != nil {
			return fail("%v", err)
		}
	}
	if err := setStatusFlags(f, e.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	var errs []error
	seti := func(level, opt, v int) {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			errs = append(errs, fmt.Errorf("setsockopt %d/%d to %d: %w", level, opt, v, err))
		}
	}
	on := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	if ipo != nil {
		if e.GetFamily() == unix.AF_INET6 {
			if ipo.Freebind != nil {
				seti(unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, on(ipo.GetFreebind()))
			}
			if ipo.Pktinfo != nil {
				seti(unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, on(ipo.GetPktinfo()))
			}
		} else {
			if ipo.Freebind != nil {
				seti(unix.IPPROTO_IP, unix.IP_FREEBIND, on(ipo.GetFreebind()))
			}
			if ipo.Pktinfo != nil {
				seti(unix.IPPROTO_IP, unix.IP_PKTINFO, on(ipo.GetPktinfo()))
			}
			if ipo.Tos != nil {
				seti(unix.IPPROTO_IP, unix.IP_TOS, int(ipo.GetTos()))
			}
			if ipo.Ttl != nil {
				seti(unix.IPPROTO_IP, unix.IP_TTL, int(ipo.GetTtl()))
			}
		}
	}
	o := e.GetOpts()
	more, err := setSkOpts(fd, o)
	if err != nil {
		return fail("%v", err)
	}
	errs = append(errs, more...)
	if t := e.GetTcpOpts(); t != nil && e.GetProto() == unix.IPPROTO_TCP {
		if t.Nodelay != nil {
			seti(unix.IPPROTO_TCP, unix.TCP_NODELAY, on(t.GetNodelay()))
		}
		if t.Cork != nil {
			seti(unix.IPPROTO_TCP, unix.TCP_CORK, on(t.GetCork()))
		}
		if t.Keepcnt != nil {
			seti(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, int(t.GetKeepcnt()))
		}
		if t.Keepidle != nil {
			seti(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(t.GetKeepidle()))
		}
		if t.Keepintvl != nil {
			seti(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(t.GetKeepintvl()))
		}
	}
	if how := e.GetShutdown(); e.Shutdown != nil && how != sk_opts.SkShutdown_NONE {
		if err := unix.Shutdown(fd, int(how)-1); err != nil && !errors.Is(err, unix.ENOTCONN) {
			errs = append(errs, fmt.Errorf("shutdown %v: %w", how, err))
		}
	}
	// The reuse options as saved (they were on for the bind; a connection in repair mode
	// gets them as it leaves it: leaveTCPRepair), and the flags setSkOpts only turns on.
	if !conn || !pl.tcp.repairs() {
		seti(unix.SOL_SOCKET, unix.SO_REUSEADDR, on(o.GetReuseaddr()))
		seti(unix.SOL_SOCKET, unix.SO_REUSEPORT, on(o.GetSoReuseport()))
	}
	seti(unix.SOL_SOCKET, unix.SO_BROADCAST, on(o.GetSoBroadcast()))
	seti(unix.SOL_SOCKET, unix.SO_KEEPALIVE, on(o.GetSoKeepalive()))
	if err := errors.Join(errs...); err != nil {
		return fail("%v", err)
	}
	return f, nil
}

// bindListenConnect binds fd to the saved address src when it had a port (an IPv6 one with
// IP_FREEBIND on for the while, as CRIU binds it, and the interface of ifname as its
// scope), makes a listener listen with its backlog, and connects a UDP socket with a peer
// to dst.
func bindListenConnect(fd int, e *sk_inet.InetSkEntry, src, dst netip.AddrPort) error {
	if e.GetSrcPort() != 0 {
		freebind := e.GetFamily() == unix.AF_INET6 && !e.GetIpOpts().GetFreebind()
		if freebind { // an IPv6 address may still be tentative
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, 1); err != nil {
				return fmt.Errorf("IP_FREEBIND: %w", err)
			}
		}
		if err := unix.Bind(fd, sockaddr(e.GetFamily(), src, e.GetIfname())); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if freebind {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, 0); err != nil {
				return fmt.Errorf("IP_FREEBIND: %w", err)
			}
		}
	}
	if e.GetState() == tcpListen {
		if err := unix.Listen(fd, int(e.GetBacklog())); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	if e.GetDstPort() != 0 { // a UDP socket with a peer (TCP connections are sk_tcp.go's)
		if err := unix.Connect(fd, sockaddr(e.GetFamily(), dst, "")); err != nil {
			return fmt.Errorf("connect to %s: %w", dst, err)
		}
	}
	return nil
}

// sockaddr is the socket address of a, with the index of interface ifname as an IPv6
// address's scope.
func sockaddr(family uint32, a netip.AddrPort, ifname string) unix.Sockaddr {
	if family == unix.AF_INET {
		return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().Unmap().As4()}
	}
	sa := &unix.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
	if ifname != "" {
		if ifi, err := net.InterfaceByName(ifname); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return sa
}

func (inetSkKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Isk.GetFown() }
func (inetSkKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Isk.GetFlags() }
