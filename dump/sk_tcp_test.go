package dump

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/testproc"
)

// TestRefuseTCPConnections: with --tcp-established, what the dump cannot save of a
// connection is refused before anything is seized, naming fd, addresses and why: a
// connection whose peer is gone (CLOSE_WAIT, its peer closed: with the socket lock alone),
// urgent data not read, SO_PEEK_OFF, and a closed socket that gave up the port it reports;
// with --tcp-close the CLOSE_WAIT one is saved (closed on restore) and not refused.
func TestRefuseTCPConnections(t *testing.T) {
	for _, c := range []struct {
		mode string
		fd   int
		want string
	}{
		{"closewait", 3, "is a connection (CLOSE_WAIT) from 127.0.0.1:"},
		{"urgent", 5, "it has urgent data (MSG_OOB) not read yet: not supported"},
		{"peekoff", 5, "SO_PEEK_OFF is set: not supported"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			all := refusedWith(t, Options{TCPEstablished: true}, "inetrefuse", c.mode, fmt.Sprint(loopbackPort(t)))
			if len(all) != 1 || all[0].Fd != c.fd || !strings.Contains(all[0].Error(), c.want) {
				t.Fatalf("refusals %v, want fd %d: %q", all, c.fd, c.want)
			}
			if c.mode == "closewait" && !strings.Contains(all[0].Error(), "its peer is outside the tree") {
				t.Errorf("%q does not say why", all[0].Error())
			}
		})
	}
	// Closed sockets whose connections ended: the one that gave its port up is refused,
	// the one bound to its port before it connected is not.
	all := refusedWith(t, Options{TCPEstablished: true}, "inetrefuse", "closedport", fmt.Sprint(loopbackPort(t)))
	if len(all) != 1 || all[0].Fd != 3 || !strings.Contains(all[0].Error(), "which it gave up when its connection ended") {
		t.Errorf("closed sockets: refusals %v, want fd 3's port", all)
	}
	tg := launch(t, "inetrefuse", "closewait", fmt.Sprint(loopbackPort(t)))
	if err := Dump(context.Background(), Options{Pid: tg.Pid, TCPClose: true, LeaveRunning: true}, newDirSink(t)); err != nil {
		t.Errorf("--tcp-close: %v", err)
	}
}

// launchTCPConn starts restore/testdata/tcpconn.c: a loopback connection between a parent
// and its child, counting both ways, queues full.
func launchTCPConn(t *testing.T) *testproc.Proc {
	t.Helper()
	bin := testproc.Build(t, filepath.Join("..", "restore", "testdata", "tcpconn.c"))
	return testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, "tcp4", fmt.Sprint(loopbackPort(t)))
}

// tcpConnOK signals tcpconn to check that its connection carries on, and waits for "ok".
func tcpConnOK(t *testing.T, p *testproc.Proc) {
	t.Helper()
	off, err := os.Stat(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(p.Pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var out string
	testproc.WaitFor(t, 15*time.Second, "tcpconn's verdict", func() bool {
		out = testproc.LogAfter(t, p.Log, off.Size())
		return strings.Contains(out, "ok\n") || strings.Contains(out, "FAIL")
	})
	if !strings.HasPrefix(out, "ok\n") {
		t.Fatalf("the connection after the dump: %s", strings.TrimSpace(out))
	}
}

// checkUnlocked fails if a TCP socket of the tree of pid is in repair mode or has a socket
// filter.
func checkUnlocked(t *testing.T, pid int) {
	t.Helper()
	conns := 0
	for _, p := range testproc.Descendants(pid) {
		for fd := 3; fd < 8; fd++ {
			local, err := fdCopy(p, fd)
			if err != nil {
				continue
			}
			s, err := readInetSk(local)
			if err == nil && s.proto == unix.IPPROTO_TCP && s.state == tcpEstablished {
				conns++
				if r, _ := unix.GetsockoptInt(local, unix.IPPROTO_TCP, unix.TCP_REPAIR); r != 0 {
					t.Errorf("pid %d fd %d: in repair mode", p, fd)
				}
				var n uint32
				_, _, _ = unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(local), unix.SOL_SOCKET, unix.SO_GET_FILTER, 0, uintptr(unsafe.Pointer(&n)), 0)
				if n != 0 {
					t.Errorf("pid %d fd %d: a socket filter is attached", p, fd)
				}
			}
			unix.Close(local)
		}
	}
	if conns != 2 {
		t.Errorf("%d connected sockets found, want 2", conns)
	}
}

// TestDumpTCPLeaveRunning: dumped with --tcp-established --leave-running, the connection
// is unlocked and out of repair mode, and carries on: nothing lost or repeated while the
// dump held it. The set has both streams. With --network-lock nftables too: the dump's
// table is gone (the records would stop otherwise).
func TestDumpTCPLeaveRunning(t *testing.T) {
	for _, lock := range []string{NetworkLockSocket, NetworkLockNftables} {
		t.Run(lock, func(t *testing.T) {
			p := launchTCPConn(t)
			s := newDirSink(t)
			if err := Dump(context.Background(), Options{Pid: p.Pid, TCPEstablished: true, LeaveRunning: true, NetworkLock: lock}, s); err != nil {
				t.Fatal(err)
			}
			streams, _ := filepath.Glob(filepath.Join(s.dir, "tcp-stream-*.img"))
			if len(streams) != 2 {
				t.Errorf("%d tcp-stream images, want 2", len(streams))
			}
			checkUnlocked(t, p.Pid)
			tcpConnOK(t, p)
		})
	}
}

// TestDumpTCPInterrupted: a dump cancelled once the connection was locked and read (while
// pages are copied) puts it back: unlocked (its nftables table deleted too), out of repair
// mode, and carrying on.
func TestDumpTCPInterrupted(t *testing.T) {
	p := launchTCPConn(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := Dump(ctx, Options{Pid: p.Pid, TCPEstablished: true, NetworkLock: NetworkLockNftables,
		Progress: func(done, total int64) { cancel() }}, newDirSink(t))
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("err = %v, want an interruption", err)
	}
	checkUnlocked(t, p.Pid)
	tcpConnOK(t, p)
}
