// Package procfs parses the /proc files the dump and restore engines read: stat, status,
// maps and smaps, fdinfo, and the numeric directories (task, fd). Every read is bounded.
package procfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// MaxFile bounds any single /proc text file (the smaps of a huge process included); a
// larger one means something is wrong with the target or the kernel, not that a larger
// buffer is needed.
const MaxFile = 16 << 20

// Path returns /proc/PID/parts...
func Path(pid int, parts ...string) string {
	return filepath.Join(append([]string{"/proc", strconv.Itoa(pid)}, parts...)...)
}

// ReadFile reads a whole /proc file, at most MaxFile bytes.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxFile {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, MaxFile)
	}
	return b, nil
}

// Stat holds the fields of /proc/PID/stat the engines use.
type Stat struct {
	State                              byte
	Ppid, Pgid, Sid, TTYNr             int
	Tpgid                              int // the foreground group of the controlling terminal, -1 without one
	Flags                              uint32
	Nice                               int
	StartCode, EndCode, StartStack     uint64
	StartData, EndData, StartBrk       uint64
	ArgStart, ArgEnd, EnvStart, EnvEnd uint64
	ExitSignal                         int
}

// ReadStat parses /proc/PID/stat (or task/TID/stat). The comm field may hold spaces and
// parentheses, so fields are counted from the last ')'.
func ReadStat(path string) (*Stat, error) {
	b, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("%s: no comm field", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 52-3+1 {
		return nil, fmt.Errorf("%s: %d fields, want at least 52", path, len(f)+2)
	}
	num := func(field int) uint64 {
		v, perr := strconv.ParseInt(f[field-3], 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("%s: field %d %q: %w", path, field, f[field-3], perr)
		}
		return uint64(v)
	}
	s := &Stat{
		State:      f[0][0],
		Ppid:       int(num(4)),
		Pgid:       int(num(5)),
		Sid:        int(num(6)),
		TTYNr:      int(num(7)),
		Tpgid:      int(int64(num(8))),
		Flags:      uint32(num(9)),
		Nice:       int(num(19)),
		StartCode:  num(26),
		EndCode:    num(27),
		StartStack: num(28),
		ExitSignal: int(num(38)),
		StartData:  num(45),
		EndData:    num(46),
		StartBrk:   num(47),
		ArgStart:   num(48),
		ArgEnd:     num(49),
		EnvStart:   num(50),
		EnvEnd:     num(51),
	}
	return s, err
}

// Status is /proc/PID/status as key -> value.
type Status map[string]string

// ReadStatus reads /proc/PID/status (or task/TID/status).
func ReadStatus(path string) (Status, error) {
	b, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	st := Status{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st, nil
}

// Ints parses a whitespace-separated list of decimal numbers (Uid:, Gid:, Groups:).
func (s Status) Ints(key string) ([]uint32, error) {
	var out []uint32
	for _, w := range strings.Fields(s[key]) {
		v, err := strconv.ParseUint(w, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("status %s: %q: %w", key, w, err)
		}
		out = append(out, uint32(v))
	}
	return out, nil
}

// Hex parses a hexadecimal field (CapEff:, SigBlk:).
func (s Status) Hex(key string) (uint64, error) {
	v, err := strconv.ParseUint(s[key], 16, 64)
	if err != nil {
		return 0, fmt.Errorf("status %s: %q: %w", key, s[key], err)
	}
	return v, nil
}

// ListNumeric returns the numeric entries of a /proc directory (tasks, fds), sorted.
func ListNumeric(dir string) ([]int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// Mapping is one mapping of /proc/PID/maps or smaps.
type Mapping struct {
	Start, End, Pgoff  uint64
	Read, Write, Exec  bool
	Shared             bool
	DevMajor, DevMinor uint32
	Ino                uint64
	Path               string
	VMFlags            []string // smaps only
}

// ReadMaps parses /proc/PID/maps.
func ReadMaps(pid int) ([]Mapping, error) { return readMappings(Path(pid, "maps")) }

// ReadSmaps parses /proc/PID/smaps: the maps lines plus each mapping's VmFlags.
func ReadSmaps(pid int) ([]Mapping, error) { return readMappings(Path(pid, "smaps")) }

// MaxMappings bounds the mappings of one process read from maps or smaps: far above the
// kernel's default vm.max_map_count (65530), which a process cannot exceed unless raised.
const MaxMappings = 1 << 20

// mappingBufs holds readMappings' 64 KiB read buffers: a dump reads maps or smaps three
// times a process, and a buffer each made a tree's dump allocate 25 MiB a hundred processes.
var mappingBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// readMappings streams maps or smaps: smaps takes over 1 KiB a mapping, so a process with
// tens of thousands of mappings has a file far larger than MaxFile.
func readMappings(path string) ([]Mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Mapping
	bp := mappingBufs.Get().(*[]byte)
	defer mappingBufs.Put(bp)
	sc := bufio.NewScanner(f)
	sc.Buffer(*bp, 1<<20)
	for sc.Scan() {
		// smaps has some twenty detail lines a mapping ("Rss:   4 kB"), all starting with
		// a capital letter, where a mapping's line starts with its lower-case hex address:
		// they are passed over as bytes, not made strings (with 20,000 mappings, half a
		// million allocations and most of the parse).
		if b := sc.Bytes(); len(b) > 0 && b[0] >= 'A' && b[0] <= 'Z' && !bytes.HasPrefix(b, vmFlagsPrefix) {
			continue
		}
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			if len(out) == 0 {
				return nil, fmt.Errorf("%s: VmFlags before any mapping", path)
			}
			out[len(out)-1].VMFlags = strings.Fields(rest)
			continue
		}
		if v, ok, err := ParseMapsLine(line); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		} else if ok {
			if len(out) == MaxMappings {
				return nil, fmt.Errorf("%s: more than %d mappings", path, MaxMappings)
			}
			out = append(out, v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

var errBadMaps = errors.New("bad maps line")

var vmFlagsPrefix = []byte("VmFlags:")

// ParseMapsLine parses "start-end perms offset maj:min inode   path"; ok is false for
// the smaps detail lines ("Rss:   4 kB").
func ParseMapsLine(line string) (v Mapping, ok bool, err error) {
	dash := strings.IndexByte(line, '-')
	sp := strings.IndexByte(line, ' ')
	if dash <= 0 || sp < dash {
		return v, false, nil
	}
	if _, err := strconv.ParseUint(line[:dash], 16, 64); err != nil {
		return v, false, nil
	}
	bad := func(what string) (Mapping, bool, error) {
		return Mapping{}, false, fmt.Errorf("%w (%s): %q", errBadMaps, what, line)
	}
	f := strings.SplitN(line, " ", 6)
	if len(f) < 5 {
		return bad("fields")
	}
	a, b, _ := strings.Cut(f[0], "-")
	if v.Start, err = strconv.ParseUint(a, 16, 64); err != nil {
		return bad("start")
	}
	if v.End, err = strconv.ParseUint(b, 16, 64); err != nil {
		return bad("end")
	}
	perms := f[1]
	if len(perms) != 4 {
		return bad("perms")
	}
	v.Read, v.Write, v.Exec, v.Shared = perms[0] == 'r', perms[1] == 'w', perms[2] == 'x', perms[3] == 's'
	if v.Pgoff, err = strconv.ParseUint(f[2], 16, 64); err != nil {
		return bad("offset")
	}
	maj, min, _ := strings.Cut(f[3], ":")
	ma, err1 := strconv.ParseUint(maj, 16, 32)
	mi, err2 := strconv.ParseUint(min, 16, 32)
	if err1 != nil || err2 != nil {
		return bad("device")
	}
	v.DevMajor, v.DevMinor = uint32(ma), uint32(mi)
	if v.Ino, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return bad("inode")
	}
	if len(f) == 6 {
		v.Path = strings.TrimLeft(f[5], " ")
	}
	return v, true, nil
}

// Fdinfo is /proc/PID/fdinfo/FD.
type Fdinfo struct {
	Pos   uint64
	Flags uint32
	MntID int32
	// Locks are the file locks held through this fd, one "lock:" line each
	// ("1: POSIX  ADVISORY  WRITE 1234 00:2a:12 0 EOF"): POSIX locks of the process,
	// OFD locks and flocks of the open file description, leases.
	Locks []string
	Extra map[string]string // the other lines, by key
}

// ReadFdinfo reads /proc/PID/fdinfo/FD.
func ReadFdinfo(pid, fd int) (*Fdinfo, error) {
	path := Path(pid, "fdinfo", strconv.Itoa(fd))
	b, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	fi := &Fdinfo{Extra: map[string]string{}}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "pos":
			fi.Pos, err = strconv.ParseUint(v, 10, 64)
		case "flags":
			var f uint64
			f, err = strconv.ParseUint(v, 8, 32)
			fi.Flags = uint32(f)
		case "mnt_id":
			var m int64
			m, err = strconv.ParseInt(v, 10, 32)
			fi.MntID = int32(m)
		case "lock":
			fi.Locks = append(fi.Locks, v)
		default:
			fi.Extra[k] = v
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, k, err)
		}
	}
	return fi, nil
}

// PidMax returns /proc/sys/kernel/pid_max: every PID and TID is below it.
func PidMax() (int, error) {
	b, err := ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("pid_max: %q", b)
	}
	return n, nil
}

// limitNames are the names /proc/PID/limits gives the resource limits, in RLIMIT order
// (the kernel's lnames).
var limitNames = [...]string{
	"Max cpu time", "Max file size", "Max data size", "Max stack size", "Max core file size",
	"Max resident set", "Max processes", "Max open files", "Max locked memory", "Max address space",
	"Max file locks", "Max pending signals", "Max msgqueue size", "Max nice priority",
	"Max realtime priority", "Max realtime timeout",
}

// Unlimited is RLIM_INFINITY, which /proc/PID/limits writes "unlimited".
const Unlimited = ^uint64(0)

// ReadLimits reads the soft and hard resource limits of pid from /proc/PID/limits, in
// RLIMIT order: the values prlimit64 returns, from the same fields of the kernel (and
// readable without CAP_SYS_RESOURCE). Every line must carry the name the kernel gives
// its limit, so that a kernel with other limits is an error, not a shifted table.
func ReadLimits(pid int) ([][2]uint64, error) {
	b, err := ReadFile(Path(pid, "limits"))
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) != len(limitNames)+1 || !strings.HasPrefix(lines[0], "Limit ") {
		return nil, fmt.Errorf("%s: %d lines, want a header and %d limits", Path(pid, "limits"), len(lines), len(limitNames))
	}
	out := make([][2]uint64, len(limitNames))
	for i, line := range lines[1:] {
		// "%-25s %-20s %-20s %-10s": the name has spaces, the values do not.
		name, rest, ok := strings.Cut(line, "  ")
		f := strings.Fields(rest)
		if !ok || name != limitNames[i] || len(f) < 2 {
			return nil, fmt.Errorf("%s: line %q, want %s", Path(pid, "limits"), line, limitNames[i])
		}
		for j := range 2 {
			if f[j] == "unlimited" {
				out[i][j] = Unlimited
			} else if out[i][j], err = strconv.ParseUint(f[j], 10, 64); err != nil {
				return nil, fmt.Errorf("%s: line %q: %w", Path(pid, "limits"), line, err)
			}
		}
	}
	return out, nil
}
