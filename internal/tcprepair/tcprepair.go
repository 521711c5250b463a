// Package tcprepair holds the kernel's TCP repair constants (include/uapi/linux/tcp.h)
// and the mark both engines' socket filters let through, for dump/sk_tcp.go and
// restore/sk_tcp.go.
package tcprepair

// Queues (TCP_REPAIR_QUEUE) and the options of TCP_REPAIR_OPTIONS, as tcp_info reports
// them in tcpi_options.
const (
	NoQueue   = 0
	RecvQueue = 1
	SendQueue = 2

	OptTimestamps = 1
	OptSack       = 2
	OptWscale     = 4
)

// Capabilities the repair needs (CAP_NET_ADMIN), and the made-up packets of a half-closed
// connection (CAP_NET_RAW).
const (
	CapNetAdmin = 12
	CapNetRaw   = 13
)

// SkfAdMark is SKF_AD_OFF + SKF_AD_MARK: where a socket filter loads skb->mark from.
const SkfAdMark = 0xfffff000 + 20

// ClampWl1 returns a connection's snd_wl1 (struct tcp_repair_window: the sequence number
// of the segment that last updated its send window) as a restore can set it once the
// receive queue ends at rcvNxt. A segment received out of order, beyond a hole, updates
// snd_wl1 too; such segments are not saved (their sender sends them again), and the
// kernel refuses a snd_wl1 beyond rcv_nxt + rcv_wnd (tcp_repair_set_window: EINVAL). One
// beyond rcvNxt is taken back to rcvNxt, as if that segment had not come yet.
// Sequence numbers wrap: "beyond" is by serial number arithmetic.
func ClampWl1(wl1, rcvNxt uint32) uint32 {
	if int32(wl1-rcvNxt) > 0 {
		return rcvNxt
	}
	return wl1
}
