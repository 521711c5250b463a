// Package realworld dumps and restores real programs nobody here wrote (runtimes,
// interpreters, build tools, a database library) with the real imgtool binary: each is
// dumped while running, restored with the same PIDs, and must carry on from the saved
// point with no gap and no repeat in what it writes; or, for what imgtool cannot bring
// back exactly, the dump must be refused before the program is touched, naming why, and
// the program must run on unharmed. A program missing from the machine skips its test,
// saying so. `make realworld` runs these alone; `make test` runs them too.
package realworld

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
)

// TestMain makes the test binary the restored programs' subreaper (PID 1 here does not
// reap orphans).
func TestMain(m *testing.M) { os.Exit(testproc.Main(m)) }

// need returns the path of program, or skips the test.
func need(t *testing.T, program string) string {
	t.Helper()
	testproc.RequireRoot(t)
	p, err := exec.LookPath(program)
	if err != nil {
		t.Skipf("%s is not installed: this real program is not tried", program)
	}
	return p
}

// imgtool runs the real binary; it fails the test unless the command exits 0.
func imgtool(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(testproc.BuildImgtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("imgtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkpoint dumps the tree of p (killing it) and restores it, detached, both with the
// options opts; the restored tree is killed when the test ends.
func checkpoint(t *testing.T, p *testproc.Proc, opts ...string) {
	t.Helper()
	set := filepath.Join(t.TempDir(), "set")
	dumpArgs := append([]string{"dump", "-t", strconv.Itoa(p.Pid), "-D", set, "-q"}, opts...)
	// Data in flight between two processes of the tree (a datagram on its way to be
	// echoed) is refused, as it would be lost: a user tries again a moment later.
	for try := 1; ; try++ {
		out, err := exec.Command(testproc.BuildImgtool(t), dumpArgs...).CombinedOutput()
		if err == nil {
			break
		}
		if try == 5 || !strings.Contains(string(out), "queued") {
			t.Fatalf("imgtool %s: %v\n%s", strings.Join(dumpArgs, " "), err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	pids := setPids(t, set) // the tree as dumped: children come and go before that
	testproc.WaitGone(t, pids)
	t.Cleanup(func() { testproc.KillAndReap(pids) })
	imgtool(t, append([]string{"restore", "-D", set, "-d", "-q"}, opts...)...)
	// restore -d succeeds only once every process exists and runs; a short-lived one (a
	// make recipe's sleep) may be gone again already, the root may not.
	if !testproc.Exists(pids[0]) {
		t.Errorf("the root %d of the tree is gone after the restore", pids[0])
	}
}

// setPids lists the processes of a set (imgtool x SET ps --json).
func setPids(t *testing.T, set string) []int {
	t.Helper()
	var ps struct {
		Processes []struct {
			Pid int `json:"pid"`
		} `json:"processes"`
	}
	if err := json.Unmarshal([]byte(imgtool(t, "x", set, "ps", "--json")), &ps); err != nil {
		t.Fatal(err)
	}
	pids := make([]int, len(ps.Processes))
	for i, p := range ps.Processes {
		pids[i] = p.Pid
	}
	return pids
}

// ticks returns the numbers of the complete "tick N" lines of a log, in order (the last
// line may be half written: an unbuffered print writes its parts one by one).
func ticks(t *testing.T, log string) []int {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	lines := strings.Split(string(b), "\n")
	for _, l := range lines[:len(lines)-1] { // the text after the last newline is not a line yet
		if rest, ok := strings.CutPrefix(l, "tick "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(rest))
			if err != nil {
				t.Fatalf("log line %q", l)
			}
			out = append(out, n)
		}
	}
	return out
}

// carriesOn dumps and restores a program that prints "tick N" lines with N counting up,
// and checks that it goes on after the restore from where it was, with no gap and no
// repeat. opts are added to the dump and restore command lines (checkpoint).
func carriesOn(t *testing.T, p *testproc.Proc, opts ...string) {
	t.Helper()
	testproc.WaitFor(t, 10*time.Second, "a few ticks", func() bool { return len(ticks(t, p.Log)) >= 3 })
	checkpoint(t, p, opts...)
	before := len(ticks(t, p.Log))
	testproc.WaitFor(t, 10*time.Second, "ticks after the restore", func() bool { return len(ticks(t, p.Log)) >= before+3 })
	for i, n := range ticks(t, p.Log) {
		if n != i {
			t.Fatalf("tick %d where %d was due: a gap or a repeat across the restore (log %s)", n, i, p.Log)
		}
	}
}

// refused checks that imgtool refuses to dump the running tree of p with a message
// holding want, and that the tree runs on untouched (no thread stopped or traced).
func refused(t *testing.T, p *testproc.Proc, want string) {
	t.Helper()
	set := filepath.Join(t.TempDir(), "set")
	out, err := exec.Command(testproc.BuildImgtool(t), "dump", "-t", strconv.Itoa(p.Pid), "-D", set, "-q").CombinedOutput()
	if err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("dump: %v %q, want a refusal saying %q", err, out, want)
	}
	if _, err := os.Stat(set); err == nil {
		t.Error("a refused dump left a set")
	}
	for _, pid := range testproc.Descendants(p.Pid) {
		st, err := procfs.ReadStatus(procfs.Path(pid, "status"))
		if err != nil {
			t.Fatal(err)
		}
		if st["TracerPid"] != "0" || strings.HasPrefix(st["State"], "T") {
			t.Errorf("pid %d left %s, traced by %s", pid, st["State"], st["TracerPid"])
		}
	}
}

// TestNode: Node 20 (libuv: epoll, eventfds, pipes, a thread pool) with setInterval.
func TestNode(t *testing.T) {
	node := need(t, "node")
	p := testproc.Launch(t, node, testproc.Options{Ready: "tick 0"},
		"-e", `let i = 0; setInterval(() => console.log("tick " + i++), 20)`)
	carriesOn(t, p)
	b, _ := os.ReadFile(p.Log)
	t.Logf("%q", b)
}

// TestPythonLoop: CPython 3 with a plain loop and a thread.
func TestPythonLoop(t *testing.T) {
	python := need(t, "python3")
	p := testproc.Launch(t, python, testproc.Options{Ready: "tick 0"}, "-u", "-c", `
import threading, time
threading.Thread(target=lambda: time.sleep(3600), daemon=True).start()
i = 0
while True:
    print("tick", i); i += 1
    time.sleep(0.02)
`)
	carriesOn(t, p)
	b, _ := os.ReadFile(p.Log)
	t.Logf("%q", b)
}

// TestMakeJobs: GNU make -j2 running shell recipes that come and go (children that exit
// and fork while the tree is checked and stopped); every target is built exactly once.
func TestMakeJobs(t *testing.T) {
	mk := need(t, "make")
	dir := t.TempDir()
	var rules strings.Builder
	var all []string
	for i := 0; i < 40; i++ {
		all = append(all, fmt.Sprintf("t%02d", i))
		fmt.Fprintf(&rules, "t%02d:\n\t@sleep 0.05; echo built t%02d >> built.log; touch $@\n", i, i)
	}
	mf := "all: " + strings.Join(all, " ") + "\n\t@echo all done >> built.log\n" + rules.String()
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testproc.Launch(t, mk, testproc.Options{Dir: dir, Ready: "make"}, "-j2", "-C", dir)
	built := filepath.Join(dir, "built.log")
	testproc.WaitFor(t, 20*time.Second, "some targets built", func() bool {
		b, _ := os.ReadFile(built)
		return strings.Count(string(b), "built") >= 6
	})
	checkpoint(t, p)
	testproc.WaitFor(t, 30*time.Second, "the build to finish", func() bool {
		b, _ := os.ReadFile(built)
		return strings.Contains(string(b), "all done")
	})
	b, _ := os.ReadFile(built)
	for _, target := range all {
		if n := strings.Count(string(b), "built "+target+"\n"); n != 1 {
			t.Errorf("%s built %d times:\n%s", target, n, b)
		}
	}
}

// sqliteWriter is a SQLite writer caught inside a transaction, holding its POSIX locks on
// the database: it prints "locked", waits for the file "go", then writes a second row,
// commits and prints the row count and the integrity check.
const sqliteWriter = `
import os, sqlite3, time
db = sqlite3.connect("{dir}/db.sqlite", isolation_level=None)
db.execute("CREATE TABLE IF NOT EXISTS t (x)")
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO t VALUES (1)")
print("locked")
while not os.path.exists("{dir}/go"):
    time.sleep(0.05)
db.execute("INSERT INTO t VALUES (2)")
db.execute("COMMIT")
print("committed", db.execute("SELECT count(*) FROM t").fetchone()[0])
print("integrity", db.execute("PRAGMA integrity_check").fetchone()[0])
while True:
    time.sleep(0.05)
`

// TestSQLiteWriterRefused: a SQLite writer inside a transaction holds POSIX locks on
// its database. Dumped without them, the restored writer would commit over another
// writer's rows (SQLite reports "disk I/O error" and a row is lost): without --file-locks
// the dump is refused, naming the lock, and the writer carries on.
func TestSQLiteWriterRefused(t *testing.T) {
	python := need(t, "python3")
	p := testproc.Launch(t, python, testproc.Options{Ready: "locked"}, "-u", "-c", sqliteWriter)
	refused(t, p, "POSIX WRITE")
	refused(t, p, "only dumped with --file-locks")
}

// TestSQLiteWriterFileLocks: the same writer dumped and restored with --file-locks holds
// its locks again: an outside writer gets "database is locked", the restored writer
// commits its transaction, and the database is whole, the outside row added after.
func TestSQLiteWriterFileLocks(t *testing.T) {
	python := need(t, "python3")
	p := testproc.Launch(t, python, testproc.Options{Ready: "locked"}, "-u", "-c", sqliteWriter)
	checkpoint(t, p, "--file-locks")
	outside := func() string {
		out, _ := exec.Command(python, "-c", `
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
try:
    db.execute("INSERT INTO t VALUES (3)")
    print("inserted", db.execute("SELECT count(*) FROM t").fetchone()[0], db.execute("PRAGMA integrity_check").fetchone()[0])
except sqlite3.OperationalError as e:
    print(e)
`, filepath.Join(p.Dir, "db.sqlite")).CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	if got := outside(); got != "database is locked" {
		t.Fatalf("an outside writer after the restore: %q, want \"database is locked\"", got)
	}
	if err := os.WriteFile(filepath.Join(p.Dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p.WaitLog(t, "integrity ", 10*time.Second)
	if log := p.ReadLog(t); !strings.Contains(log, "committed 2\nintegrity ok\n") {
		t.Fatalf("the restored writer: %q", log)
	}
	if got := outside(); got != "inserted 3 ok" {
		t.Fatalf("an outside writer once the restored one committed: %q", got)
	}
}

// TestMultiprocessing: Python's multiprocessing.Pool, two worker processes fed through
// pipes and locked with POSIX semaphores whose /dev/shm files are already deleted (ghost
// files, mapped shared by every process of the tree; the workers share pages copy-on-write
// with the parent and with each other, which the restore shares again) is dumped and
// restored and goes on mapping, tick after tick. The tick count is a multiprocessing.Value:
// shared memory in a file tempfile.mkstemp made (opened O_NOFOLLOW) and deleted. No
// semaphore file is left in /dev/shm.
func TestMultiprocessing(t *testing.T) {
	python := need(t, "python3")
	p := testproc.Launch(t, python, testproc.Options{Ready: "tick 0"}, "-u", "-c", `
import multiprocessing, time
if __name__ == "__main__":
    pool = multiprocessing.Pool(2)
    i = multiprocessing.Value("i", 0)
    while True:
        if pool.map(abs, range(-4, 0)) == [4, 3, 2, 1]:
            print("tick", i.value); i.value += 1
        time.sleep(0.05)
`)
	// Python's semaphores only ("sem.mp-..."): other tests and programs use /dev/shm too.
	shm := func() string {
		ents, _ := os.ReadDir("/dev/shm")
		var out []string
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "sem.mp-") {
				out = append(out, e.Name())
			}
		}
		return strings.Join(out, " ")
	}
	before := shm()
	carriesOn(t, p)
	if after := shm(); after != before {
		t.Errorf("/dev/shm held %q before, %q after the restore", before, after)
	}
}

// TestZombieChild: a process with a child that exited with status 3 and was never reaped
// is dumped with its zombie and restored with it; the parent, told to reap it after the
// restore, gets status 3.
func TestZombieChild(t *testing.T) {
	python := need(t, "python3")
	p := testproc.Launch(t, python, testproc.Options{Ready: "zombie"}, "-u", "-c", `
import os, signal, time
pid = os.fork()
if pid == 0:
    os._exit(3)
def reap(*_):
    got, st = os.waitpid(pid, os.WNOHANG)
    print("reaped", os.WEXITSTATUS(st) if got == pid and os.WIFEXITED(st) else "nothing %d %#x" % (got, st))
signal.signal(signal.SIGUSR1, reap)
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
print("zombie")
while True:
    time.sleep(3600)
`)
	checkpoint(t, p)
	var out string
	last := time.Time{}
	testproc.WaitFor(t, 10*time.Second, "the parent to reap its zombie", func() bool {
		// Asked again each second: CPython runs handlers between bytecodes of its main
		// thread, and a loaded machine may keep it from getting there for a while.
		if time.Since(last) > time.Second {
			if err := syscall.Kill(p.Pid, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			last = time.Now()
		}
		b, _ := os.ReadFile(p.Log)
		out = string(b)
		return strings.Contains(out, "reaped ")
	})
	if !strings.Contains(out, "reaped 3\n") {
		t.Fatalf("after the restore: %s", out)
	}
}

// TestHTTPServer: CPython's http.server listening at 127.0.0.1 (a TCP listener, selectors,
// a thread per request) answers a GET, is dumped and restored, and answers a GET again
// from the restored listener.
func TestHTTPServer(t *testing.T) {
	python := need(t, "python3")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	p := testproc.Launch(t, python, testproc.Options{Ready: "Serving HTTP"},
		"-u", "-m", "http.server", "--bind", "127.0.0.1", strconv.Itoa(port))
	if err := os.WriteFile(filepath.Join(p.Dir, "hello.txt"), []byte("hello from before the dump\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/hello.txt", port)
	get := func() {
		t.Helper()
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || string(b) != "hello from before the dump\n" {
			t.Fatalf("GET %s: %s %q %v", url, resp.Status, b, err)
		}
	}
	get()
	// The request's thread and connection gone (the connection's end in TIME_WAIT is no
	// fd), the server waits in its listener alone.
	testproc.WaitFor(t, 5*time.Second, "the request's thread to end", func() bool {
		ts, err := os.ReadDir(procfs.Path(p.Pid, "task"))
		return err == nil && len(ts) == 1
	})
	checkpoint(t, p)
	get()
}

// TestGoTicker: a Go program (its runtime: threads, epoll, an eventfd or pipe, signals)
// whose goroutines count through a channel fed by a time.Ticker.
func TestGoTicker(t *testing.T) {
	src := `package main

import (
	"fmt"
	"time"
)

func main() {
	ticks := make(chan int)
	for w := 0; w < 4; w++ {
		go func() {
			for n := range ticks {
				fmt.Println("tick", n)
			}
		}()
	}
	tk := time.NewTicker(20 * time.Millisecond)
	for n := 0; ; n++ {
		<-tk.C
		ticks <- n
		time.Sleep(time.Millisecond) // one line at a time: the workers print in order
	}
}
`
	p := testproc.Launch(t, buildGo(t, src), testproc.Options{Ready: "tick 0"})
	carriesOn(t, p)
}

// buildGo builds the Go program src (one file, no module), or skips the test.
func buildGo(t *testing.T, src string) string {
	t.Helper()
	goBin := need(t, "go")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "prog")
	cmd := exec.Command(goBin, "build", "-o", bin, "main.go")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "GO111MODULE=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("go build failed: %v %s", err, out)
	}
	return bin
}

// TestGoChild: a Go program with a child it started with os/exec, which Go (1.23 and
// later) keeps a pidfd of, ticks on; after the restore it kills the child and waits for
// it, through that pidfd, on SIGUSR1.
func TestGoChild(t *testing.T) {
	src := `package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	child := exec.Command("sleep", "1000")
	if err := child.Start(); err != nil {
		fmt.Println("start:", err)
		os.Exit(1)
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	tk := time.NewTicker(20 * time.Millisecond)
	for n := 0; ; n++ {
		select {
		case <-tk.C:
			fmt.Println("tick", n)
		case <-usr1:
			child.Process.Kill()
			fmt.Println("waited:", child.Wait())
		}
	}
}
`
	need(t, "sleep")
	p := testproc.Launch(t, buildGo(t, src), testproc.Options{Ready: "tick 0"})
	carriesOn(t, p)
	pids := testproc.Descendants(p.Pid)
	if len(pids) != 2 {
		t.Fatalf("the restored tree is %v, want the program and its child", pids)
	}
	if err := unix.Kill(p.Pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	testproc.WaitFor(t, 10*time.Second, "the child waited for", func() bool {
		return strings.Contains(p.ReadLog(t), "waited: signal: killed")
	})
	if testproc.Exists(pids[1]) {
		t.Errorf("the child %d is still there", pids[1])
	}
}

// TestPythonAsyncio: asyncio's event loop (epoll and its self-pipe socketpair), a task
// passing each count through a socketpair with bytes queued both ways, and one that
// echoes them back.
func TestPythonAsyncio(t *testing.T) {
	python := need(t, "python3")
	p := testproc.Launch(t, python, testproc.Options{Ready: "tick 0"}, "-u", "-c", `
import asyncio, socket
async def main():
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    wb.write(b"queued-b\n"); wa.write(b"queued-a\n")   # one line queued each way, always
    await wa.drain(); await wb.drain()
    async def echo():
        while True:
            wb.write(await rb.readline()); await wb.drain()
    asyncio.ensure_future(echo())
    assert await ra.readline() == b"queued-b\n"
    i = 0
    while True:
        wa.write(b"%d\n" % i); await wa.drain()
        line = await ra.readline()
        if line == b"queued-a\n":
            line = await ra.readline()
        print("tick", int(line)); i += 1
        await asyncio.sleep(0.02)
asyncio.run(main())
`)
	carriesOn(t, p)
}

// TestUDPEchoPair: two processes counting through UDP on loopback, each socket bound and
// connected to the other's.
func TestUDPEchoPair(t *testing.T) {
	python := need(t, "python3")
	p := testproc.Launch(t, python, testproc.Options{Ready: "tick 0"}, "-u", "-c", `
import os, socket, time
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 0))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("127.0.0.1", 0))
a.connect(b.getsockname()); b.connect(a.getsockname())
if os.fork() == 0:
    a.close()
    while True:
        b.send(b.recv(64))
b.close()
i = 0
while True:
    a.send(b"%d" % i)
    print("tick", int(a.recv(64))); i += 1
    time.sleep(0.02)
`)
	carriesOn(t, p)
}

// TestTmux: a tmux server (its pane a shell on a pty whose master the server holds, the
// shell's session on it; the server's listening socket) is dumped and restored with its
// pane: tmux's own client then types into the restored shell (send-keys) and reads the
// screen (capture-pane), which still holds what was printed before the dump.
func TestTmux(t *testing.T) {
	tmux := need(t, "tmux")
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(tmux, append([]string{"-S", sock, "-f", "/dev/null"}, args...)...)
		cmd.Env = append(testproc.Env, "TERM=xterm", "SHELL=/bin/sh")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %s: %v %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("new-session", "-d", "-s", "rw", "-x", "100", "-y", "30", "/bin/sh")
	server, err := strconv.Atoi(strings.TrimSpace(run("display-message", "-p", "#{pid}")))
	if err != nil {
		t.Fatal(err)
	}
	pids := testproc.Descendants(server)
	t.Cleanup(func() { testproc.KillAndReap(testproc.Descendants(server)) })
	screen := func(want string) string {
		t.Helper()
		var out string
		testproc.WaitFor(t, 10*time.Second, "the pane to show "+want, func() bool {
			out = run("capture-pane", "-p", "-t", "rw")
			return strings.Contains(out, want)
		})
		return out
	}
	run("send-keys", "-t", "rw", "echo before-$((6*7))", "Enter")
	screen("before-42")
	// Once the clients' connections are gone the server waits; until then (a connection
	// whose client has exited) the dump refuses it, untouched: try again.
	set := filepath.Join(t.TempDir(), "set")
	for i := 0; ; i++ {
		time.Sleep(100 * time.Millisecond)
		out, err := exec.Command(testproc.BuildImgtool(t), "dump", "-t", strconv.Itoa(server), "-D", set, "-q").CombinedOutput()
		if err == nil {
			break
		}
		if i == 20 || !strings.Contains(string(out), "cannot dump") {
			t.Fatalf("imgtool dump: %v %s", err, out)
		}
	}
	// The tree as dumped: the pane's shell may have started after pids was read.
	pids = setPids(t, set)
	testproc.WaitGone(t, pids)
	imgtool(t, "restore", "-D", set, "-d", "-q")
	run("send-keys", "-t", "rw", "echo after-$((6*9)) $$", "Enter")
	out := screen("after-54")
	if !strings.Contains(out, "before-42") {
		t.Errorf("the screen lost what was printed before the dump:\n%s", out)
	}
	shell := pids[len(pids)-1]
	if !strings.Contains(out, fmt.Sprintf("after-54 %d", shell)) {
		t.Errorf("the answer came from another shell than %d:\n%s", shell, out)
	}
	st, err := procfs.ReadStat(procfs.Path(shell, "stat"))
	if err != nil || st.Sid == server || st.TTYNr == 0 || st.Tpgid != st.Pgid {
		t.Errorf("restored shell: %+v %v, want a session of its pane, on its pty, in the foreground", st, err)
	}
}

// TestScript: script(1) (util-linux) recording a Python loop: script holds the pty's
// master, waits in poll and copies what the loop prints to its log; the loop leads a
// session on the slave. Dumped and restored, the ticks go on through the restored pty
// with no gap.
func TestScript(t *testing.T) {
	script := need(t, "script")
	python := need(t, "python3")
	loop := filepath.Join(t.TempDir(), "loop.py")
	if err := os.WriteFile(loop, []byte("import time\nfor i in range(10**9):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.05)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testproc.Launch(t, script, testproc.Options{Ready: "tick 1"}, "-qfc", python+" "+loop, "/dev/null")
	carriesOn(t, p)
}

// noFail fails the test if the log of p says FAIL.
func noFail(t *testing.T, p *testproc.Proc) {
	t.Helper()
	if log := p.ReadLog(t); strings.Contains(log, "FAIL") {
		t.Fatalf("the program says: %s", log[strings.Index(log, "FAIL"):])
	}
}

// TestPythonTCPCounter: two CPython processes, a parent and the child it forked, joined by
// an established loopback TCP connection (the parent's listener still open), each sending
// its own counter as fast as the other reads it (lines padded to 1 KiB: the queues are full
// both ways) with how many of the other's it received, each checking that what it receives
// counts up; the parent prints "tick N" for the child's N, and FAIL should the child stop
// receiving. Dumped and restored with --tcp-established, both carry on from where they
// were, nothing lost or repeated either way; without the flag the dump is refused.
func TestPythonTCPCounter(t *testing.T) {
	python := need(t, "python3")
	p := testproc.Launch(t, python, testproc.Options{Ready: "tick 0"}, "-u", "-c", `
import os, select, socket, sys, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 0))
l.listen(1)
child = os.fork() == 0
if child:
    s = socket.create_connection(l.getsockname())
else:
    s, _ = l.accept()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
s.setblocking(False)
out, buf, mine, theirs, seen = b"", b"", 0, 0, 0
while True:
    if len(out) < 4096:
        out += b"%d %d %s\n" % (mine, theirs, b"x" * 1000)
        mine += 1
    try:
        out = out[s.send(out):]
    except BlockingIOError:
        pass
    try:
        got = s.recv(512)
    except BlockingIOError:
        got = None
    if got == b"":
        print("FAIL: the connection was closed", flush=True)
        sys.exit(1)
    buf += got or b""
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        n, got_mine = map(int, line.split()[:2])
        if n != theirs:
            print("FAIL: %s got %d where %d was due" % ("child" if child else "parent", n, theirs), flush=True)
            sys.exit(1)
        theirs += 1
        if not child:
            if n % 50 == 0:
                if n and got_mine <= seen:
                    print("FAIL: the child received nothing in 50 lines", flush=True)
                seen = got_mine
            print("tick %d" % n, flush=True)
    time.sleep(0.01)
`)
	refused(t, p, "connected TCP sockets are saved only with --tcp-established")
	carriesOn(t, p, "--tcp-established")
	before := len(ticks(t, p.Log))
	testproc.WaitFor(t, 20*time.Second, "100 more ticks", func() bool { return len(ticks(t, p.Log)) >= before+100 })
	noFail(t, p)
}

// TestHTTPKeepAlive: CPython's http.server (HTTP/1.1: one connection kept alive) in a
// child process, and its parent an http.client asking it for a count every 20 ms over the
// same connection, printing "tick N" for the server's N and checking that the connection
// (its local port, which the server echoes) never changes. Dumped and restored with
// --tcp-established, the client goes on asking on the same connection and the server on
// counting.
func TestHTTPKeepAlive(t *testing.T) {
	python := need(t, "python3")
	p := testproc.Launch(t, python, testproc.Options{Ready: "tick 0"}, "-u", "-c", `
import http.client, http.server, os, time
class Count(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    n = 0
    def do_GET(self):
        body = b"%d %d\n" % (Count.n, self.client_address[1])
        Count.n += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), Count)
if os.fork() == 0:
    srv.serve_forever()
srv.socket.close()
c = http.client.HTTPConnection("127.0.0.1", srv.server_address[1])
port = None
while True:
    c.request("GET", "/count")
    n, client = map(int, c.getresponse().read().split())
    if port is None:
        port = client
    if client != port:
        print("FAIL: a new connection from port %d (was %d)" % (client, port), flush=True)
    print("tick %d" % n, flush=True)
    time.sleep(0.02)
`)
	carriesOn(t, p, "--tcp-established")
	noFail(t, p)
}

// TestPythonSysLog: CPython's logging.handlers.SysLogHandler logging "tick N" to a UNIX
// datagram socket of the test (as to /dev/log: a peer outside the tree), and printing it.
// The dump is refused without --ext-unix-sk; with it (dump and restore) the handler's own
// socket is connected to the test's again: the test receives every tick, none missing or
// repeated across the restore, through the same socket (the handler would reconnect with
// a new one should a send fail: the restored socket's inode must stay).
func TestPythonSysLog(t *testing.T) {
	python := need(t, "python3")
	addr := filepath.Join(t.TempDir(), "log.sock")
	logd, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer logd.Close()
	got := make(chan string, 1<<16)
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := logd.Read(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	p := testproc.Launch(t, python, testproc.Options{Ready: "tick 0"}, "-u", "-c", `
import logging, logging.handlers, sys, time
log = logging.getLogger("ticker")
log.addHandler(logging.handlers.SysLogHandler(address=sys.argv[1]))
log.setLevel(logging.INFO)
i = 0
while True:
    log.info("tick %d", i)
    print("tick", i, flush=True); i += 1
    time.sleep(0.02)
`, addr)
	refused(t, p, "refused without --ext-unix-sk")
	carriesOn(t, p, "--ext-unix-sk")
	sock := socketOf(t, p.Pid)
	before := len(ticks(t, p.Log))
	testproc.WaitFor(t, 20*time.Second, "50 more ticks", func() bool { return len(ticks(t, p.Log)) >= before+50 })
	if now := socketOf(t, p.Pid); now != sock {
		t.Fatalf("the handler's socket changed from %s to %s after the restore: it reconnected", sock, now)
	}
	last := ticks(t, p.Log)
	for want := 0; want <= last[len(last)-1]; want++ {
		var msg string
		select {
		case msg = <-got:
		case <-time.After(10 * time.Second):
			t.Fatalf("tick %d never reached the test's socket", want)
		}
		// SysLogHandler sends "<PRIORITY>MESSAGE\0": <14> is user.info.
		if msg != fmt.Sprintf("<14>tick %d\x00", want) {
			t.Fatalf("the test's socket got %q where tick %d was due: a gap or a repeat across the restore", msg, want)
		}
	}
	noFail(t, p)
}

// socketOf returns the one socket among the fds of pid ("socket:[INO]").
func socketOf(t *testing.T, pid int) string {
	t.Helper()
	var found []string
	ents, err := os.ReadDir(procfs.Path(pid, "fd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if l, err := os.Readlink(procfs.Path(pid, "fd", e.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		t.Fatalf("process %d has sockets %v, want one", pid, found)
	}
	return found[0]
}
