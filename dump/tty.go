package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/internal/procfs"
)

// fdTTY is a terminal; only the ends of Unix98 pseudo-terminals pass the check.
const fdTTY = fdInetSk + 1

// Terminal devices, as CRIU's tty.c tells them apart.
const (
	ttyAuxMajor = 5    // TTYAUX_MAJOR: /dev/tty (0), /dev/console (1), /dev/ptmx (2)
	vtMajor     = 4    // TTY_MAJOR: virtual consoles (1 to 63), serial ports above
	ptsMajor    = 136  // UNIX98_PTY_SLAVE_MAJOR: /dev/pts/N is 136:N
	maxPtyIndex = 1000 // CRIU's MAX_PTY_INDEX: CRIU refuses larger indices
	cttyInfoID  = 2012 // the tty_info id CRIU gives /dev/tty: its CTTY_INDEX, 1006, times two
	termiosNCC  = 19   // CRIU's TERMIOS_NCC: termios_entry.c_cc has 19 words
)

// ttyKind is one end of a Unix98 pseudo-terminal, as CRIU 4.2 saves it: a tty_file_entry
// in files.img (flags, owner, the id of the tty_info_entry: the pty index times two, plus
// one for the master) with a reg_file_entry for the path it was opened by (/dev/ptmx, or
// /dev/pts/N: its mode and owner), and once per end a tty_info_entry in tty-info.img:
// termios (TCGETS2; speeds kept), locked termios, window size, the session and foreground
// process group (through the master with TIOCGSID and TIOCGPGRP, which the kernel answers
// for the slave; for a slave, those of the process holding it when it is that process's
// controlling terminal, as CRIU's parasite gets them), packet mode and lock state (the
// master's), exclusive mode, rdev, dev, uid and gid. termios_entry.c_cc holds the control
// characters packed four to a word, as CRIU writes them (it copies the bytes of a glibc
// termios over the words); the words past the eighth are zero.
//
// /dev/tty (the current-terminal alias) opened on a pty that is still the holder's
// controlling terminal is saved as CRIU saves it: a tty_file_entry of tty_info id 2012
// (CRIU's CTTY_INDEX times two), a CTTY tty_info_entry (the terminal's state, no index:
// a restore opens /dev/tty in a process whose controlling terminal it is), the reg entry
// /dev/tty. The pty is told by TIOCGDEV; /dev/tty fds on two different terminals are
// refused (CRIU keeps one CTTY entry for all).
//
// The tree-level rules are checkTTYs'. Refused, naming the fd: /dev/console, virtual
// consoles and serial ports, a pty of another devpts instance, an index above CRIU's
// 1000, a terminal that was hung up, /dev/tty of a terminal that is not the holder's.
type ttyKind struct{}

func (ttyKind) typ() fdinfo.FdTypes { return fdinfo.FdTypes_TTY }

// ptyEnd is one end of a pseudo-terminal, or /dev/tty opened on its slave (alias).
type ptyEnd struct {
	index  int
	master bool
	alias  bool
}

// name is the path of the end ("/dev/ptmx" for every master, with its index).
func (e ptyEnd) name() string {
	switch {
	case e.master:
		return fmt.Sprintf("/dev/ptmx (pty %d)", e.index)
	case e.alias:
		return fmt.Sprintf("/dev/tty (/dev/pts/%d)", e.index)
	}
	return fmt.Sprintf("/dev/pts/%d", e.index)
}

// infoID is the id of the end's tty_info_entry, as CRIU numbers them.
func (e ptyEnd) infoID() uint32 {
	if e.alias {
		return cttyInfoID
	}
	id := uint32(e.index) << 1
	if e.master {
		id++
	}
	return id
}

// ttyName names a terminal device by its number (/proc's tty_nr, an rdev).
func ttyName(dev uint64) string {
	if unix.Major(dev) == ptsMajor {
		return fmt.Sprintf("/dev/pts/%d", unix.Minor(dev))
	}
	return fmt.Sprintf("terminal %d:%d", unix.Major(dev), unix.Minor(dev))
}

// endOf tells which pty end fd of pid is, or refuses it (a RefusedError) naming it.
func endOf(pid, fd int, link string, st *unix.Stat_t) (ptyEnd, error) {
	major, minor := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	no := func(what, why string) (ptyEnd, error) { return ptyEnd{}, refuse(pid, fd, what, why) }
	switch {
	case major == ttyAuxMajor && minor == 0:
		local, err := fdCopy(pid, fd)
		if err != nil {
			return ptyEnd{}, err
		}
		dev, err := unix.IoctlGetUint32(local, unix.TIOCGDEV)
		unix.Close(local)
		if err != nil {
			return no("/dev/tty", fmt.Sprintf("its terminal cannot be told (TIOCGDEV: %v)", err))
		}
		if unix.Major(uint64(dev)) != ptsMajor {
			return no("/dev/tty", "it is "+ttyName(uint64(dev))+": only pseudo-terminals are supported")
		}
		return ptyEnd{index: int(unix.Minor(uint64(dev))), alias: true}, nil
	case major == ttyAuxMajor && minor == 1:
		return no("console "+link, "the console is not supported")
	case major == ttyAuxMajor && minor == 2:
		idx, err := masterIndex(pid, fd)
		if err != nil {
			return ptyEnd{}, err
		}
		if idx > maxPtyIndex {
			return no(fmt.Sprintf("pty master %s (index %d)", link, idx), fmt.Sprintf("pty indices above %d are not supported (CRIU's limit)", maxPtyIndex))
		}
		return ptyEnd{index: idx, master: true}, nil
	case major == ptsMajor && strings.HasSuffix(link, deletedSuffix):
		return no("terminal "+link, "it was hung up (its master was closed, its /dev/pts name removed): not supported")
	case major == ptsMajor:
		n, ok := strings.CutPrefix(link, "/dev/pts/")
		idx, err := strconv.Atoi(n)
		if !ok || err != nil || idx != int(minor) {
			return no("terminal "+link, "a pseudo-terminal outside /dev/pts is not supported")
		}
		if idx > maxPtyIndex {
			return no("terminal "+link, fmt.Sprintf("pty indices above %d are not supported (CRIU's limit)", maxPtyIndex))
		}
		var pts unix.Stat_t
		if err := unix.Stat("/dev/pts", &pts); err != nil || pts.Dev != st.Dev {
			return no("terminal "+link, "a pseudo-terminal of another devpts instance than /dev/pts is not supported")
		}
		return ptyEnd{index: idx}, nil
	case major == vtMajor && minor >= 1 && minor <= 63:
		return no("virtual console "+link, "virtual consoles are not supported")
	}
	return no("serial terminal "+link, "serial terminals are not supported")
}

// masterIndex is the index of a pty master: fdinfo's tty-index, or TIOCGPTN.
func masterIndex(pid, fd int) (int, error) {
	lines, err := fdinfoLines(pid, fd)
	if err != nil {
		return 0, err
	}
	if v, ok := fdinfoField(lines, "tty-index"); ok {
		return strconv.Atoi(v)
	}
	local, err := fdCopy(pid, fd)
	if err != nil {
		return 0, err
	}
	defer unix.Close(local)
	idx, err := unix.IoctlGetUint32(local, unix.TIOCGPTN)
	if err != nil {
		return 0, fmt.Errorf("process %d fd %d: TIOCGPTN: %w", pid, fd, err)
	}
	return int(idx), nil
}

func (ttyKind) check(pid int, f *fdDesc) error {
	end, err := endOf(pid, f.fd, f.link, &f.st)
	if err != nil {
		return err
	}
	local, err := fdCopy(pid, f.fd)
	if err != nil {
		return err
	}
	defer unix.Close(local)
	if _, err := unix.IoctlGetInt(local, unix.TIOCGEXCL); errors.Is(err, unix.EIO) {
		return refuse(pid, f.fd, end.name(), "it was hung up (its other end was closed): not supported")
	}
	return nil
}

// ttyState is what the dump keeps of the tree's terminals: one tty_info_entry per end.
type ttyState struct {
	infos []*tty.TtyInfoEntry
	seen  map[uint32]bool
}

func (ttyKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	end, err := endOf(r.pid, r.f.fd, r.f.link, &r.f.st)
	if err != nil {
		return err
	}
	regID := s.newID()
	reg := regEntry(regID, flags, r.f.info.Pos, r.f.link, &r.f.st, "")
	reg.Fown = own
	s.files = append(s.files, &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(regID), Reg: reg})
	fe.Tty = &tty.TtyFileEntry{Id: proto.Uint32(fe.GetId()), TtyInfoId: proto.Uint32(end.infoID()),
		Flags: proto.Uint32(flags), Fown: own, RegfId: proto.Uint32(regID)}
	if s.tty.seen[end.infoID()] {
		return nil
	}
	local, err := unix.PidfdGetfd(r.pidfd, r.f.fd, 0)
	if err != nil {
		return r.errorf("pidfd_getfd: %v", err)
	}
	defer unix.Close(local)
	info, err := ttyInfo(r, local, end)
	if err != nil {
		return err
	}
	if s.tty.seen == nil {
		s.tty.seen = map[uint32]bool{}
	}
	s.tty.seen[end.infoID()] = true
	s.tty.infos = append(s.tty.infos, info)
	return nil
}

// ttyInfo reads the tty_info_entry of an end through local, a copy of its fd.
func ttyInfo(r fdRef, local int, end ptyEnd) (*tty.TtyInfoEntry, error) {
	get := func(req uint) (int, error) {
		v, err := unix.IoctlGetInt(local, req)
		if errors.Is(err, unix.ENOTTY) {
			return 0, nil // not this end's, or no session: 0, as CRIU's parasite reports
		}
		if err != nil {
			return 0, r.errorf("%s: ioctl %#x: %v", end.name(), req, err)
		}
		return v, nil
	}
	e := &tty.TtyInfoEntry{Id: proto.Uint32(end.infoID()), Type: tty.TtyType_PTY.Enum(),
		Rdev: proto.Uint32(uint32(r.f.st.Rdev)), Dev: proto.Uint32(uint32(r.f.st.Dev)),
		Uid: proto.Uint32(r.f.st.Uid), Gid: proto.Uint32(r.f.st.Gid),
		Pty: &tty.TtyPtyEntry{Index: proto.Uint32(uint32(end.index))}}
	if end.alias {
		e.Type, e.Pty = tty.TtyType_CTTY.Enum(), nil
	}
	excl, err := get(unix.TIOCGEXCL)
	if err != nil {
		return nil, err
	}
	var sid, pgrp, pkt, lck int
	if end.master {
		// The kernel answers these for the slave through its master, whoever asks.
		if sid, err = get(unix.TIOCGSID); err != nil {
			return nil, err
		}
		if pgrp, err = get(unix.TIOCGPGRP); err != nil {
			return nil, err
		}
		if pkt, err = get(unix.TIOCGPKT); err != nil {
			return nil, err
		}
		if lck, err = get(unix.TIOCGPTLCK); err != nil {
			return nil, err
		}
	} else if st, err := procfs.ReadStat(procfs.Path(r.pid, "stat")); err != nil {
		return nil, err
	} else if uint64(st.TTYNr) == r.f.st.Rdev || end.alias { // its controlling terminal: CRIU's parasite sees the session
		sid, pgrp = st.Sid, max(st.Tpgid, 0)
	}
	e.Exclusive, e.PacketMode, e.Locked = proto.Bool(excl != 0), proto.Bool(pkt != 0), proto.Bool(lck != 0)
	e.Sid, e.Pgrp = proto.Uint32(uint32(sid)), proto.Uint32(uint32(pgrp))
	t, err := unix.IoctlGetTermios(local, unix.TCGETS2)
	if err != nil {
		return nil, r.errorf("%s: TCGETS2: %v", end.name(), err)
	}
	e.Termios = termiosEntry(t)
	// TIOCGLCKTRMIOS fills a struct termios: the speeds of the larger Termios stay 0.
	locked, err := unix.IoctlGetTermios(local, unix.TIOCGLCKTRMIOS)
	if err != nil {
		return nil, r.errorf("%s: TIOCGLCKTRMIOS: %v", end.name(), err)
	}
	e.TermiosLocked = termiosEntry(locked)
	e.TermiosLocked.CIspeed, e.TermiosLocked.COspeed = proto.Uint32(0), proto.Uint32(0)
	w, err := unix.IoctlGetWinsize(local, unix.TIOCGWINSZ)
	if err != nil {
		return nil, r.errorf("%s: TIOCGWINSZ: %v", end.name(), err)
	}
	e.Winsize = &tty.WinsizeEntry{WsRow: proto.Uint32(uint32(w.Row)), WsCol: proto.Uint32(uint32(w.Col)),
		WsXpixel: proto.Uint32(uint32(w.Xpixel)), WsYpixel: proto.Uint32(uint32(w.Ypixel))}
	return e, nil
}

// termiosEntry is t as CRIU 4.2 writes it: c_cc packed four characters to a word (the
// bytes of a 32-character glibc c_cc over the words), in 19 words.
func termiosEntry(t *unix.Termios) *tty.TermiosEntry {
	var cc [32]byte
	copy(cc[:], t.Cc[:])
	words := make([]uint32, termiosNCC)
	for i := range len(cc) / 4 {
		words[i] = binary.LittleEndian.Uint32(cc[i*4:])
	}
	return &tty.TermiosEntry{CIflag: proto.Uint32(t.Iflag), COflag: proto.Uint32(t.Oflag),
		CCflag: proto.Uint32(t.Cflag), CLflag: proto.Uint32(t.Lflag), CLine: proto.Uint32(uint32(t.Line)),
		CIspeed: proto.Uint32(t.Ispeed), COspeed: proto.Uint32(t.Ospeed), CCc: words}
}

// checkTTYs refuses, for the whole tree (procs: their stat and fds as read, running or
// stopped), what of its terminals a restore could not
// make again exactly, touching nothing:
//
//   - a controlling terminal of a session whose leader is outside the tree (a shell's job),
//     unless shellJob (--shell-job: the tree is restored in the caller's session, on its
//     terminal); a pty used that way whose master is in the tree;
//   - a session led in the tree whose processes have not all its leader's controlling
//     terminal (a restore gives it to the leader at its birth, and every process of the
//     session inherits it), whose terminal is not a pseudo-terminal or has its master
//     outside the tree, or whose foreground process group has no process in the tree;
//   - a master whose slave is neither open nor a controlling terminal in the tree;
//   - a slave whose master is not in the tree, unless shellJob and it is the one terminal
//     the tree takes from outside (restored as the caller's);
//   - /dev/tty opened on a pty that is not the holder's controlling terminal now, or on two
//     different ptys;
//   - bytes queued in either end of a pair of the tree (terminal data is not saved: CRIU
//     replays it through the line discipline, which echoes and translates it again). The
//     queue may be in flight: transient tells the caller to look again in a moment.
//
// A partial line in a canonical-mode slave (typed, no newline yet) cannot be seen from
// outside the line discipline and is not refused: it is lost, as with CRIU.
func checkTTYs(procs []*liveProc, shellJob bool, refused *Refusals) (transient bool, err error) {
	in := map[int]bool{}
	for _, p := range procs {
		in[p.pid] = true
	}
	type use struct {
		pid, fd int
		link    string
		end     ptyEnd
	}
	stats := map[int]*procfs.Stat{}
	ends := map[int][]use{} // by pty index
	var sids []int          // sessions of the tree, in tree order
	members := map[int][]int{}
	for _, p := range procs {
		pid, st := p.pid, p.stat
		stats[pid] = st
		if members[st.Sid] == nil {
			sids = append(sids, st.Sid)
		}
		members[st.Sid] = append(members[st.Sid], pid)
		for _, f := range p.fds {
			if f.st.Mode&unix.S_IFMT != unix.S_IFCHR || !isTTYMajor(unix.Major(f.st.Rdev)) {
				continue
			}
			end, err := endOf(pid, f.fd, f.link, &f.st)
			if err != nil {
				continue // refused by the fd's own check
			}
			ends[end.index] = append(ends[end.index], use{pid, f.fd, f.link, end})
		}
	}
	hasMaster := func(idx int) bool {
		return slices.ContainsFunc(ends[idx], func(u use) bool { return u.end.master })
	}
	external := -1         // the pty index of the caller's terminal (shellJob)
	ctty := map[int]bool{} // pty indices that are a controlling terminal of a session of the tree
	takeExternal := func(pid, fd int, what string, idx int) {
		switch {
		case !shellJob:
			refused.add(refuse(pid, fd, what, "its master is not in the tree: a terminal from outside the tree (a shell's) is restored only with --shell-job, onto the caller's terminal"))
		case external >= 0 && external != idx:
			refused.add(refuse(pid, fd, what, fmt.Sprintf("only one terminal from outside the tree can be taken over (--shell-job), and /dev/pts/%d is one", external)))
		default:
			external = idx
		}
	}
	for _, sid := range sids {
		ms := members[sid]
		if !in[sid] { // a shell's job: the leader is outside the tree
			i := slices.IndexFunc(ms, func(pid int) bool { return stats[pid].TTYNr != 0 })
			if i < 0 {
				continue
			}
			pid, nr := ms[i], uint64(stats[ms[i]].TTYNr)
			what := "controlling terminal " + ttyName(nr)
			if !shellJob {
				refused.add(refuse(pid, -1, what, fmt.Sprintf("the terminal of session %d, whose leader is outside the tree (a shell's job): use --shell-job, which restores the tree onto the caller's terminal", sid)))
				continue
			}
			if unix.Major(nr) == ptsMajor {
				if hasMaster(int(unix.Minor(nr))) {
					refused.add(refuse(pid, -1, what, fmt.Sprintf("its master is in the tree but the leader of its session %d is not: not supported", sid)))
					continue
				}
				takeExternal(pid, -1, what, int(unix.Minor(nr)))
			}
			continue
		}
		nr := uint64(stats[sid].TTYNr)
		for _, pid := range ms {
			if got := uint64(stats[pid].TTYNr); got != nr {
				what := "no controlling terminal"
				if got != 0 {
					what = "controlling terminal " + ttyName(got)
				}
				has := "none"
				if nr != 0 {
					has = ttyName(nr)
				}
				refused.add(refuse(pid, -1, what, fmt.Sprintf("the leader %d of its session has %s: a restore gives every process of a session its leader's", sid, has)))
			}
		}
		if nr == 0 {
			continue
		}
		what := "controlling terminal " + ttyName(nr)
		if unix.Major(nr) != ptsMajor {
			refused.add(refuse(sid, -1, what, "only pseudo-terminals (/dev/pts) are supported"))
			continue
		}
		idx := int(unix.Minor(nr))
		ctty[idx] = true
		if !hasMaster(idx) {
			refused.add(refuse(sid, -1, what, "its master is not in the tree while the leader of its session is: not supported"))
			continue
		}
		if fg := stats[sid].Tpgid; fg > 0 && !slices.ContainsFunc(ms, func(pid int) bool { return stats[pid].Pgid == fg }) {
			refused.add(refuse(sid, -1, what, fmt.Sprintf("its foreground process group %d has no process in the tree", fg)))
		}
	}
	idxs := make([]int, 0, len(ends))
	for idx := range ends {
		idxs = append(idxs, idx)
	}
	slices.Sort(idxs)
	alias := -1 // the pty /dev/tty fds are open on
	for _, idx := range idxs {
		us := ends[idx]
		mi := slices.IndexFunc(us, func(u use) bool { return u.end.master })
		si := slices.IndexFunc(us, func(u use) bool { return !u.end.master && !u.end.alias })
		for _, u := range us {
			if !u.end.alias {
				continue
			}
			if got := uint64(stats[u.pid].TTYNr); got != unix.Mkdev(ptsMajor, uint32(idx)) {
				refused.add(refuse(u.pid, u.fd, u.end.name(), fmt.Sprintf("it was opened on /dev/pts/%d, which is not the controlling terminal of the process now: not supported", idx)))
			} else if alias >= 0 && alias != idx {
				refused.add(refuse(u.pid, u.fd, u.end.name(), fmt.Sprintf("/dev/tty is open on /dev/pts/%d too: /dev/tty of two terminals is not supported (CRIU saves one)", alias)))
			}
			alias = idx
		}
		if si < 0 {
			si = slices.IndexFunc(us, func(u use) bool { return u.end.alias })
		}
		switch {
		case mi >= 0 && (si < 0 || us[si].end.alias) && !ctty[idx]:
			u := us[mi]
			refused.add(refuse(u.pid, u.fd, u.end.name(), fmt.Sprintf("its slave /dev/pts/%d is neither open nor a controlling terminal in the tree: a master alone is not supported", idx)))
			continue
		case mi < 0:
			u := us[si]
			takeExternal(u.pid, u.fd, u.link, idx)
			continue // the caller's terminal: what is queued in it is not the tree's
		}
		if mi >= 0 && si < 0 {
			// A controlling terminal no fd holds: its slave was opened and closed (the
			// master reports a hang-up; a restore opens and closes it the same way), or
			// never opened (taken through the master), which a restore cannot tell.
			u := us[mi]
			hup, err := hungUp(u.pid, u.fd)
			if err != nil {
				if vanished(err) {
					continue
				}
				return false, err
			}
			if !hup {
				refused.add(refuse(u.pid, u.fd, u.end.name(), fmt.Sprintf("its slave /dev/pts/%d, a controlling terminal, was never opened: not supported", idx)))
				continue
			}
		}
		told := map[bool]bool{} // once per end, not per fd
		for _, u := range us {
			if told[u.end.master] {
				continue
			}
			n, err := queued(u.pid, u.fd)
			if err != nil {
				if vanished(err) {
					continue
				}
				return false, err
			}
			if n > 0 {
				told[u.end.master] = true
				transient = true
				refused.add(refuse(u.pid, u.fd, u.end.name(), fmt.Sprintf("%d bytes are queued to be read from it: terminal data is not saved (CRIU replays it through the line discipline, which echoes and translates it again)", n)))
			}
		}
	}
	return transient, nil
}

// hungUp tells whether a master fd of pid reports a hang-up: its slave was closed.
func hungUp(pid, fd int) (bool, error) {
	local, err := fdCopy(pid, fd)
	if err != nil {
		return false, err
	}
	defer unix.Close(local)
	p := []unix.PollFd{{Fd: int32(local)}}
	if _, err := unix.Poll(p, 0); err != nil {
		return false, fmt.Errorf("process %d fd %d: poll: %w", pid, fd, err)
	}
	return p[0].Revents&unix.POLLHUP != 0, nil
}

// queued is how many bytes wait to be read from fd of pid (FIONREAD, after a poll that
// pushes the bytes still in flight into the line discipline): whole lines only, for a
// slave in canonical mode.
func queued(pid, fd int) (int, error) {
	local, err := fdCopy(pid, fd)
	if err != nil {
		return 0, err
	}
	defer unix.Close(local)
	// A poll pushes what the other end wrote and the kernel has not yet handed to this
	// end's line discipline (its flip buffers); FIONREAD alone would not see it.
	unix.Poll([]unix.PollFd{{Fd: int32(local), Events: unix.POLLIN}}, 0)
	n, err := unix.IoctlGetInt(local, unix.TIOCINQ)
	if errors.Is(err, unix.EIO) {
		return 0, nil // hung up: refused by the fd's own check
	}
	if err != nil {
		return 0, fmt.Errorf("process %d fd %d: FIONREAD: %w", pid, fd, err)
	}
	return n, nil
}

// checkFrozenTTYs runs checkTTYs on the stopped tree: bytes that were in flight before
// may be queued now (the tree is then put back and looked at again), and a process
// born since the check may hold a terminal.
func (d *dumper) checkFrozenTTYs() error {
	procs := make([]*liveProc, len(d.procs))
	for i, p := range d.procs { // as readTree read them
		procs[i] = &liveProc{pid: p.pid, stat: p.state.stat, fds: p.state.fds}
	}
	var refused Refusals
	transient, err := checkTTYs(procs, d.opts.ShellJob, &refused)
	switch {
	case err != nil:
		return err
	case transient:
		return &changedError{refused.err()}
	}
	return refused.err()
}

// writeTTYs writes tty-info.img: one tty_info_entry per end of a terminal of the tree.
func (d *dumper) writeTTYs() error {
	if len(d.set.tty.infos) == 0 {
		return nil
	}
	es := make([]proto.Message, len(d.set.tty.infos))
	for i, e := range d.set.tty.infos {
		es[i] = e
	}
	return d.writeImage("tty-info.img", es...)
}
