package dump

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timens"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/par"
	"github.com/imgtool/imgtool/internal/phase"
)

const (
	kcmpVM      = 1
	kcmpFiles   = 2
	kcmpFS      = 3
	kcmpSighand = 4
)

// Namespace ids as CRIU 4.2 numbers the host's namespaces (in the order it meets them);
// nothing else refers to them, as no namespace image is written for the host's.
var hostNsIDs = struct{ pid, net, ipc, uts, time, mnt, user, cgroup uint32 }{1, 2, 3, 4, 5, 6, 7, 8}

// kobjIDs are the ids of the kernel objects a process may share (ids-PID.img).
type kobjIDs struct{ vm, files, fs, sighand uint32 }

// collect inspects the stopped tree: every process, its memory layout, its files.
func (d *dumper) collect() error {
	d.set = newSetState()
	d.set.ghosts.limit = ghostLimit(d.opts.GhostLimit)
	d.set.links.allowed = d.opts.LinkRemap
	d.set.runID = newRunID()
	d.set.tcp = newTCPConns(d.opts, d.set.runID) // sk_tcp.go
	d.set.live = map[int]bool{}
	for _, p := range d.procs {
		d.set.live[p.pid] = true
	}
	if err := d.holdLocks(); err != nil {
		return err
	}
	phase.Mark("dump: hold file locks")
	// What /proc tells was read once the tree stopped (readTree); each process's mappings
	// are classified on every core at once, then its threads and injected calls run on
	// the tracer thread (errors in tree order, a process's calls' before its mappings').
	vmasOf := make([][]*vmaDesc, len(d.procs))
	vmaErrs := make([]error, len(d.procs))
	files := &mappedFiles{}
	par.Each(len(d.procs), func(i int) { vmasOf[i], vmaErrs[i] = buildVMAs(d.procs[i].pid, d.procs[i].state.vmas, files) })
	for i, p := range d.procs {
		if err := d.checkCtx(); err != nil {
			return err
		}
		if err := d.collectProcess(p); err != nil {
			return err
		}
		if vmaErrs[i] != nil {
			return vmaErrs[i]
		}
		p.mem = &memState{vmas: vmasOf[i]}
	}
	phase.Mark("dump: registers, injected calls, mappings")
	d.numberKobjs()
	s := d.set
	// Every process's fds inspected on every core at once, then numbered in tree order.
	fdsOf := make([][]*fdDesc, len(d.procs))
	fdErrs := make([]error, len(d.procs))
	par.Each(len(d.procs), func(i int) { fdsOf[i], fdErrs[i] = collectFds(d.procs[i]) })
	for i, p := range d.procs {
		if err := s.numberMM(p); err != nil {
			return err
		}
		fds, err := fdsOf[i], fdErrs[i]
		if err != nil {
			return err
		}
		if err := s.numberFds(p, fds); err != nil {
			return err
		}
		if err := s.numberFs(p); err != nil {
			return err
		}
	}
	if err := s.finishUnix(d.opts.ExtUnixSk); err != nil {
		return err
	}
	if err := s.finishTCP(); err != nil {
		return err
	}
	phase.Mark("dump: number files")
	d.stats.memStart = time.Now()
	for _, m := range s.memfds {
		if err := d.scanShmem(m); err != nil {
			return err
		}
		s.nextPagesID++
		m.pagesID = s.nextPagesID
		d.progressTotal += int64(m.pages * pageSize)
	}
	for _, p := range d.procs {
		runs, n, err := d.scanPages(p.pid, p.mem.vmas)
		if err != nil {
			return err
		}
		p.mem.runs, p.mem.pages = runs, n
		s.nextPagesID++
		p.mem.pagesID = s.nextPagesID
		d.progressTotal += int64(n * pageSize)
		for _, r := range runs {
			if r.flags&image.PagemapLazy != 0 {
				d.stats.pagesLazy += r.n
			}
		}
	}
	phase.Mark("dump: scan pages")
	s.seccomp = collectSeccomp(d.procs)
	defer phase.Mark("dump: plan copy-on-write sharing")
	return d.planSharing()
}

// numberKobjs gives each process the ids of its memory, fd table, fs context and signal
// handlers (ids-PID.img). No two processes of the tree share one (checkSharing refused
// that, before and after the freeze) but for a child cloned with its parent's fd table,
// which gets its parent's files id; each other gets its own, numbered from 2 in tree
// order: 1 is the dumper's own (inventory root_ids), which CRIU requires to differ.
func (d *dumper) numberKobjs() {
	for i, p := range d.procs {
		n := uint32(i + 2)
		p.ids = kobjIDs{vm: n, files: n, fs: n, sighand: n}
		if p.parent != nil && sharesFiles(p.parent.pid, p.pid) {
			p.ids.files = p.parent.ids.files
		}
	}
}

// scanShmem finds the pages of a shmem object that hold data (SEEK_DATA/SEEK_HOLE: pages
// in memory or in swap; holes were never written).
func (d *dumper) scanShmem(m *memfdInode) error {
	f, err := os.Open(m.mapFile)
	if err != nil {
		return fmt.Errorf("open shared memory %s: %w", m.entry.GetName(), err)
	}
	defer f.Close()
	size := int64(m.entry.GetSize())
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			return fmt.Errorf("SEEK_DATA in %s: %w", m.entry.GetName(), err)
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("SEEK_HOLE in %s: %w", m.entry.GetName(), err)
		}
		start := data &^ (pageSize - 1)
		end := min((hole+pageSize-1)&^(pageSize-1), (size+pageSize-1)&^(pageSize-1))
		if end > start {
			n := uint64(end-start) / pageSize
			m.runs = append(m.runs, pageRun{addr: uint64(start), n: n, flags: image.PagemapPresent})
			m.pages += n
		}
		off = end
		if end <= data {
			off = data + pageSize
		}
	}
	d.stats.shpagesScanned += uint64(size+pageSize-1) / pageSize
	return nil
}

// write writes every image of the set.
func (d *dumper) write() error {
	s := d.set
	if err := d.writeImage("inventory.img", d.inventory()); err != nil {
		return err
	}
	var ps []proto.Message
	for _, p := range d.procs {
		e := &pstree.PstreeEntry{Pid: proto.Uint32(uint32(p.pid)), Ppid: proto.Uint32(0),
			Pgid: proto.Uint32(uint32(p.state.stat.Pgid)), Sid: proto.Uint32(uint32(p.state.stat.Sid))}
		if p.parent != nil {
			e.Ppid = proto.Uint32(uint32(p.parent.pid))
		}
		for _, t := range p.threads {
			e.Threads = append(e.Threads, uint32(t.tid))
		}
		ps = append(ps, e)
	}
	for _, z := range d.zombies {
		ps = append(ps, &pstree.PstreeEntry{Pid: proto.Uint32(uint32(z.pid)), Ppid: proto.Uint32(uint32(z.parent.pid)),
			Pgid: proto.Uint32(uint32(z.stat.Pgid)), Sid: proto.Uint32(uint32(z.stat.Sid)), Threads: []uint32{uint32(z.pid)}})
	}
	if err := d.writeImage("pstree.img", ps...); err != nil {
		return err
	}
	for _, z := range d.zombies {
		if err := d.writeZombie(z); err != nil {
			return err
		}
	}
	for _, m := range s.memfds {
		if err := d.writeShmem(m); err != nil {
			return err
		}
	}
	if err := d.writeProcessImages(); err != nil {
		return err
	}
	// Several processes' pages at once (each file is read and written on every core
	// too): a tree's small processes spent more in each file's setup than in its pages.
	if err := par.EachUntil(len(d.procs), func(i int) error { return d.writePages(d.procs[i]) }); err != nil {
		return err
	}
	for _, p := range d.procs {
		d.stats.pagesWritten += p.mem.pages
	}
	var files []proto.Message
	for _, f := range orderUnixPeers(s.files) { // sk_unix.go
		files = append(files, f)
	}
	if err := d.writeImage("files.img", files...); err != nil {
		return err
	}
	if len(s.memfds) > 0 {
		var ms []proto.Message
		for _, m := range s.memfds {
			ms = append(ms, m.entry)
		}
		if err := d.writeImage("memfd.img", ms...); err != nil {
			return err
		}
	}
	if err := d.writeGhosts(); err != nil {
		return err
	}
	if len(s.pipes) > 0 {
		if err := d.writePipeData("pipes-data.img", s.pipes); err != nil {
			return err
		}
	}
	if len(s.fifos) > 0 {
		if err := d.writePipeData("fifo-data.img", s.fifos); err != nil {
			return err
		}
	}
	if err := d.writeSkQueues(s); err != nil {
		return err
	}
	if err := d.writeTCPStreams(); err != nil {
		return err
	}
	if err := d.writeFileLocks(); err != nil {
		return err
	}
	if err := d.writeTTYs(); err != nil {
		return err
	}
	if err := d.writeImage("seccomp.img", &s.seccomp.entry); err != nil {
		return err
	}
	if err := d.writeImage("timens-0.img", timensNow()); err != nil {
		return err
	}
	d.stats.memEnd = time.Now()
	return d.writeImage("stats-dump", d.statsEntry())
}

func (d *dumper) inventory() *inventory.InventoryEntry {
	return &inventory.InventoryEntry{
		ImgVersion: proto.Uint32(image.ImgVersion), FdinfoPerId: proto.Bool(true),
		RootIds: taskIDs(kobjIDs{1, 1, 1, 1}), NsPerId: proto.Bool(true),
		RootCgSet: proto.Uint32(cgSetID), Lsmtype: inventory.Lsmtype_NO_LSM.Enum(),
		NetworkLockMethod: proto.Uint32(d.networkLockMethod()), PluginsEntry: &inventory.PluginsEntry{},
		DumpCriuRunId: proto.String(d.set.runID),
	}
}

// newRunID is a random UUID, the dump's dump_criu_run_id.
func newRunID() string {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:])
}

func taskIDs(k kobjIDs) *criu_core.TaskKobjIdsEntry {
	n := hostNsIDs
	return &criu_core.TaskKobjIdsEntry{
		VmId: proto.Uint32(k.vm), FilesId: proto.Uint32(k.files), FsId: proto.Uint32(k.fs), SighandId: proto.Uint32(k.sighand),
		PidNsId: proto.Uint32(n.pid), NetNsId: proto.Uint32(n.net), IpcNsId: proto.Uint32(n.ipc), UtsNsId: proto.Uint32(n.uts),
		MntNsId: proto.Uint32(n.mnt), UserNsId: proto.Uint32(n.user), CgroupNsId: proto.Uint32(n.cgroup), TimeNsId: proto.Uint32(n.time),
	}
}

// timensNow records the clocks a time namespace must continue from (timens-0.img).
func timensNow() *timens.TimensEntry {
	var mono, boot unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot)
	ts := func(t unix.Timespec) *timens.Timespec {
		return &timens.Timespec{TvSec: proto.Uint64(uint64(t.Sec)), TvNsec: proto.Uint64(uint64(t.Nsec))}
	}
	return &timens.TimensEntry{Monotonic: ts(mono), Boottime: ts(boot)}
}

func (d *dumper) statsEntry() *stats.StatsEntry {
	us := func(a, b time.Time) *uint32 {
		if a.IsZero() || b.IsZero() {
			return proto.Uint32(0)
		}
		return proto.Uint32(uint32(b.Sub(a).Microseconds()))
	}
	st := d.stats
	return &stats.StatsEntry{Dump: &stats.DumpStatsEntry{
		FreezingTime: us(st.freezeStart, st.frozenAt), FrozenTime: us(st.frozenAt, time.Now()),
		MemdumpTime: us(st.memStart, st.memEnd), MemwriteTime: us(st.memStart, st.memEnd),
		PagesScanned: proto.Uint64(st.pagesScanned), PagesSkippedParent: proto.Uint64(0),
		PagesWritten: proto.Uint64(st.pagesWritten), IrmapResolve: proto.Uint32(0), PagesLazy: proto.Uint64(st.pagesLazy),
		PagePipes: proto.Uint64(0), PagePipeBufs: proto.Uint64(0),
		ShpagesScanned: proto.Uint64(st.shpagesScanned), ShpagesSkippedParent: proto.Uint64(0),
		ShpagesWritten: proto.Uint64(st.shpagesWritten),
	}}
}

// writeProcessImages writes the small images of every process (core-TID.img of each
// thread, ids, mm, fs, fdinfo, pagemap, fork pages): each is made and written on its own,
// all of them on every core at once (a thousand threads are a thousand core images);
// errors are taken in tree order.
func (d *dumper) writeProcessImages() error {
	var jobs []func() error
	small := func(name string, entries func() []proto.Message) {
		jobs = append(jobs, func() error { return d.writeImage(name, entries()...) })
	}
	writtenFdinfo := map[uint32]bool{}
	for _, p := range d.procs {
		for _, t := range p.threads {
			jobs = append(jobs, func() error {
				c, err := coreEntry(p, t)
				if err != nil {
					return err
				}
				d.set.seccomp.setCore(t.tid, c.ThreadCore)
				return d.writeImage(fmt.Sprintf("core-%d.img", t.tid), c)
			})
		}
		small(fmt.Sprintf("ids-%d.img", p.pid), func() []proto.Message { return []proto.Message{taskIDs(p.ids)} })
		small(fmt.Sprintf("mm-%d.img", p.pid), func() []proto.Message { return []proto.Message{mmEntry(p)} })
		small(fmt.Sprintf("fs-%d.img", p.pid), func() []proto.Message {
			return []proto.Message{&fs.FsEntry{CwdId: proto.Uint32(p.files.cwdID), RootId: proto.Uint32(p.files.rootID), Umask: proto.Uint32(p.state.umask)}}
		})
		if !writtenFdinfo[p.ids.files] {
			writtenFdinfo[p.ids.files] = true
			small(fmt.Sprintf("fdinfo-%d.img", p.ids.files), func() []proto.Message {
				var fds []proto.Message
				for _, f := range p.files.fds {
					fds = append(fds, f)
				}
				return fds
			})
		}
		small(fmt.Sprintf("pagemap-%d.img", p.pid), func() []proto.Message { return pagemapEntries(p.mem.pagesID, p.mem.runs) })
		if len(p.forkPages) > 0 {
			small(fmt.Sprintf("imgtool-fork-pages-%d.img", p.pid), func() []proto.Message { return forkPagesEntries(p.forkPages) })
		}
	}
	return par.EachUntil(len(jobs), func(i int) error { return jobs[i]() })
}

// writePages writes the pages of one process. It may run for several processes at once.
func (d *dumper) writePages(p *process) error {
	w, err := d.create(fmt.Sprintf("pages-%d.img", p.mem.pagesID))
	if err != nil {
		return err
	}
	src := newProcPages(d, p.pid, p.mem.runs)
	defer src.close()
	if rf, ok := w.(readerFromAt); ok {
		// A file of an *imgset.Writer: each core reads pages straight into a buffer of
		// its own and writes them from there (sealed, in an encrypted set).
		err = rf.ReadFromAt(src, src.size, d.progressAdd)
	} else {
		err = d.copyPages(src, w)
	}
	if err != nil {
		return fmt.Errorf("write pages of %d: %w", p.pid, err)
	}
	return d.finish(w)
}

func mmEntry(p *process) *mm.MmEntry {
	st := p.state.stat
	e := &mm.MmEntry{
		MmStartCode: proto.Uint64(st.StartCode), MmEndCode: proto.Uint64(st.EndCode),
		MmStartData: proto.Uint64(st.StartData), MmEndData: proto.Uint64(st.EndData),
		MmStartStack: proto.Uint64(st.StartStack), MmStartBrk: proto.Uint64(st.StartBrk),
		MmBrk: proto.Uint64(p.state.brk), MmArgStart: proto.Uint64(st.ArgStart), MmArgEnd: proto.Uint64(st.ArgEnd),
		MmEnvStart: proto.Uint64(st.EnvStart), MmEnvEnd: proto.Uint64(st.EnvEnd),
		ExeFileId: proto.Uint32(p.files.exeID), MmSavedAuxv: p.state.auxv,
		Dumpable: proto.Int32(p.state.dumpable), ThpDisabled: proto.Bool(p.state.thpDisabled),
	}
	for _, v := range p.mem.vmas {
		e.Vmas = append(e.Vmas, v.entry())
	}
	return e
}

func pagemapEntries(pagesID uint32, runs []pageRun) []proto.Message {
	out := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(pagesID)}}
	for _, r := range runs {
		out = append(out, &pagemap.PagemapEntry{Vaddr: proto.Uint64(r.addr), CompatNrPages: proto.Uint32(0),
			Flags: proto.Uint32(r.flags), NrPages: proto.Uint64(r.n)})
	}
	return out
}

// writeShmem writes pagemap-shmem-INO.img and the pages of one shmem object, read through
// the object itself (not through a process's mapping).
func (d *dumper) writeShmem(m *memfdInode) error {
	name := fmt.Sprintf("pagemap-shmem-%d.img", m.entry.GetShmid())
	if err := d.writeImage(name, pagemapEntries(m.pagesID, m.runs)...); err != nil {
		return err
	}
	w, err := d.create(fmt.Sprintf("pages-%d.img", m.pagesID))
	if err != nil {
		return err
	}
	f, err := os.Open(m.mapFile)
	if err != nil {
		return fmt.Errorf("open shared memory %s: %w", m.entry.GetName(), err)
	}
	defer f.Close()
	buf := make([]byte, copyUnit)
	for _, r := range m.runs {
		for off := uint64(0); off < r.n*pageSize; {
			if err := d.checkCtx(); err != nil {
				return err
			}
			n := min(uint64(len(buf)), r.n*pageSize-off)
			if err := readShmem(f, int64(r.addr+off), buf[:n]); err != nil {
				return fmt.Errorf("read shared memory %s at %#x: %w", m.entry.GetName(), r.addr+off, err)
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return fmt.Errorf("write pages of %s: %w", m.entry.GetName(), err)
			}
			d.progressAdd(int64(n))
			off += n
		}
	}
	d.stats.shpagesWritten += m.pages
	return d.finish(w)
}

// readShmem fills b with the shmem object's bytes at off. Those of the last page past the
// end of the object cannot be read(2), but a mapping sees (and may have written) them and
// CRIU dumps the whole page through one; so are they read here (readPastEOF).
func readShmem(f *os.File, off int64, b []byte) error {
	n, err := f.ReadAt(b, off)
	if err == io.EOF {
		return readPastEOF(f, off+int64(n), b[n:])
	}
	return err
}

// readPastEOF reads the bytes at off, past the end of the object but inside its last page,
// through a mapping of that page. A fault (the object shrank meanwhile) is an error.
func readPastEOF(f *os.File, off int64, b []byte) (err error) {
	page := off &^ (pageSize - 1)
	if len(b) == 0 {
		return nil
	}
	if off+int64(len(b)) > page+pageSize {
		return fmt.Errorf("%d bytes at %#x are past the last page", len(b), off)
	}
	m, err := unix.Mmap(int(f.Fd()), page, pageSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping the last page: %w", err)
	}
	defer unix.Munmap(m)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading the last page: %v", r)
		}
	}()
	copy(b, m[off-page:])
	return nil
}

func (d *dumper) writePipeData(name string, pipes []pipeData) error {
	k := image.KindByFileName(name)
	w, err := d.create(name)
	if err != nil {
		return err
	}
	iw, err := image.NewWriter(w, k)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, p := range pipes {
		e := &pipe_data.PipeDataEntry{PipeId: proto.Uint32(p.pipeID), Bytes: proto.Uint32(uint32(len(p.data))), Size: proto.Uint32(p.size)}
		if err := iw.WriteEntry(e); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if _, err := iw.Write(p.data); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := iw.Close(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return d.finish(w)
}

// writeImage encodes a small image in memory and writes it to the sink in one go.
func (d *dumper) writeImage(name string, entries ...proto.Message) error {
	k := image.KindByFileName(name) // the codec's table: one place for names and kinds
	if k == nil {
		return fmt.Errorf("%s: no image kind of the codec has this name", name)
	}
	var buf bytes.Buffer
	iw, err := image.NewWriter(&buf, k)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, e := range entries {
		if err := iw.WriteEntry(e); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := iw.Close(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	w, err := d.create(name)
	if err != nil {
		return err
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return d.finish(w)
}

// create and finish may be called from several goroutines at once
// (writeProcessImages): the sink's Create must allow it.
func (d *dumper) create(name string) (io.WriteCloser, error) {
	if err := d.checkCtx(); err != nil {
		return nil, err
	}
	w, err := d.sink.Create(name)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	d.openMu.Lock()
	d.open = append(d.open, w)
	d.openMu.Unlock()
	return w, nil
}

// finish closes a completed file of the set.
func (d *dumper) finish(w io.WriteCloser) error {
	d.openMu.Lock()
	for i, o := range d.open {
		if o == w {
			d.open = append(d.open[:i], d.open[i+1:]...)
			break
		}
	}
	d.openMu.Unlock()
	if err := w.Close(); err != nil {
		return fmt.Errorf("close image file: %w", err)
	}
	return nil
}

var _ = fdinfo.FdTypes_REG
