package dump

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/ptrace"
	"github.com/imgtool/imgtool/internal/testproc"
)

// TestDumpShellJob: a process whose controlling terminal belongs to a session led
// outside the tree (testdata/tty.c shell: the child of a session leader holding the pty)
// is refused before anything is seized, naming --shell-job; with ShellJob it is dumped,
// its terminal saved as a slave without its master.
func TestDumpShellJob(t *testing.T) {
	tg := launch(t, "tty", "shell")
	m := regexp.MustCompile(`child=(\d+)`).FindStringSubmatch(tg.ReadLog(t))
	if m == nil {
		t.Fatalf("tty.c: %s", tg.ReadLog(t))
	}
	child, _ := strconv.Atoi(m[1])
	seized := seizes.Load()
	err := Dump(context.Background(), Options{Pid: child, LeaveRunning: true}, newDirSink(t))
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "use --shell-job") || !strings.Contains(err.Error(), "fd 4 is /dev/pts/") {
		t.Fatalf("err = %v, want refusals of the controlling terminal and of fd 4, naming --shell-job", err)
	}
	if n := seizes.Load() - seized; n != 0 {
		t.Errorf("the refusal came after %d thread(s) were seized", n)
	}
	s := newDirSink(t)
	if err := Dump(context.Background(), Options{Pid: child, LeaveRunning: true, ShellJob: true}, s); err != nil {
		t.Fatalf("dump --shell-job: %v", err)
	}
	infos := entries[*tty.TtyInfoEntry](t, s.dir, "tty-info.img")
	if len(infos) != 1 || infos[0].GetId()%2 != 0 || infos[0].GetSid() != uint32(tg.Pid) || infos[0].Termios == nil {
		t.Fatalf("tty-info.img: %v, want the slave alone, in session %d", infos, tg.Pid)
	}
	var ttys int
	for _, f := range entries[*fdinfo.FileEntry](t, s.dir, "files.img") {
		if f.GetType() == fdinfo.FdTypes_TTY {
			ttys++
		}
	}
	if ttys != 1 || !testproc.Alive(child) {
		t.Errorf("%d tty files, child alive %v", ttys, testproc.Alive(child))
	}
}

// TestFixRestartPoll: a poll without a timeout interrupted by the freeze is saved to run
// again (script(1), the pty master's keeper, takes EINTR from its poll for an error and
// ends its job); with a timeout it returns EINTR, as CRIU saves it.
func TestFixRestartPoll(t *testing.T) {
	for _, c := range []struct {
		timeout uint64
		rax     int64
		rip     uint64
	}{{0xffffffff, unix.SYS_POLL, 0x1000 - 2}, {500, -int64(unix.EINTR), 0x1000}} {
		restart := int64(-ptrace.RestartBlock)
		r := fixRestart(unix.PtraceRegs{Orig_rax: unix.SYS_POLL, Rax: uint64(restart), Rdx: c.timeout, Rip: 0x1000})
		if int64(r.Rax) != c.rax || r.Rip != c.rip {
			t.Errorf("poll timeout %#x: rax %d rip %#x, want %d %#x", c.timeout, int64(r.Rax), r.Rip, c.rax, c.rip)
		}
	}
}
