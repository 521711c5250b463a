package image

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	bpfmap_data "github.com/checkpoint-restore/go-criu/v8/crit/images/bpfmap-data"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
)

// toEOF is the payload size of an entry whose payload runs to the end of the file.
const toEOF = -1

// payloadCodec describes the bytes that follow an entry of an image type.
type payloadCodec interface {
	// size returns how many bytes of data follow entry m and how many bytes of zero
	// padding follow the data. data is toEOF when the payload runs to the end of the file.
	size(m proto.Message) (data, pad int64, err error)
}

// subRecords describes entries that announce a number of records following them, each
// record a size-prefixed message with a payload of its own (IPCNS_MSG).
type subRecords interface {
	// count returns how many records follow entry m.
	count(m proto.Message) (int64, error)
	// newRecord returns an empty record message.
	newRecord() proto.Message
	// payloadCodec gives the payload that follows each record.
	payloadCodec
}

// payloadSize asks pc for the payload of entry m and checks it against MaxPayloadSize,
// the same way for the Reader and the Writer: what one refuses, the other never writes.
func payloadSize(pc payloadCodec, m proto.Message) (data, pad int64, err error) {
	data, pad, err = pc.size(m)
	switch {
	case err != nil:
		return 0, 0, err
	case data > MaxPayloadSize:
		return 0, 0, fmt.Errorf("payload of %d bytes exceeds limit %d", data, int64(MaxPayloadSize))
	case data < toEOF || pad < 0 || pad >= 8:
		return 0, 0, fmt.Errorf("payload codec gave %d bytes and %d of padding", data, pad)
	}
	return data, pad, nil
}

// padTo returns the zero bytes needed after n bytes to reach a multiple of align.
func padTo(n, align int64) int64 { return (align - n%align) % align }

func wrongType(want string, m proto.Message) error {
	return fmt.Errorf("payload codec for %s got a %T", want, m)
}

// pipeDataPayload: pipes-data and fifo-data hold pipe_data_entry.bytes bytes of queued data.
type pipeDataPayload struct{}

func (pipeDataPayload) size(m proto.Message) (int64, int64, error) {
	e, ok := m.(*pipe_data.PipeDataEntry)
	if !ok {
		return 0, 0, wrongType("pipe data", m)
	}
	return int64(e.GetBytes()), 0, nil
}

// skQueuePayload: sk-queues holds sk_packet_entry.length bytes of one queued packet.
type skQueuePayload struct{}

func (skQueuePayload) size(m proto.Message) (int64, int64, error) {
	e, ok := m.(*sk_packet.SkPacketEntry)
	if !ok {
		return 0, 0, wrongType("socket queue", m)
	}
	return int64(e.GetLength()), 0, nil
}

// tcpStreamPayload: tcp-stream holds the receive queue (inq_len bytes) then the send
// queue (outq_len bytes).
type tcpStreamPayload struct{}

func (tcpStreamPayload) size(m proto.Message) (int64, int64, error) {
	e, ok := m.(*tcp_stream.TcpStreamEntry)
	if !ok {
		return 0, 0, wrongType("tcp stream", m)
	}
	return int64(e.GetInqLen()) + int64(e.GetOutqLen()), 0, nil
}

// bpfmapPayload: bpfmap-data holds keys_bytes of keys then values_bytes of values.
type bpfmapPayload struct{}

func (bpfmapPayload) size(m proto.Message) (int64, int64, error) {
	e, ok := m.(*bpfmap_data.BpfmapDataEntry)
	if !ok {
		return 0, 0, wrongType("bpf map data", m)
	}
	return int64(e.GetKeysBytes()) + int64(e.GetValuesBytes()), 0, nil
}

// shmPayload: ipcns-shm holds a segment's size bytes padded to 4, unless the segment
// was dumped into pagemap-shmem/pages images (in_pagemaps), when nothing follows.
type shmPayload struct{}

func (shmPayload) size(m proto.Message) (int64, int64, error) {
	e, ok := m.(*ipc_shm.IpcShmEntry)
	if !ok {
		return 0, 0, wrongType("ipc shm", m)
	}
	if e.GetInPagemaps() {
		return 0, 0, nil
	}
	n := int64(e.GetSize())
	if n < 0 || e.GetSize() > MaxPayloadSize {
		return 0, 0, fmt.Errorf("shm segment size %d exceeds limit %d", e.GetSize(), int64(MaxPayloadSize))
	}
	return n, padTo(n, 4), nil
}

// semPayload: ipcns-sem holds nsems u16 semaphore values padded to 8 bytes.
type semPayload struct{}

func (semPayload) size(m proto.Message) (int64, int64, error) {
	e, ok := m.(*ipc_sem.IpcSemEntry)
	if !ok {
		return 0, 0, wrongType("ipc sem", m)
	}
	n := 2 * int64(e.GetNsems())
	return n, padTo(n, 8), nil
}

// ghostPayload: a ghost file's first entry is followed by the file's content to the
// end of the image, unless the content is chunked; then each ghost_chunk_entry is
// followed by len bytes.
type ghostPayload struct{}

func (ghostPayload) size(m proto.Message) (int64, int64, error) {
	switch e := m.(type) {
	case *ghost_file.GhostFileEntry:
		if e.GetChunks() {
			return 0, 0, nil
		}
		return toEOF, 0, nil
	case *ghost_file.GhostChunkEntry:
		if e.GetLen() > MaxPayloadSize {
			return 0, 0, fmt.Errorf("ghost chunk length %d exceeds limit %d", e.GetLen(), int64(MaxPayloadSize))
		}
		return int64(e.GetLen()), 0, nil
	}
	return 0, 0, wrongType("ghost file", m)
}

// msgQueueRecords: an ipcns-msg entry announces qnum messages, each an ipc_msg record
// followed by msize bytes padded to 8.
type msgQueueRecords struct{}

func (msgQueueRecords) count(m proto.Message) (int64, error) {
	e, ok := m.(*ipc_msg.IpcMsgEntry)
	if !ok {
		return 0, wrongType("ipc msg queue", m)
	}
	return int64(e.GetQnum()), nil
}

func (msgQueueRecords) newRecord() proto.Message { return new(ipc_msg.IpcMsg) }

func (msgQueueRecords) size(m proto.Message) (int64, int64, error) {
	e, ok := m.(*ipc_msg.IpcMsg)
	if !ok {
		return 0, 0, wrongType("ipc msg", m)
	}
	n := int64(e.GetMsize())
	return n, padTo(n, 8), nil
}
