// Package procfs parses the /proc files the dump and restore engines read: stat, status,
// maps and smaps, fdinfo, and the numeric directories (task, fd). Every read is bounded.
package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
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
//
// It uses open, read and close directly: os.Open also tries to register the file with
// the runtime's poller and checks its mode (an epoll_ctl and an fstat, besides the fcntl
// calls of Fd), which doubled the cost of the small files a dump reads thousands of
// (the status of each thread of a 1,000-thread process, twice).
func ReadFile(path string) ([]byte, error) {
	var out []byte
	err := readWith(path, func(b []byte) error {
		out = bytes.Clone(b)
		return nil
	})
	return out, err
}

// readWith reads a whole /proc file, at most MaxFile bytes, into a pooled buffer and hands
// it to parse, which must not keep it: the parsers that copy out what they need read
// without a copy of the whole text.
func readWith(path string, parse func([]byte) error) error {
	fd, err := openRead(path)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	bp := smallBufs.Get().(*[]byte)
	defer smallBufs.Put(bp)
	buf := (*bp)[:cap(*bp)]
	n := 0
	for {
		if n == len(buf) {
			if len(buf) > MaxFile {
				return fmt.Errorf("read %s: larger than %d bytes", path, MaxFile)
			}
			buf = append(buf, make([]byte, len(buf))...)
			buf = buf[:cap(buf)]
		}
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	if n > MaxFile {
		return fmt.Errorf("read %s: larger than %d bytes", path, MaxFile)
	}
	if cap(buf) <= smallBufMax {
		*bp = buf[:0]
	}
	return parse(buf[:n])
}

// openRead opens path for reading with open(2) itself (see ReadFile), retrying when a
// signal interrupts it.
func openRead(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		if err != unix.EINTR {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
	}
}

// smallBufs holds ReadFile's read buffers (a thread's status is some 1.5 KiB); one that
// grew past smallBufMax for a large file is not kept.
var smallBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

const smallBufMax = 64 << 10

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
	return ParseStatus(string(b)), nil
}

// statusLines is about how many lines a status file has (56 on Linux 6.18): the map is
// made that large at once, where growing it took a tenth of a dump of many threads.
const statusLines = 64

// ParseStatus parses the text of a status file. Keys and values are slices of text, not
// copies.
func ParseStatus(text string) Status {
	st := make(Status, statusLines)
	for len(text) > 0 {
		line := text
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = ""
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st
}

// ReadStatusKeys reads only the lines keys of a status file, their values copied out of
// the file's text: what a state kept per thread holds (a thousand threads kept the whole
// text and a map of every line, some 10 KiB each).
func ReadStatusKeys(path string, keys []string) (Status, error) {
	st := make(Status, len(keys))
	err := readWith(path, func(text []byte) error {
		parseStatusKeys(text, keys, st)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// parseStatusKeys puts the lines keys of a status text into st, copied.
func parseStatusKeys(text []byte, keys []string, st Status) {
	for len(text) > 0 {
		line := text
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = nil
		}
		k, v, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		for _, want := range keys {
			if string(k) == want {
				st[want] = string(bytes.TrimSpace(v))
				break
			}
		}
	}
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

// mappingBufs holds readMappings' read buffers: a dump reads maps or smaps three times a
// process, and a buffer each made a tree's dump allocate 25 MiB a hundred processes.
var mappingBufs = sync.Pool{New: func() any { b := make([]byte, mappingBuf); return &b }}

// mappingBuf is the size of one read of maps or smaps: some 200 mappings of smaps, a
// line of maps at most a path (PATH_MAX) and its fields.
const mappingBuf = 256 << 10

// readMappings streams maps or smaps: smaps takes over 1 KiB a mapping, so a process with
// tens of thousands of mappings has a file far larger than MaxFile. The kernel's making
// of smaps bounds this (it walks each mapping's page tables and prints some twenty
// lines of counters): the lines are taken apart as bytes in place, the counters passed
// over, and the strings kept (paths, flags) shared where they repeat, where scanning
// lines into strings cost as much again as the kernel's part.
func readMappings(path string) ([]Mapping, error) {
	fd, err := openRead(path)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	bp := mappingBufs.Get().(*[]byte)
	defer mappingBufs.Put(bp)
	buf := *bp
	p := mappingParser{path: path}
	filled := 0
	for {
		n, err := unix.Read(fd, buf[filled:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		filled += n
		done := 0
		for {
			i := bytes.IndexByte(buf[done:filled], '\n')
			if i < 0 {
				break
			}
			if err := p.line(buf[done : done+i]); err != nil {
				return nil, err
			}
			done += i + 1
		}
		if n == 0 {
			if done < filled { // a last line without its newline
				if err := p.line(buf[done:filled]); err != nil {
					return nil, err
				}
			}
			return p.out, nil
		}
		filled = copy(buf, buf[done:filled])
		if filled == len(buf) {
			return nil, fmt.Errorf("%s: a line longer than %d bytes", path, len(buf))
		}
	}
}

// mappingParser takes apart the lines of one maps or smaps file.
type mappingParser struct {
	path  string
	out   []Mapping
	flags []string // where each mapping's VmFlags are cut from
}

func (p *mappingParser) line(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	// smaps has some twenty detail lines a mapping ("Rss:   4 kB"), all starting with
	// a capital letter, where a mapping's line starts with its lower-case hex address.
	if b[0] >= 'A' && b[0] <= 'Z' {
		if rest, ok := bytes.CutPrefix(b, vmFlagsPrefix); ok {
			if len(p.out) == 0 {
				return fmt.Errorf("%s: VmFlags before any mapping", p.path)
			}
			p.out[len(p.out)-1].VMFlags = p.vmFlags(rest)
		}
		return nil
	}
	last := ""
	if len(p.out) > 0 {
		last = p.out[len(p.out)-1].Path
	}
	v, ok, err := parseMapping(b, last)
	if err != nil {
		return fmt.Errorf("%s: %w", p.path, err)
	}
	if ok {
		if len(p.out) == MaxMappings {
			return fmt.Errorf("%s: more than %d mappings", p.path, MaxMappings)
		}
		p.out = append(p.out, v)
	}
	return nil
}

// vmFlags splits a VmFlags line into its two-letter flags, each the one string of its
// name, all cut from one shared slice.
func (p *mappingParser) vmFlags(b []byte) []string {
	if cap(p.flags)-len(p.flags) < 64 {
		// Each new slice twice the last: a process of a few mappings keeps a few hundred
		// strings, one of 20,000 about twice what it needs.
		p.flags = make([]string, 0, max(256, 2*cap(p.flags)))
	}
	first := len(p.flags)
	for len(b) > 0 {
		b = bytes.TrimLeft(b, " ")
		w := b
		if i := bytes.IndexByte(b, ' '); i >= 0 {
			w, b = b[:i], b[i:]
		} else {
			b = nil
		}
		if len(w) == 0 {
			break
		}
		name, ok := vmFlagNames[string(w)]
		if !ok {
			name = string(w)
		}
		p.flags = append(p.flags, name)
	}
	return p.flags[first:len(p.flags):len(p.flags)]
}

// vmFlagNames are the VmFlags the kernel prints (fs/proc/task_mmu.c, show_smap_vma_flags).
var vmFlagNames = func() map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields("rd wr ex sh mr mw me ms gd pf lo io sr rr dc de ac nr ht sf ar wf dd mm hg nh mg um uw ss sl bt mt dp lf") {
		m[f] = f
	}
	return m
}()

// parseMapping parses a maps line held in b, "start-end perms offset maj:min inode
// path"; ok is false for a line that is not one. A path equal to last is last itself.
func parseMapping(b []byte, last string) (v Mapping, ok bool, err error) {
	start, rest, good := hexField(b, '-')
	if !good {
		return v, false, nil
	}
	bad := func(what string) (Mapping, bool, error) {
		return Mapping{}, false, fmt.Errorf("%w (%s): %q", errBadMaps, what, b)
	}
	v.Start = start
	if v.End, rest, good = hexField(rest, ' '); !good {
		return bad("end")
	}
	if len(rest) < 5 || rest[4] != ' ' {
		return bad("perms")
	}
	v.Read, v.Write, v.Exec, v.Shared = rest[0] == 'r', rest[1] == 'w', rest[2] == 'x', rest[3] == 's'
	rest = rest[5:]
	if v.Pgoff, rest, good = hexField(rest, ' '); !good {
		return bad("offset")
	}
	var ma, mi uint64
	if ma, rest, good = hexField(rest, ':'); !good || ma > 0xffffffff {
		return bad("device")
	}
	if mi, rest, good = hexField(rest, ' '); !good || mi > 0xffffffff {
		return bad("device")
	}
	v.DevMajor, v.DevMinor = uint32(ma), uint32(mi)
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		if v.Ino > (1<<64-1)/10 {
			return bad("inode")
		}
		v.Ino = v.Ino*10 + uint64(rest[i]-'0')
		i++
	}
	if i == 0 || (i < len(rest) && rest[i] != ' ') {
		return bad("inode")
	}
	name := bytes.TrimLeft(rest[i:], " ")
	switch {
	case len(name) == 0:
	case string(name) == last:
		v.Path = last
	default:
		v.Path = string(name)
	}
	return v, true, nil
}

// hexField parses the lower-case hexadecimal number at the start of b, which must end
// at sep (or at the end of b, for sep 0); it returns what follows sep.
func hexField(b []byte, sep byte) (uint64, []byte, bool) {
	var v uint64
	i := 0
	for ; i < len(b); i++ {
		c := b[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			goto end
		}
		if i == 16 {
			return 0, nil, false
		}
		v = v<<4 | uint64(d)
	}
end:
	if i == 0 || i == len(b) || b[i] != sep {
		return 0, nil, false
	}
	return v, b[i+1:], true
}

var errBadMaps = errors.New("bad maps line")

var vmFlagsPrefix = []byte("VmFlags:")

// ParseMapsLine parses "start-end perms offset maj:min inode   path"; ok is false for
// the smaps detail lines ("Rss:   4 kB").
func ParseMapsLine(line string) (v Mapping, ok bool, err error) {
	return parseMapping([]byte(line), "")
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
