package procfs

import (
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseMapsLine(t *testing.T) {
	v, ok, err := ParseMapsLine("7f0000001000-7f0000003000 rw-s 00002000 fe:01 1234    /tmp/a file")
	if err != nil || !ok {
		t.Fatalf("ok %v err %v", ok, err)
	}
	want := Mapping{Start: 0x7f0000001000, End: 0x7f0000003000, Pgoff: 0x2000, Read: true, Write: true, Shared: true,
		DevMajor: 0xfe, DevMinor: 1, Ino: 1234, Path: "/tmp/a file"}
	if v.Start != want.Start || v.End != want.End || v.Pgoff != want.Pgoff || !v.Read || !v.Write || v.Exec ||
		!v.Shared || v.DevMajor != want.DevMajor || v.DevMinor != want.DevMinor || v.Ino != want.Ino || v.Path != want.Path {
		t.Errorf("got %+v, want %+v", v, want)
	}
	if _, ok, err := ParseMapsLine("Rss:                   4 kB"); ok || err != nil {
		t.Errorf("smaps detail line: ok %v err %v", ok, err)
	}
	for _, bad := range []string{"1000-2000 rw- 0 0:0 0", "1000-2000 rw-p zz 00:00 0", "1000-2000 rw-p 0 0:0 x"} {
		if _, _, err := ParseMapsLine(bad); !errors.Is(err, errBadMaps) {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}

// TestSelf reads this process's own files: they must agree with what the system calls say.
func TestSelf(t *testing.T) {
	pid := os.Getpid()
	st, err := ReadStat(Path(pid, "stat"))
	// The state is the thread group leader's, which may be asleep while another thread
	// runs this test: running or sleeping, never anything else here.
	if err != nil || st.Ppid != os.Getppid() || (st.State != 'R' && st.State != 'S') {
		t.Errorf("stat %+v, %v", st, err)
	}
	status, err := ReadStatus(Path(pid, "status"))
	if err != nil {
		t.Fatal(err)
	}
	if uids, err := status.Ints("Uid"); err != nil || len(uids) != 4 || uids[0] != uint32(os.Getuid()) {
		t.Errorf("Uid %v, %v", uids, err)
	}
	if _, err := status.Hex("SigBlk"); err != nil {
		t.Error(err)
	}
	if _, err := status.Hex("Name"); err == nil {
		t.Error("Name parsed as a hexadecimal number")
	}
	f, err := os.CreateTemp(t.TempDir(), "fdinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("0123456789"); err != nil {
		t.Fatal(err)
	}
	info, err := ReadFdinfo(pid, int(f.Fd()))
	if err != nil || info.Pos != 10 || info.Flags&syscall.O_ACCMODE != syscall.O_RDWR {
		t.Errorf("fdinfo %+v, %v", info, err)
	}
	fds, err := ListNumeric(Path(pid, "fd"))
	if err != nil || len(fds) < 4 {
		t.Errorf("fds %v, %v", fds, err)
	}
	maps, err := ReadSmaps(pid)
	if err != nil || len(maps) == 0 || maps[0].VMFlags == nil {
		t.Fatalf("smaps: %d mappings, %v", len(maps), err)
	}
	plain, err := ReadMaps(pid)
	if err != nil || len(plain) == 0 || plain[0].VMFlags != nil {
		t.Errorf("maps: %d mappings, %v", len(plain), err)
	}
}

// TestReadMappingsSmapsText: the detail lines of smaps, passed over without being parsed,
// leave the mappings and their VmFlags as the maps lines and VmFlags lines say.
func TestReadMappingsSmapsText(t *testing.T) {
	text := `55d0c0000000-55d0c0001000 r--p 00000000 fd:01 1234   /usr/bin/x
Size:                  4 kB
KernelPageSize:        4 kB
Rss:                   4 kB
Pss_Dirty:             0 kB
THPeligible:           0
VmFlags: rd mr mw me
7f0000000000-7f0000002000 rw-p 00000000 00:00 0 
Size:                  8 kB
Anonymous:             8 kB
Locked:                0 kB
VmFlags: rd wr mr mw me ac lo
`
	path := filepath.Join(t.TempDir(), "smaps")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readMappings(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{Start: 0x55d0c0000000, End: 0x55d0c0001000, Read: true, DevMajor: 0xfd, DevMinor: 1, Ino: 1234, Path: "/usr/bin/x", VMFlags: []string{"rd", "mr", "mw", "me"}},
		{Start: 0x7f0000000000, End: 0x7f0000002000, Read: true, Write: true, VMFlags: []string{"rd", "wr", "mr", "mw", "me", "ac", "lo"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

// TestReadLimits: /proc/PID/limits gives what prlimit64 gives, finite and unlimited, for
// every resource (a child whose limits are set to known values).
func TestReadLimits(t *testing.T) {
	cmd := exec.Command("sh", "-c", "ulimit -S -n 77; ulimit -S -s 12345; exec sleep 30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	for range 200 { // until sh has exec'd sleep
		if comm, _ := os.ReadFile(Path(pid, "comm")); string(comm) == "sleep\n" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, err := ReadLimits(pid)
	if err != nil {
		t.Fatal(err)
	}
	for res := range got {
		var rl unix.Rlimit
		if err := unix.Prlimit(pid, res, nil, &rl); err != nil {
			t.Fatal(err)
		}
		if got[res] != [2]uint64{rl.Cur, rl.Max} {
			t.Errorf("limit %d: %v, prlimit says %+v", res, got[res], rl)
		}
	}
	if got[unix.RLIMIT_NOFILE][0] != 77 || got[unix.RLIMIT_STACK][0] != 12345*1024 {
		t.Errorf("nofile %d, stack %d: the ulimits set were 77 and 12345 KiB", got[unix.RLIMIT_NOFILE][0], got[unix.RLIMIT_STACK][0])
	}
}

// TestReadMappingsAcrossReads: a file many times larger than one read, with its lines
// cut at every place by the reads, gives every mapping, path and flag; the last line
// may lack its newline.
func TestReadMappingsAcrossReads(t *testing.T) {
	var text strings.Builder
	const n = 5000
	for i := range n {
		fmt.Fprintf(&text, "%x-%x rw-p %08x 00:%02x %d   /a/file name %d\n", 0x10000+i*0x2000, 0x11000+i*0x2000, i, i%256, i, i%3)
		text.WriteString("Size:                  4 kB\nRss:                   4 kB\nLocked:                0 kB\n")
		fmt.Fprintf(&text, "VmFlags: rd wr mr mw me %s", []string{"ac", "lo", "zz"}[i%3])
		if i < n-1 {
			text.WriteString(" \n")
		}
	}
	if text.Len() < 2*mappingBuf {
		t.Fatalf("only %d bytes", text.Len())
	}
	path := filepath.Join(t.TempDir(), "smaps")
	if err := os.WriteFile(path, []byte(text.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readMappings(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d mappings, want %d", len(got), n)
	}
	for i, m := range got {
		want := Mapping{Start: uint64(0x10000 + i*0x2000), End: uint64(0x11000 + i*0x2000), Pgoff: uint64(i), Read: true, Write: true,
			DevMinor: uint32(i % 256), Ino: uint64(i), Path: fmt.Sprintf("/a/file name %d", i%3),
			VMFlags: []string{"rd", "wr", "mr", "mw", "me", []string{"ac", "lo", "zz"}[i%3]}}
		if !reflect.DeepEqual(m, want) {
			t.Fatalf("mapping %d: got %+v, want %+v", i, m, want)
		}
	}
}

// TestReadStatusKeys: the lines asked for, and only those, as ReadStatus reads them; a key
// the file lacks is absent, and no value shares memory with a buffer read again later.
func TestReadStatusKeys(t *testing.T) {
	path := Path(os.Getpid(), "status")
	all, err := ReadStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"Uid", "Groups", "SigPnd", "NoSuchLine", "Name"}
	got, err := ReadStatusKeys(path, keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Errorf("%d lines, want the 4 present of %v: %v", len(got), keys, got)
	}
	for _, k := range keys {
		if got[k] != all[k] {
			t.Errorf("%s: %q, ReadStatus says %q", k, got[k], all[k])
		}
	}
	uid := got["Uid"]
	for i := 0; i < 20; i++ { // the pooled buffer is reused by these reads
		if _, err := ReadStatusKeys(Path(os.Getpid(), "stat"), keys); err != nil {
			t.Fatal(err)
		}
	}
	if got["Uid"] != uid || got["Uid"] != all["Uid"] {
		t.Errorf("Uid became %q after other reads, was %q", got["Uid"], all["Uid"])
	}
}
