package dump

import (
	"errors"
	"fmt"
	"strconv"
	"unsafe"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/internal/procfs"
)

// Seccomp, as CRIU's seccomp.c: a thread in strict mode (1) is recorded as such; a thread
// in filter mode (2) has its filters read with PTRACE_SECCOMP_GET_FILTER (0 is the newest)
// and their flags with PTRACE_SECCOMP_GET_METADATA, and saved oldest first in seccomp.img,
// each naming the one installed before it (prev); the thread's core names its newest
// (seccomp_filter). When every thread of a process has the same filters, as after
// SECCOMP_FILTER_FLAG_TSYNC, only the leader's are saved, flagged TSYNC, and the others'
// mode is left 0, as CRIU does: the restored leader installs them for all its threads, and
// a later TSYNC of the program still finds one filter tree. A thread with filters is
// seized with PTRACE_O_SUSPEND_SECCOMP, so that the dump's injected calls pass (CRIU's
// compel does the same). A filter made with SECCOMP_FILTER_FLAG_NEW_LISTENER (a user
// notification fd) is refused: nothing can give the listener back.

const (
	ptraceSeccompGetFilter   = 0x420c
	ptraceSeccompGetMetadata = 0x420d

	seccompModeStrict = 1
	seccompModeFilter = 2

	seccompFlagTsync       = 1 // SECCOMP_FILTER_FLAG_TSYNC
	seccompFlagLog         = 2 // SECCOMP_FILTER_FLAG_LOG
	seccompFlagSpecAllow   = 4 // SECCOMP_FILTER_FLAG_SPEC_ALLOW
	seccompFlagNewListener = 8 // SECCOMP_FILTER_FLAG_NEW_LISTENER

	bpfMaxInsns = 4096 // BPF_MAXINSNS: the longest filter the kernel takes
	sockFilter  = 8    // bytes of one struct sock_filter
)

// seccompFilter is one filter of a thread: its BPF program and the flags it was made with.
type seccompFilter struct {
	prog  []byte
	flags uint64
}

// seccompMode is the seccomp mode of a thread by its status (the Seccomp line).
func seccompMode(st procfs.Status) (int, error) {
	if st["Seccomp"] == "" {
		return 0, nil
	}
	return strconv.Atoi(st["Seccomp"])
}

// readSeccompFilters returns the filters of a stopped thread in filter mode, oldest first.
func readSeccompFilters(pid, tid int) ([]seccompFilter, error) {
	var out []seccompFilter
	for i := 0; ; i++ {
		n, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceSeccompGetFilter, uintptr(tid), uintptr(i), 0, 0, 0)
		if errors.Is(e, unix.ENOENT) {
			break
		}
		if e != 0 {
			return nil, fmt.Errorf("thread %d: reading seccomp filter %d: %w", tid, i, e)
		}
		if n == 0 || n > bpfMaxInsns {
			return nil, fmt.Errorf("thread %d: seccomp filter %d has %d instructions", tid, i, n)
		}
		prog := make([]byte, n*sockFilter)
		if _, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceSeccompGetFilter, uintptr(tid), uintptr(i), uintptr(unsafe.Pointer(&prog[0])), 0, 0); e != 0 {
			return nil, fmt.Errorf("thread %d: reading seccomp filter %d: %w", tid, i, e)
		}
		meta := struct{ off, flags uint64 }{off: uint64(i)}
		if _, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceSeccompGetMetadata, uintptr(tid), unsafe.Sizeof(meta), uintptr(unsafe.Pointer(&meta)), 0, 0); e != 0 {
			return nil, fmt.Errorf("thread %d: reading the flags of seccomp filter %d: %w", tid, i, e)
		}
		if meta.flags&seccompFlagNewListener != 0 {
			return nil, refuse(pid, -1, fmt.Sprintf("thread %d seccomp filter %d", tid, i), "it notifies a listener (SECCOMP_FILTER_FLAG_NEW_LISTENER), which a restore cannot give back")
		}
		out = append([]seccompFilter{{prog: prog, flags: meta.flags & (seccompFlagLog | seccompFlagSpecAllow)}}, out...)
	}
	return out, nil
}

// sameSeccomp reports whether every thread of p has the leader's filters.
func sameSeccomp(p *process) bool {
	l := p.threads[0]
	for _, t := range p.threads[1:] {
		if t.seccompMode != l.seccompMode || len(t.seccompFilters) != len(l.seccompFilters) {
			return false
		}
		for i, f := range t.seccompFilters {
			if string(f.prog) != string(l.seccompFilters[i].prog) || f.flags != l.seccompFilters[i].flags {
				return false
			}
		}
	}
	return true
}

// seccompState numbers the filters of the tree for seccomp.img and each thread's core.
type seccompState struct {
	entry  seccomp.SeccompEntry
	newest map[int]uint32 // tid -> index of its newest filter
	mode   map[int]int    // tid -> mode recorded
}

// collectSeccomp lays out seccomp.img for the stopped tree.
func collectSeccomp(procs []*process) *seccompState {
	s := &seccompState{newest: map[int]uint32{}, mode: map[int]int{}}
	for _, p := range procs {
		tsync := len(p.threads) > 1 && p.threads[0].seccompMode == seccompModeFilter && sameSeccomp(p)
		for i, t := range p.threads {
			if tsync && i > 0 {
				continue // the leader's TSYNC gives them theirs
			}
			s.mode[t.tid] = t.seccompMode
			for j, f := range t.seccompFilters {
				flags := uint32(f.flags)
				if tsync {
					flags |= seccompFlagTsync
				}
				e := &seccomp.SeccompFilter{Filter: f.prog, Flags: proto.Uint32(flags)}
				if j > 0 {
					e.Prev = proto.Uint32(uint32(len(s.entry.SeccompFilters) - 1))
				}
				s.entry.SeccompFilters = append(s.entry.SeccompFilters, e)
			}
			if len(t.seccompFilters) > 0 {
				s.newest[t.tid] = uint32(len(s.entry.SeccompFilters) - 1)
			}
		}
	}
	return s
}

// setCore records a thread's mode and newest filter in its core.
func (s *seccompState) setCore(tid int, tc *criu_core.ThreadCoreEntry) {
	if m := s.mode[tid]; m != 0 {
		tc.SeccompMode = criu_core.SeccompMode(m).Enum()
		if f, ok := s.newest[tid]; ok {
			tc.SeccompFilter = proto.Uint32(f)
		}
	}
}
