package dump

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Limits on what is read from /proc; a larger value means something is wrong with the
// target or the kernel, not that a larger buffer is needed.
const (
	maxProcFile = 16 << 20 // any single /proc text file (smaps of a huge process included)
	maxAuxvLen  = 4096     // /proc/PID/auxv bytes
)

func procPath(pid int, parts ...string) string {
	return filepath.Join(append([]string{"/proc", strconv.Itoa(pid)}, parts...)...)
}

// readProcFile reads a whole /proc file, bounded by maxProcFile.
func readProcFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	n, err := buf.ReadFrom(&limitedReader{f, maxProcFile + 1})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if n > maxProcFile {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, maxProcFile)
	}
	return buf.Bytes(), nil
}

type limitedReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("EOF expected")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// procStat holds the fields of /proc/PID/stat the dump needs.
type procStat struct {
	state                              byte
	ppid, pgid, sid, ttyNr             int
	flags                              uint32
	startCode, endCode, startStack     uint64
	startData, endData, startBrk       uint64
	argStart, argEnd, envStart, envEnd uint64
	exitSignal                         int
}

// readStat parses /proc/PID/stat (or task/TID/stat). The comm field may hold spaces and
// parentheses, so fields are counted from the last ')'.
func readStat(path string) (*procStat, error) {
	b, err := readProcFile(path)
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
	s := &procStat{
		state:      f[0][0],
		ppid:       int(num(4)),
		pgid:       int(num(5)),
		sid:        int(num(6)),
		ttyNr:      int(num(7)),
		flags:      uint32(num(9)),
		startCode:  num(26),
		endCode:    num(27),
		startStack: num(28),
		exitSignal: int(num(38)),
		startData:  num(45),
		endData:    num(46),
		startBrk:   num(47),
		argStart:   num(48),
		argEnd:     num(49),
		envStart:   num(50),
		envEnd:     num(51),
	}
	return s, err
}

// procStatus is /proc/PID/status as key -> value.
type procStatus map[string]string

func readStatus(path string) (procStatus, error) {
	b, err := readProcFile(path)
	if err != nil {
		return nil, err
	}
	st := procStatus{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st, nil
}

// ints parses a whitespace-separated list of decimal numbers (Uid:, Gid:, Groups:).
func (s procStatus) ints(key string) ([]uint32, error) {
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

// hex parses a hexadecimal field (CapEff:, SigBlk:).
func (s procStatus) hex(key string) (uint64, error) {
	v, err := strconv.ParseUint(s[key], 16, 64)
	if err != nil {
		return 0, fmt.Errorf("status %s: %q: %w", key, s[key], err)
	}
	return v, nil
}

// listDir returns the numeric entries of a /proc directory (tasks, fds), sorted.
func listNumeric(dir string) ([]int, error) {
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

// smapsVMA is one mapping of /proc/PID/smaps.
type smapsVMA struct {
	start, end, pgoff uint64
	read, write, exec bool
	shared            bool
	devMajor          uint32
	devMinor          uint32
	ino               uint64
	path              string
	vmflags           []string
}

// readSmaps parses /proc/PID/smaps: the maps lines plus each mapping's VmFlags.
func readSmaps(pid int) ([]smapsVMA, error) {
	path := procPath(pid, "smaps")
	b, err := readProcFile(path)
	if err != nil {
		return nil, err
	}
	var out []smapsVMA
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			if len(out) == 0 {
				return nil, fmt.Errorf("%s: VmFlags before any mapping", path)
			}
			out[len(out)-1].vmflags = strings.Fields(rest)
			continue
		}
		if v, ok, err := parseMapsLine(line); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		} else if ok {
			out = append(out, v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// parseMapsLine parses "start-end perms offset maj:min inode   path"; ok is false for
// the smaps detail lines ("Rss:   4 kB").
func parseMapsLine(line string) (v smapsVMA, ok bool, err error) {
	dash := strings.IndexByte(line, '-')
	sp := strings.IndexByte(line, ' ')
	if dash <= 0 || sp < dash {
		return v, false, nil
	}
	if _, err := strconv.ParseUint(line[:dash], 16, 64); err != nil {
		return v, false, nil
	}
	f := strings.SplitN(line, " ", 6)
	if len(f) < 5 {
		return v, false, fmt.Errorf("bad maps line %q", line)
	}
	a, b, _ := strings.Cut(f[0], "-")
	if v.start, err = strconv.ParseUint(a, 16, 64); err != nil {
		return v, false, fmt.Errorf("bad maps line %q", line)
	}
	if v.end, err = strconv.ParseUint(b, 16, 64); err != nil {
		return v, false, fmt.Errorf("bad maps line %q", line)
	}
	perms := f[1]
	if len(perms) != 4 {
		return v, false, fmt.Errorf("bad maps perms in %q", line)
	}
	v.read, v.write, v.exec, v.shared = perms[0] == 'r', perms[1] == 'w', perms[2] == 'x', perms[3] == 's'
	if v.pgoff, err = strconv.ParseUint(f[2], 16, 64); err != nil {
		return v, false, fmt.Errorf("bad maps offset in %q", line)
	}
	maj, min, _ := strings.Cut(f[3], ":")
	ma, err1 := strconv.ParseUint(maj, 16, 32)
	mi, err2 := strconv.ParseUint(min, 16, 32)
	if err1 != nil || err2 != nil {
		return v, false, fmt.Errorf("bad maps device in %q", line)
	}
	v.devMajor, v.devMinor = uint32(ma), uint32(mi)
	if v.ino, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return v, false, fmt.Errorf("bad maps inode in %q", line)
	}
	if len(f) == 6 {
		v.path = strings.TrimLeft(f[5], " ")
	}
	return v, true, nil
}

// fdInfo is /proc/PID/fdinfo/FD.
type fdInfo struct {
	pos   uint64
	flags uint32
	mntID int32
	extra map[string]string
}

func readFdinfo(pid, fd int) (*fdInfo, error) {
	path := procPath(pid, "fdinfo", strconv.Itoa(fd))
	b, err := readProcFile(path)
	if err != nil {
		return nil, err
	}
	fi := &fdInfo{extra: map[string]string{}}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "pos":
			fi.pos, err = strconv.ParseUint(v, 10, 64)
		case "flags":
			var f uint64
			f, err = strconv.ParseUint(v, 8, 32)
			fi.flags = uint32(f)
		case "mnt_id":
			var m int64
			m, err = strconv.ParseInt(v, 10, 32)
			fi.mntID = int32(m)
		default:
			fi.extra[k] = v
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, k, err)
		}
	}
	return fi, nil
}
