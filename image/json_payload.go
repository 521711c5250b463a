package image

import (
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
)

// How crit shows payloads: as the "extra" key of the entry they follow (images.py's
// extra handlers). Each payload codec of payload.go gets the two methods here.

// MaxSemaphores bounds the values of one ipcns-sem entry that JSON decoding lists
// (the kernel's SEMMSL is at most 32000).
const MaxSemaphores = 1 << 16

// extraCodec is a payload codec as crit's JSON shows it.
type extraCodec interface {
	// extraJSON reads the payload of entry m (rd is positioned at it) and returns the
	// entry's "extra", or nil when crit shows none. With nopl it returns crit's
	// show --nopl summary instead, "... <SIZE>", and leaves the payload to be skipped.
	extraJSON(m proto.Message, rd *Reader, nopl bool) (jsonValue, error)
	// writeExtra writes the payload of entry m, just written to w, from the entry's
	// "extra" (nil when the entry had none).
	writeExtra(m proto.Message, extra jsonValue, w *Writer) error
}

var (
	_ extraCodec = pipeDataPayload{}
	_ extraCodec = skQueuePayload{}
	_ extraCodec = tcpStreamPayload{}
	_ extraCodec = bpfmapPayload{}
	_ extraCodec = shmPayload{}
	_ extraCodec = semPayload{}
	_ extraCodec = ghostPayload{}
	_ extraCodec = msgQueueRecords{}
)

// extraCodecOf returns how k's payloads appear in JSON, or nil when k has none.
func extraCodecOf(k *Kind) (extraCodec, error) {
	var c any
	switch {
	case k.payload != nil:
		c = k.payload
	case k.sub != nil:
		c = k.sub
	default:
		return nil, nil
	}
	x, ok := c.(extraCodec)
	if !ok {
		return nil, fmt.Errorf("image: %s payloads have no JSON form", k.Name)
	}
	return x, nil
}

// noplSummary is crit's show --nopl text for a payload of n bytes: "... <21B>",
// "... <1.5KB>" (images.py's human_readable).
func noplSummary(n int64) jsonString {
	num := float64(n)
	for _, unit := range []string{"", "K", "M", "G", "T", "P", "E", "Z"} {
		if num < 1024 {
			if num == float64(int64(num)) {
				return jsonString(fmt.Sprintf("... <%d%sB>", int64(num), unit))
			}
			return jsonString("... <" + strconv.FormatFloat(num, 'f', 1, 64) + unit + "B>")
		}
		num /= 1024
	}
	return jsonString("... <" + strconv.FormatFloat(num, 'f', 1, 64) + "YB>")
}

// sizedExtra is the "extra" of a payload that crit shows as one base64 string.
func sizedExtra(pc payloadCodec, m proto.Message, rd *Reader, nopl bool) (jsonValue, error) {
	n, _, err := pc.size(m)
	if err != nil {
		return nil, err
	}
	if nopl {
		return noplSummary(n), nil
	}
	return jsonPayload{R: rd, N: n}, nil
}

// writeSizedExtra writes a payload given as one base64 string.
func writeSizedExtra(pc payloadCodec, m proto.Message, extra jsonValue, w *Writer) error {
	n, _, err := pc.size(m)
	if err != nil {
		return err
	}
	if extra == nil {
		if n == 0 {
			return nil // crit writes no payload for an entry without "extra"
		}
		return fmt.Errorf("no \"extra\" for a payload of %d bytes", n)
	}
	b, err := payloadBytes(extra, "extra")
	if err != nil {
		return err
	}
	if n != toEOF && int64(len(b)) != n {
		return fmt.Errorf("\"extra\" holds %d bytes, the entry announces %d", len(b), n)
	}
	_, err = w.Write(b)
	return err
}

// payloadBytes decodes a base64 "extra" string.
func payloadBytes(v jsonValue, what string) ([]byte, error) {
	s, ok := v.(jsonString)
	if !ok {
		return nil, fmt.Errorf("%q: want a base64 string, got %s", what, jsonKind(v))
	}
	if strings.HasPrefix(string(s), "... <") {
		return nil, fmt.Errorf("%q: payload left out (output of show --nopl cannot be encoded)", what)
	}
	b, err := decodeBytes(string(s))
	if err != nil {
		return nil, fmt.Errorf("%q: %w", what, err)
	}
	return b, nil
}

func (c pipeDataPayload) extraJSON(m proto.Message, rd *Reader, nopl bool) (jsonValue, error) {
	return sizedExtra(c, m, rd, nopl)
}

func (c pipeDataPayload) writeExtra(m proto.Message, extra jsonValue, w *Writer) error {
	return writeSizedExtra(c, m, extra, w)
}

func (c skQueuePayload) extraJSON(m proto.Message, rd *Reader, nopl bool) (jsonValue, error) {
	return sizedExtra(c, m, rd, nopl)
}

func (c skQueuePayload) writeExtra(m proto.Message, extra jsonValue, w *Writer) error {
	return writeSizedExtra(c, m, extra, w)
}

func (c bpfmapPayload) extraJSON(m proto.Message, rd *Reader, nopl bool) (jsonValue, error) {
	return sizedExtra(c, m, rd, nopl)
}

func (c bpfmapPayload) writeExtra(m proto.Message, extra jsonValue, w *Writer) error {
	return writeSizedExtra(c, m, extra, w)
}

// A shm segment dumped into pagemap-shmem/pages images (in_pagemaps) has no payload,
// and so no "extra". crit 4.2 ignores in_pagemaps and reads the next entry as data;
// for a last (or only) segment it reads nothing and prints "extra": "", which encode
// takes as the no payload it is.
func (c shmPayload) extraJSON(m proto.Message, rd *Reader, nopl bool) (jsonValue, error) {
	if e, ok := m.(*ipc_shm.IpcShmEntry); ok && e.GetInPagemaps() {
		return nil, nil
	}
	return sizedExtra(c, m, rd, nopl)
}

func (c shmPayload) writeExtra(m proto.Message, extra jsonValue, w *Writer) error {
	if e, ok := m.(*ipc_shm.IpcShmEntry); ok && e.GetInPagemaps() {
		if extra == nil || extra == jsonString("") {
			return nil
		}
		return fmt.Errorf("\"extra\" for a segment whose data is in pagemap images (in_pagemaps)")
	}
	return writeSizedExtra(c, m, extra, w)
}

// A ghost file's content is the first entry's "extra"; when chunked, each chunk's data
// is its chunk entry's. crit's show --nopl leaves them out altogether.
func (c ghostPayload) extraJSON(m proto.Message, rd *Reader, nopl bool) (jsonValue, error) {
	n, _, err := c.size(m)
	if err != nil {
		return nil, err
	}
	if e, ok := m.(*ghost_file.GhostFileEntry); (ok && e.GetChunks()) || nopl {
		return nil, nil
	}
	return jsonPayload{R: rd, N: n}, nil
}

func (c ghostPayload) writeExtra(m proto.Message, extra jsonValue, w *Writer) error {
	if e, ok := m.(*ghost_file.GhostFileEntry); ok {
		if e.GetChunks() {
			if extra != nil {
				return fmt.Errorf("\"extra\" for a chunked ghost file: its data goes in chunk entries")
			}
			return nil
		}
		if extra == nil {
			return fmt.Errorf("no \"extra\" with the ghost file's content")
		}
	}
	return writeSizedExtra(c, m, extra, w)
}

// tcp-stream: {"inq": base64, "outq": base64}.
func (c tcpStreamPayload) extraJSON(m proto.Message, rd *Reader, nopl bool) (jsonValue, error) {
	e, ok := m.(*tcp_stream.TcpStreamEntry)
	if !ok {
		return nil, wrongType("tcp stream", m)
	}
	if nopl {
		return noplSummary(int64(e.GetInqLen()) + int64(e.GetOutqLen())), nil
	}
	return jsonObject{
		{Key: "inq", Value: jsonPayload{R: rd, N: int64(e.GetInqLen())}},
		{Key: "outq", Value: jsonPayload{R: rd, N: int64(e.GetOutqLen())}},
	}, nil
}

func (c tcpStreamPayload) writeExtra(m proto.Message, extra jsonValue, w *Writer) error {
	e, ok := m.(*tcp_stream.TcpStreamEntry)
	if !ok {
		return wrongType("tcp stream", m)
	}
	obj, ok := extra.(jsonObject)
	if !ok {
		return fmt.Errorf("\"extra\": want {\"inq\": ..., \"outq\": ...}, got %s", jsonKind(extra))
	}
	for _, q := range []struct {
		key string
		n   uint32
	}{{"inq", e.GetInqLen()}, {"outq", e.GetOutqLen()}} {
		v, ok := obj.get(q.key)
		if !ok {
			return fmt.Errorf("\"extra\" has no %q", q.key)
		}
		b, err := payloadBytes(v, q.key)
		if err != nil {
			return err
		}
		if int64(len(b)) != int64(q.n) {
			return fmt.Errorf("%q holds %d bytes, the entry announces %d", q.key, len(b), q.n)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// ipcns-sem: the semaphore values as a list of numbers.
func (c semPayload) extraJSON(m proto.Message, rd *Reader, nopl bool) (jsonValue, error) {
	e, ok := m.(*ipc_sem.IpcSemEntry)
	if !ok {
		return nil, wrongType("ipc sem", m)
	}
	n := int64(e.GetNsems())
	if nopl {
		return noplSummary(2 * n), nil
	}
	if n > MaxSemaphores {
		return nil, fmt.Errorf("%d semaphores exceed limit %d", n, MaxSemaphores)
	}
	b, err := readBytes(rd, 2*n)
	if err != nil {
		return nil, err
	}
	vals := make(jsonArray, n)
	for i := range vals {
		vals[i] = jsonNumber(strconv.FormatUint(uint64(binary.LittleEndian.Uint16(b[2*i:])), 10))
	}
	return vals, nil
}

func (c semPayload) writeExtra(m proto.Message, extra jsonValue, w *Writer) error {
	e, ok := m.(*ipc_sem.IpcSemEntry)
	if !ok {
		return wrongType("ipc sem", m)
	}
	vals, ok := extra.(jsonArray)
	if !ok {
		return fmt.Errorf("\"extra\": want a list of semaphore values, got %s", jsonKind(extra))
	}
	if int64(len(vals)) != int64(e.GetNsems()) {
		return fmt.Errorf("\"extra\" has %d semaphore values, nsems is %d", len(vals), e.GetNsems())
	}
	b := make([]byte, 0, 2*len(vals))
	for i, v := range vals {
		num, ok := v.(jsonNumber)
		u, err := strconv.ParseUint(string(num), 10, 16)
		if !ok || err != nil {
			return fmt.Errorf("\"extra\" value %d: want a number from 0 to 65535", i)
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(u))
	}
	_, err := w.Write(b)
	return err
}

// ipcns-msg: the queue's messages as a list alternating each ipc_msg (plain, even in
// pretty output, as crit prints it) and its text in base64.
func (c msgQueueRecords) extraJSON(m proto.Message, rd *Reader, nopl bool) (jsonValue, error) {
	n, err := c.count(m)
	if err != nil {
		return nil, err
	}
	if nopl {
		// crit's size: each record's protobuf bytes plus its text, without the
		// size words and padding.
		var total int64
		for i := int64(0); i < n; i++ {
			rec, err := rd.Next()
			if err != nil {
				return nil, noEOF(err)
			}
			data, _, err := c.size(rec)
			if err != nil {
				return nil, err
			}
			total += int64(proto.Size(rec)) + data
		}
		return noplSummary(total), nil
	}
	return jsonLazyArray(func(emit func(jsonValue) error) error {
		for i := int64(0); i < n; i++ {
			rec, err := rd.Next()
			if err != nil {
				return noEOF(err)
			}
			obj, err := messageValue(rec.ProtoReflect(), false, false)
			if err != nil {
				return err
			}
			if err := emit(obj); err != nil {
				return err
			}
			data, _, err := c.size(rec)
			if err != nil {
				return err
			}
			if err := emit(jsonPayload{R: rd, N: data}); err != nil {
				return err
			}
		}
		return nil
	}), nil
}

func (c msgQueueRecords) writeExtra(m proto.Message, extra jsonValue, w *Writer) error {
	n, err := c.count(m)
	if err != nil {
		return err
	}
	if extra == nil && n == 0 {
		return nil
	}
	list, ok := extra.(jsonArray)
	if !ok {
		return fmt.Errorf("\"extra\": want a list of messages, got %s", jsonKind(extra))
	}
	if int64(len(list)) != 2*n {
		return fmt.Errorf("\"extra\" has %d items, qnum %d needs %d", len(list), n, 2*n)
	}
	for i := 0; i < len(list); i += 2 {
		obj, ok := list[i].(jsonObject)
		if !ok {
			return fmt.Errorf("\"extra\" item %d: want a message object, got %s", i, jsonKind(list[i]))
		}
		rec := c.newRecord()
		if err := setMessage(rec.ProtoReflect(), obj); err != nil {
			return fmt.Errorf("\"extra\" item %d: %w", i, err)
		}
		if err := w.WriteEntry(rec); err != nil {
			return fmt.Errorf("\"extra\" item %d: %w", i, err)
		}
		text, err := payloadBytes(list[i+1], fmt.Sprintf("extra item %d", i+1))
		if err != nil {
			return err
		}
		if msize := rec.(*ipc_msg.IpcMsg).GetMsize(); int64(len(text)) != int64(msize) {
			return fmt.Errorf("\"extra\" item %d holds %d bytes, msize is %d", i+1, len(text), msize)
		}
		if _, err := w.Write(text); err != nil {
			return err
		}
	}
	return nil
}

// noEOF turns a clean end of file where more records are due into an error.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
