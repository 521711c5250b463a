package image

// Limits on what a file may claim. They are far above anything CRIU writes, and exist
// so that a corrupt or hostile size field fails cleanly instead of exhausting memory.
const (
	// MaxEntrySize bounds one protobuf entry. The largest real ones are mm entries of
	// processes with tens of thousands of VMAs, a few MiB.
	MaxEntrySize = 64 << 20
	// MaxPayloadSize bounds the payload that follows one entry (queued pipe or socket
	// data, an inline ghost file, a SysV shared memory segment).
	MaxPayloadSize = 4 << 30
	// MaxInMemoryPayload bounds a payload that ReadImage keeps in memory.
	MaxInMemoryPayload = 1 << 30
	// MaxEntries bounds the number of entries ReadImage keeps in memory.
	MaxEntries = 1 << 22
	// MaxSubEntries bounds the records one entry announces (ipcns-msg messages).
	MaxSubEntries = 1 << 20
	// eagerAlloc is the size up to which a buffer is allocated at once; larger reads
	// grow their buffer as the bytes arrive.
	eagerAlloc = 1 << 20
	// readBufferSize is the buffer a Reader reads its file through.
	readBufferSize = 64 << 10
)
