package dump

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
)

// zombieRetries is how many times a tree holding a zombie is put back and looked at again
// (5, 10, 15 ms: its parent may reap it in a moment) before the zombie is dumped as one.
const zombieRetries = 3

// zombie is a process of the tree that exited and was not reaped: CRIU dumps it as a
// pstree entry and a core with task_state TASK_DEAD and its exit code, nothing else.
type zombie struct {
	pid      int
	parent   *process
	stat     *procfs.Stat
	comm     string
	exitCode uint32 // the wait status, as /proc/PID/stat's exit_code (and CRIU) give it
}

// readZombie returns pid as a zombie when it is one (a dead process of one thread, not
// reaped), or nil.
func readZombie(pid int, parent *process) (*zombie, error) {
	path := procfs.Path(pid, "stat")
	b, err := procfs.ReadFile(path)
	if err != nil {
		return nil, nil // gone, or unreadable: the freeze reports it
	}
	st, err := procfs.ReadStat(path)
	if err != nil || !isZombie(st) {
		return nil, nil
	}
	if tids, err := procfs.ListNumeric(procfs.Path(pid, "task")); err != nil || len(tids) != 1 {
		return nil, nil // a dead leader whose other threads still run is not a zombie
	}
	z := &zombie{pid: pid, parent: parent, stat: st}
	if i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')'); i >= 0 && j > i {
		z.comm = string(b[i+1 : j])
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 52-2 {
		return nil, fmt.Errorf("%s: no exit_code field", path)
	}
	code, err := strconv.ParseUint(f[52-3], 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%s: exit_code %q: %w", path, f[52-3], err)
	}
	z.exitCode = uint32(code)
	return z, nil
}

// coreEntry is the zombie's core-PID.img, as CRIU's dump_one_zombie writes it.
func (z *zombie) coreEntry() *criu_core.CoreEntry {
	return &criu_core.CoreEntry{Mtype: criu_core.CoreEntry_X86_64.Enum(), Tc: &criu_core.TaskCoreEntry{
		TaskState: proto.Uint32(image.TaskDead), ExitCode: proto.Uint32(z.exitCode),
		Personality: proto.Uint32(0), Flags: proto.Uint32(0), BlkSigset: proto.Uint64(0),
		Comm: proto.String(z.comm),
	}}
}

// writeZombie writes the zombie's one image.
func (d *dumper) writeZombie(z *zombie) error {
	return d.writeImage(fmt.Sprintf("core-%d.img", z.pid), z.coreEntry())
}
