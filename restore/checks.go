package restore

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/buildid"
	"github.com/imgtool/imgtool/internal/fpu"
	"github.com/imgtool/imgtool/internal/procfs"
)

// precheck refuses, before any process exists, every set that cannot be restored here:
// ids in use, missing or changed files, FPU state this CPU cannot load, and what restore
// does not support.
func precheck(pl *plan, xs fpu.Layout) error {
	if err := checkGhosts(pl); err != nil { // deleted files: ghost.go
		return err
	}
	if err := checkLinks(pl); err != nil { // files saved through a link: remap.go
		return err
	}
	if err := checkGroups(pl); err != nil {
		return err
	}
	if err := checkIdsFree(pl); err != nil {
		return err
	}
	// Every process of this kernel has the same vDSO and vvar: imgtool's own tell what the
	// restored processes will get.
	self, err := procfs.ReadMaps(os.Getpid())
	if err != nil {
		return err
	}
	if err := checkKernelSpecials(pl, kernelSpecialsIn(self)); err != nil {
		return err
	}
	if err := checkFdLimit(pl); err != nil {
		return err
	}
	vms, fileTables := map[uint32]int{}, map[uint32]int{}
	files := map[uint32]string{} // reg file id -> what uses it, for error messages
	var refusedFds []string
	for _, p := range pl.procs {
		if other, ok := vms[p.ids.GetVmId()]; ok {
			return fmt.Errorf("pids %d and %d share their memory (CLONE_VM): not supported", other, p.pid)
		}
		vms[p.ids.GetVmId()] = p.pid
		if other, ok := fileTables[p.ids.GetFilesId()]; ok && !p.sharesFiles() {
			return fmt.Errorf("pids %d and %d share their fd table (CLONE_FILES), not as a parent and its child: not supported", other, p.pid)
		}
		fileTables[p.ids.GetFilesId()] = p.pid
		if err := checkCores(p, xs); err != nil {
			return err
		}
		if err := checkMemory(pl, p, files); err != nil {
			return err
		}
		files[p.mm.GetExeFileId()] = fmt.Sprintf("the executable of pid %d", p.pid)
		files[p.fs.GetCwdId()] = fmt.Sprintf("the working directory of pid %d", p.pid)
		files[p.fs.GetRootId()] = fmt.Sprintf("the root directory of pid %d", p.pid)
		for _, fd := range p.fds {
			if err := checkFd(pl, p, fd, files); err != nil {
				refusedFds = append(refusedFds, err.Error())
			}
		}
		for _, pe := range p.pagemap.Entries {
			if pe.GetFlags()&image.PagemapParent != 0 {
				return fmt.Errorf("pagemap-%d.img: pages at %#x are in a parent set (incremental dump): not supported", p.pid, pe.GetVaddr())
			}
			if pe.GetFlags()&image.PagemapPresent == 0 {
				return fmt.Errorf("pagemap-%d.img: pages at %#x are not in the set (flags %#x)", p.pid, pe.GetVaddr(), pe.GetFlags())
			}
		}
	}
	if len(refusedFds) > 0 { // every fd of the tree that stands in the way, at once
		return errors.New(strings.Join(refusedFds, "; "))
	}
	ids := make([]uint32, 0, len(files))
	for id := range files {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		fe := pl.files[id]
		if fe == nil {
			return fmt.Errorf("%s: file id %d is not in files.img", files[id], id)
		}
		if fe.GetType() != fdinfo.FdTypes_REG || fe.Reg == nil || pl.ghosts[id] != nil || pl.links[id] != nil {
			continue // a ghost is made from the set (checkGhosts), a linked file checked through its link (checkLinks)
		}
		if err := checkRegFile(fe.Reg); err != nil {
			return fmt.Errorf("%s: %w", files[id], err)
		}
	}
	return nil
}

// checkIdsFree refuses when a PID or TID of the set belongs to a live task, or lies beyond
// what this machine can give (pid_max).
func checkIdsFree(pl *plan) error {
	pidMax, err := procfs.PidMax()
	if err != nil {
		return err
	}
	for _, p := range pl.all {
		ids := p.tids
		if g := pl.groupHelperFor(p); g != 0 {
			ids = append(ids[:len(ids):len(ids)], g) // the helper leading its group (group.go)
		}
		for _, tid := range ids {
			if tid >= pidMax {
				return fmt.Errorf("pid %d is beyond this machine's pid_max (%d)", tid, pidMax)
			}
			if err := idFree(tid); err != nil {
				return err
			}
		}
	}
	return nil
}

// idFree fails when tid belongs to a task. A zombie (a process of the set its dump just
// killed, say, that its parent has not reaped yet) is waited for, up to pidRetry.
func idFree(tid int) error {
	deadline := time.Now().Add(pidRetry)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", tid)); err != nil {
			return nil
		}
		// Unreadable: gone meanwhile, most likely; looked at again.
		st, err := procfs.ReadStatus(procfs.Path(tid, "status"))
		if s := st["State"]; err == nil && (s == "" || (s[0] != 'Z' && s[0] != 'X')) {
			return fmt.Errorf("pid %d is in use (%s, state %s)", tid, st["Name"], s)
		}
		if time.Now().After(deadline) && err != nil {
			return fmt.Errorf("pid %d is in use", tid)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d is in use: a process that exited, not reaped by its parent (pid %s) after %v", tid, st["PPid"], pidRetry)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkFdLimit refuses a set whose fd numbers the restore cannot use under this process's
// hard RLIMIT_NOFILE (which the restore cannot raise without CAP_SYS_RESOURCE).
func checkFdLimit(pl *plan) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if need := fdsNeeded(pl); lim.Max < need {
		return fmt.Errorf("the set needs fd numbers up to %d, above this system's limit %d", need, lim.Max)
	}
	return nil
}

// checkCores checks each thread's core image.
func checkCores(p *procPlan, xs fpu.Layout) error {
	tc := p.leaderCore().Tc
	switch tc.GetTaskState() {
	case image.TaskAlive, image.TaskStopped:
	default:
		return fmt.Errorf("core-%d.img: unknown task state %d", p.pid, tc.GetTaskState())
	}
	if rl := tc.GetRlimits().GetRlimits(); len(rl) > image.NRlimits {
		return fmt.Errorf("core-%d.img: %d resource limits, at most %d", p.pid, len(rl), image.NRlimits)
	}
	for i, c := range p.cores {
		tid := p.tids[i]
		if c.ThreadCore == nil {
			return fmt.Errorf("core-%d.img: no thread core", tid)
		}
		if c.ThreadInfo.Gpregs.GetMode() != 1 { // NATIVE
			return fmt.Errorf("thread %d runs 32-bit code: not supported", tid)
		}
		if err := xs.Check(c.ThreadInfo.Fpregs); err != nil {
			return fmt.Errorf("core-%d.img: %w", tid, err)
		}
	}
	return nil
}

// checkMemory checks that every VMA is of a kind restore maps, and notes the files mapped.
func checkMemory(pl *plan, p *procPlan, files map[uint32]string) error {
	if len(p.mm.Aios) > 0 {
		return fmt.Errorf("pid %d has AIO rings: not supported", p.pid)
	}
	const unsupported = image.VMAAreaSysVIPC | image.VMAAreaSocket | image.VMAAreaAIORing | image.VMAExtPlugin | image.VMAAreaUnsupp
	for _, v := range p.mm.Vmas {
		st := v.GetStatus()
		// Named only when needed: 20,000 mappings spent a tenth of a restore's check in
		// Sprintf.
		what := func() string { return fmt.Sprintf("pid %d: mapping %#x-%#x", p.pid, v.GetStart(), v.GetEnd()) }
		if v.GetStart() >= v.GetEnd() || v.GetStart()%image.PageSize != 0 || v.GetEnd()%image.PageSize != 0 {
			return fmt.Errorf("%s: bad range", what())
		}
		if st&unsupported != 0 {
			return fmt.Errorf("%s: unsupported kind (status %#x)", what(), st)
		}
		if st&image.VMAAreaRegular == 0 || st&(image.VMAAreaVDSO|image.VMAAreaVVAR|image.VMAAnonPrivate|image.VMAAnonShared) != 0 {
			continue
		}
		if st&(image.VMAFilePrivate|image.VMAFileShared) == 0 {
			return fmt.Errorf("%s: unknown kind (status %#x)", what(), st)
		}
		fe := pl.files[uint32(v.GetShmid())]
		if fe == nil {
			return fmt.Errorf("%s: file id %d is not in files.img", what(), v.GetShmid())
		}
		switch fe.GetType() {
		case fdinfo.FdTypes_REG:
			files[fe.GetId()] = what()
		case fdinfo.FdTypes_MEMFD:
			if pl.memfds[uint64(fe.Memfd.GetInodeId())] == nil {
				return fmt.Errorf("%s: memfd inode %d is not in memfd.img", what(), fe.Memfd.GetInodeId())
			}
		default:
			return fmt.Errorf("%s: maps a %v file: not supported", what(), fe.GetType())
		}
	}
	return nil
}

// checkFd checks that an fd is of a kind restore recreates.
func checkFd(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, files map[uint32]string) error {
	what := fmt.Sprintf("pid %d fd %d", p.pid, fd.GetFd())
	fe := pl.files[fd.GetId()]
	if fe == nil {
		return fmt.Errorf("%s: file id %d is not in files.img", what, fd.GetId())
	}
	if fe.GetType() != fd.GetType() {
		return fmt.Errorf("%s: fdinfo says %v, files.img says %v", what, fd.GetType(), fe.GetType())
	}
	k := fdKinds[fe.GetType()]
	if k == nil {
		return fmt.Errorf("%s: %v files are not supported", what, fe.GetType())
	}
	return k.check(pl, p, fd, fe, what, files)
}

// checkRegFile checks that a file is where the set says, as it was: mode, size and (for
// ELF files CRIU recorded one for) GNU build id.
func checkRegFile(r *regfile.RegFileEntry) error {
	name := r.GetName()
	var st unix.Stat_t
	if err := unix.Stat(name, &st); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if r.Mode != nil && st.Mode != r.GetMode() {
		return fmt.Errorf("%s has changed: mode %#o, the set says %#o", name, st.Mode, r.GetMode())
	}
	if r.Size != nil && st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) != r.GetSize() {
		return fmt.Errorf("%s has changed: size %d, the set says %d", name, st.Size, r.GetSize())
	}
	if len(r.BuildId) > 0 {
		id, err := buildid.Read(name)
		if err != nil {
			return fmt.Errorf("%s: reading its build id: %w", name, err)
		}
		if !buildid.Matches(id, r.BuildId) {
			return fmt.Errorf("%s has changed: build id %x, the set says %x", name, id, r.BuildId)
		}
	}
	return nil
}
