package restore

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
)

// TestRestoreCRIUMisc: the real CRIU set misc holds an eventfd, a timerfd, a signalfd, an
// epoll, a memfd, a UNIX socketpair with 21 queued bytes and a TCP socket listening at
// 127.0.0.1:47111 (fd 5). It restores whole: the listener is back at its address, with
// its backlog and options, and takes a new connection.
func TestRestoreCRIUMisc(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "misc")
	if c, err := net.DialTimeout("tcp", "127.0.0.1:47111", time.Second); err == nil {
		c.Close()
		t.Skip("something listens at 127.0.0.1:47111 already")
	}
	pids := restoreSet(t, copySet(t, criuSet(t, "misc")), Options{})
	local := sockOf(t, pids[0], 5)
	defer unix.Close(local)
	sa, err := unix.Getsockname(local)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := sa.(*unix.SockaddrInet4); !ok || a.Port != 47111 || a.Addr != [4]byte{127, 0, 0, 1} {
		t.Errorf("fd 5 bound at %#v, want 127.0.0.1:47111", sa)
	}
	if ti, err := unix.GetsockoptTCPInfo(local, unix.IPPROTO_TCP, unix.TCP_INFO); err != nil || ti.State != tcpListen || ti.Sacked != 4 {
		t.Errorf("fd 5: TCP_INFO %+v %v, want listening with a backlog of 4", ti, err)
	}
	if v, _ := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_REUSEADDR); v != 1 {
		t.Errorf("fd 5: SO_REUSEADDR %d, want 1", v)
	}
	c, err := net.DialTimeout("tcp", "127.0.0.1:47111", 5*time.Second)
	if err != nil {
		t.Fatalf("connecting to the restored listener: %v", err)
	}
	c.Close()
}

// TestRestoreCRIUTCPRefused: the real CRIU set tcp holds both ends of an ESTABLISHED TCP
// connection, which restore refuses without --tcp-established (or --tcp-close), naming
// the fds and their addresses (TestRestoreCRIUTCP restores it with the flag).
func TestRestoreCRIUTCPRefused(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "tcp")
	msg := refuseErr(t, criuSet(t, "tcp"), Options{}).Error()
	for _, want := range []string{"a TCP connection (ESTABLISHED) from 127.0.0.1:46160 to 127.0.0.1:47211", "restored only with --tcp-established (or closed with --tcp-close)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not say %q", msg, want)
		}
	}
}

// sockOf returns a copy of fd of pid (pidfd_getfd).
func sockOf(t *testing.T, pid, fd int) int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		t.Fatal(err)
	}
	return local
}

// TestRestoreCRIUMiscWithoutSockets: the misc set with its TCP socket taken out restores,
// and the eventfd, timerfd, signalfd, epoll (watching one end of the socketpair too) and
// the socketpair with its 21 queued bytes CRIU saved are back as the program made them;
// also with the eventfd and the epoll in the per-kind images older CRIU versions wrote
// (CRIU 4.2 still reads them).
func TestRestoreCRIUMiscWithoutSockets(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "misc")
	dir := copySet(t, criuSet(t, "misc"))
	rewriteImage(t, dir, "fdinfo-2.img", func(img *image.Image) {
		var keep []image.Entry
		for _, e := range img.Entries {
			if typ := e.Msg.(*fdinfo.FdinfoEntry).GetType(); typ != fdinfo.FdTypes_INETSK {
				keep = append(keep, e)
			}
		}
		img.Entries = keep
	})
	t.Run("files.img", func(t *testing.T) { checkMiscPolls(t, dir) })
	t.Run("per-kind images", func(t *testing.T) {
		// As CRIU wrote them before files.img: eventfd.img, eventpoll.img with the targets
		// in eventpoll-tfd.img.
		legacy := copySet(t, dir)
		var efd, epfd *image.Image
		rewriteImage(t, legacy, "files.img", func(img *image.Image) {
			efd = &image.Image{Kind: image.KindByName("EVENTFD_FILE"), Head: img.Head}
			epfd = &image.Image{Kind: image.KindByName("EVENTPOLL_FILE"), Head: img.Head}
			var keep []image.Entry
			for _, e := range img.Entries {
				fe := e.Msg.(*fdinfo.FileEntry)
				switch {
				case fe.Efd != nil:
					efd.Entries = append(efd.Entries, image.Entry{Msg: fe.Efd})
				case fe.Epfd != nil:
					epfd.Entries = append(epfd.Entries, image.Entry{Msg: fe.Epfd})
				default:
					keep = append(keep, e)
				}
			}
			img.Entries = keep
		})
		tfd := &image.Image{Kind: image.KindByName("EVENTPOLL_TFD"), Head: efd.Head}
		for _, e := range epfd.Entries {
			ep := e.Msg.(*eventpoll.EventpollFileEntry)
			for _, t := range ep.Tfd {
				t.Id = ep.Id
				tfd.Entries = append(tfd.Entries, image.Entry{Msg: t})
			}
			ep.Tfd = nil
		}
		for name, img := range map[string]*image.Image{"eventfd.img": efd, "eventpoll.img": epfd, "eventpoll-tfd.img": tfd} {
			f, err := os.Create(filepath.Join(legacy, name))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := img.WriteTo(f); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		checkMiscPolls(t, legacy)
	})
}

// checkMiscPolls restores the misc set without sockets and checks its eventfd, timerfd,
// signalfd and epoll.
func checkMiscPolls(t *testing.T, dir string) {
	t.Helper()
	setupFixtureFiles(t, "misc") // the log at its saved size again
	pids := restoreSet(t, dir, Options{})
	fdinfo := func(fd int) string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pids[0], fd))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for fd, want := range map[int][]string{
		6: {"flags:\t04002", "eventfd-count:               2a", "eventfd-semaphore: 0"},
		7: {"flags:\t04002", "clockid: 1", "it_interval: (5, 0)"},
		8: {"flags:\t04002", "sigmask:\t0000000000000200"},
		9: {"tfd:        6 events:       19 data:             1111", "tfd:        7 events:       19 data:             2222",
			"tfd:        4 events:       19 data:             3333"},
	} {
		got := fdinfo(fd)
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("fd %d: %q does not hold %q", fd, got, w)
			}
		}
	}
	// The socketpair: fd 4 (file id 10) holds the 21 bytes the program wrote into fd 3.
	for fd, want := range map[int]string{3: "", 4: "queued-in-unix-socket"} {
		if got := peekSocket(t, pids[0], fd); got != want {
			t.Errorf("fd %d: queued %q, want %q", fd, got, want)
		}
	}
}

// peekSocket returns what is queued in socket fd of pid, read through a copy without
// consuming it.
func peekSocket(t *testing.T, pid, fd int) string {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(local)
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(local, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err == unix.EAGAIN {
		return ""
	}
	if err != nil {
		t.Fatalf("fd %d: %v", fd, err)
	}
	return string(buf[:n])
}
