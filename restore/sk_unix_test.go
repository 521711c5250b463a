package restore

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/imgtool/imgtool/internal/testproc"
)

// TestRoundTripUnixSockets dumps and restores testdata/unixsk.c once per state and lets it
// check itself: a stream socketpair carrying a counter both ways with bytes queued in each
// direction, its options and a shut-down pair; dgram and seqpacket pairs with queued
// datagrams; a listening socket at a path (mode kept) and at an abstract name, each
// accepting a new client; a client and its accepted socket in two processes.
func TestRoundTripUnixSockets(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/unixsk.c")
	for _, mode := range []string{"stream", "dgram", "listen", "abstract", "conn"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{mode}
			if mode == "listen" {
				args = append(args, filepath.Join(t.TempDir(), "unixsk.sock"))
			}
			p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, args...)
			if mode == "conn" {
				testproc.WaitFor(t, 5*time.Second, "the child", func() bool { return len(testproc.Descendants(p.Pid)) == 2 })
			}
			time.Sleep(20 * time.Millisecond) // let the counters run
			dir := dumpTo(t, p.Pid)
			socks, queued := 0, 0
			for _, fe := range readFiles(t, dir) {
				if fe.GetType() == fdinfo.FdTypes_UNIXSK {
					socks++
				}
			}
			if b, err := os.ReadFile(filepath.Join(dir, "sk-queues.img")); err == nil {
				queued = len(b)
			}
			if socks == 0 || (mode != "listen" && mode != "abstract" && queued == 0) {
				t.Fatalf("%d UNIX sockets and %d bytes of sk-queues.img in the set", socks, queued)
			}
			off := savedPos(t, dir, p.Log)
			pids := restoreSet(t, dir, Options{})
			checkSelf(t, pids[0], p.Log, off)
		})
	}
}

// TestCRIUInteropUnixSockets: testdata/unixsk.c's stream, dgram and listening states,
// dumped by one tool and restored by the other, check themselves. CRIU 4.2's dump refuses
// a queue read with SO_PASSCRED on (the credentials come as control messages): the stream
// state CRIU dumps leaves it off.
func TestCRIUInteropUnixSockets(t *testing.T) {
	criu := criuBin(t)
	bin := testproc.Build(t, "testdata/unixsk.c")
	for _, mode := range []string{"stream", "dgram", "listen"} {
		for _, way := range []string{"imgtool dump, CRIU restore", "CRIU dump, imgtool restore"} {
			t.Run(mode+"/"+way, func(t *testing.T) {
				byCRIU := strings.HasPrefix(way, "CRIU")
				args := []string{mode}
				if mode == "listen" {
					args = append(args, filepath.Join(t.TempDir(), "unixsk.sock"))
				}
				if mode == "stream" && byCRIU {
					args = append(args, "nocred")
				}
				p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, args...)
				time.Sleep(20 * time.Millisecond)
				root, off := crossCheckpoint(t, criu, p, byCRIU)
				checkSelf(t, root, p.Log, off)
			})
		}
	}
}

// TestRoundTripPythonAsyncio: a Python asyncio program (its event loop wakes itself through
// a UNIX socketpair and waits in epoll) dumped and restored ticks on, no tick missing.
func TestRoundTripPythonAsyncio(t *testing.T) {
	requireRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	script := filepath.Join(t.TempDir(), "tick.py")
	err = os.WriteFile(script, []byte(`import asyncio, os
print(f"pid={os.getpid()}", flush=True)
async def main():
    n = 0
    while True:
        n += 1
        print(f"n={n}", flush=True)
        await asyncio.sleep(0.02)
asyncio.run(main())
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := testproc.Launch(t, py, testproc.Options{}, "-u", script)
	p.WaitLog(t, "n=5\n", 10*time.Second)
	dir := dumpTo(t, p.Pid)
	kinds := map[fdinfo.FdTypes]int{}
	for _, fe := range readFiles(t, dir) {
		kinds[fe.GetType()]++
	}
	if kinds[fdinfo.FdTypes_UNIXSK] != 2 || kinds[fdinfo.FdTypes_EVENTPOLL] != 1 {
		t.Fatalf("asyncio's socketpair and epoll are not in the set: %v", kinds)
	}
	restoresCounting(t, p, dir)
}
