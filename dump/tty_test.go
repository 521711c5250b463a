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
