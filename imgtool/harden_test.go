package imgtool

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgtool/imgtool/internal/testproc"
)

// TestNoCoreDumps: the real binary, running as an ordinary user, is not dumpable (its
// /proc entries belong to root, as for any non-dumpable process) and its soft core limit
// is 0: nothing of its keys or pages can end up in a core file.
func TestNoCoreDumps(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running the binary as another user needs root")
	}
	bin := testproc.BuildImgtool(t)               // in a folder other users can read
	cmd := exec.Command(bin, "decode", "-i", "-") // blocks reading stdin
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	pid := strconv.Itoa(cmd.Process.Pid)
	// Until imgtool's main has run, the process is the test binary's fork or imgtool's
	// start-up: poll until it is non-dumpable (its /proc files belong to root), or fail.
	var st syscall.Stat_t
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		exe, _ := os.Readlink("/proc/" + pid + "/exe")
		if err := syscall.Stat("/proc/"+pid+"/mem", &st); err != nil {
			t.Fatal(err)
		}
		if exe == bin && st.Uid == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/proc/%s/mem belongs to uid %d: the process is dumpable", pid, st.Uid)
		}
	}
	limits, err := os.ReadFile("/proc/" + pid + "/limits")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(limits), "Max core file size        0 ") {
		t.Errorf("core limit not 0:\n%s", limits)
	}
}
