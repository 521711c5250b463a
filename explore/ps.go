package explore

import (
	"fmt"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"

	"github.com/imgtool/imgtool/imgset"
)

// Process is one task of the set's process tree.
type Process struct {
	PID      int    `json:"pid"`
	PPID     int    `json:"ppid"`
	PGID     int    `json:"pgid"`
	SID      int    `json:"sid"`
	Comm     string `json:"comm"`     // from core-PID.img
	Threads  []int  `json:"threads"`  // thread ids, the main thread first
	Children []int  `json:"children"` // child pids, in pstree.img order
	Depth    int    `json:"depth"`    // 0 for a root; crit indents COMM by 4 per level
}

// PS returns the set's processes in tree order: each root (a task whose parent is not
// in the set) followed depth-first by its descendants, children in pstree.img order,
// as crit x ps prints them.
func PS(set *imgset.Set) ([]Process, error) {
	return newLoader(set).ps()
}

func (l *loader) pstree() ([]*pstree.PstreeEntry, error) {
	img, err := l.image("pstree.img", "PSTREE")
	if err != nil {
		return nil, err
	}
	list, err := entries[*pstree.PstreeEntry](img, "pstree.img")
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, &FileError{File: "pstree.img", Reason: "no processes"}
	}
	seen := map[uint32]bool{}
	for _, p := range list {
		if p.GetPid() == 0 {
			return nil, &FileError{File: "pstree.img", Reason: "a process with pid 0"}
		}
		if seen[p.GetPid()] {
			return nil, &FileError{File: "pstree.img", Reason: fmt.Sprintf("pid %d listed twice", p.GetPid())}
		}
		seen[p.GetPid()] = true
	}
	return list, nil
}

func (l *loader) ps() ([]Process, error) {
	list, err := l.pstree()
	if err != nil {
		return nil, err
	}
	byPID := map[int]*Process{}
	var inOrder []*Process
	for _, p := range list {
		pid := int(p.GetPid())
		name := fmt.Sprintf("core-%d.img", pid)
		core, err := first[*criu_core.CoreEntry](l, name, "CORE")
		if err != nil {
			return nil, err
		}
		pr := &Process{
			PID: pid, PPID: int(p.GetPpid()), PGID: int(p.GetPgid()), SID: int(p.GetSid()),
			Comm: core.GetTc().GetComm(), Threads: []int{}, Children: []int{},
		}
		for _, t := range p.GetThreads() {
			pr.Threads = append(pr.Threads, int(t))
		}
		byPID[pid] = pr
		inOrder = append(inOrder, pr)
	}
	var roots []*Process
	for _, p := range inOrder {
		if parent, ok := byPID[p.PPID]; ok && p.PPID != p.PID {
			parent.Children = append(parent.Children, p.PID)
		} else {
			roots = append(roots, p)
		}
	}
	out := make([]Process, 0, len(inOrder))
	placed := map[int]bool{}
	var walk func(p *Process, depth int)
	walk = func(p *Process, depth int) {
		if placed[p.PID] {
			return
		}
		placed[p.PID] = true
		p.Depth = depth
		out = append(out, *p)
		for _, c := range p.Children {
			walk(byPID[c], depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	if len(out) != len(inOrder) {
		return nil, &FileError{File: "pstree.img", Reason: "the parent links form a cycle"}
	}
	return out, nil
}
