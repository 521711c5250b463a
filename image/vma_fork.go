package image

import (
	"slices"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
)

// Copy-on-write sharing between a parent and its child.
//
// After fork a child holds a copy of each private mapping of its parent, and the two share
// every page until one of them writes it. A restore keeps that sharing by forking each
// child from its restored parent: a child's mapping that is still the copy fork made is
// kept, and only the pages whose saved bytes differ are written (CRIU does the same,
// criu/mem.c, though CRIU keeps only mappings whose range has not changed). InheritedVMA is
// the one rule for "still the copy", used by dump to know which sharing a restore
// rebuilds (and to refuse the rest) and by restore to know which mappings it keeps.

// InheritedVMA reports whether child, a mapping of a process, can keep the part of its
// parent's mapping parent that fork copied where the two overlap: both private, of the
// same kind and file (sameFile, decided by the caller: both map the same file) at the same
// offsets, with flags that fork copies unchanged, advice the child can reach from the
// parent's (MadviseSteps), and not excluded from fork (MADV_DONTFORK). The ranges may
// differ (a heap or stack grown or shrunk since, a mapping split in one of them): the rest
// of the child's is mapped anew. Protections may differ too: mprotect changes them without
// touching the pages.
func InheritedVMA(parent, child *vma.VmaEntry, sameFile bool) bool {
	st := child.GetStatus()
	switch {
	case max(parent.GetStart(), child.GetStart()) >= min(parent.GetEnd(), child.GetEnd()):
		return false // no overlap
	case parent.GetStatus() != st || st&VMAAreaRegular == 0 || st&(VMAAreaVDSO|VMAAreaVVAR) != 0:
		return false
	case st&(VMAAnonPrivate|VMAFilePrivate) == 0:
		return false
	// VM_LOCKED is never inherited: each process locks its own.
	case (parent.GetFlags()^child.GetFlags())&^unix.MAP_LOCKED != 0:
		return false
	case child.GetFlags()&(unix.MAP_DROPPABLE|unix.MAP_HUGETLB) != 0:
		return false
	case parent.GetMadv()&(1<<unix.MADV_DONTFORK) != 0:
		return false
	}
	// The same file page at the same address in both (pgoff is a byte offset).
	samePages := parent.GetPgoff()-parent.GetStart() == child.GetPgoff()-child.GetStart()
	if st&VMAFilePrivate != 0 && (!sameFile || !samePages || parent.GetFdflags() != child.GetFdflags()) {
		return false
	}
	_, ok := MadviseSteps(parent.GetMadv(), child.GetMadv())
	return ok
}

// madvUndo is the advice that clears each advice bit of vma_entry.madv (1<<MADV_x).
// MADV_HUGEPAGE and MADV_NOHUGEPAGE clear each other only: no advice clears both.
var madvUndo = map[int]int{
	unix.MADV_RANDOM:     unix.MADV_NORMAL,
	unix.MADV_SEQUENTIAL: unix.MADV_NORMAL,
	unix.MADV_DONTFORK:   unix.MADV_DOFORK,
	unix.MADV_MERGEABLE:  unix.MADV_UNMERGEABLE,
	unix.MADV_DONTDUMP:   unix.MADV_DODUMP,
	unix.MADV_WIPEONFORK: unix.MADV_KEEPONFORK,
}

// MadviseSteps returns the madvise advice that turn a mapping advised as from into one
// advised as to (both vma_entry.madv bit sets: 1<<MADV_x for each advice in force), in
// order: first the advice that clear what from has and to lacks, then what to adds. It
// reports false when no advice reaches to (a huge-page advice cannot be taken back to
// none). From a fresh mapping (from 0) the steps are the advice of to.
func MadviseSteps(from, to uint64) ([]int, bool) {
	var steps []int
	add := to &^ from // advice to give after the undoing
	for bit := 0; bit < 64; bit++ {
		if from&(1<<bit) == 0 || to&(1<<bit) != 0 {
			continue
		}
		if bit == unix.MADV_HUGEPAGE && to&(1<<unix.MADV_NOHUGEPAGE) != 0 ||
			bit == unix.MADV_NOHUGEPAGE && to&(1<<unix.MADV_HUGEPAGE) != 0 {
			continue // the opposite advice, given below, clears it
		}
		undo, ok := madvUndo[bit]
		if !ok {
			return nil, false
		}
		if !slices.Contains(steps, undo) {
			steps = append(steps, undo)
		}
		if undo == unix.MADV_NORMAL {
			add |= to & (1<<unix.MADV_RANDOM | 1<<unix.MADV_SEQUENTIAL) // NORMAL cleared both
		}
	}
	for bit := 0; bit < 64; bit++ {
		if add&(1<<bit) != 0 {
			steps = append(steps, bit)
		}
	}
	return steps, true
}
