package uffd

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// open gives the test a userfaultfd of its own address space, or skips where the kernel
// offers none; the returned func closes it (which ends its registrations), once, and runs
// at the test's end too.
func open(t *testing.T) (int, func()) {
	t.Helper()
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|UserModeOnly, 0, 0)
	if e != 0 {
		t.Skipf("userfaultfd(UFFD_USER_MODE_ONLY): %v", e)
	}
	closeFd := sync.OnceFunc(func() { unix.Close(int(fd)) })
	t.Cleanup(closeFd)
	if err := Handshake(int(fd)); err != nil {
		t.Fatalf("UFFDIO_API: %v", err)
	}
	return int(fd), closeFd
}

func mapAnon(t *testing.T, pages int) []byte {
	t.Helper()
	m, err := unix.Mmap(-1, 0, pages*os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	return m
}

func addr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/4096)
	}
	return b
}

// TestCopyFillsReadOnlyMemory: a copy places whole pages in a registered mapping its
// owner may not write, in one call.
func TestCopyFillsReadOnlyMemory(t *testing.T) {
	fd, closeFd := open(t)
	ps := os.Getpagesize()
	m := mapAnon(t, 8)
	if err := unix.Mprotect(m, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	if err := Register(fd, addr(m), uint64(len(m))); err != nil {
		t.Fatalf("register: %v", err)
	}
	want := pattern(6 * ps)
	if n, err := Copy(fd, addr(m)+uint64(ps), want); err != nil || n != len(want) {
		t.Fatalf("copy: %d bytes, %v", n, err)
	}
	closeFd() // ends the registration: its missing pages are read below
	if !bytes.Equal(m[ps:7*ps], want) {
		t.Fatal("the copied pages differ from what was copied")
	}
	if !bytes.Equal(m[:ps], make([]byte, ps)) || !bytes.Equal(m[7*ps:], make([]byte, ps)) {
		t.Fatal("pages outside the copy are not zero")
	}
}

// TestCopyStopsAtPresentPage: a page that is there already stops the copy with EEXIST,
// and the count says how much was placed before it.
func TestCopyStopsAtPresentPage(t *testing.T) {
	fd, _ := open(t)
	ps := os.Getpagesize()
	m := mapAnon(t, 4)
	m[2*ps] = 1 // present before the registration
	if err := Register(fd, addr(m), uint64(len(m))); err != nil {
		t.Fatalf("register: %v", err)
	}
	n, err := Copy(fd, addr(m), pattern(4*ps))
	if !errors.Is(err, unix.EEXIST) || n != 2*ps {
		t.Fatalf("copy over a present page: %d bytes, %v; want %d, EEXIST", n, err, 2*ps)
	}
}

// TestRegisterRefusesFileMapping: a private mapping of a regular file is not one a
// userfaultfd serves, and registering it fails (the restore writes such pages itself).
func TestRegisterRefusesFileMapping(t *testing.T) {
	fd, _ := open(t)
	f, err := os.CreateTemp(t.TempDir(), "mapped")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	if err := Register(fd, addr(m), uint64(len(m))); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("registering a file mapping: %v, want EINVAL", err)
	}
}
