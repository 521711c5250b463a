package restore

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/imgtool/imgtool/internal/testproc"
)

// freePort returns a port of the loopback address host that is free for network
// ("tcp" or "udp") at the moment.
func freePort(t *testing.T, network, host string) int {
	t.Helper()
	if network == "tcp" {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Skipf("no %s: %v", host, err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("no %s: %v", host, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// inetMode is a state of testdata/inetsk.c: its network and loopback address.
func inetMode(mode string) (network, host string) {
	network, host = "tcp", "127.0.0.1"
	if strings.HasPrefix(mode, "udp") {
		network = "udp"
	}
	if strings.HasSuffix(mode, "6") {
		host = "::1"
	}
	return network, host
}

// talkTo checks that the restored testdata/inetsk.c serves at addr: a TCP listener
// answers a new client "hello", the bound UDP socket echoes a datagram.
func talkTo(t *testing.T, network, addr string) {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("connecting to %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	want := "hello\n"
	if _, err := c.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	if network == "udp" {
		want = "echo:hi\n"
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != want {
		t.Fatalf("%s answered %q, %v; want %q", addr, buf[:n], err, want)
	}
}

// TestRoundTripInetSockets dumps and restores testdata/inetsk.c once per state and lets it
// check itself: a TCP listener at 127.0.0.1 and one at [::1] (address, backlog, options)
// then accept a new client; a UDP socket bound and one connected to it, at 127.0.0.1 and
// at [::1], exchange datagrams and the bound one answers one from outside.
func TestRoundTripInetSockets(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/inetsk.c")
	for _, mode := range []string{"tcp4", "tcp6", "udp4", "udp6"} {
		t.Run(mode, func(t *testing.T) {
			network, host := inetMode(mode)
			port := freePort(t, network, host)
			p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, mode, fmt.Sprint(port))
			dir := dumpTo(t, p.Pid)
			socks := 0
			for _, fe := range readFiles(t, dir) {
				if fe.GetType() == fdinfo.FdTypes_INETSK {
					socks++
				}
			}
			if want := map[string]int{"tcp": 1, "udp": 2}[network]; socks != want {
				t.Fatalf("%d inet sockets in the set, want %d", socks, want)
			}
			off := savedPos(t, dir, p.Log)
			pids := restoreSet(t, dir, Options{})
			checkSelf(t, pids[0], p.Log, off)
			talkTo(t, network, net.JoinHostPort(host, fmt.Sprint(port)))
		})
	}
}

// TestCRIUInteropInetSockets: testdata/inetsk.c's TCP listeners and UDP sockets, dumped by
// one tool and restored by the other, check themselves and serve.
func TestCRIUInteropInetSockets(t *testing.T) {
	criu := criuBin(t)
	bin := testproc.Build(t, "testdata/inetsk.c")
	for _, mode := range []string{"tcp4", "tcp6", "udp4", "udp6"} {
		for _, way := range []string{"imgtool dump, CRIU restore", "CRIU dump, imgtool restore"} {
			t.Run(mode+"/"+way, func(t *testing.T) {
				byCRIU := strings.HasPrefix(way, "CRIU")
				network, host := inetMode(mode)
				port := freePort(t, network, host)
				p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, mode, fmt.Sprint(port))
				root, off := crossCheckpoint(t, criu, p, byCRIU)
				checkSelf(t, root, p.Log, off)
				talkTo(t, network, net.JoinHostPort(host, fmt.Sprint(port)))
			})
		}
	}
}
