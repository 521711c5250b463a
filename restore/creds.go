package restore

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
	"golang.org/x/sys/unix"
)

func unsafePointer[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }

// capWord joins CRIU's two u32 words of a capability set.
func capWord(w []uint32) uint64 {
	var v uint64
	if len(w) > 0 {
		v = uint64(w[0])
	}
	if len(w) > 1 {
		v |= uint64(w[1]) << 32
	}
	return v
}

// credsState is a thread's credentials in comparable form.
type credsState struct {
	uids, gids              [4]uint32 // real, effective, saved, filesystem
	groups                  []uint32
	inh, prm, eff, bnd, amb uint64
	secbits, noNewPrivs     uint32
}

func savedCreds(c *creds.CredsEntry) credsState {
	g := slices.Clone(c.Groups)
	slices.Sort(g)
	return credsState{
		uids:   [4]uint32{c.GetUid(), c.GetEuid(), c.GetSuid(), c.GetFsuid()},
		gids:   [4]uint32{c.GetGid(), c.GetEgid(), c.GetSgid(), c.GetFsgid()},
		groups: g,
		inh:    capWord(c.CapInh), prm: capWord(c.CapPrm), eff: capWord(c.CapEff),
		bnd: capWord(c.CapBnd), amb: capWord(c.CapAmb),
		secbits: c.GetSecbits(), noNewPrivs: c.GetNoNewPrivs(),
	}
}

// inheritedState is what every restored process has from the restore's helper until its
// own restore changes it (startProcess, finishProcess): credentials, ignored signals, audit login uid,
// oom_score_adj and resource limits. Every process is cloned (createTree) before any is
// restored, so each has what the root has then: read once, from the root, before the
// first startProcess (reading each process's status, loginuid, oom_score_adj and 16
// limits was a tenth of restoring a 200-process tree's state).
type inheritedState struct {
	creds       credsState
	sigIgn      uint64
	loginuid    uint32
	hasLoginuid bool // false without audit support: nothing to restore into
	oomScoreAdj string
	rlimits     [image.NRlimits]unix.Rlimit
}

// inheritedKeys are the lines of a status file inheritedState reads.
var inheritedKeys = []string{"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "SigIgn"}

// readInherited reads inheritedState from the root, which exists and is not restored yet.
func (r *restorer) readInherited() error {
	root := r.procs[0].pid
	st, err := procfs.ReadStatusKeys(procfs.Path(root, "status"), inheritedKeys)
	if err != nil {
		return err
	}
	in := &inheritedState{}
	if in.creds, err = parseCreds(root, st); err != nil {
		return err
	}
	if in.sigIgn, err = st.Hex("SigIgn"); err != nil {
		return err
	}
	if b, err := procfs.ReadFile(procfs.Path(root, "loginuid")); err == nil {
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil {
			return fmt.Errorf("/proc/%d/loginuid: %q", root, b)
		}
		in.loginuid, in.hasLoginuid = uint32(v), true
	}
	b, err := procfs.ReadFile(procfs.Path(root, "oom_score_adj"))
	if err != nil {
		return err
	}
	in.oomScoreAdj = strings.TrimSpace(string(b))
	for res := range in.rlimits {
		if err := unix.Prlimit(root, res, nil, &in.rlimits[res]); err != nil {
			return fmt.Errorf("resource limit %s: reading the current one: %w", image.RlimitName(res), err)
		}
	}
	r.inherited = in
	return nil
}

// parseCreds reads a thread's credentials from its status st (securebits are not shown
// there and are taken as 0, the default).
func parseCreds(tid int, st procfs.Status) (credsState, error) {
	var err error
	var c credsState
	ids := func(key string, into *[4]uint32) error {
		v, err := st.Ints(key)
		if err != nil {
			return err
		}
		if len(v) != 4 {
			return fmt.Errorf("/proc/%d/status: bad %s line", tid, key)
		}
		copy(into[:], v)
		return nil
	}
	if err := ids("Uid", &c.uids); err != nil {
		return c, err
	}
	if err := ids("Gid", &c.gids); err != nil {
		return c, err
	}
	if c.groups, err = st.Ints("Groups"); err != nil {
		return c, err
	}
	slices.Sort(c.groups)
	for key, into := range map[string]*uint64{"CapInh": &c.inh, "CapPrm": &c.prm, "CapEff": &c.eff, "CapBnd": &c.bnd, "CapAmb": &c.amb} {
		if *into, err = st.Hex(key); err != nil {
			return c, fmt.Errorf("/proc/%d/status: %w", tid, err)
		}
	}
	nnp, _ := strconv.ParseUint(st["NoNewPrivs"], 10, 32)
	c.noNewPrivs = uint32(nnp)
	return c, nil
}

func (a credsState) equal(b credsState) bool {
	return a.uids == b.uids && a.gids == b.gids && slices.Equal(a.groups, b.groups) &&
		a.inh == b.inh && a.prm == b.prm && a.eff == b.eff && a.bnd == b.bnd && a.amb == b.amb &&
		a.secbits == b.secbits && a.noNewPrivs == b.noNewPrivs
}

// restoreCreds gives every thread of p its saved credentials, when they differ from the
// ones it has (those of imgtool). Credentials are per thread, so each thread runs the
// sequence itself: bounding set first (it needs CAP_SETPCAP), keep capabilities across
// the uid change, groups, gids, uids, then the capability sets, securebits, ambient set.
//
// What every thread has is what the process inherited (inheritedState): the other threads
// were cloned from the leader by restoreThreads, and a thread's credentials change only
// by its own calls, none of which changes them before this (reading a thousand threads'
// status was a fifth of restoring them).
func (r *restorer) restoreCreds(p *process) error {
	for i, t := range p.threads {
		c := p.pl.cores[i].GetThreadCore().GetCreds()
		if c == nil {
			continue
		}
		want, have := savedCreds(c), r.inherited.creds
		if want.equal(have) {
			continue
		}
		if err := r.applyCreds(p, t, want, have); err != nil {
			return fmt.Errorf("thread %d: credentials: %w", t.tid, err)
		}
	}
	return nil
}

func (r *restorer) applyCreds(p *process, t *thread, want, have credsState) error {
	call := func(nr uintptr, args ...uint64) error {
		_, err := t.syscall(nr, args...)
		return err
	}
	for c := uint64(0); c < 64; c++ {
		if have.bnd&(1<<c) != 0 && want.bnd&(1<<c) == 0 {
			if err := call(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c); err != nil {
				return err
			}
		}
	}
	const secbitKeepCaps = 1 << 4
	if err := call(unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, uint64(want.secbits|secbitKeepCaps)); err != nil {
		return err
	}
	if !slices.Equal(want.groups, have.groups) {
		if err := p.poke(p.scratch+scratchExtra, pack(want.groups)); err != nil {
			return err
		}
		if err := call(unix.SYS_SETGROUPS, uint64(len(want.groups)), p.scratch+scratchExtra); err != nil {
			return err
		}
	}
	g, u := want.gids, want.uids
	if err := call(unix.SYS_SETRESGID, uint64(g[0]), uint64(g[1]), uint64(g[2])); err != nil {
		return err
	}
	t.syscall(unix.SYS_SETFSGID, uint64(g[3])) // returns the previous fsgid, never an error
	if err := call(unix.SYS_SETRESUID, uint64(u[0]), uint64(u[1]), uint64(u[2])); err != nil {
		return err
	}
	t.syscall(unix.SYS_SETFSUID, uint64(u[3]))
	hdr := pack(uint32(0x20080522), int32(0)) // _LINUX_CAPABILITY_VERSION_3
	data := pack(uint32(want.eff), uint32(want.prm), uint32(want.inh),
		uint32(want.eff>>32), uint32(want.prm>>32), uint32(want.inh>>32))
	if err := p.poke(p.scratch+scratchArgs, hdr); err != nil {
		return err
	}
	if err := p.poke(p.scratch+scratchArgs+64, data); err != nil {
		return err
	}
	if err := call(unix.SYS_CAPSET, p.scratch+scratchArgs, p.scratch+scratchArgs+64); err != nil {
		return err
	}
	if want.secbits&secbitKeepCaps == 0 {
		// Clearing keep-caps needs no privilege, unlike PR_SET_SECUREBITS.
		if err := call(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0); err != nil {
			return err
		}
	}
	for c := uint64(0); c < 64; c++ {
		if want.amb&(1<<c) != 0 {
			if err := call(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, c, 0, 0); err != nil {
				return err
			}
		}
	}
	if want.noNewPrivs != 0 {
		return call(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	}
	return nil
}

// restoreLoginuid gives the process its saved audit login uid (task_core_entry.loginuid,
// as CRIU restores it) when it differs from the one it inherited from imgtool. Only the
// process itself may write its /proc/PID/loginuid, and only with CAP_AUDIT_CONTROL (or
// while it is unset): it writes it before its credentials are restored.
func (r *restorer) restoreLoginuid(p *process, want *uint32) error {
	if want == nil {
		return nil
	}
	if in := r.inherited; !in.hasLoginuid || in.loginuid == *want {
		return nil // no audit support in this kernel: nothing to restore into; or as wanted
	}
	t := p.leader()
	path := []byte("/proc/self/loginuid\x00")
	val := []byte(strconv.FormatUint(uint64(*want), 10))
	if err := p.poke(p.scratch+scratchStrBuf, append(path, val...)); err != nil {
		return err
	}
	fd, err := t.syscall(unix.SYS_OPEN, p.scratch+scratchStrBuf, unix.O_WRONLY|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("login uid %d: %w", *want, err)
	}
	_, err = t.syscall(unix.SYS_WRITE, fd, p.scratch+scratchStrBuf+uint64(len(path)), uint64(len(val)))
	t.syscall(unix.SYS_CLOSE, fd)
	if err != nil {
		return fmt.Errorf("login uid %d: %w", *want, err)
	}
	return nil
}
