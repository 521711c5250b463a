package restore

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	fsimg "github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/dump"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/testproc"
)

// TestRoundTripUnixSockets dumps and restores testdata/unixsk.c once per state and lets it
// check itself: a stream socketpair carrying a counter both ways with bytes queued in each
// direction, its options and a shut-down pair; dgram and seqpacket pairs with queued
// datagrams; a listening socket at a path (mode kept) and at an abstract name, each
// accepting a new client; a dgram socket connected to itself; a
// named dgram socket and two connected to it; stream and seqpacket sockets never
// connected; a client and its accepted socket in two processes.
func TestRoundTripUnixSockets(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/unixsk.c")
	for _, mode := range []string{"stream", "dgram", "listen", "abstract", "self", "dgramsrv", "unconn", "conn"} {
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
			if socks == 0 || (mode != "listen" && mode != "abstract" && mode != "unconn" && mode != "self" && queued == 0) {
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
	for _, mode := range []string{"stream", "dgram", "listen", "self", "dgramsrv", "unconn"} {
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

// extPeer is a datagram socket of the test, outside the tree of the program under test,
// which the program's sockets are connected to (as a logger's to /dev/log): it collects
// every datagram they send.
type extPeer struct {
	conn *net.UnixConn
	name string // its address as extunix.c takes it: a path, or @NAME
	ino  uint64
	mu   sync.Mutex
	got  []string
}

// listenExtPeer binds a datagram socket to name (a path, or @NAME) and reads from it
// until the test ends.
func listenExtPeer(t *testing.T, name string) *extPeer {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e := &extPeer{conn: c, name: name}
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		var st unix.Stat_t
		if err = unix.Fstat(int(fd), &st); err == nil {
			e.ino = st.Ino
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			e.mu.Lock()
			e.got = append(e.got, string(buf[:n]))
			e.mu.Unlock()
		}
	}()
	return e
}

// received returns the tick numbers received so far, in order, and the other datagrams.
func (e *extPeer) received(t *testing.T) (ticks []int, other []string) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range e.got {
		rest, ok := strings.CutPrefix(d, "tick ")
		if !ok {
			other = append(other, d)
			continue
		}
		n, err := strconv.Atoi(rest)
		if err != nil {
			t.Fatalf("datagram %q", d)
		}
		ticks = append(ticks, n)
	}
	return ticks, other
}

// waitTicks waits until n ticks were received.
func (e *extPeer) waitTicks(t *testing.T, n int) {
	t.Helper()
	testproc.WaitFor(t, 10*time.Second, fmt.Sprintf("%d ticks at the test's socket", n), func() bool {
		ticks, _ := e.received(t)
		return len(ticks) >= n
	})
}

// extUnixRoundTrip runs testdata/extunix.c connected to a socket of the test bound to a
// path or an abstract name (kind), has checkpoint dump and restore it (returning the set
// and the restored root), and checks that the program goes on sending to the test's socket
// with no tick missing or repeated across the restore, that both its sockets are connected
// to it again (getpeername) and the bound one has its name, and that it can send through
// that one too.
func extUnixRoundTrip(t *testing.T, kind string, checkpoint func(p *testproc.Proc) (dir string, root int)) {
	t.Helper()
	bin := testproc.Build(t, "testdata/extunix.c")
	name := fmt.Sprintf("@imgtool-extunix-%d-%s", os.Getpid(), t.Name())
	if kind == "path" {
		name = filepath.Join(t.TempDir(), "log.sock")
	}
	peer := listenExtPeer(t, name)
	own := fmt.Sprintf("@imgtool-extunix-own-%d-%s", os.Getpid(), t.Name())
	p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, peer.name, own)
	peer.waitTicks(t, 5)
	dir, root := checkpoint(p)
	checkExternEntry(t, dir, peer)
	before, _ := peer.received(t)
	peer.waitTicks(t, len(before)+50)
	ticks, _ := peer.received(t)
	for i, n := range ticks {
		if n != i {
			t.Fatalf("tick %d where %d was due: a gap or a repeat across the restore (%d ticks before it)", n, i, len(before))
		}
	}
	checkSelf(t, root, p.Log, savedPos(t, dir, p.Log))
	testproc.WaitFor(t, 5*time.Second, `"fd4 ok" at the test's socket`, func() bool {
		_, other := peer.received(t)
		return slices.Contains(other, "fd4 ok")
	})
}

// checkExternEntry checks that a set holds the test's socket as CRIU 4.2 saves an
// external peer: one unix_sk_entry with USK_EXTERN, its inode and name, type dgram, state
// listen, no fd of its own, and both sockets of extunix.c connected to it.
func checkExternEntry(t *testing.T, dir string, peer *extPeer) {
	t.Helper()
	name := []byte(peer.name)
	if name[0] == '@' {
		name[0] = 0
	}
	var ext, connected int
	for _, fe := range readFiles(t, dir) {
		u := fe.GetUsk()
		switch {
		case u == nil:
		case u.GetUflags() == 1:
			ext++
			if u.GetIno() != uint32(peer.ino) || !bytes.Equal(bytes.TrimRight(u.GetName(), "\x00"), name) ||
				u.GetType() != unix.SOCK_DGRAM || u.GetState() != 10 || u.GetPeer() != 0 {
				t.Errorf("external entry %v, want inode %d and name %q", u, peer.ino, name)
			}
		case u.GetPeer() == uint32(peer.ino):
			connected++
		}
	}
	if ext != 1 || connected != 2 {
		t.Fatalf("%d external entries and %d sockets connected to it, want 1 and 2", ext, connected)
	}
}

// TestRoundTripExtUnixSk: datagram sockets connected to a socket outside the tree, at a
// path and at an abstract name, dumped with ExtUnixSk (CRIU's --ext-unix-sk) and restored
// with it: the program goes on sending to the same socket of the test with no gap, its
// sockets connected to it again.
func TestRoundTripExtUnixSk(t *testing.T) {
	requireRoot(t)
	for _, kind := range []string{"abstract", "path"} {
		t.Run(kind, func(t *testing.T) {
			extUnixRoundTrip(t, kind, func(p *testproc.Proc) (string, int) {
				dir := dumpTCP(t, p.Pid, dump.Options{ExtUnixSk: true})
				return dir, restoreSet(t, dir, Options{ExtUnixSk: true})[0]
			})
		})
	}
}

// TestRefuseExtUnixSk: a set whose sockets are connected to a peer outside it is refused
// before any process exists, naming the fd and the reason: without ExtUnixSk (as criu
// restore without --ext-unix-sk), and with it what CRIU's restore would connect to
// something else or fail on midway: a stream connection or a peer without a name (CRIU
// saves those only for --inherit-fd), a relative name, a name at which no unconnected
// datagram socket is bound now. Each case is a copy of one set, its external entry or
// sockets rewritten.
func TestRefuseExtUnixSk(t *testing.T) {
	requireRoot(t)
	peer := listenExtPeer(t, fmt.Sprintf("@imgtool-extrefuse-%d", os.Getpid()))
	own := fmt.Sprintf("@imgtool-extrefuse-own-%d", os.Getpid())
	p := testproc.Launch(t, testproc.Build(t, "testdata/extunix.c"), testproc.Options{Ready: "ready pid="}, peer.name, own)
	peer.waitTicks(t, 1)
	set := dumpTCP(t, p.Pid, dump.Options{ExtUnixSk: true})
	// A datagram socket connected to another one, and a stream listener: no peer to take.
	busy, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: fmt.Sprintf("@imgtool-extrefuse-busy-%d", os.Getpid()), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := connectTo(busy, peer.name); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", fmt.Sprintf("@imgtool-extrefuse-stream-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	name := func(n string) func(u *sk_unix.UnixSkEntry) {
		return func(u *sk_unix.UnixSkEntry) {
			if external(u) {
				u.Name = []byte(strings.Replace(n, "@", "\x00", 1))
			}
		}
	}
	for _, c := range []struct {
		name   string
		ext    bool
		change func(u *sk_unix.UnixSkEntry) // applied to every unix_sk_entry of files.img
		want   string
	}{
		{"without ExtUnixSk", false, nil, "outside the set (dumped with --ext-unix-sk): it is connected to by its name again only with --ext-unix-sk (criu restore needs it too)"},
		{"a stream connection", true, func(u *sk_unix.UnixSkEntry) {
			if !external(u) {
				u.Type = proto.Uint32(unix.SOCK_STREAM)
			}
		}, "and this is a stream connection: it cannot be made again"},
		{"no name", true, name(""), "and has no name to connect to"},
		{"a relative name", true, name("rel.sock\x00"), `and is bound to "rel.sock", a name relative to a working directory`},
		{"nothing at the name", true, name(fmt.Sprintf("@imgtool-extrefuse-none-%d", os.Getpid())), "and no datagram socket is bound at"},
		{"no file at the path", true, name(filepath.Join(t.TempDir(), "none.sock")), "and no datagram socket is bound at"},
		{"a stream listener at the name", true, name(ln.Addr().String()), "and no datagram socket is bound at"},
		{"a socket connected elsewhere", true, name(busy.LocalAddr().String()), "is connected to socket:["},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := copySet(t, set)
			if c.change != nil {
				rewriteImage(t, dir, "files.img", func(img *image.Image) {
					for _, e := range img.Entries {
						if u := e.Msg.(*fdinfo.FileEntry).GetUsk(); u != nil {
							c.change(u)
						}
					}
				})
			}
			err := refuseErr(t, dir, Options{ExtUnixSk: c.ext})
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "fd 3") || !strings.Contains(err.Error(), "fd 4") {
				t.Errorf("%v, want %q for fds 3 and 4", err, c.want)
			}
		})
	}
}

// connectTo connects datagram socket c to name (a path, or @NAME).
func connectTo(c *net.UnixConn, name string) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := raw.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), &unix.SockaddrUnix{Name: name}) }); err != nil {
		return err
	}
	return cerr
}

// TestCRIUInteropExtUnixSk: testdata/extunix.c dumped with --ext-unix-sk by one tool and
// restored with it by the other, both ways, carries on as in TestRoundTripExtUnixSk.
func TestCRIUInteropExtUnixSk(t *testing.T) {
	criu := criuBin(t)
	for _, way := range []string{"imgtool dump, CRIU restore", "CRIU dump, imgtool restore"} {
		t.Run(way, func(t *testing.T) {
			extUnixRoundTrip(t, "path", func(p *testproc.Proc) (string, int) {
				if strings.HasPrefix(way, "imgtool") {
					dir := dumpTCP(t, p.Pid, dump.Options{ExtUnixSk: true})
					return dir, criuRestore(t, criu, dir, treePids(t, dir), "--ext-unix-sk")
				}
				dir := t.TempDir()
				runCRIU(t, criu, dir, "dump.log", "dump", "-t", fmt.Sprint(p.Pid), "--ext-unix-sk")
				testproc.WaitGone(t, []int{p.Pid})
				return dir, restoreSet(t, dir, Options{ExtUnixSk: true})[0]
			})
		})
	}
}

// TestRefuseChrootedSocketName: a set (CRIU's could hold one) whose process, chrooted,
// has a socket bound to an absolute name is refused before anything is made: imgtool binds
// sockets in its own root, which would put the socket file outside the chroot.
func TestRefuseChrootedSocketName(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/unixsk.c")
	p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, "listen", filepath.Join(t.TempDir(), "unixsk.sock"))
	dir := copySet(t, dumpTo(t, p.Pid))
	// The process's root made its working directory, a directory other than /.
	rewriteImage(t, dir, fmt.Sprintf("fs-%d.img", p.Pid), func(img *image.Image) {
		e := img.Entries[0].Msg.(*fsimg.FsEntry)
		e.RootId = proto.Uint32(e.GetCwdId())
	})
	err := refuseErr(t, dir, Options{})
	if !strings.Contains(err.Error(), "unixsk.sock\" inside the chroot /") {
		t.Errorf("restore: %v, want a refusal of the socket bound inside the chroot", err)
	}
}
