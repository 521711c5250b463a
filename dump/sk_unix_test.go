package dump

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/internal/testproc"
)

// TestRefuseUnixSockets: what a restore could not bring back is refused before any thread
// is seized, naming the fd and the reason: a peer outside the tree (without ExtUnixSk: any;
// with it, CRIU's --ext-unix-sk, those a restore could not connect to again), a descriptor
// in flight, a datagram queued from a socket with a name (a restore queues it from one
// without), a connection not accepted yet (the listener and the client), a socket whose
// file was renamed or moved since its bind, one bound to an absolute name in a chroot,
// sockets of other families.
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
	const without = "is held by no process of the tree: refused without --ext-unix-sk"
	const life = "pipe:[" // extunix's pipe to its orphan, fd 21
	const lifeWhy = "its read end is open outside the tree"
	for _, c := range []struct {
		args []string
		ext  bool // Options.ExtUnixSk
		want map[int]string
	}{
		{[]string{"outside", name}, false, map[int]string{3: without}},
		{[]string{"outside", name}, true, map[int]string{3: "and it is a stream connection: --ext-unix-sk takes datagram sockets only"}},
		{[]string{"extunix"}, false, map[int]string{3: without, 4: without, 5: without, 6: without, 7: without, 8: without, 21: lifeWhy}},
		// fd 8, an unconnected datagram socket with a name, is dumped.
		{[]string{"extunix"}, true, map[int]string{
			3:  "and it is a stream connection: --ext-unix-sk takes datagram sockets only",
			4:  "and is itself connected, to socket:[",
			5:  "/gone.sock is gone or is another socket's now: a restore could not connect to it",
			6:  `and is bound to "rel.sock", a name relative to its binder's working directory`,
			7:  "and has no name to connect to again (an end of a socketpair)",
			21: lifeWhy,
		}},
		{[]string{"renamed"}, false, map[int]string{
			3: `abs.sock.tmp", whose socket file is now /`,
			4: `bound to "rel.sock", whose socket file is now /`,
		}},
		{[]string{"chroot"}, false, map[int]string{3: `bound to "/in.sock" inside its chroot /`}},
		{[]string{"rights"}, false, map[int]string{4: "file descriptors in flight (SCM_RIGHTS"}},
		{[]string{"sender"}, false, map[int]string{3: `a datagram queued in it was sent by the socket named "@imgtool-unixrefuse-cli-`}},
		{[]string{"icon"}, false, map[int]string{
			3: "listening, with 1 connection(s) not accepted yet",
			4: "in the middle of a connect: its connection waits, not accepted yet, in the queue of listening socket:[",
		}},
		{[]string{"inet"}, false, map[int]string{
			5: "netlink sockets are not supported", 6: "packet sockets are not supported",
		}},
	} {
		t.Run(fmt.Sprintf("%s/ext=%v", c.args[0], c.ext), func(t *testing.T) {
			all, p := refusedProc(t, Options{ExtUnixSk: c.ext}, "unixrefuse", c.args...)
			reapOrphan(t, p)
			if len(all) != len(c.want) {
				t.Errorf("%d refusals, want %d: %v", len(all), len(c.want), all)
			}
			for _, re := range all {
				kind := "socket:["
				if c.want[re.Fd] == lifeWhy {
					kind = life
				}
				if w, ok := c.want[re.Fd]; !ok || !strings.Contains(re.Error(), w) || !strings.Contains(re.Error(), kind) {
					t.Errorf("fd %d: %q, want %q", re.Fd, re.Error(), w)
				}
			}
		})
	}
}

// reapOrphan kills and reaps, when the test ends, the process a test program left out of
// its tree (an "orphan=PID" line of its log): reparented to the test, which reaps it.
func reapOrphan(t *testing.T, p *testproc.Proc) {
	t.Helper()
	var orphan int
	for _, l := range strings.Split(p.ReadLog(t), "\n") {
		if n, err := strconv.Atoi(strings.TrimPrefix(l, "orphan=")); err == nil && strings.HasPrefix(l, "orphan=") {
			orphan = n
		}
	}
	if orphan > 0 {
		t.Cleanup(func() { testproc.KillAndReap([]int{orphan}) })
	}
}

// TestOrderUnixPeers: files.img holds each UNIX socket after its peer (CRIU's restore
// resolves a peer only among the entries before it), but for two sockets connected to
// each other; other entries keep their places.
func TestOrderUnixPeers(t *testing.T) {
	sk := func(ino, peer uint32) *fdinfo.FileEntry {
		return &fdinfo.FileEntry{Id: proto.Uint32(ino), Usk: &sk_unix.UnixSkEntry{Ino: proto.Uint32(ino), Peer: proto.Uint32(peer)}}
	}
	reg := &fdinfo.FileEntry{Id: proto.Uint32(99)}
	for _, c := range []struct {
		name string
		in   []*fdinfo.FileEntry
		want []uint32 // ids, in order
	}{
		{"connected to a named socket", []*fdinfo.FileEntry{sk(1, 2), reg, sk(2, 0)}, []uint32{99, 2, 1}},
		{"an external peer, two sockets", []*fdinfo.FileEntry{sk(1, 9), sk(3, 9), reg, sk(9, 0)}, []uint32{99, 9, 1, 3}},
		{"a socketpair", []*fdinfo.FileEntry{sk(1, 2), sk(2, 1)}, []uint32{1, 2}},
		{"connected to itself", []*fdinfo.FileEntry{sk(1, 1), reg}, []uint32{1, 99}},
		{"a chain", []*fdinfo.FileEntry{sk(1, 2), sk(2, 3), sk(3, 0)}, []uint32{3, 2, 1}},
		{"a peer not in the set", []*fdinfo.FileEntry{sk(1, 5), reg}, []uint32{1, 99}},
		{"a ring", []*fdinfo.FileEntry{reg, sk(1, 2), sk(2, 3), sk(3, 1)}, []uint32{99, 1, 2, 3}},
	} {
		var got []uint32
		for _, f := range orderUnixPeers(c.in) {
			got = append(got, f.GetId())
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
