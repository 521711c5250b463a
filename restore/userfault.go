package restore

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/ptrace"
	"github.com/imgtool/imgtool/internal/uffd"
)

// Pages of a process's fresh private anonymous memory are placed with UFFDIO_COPY where
// the kernel offers a userfaultfd: the process makes one (an injected call), we take a
// copy of it, register its fresh mappings, copy, and close it, which ends the
// registration. UFFDIO_COPY allocates each page and copies into it; process_vm_writev
// faults the page in, which zeroes it, then copies, and /proc/PID/mem, for the read-only
// mappings, goes a page at a time through a buffer of the kernel. On one core, 256 MiB
// took 77-93 ms against 115-134 with process_vm_writev; the restore of the 256 MiB
// process went from 130 to 97 ms (medians of 11 paired runs; scripts/bench.sh, section 4).
//
// What the fd does not serve is written as before: file mappings, memory a child kept
// from its parent, MAP_DROPPABLE areas, and mappings whose faults would take huge pages
// (transparent huge pages "always", or "madvise" and MADV_HUGEPAGE), whose pages the
// restored process would otherwise have (UFFDIO_COPY places small pages only).

// userfaultMin is the least page bytes for which a process's pages go through a
// userfaultfd: it costs two injected calls (its creation, its close in the process), as
// long as writing a few hundred KiB. A variable so that tests can take either way.
var userfaultMin int64 = 1 << 20

// userfaultMinPart is the least page bytes a mapping part must receive to be registered:
// registering and unregistering a mapping, and one UFFDIO_COPY per mapping, cost more than
// a page or two saves: 20,000 one-page mappings, half of them read-only, were restored in
// 180 ms against 156 without a userfaultfd (medians of 9 paired runs), though on one core
// alone their pages took 71 ms against 85.
const userfaultMinPart = 64 << 10

// userfaultPlaced counts the bytes placed with UFFDIO_COPY, for tests to tell which way
// the pages went.
var userfaultPlaced atomic.Int64

// userfault is our copy of a process's userfaultfd and the mappings registered with it.
type userfault struct {
	p    *process
	fd   int
	vmas spans // one span per registered mapping part, in address order
}

// userfaultable tells whether the pages of the fresh mapping v may go through a
// userfaultfd: private anonymous memory that would not be given huge pages.
func userfaultable(v *vma.VmaEntry) bool {
	if v.GetStatus()&image.VMAAnonPrivate == 0 || v.GetFlags()&unix.MAP_DROPPABLE != 0 {
		return false
	}
	switch madv := v.GetMadv(); thpMode() {
	case "always":
		return madv&(1<<unix.MADV_NOHUGEPAGE) != 0
	case "madvise":
		return madv&(1<<unix.MADV_HUGEPAGE) == 0
	}
	return true
}

// thpMode is the system's transparent huge page mode ("always", "madvise", "never"; ""
// without THP).
var thpMode = sync.OnceValue(func() string {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return ""
	}
	s := string(b)
	i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return ""
	}
	return s[i+1 : j]
})

// userfaultFor returns a userfaultfd for the pages runs of process p gives the parts in
// fresh, or nil where there are too few of them or the kernel offers none.
func userfaultFor(p *process, fresh spans, runs []pageRun) (*userfault, error) {
	if p.pl.pagemap.PagesSize() < userfaultMin {
		return nil, nil
	}
	busy := busyParts(fresh, runs, userfaultMinPart)
	if len(busy) == 0 {
		return nil, nil
	}
	return openUserfault(p, busy)
}

// busyParts returns the parts (sorted, not overlapping) that runs (sorted by address,
// not overlapping) give at least least bytes.
func busyParts(parts spans, runs []pageRun, least uint64) spans {
	var out spans
	j := 0
	for _, s := range parts {
		for j < len(runs) && runs[j].vaddr+uint64(runs[j].size) <= s.start {
			j++
		}
		var n uint64
		for k := j; k < len(runs) && runs[k].vaddr < s.end; k++ {
			n += min(s.end, runs[k].vaddr+uint64(runs[k].size)) - max(s.start, runs[k].vaddr)
		}
		if n >= least {
			out = append(out, s)
		}
	}
	return out
}

// openUserfault gives p a userfaultfd and registers vmas (sorted, not overlapping) with
// it. It returns nil, and no error, where the kernel makes no fd for p (no userfaultfd,
// no UFFD_USER_MODE_ONLY, not permitted) or will not register the mappings: their pages
// are written the other way.
func openUserfault(p *process, vmas spans) (*userfault, error) {
	t := p.leader()
	target, err := t.syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|uffd.UserModeOnly)
	if err != nil {
		var se *ptrace.SyscallError
		if errors.As(err, &se) {
			return nil, nil
		}
		return nil, fmt.Errorf("userfaultfd in %d: %w", p.pid, err)
	}
	fd, getErr := takeFd(p.pid, int(target))
	// The process keeps no trace of it: closing its fd leaves ours the only one.
	if _, err := t.syscall(unix.SYS_CLOSE, target); err != nil {
		if getErr == nil {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("closing the userfaultfd of %d: %w", p.pid, err)
	}
	if getErr != nil {
		return nil, fmt.Errorf("taking the userfaultfd of %d: %w", p.pid, getErr)
	}
	u := &userfault{p: p, fd: fd, vmas: vmas}
	if err := uffd.Handshake(fd); err != nil {
		u.close()
		return nil, nil
	}
	for _, s := range vmas.normal() {
		if err := uffd.Register(fd, s.start, s.end-s.start); err != nil {
			u.close()
			return nil, nil
		}
	}
	return u, nil
}

// takeFd returns a copy in our process of fd of process pid.
func takeFd(pid, fd int) (int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pidfd)
	return unix.PidfdGetfd(pidfd, fd, 0)
}

// close closes our copy, the last: the kernel unregisters every mapping, and the
// process's memory is as if the fd never was.
func (u *userfault) close() {
	unix.Close(u.fd)
}

// put places segs: what lies in registered mappings with UFFDIO_COPY, the rest, and any
// page that was there already, with writeMemory. It is safe for concurrent use.
func (u *userfault) put(segs []segment) error {
	var rest []segment
	for _, s := range segs {
		for _, pc := range u.vmas.split(s) {
			if !pc.inside {
				rest = append(rest, pc.segment)
				continue
			}
			if err := u.copy(pc.segment); err != nil {
				return err
			}
		}
	}
	if len(rest) == 0 {
		return nil
	}
	return u.p.writeMemory(rest)
}

// copy places s, inside one registered mapping. A page there already (EEXIST) cannot
// fault, so writeMemory writes it, and the copy goes on after it.
func (u *userfault) copy(s segment) error {
	for len(s.b) > 0 {
		n, err := uffd.Copy(u.fd, s.addr, s.b)
		userfaultPlaced.Add(int64(n))
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EEXIST) || n+image.PageSize > len(s.b) {
			return fmt.Errorf("writing memory of %d at %#x (UFFDIO_COPY): %w", u.p.pid, s.addr+uint64(n), err)
		}
		at := segment{s.addr + uint64(n), s.b[n : n+image.PageSize]}
		if err := u.p.writeMemory([]segment{at}); err != nil {
			return err
		}
		s = segment{at.addr + image.PageSize, s.b[n+image.PageSize:]}
	}
	return nil
}
