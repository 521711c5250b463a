package dump

import (
	"fmt"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
)

// vmaKind says how the pages of a mapping are dumped.
type vmaKind int

const (
	vmaAnon        vmaKind = iota // anonymous private (heap and stacks included): present and swapped pages
	vmaVdso                       // all pages, CRIU compares the dumped vDSO at restore
	vmaNoPages                    // vvar, vsyscall, shared file mappings: nothing to dump
	vmaFilePriv                   // private file mapping: only pages copied on write
	vmaShmem                      // MAP_SHARED anonymous memory or memfd: dumped once per object
	vmaFilePrivMem                // private mapping of a memfd: pages copied on write
)

// vmaDesc is one mapping as it goes into mm-PID.img.
type vmaDesc struct {
	start, end, pgoff uint64
	prot, flags       uint32
	status            uint32
	madv              uint64
	fdflags           uint32
	hasFdflags        bool
	kind              vmaKind
	readable          bool
	path              string       // the mapped file as named in maps (file mappings)
	mapFile           string       // /proc/PID/map_files/... link that opens it
	st                *unix.Stat_t // of a file mapping, shared by the mappings of one file (mappedFiles)
	shmid             uint64       // file id (files.img) for file mappings, set when files are numbered
}

// mappedFiles stats the files a tree maps, each once: its processes map the same
// libraries again and again, and a stat through map_files (the kernel finds the mapping,
// then the file) was a third of classifying a 200-process tree's mappings. A file is
// known by what maps says of it (device, inode and name); a cache lives for one look at
// the tree (precheck, or the stopped tree's), so that a file changed in between is seen.
type mappedFiles struct{ m sync.Map }

type mappedFileKey struct {
	major, minor uint32
	ino          uint64
	path         string
}

// stat returns the stat of the file v maps, opened through mapFile, which the caller
// must not change: the mappings of one file share it.
func (c *mappedFiles) stat(v *procfs.Mapping, mapFile string) (*unix.Stat_t, error) {
	k := mappedFileKey{v.DevMajor, v.DevMinor, v.Ino, v.Path}
	if got, ok := c.m.Load(k); ok {
		return got.(*unix.Stat_t), nil
	}
	st := new(unix.Stat_t)
	if err := unix.Stat(mapFile, st); err != nil {
		return nil, err
	}
	c.m.Store(k, st)
	return st, nil
}

// classifyVMA turns one smaps entry into its CRIU form, or refuses it. It returns nil for
// mappings CRIU skips ([uprobes]). files stats the mapped files; access says whether to
// read the access mode each file mapping was opened with (fdflags), which only the images
// need.
func classifyVMA(pid int, v *procfs.Mapping, files *mappedFiles, access bool) (*vmaDesc, error) {
	e := &vmaDesc{start: v.Start, end: v.End, readable: v.Read}
	if v.Read {
		e.prot |= unix.PROT_READ
	}
	if v.Write {
		e.prot |= unix.PROT_WRITE
	}
	if v.Exec {
		e.prot |= unix.PROT_EXEC
	}
	if v.Shared {
		e.flags = unix.MAP_SHARED
	} else {
		e.flags = unix.MAP_PRIVATE
	}
	ioPf := false
	for _, f := range v.VMFlags {
		switch f {
		case "gd":
			e.flags |= unix.MAP_GROWSDOWN
		case "lo":
			e.flags |= unix.MAP_LOCKED // CRIU's record of VM_LOCKED; restore locks it again
		case "lf":
			// VM_LOCKONFAULT has no place in vma_entry: a restore would lock every page.
			return nil, refuse(pid, -1, fmt.Sprintf("mapping %#x-%#x", v.Start, v.End), "memory locked on fault (MLOCK_ONFAULT, MCL_ONFAULT) is not supported")
		case "nr":
			e.flags |= unix.MAP_NORESERVE
		case "dp":
			// MAP_DROPPABLE is a mapping type of its own, instead of MAP_PRIVATE (as CRIU
			// records it); its pages may be dropped at any time, so none is saved.
			e.flags = e.flags&^unix.MAP_PRIVATE | unix.MAP_DROPPABLE
		case "ht":
			return nil, refuse(pid, -1, fmt.Sprintf("mapping %#x-%#x", v.Start, v.End), "hugetlb mappings are not supported")
		case "sr":
			e.madv |= 1 << unix.MADV_SEQUENTIAL
		case "rr":
			e.madv |= 1 << unix.MADV_RANDOM
		case "dc":
			e.madv |= 1 << unix.MADV_DONTFORK
		case "dd":
			e.madv |= 1 << unix.MADV_DONTDUMP
		case "mg":
			e.madv |= 1 << unix.MADV_MERGEABLE
		case "hg":
			e.madv |= 1 << unix.MADV_HUGEPAGE
		case "nh":
			e.madv |= 1 << unix.MADV_NOHUGEPAGE
		case "wf":
			e.madv |= 1 << unix.MADV_WIPEONFORK
		case "io", "pf":
			ioPf = true
		case "ss":
			return nil, refuse(pid, -1, fmt.Sprintf("mapping %#x-%#x", v.Start, v.End), "shadow stacks are not supported")
		}
	}
	anon := func(status uint32, kind vmaKind) (*vmaDesc, error) {
		if v.Shared {
			return nil, refuse(pid, -1, fmt.Sprintf("mapping %#x-%#x %s", v.Start, v.End, v.Path), "unexpected shared special mapping")
		}
		e.status = status | image.VMAAnonPrivate
		e.flags |= unix.MAP_ANONYMOUS
		e.kind = kind
		return e, nil
	}
	switch v.Path {
	case "[vsyscall]":
		return anon(image.VMAAreaVsyscall, vmaNoPages)
	case "[vdso]":
		return anon(image.VMAAreaRegular|image.VMAAreaVDSO, vmaVdso)
	case "[vvar]", "[vvar_vclock]":
		return anon(image.VMAAreaRegular|image.VMAAreaVVAR, vmaNoPages)
	case "[heap]":
		return anon(image.VMAAreaRegular|image.VMAAreaHeap, vmaAnon)
	case "[uprobes]":
		return nil, nil
	}
	// Named only in a refusal: a Sprintf for each of 20,000 mappings was a twentieth of
	// their dump.
	where := func() string { return fmt.Sprintf("mapping %#x-%#x %s", v.Start, v.End, v.Path) }
	if ioPf {
		return nil, refuse(pid, -1, where(), "I/O and PFN mappings are not supported")
	}
	if v.Ino == 0 {
		if strings.Contains(v.Path, "aio") || strings.Contains(v.Path, "io_uring") {
			return nil, refuse(pid, -1, where(), "this kind of mapping is not supported")
		}
		return anon(image.VMAAreaRegular, vmaAnon)
	}
	switch {
	case strings.HasPrefix(v.Path, "/SYSV"):
		return nil, refuse(pid, -1, where(), "System V shared memory is not supported")
	case strings.Contains(v.Path, "io_uring"), strings.HasPrefix(v.Path, "/[aio]"):
		return nil, refuse(pid, -1, where(), "this kind of mapping is not supported")
	}
	e.pgoff = v.Pgoff
	e.path = v.Path
	e.mapFile = procfs.Path(pid, "map_files", fmt.Sprintf("%x-%x", v.Start, v.End))
	var err error
	if e.st, err = files.stat(v, e.mapFile); err != nil {
		return nil, fmt.Errorf("process %d: stat %s (%s): %w", pid, e.mapFile, v.Path, err)
	}
	if v.VMFlags == nil && onHugetlbfs(e.st.Dev, e.mapFile) {
		// read from maps (precheckMappings), without the VmFlags that say ht
		return nil, refuse(pid, -1, where(), "hugetlb mappings are not supported")
	}
	if access {
		if e.fdflags, err = mapFileAccess(e.mapFile); err != nil {
			return nil, fmt.Errorf("process %d: %s (%s): %w", pid, e.mapFile, v.Path, err)
		}
		e.hasFdflags = true
	}
	switch mode := e.st.Mode & unix.S_IFMT; {
	case isShmem(v.Path, e.st):
		e.status = image.VMAAreaRegular | image.VMAAreaMemfd
		if v.Shared {
			e.status |= image.VMAFileShared
			e.kind = vmaShmem
		} else {
			e.status |= image.VMAFilePrivate
			e.kind = vmaFilePrivMem
		}
	case mode == unix.S_IFREG:
		// other deleted files are ghosts (ghost.go); one whose name was removed while it
		// keeps another is saved through a link (remap.go), refused without --link-remap
		// by checkLinkRemaps
		if e.st.Nlink == 0 && !isGhost(v.Path, e.st) {
			return nil, refuse(pid, -1, where(), "this kind of deleted file cannot be made again")
		}
		e.status = image.VMAAreaRegular
		if v.Shared {
			e.status |= image.VMAFileShared
			e.kind = vmaNoPages
		} else {
			e.status |= image.VMAFilePrivate
			e.kind = vmaFilePriv
		}
	default:
		return nil, refuse(pid, -1, where(), "mappings of devices are not supported")
	}
	return e, nil
}

// hugetlbfsMagic is HUGETLBFS_MAGIC, the f_type of hugetlbfs.
const hugetlbfsMagic = 0x958458f6

// onHugetlbfs tells whether the file path opens, on device dev, lies on hugetlbfs. Each
// device's filesystem is asked once (hugetlbfsDevs): a tree's processes map the same few
// files again and again.
func onHugetlbfs(dev uint64, path string) bool {
	if v, ok := hugetlbfsDevs.Load(dev); ok {
		return v.(bool)
	}
	var fs unix.Statfs_t
	if unix.Statfs(path, &fs) != nil {
		return false
	}
	is := fs.Type == hugetlbfsMagic
	hugetlbfsDevs.Store(dev, is)
	return is
}

// hugetlbfsDevs holds, for each device onHugetlbfs asked about, whether it is hugetlbfs.
var hugetlbfsDevs sync.Map

// mapFileAccess returns the access mode of the file a mapping was made from, as CRIU 4.2
// records it in vma_entry.fdflags: the map_files link's own mode says whether that file was
// opened for reading (0400) and for writing (0200). A restore must open the file the same
// way: a MAP_SHARED mapping of a file opened O_RDWR may be mprotect()ed writable later,
// even if it is mapped read-only now.
func mapFileAccess(mapFile string) (uint32, error) {
	var lst unix.Stat_t
	if err := unix.Lstat(mapFile, &lst); err != nil {
		return 0, err
	}
	switch lst.Mode & 0o600 {
	case 0o200:
		return unix.O_WRONLY, nil
	case 0o600:
		return unix.O_RDWR, nil
	}
	return unix.O_RDONLY, nil
}

// buildVMAs classifies every mapping of a process and merges the vvar areas into one entry
// ([vvar] and, since Linux 6.13, [vvar_vclock]), as CRIU 4.2 writes them.
func buildVMAs(pid int, maps []procfs.Mapping, files *mappedFiles) ([]*vmaDesc, error) {
	var out []*vmaDesc
	for i := range maps {
		e, err := classifyVMA(pid, &maps[i], files, true)
		if err != nil {
			return nil, err
		}
		if e == nil {
			continue
		}
		if e.status&image.VMAAreaVVAR != 0 && len(out) > 0 {
			prev := out[len(out)-1]
			if prev.status&image.VMAAreaVVAR != 0 {
				if prev.end != e.start {
					return nil, fmt.Errorf("process %d: vvar areas %#x-%#x and %#x-%#x are not adjacent", pid, prev.start, prev.end, e.start, e.end)
				}
				prev.end = e.end
				continue
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// memfdName is the name CRIU records for a shmem object: the memfd name, or /dev/zero for
// MAP_SHARED|MAP_ANONYMOUS memory.
func memfdName(path string) string {
	path = strings.TrimSuffix(path, " (deleted)")
	return strings.TrimPrefix(path, "/memfd:")
}
