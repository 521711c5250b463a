package explore

import (
	"fmt"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
)

// Addr is a virtual address; JSON has it as a hex string, since addresses do not fit
// the integers many JSON readers use.
type Addr uint64

// MarshalJSON writes the address as "0x...".
func (a Addr) MarshalJSON() ([]byte, error) { return []byte(`"` + a.String() + `"`), nil }

// UnmarshalJSON reads an address written by MarshalJSON.
func (a *Addr) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("address %s: %w", b, err)
	}
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return fmt.Errorf("address %s: %w", b, err)
	}
	*a = Addr(v)
	return nil
}

func (a Addr) String() string { return fmt.Sprintf("%#x", uint64(a)) }

// VMA is one memory area of a process.
type VMA struct {
	Start  Addr   `json:"start"`
	End    Addr   `json:"end"`
	Pages  uint64 `json:"pages"`
	Prot   string `json:"prot"`   // "rwx", "-" for each missing permission
	Shared bool   `json:"shared"` // MAP_SHARED; otherwise private (copy on write)
	// Backing says what the area maps: file, memfd, anon, heap, stack, vdso, vvar,
	// vsyscall, shmem (shared anonymous), sysvipc, packet (a packet socket ring), aio.
	Backing string `json:"backing"`
	Path    string `json:"path,omitempty"`   // file path (file), memfd name (memfd)
	Offset  uint64 `json:"offset,omitempty"` // byte offset in the file
	ShmID   uint64 `json:"shmid,omitempty"`  // file id (file, memfd) or shared memory id
	Dumped  bool   `json:"dumped"`           // CRIU restores it (VMA_AREA_REGULAR); not: vsyscall
	Status  uint32 `json:"status"`           // CRIU's VMA_* status bits
	Flags   uint32 `json:"flags"`            // mmap flags

	crit string // what crit x mems prints after the protection
}

// PermString returns the protection and sharing as /proc/PID/maps has them: "r-xp".
func (v VMA) PermString() string {
	if v.Shared {
		return v.Prot + "s"
	}
	return v.Prot + "p"
}

// ProcessVMAs is one process's executable and memory areas.
type ProcessVMAs struct {
	PID  int    `json:"pid"`
	Exe  string `json:"exe"`
	VMAs []VMA  `json:"vmas"`
}

// Mems returns each process's memory areas, in pstree.img order, as crit x mems
// lists them.
func Mems(set *imgset.Set) ([]ProcessVMAs, error) {
	return newLoader(set).mems()
}

func (l *loader) mems() ([]ProcessVMAs, error) {
	list, err := l.pstree()
	if err != nil {
		return nil, err
	}
	files, err := l.fileTable()
	if err != nil {
		return nil, err
	}
	ids := &critShmIDs{ids: map[uint64]int{}}
	var out []ProcessVMAs
	for _, p := range list {
		pid := int(p.GetPid())
		m, err := first[*mm.MmEntry](l, fmt.Sprintf("mm-%d.img", pid), "MM")
		if err != nil {
			return nil, err
		}
		pv := ProcessVMAs{PID: pid, Exe: files.critRegName(m.GetExeFileId()), VMAs: []VMA{}}
		for _, e := range m.GetVmas() {
			pv.VMAs = append(pv.VMAs, files.vma(e, ids))
		}
		out = append(out, pv)
	}
	return out, nil
}

// critShmIDs numbers shared memory ids by first appearance in the set, as crit does
// for shmem[N], ips[N] and packet[N].
type critShmIDs struct {
	ids  map[uint64]int
	last int
}

func (c *critShmIDs) get(id uint64) int {
	if n, ok := c.ids[id]; ok {
		return n
	}
	c.last++
	c.ids[id] = c.last
	return c.last
}

func protString(prot uint32) string {
	b := []byte("---")
	if prot&unix.PROT_READ != 0 {
		b[0] = 'r'
	}
	if prot&unix.PROT_WRITE != 0 {
		b[1] = 'w'
	}
	if prot&unix.PROT_EXEC != 0 {
		b[2] = 'x'
	}
	return string(b)
}

// vma describes one area. The order of the tests is crit's: the first matching kind
// names the area.
func (t *fileTable) vma(e *vma.VmaEntry, ids *critShmIDs) VMA {
	st, start, end := e.GetStatus(), e.GetStart(), e.GetEnd()
	v := VMA{
		Start: Addr(start), End: Addr(end), Prot: protString(e.GetProt()),
		Shared: e.GetFlags()&unix.MAP_SHARED != 0, Dumped: st&image.VMAAreaRegular != 0,
		Status: st, Flags: e.GetFlags(),
	}
	if end > start {
		v.Pages = (end - start) / image.PageSize
	}
	var crit string
	switch {
	case st&image.VMAAreaSysVIPC != 0:
		v.Backing, v.ShmID = "sysvipc", e.GetShmid()
		crit = fmt.Sprintf(" ips[%x]", ids.get(e.GetShmid()))
	case st&image.VMAAnonShared != 0:
		v.Backing, v.ShmID = "shmem", e.GetShmid()
		crit = fmt.Sprintf(" shmem[%x]", ids.get(e.GetShmid()))
	case st&image.VMAAreaSocket != 0:
		v.Backing, v.ShmID = "packet", e.GetShmid()
		crit = fmt.Sprintf(" packet[%x]", ids.get(e.GetShmid()))
	case st&(image.VMAFilePrivate|image.VMAFileShared) != 0:
		v.Backing, v.ShmID, v.Offset = "file", e.GetShmid(), e.GetPgoff()
		if name, ok := t.memfdName(uint32(e.GetShmid())); ok && st&image.VMAAreaMemfd != 0 {
			v.Backing, v.Path = "memfd", name
		} else {
			v.Path, _ = t.regPath(uint32(e.GetShmid()))
		}
		crit = " " + t.critRegName(uint32(e.GetShmid()))
		if e.GetPgoff() != 0 {
			crit += fmt.Sprintf(" + %#x", e.GetPgoff())
		}
		if st&image.VMAFileShared != 0 {
			crit += " (s)"
		}
	case st&image.VMAAreaStack != 0:
		v.Backing, crit = "stack", " [stack]"
	case st&image.VMAAreaVsyscall != 0:
		v.Backing, crit = "vsyscall", " [vsyscall]"
	case st&image.VMAAreaVDSO != 0:
		v.Backing, crit = "vdso", " [vdso]"
	case e.GetFlags()&unix.MAP_GROWSDOWN != 0:
		v.Backing, crit = "stack", " [stack?]"
	default:
		// crit prints nothing for these; we name them.
		switch {
		case st&image.VMAAreaVVAR != 0:
			v.Backing = "vvar"
		case st&image.VMAAreaHeap != 0:
			v.Backing = "heap"
		case st&image.VMAAreaAIORing != 0:
			v.Backing = "aio"
		default:
			v.Backing = "anon"
		}
	}
	if st&image.VMAAreaRegular == 0 {
		crit += " *"
	}
	v.crit = crit
	return v
}
