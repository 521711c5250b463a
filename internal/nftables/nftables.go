// Package nftables makes and removes the network lock CRIU 4.2 keeps TCP connections
// silent with between a dump and a restore (criu dump --network-lock nftables): a table
// "inet CRIU-<dump_criu_run_id>" (TableName) whose input and output chains drop the
// packets of each locked connection, both ways, except those marked with CRIU's SOCCR_MARK.
// CRIU's restore deletes the table once the connections are back; so does imgtool's. It
// speaks nf_tables' netlink protocol directly: no nft binary, no libnftables.
//
// CRIU fills a set (conns4, conns6) that rules look up; this package writes one rule per
// direction of each connection instead, matching the same packets. Only the table's name
// matters to the restores, which delete it whole.
package nftables

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Mark is CRIU's SOCCR_MARK: packets with it pass the lock.
const Mark = 0xC114

const (
	nfDrop         = 0 // NF_DROP
	nfAccept       = 1 // NF_ACCEPT
	sizeofNfgenmsg = 4 // struct nfgenmsg: family, version, res_id
)

// TableName is the table CRIU names after the dump's run id: "inet CRIU-<id>" printed
// into 32 bytes (nftables_get_table), so the name is cut at 26 characters.
func TableName(runID string) string {
	name := "CRIU-" + runID
	return name[:min(len(name), 31-len("inet "))]
}

// Create makes table (family inet) with CRIU's two base chains, input and output, of type
// filter at priority 0, accepting by default.
func Create(table string) error {
	b := newBatch()
	b.add(unix.NFT_MSG_NEWTABLE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, attrStr(unix.NFTA_TABLE_NAME, table))
	for _, c := range []struct {
		name string
		hook uint32
	}{{"input", unix.NF_INET_LOCAL_IN}, {"output", unix.NF_INET_LOCAL_OUT}} {
		b.add(unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE,
			attrStr(unix.NFTA_CHAIN_TABLE, table), attrStr(unix.NFTA_CHAIN_NAME, c.name),
			nest(unix.NFTA_CHAIN_HOOK, attrU32(unix.NFTA_HOOK_HOOKNUM, c.hook), attrU32(unix.NFTA_HOOK_PRIORITY, 0)),
			attrU32(unix.NFTA_CHAIN_POLICY, nfAccept), attrStr(unix.NFTA_CHAIN_TYPE, "filter"))
	}
	if err := b.run(); err != nil {
		return fmt.Errorf("nftables: creating table inet %s: %w", table, err)
	}
	return nil
}

// Lock adds to table the rules that drop the packets of the TCP connection between local
// and remote, coming in (input) and going out (output), unless they carry Mark. An
// IPv4-mapped IPv6 address is matched as the IPv4 address its packets carry.
func Lock(table string, local, remote netip.AddrPort) error {
	b := newBatch()
	for _, r := range []struct {
		chain    string
		src, dst netip.AddrPort
	}{{"input", remote, local}, {"output", local, remote}} {
		b.add(unix.NFT_MSG_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_APPEND,
			attrStr(unix.NFTA_RULE_TABLE, table), attrStr(unix.NFTA_RULE_CHAIN, r.chain),
			nest(unix.NFTA_RULE_EXPRESSIONS, dropConn(r.src, r.dst)...))
	}
	if err := b.run(); err != nil {
		return fmt.Errorf("nftables: locking %s-%s in table inet %s: %w", local, remote, table, err)
	}
	return nil
}

// Delete deletes table (family inet) and everything in it. A table that does not exist,
// or no nf_tables at all, is no error.
func Delete(table string) error {
	b := newBatch()
	b.add(unix.NFT_MSG_DELTABLE, 0, attrStr(unix.NFTA_TABLE_NAME, table))
	switch err := b.run(); err {
	case nil, unix.ENOENT, unix.EOPNOTSUPP:
		return nil
	default:
		return fmt.Errorf("nftables: deleting table inet %s: %w", table, err)
	}
}

// dropConn is the expressions of a rule dropping TCP packets from src to dst without Mark.
func dropConn(src, dst netip.AddrPort) [][]byte {
	proto, saddr, daddr, alen := uint8(unix.NFPROTO_IPV4), uint32(12), uint32(16), uint32(4)
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if !sa.Is4() || !da.Is4() {
		proto, saddr, daddr, alen = unix.NFPROTO_IPV6, 8, 24, 16
		sa, da = src.Addr(), dst.Addr()
	}
	port := func(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }
	mark := binary.NativeEndian.AppendUint32(nil, Mark)
	return [][]byte{
		meta(unix.NFT_META_NFPROTO), cmp(unix.NFT_CMP_EQ, []byte{proto}),
		payload(unix.NFT_PAYLOAD_NETWORK_HEADER, saddr, alen), cmp(unix.NFT_CMP_EQ, sa.AsSlice()),
		payload(unix.NFT_PAYLOAD_NETWORK_HEADER, daddr, alen), cmp(unix.NFT_CMP_EQ, da.AsSlice()),
		meta(unix.NFT_META_L4PROTO), cmp(unix.NFT_CMP_EQ, []byte{unix.IPPROTO_TCP}),
		payload(unix.NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2), cmp(unix.NFT_CMP_EQ, port(src.Port())),
		payload(unix.NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2), cmp(unix.NFT_CMP_EQ, port(dst.Port())),
		meta(unix.NFT_META_MARK), cmp(unix.NFT_CMP_NEQ, mark),
		expr("immediate", attrU32(unix.NFTA_IMMEDIATE_DREG, unix.NFT_REG_VERDICT),
			nest(unix.NFTA_IMMEDIATE_DATA, nest(unix.NFTA_DATA_VERDICT, attrU32(unix.NFTA_VERDICT_CODE, nfDrop)))),
	}
}

// The expressions used, all through register 1.
func meta(key uint32) []byte {
	return expr("meta", attrU32(unix.NFTA_META_DREG, unix.NFT_REG_1), attrU32(unix.NFTA_META_KEY, key))
}

func payload(base, off, n uint32) []byte {
	return expr("payload", attrU32(unix.NFTA_PAYLOAD_DREG, unix.NFT_REG_1), attrU32(unix.NFTA_PAYLOAD_BASE, base),
		attrU32(unix.NFTA_PAYLOAD_OFFSET, off), attrU32(unix.NFTA_PAYLOAD_LEN, n))
}

func cmp(op uint32, v []byte) []byte {
	return expr("cmp", attrU32(unix.NFTA_CMP_SREG, unix.NFT_REG_1), attrU32(unix.NFTA_CMP_OP, op),
		nest(unix.NFTA_CMP_DATA, attr(unix.NFTA_DATA_VALUE, v)))
}

func expr(name string, data ...[]byte) []byte {
	return nest(unix.NFTA_LIST_ELEM, attrStr(unix.NFTA_EXPR_NAME, name), nest(unix.NFTA_EXPR_DATA, data...))
}

// attr is one netlink attribute, padded to 4 bytes.
func attr(typ uint16, v []byte) []byte {
	b := make([]byte, 4, 4+len(v)+3)
	binary.NativeEndian.PutUint16(b, uint16(4+len(v)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func attrStr(typ uint16, s string) []byte { return attr(typ, append([]byte(s), 0)) }

// attrU32 is a 32-bit attribute; nf_tables takes them in network order.
func attrU32(typ uint16, v uint32) []byte { return attr(typ, binary.BigEndian.AppendUint32(nil, v)) }

func nest(typ uint16, attrs ...[]byte) []byte {
	var v []byte
	for _, a := range attrs {
		v = append(v, a...)
	}
	return attr(typ|unix.NLA_F_NESTED, v)
}

// batch is one nf_tables transaction: its messages between a batch begin and end, each
// asking for an acknowledgement.
type batch struct {
	msgs [][]byte
	seq  uint32
}

func newBatch() *batch {
	b := &batch{}
	b.msgs = append(b.msgs, b.msg(unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil))
	return b
}

// msg is one netlink message: header, nfgenmsg, attributes.
func (b *batch) msg(typ, flags uint16, family uint8, resID uint16, attrs [][]byte) []byte {
	b.seq++
	m := make([]byte, unix.SizeofNlMsghdr+sizeofNfgenmsg)
	for _, a := range attrs {
		m = append(m, a...)
	}
	binary.NativeEndian.PutUint32(m, uint32(len(m)))
	binary.NativeEndian.PutUint16(m[4:], typ)
	binary.NativeEndian.PutUint16(m[6:], flags)
	binary.NativeEndian.PutUint32(m[8:], b.seq)
	m[16] = family
	binary.BigEndian.PutUint16(m[18:], resID)
	return m
}

// add adds an nf_tables message for family inet.
func (b *batch) add(typ uint16, flags uint16, attrs ...[]byte) {
	b.msgs = append(b.msgs, b.msg(unix.NFNL_SUBSYS_NFTABLES<<8|typ, unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags, unix.NFPROTO_INET, 0, attrs))
}

// run sends the batch and waits for every acknowledgement; it returns the first error the
// kernel reports (a syscall.Errno).
func (b *batch) run() error {
	last := b.seq // the last message asking for an acknowledgement
	b.msgs = append(b.msgs, b.msg(unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil))
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		return fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	var all []byte
	for _, m := range b.msgs {
		all = append(all, m...)
	}
	if err := unix.Sendto(fd, all, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			if e := syscall.Errno(-int32(binary.NativeEndian.Uint32(m.Data))); e != 0 {
				return e
			}
			if m.Header.Seq == last {
				return nil
			}
		}
	}
}
