package restore

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
)

// The kitchen sink (testdata/kitchen.c) runs under these ids, with these capabilities
// raised in its ambient set, so that restore must bring back credentials other than its
// own.
const (
	sinkUID = 4321
	sinkGID = 4321
)

var (
	sinkGroups = []uint32{4322, 4323}
	sinkCaps   = []uintptr{unix.CAP_NET_BIND_SERVICE, unix.CAP_KILL}
)

// sinkLine is one self-report line of kitchen: its key=value fields.
type sinkLine map[string]string

// sinkLines parses the complete "ks ..." lines of a kitchen log.
func sinkLines(out string) []sinkLine {
	var ls []sinkLine
	for _, s := range strings.SplitAfter(out, "\n") {
		if !strings.HasPrefix(s, "ks ") || !strings.HasSuffix(s, "\n") {
			continue
		}
		l := sinkLine{}
		for _, f := range strings.Fields(s[3:]) {
			k, v, _ := strings.Cut(f, "=")
			l[k] = v
		}
		ls = append(ls, l)
	}
	return ls
}

func (l sinkLine) num(t *testing.T, key string) int64 {
	t.Helper()
	v, err := strconv.ParseInt(l[key], 0, 64)
	if err != nil {
		t.Fatalf("line %v: %s: %v", l, key, err)
	}
	return v
}

// byWho returns the first (or last) line of each process.
func byWho(ls []sinkLine, last bool) map[string]sinkLine {
	out := map[string]sinkLine{}
	for _, l := range ls {
		if _, ok := out[l["who"]]; !ok || last {
			out[l["who"]] = l
		}
	}
	return out
}

var sinkWhos = []string{"root", "child1", "child2", "child3", "grandch"}

// sinkStatic are the fields of a line that a restore must leave as they were.
var sinkStatic = []string{"pid", "ppid", "pgid", "sid", "uid", "gid", "groups", "umask", "cwd", "nofile",
	"pers", "comm", "nice", "pdeath", "blk", "dev", "q", "hup", "tids", "usr1", "onalt", "alt", "robust", "rseq"}

// TestRoundTripKitchenSink dumps testdata/kitchen.c's tree with imgtool's dump, restores
// it, and checks that every kind of state came back: what /proc shows of each process and
// thread, what the processes report themselves, and what they do next (counters, offsets,
// handlers on their alternate stacks, queued pipe and FIFO bytes, one shared offset).
func TestRoundTripKitchenSink(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/kitchen.c")
	dir := sinkDir(t)
	data := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz0123456789"), 1000)
	if err := os.WriteFile(filepath.Join(dir, "data.txt"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	p := testproc.Launch(t, bin, testproc.Options{
		Dir:         dir,
		Env:         append(slices.Clone(testproc.Env), "KS_ENV=kitchen-sink-environment"),
		Cred:        &syscall.Credential{Uid: sinkUID, Gid: sinkGID, Groups: sinkGroups},
		AmbientCaps: sinkCaps,
		Ready:       "who=grandch n=2 ",
	}, dir, "second-argument")
	log := p.Log
	lastRoot := func() sinkLine { return byWho(sinkLines(p.ReadLog(t)), true)["root"] }
	testproc.WaitFor(t, 5*time.Second, "every process and the queued pipe bytes", func() bool {
		last := byWho(sinkLines(p.ReadLog(t)), true)
		return len(last) == len(sinkWhos) && last["root"]["q"] == "16,16,13" && !strings.Contains(last["root"]["tids"], ",0")
	})
	tids := strings.Split(lastRoot()["tids"], ",")
	// A handler run in each thread, a signal pending for the process, one for thread 2.
	signalThreads(t, p.Pid, tids, unix.SIGUSR1)
	testproc.WaitFor(t, 5*time.Second, "SIGUSR1 handled on the alternate stacks", func() bool {
		l := lastRoot()
		return l["usr1"] == "1,1,1" && l["onalt"] == "1,1,1"
	})
	if err := unix.Kill(p.Pid, unix.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if err := unix.Tgkill(p.Pid, atoi(t, tids[2]), 40); err != nil {
		t.Fatal(err)
	}
	tree := testproc.Descendants(p.Pid)
	if len(tree) != len(sinkWhos) {
		t.Fatalf("tree %v, want %d processes", tree, len(sinkWhos))
	}
	before := procView(t, tree)
	if !strings.Contains(before[fmt.Sprintf("%d task %s ShdPnd", p.Pid, tids[0])], "800") {
		t.Fatalf("SIGUSR2 is not pending: %v", before)
	}

	set := dumpTo(t, p.Pid)
	beforeLines := sinkLines(testproc.LogAfter(t, log, 0))
	lastBefore := byWho(beforeLines, true)
	off := savedPos(t, set, log)
	pids := restoreSet(t, set, Options{})
	if !slices.Equal(pids, tree) {
		t.Errorf("restored pids %v, dumped %v", pids, tree)
	}
	after := procView(t, pids)
	for _, k := range sortedKeys(before) {
		if before[k] != after[k] {
			t.Errorf("%s: %q before the dump, %q after the restore", k, before[k], after[k])
		}
	}
	for _, k := range sortedKeys(after) {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: %q after the restore, nothing before", k, after[k])
		}
	}

	// Each process reports what it reported before, and carries on from there.
	var first map[string]sinkLine
	testproc.WaitFor(t, 5*time.Second, "a line of every restored process", func() bool {
		first = byWho(sinkLines(testproc.LogAfter(t, log, off)), false)
		return len(first) == len(sinkWhos)
	})
	for _, who := range sinkWhos {
		b, a := lastBefore[who], first[who]
		for _, k := range sinkStatic {
			if b[k] != a[k] {
				t.Errorf("%s: %s=%q before the dump, %q after the restore", who, k, b[k], a[k])
			}
		}
		if a.num(t, "n") != b.num(t, "n")+1 {
			t.Errorf("%s: tick %s after %s", who, a["n"], b["n"])
		}
	}
	r, rb := first["root"], lastBefore["root"]
	for key, step := range map[string]int64{"rpos": 4, "rwpos": 8, "brk": 4096} {
		if r.num(t, key) != rb.num(t, key)+step {
			t.Errorf("root: %s=%s after %s, want it %d further", key, r[key], rb[key], step)
		}
	}
	if want := r["uid"]; want != fmt.Sprintf("%d,%d,%d", sinkUID, sinkUID, sinkUID) || r["groups"] != "4322,4323" {
		t.Errorf("root runs as uid %s groups %s", want, r["groups"])
	}
	if !strings.HasPrefix(r["rseq"], "reg,reg,reg") {
		t.Errorf("rseq registrations: %s", r["rseq"])
	}

	// Handlers still fire, on each thread's alternate stack; the queued bytes arrive.
	signalThreads(t, p.Pid, tids, unix.SIGUSR1)
	testproc.WaitFor(t, 5*time.Second, "SIGUSR1 handled again on the alternate stacks", func() bool {
		l := byWho(sinkLines(testproc.LogAfter(t, log, off)), true)["root"]
		return l["usr1"] == "2,2,2" && l["onalt"] == "2,2,2"
	})
	if err := unix.Kill(p.Pid, unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	const drained = "drained pipe=ROOT-PIPE-QUEUED fifo=ROOT-FIFO-QUEUED c2p=CHILD1-QUEUED\n"
	testproc.WaitFor(t, 5*time.Second, "the queued bytes", func() bool {
		return strings.Contains(testproc.LogAfter(t, log, off), drained)
	})
	// Every thread keeps counting.
	testproc.WaitFor(t, 5*time.Second, "every thread counting on", func() bool {
		l := byWho(sinkLines(testproc.LogAfter(t, log, off)), true)["root"]
		a, b := strings.Split(r["cnt"], ","), strings.Split(l["cnt"], ",")
		for i := range a {
			if atoi(t, b[i]) <= atoi(t, a[i]) {
				return false
			}
		}
		return true
	})

	// What the processes wrote through their descriptions: nothing lost or overwritten.
	all := sinkLines(testproc.LogAfter(t, log, 0))
	for _, l := range all {
		if l["who"] == "root" {
			if pos := l.num(t, "rpos"); string(data[pos-4:pos]) != l["rdata"] {
				t.Errorf("root read %q before offset %d, the file holds %q", l["rdata"], pos, data[pos-4:pos])
			}
		}
	}
	checkRecords(t, filepath.Join(dir, "work.dir", "rw.dat"), 8, `^()(\d{7})\n$`)
	checkRecords(t, filepath.Join(dir, "work.dir", "shared.dat"), 16, `^(\w+) *(\d{7})\n$`)
}

// sinkDir makes a working directory the kitchen sink's uid can write in.
func sinkDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "imgtool-kitchen-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, sinkUID, sinkGID); err != nil {
		t.Fatal(err)
	}
	return dir
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func signalThreads(t *testing.T, pid int, tids []string, sig unix.Signal) {
	t.Helper()
	for _, tid := range tids {
		if err := unix.Tgkill(pid, atoi(t, tid), sig); err != nil {
			t.Fatal(err)
		}
	}
}

// checkRecords checks a file of fixed-size records, each naming its writer and its tick:
// each writer's ticks must run 1, 2, 3, ... with none lost or overwritten.
func checkRecords(t *testing.T, name string, size int, pattern string) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%size != 0 || len(b) == 0 {
		t.Fatalf("%s: %d bytes, not records of %d", name, len(b), size)
	}
	re := regexp.MustCompile(pattern)
	next := map[string]int{}
	for i := 0; i < len(b); i += size {
		m := re.FindSubmatch(b[i : i+size])
		if m == nil {
			t.Fatalf("%s: record at %d is %q", name, i, b[i:i+size])
		}
		who, n := string(m[1]), atoi(t, string(m[2]))
		if n != next[who]+1 {
			t.Fatalf("%s: record at %d is %q, after tick %d of %q", name, i, b[i:i+size], next[who], who)
		}
		next[who] = n
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// statusKeys are the lines of /proc/PID/task/TID/status a restore must bring back.
var statusKeys = []string{"Name", "Umask", "Tgid", "NSpgid", "NSsid", "PPid", "SigPnd", "ShdPnd", "SigBlk", "SigIgn",
	"SigCgt", "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"}

// procView returns what /proc shows of each process and thread that a restore must bring
// back, by "PID what" (pipe inode numbers left out: they are new).
func procView(t *testing.T, pids []int) map[string]string {
	t.Helper()
	v := map[string]string{}
	pipeIno := regexp.MustCompile(`^pipe:\[\d+\]$`)
	type fdRef struct{ pid, fd int }
	var fds []fdRef
	for _, pid := range pids {
		key := func(what string) string { return fmt.Sprintf("%d %s", pid, what) }
		for _, f := range []string{"limits", "personality", "cmdline", "environ"} {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			if err != nil {
				t.Fatal(err)
			}
			v[key(f)] = string(b)
		}
		for _, l := range []string{"cwd", "exe", "root"} {
			s, err := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, l))
			if err != nil {
				t.Fatal(err)
			}
			v[key(l)] = s
		}
		maps, err := procfs.ReadMaps(pid)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range maps {
			if m.Path == "[heap]" {
				v[key("heap start")] = fmt.Sprintf("%#x", m.Start)
			}
		}
		tasks, err := procfs.ListNumeric(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			t.Fatal(err)
		}
		v[key("tasks")] = fmt.Sprint(tasks)
		for _, tid := range tasks {
			st, err := procfs.ReadStatus(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range statusKeys {
				v[key(fmt.Sprintf("task %d %s", tid, k))] = st[k]
			}
			s, err := procfs.ReadStat(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
			if err != nil {
				t.Fatal(err)
			}
			v[key(fmt.Sprintf("task %d nice", tid))] = strconv.Itoa(s.Nice)
		}
		nums, err := procfs.ListNumeric(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, fd := range nums {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
			if err != nil {
				t.Fatal(err)
			}
			info, err := procfs.ReadFdinfo(pid, fd)
			if err != nil {
				t.Fatal(err)
			}
			v[key(fmt.Sprintf("fd %d", fd))] = fmt.Sprintf("%s flags %#o", pipeIno.ReplaceAllString(link, "pipe:"), info.Flags)
			fds = append(fds, fdRef{pid, fd})
		}
	}
	// Which fds share one open file description: each fd names the first of its kind.
	for i, a := range fds {
		for _, b := range fds[:i+1] {
			if kcmpFile(a.pid, b.pid, a.fd, b.fd) {
				v[fmt.Sprintf("%d fd %d description", a.pid, a.fd)] = fmt.Sprintf("that of %d fd %d", b.pid, b.fd)
				break
			}
		}
	}
	return v
}

// kcmpFile tells whether fd1 of pid1 and fd2 of pid2 are one open file description.
func kcmpFile(pid1, pid2, fd1, fd2 int) bool {
	const kcmpFile = 0
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	return e == 0 && r == 0
}
