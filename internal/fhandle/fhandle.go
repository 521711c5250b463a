// Package fhandle opens files by the handles the kernel shows for inotify watches
// (fdinfo's "fhandle-bytes:... fhandle-type:... f_handle:HEX") and stores them as CRIU's
// fh_entry does, for both engines.
package fhandle

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxBytes is the largest handle (MAX_HANDLE_SZ); CRIU's fh_entry holds it in 16 u64s.
const (
	MaxBytes = 128
	words    = MaxBytes / 8
)

// Handle is a file handle: its type and bytes.
type Handle struct {
	Type int32
	Data []byte
}

// Parse reads a handle as fdinfo shows it: its size, type and hex bytes.
func Parse(size, typ, hexBytes string) (Handle, error) {
	n, err := strconv.ParseUint(size, 16, 32)
	if err != nil || n == 0 || n > MaxBytes {
		return Handle{}, fmt.Errorf("file handle of %q bytes", size)
	}
	t, err := strconv.ParseInt(typ, 16, 32)
	if err != nil {
		return Handle{}, fmt.Errorf("file handle type %q", typ)
	}
	b, err := hex.DecodeString(hexBytes)
	if err != nil || uint64(len(b)) < n {
		return Handle{}, fmt.Errorf("file handle %q: not %d hex bytes", hexBytes, n)
	}
	return Handle{Type: int32(t), Data: b[:n]}, nil
}

// Words are the handle's bytes as fh_entry.handle: 16 little-endian u64s, zero-padded.
func (h Handle) Words() []uint64 {
	var buf [MaxBytes]byte
	copy(buf[:], h.Data)
	out := make([]uint64, words)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(buf[i*8:])
	}
	return out
}

// FromWords is the handle of an fh_entry: bytes long, of type typ.
func FromWords(bytes, typ uint32, w []uint64) (Handle, error) {
	if bytes == 0 || bytes > MaxBytes || uint64(len(w))*8 < uint64(bytes) {
		return Handle{}, fmt.Errorf("file handle of %d bytes in %d words", bytes, len(w))
	}
	buf := make([]byte, len(w)*8)
	for i, v := range w {
		binary.LittleEndian.PutUint64(buf[i*8:], v)
	}
	return Handle{Type: int32(typ), Data: buf[:bytes]}, nil
}

// KernelDev turns the kernel's internal device number (what fdinfo's sdev shows:
// MAJOR << 20 | MINOR) into the one stat reports.
func KernelDev(sdev uint32) uint64 { return unix.Mkdev(sdev>>20, sdev&(1<<20-1)) }

// Open opens the file of handle h on the file system of device sdev (kernel encoding)
// with O_PATH, through any mount of that file system this process sees. It needs
// CAP_DAC_READ_SEARCH.
func Open(sdev uint32, h Handle) (*os.File, error) {
	mounts, err := mountsOf(KernelDev(sdev))
	if err != nil {
		return nil, err
	}
	if len(mounts) == 0 {
		return nil, fmt.Errorf("no mount of device %d:%d", sdev>>20, sdev&(1<<20-1))
	}
	fh := unix.NewFileHandle(h.Type, h.Data)
	var last error
	for _, m := range mounts {
		mfd, err := unix.Open(m, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) // not O_PATH: open_by_handle_at refuses it
		if err != nil {
			last = err
			continue
		}
		fd, err := unix.OpenByHandleAt(mfd, fh, unix.O_PATH|unix.O_CLOEXEC)
		unix.Close(mfd)
		if err == nil {
			return os.NewFile(uintptr(fd), m), nil
		}
		last = err
	}
	return nil, fmt.Errorf("opening by handle: %w", last)
}

// Path is where f (opened by Open) is now, as this process sees it.
func Path(f *os.File) (string, error) {
	return os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
}

// mountsOf lists the mount points of device dev in this process's mount namespace.
func mountsOf(dev uint64) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		maj, min, ok := strings.Cut(fields[2], ":")
		a, err1 := strconv.ParseUint(maj, 10, 32)
		b, err2 := strconv.ParseUint(min, 10, 32)
		if !ok || err1 != nil || err2 != nil || unix.Mkdev(uint32(a), uint32(b)) != dev {
			continue
		}
		out = append(out, unescape(fields[4]))
	}
	if err := sc.Err(); err != nil {
		return nil, errors.New("reading /proc/self/mountinfo: " + err.Error())
	}
	return out, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
