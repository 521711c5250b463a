package nftables

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/imgtool/imgtool/internal/testproc"
)

func TestTableName(t *testing.T) {
	// As CRIU 4.2 named the table of the bundled tcp set's dump.
	if got := TableName("51018cca-6b87-4960-9bdf-877f17fbf837"); got != "CRIU-51018cca-6b87-4960-9b" {
		t.Errorf("TableName = %q", got)
	}
}

// TestLock: a loopback connection locked in a table passes nothing either way; once the
// table is deleted, what was sent meanwhile arrives (TCP sends it again). Deleting it
// again is no error. Over IPv4 and IPv6.
func TestLock(t *testing.T) {
	testproc.RequireRoot(t)
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Skip(err)
			}
			defer l.Close()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			table := TableName(fmt.Sprintf("imgtool-test-%d", time.Now().UnixNano()))
			if err := Create(table); err != nil {
				t.Fatal(err)
			}
			defer Delete(table)
			local := netip.MustParseAddrPort(c.LocalAddr().String())
			remote := netip.MustParseAddrPort(c.RemoteAddr().String())
			if err := Lock(table, local, remote); err != nil {
				t.Fatal(err)
			}
			for _, way := range []struct{ from, to net.Conn }{{c, s}, {s, c}} {
				if _, err := way.from.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
				way.to.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if n, err := way.to.Read(make([]byte, 1)); err == nil {
					t.Fatalf("%d bytes passed the lock", n)
				}
			}
			if err := Delete(table); err != nil {
				t.Fatal(err)
			}
			for _, to := range []net.Conn{s, c} {
				to.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := to.Read(make([]byte, 1)); err != nil {
					t.Fatalf("after the unlock: %v", err)
				}
			}
			if err := Delete(table); err != nil {
				t.Errorf("deleting it again: %v", err)
			}
		})
	}
}
