package restore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/dump"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/internal/nftables"
	"github.com/imgtool/imgtool/internal/testproc"
)

// dumpTCP dumps the tree of pid with imgtool and opts (--tcp-established, say), kills it,
// and returns the set.
func dumpTCP(t *testing.T, pid int, opts dump.Options) string {
	t.Helper()
	tree := testproc.Descendants(pid)
	dir := filepath.Join(t.TempDir(), "set")
	w, err := imgset.Create(dir, imgset.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts.Pid = pid
	if err := dump.Dump(ctx, opts, w); err != nil {
		w.Abort()
		t.Fatalf("imgtool dump of %d: %v", pid, err)
	}
	testproc.KillAndReap(tree)
	testproc.WaitGone(t, tree)
	dropLockLater(t, dir)
	return dir
}

// dropLockLater deletes, when the test ends, the nftables table a dump of dir may have
// left (a restore that did not happen leaves it).
func dropLockLater(t *testing.T, dir string) {
	t.Helper()
	inv := readImageFile(t, filepath.Join(dir, "inventory.img")).Entries[0].Msg.(*inventory.InventoryEntry)
	if inv.GetNetworkLockMethod() == lockNftables {
		t.Cleanup(func() { nftables.Delete(nftables.TableName(inv.GetDumpCriuRunId())) })
	}
}

// launchTCPConn starts testdata/tcpconn.c (mode tcp4 or tcp6) at a free port.
func launchTCPConn(t *testing.T, mode string) *testproc.Proc {
	t.Helper()
	host := "127.0.0.1"
	if mode == "tcp6" {
		host = "::1"
	}
	bin := testproc.Build(t, "testdata/tcpconn.c")
	return testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, mode, fmt.Sprint(freePort(t, "tcp", host)))
}

// tcpStreams returns the tcp-stream images of a set, by file name.
func tcpStreams(t *testing.T, dir string) map[string]*tcp_stream.TcpStreamEntry {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "tcp-stream-*.img"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*tcp_stream.TcpStreamEntry{}
	for _, n := range names {
		img := readImageFile(t, n)
		if len(img.Entries) != 1 {
			t.Fatalf("%s: %d entries", n, len(img.Entries))
		}
		e := img.Entries[0].Msg.(*tcp_stream.TcpStreamEntry)
		if len(img.Entries[0].Payload) != int(e.GetInqLen()+e.GetOutqLen()) {
			t.Fatalf("%s: %d bytes of queues for %v", n, len(img.Entries[0].Payload), e)
		}
		out[filepath.Base(n)] = e
	}
	return out
}

// checkQueuedBothWays checks that the set holds the two ends of one loopback connection,
// ESTABLISHED, as CRIU writes them, with bytes queued in each direction (in the sender's
// send queue or the receiver's receive queue).
func checkQueuedBothWays(t *testing.T, dir string) {
	t.Helper()
	streams := tcpStreams(t, dir)
	var ends []uint32
	for _, fe := range readFiles(t, dir) {
		e := fe.GetIsk()
		if fe.GetType() != fdinfo.FdTypes_INETSK || e.GetDstPort() == 0 {
			continue
		}
		ends = append(ends, e.GetIno())
		s := streams[fmt.Sprintf("tcp-stream-%x.img", e.GetIno())]
		if s == nil {
			t.Fatalf("socket:[%d] has no tcp-stream image", e.GetIno())
		}
		if e.GetState() != 1 || e.GetBacklog() != s.GetOutqLen() {
			t.Errorf("socket:[%d]: state %d backlog %d, want ESTABLISHED (1) and the send queue's length %d", e.GetIno(), e.GetState(), e.GetBacklog(), s.GetOutqLen())
		}
		if s.UnsqLen == nil || s.SndWnd == nil || s.GetOptMask()&7 != 7 || s.Timestamp == nil || s.RcvWscale == nil || s.GetMssClamp() == 0 {
			t.Errorf("socket:[%d]: stream %v lacks what CRIU writes", e.GetIno(), s)
		}
	}
	if len(ends) != 2 || len(streams) != 2 {
		t.Fatalf("%d connected sockets and %d streams in the set, want 2 and 2", len(ends), len(streams))
	}
	a := streams[fmt.Sprintf("tcp-stream-%x.img", ends[0])]
	b := streams[fmt.Sprintf("tcp-stream-%x.img", ends[1])]
	if a.GetOutqLen()+b.GetInqLen() == 0 || b.GetOutqLen()+a.GetInqLen() == 0 {
		t.Errorf("queued: %d out and %d in, %d out and %d in: want bytes both ways", a.GetOutqLen(), b.GetInqLen(), b.GetOutqLen(), a.GetInqLen())
	}
}

// TestRoundTripTCPConnection dumps testdata/tcpconn.c (a loopback connection between a
// parent and its child, counting both ways, queues full) with --tcp-established and
// restores it: both ends carry on from the saved records, with nothing lost or repeated,
// over IPv4 and IPv6, and with CRIU's nftables lock left by the dump (the restore removes
// it: the records would stop otherwise). The listener the parent keeps is back too.
func TestRoundTripTCPConnection(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{"tcp4", "tcp6", "tcp4/nftables"} {
		t.Run(mode, func(t *testing.T) {
			p := launchTCPConn(t, strings.TrimSuffix(mode, "/nftables"))
			opts := dump.Options{TCPEstablished: true}
			if strings.HasSuffix(mode, "nftables") {
				opts.NetworkLock = dump.NetworkLockNftables
			}
			dir := dumpTCP(t, p.Pid, opts)
			checkQueuedBothWays(t, dir)
			off := savedPos(t, dir, p.Log)
			pids := restoreSet(t, dir, Options{TCPEstablished: true})
			checkSelf(t, pids[0], p.Log, off)
			for _, pid := range pids {
				for _, fd := range []int{3, 4, 5} {
					if repairOf(t, pid, fd) {
						t.Errorf("pid %d fd %d: still in repair mode", pid, fd)
					}
				}
			}
		})
	}
}

// repairOf tells whether fd of pid, if a TCP socket, is in repair mode or has a socket
// filter.
func repairOf(t *testing.T, pid, fd int) bool {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return false
	}
	defer unix.Close(local)
	if p, err := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || p != unix.IPPROTO_TCP {
		return false
	}
	r, _ := unix.GetsockoptInt(local, unix.IPPROTO_TCP, unix.TCP_REPAIR)
	var n uint32
	_, _, _ = unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(local), unix.SOL_SOCKET, unix.SO_GET_FILTER, 0, uintptr(unsafe.Pointer(&n)), 0)
	return r != 0 || n != 0
}

// TestTCPConnectionTCPClose: dumped and restored with --tcp-close, both ends find their
// connection closed (the end of the stream, sends failing) and go on.
func TestTCPConnectionTCPClose(t *testing.T) {
	requireRoot(t)
	p := launchTCPConn(t, "tcp4")
	dir := dumpTCP(t, p.Pid, dump.Options{TCPClose: true})
	if s := tcpStreams(t, dir); len(s) != 0 {
		t.Errorf("%d tcp-stream images with --tcp-close", len(s))
	}
	off := savedPos(t, dir, p.Log)
	pids := restoreSet(t, dir, Options{TCPClose: true})
	if err := unix.Kill(pids[0], unix.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	var out string
	testproc.WaitFor(t, 15*time.Second, "the restored program's verdict", func() bool {
		out = testproc.LogAfter(t, p.Log, off)
		return strings.Contains(out, "ok closed\n") || strings.Contains(out, "FAIL")
	})
	if !strings.HasPrefix(out, "ok closed\n") {
		t.Fatalf("after the restore: %s", strings.TrimSpace(out))
	}
}

// TestRefuseTCPConnectionRestore: a set holding connections is refused before anything
// is created without --tcp-established (or --tcp-close), naming the connection; so is one
// whose stream image is missing, and one whose connection this host still has.
func TestRefuseTCPConnectionRestore(t *testing.T) {
	requireRoot(t)
	p := launchTCPConn(t, "tcp4")
	dir := dumpTCP(t, p.Pid, dump.Options{TCPEstablished: true})
	msg := refuseErr(t, dir, Options{}).Error()
	if !strings.Contains(msg, "a TCP connection (ESTABLISHED) from 127.0.0.1:") || !strings.Contains(msg, "restored only with --tcp-established (or closed with --tcp-close)") {
		t.Errorf("without the flag: %q", msg)
	}
	noStream := copySet(t, dir)
	streams, _ := filepath.Glob(filepath.Join(noStream, "tcp-stream-*.img"))
	if err := os.Remove(streams[0]); err != nil {
		t.Fatal(err)
	}
	if msg := refuseErr(t, noStream, Options{TCPEstablished: true}).Error(); !strings.Contains(msg, "has no "+filepath.Base(streams[0])+" (dumped with --tcp-close? restore it with --tcp-close)") {
		t.Errorf("without a stream: %q", msg)
	}
	// Restored once, the connection exists: a second restore of the same set (its PIDs
	// free again) is refused.
	pids := restoreSet(t, dir, Options{TCPEstablished: true})
	moved := copySet(t, dir)
	var held []int // both ends, kept open here while their processes go
	for i, fd := range []int{5, 3} {
		held = append(held, sockOf(t, pids[i], fd))
	}
	testproc.KillAndReap(pids)
	testproc.WaitGone(t, pids)
	defer func() {
		for _, c := range held {
			unix.Close(c)
		}
	}()
	if msg := refuseErr(t, moved, Options{TCPEstablished: true}).Error(); !strings.Contains(msg, "this host has a socket with that connection already") {
		t.Errorf("with the connection still there: %q", msg)
	}
}

// TestRestoreCRIUTCP: the real CRIU set tcp (fixtures/src/tcp.c: one process holding both
// ends of a loopback connection, fd 4 the client and fd 5 the server; CRIU saved 56 bytes
// the server sent and the client never read, 5120 bytes the client sent and the server
// never read, and 15360 more the client could not send yet) restores with
// --tcp-established and carries on: read from the restored sockets, the client gets the
// server's canary and the server all 20 KiB of the client's pattern, in order.
func TestRestoreCRIUTCP(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "tcp")
	pids := restoreSet(t, copySet(t, criuSet(t, "tcp")), Options{TCPEstablished: true})
	client, server := sockOf(t, pids[0], 4), sockOf(t, pids[0], 5)
	defer unix.Close(client)
	defer unix.Close(server)
	for fd, want := range map[int]int{4: 46160, 5: 47211} {
		if repairOf(t, pids[0], fd) {
			t.Errorf("fd %d: still in repair mode or locked", fd)
		}
		local := map[int]int{4: client, 5: server}[fd]
		sa, err := unix.Getsockname(local)
		if a, ok := sa.(*unix.SockaddrInet4); err != nil || !ok || a.Port != want {
			t.Errorf("fd %d bound at %#v %v, want port %d", fd, sa, err, want)
		}
	}
	got := readFor(t, client, 56, 5*time.Second)
	if string(got) != "S2C-UNREAD-DATA-from-server-to-client:IMGTOOL-TCP-CANARY" {
		t.Errorf("the client read %q", got)
	}
	got = readFor(t, server, 20*1024, 10*time.Second)
	for blk := 0; blk < 20; blk++ {
		for i := 0; i < 1024; i += 64 {
			want := fmt.Sprintf("C2S-%08d-%06d-IMGTOOL-TCP-PATTERN-%-23s", blk, i, "x")[:63]
			if at := got[blk*1024+i:]; string(at[:63]) != want {
				t.Fatalf("the server read %q at %d, want %q", at[:63], blk*1024+i, want)
			}
		}
	}
}

// readFor reads n bytes from socket fd within d.
func readFor(t *testing.T, fd, n int, d time.Duration) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(d)
	for len(out) < n && time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if k, _ := unix.Poll(pfd, 100); k != 1 {
			continue
		}
		m, err := unix.Read(fd, buf)
		if err != nil && err != unix.EAGAIN {
			t.Fatalf("read: %v", err)
		}
		if m == 0 {
			break
		}
		if m > 0 {
			out = append(out, buf[:m]...)
		}
	}
	if len(out) < n {
		t.Fatalf("read %d bytes in %v, want %d", len(out), d, n)
	}
	return out
}

// TestCRIUInteropTCPConnection: testdata/tcpconn.c's connection, over IPv4 and IPv6,
// dumped by one tool with --tcp-established --network-lock nftables and restored by the
// other with --tcp-established, carries on counting both ways: each restore removes the
// other's nftables table. (CRIU's restore needs a lock in place: it sends what was never
// sent out of repair mode, and a reset from a peer not made yet would break the
// connection; this host has no iptables, CRIU's default.)
func TestCRIUInteropTCPConnection(t *testing.T) {
	criu := criuBin(t)
	for _, mode := range []string{"tcp4", "tcp6"} {
		for _, way := range []string{"imgtool dump, CRIU restore", "CRIU dump, imgtool restore"} {
			t.Run(mode+"/"+way, func(t *testing.T) {
				p := launchTCPConn(t, mode)
				var dir string
				var root int
				if strings.HasPrefix(way, "CRIU") {
					dir = t.TempDir()
					runCRIU(t, criu, dir, "dump.log", "dump", "-t", fmt.Sprint(p.Pid), "--tcp-established", "--network-lock", "nftables")
					testproc.WaitGone(t, []int{p.Pid})
					dropLockLater(t, dir)
					checkQueuedBothWays(t, dir)
				} else {
					dir = dumpTCP(t, p.Pid, dump.Options{TCPEstablished: true, NetworkLock: dump.NetworkLockNftables})
					checkQueuedBothWays(t, dir)
				}
				off := savedPos(t, dir, p.Log)
				if strings.HasPrefix(way, "CRIU") {
					root = restoreSet(t, dir, Options{TCPEstablished: true})[0]
				} else {
					root = criuRestore(t, criu, dir, treePids(t, dir), "--tcp-established")
				}
				checkSelf(t, root, p.Log, off)
			})
		}
	}
}

// TestUnlockCRIUIptables: a set CRIU dumped with its default iptables lock (inventory
// network_lock_method 0) gets CRIU's rules deleted as CRIU's restore deletes them: for
// each connection, iptables -D of the rule dropping what comes in and of the one dropping
// what goes out. An iptables that records its arguments stands in for the real one (this
// host's firewall is left alone).
func TestUnlockCRIUIptables(t *testing.T) {
	requireRoot(t)
	p := launchTCPConn(t, "tcp4")
	dir := copySet(t, dumpTCP(t, p.Pid, dump.Options{TCPEstablished: true}))
	rewriteImage(t, dir, "inventory.img", func(img *image.Image) {
		img.Entries[0].Msg.(*inventory.InventoryEntry).NetworkLockMethod = proto.Uint32(lockIptables)
	})
	bin := t.TempDir()
	calls := filepath.Join(bin, "calls")
	for _, cmd := range []string{"iptables", "ip6tables"} {
		script := "#!/bin/sh\necho " + cmd + " \"$@\" >> " + calls + "\n"
		if err := os.WriteFile(filepath.Join(bin, cmd), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	off := savedPos(t, dir, p.Log)
	pids := restoreSet(t, dir, Options{TCPEstablished: true})
	checkSelf(t, pids[0], p.Log, off)
	b, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, fe := range readFiles(t, dir) {
		if e := fe.GetIsk(); e != nil && e.GetDstPort() != 0 {
			rule := "iptables -w -t filter -D %s --protocol tcp -m mark ! --mark 0xC114 --source 127.0.0.1 --sport %d --destination 127.0.0.1 --dport %d -j DROP"
			want = append(want, fmt.Sprintf(rule, "INPUT", e.GetDstPort(), e.GetSrcPort()), fmt.Sprintf(rule, "OUTPUT", e.GetSrcPort(), e.GetDstPort()))
		}
	}
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("iptables ran as\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// recordPeer plays testdata/tcpconn.c's other end on c, from the test: it sends the
// counter records as fast as c takes them and reads 64 bytes every 2 ms, checking each
// record; got counts the records received, bad says the first fault.
type recordPeer struct {
	got atomic.Int64
	bad atomic.Value // string
}

func (p *recordPeer) run(c net.Conn) {
	go func() {
		var next uint64
		buf := make([]byte, 0, 1024)
		for {
			buf = buf[:0]
			for i := 0; i < 64; i++ {
				buf = fmt.Appendf(buf, "%015d\n", next)
				next++
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	go func() {
		var rec []byte
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				if p.bad.Load() == nil && !errors.Is(err, net.ErrClosed) {
					p.bad.Store(fmt.Sprintf("read: %v", err))
				}
				return
			}
			rec = append(rec, buf[:n]...)
			for len(rec) >= 16 {
				if want := fmt.Sprintf("%015d\n", p.got.Load()); string(rec[:16]) != want && p.bad.Load() == nil {
					p.bad.Store(fmt.Sprintf("record %d received as %q", p.got.Load(), rec[:16]))
				}
				rec = rec[16:]
				p.got.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
}

// TestTCPConnectionOutsidePeer: a connection whose other end is outside the tree (here, in
// the test) is refused with the socket lock alone: the peer would get a reset if it sent
// anything before the restore. With --network-lock nftables the dump leaves CRIU's lock:
// the peer goes on sending while the process is gone, its packets dropped without a
// reset, and once restored (the lock removed) both ends carry on counting, nothing lost.
func TestTCPConnectionOutsidePeer(t *testing.T) {
	requireRoot(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer := &recordPeer{}
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { c.Close() })
		c.(*net.TCPConn).SetReadBuffer(4096)
		c.(*net.TCPConn).SetWriteBuffer(4096)
		peer.run(c)
	}()
	bin := testproc.Build(t, "testdata/tcpconn.c")
	p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, "tcp4ext", fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
	set := filepath.Join(t.TempDir(), "set")
	w, err := imgset.Create(set, imgset.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = dump.Dump(context.Background(), dump.Options{Pid: p.Pid, TCPEstablished: true}, w)
	w.Abort()
	if err == nil || !strings.Contains(err.Error(), "its peer is outside the tree") || !strings.Contains(err.Error(), "--network-lock nftables") {
		t.Fatalf("with the socket lock alone: %v", err)
	}
	dir := dumpTCP(t, p.Pid, dump.Options{TCPEstablished: true, NetworkLock: dump.NetworkLockNftables})
	before := peer.got.Load()
	time.Sleep(300 * time.Millisecond) // the peer sends meanwhile: dropped, no reset
	off := savedPos(t, dir, p.Log)
	pids := restoreSet(t, dir, Options{TCPEstablished: true})
	if err := unix.Kill(pids[0], unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var out string
	testproc.WaitFor(t, 20*time.Second, "the restored program's verdict", func() bool {
		out = testproc.LogAfter(t, p.Log, off)
		return strings.Contains(out, "ok\n") || strings.Contains(out, "FAIL")
	})
	if !strings.HasPrefix(out, "ok\n") {
		t.Fatalf("after the restore: %s", strings.TrimSpace(out))
	}
	testproc.WaitFor(t, 10*time.Second, "records from the restored program", func() bool { return peer.got.Load() > before+300 })
	if bad := peer.bad.Load(); bad != nil {
		t.Fatalf("the peer outside: %s", bad)
	}
}

// tcpHalfModes are the states of testdata/tcphalf.c and the TCP states of its two ends.
var tcpHalfModes = []struct {
	mode   string
	states [2]uint32 // a's, b's
}{{"finwait1", [2]uint32{4, 1}}, {"finwait2", [2]uint32{5, 8}}}

// launchTCPHalf starts testdata/tcphalf.c in mode over IPv4 or IPv6 (v6).
func launchTCPHalf(t *testing.T, mode string, v6 bool) *testproc.Proc {
	t.Helper()
	host, six := "127.0.0.1", "4"
	if v6 {
		host, six = "::1", "6"
	}
	bin := testproc.Build(t, "testdata/tcphalf.c")
	return testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, mode, fmt.Sprint(freePort(t, "tcp", host)), six)
}

// checkHalfStates checks that the set saved tcphalf's two ends in their states.
func checkHalfStates(t *testing.T, dir string, want [2]uint32) {
	t.Helper()
	var got []uint32
	for _, fe := range readFiles(t, dir) {
		if e := fe.GetIsk(); e != nil && e.GetDstPort() != 0 {
			got = append(got, e.GetState())
		}
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("connections saved in states %v, want %v", got, want)
	}
}

// TestRoundTripTCPHalfClosed: half-closed connections (testdata/tcphalf.c: one end in
// FIN_WAIT1 with bytes its peer cannot take yet, or FIN_WAIT2 with its peer in
// CLOSE_WAIT, bytes unread both ways), over IPv4 and IPv6, dumped with --tcp-established
// and restored: the states are back (the peer's FIN and acknowledgement made up), every
// byte comes in order and then the end of the stream, and the open side still sends.
func TestRoundTripTCPHalfClosed(t *testing.T) {
	requireRoot(t)
	for _, m := range tcpHalfModes {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/v6=%v", m.mode, v6), func(t *testing.T) {
				p := launchTCPHalf(t, m.mode, v6)
				dir := dumpTCP(t, p.Pid, dump.Options{TCPEstablished: true})
				checkHalfStates(t, dir, m.states)
				off := savedPos(t, dir, p.Log)
				pids := restoreSet(t, dir, Options{TCPEstablished: true})
				checkSelf(t, pids[0], p.Log, off)
			})
		}
	}
}

// TestCRIUInteropTCPHalfClosed: the half-closed connections of testdata/tcphalf.c,
// dumped by one tool and restored by the other (--tcp-established, nftables locks), are
// back in their states and carry on.
func TestCRIUInteropTCPHalfClosed(t *testing.T) {
	criu := criuBin(t)
	for _, m := range tcpHalfModes {
		for _, way := range []string{"imgtool dump, CRIU restore", "CRIU dump, imgtool restore"} {
			t.Run(m.mode+"/"+way, func(t *testing.T) {
				p := launchTCPHalf(t, m.mode, false)
				var dir string
				byCRIU := strings.HasPrefix(way, "CRIU")
				if byCRIU {
					dir = t.TempDir()
					runCRIU(t, criu, dir, "dump.log", "dump", "-t", fmt.Sprint(p.Pid), "--tcp-established", "--network-lock", "nftables")
					testproc.WaitGone(t, []int{p.Pid})
					dropLockLater(t, dir)
				} else {
					dir = dumpTCP(t, p.Pid, dump.Options{TCPEstablished: true, NetworkLock: dump.NetworkLockNftables})
				}
				checkHalfStates(t, dir, m.states)
				off := savedPos(t, dir, p.Log)
				var root int
				if byCRIU {
					root = restoreSet(t, dir, Options{TCPEstablished: true})[0]
				} else {
					root = criuRestore(t, criu, dir, treePids(t, dir), "--tcp-established")
				}
				checkSelf(t, root, p.Log, off)
			})
		}
	}
}
