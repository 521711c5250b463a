package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"golang.org/x/sys/unix"
)

// Terminals: the ends of Unix98 pseudo-terminals, as CRIU 4.2 saves them (see
// dump/tty.go): a tty_file_entry per open file description, naming its tty_info_entry
// (tty-info.img; id: the pty index times two, plus one for the master) and the reg entry
// of the path it was opened by.
//
// Each pair is made once, in imgtool, when its first description is needed: /dev/ptmx
// is opened (by the master's saved path, O_NOCTTY) until the kernel hands out the saved
// index (it gives the lowest free one and has no call to choose it; the ones below are
// held meanwhile and closed after, as CRIU does), unlocked, given its locked termios,
// termios (TCSETS2) and window size, and its packet mode; then every slave description
// of the set is opened by its path, its mode, owner and termios set as saved; then the
// exclusive mode of each end; the master is locked once the whole tree exists (the
// session leaders open /dev/tty meanwhile, which a lock would refuse). The pre-check refuses an index
// in use (waiting up to pidRetry for a pair that is being released), other terminal
// types (console, virtual consoles, serial ports, /dev/tty, an external tty), a hung-up
// end, queued data (tty-data.img: CRIU replays it through the line discipline, which
// echoes and translates it again: not exact), a session whose leader or foreground group
// is not in the set.
//
// Sessions: a pty whose master records a session (TIOCGSID at the dump) is made the
// controlling terminal of the session's leader as the leader is born, right after its
// setsid and before it forks (TIOCSCTTY on a description of the pair every process
// inherits), so that every process of the session inherits it as at the dump; once the
// whole tree exists the leader sets the foreground process group (TIOCSPGRP).
//
// /dev/tty (a CTTY entry: CRIU saves no index for it) is the controlling terminal of the
// processes that hold it: a description of it is opened, O_NOCTTY with the saved flags,
// by the leader of their session right after it took its terminal (openat injected, the
// fd moved to the description's slot, which the processes it forks inherit); the
// pre-check refuses one held outside the leader's descendants, or shared by processes of
// different terminals. Held by a shell's job (its session led outside the tree), it is
// imgtool's own /dev/tty, with Options.ShellJob.
//
// A slave whose master is not in the set is a terminal the tree took from outside (a
// shell's: dump --shell-job, criu dump --shell-job). With Options.ShellJob it is replaced
// by imgtool's standard input, which must be imgtool's controlling terminal (each such
// description is a new fd of that one, with the saved status flags set on it, as CRIU
// does), the saved termios and window size are set on it, the tree stays in imgtool's
// session, and a root that leads its process group gets the terminal's foreground, as
// CRIU's restore does. Without the option such a set is refused.
type ttyKind struct{}

const (
	ttyAuxMajor   = 5   // /dev/ptmx is 5:2
	ptmMajor      = 128 // UNIX98_PTY_MASTER_MAJOR, through 135
	ptsMajor      = 136 // UNIX98_PTY_SLAVE_MAJOR, through 143
	termiosNCC    = 19  // CRIU's TERMIOS_NCC
	ttyDataImg    = "tty-data.img"
	ttyInfoImg    = "tty-info.img"
	ptmxMaxOpens  = 4096 // ptmx opens to reach an index (the kernel's default pty limit)
	ttyIndexLimit = 1 << 20
	ttyAlias      = "/dev/tty"
)

// ttyPlan is what the set says of its terminals.
type ttyPlan struct {
	infos    map[uint32]*tty.TtyInfoEntry
	data     map[uint32]int // bytes of tty-data.img, by tty_info id
	leaders  map[int]int    // session leader pid -> the pty index it takes as its terminal
	fg       map[int]int    // pty index -> foreground process group to set
	external int            // the pty index taken from outside the tree (Options.ShellJob), or -1
	aliases  map[uint32]int // /dev/tty descriptions, by file id: the session leader that opens it, 0 for imgtool's own
	checked  bool
}

// ttyEnd is one tty file of the set, resolved.
type ttyEnd struct {
	fe     *fdinfo.FileEntry
	info   *tty.TtyInfoEntry
	index  int
	master bool
	alias  bool   // /dev/tty: its terminal is its holder's
	path   string // the path it was opened by
}

// loadLegacy reads tty-info.img and the sizes of what tty-data.img holds.
func (ttyKind) loadLegacy(pl *plan) error {
	pl.tty = ttyPlan{infos: map[uint32]*tty.TtyInfoEntry{}, data: map[uint32]int{}, leaders: map[int]int{}, fg: map[int]int{},
		external: -1, aliases: map[uint32]int{}}
	if pl.src.has(ttyInfoImg) {
		infos, _, err := readEntries[tty.TtyInfoEntry](pl.src, ttyInfoImg)
		if err != nil {
			return err
		}
		for _, e := range infos {
			if pl.tty.infos[e.GetId()] != nil {
				return fmt.Errorf("%s: tty id %d appears twice", ttyInfoImg, e.GetId())
			}
			pl.tty.infos[e.GetId()] = e
		}
	}
	if pl.src.has(ttyDataImg) {
		data, _, err := readEntries[tty.TtyDataEntry](pl.src, ttyDataImg)
		if err != nil {
			return err
		}
		for _, e := range data {
			pl.tty.data[e.GetTtyId()] += len(e.GetData())
		}
	}
	return nil
}

// ttyEndOf resolves a tty file entry: its info, index, end and path.
func ttyEndOf(pl *plan, fe *fdinfo.FileEntry) (*ttyEnd, error) {
	t := fe.Tty
	if t == nil {
		return nil, fmt.Errorf("file id %d has no tty entry", fe.GetId())
	}
	info := pl.tty.infos[t.GetTtyInfoId()]
	if info == nil {
		return nil, fmt.Errorf("tty file id %d: tty %d is not in %s", fe.GetId(), t.GetTtyInfoId(), ttyInfoImg)
	}
	rdev := uint64(info.GetRdev())
	major, minor := unix.Major(rdev), unix.Minor(rdev)
	if info.GetType() == tty.TtyType_CTTY && major == ttyAuxMajor && minor == 0 && info.Pty == nil {
		return &ttyEnd{fe: fe, info: info, index: -1, alias: true, path: ttyAlias}, nil
	}
	if info.GetType() != tty.TtyType_PTY || info.Pty == nil {
		return nil, fmt.Errorf("a %v terminal (device %d:%d): only pseudo-terminals are supported", info.GetType(), major, minor)
	}
	e := &ttyEnd{fe: fe, info: info, index: int(info.Pty.GetIndex())}
	switch {
	case major == ttyAuxMajor && minor == 2, major >= ptmMajor && major < ptmMajor+8:
		e.master = true
	case major >= ptsMajor && major < ptsMajor+8:
	default:
		return nil, fmt.Errorf("a pseudo-terminal of device %d:%d: not supported", major, minor)
	}
	if e.index >= ttyIndexLimit || info.GetId() != uint32(e.index)<<1|b2u(e.master) {
		return nil, fmt.Errorf("tty %d: index %d does not match its id", info.GetId(), e.index)
	}
	if reg := pl.files[t.GetRegfId()]; t.RegfId != nil && reg != nil && reg.Reg != nil {
		e.path = reg.Reg.GetName()
	} else if t.RegfId != nil {
		return nil, fmt.Errorf("tty file id %d: its path (file id %d) is not in files.img", fe.GetId(), t.GetRegfId())
	} else if e.master { // older CRIU images: no reg entry
		e.path = "/dev/ptmx"
	} else {
		e.path = fmt.Sprintf("/dev/pts/%d", e.index)
	}
	return e, nil
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// name names the end in errors.
func (e *ttyEnd) name() string {
	if e.master {
		return fmt.Sprintf("%s (pty %d)", e.path, e.index)
	}
	return e.path
}

func (ttyKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	e, err := ttyEndOf(pl, fe)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case e.alias && fe.Tty.GetFown().GetPid() != 0:
		return fmt.Errorf("%s: %s has an owner (F_SETOWN): not supported", what, e.name())
	case e.alias:
		return nil // the terminal's state is its pty's
	case e.info.Termios == nil:
		return fmt.Errorf("%s: %s was hung up when dumped: not supported", what, e.name())
	case pl.tty.data[e.info.GetId()] > 0:
		return fmt.Errorf("%s: %s had %d bytes queued (%s): terminal data is not restored (replayed through the line discipline it would be echoed and translated again)",
			what, e.name(), pl.tty.data[e.info.GetId()], ttyDataImg)
	case len(e.info.Termios.GetCCc()) < termiosNCC || (e.info.TermiosLocked != nil && len(e.info.TermiosLocked.GetCCc()) < termiosNCC):
		return fmt.Errorf("%s: %s: termios with fewer than %d control characters", what, e.name(), termiosNCC)
	}
	return nil
}

func (ttyKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Tty.GetFown() }
func (ttyKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Tty.GetFlags() }

// ttyEnds returns every tty end the fds of the tree use, by pty index.
func ttyEnds(pl *plan) (map[int][]*ttyEnd, error) {
	out := map[int][]*ttyEnd{}
	for _, id := range usedFiles(pl) {
		fe := pl.files[id]
		if fe == nil || fe.GetType() != fdinfo.FdTypes_TTY {
			continue
		}
		e, err := ttyEndOf(pl, fe)
		if err != nil {
			return nil, err
		}
		if !e.alias {
			out[e.index] = append(out[e.index], e)
		}
	}
	return out, nil
}

// checkTTYs checks, before any process exists, the terminals of the set as a whole: each
// pair's index is free (a pair being released is waited for), each session a pty records
// has its leader in the set and its foreground group too, and a terminal from outside
// (a slave without its master) is taken over only with shellJob, onto imgtool's
// controlling terminal.
func checkTTYs(pl *plan, shellJob bool) error {
	ends, err := ttyEnds(pl)
	if err != nil {
		return err
	}
	procs := map[int]*procPlan{}
	for _, p := range pl.all {
		procs[p.pid] = p
	}
	idxs := make([]int, 0, len(ends))
	for idx := range ends {
		idxs = append(idxs, idx)
	}
	slices.Sort(idxs)
	for _, idx := range idxs {
		es := ends[idx]
		mi := slices.IndexFunc(es, func(e *ttyEnd) bool { return e.master })
		if mi < 0 {
			for _, e := range es {
				if l := procs[int(e.info.GetSid())]; l != nil && l.sid == l.pid {
					return fmt.Errorf("%s is the controlling terminal of session %d, whose leader is in the set but not its master: not supported", e.name(), l.pid)
				}
			}
			if err := checkExternal(pl, es[0], shellJob); err != nil {
				return err
			}
			continue
		}
		m := es[mi]
		if err := waitPtyFree(m); err != nil {
			return err
		}
		if fi, err := os.Stat(m.path); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			return fmt.Errorf("%s: not the pseudo-terminal multiplexer here (%v)", m.name(), err)
		}
		sid, pgrp := int(m.info.GetSid()), int(m.info.GetPgrp())
		if sid == 0 && len(es) == 1 {
			return fmt.Errorf("%s: its slave is neither open nor a controlling terminal in the set: a master alone is not supported (what its slave holds cannot be known)", m.name())
		}
		if sid == 0 {
			continue
		}
		leader := procs[sid]
		if leader == nil || leader.dead || leader.sid != sid {
			return fmt.Errorf("%s is the controlling terminal of session %d, whose leader is not in the set: not supported", m.name(), sid)
		}
		if other, ok := pl.tty.leaders[sid]; ok {
			return fmt.Errorf("session %d has two controlling terminals, pty %d and pty %d", sid, other, idx)
		}
		pl.tty.leaders[sid] = idx
		if pgrp != 0 {
			if !slices.ContainsFunc(pl.all, func(p *procPlan) bool { return p.pgid == pgrp && p.sid == sid }) {
				return fmt.Errorf("%s: its foreground process group %d has no process of session %d in the set", m.name(), pgrp, sid)
			}
			pl.tty.fg[idx] = pgrp
		}
	}
	if err := checkAliases(pl, procs, shellJob); err != nil {
		return err
	}
	pl.tty.checked = true
	return nil
}

// checkAliases finds, for each /dev/tty description, who opens it: the leader of the
// session of the processes holding it, which must all be that leader or processes it
// forks (they inherit it); imgtool itself for a shell's job.
func checkAliases(pl *plan, procs map[int]*procPlan, shellJob bool) error {
	for _, p := range pl.procs {
		for _, fd := range p.fds {
			fe := pl.files[fd.GetId()]
			if fe == nil || fe.GetType() != fdinfo.FdTypes_TTY {
				continue
			}
			e, err := ttyEndOf(pl, fe)
			if err != nil || !e.alias {
				continue
			}
			what := fmt.Sprintf("pid %d fd %d: /dev/tty", p.pid, fd.GetFd())
			opener := 0
			if _, ok := pl.tty.leaders[p.sid]; ok {
				opener = p.sid
				q := p
				for q != nil && q.pid != opener {
					q = q.parent
				}
				if q == nil {
					return fmt.Errorf("%s: its session leader %d is not its ancestor, which opens it: not supported", what, opener)
				}
			} else if procs[p.sid] != nil {
				return fmt.Errorf("%s: its session %d has no terminal in the set: not supported", what, p.sid)
			} else if !shellJob {
				return fmt.Errorf("%s: it is the terminal of a session led outside the tree (a shell's, dumped with --shell-job): restore it with --shell-job, onto this terminal", what)
			} else if f, err := os.OpenFile(ttyAlias, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0); err != nil {
				return fmt.Errorf("%s: --shell-job: imgtool has no controlling terminal to give it: %w", what, err)
			} else {
				f.Close()
			}
			if prev, ok := pl.tty.aliases[fe.GetId()]; ok && prev != opener {
				return fmt.Errorf("%s: file id %d is /dev/tty of processes of different terminals: not supported", what, fe.GetId())
			}
			pl.tty.aliases[fe.GetId()] = opener
		}
	}
	return nil
}

// late tells the descriptions createDescriptions leaves to a process: /dev/tty, which a
// session leader opens once it has its terminal (setCtty), and pidfds, which its holders
// get once every process exists (queueFds, pidfd.go).
func (d *descriptions) late(pl *plan, id uint32) bool {
	if pl.files[id].GetType() == fdinfo.FdTypes_PIDFD {
		return true // made once every process exists (pidfd.go)
	}
	opener, ok := pl.tty.aliases[id]
	return ok && opener != 0
}

// checkExternal checks a terminal the tree took from outside (a slave without its master).
func checkExternal(pl *plan, e *ttyEnd, shellJob bool) error {
	if !shellJob {
		return fmt.Errorf("%s comes from outside the tree (its master is not in the set: a shell's terminal, dumped with --shell-job): restore it with --shell-job, onto this terminal", e.name())
	}
	if pl.tty.external >= 0 && pl.tty.external != e.index {
		return fmt.Errorf("two terminals come from outside the tree, /dev/pts/%d and %s: only one can be taken over (--shell-job)", pl.tty.external, e.name())
	}
	sid, err := unix.IoctlGetInt(0, unix.TIOCGSID)
	if own, _ := unix.Getsid(0); err != nil || sid != own {
		return fmt.Errorf("--shell-job: %s is to be replaced with imgtool's standard input, which is not imgtool's controlling terminal", e.name())
	}
	pl.tty.external = e.index
	return nil
}

// waitPtyFree waits (up to pidRetry) for the index of the master e to be free: a pair
// whose last holder just died is released a moment later.
func waitPtyFree(e *ttyEnd) error {
	name := fmt.Sprintf("/dev/pts/%d", e.index)
	deadline := time.Now().Add(pidRetry)
	for {
		if _, err := os.Lstat(name); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: pty index %d is in use (%s exists)", e.name(), e.index, name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ttyDescs are the pairs made so far: the descriptions of the set's files, by file id,
// until open takes them.
type ttyDescs struct {
	made  map[int]bool
	files map[uint32]*os.File
	lock  []*os.File // masters to lock once the tree exists (lockPtys)
}

func (t *ttyDescs) close() {
	for _, f := range t.files {
		f.Close()
	}
	for _, f := range t.lock {
		f.Close()
	}
}

func (ttyKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	e, err := ttyEndOf(pl, fe)
	if err != nil {
		return nil, err
	}
	if !pl.tty.checked {
		return nil, errors.New("terminals were not checked")
	}
	if d.tty.files == nil {
		d.tty = ttyDescs{made: map[int]bool{}, files: map[uint32]*os.File{}}
	}
	if e.alias {
		if pl.tty.aliases[fe.GetId()] != 0 {
			return nil, fmt.Errorf("%s (file id %d) is opened by its session leader", e.name(), fe.GetId())
		}
		f, err := os.OpenFile(ttyAlias, openFlags(fe.Tty.GetFlags())|unix.O_NOCTTY, 0) // a shell's job: imgtool's terminal
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", ttyAlias, err)
		}
		return f, nil
	}
	if e.index == pl.tty.external && !e.master {
		return openExternal(d, e)
	}
	if !d.tty.made[e.index] {
		if err := makePair(d, pl, e.index); err != nil {
			return nil, err
		}
	}
	f := d.tty.files[fe.GetId()]
	if f == nil {
		return nil, fmt.Errorf("%s: file id %d was not made", e.name(), fe.GetId())
	}
	delete(d.tty.files, fe.GetId())
	return f, nil
}

// openExternal returns a new fd of imgtool's standard input for a description of the
// terminal taken from outside, with the saved status flags; the first one also sets the
// saved termios and window size on it, as CRIU's restore does.
func openExternal(d *descriptions, e *ttyEnd) (*os.File, error) {
	fd, err := unix.FcntlInt(0, unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: taking over standard input: %w", e.name(), err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("standard input (in place of %s)", e.name()))
	if !d.tty.made[e.index] {
		d.tty.made[e.index] = true
		if err := setTTYParams(f, e.info, false); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := setStatusFlags(f, e.fe.Tty.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// makePair makes pty index idx and every description of it the set uses.
func makePair(d *descriptions, pl *plan, idx int) error {
	d.tty.made[idx] = true
	ends, err := ttyEnds(pl)
	if err != nil {
		return err
	}
	es := ends[idx]
	mi := slices.IndexFunc(es, func(e *ttyEnd) bool { return e.master })
	if mi < 0 {
		return fmt.Errorf("pty %d: no master in the set", idx)
	}
	m := es[mi]
	master, err := openPtmx(m)
	if err != nil {
		return err
	}
	d.tty.files[m.fe.GetId()] = master
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("%s: unlocking: %w", m.name(), err)
	}
	if err := setTTYParams(master, m.info, false); err != nil { // /dev/ptmx's owner is the system's
		return err
	}
	if m.info.GetPacketMode() {
		if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCPKT, 1); err != nil {
			return fmt.Errorf("%s: packet mode: %w", m.name(), err)
		}
	}
	var slaves []*os.File
	for _, e := range es {
		if e.master {
			continue
		}
		s, err := os.OpenFile(e.path, openFlags(e.fe.Tty.GetFlags())|unix.O_NOCTTY, 0)
		if err != nil {
			return fmt.Errorf("opening %s: %w", e.name(), err)
		}
		d.tty.files[e.fe.GetId()] = s
		if err := setTTYParams(s, e.info, true); err != nil {
			return err
		}
		if err := setStatusFlags(s, e.fe.Tty.GetFlags()); err != nil {
			return err
		}
		if reg := pl.files[e.fe.Tty.GetRegfId()]; reg != nil && reg.Reg != nil && reg.Reg.Mode != nil {
			if err := s.Chmod(os.FileMode(reg.Reg.GetMode() & 0o777)); err != nil {
				return fmt.Errorf("%s: mode: %w", e.name(), err)
			}
		}
		slaves = append(slaves, s)
	}
	if len(slaves) == 0 {
		// A controlling terminal no fd holds: its slave was opened and closed (dump's
		// checkTTYs), which its master reports as a hang-up; so here, as with CRIU.
		s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", idx), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening the slave of %s: %w", m.name(), err)
		}
		s.Close()
	}
	if err := setStatusFlags(master, m.fe.Tty.GetFlags()); err != nil {
		return err
	}
	for i, e := range slices.DeleteFunc(slices.Clone(es), func(e *ttyEnd) bool { return e.master }) {
		if e.info.GetExclusive() {
			if err := unix.IoctlSetInt(int(slaves[i].Fd()), unix.TIOCEXCL, 0); err != nil {
				return fmt.Errorf("%s: exclusive mode: %w", e.name(), err)
			}
		}
	}
	if m.info.GetExclusive() {
		if err := unix.IoctlSetInt(int(master.Fd()), unix.TIOCEXCL, 0); err != nil {
			return fmt.Errorf("%s: exclusive mode: %w", m.name(), err)
		}
	}
	if m.info.GetLocked() { // locked once /dev/tty is open on it: a locked pty opens no more
		fd, err := unix.FcntlInt(master.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return err
		}
		d.tty.lock = append(d.tty.lock, os.NewFile(uintptr(fd), master.Name()))
	}
	return nil
}

// lockPtys locks the masters saved locked, once every process exists (TIOCSPTLCK: no
// slave or /dev/tty can be opened on a locked pty).
func (r *restorer) lockPtys() error {
	for _, f := range r.descs.tty.lock {
		if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.TIOCSPTLCK, 1); err != nil {
			return fmt.Errorf("%s: locking: %w", f.Name(), err)
		}
	}
	return nil
}

// openPtmx opens the multiplexer until the kernel hands out the master's saved index.
func openPtmx(m *ttyEnd) (*os.File, error) {
	var held []*os.File
	defer func() {
		for _, f := range held {
			f.Close()
		}
	}()
	flags := openFlags(m.fe.Tty.GetFlags()) | unix.O_NOCTTY
	for range ptmxMaxOpens {
		f, err := os.OpenFile(m.path, flags, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", m.name(), err)
		}
		got, err := unix.IoctlGetUint32(int(f.Fd()), unix.TIOCGPTN)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: TIOCGPTN: %w", m.name(), err)
		}
		switch {
		case int(got) == m.index:
			return f, nil
		case int(got) < m.index:
			held = append(held, f) // a lower free index: keep it taken until ours comes
		default:
			f.Close()
			return nil, fmt.Errorf("%s: pty index %d is in use (the kernel handed out %d)", m.name(), m.index, got)
		}
	}
	return nil, fmt.Errorf("%s: index %d not reached after %d opens", m.name(), m.index, ptmxMaxOpens)
}

// termiosOf is a termios_entry as a kernel termios2: c_cc packed four characters to a
// word, as CRIU writes it.
func termiosOf(e *tty.TermiosEntry) *unix.Termios {
	var cc [32]byte
	for i, w := range e.GetCCc()[:len(cc)/4] {
		binary.LittleEndian.PutUint32(cc[i*4:], w)
	}
	t := &unix.Termios{Iflag: e.GetCIflag(), Oflag: e.GetCOflag(), Cflag: e.GetCCflag(), Lflag: e.GetCLflag(),
		Line: uint8(e.GetCLine()), Ispeed: e.GetCIspeed(), Ospeed: e.GetCOspeed()}
	copy(t.Cc[:], cc[:])
	return t
}

// setTTYParams gives a terminal its saved locked termios, termios and window size (those
// of a pty's slave, through either end), and with owner its saved owner.
func setTTYParams(f *os.File, info *tty.TtyInfoEntry, owner bool) error {
	fd := int(f.Fd())
	if owner && info.Uid != nil && info.Gid != nil {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		if st.Uid != info.GetUid() || st.Gid != info.GetGid() {
			if err := unix.Fchown(fd, int(info.GetUid()), int(info.GetGid())); err != nil {
				return fmt.Errorf("%s: owner %d:%d: %w", f.Name(), info.GetUid(), info.GetGid(), err)
			}
		}
	}
	if l := info.TermiosLocked; l != nil {
		want := termiosOf(l)
		if err := unix.IoctlSetTermios(fd, unix.TIOCSLCKTRMIOS, want); err != nil {
			// Setting them takes CAP_SYS_ADMIN; the same ones need not be set (CRIU's rule).
			cur, gerr := unix.IoctlGetTermios(fd, unix.TIOCGLCKTRMIOS)
			cur.Ispeed, cur.Ospeed, want.Ispeed, want.Ospeed = 0, 0, 0, 0
			if !errors.Is(err, unix.EPERM) || gerr != nil || *cur != *want {
				return fmt.Errorf("%s: locked termios: %w", f.Name(), err)
			}
		}
	}
	if t := info.Termios; t != nil {
		if err := unix.IoctlSetTermios(fd, unix.TCSETS2, termiosOf(t)); err != nil {
			return fmt.Errorf("%s: termios: %w", f.Name(), err)
		}
	}
	if w := info.Winsize; w != nil {
		ws := &unix.Winsize{Row: uint16(w.GetWsRow()), Col: uint16(w.GetWsCol()), Xpixel: uint16(w.GetWsXpixel()), Ypixel: uint16(w.GetWsYpixel())}
		if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws); err != nil {
			return fmt.Errorf("%s: window size: %w", f.Name(), err)
		}
	}
	return nil
}

// ttySlot returns the slot of a description of pty idx for TIOCSCTTY and TIOCSPGRP:
// a slave's if the set has one (the master's acts on its slave too).
func (r *restorer) ttySlot(idx int) (int, error) {
	ends, err := ttyEnds(r.pl)
	if err != nil {
		return 0, err
	}
	es := slices.Clone(ends[idx])
	slices.SortStableFunc(es, func(a, b *ttyEnd) int { return int(b2u(a.master)) - int(b2u(b.master)) })
	for _, e := range es {
		if slot, ok := r.descs.slot[e.fe.GetId()]; ok {
			return slot, nil
		}
	}
	return 0, fmt.Errorf("pty %d: no description of it was made", idx)
}

// setCtty makes the terminal of p's session p's controlling terminal, when p leads a
// session that had one: right after its setsid, before it forks. The root's descriptions
// are made after it is born: createTree calls this again for it then.
func (r *restorer) setCtty(p *process) error {
	idx, ok := r.pl.tty.leaders[p.pid]
	if !ok || r.descs == nil {
		return nil
	}
	slot, err := r.ttySlot(idx)
	if err != nil {
		return err
	}
	t := p.leader()
	if _, err := t.syscall(unix.SYS_IOCTL, uint64(slot), unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("pid %d: taking pty %d as its controlling terminal: %w", p.pid, idx, err)
	}
	ids := make([]uint32, 0, len(r.pl.tty.aliases))
	for id, opener := range r.pl.tty.aliases {
		if opener == p.pid {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		if err := p.poke(p.scratch+scratchStrBuf, append([]byte(ttyAlias), 0)); err != nil {
			return err
		}
		atFdcwd := int64(unix.AT_FDCWD)
		fd, err := t.syscall(unix.SYS_OPENAT, uint64(atFdcwd), p.scratch+scratchStrBuf,
			uint64(openFlags(r.pl.files[id].Tty.GetFlags())|unix.O_NOCTTY))
		if err != nil {
			return fmt.Errorf("pid %d: opening /dev/tty: %w", p.pid, err)
		}
		if _, err := t.syscall(unix.SYS_DUP3, fd, uint64(r.descs.slot[id]), 0); err != nil {
			return err
		}
		if _, err := t.syscall(unix.SYS_CLOSE, fd); err != nil {
			return err
		}
	}
	return nil
}

// setForeground gives each terminal its saved foreground process group, from its session
// leader, once every process exists; and with a terminal taken from outside (a shell's
// job), gives it to the root's group when the root leads one, as CRIU's restore does. The
// ptys saved locked are locked then.
func (r *restorer) setForeground() error {
	if err := r.lockPtys(); err != nil {
		return err
	}
	set := func(p *process, slot, pgrp int) error {
		b := make([]byte, 4)
		binary.LittleEndian.PutUint32(b, uint32(pgrp))
		if err := p.poke(p.scratch+scratchArgs, b); err != nil {
			return err
		}
		_, err := p.leader().syscall(unix.SYS_IOCTL, uint64(slot), unix.TIOCSPGRP, p.scratch+scratchArgs)
		return err
	}
	for sid, idx := range r.pl.tty.leaders {
		pgrp, ok := r.pl.tty.fg[idx]
		if !ok {
			continue
		}
		slot, err := r.ttySlot(idx)
		if err != nil {
			return err
		}
		if err := set(r.byPid[sid], slot, pgrp); err != nil {
			return fmt.Errorf("pty %d: foreground process group %d: %w", idx, pgrp, err)
		}
	}
	root := r.procs[0]
	if idx := r.pl.tty.external; idx >= 0 && root.pl.sid != root.pid && root.pl.pgid == root.pid {
		slot, err := r.ttySlot(idx)
		if err != nil {
			return err
		}
		if err := set(root, slot, root.pid); err != nil {
			return fmt.Errorf("the caller's terminal: foreground process group %d: %w", root.pid, err)
		}
	}
	return nil
}
