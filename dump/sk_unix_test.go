package dump

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// TestRefuseUnixSockets: what a restore could not bring back is refused before any thread
// is seized, naming the fd and the reason: a peer outside the tree, a descriptor in flight,
// a connection not accepted yet (the listener and the client), sockets of other families.
func TestRefuseUnixSockets(t *testing.T) {
	name := fmt.Sprintf("imgtool-outside-%d", os.Getpid())
	ln, err := net.Listen("unix", "@"+name)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			// The program waits for this byte: once read, its connection is accepted.
			c.Write([]byte{'!'})
		}
	}()
	for _, c := range []struct {
		args []string
		want map[int]string
	}{
		{[]string{"outside", name}, map[int]string{3: "is held by no process of the tree"}},
		{[]string{"rights"}, map[int]string{4: "file descriptors in flight (SCM_RIGHTS"}},
		{[]string{"icon"}, map[int]string{
			3: "listening, with 1 connection(s) not accepted yet",
			4: "in the middle of a connect: its connection waits, not accepted yet, in the queue of listening socket:[",
		}},
		{[]string{"inet"}, map[int]string{
			5: "netlink sockets are not supported", 6: "packet sockets are not supported",
		}},
	} {
		t.Run(c.args[0], func(t *testing.T) {
			all := refusedAtOnce(t, "unixrefuse", c.args...)
			if len(all) != len(c.want) {
				t.Errorf("%d refusals, want %d: %v", len(all), len(c.want), all)
			}
			for _, re := range all {
				if w, ok := c.want[re.Fd]; !ok || !strings.Contains(re.Error(), w) || !strings.Contains(re.Error(), "socket:[") {
					t.Errorf("fd %d: %q, want %q", re.Fd, re.Error(), w)
				}
			}
		})
	}
}
