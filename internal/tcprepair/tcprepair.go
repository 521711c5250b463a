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
