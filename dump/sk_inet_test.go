package dump

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// loopbackPort returns a TCP and UDP port of 127.0.0.1 free at the moment.
func loopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestRefuseInetSockets: the inet sockets the dump cannot save are refused before
// anything is touched, every one at once, naming fd, addresses and why: both ends of an
// established TCP connection (without --tcp-established), a listener with a
// connection not accepted yet and the client in it, a UDP socket with a datagram queued, a
// connection in CLOSE_WAIT.
func TestRefuseInetSockets(t *testing.T) {
	for _, mode := range []string{"established", "pending", "udpqueue", "closewait"} {
		t.Run(mode, func(t *testing.T) {
			port := loopbackPort(t)
			at := fmt.Sprintf("127.0.0.1:%d", port)
			want := map[string]map[int]string{
				"established": {
					4: "TCP (IPv4) socket is a connection (ESTABLISHED) from 127.0.0.1:",
					5: "TCP (IPv4) socket is a connection (ESTABLISHED) from " + at + " to 127.0.0.1:",
				},
				"pending": {
					3: "TCP (IPv4) socket listening at " + at + ", with 1 connection(s) not accepted yet",
					4: "TCP (IPv4) socket is a connection (ESTABLISHED) from 127.0.0.1:",
				},
				"udpqueue":  {3: "UDP (IPv4) socket bound to " + at + " has datagrams queued in its receive queue: not supported"},
				"closewait": {3: "TCP (IPv4) socket is a connection (CLOSE_WAIT) from 127.0.0.1:"},
			}[mode]
			all := refusedAtOnce(t, "inetrefuse", mode, fmt.Sprint(port))
			if len(all) != len(want) {
				t.Errorf("%d refusals, want %d: %v", len(all), len(want), all)
			}
			for _, re := range all {
				w, ok := want[re.Fd]
				if !ok || !strings.Contains(re.Error(), w) || !strings.Contains(re.Error(), "socket:[") {
					t.Errorf("fd %d: %q, want %q", re.Fd, re.Error(), w)
				}
				if strings.Contains(w, "connection (") && !strings.Contains(re.Error(), "connected TCP sockets are saved only with --tcp-established (or closed with --tcp-close)") {
					t.Errorf("fd %d: %q does not name --tcp-established", re.Fd, re.Error())
				}
			}
		})
	}
}
