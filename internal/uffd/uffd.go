// Package uffd drives a userfaultfd (userfaultfd(2), ioctl_userfaultfd(2)) from any
// process: the handshake, registering ranges for missing pages, and UFFDIO_COPY, which
// fills missing pages of the fd's address space with bytes of the caller's.
//
// A restore uses it to place pages in fresh anonymous memory: UFFDIO_COPY allocates each
// page and copies into it, where a write through process_vm_writev or /proc/PID/mem
// faults the page in (zeroed first), then copies, and honours the protections.
package uffd

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UserModeOnly is userfaultfd(2)'s UFFD_USER_MODE_ONLY (Linux 5.11): faults the kernel
// takes on the fd's behalf (a syscall's copy, process_vm_writev, /proc/PID/mem) fail with
// EFAULT instead of waiting for an answer; only UFFDIO_COPY fills missing pages. Without
// it a thread that touched a registered missing page would wait for us for ever.
const UserModeOnly = 1

// The ioctls of <linux/userfaultfd.h> (_IOWR/_IOR of type 0xAA).
const (
	api       = 0xAA // UFFD_API
	ioctlAPI  = 0xc018aa3f
	ioctlReg  = 0xc020aa00
	ioctlCopy = 0xc028aa03

	modeMissing = 1 // UFFDIO_REGISTER_MODE_MISSING
)

type uffdioAPI struct{ api, features, ioctls uint64 }

type uffdioRange struct{ start, len uint64 }

type uffdioRegister struct {
	rng    uffdioRange
	mode   uint64
	ioctls uint64
}

type uffdioCopy struct {
	dst, src, len, mode uint64
	copied              int64
}

// Handshake is UFFDIO_API with no features: it must come first on a new fd.
func Handshake(fd int) error {
	a := uffdioAPI{api: api}
	return ioctl(fd, ioctlAPI, unsafe.Pointer(&a))
}

// Register asks fd to report missing pages in [start, start+n): afterwards only Copy
// fills them. Every mapping in the range must be one userfaultfd serves (anonymous,
// shmem or hugetlb memory), or nothing is registered. Closing the last reference to fd
// ends every registration.
func Register(fd int, start, n uint64) error {
	r := uffdioRegister{rng: uffdioRange{start, n}, mode: modeMissing}
	return ioctl(fd, ioctlReg, unsafe.Pointer(&r))
}

// Copy fills the missing pages at dst of fd's address space with b (whole pages, inside
// one registered mapping), and returns how many bytes it placed: less than len(b) with
// an error, EEXIST where it met a page that was there already.
func Copy(fd int, dst uint64, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c := uffdioCopy{dst: dst, src: uint64(uintptr(unsafe.Pointer(&b[0]))), len: uint64(len(b))}
	for {
		err := ioctl(fd, ioctlCopy, unsafe.Pointer(&c))
		done := max(c.copied, 0)
		if err == nil {
			runtime.KeepAlive(b)
			return len(b), nil
		}
		// EAGAIN: the address space changed under the copy, which stopped part way:
		// the rest is tried again, as long as each try places something.
		if err == unix.EAGAIN && done > 0 && done < int64(c.len) {
			c.dst, c.src, c.len, c.copied = c.dst+uint64(done), c.src+uint64(done), c.len-uint64(done), 0
			continue
		}
		runtime.KeepAlive(b)
		return int(c.dst-dst) + int(done), err
	}
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}
