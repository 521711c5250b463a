package explore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	packet_sock "github.com/checkpoint-restore/go-criu/v8/crit/images/packet-sock"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	sk_netlink "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-netlink"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"

	"github.com/imgtool/imgtool/imgset"
)

// Socket is one socket of the set.
type Socket struct {
	ID     uint32 `json:"id"`     // file id (files.img)
	Ino    uint32 `json:"ino"`    // inode number at dump time
	Family string `json:"family"` // unix, inet, inet6, packet, netlink
	Type   string `json:"type"`   // stream, dgram, seqpacket, raw, ...
	Proto  string `json:"proto,omitempty"`
	State  string `json:"state,omitempty"`
	Local  string `json:"local,omitempty"`  // address: path or @abstract, IP:port, portid, ifindex
	Remote string `json:"remote,omitempty"` // peer address (inet, netlink)
	Peer   uint32 `json:"peer,omitempty"`   // unix: the peer's inode
	// Queued is the data CRIU saved in the socket's receive queue (sk-queues.img);
	// for TCP, InQ and OutQ are the saved receive and send queues (tcp-stream-INO.img).
	Queued uint64  `json:"queued"`
	InQ    uint64  `json:"inq,omitempty"`
	OutQ   uint64  `json:"outq,omitempty"`
	Owners []Owner `json:"owners"` // the fds that hold it
}

// Owner is a process's fd that refers to a socket.
type Owner struct {
	PID int `json:"pid"`
	FD  int `json:"fd"`
}

// Summary describes the socket in one line: "tcp LISTEN 127.0.0.1:47111".
func (s Socket) Summary() string {
	parts := []string{s.Family}
	if s.Proto != "" {
		parts[0] = s.Proto
	}
	if s.Type != "" {
		parts = append(parts, s.Type)
	}
	if s.State != "" {
		parts = append(parts, s.State)
	}
	addr := s.Local
	if s.Remote != "" {
		addr += " -> " + s.Remote
	}
	if s.Family == "unix" && s.Peer != 0 {
		addr += fmt.Sprintf(" -> ino %d", s.Peer)
	}
	if addr = strings.TrimSpace(addr); addr != "" {
		parts = append(parts, addr)
	}
	return strings.Join(parts, " ")
}

// Sockets returns the set's sockets in files.img order, with the fds holding each.
func Sockets(set *imgset.Set) ([]Socket, error) {
	l := newLoader(set)
	socks, err := l.sockets()
	if err != nil {
		return nil, err
	}
	if err := l.socketOwners(socks); err != nil {
		return nil, err
	}
	return socks, nil
}

func (l *loader) sockets() ([]Socket, error) {
	files, err := l.fileTable()
	if err != nil {
		return nil, err
	}
	queued, err := l.queued()
	if err != nil {
		return nil, err
	}
	socks := []Socket{}
	for _, e := range files.order {
		var s Socket
		switch {
		case e.GetUsk() != nil:
			s = unixSocket(e.GetUsk())
		case e.GetIsk() != nil:
			s = inetSocket(e.GetIsk())
			if s.Proto == "tcp" {
				if err := l.tcpQueues(&s); err != nil {
					return nil, err
				}
			}
		case e.GetPsk() != nil:
			s = packetSocket(e.GetPsk())
		case e.GetNlsk() != nil:
			s = netlinkSocket(e.GetNlsk())
		default:
			continue
		}
		s.Queued = queued[s.ID]
		s.Owners = []Owner{}
		socks = append(socks, s)
	}
	return socks, nil
}

// queued sums the bytes sk-queues.img saved for each socket id.
func (l *loader) queued() (map[uint32]uint64, error) {
	out := map[uint32]uint64{}
	img, err := l.optional("sk-queues.img", "SK_QUEUES")
	if err != nil || img == nil {
		return out, err
	}
	list, err := entries[*sk_packet.SkPacketEntry](img, "sk-queues.img")
	if err != nil {
		return nil, err
	}
	for _, e := range list {
		out[e.GetIdFor()] += uint64(e.GetLength())
	}
	return out, nil
}

// tcpQueues fills in the queue lengths saved in tcp-stream-INO.img, when the set has
// one (only established connections dumped with --tcp-established do).
func (l *loader) tcpQueues(s *Socket) error {
	name := fmt.Sprintf("tcp-stream-%x.img", s.Ino)
	e, err := first[*tcp_stream.TcpStreamEntry](l, name, "TCP_STREAM")
	if errors.Is(err, ErrMissing) {
		return nil
	}
	if err != nil {
		return err
	}
	s.InQ, s.OutQ = uint64(e.GetInqLen()), uint64(e.GetOutqLen())
	return nil
}

// socketOwners lists, for each socket, the process fds that refer to it.
func (l *loader) socketOwners(socks []Socket) error {
	byID := map[uint32]*Socket{}
	for i := range socks {
		byID[socks[i].ID] = &socks[i]
	}
	list, err := l.pstree()
	if err != nil {
		return err
	}
	seenTable := map[uint32]bool{}
	for _, p := range list {
		pid := int(p.GetPid())
		ids, err := first[*criu_core.TaskKobjIdsEntry](l, fmt.Sprintf("ids-%d.img", pid), "IDS")
		if err != nil {
			return err
		}
		// Processes sharing a file table share its fds; list them under the first.
		if seenTable[ids.GetFilesId()] {
			continue
		}
		seenTable[ids.GetFilesId()] = true
		name := fmt.Sprintf("fdinfo-%d.img", ids.GetFilesId())
		img, err := l.image(name, "FDINFO")
		if err != nil {
			return err
		}
		fds, err := entries[*fdinfo.FdinfoEntry](img, name)
		if err != nil {
			return err
		}
		for _, fd := range fds {
			if s := byID[fd.GetId()]; s != nil && isSocketType(fd.GetType()) {
				s.Owners = append(s.Owners, Owner{PID: pid, FD: int(fd.GetFd())})
			}
		}
	}
	return nil
}

func isSocketType(t fdinfo.FdTypes) bool {
	switch t {
	case fdinfo.FdTypes_UNIXSK, fdinfo.FdTypes_INETSK, fdinfo.FdTypes_PACKETSK, fdinfo.FdTypes_NETLINKSK:
		return true
	}
	return false
}

// Names of the kernel's socket constants, as crit's "sk" dictionary spells them
// (lower-cased here for display).
var (
	sockFamilies = map[uint32]string{1: "unix", 2: "inet", 10: "inet6", 16: "netlink", 17: "packet"}
	sockTypes    = map[uint32]string{1: "stream", 2: "dgram", 3: "raw", 4: "rdm", 5: "seqpacket", 10: "packet"}
	sockProtos   = map[uint32]string{0: "ip", 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 136: "udplite", 255: "raw"}
	// TCP states; unix sockets use the same numbers.
	sockStates = map[uint32]string{
		1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
		6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
	}
)

func lookup(m map[uint32]string, v uint32) string {
	if s, ok := m[v]; ok {
		return s
	}
	return strconv.FormatUint(uint64(v), 10)
}

func unixSocket(u *sk_unix.UnixSkEntry) Socket {
	return Socket{
		ID: u.GetId(), Ino: u.GetIno(), Family: "unix",
		Type: lookup(sockTypes, u.GetType()), State: lookup(sockStates, u.GetState()),
		Local: unixName(u.GetName()), Peer: u.GetPeer(),
	}
}

func inetSocket(i *sk_inet.InetSkEntry) Socket {
	s := Socket{
		ID: i.GetId(), Ino: i.GetIno(), Family: lookup(sockFamilies, i.GetFamily()),
		Type: lookup(sockTypes, i.GetType()), Proto: lookup(sockProtos, i.GetProto()),
		State: lookup(sockStates, i.GetState()),
	}
	s.Local = hostPort(i.GetSrcAddr(), i.GetSrcPort())
	if i.GetDstPort() != 0 || !allZero(i.GetDstAddr()) {
		s.Remote = hostPort(i.GetDstAddr(), i.GetDstPort())
	}
	return s
}

func allZero(words []uint32) bool {
	for _, w := range words {
		if w != 0 {
			return false
		}
	}
	return true
}

// hostPort renders an address CRIU saved as the u32 words of the kernel's in-memory
// (network order) bytes, with a port.
func hostPort(words []uint32, port uint32) string {
	b := make([]byte, 0, 16)
	for _, w := range words {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	var host string
	switch len(b) {
	case 4:
		host = netip.AddrFrom4([4]byte(b)).String()
	case 16:
		host = "[" + netip.AddrFrom16([16]byte(b)).String() + "]"
	case 0:
		host = "*"
	default:
		host = fmt.Sprintf("?%x", b)
	}
	return host + ":" + strconv.FormatUint(uint64(port), 10)
}

func packetSocket(p *packet_sock.PacketSockEntry) Socket {
	return Socket{
		ID: p.GetId(), Family: "packet", Type: lookup(sockTypes, p.GetType()),
		Proto: fmt.Sprintf("%#04x", p.GetProtocol()), Local: fmt.Sprintf("ifindex %d", p.GetIfindex()),
	}
}

func netlinkSocket(n *sk_netlink.NetlinkSkEntry) Socket {
	s := Socket{
		ID: n.GetId(), Ino: n.GetIno(), Family: "netlink",
		Proto: "netlink/" + strconv.FormatUint(uint64(n.GetProtocol()), 10),
		Local: fmt.Sprintf("portid %d", n.GetPortid()),
	}
	if n.GetDstPortid() != 0 || n.GetDstGroup() != 0 {
		s.Remote = fmt.Sprintf("portid %d group %d", n.GetDstPortid(), n.GetDstGroup())
	}
	return s
}
