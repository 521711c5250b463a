package restore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	file_lock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	fsimg "github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/par"
)

// source is the image set being restored: *imgset.Set, plain or encrypted, behind a small
// adapter so that nothing else here depends on how the set is stored.
type source interface {
	open(name string) (imageFile, error)
	has(name string) bool
	encrypted() bool
}

// imageFile is one file of the set, as plaintext.
type imageFile interface {
	io.Reader
	io.ReaderAt
	io.Closer
	Size() int64
}

// plan is everything the set says, read and cross-checked before any process exists.
type plan struct {
	src      source
	inv      *inventory.InventoryEntry
	procs    []*procPlan // live processes, pstree order: every parent before its children
	zombies  []*procPlan // dead processes not reaped (zombie.go), pstree order
	all      []*procPlan // procs and zombies, in pstree order
	files    map[uint32]*fdinfo.FileEntry
	pipeData map[uint32][]byte // queued bytes by pipe_id
	fifoData map[uint32][]byte // queued bytes by the FIFO's pipe_id
	pipeSize map[uint32]uint32 // buffer size (F_GETPIPE_SZ) by pipe_id, pipes and FIFOs alike
	memfds   map[uint64]*memfd.MemfdInodeEntry
	shmem    map[uint64]*image.PageMap // pagemap-shmem-<shmid>.img, by shmid
	skQueues map[uint32][]queued       // sk-queues.img, by the receiving socket's file id (sk_unix.go)
	seccomp  []*seccomp.SeccompFilter  // seccomp.img (seccomp.go)
	// ghosts are the deleted files of the set, by the id of each reg entry remapped to one
	// (remap-fpath.img; ghost.go); remapRefused names the remaps restore does not make.
	ghosts       map[uint32]*ghostPlan
	remapRefused []string
	// links are the links (CRIU's link_remap.N) of the files saved through one, by the id
	// of each reg entry remapped to one (REMAP_TYPE LINKED; remap.go).
	links map[uint32]*linkPlan

	pagesTotal, pagesDone int64 // page bytes to write and written, for Options.Progress

	locks []*file_lock.FileLockEntry // filelocks.img, with Options.FileLocks (file_lock.go)

	tty ttyPlan // tty-info.img, and what checkTTYs made of it (tty.go)
	tcp tcpPlan // TCP connections and their streams (sk_tcp.go)
	// extUnixSk lets UNIX sockets connect to their peer outside the set by its name
	// (Options.ExtUnixSk; sk_unix.go).
	extUnixSk bool
	// shellJob accepts a root that did not lead its session (Options.ShellJob: group.go).
	shellJob bool
}

// procPlan is one process of the tree.
type procPlan struct {
	pid, ppid, pgid, sid int
	tids                 []int // leader first
	cores                []*criu_core.CoreEntry
	ids                  *criu_core.TaskKobjIdsEntry
	mm                   *mm.MmEntry
	pagemap              *image.PageMap
	fs                   *fsimg.FsEntry
	fds                  []*fdinfo.FdinfoEntry
	parent               *procPlan
	children             []*procPlan
	dead                 bool        // a zombie: only pid, ppid, pgid, sid and the two below
	exitCode             uint32      // a zombie's wait status (task_core_entry.exit_code)
	comm                 string      // a zombie's name
	forkPages            []forkPages // what its parent holds when it is forked (cow.go)
}

// sharesFiles reports whether the process uses its parent's fd table (CLONE_FILES): it is
// cloned sharing it, and its fds are its parent's, restored by the parent.
func (p *procPlan) sharesFiles() bool {
	return p.parent != nil && !p.dead && !p.parent.dead && p.ids.GetFilesId() == p.parent.ids.GetFilesId()
}

// tableShared reports whether the process's fd table is shared with its parent or a child.
func (p *procPlan) tableShared() bool {
	if p.sharesFiles() {
		return true
	}
	for _, c := range p.children {
		if c.sharesFiles() {
			return true
		}
	}
	return false
}

// leaderCore is the core image of the thread group leader (the one with the task core).
func (p *procPlan) leaderCore() *criu_core.CoreEntry { return p.cores[0] }

// readImage reads one whole protobuf image of the set and checks that it is of the kind
// the codec's table gives its name.
func readImage(src source, name string) (*image.Image, error) {
	want := image.KindByFileName(name)
	f, err := src.open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, err := image.ReadImage(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	switch {
	case want == nil:
		return nil, fmt.Errorf("%s: no image kind has this name", name)
	case img.Kind == nil || img.Kind.Name != want.Name:
		got := "an image of no known kind"
		if img.Kind != nil {
			got = "a " + img.Kind.Name + " image"
		}
		return nil, fmt.Errorf("%s: %s, where its name says %s", name, got, want.Name)
	}
	return img, nil
}

// readEntries reads an image whose entries are all of type T.
func readEntries[T any](src source, name string) ([]*T, *image.Image, error) {
	img, err := readImage(src, name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]*T, 0, len(img.Entries))
	for i, e := range img.Entries {
		m, ok := any(e.Msg).(*T)
		if !ok {
			return nil, nil, fmt.Errorf("%s: entry %d has type %T", name, i, e.Msg)
		}
		out = append(out, m)
	}
	return out, img, nil
}

// readOne reads an image that must hold exactly one entry.
func readOne[T any](src source, name string) (*T, error) {
	es, _, err := readEntries[T](src, name)
	if err != nil {
		return nil, err
	}
	if len(es) != 1 {
		return nil, fmt.Errorf("%s: %d entries, want 1", name, len(es))
	}
	return es[0], nil
}

// loadPlan reads the small images of the set: the tree, each task's core, ids, mm, pagemap,
// fs and fds, the files and the queued pipe data. Pages stay on disk.
func loadPlan(src source) (*plan, error) {
	pl := &plan{
		src:      src,
		files:    map[uint32]*fdinfo.FileEntry{},
		pipeData: map[uint32][]byte{},
		fifoData: map[uint32][]byte{},
		pipeSize: map[uint32]uint32{},
		memfds:   map[uint64]*memfd.MemfdInodeEntry{},
		shmem:    map[uint64]*image.PageMap{},
		skQueues: map[uint32][]queued{},
		ghosts:   map[uint32]*ghostPlan{},
	}
	inv, err := readOne[inventory.InventoryEntry](src, "inventory.img")
	if err != nil {
		return nil, err
	}
	pl.inv = inv
	if inv.GetImgVersion() != image.ImgVersion {
		return nil, fmt.Errorf("inventory.img: image version %d, only %d (CRIU >= 1.x) is supported", inv.GetImgVersion(), image.ImgVersion)
	}
	if !inv.GetFdinfoPerId() {
		return nil, errors.New("inventory.img: per-task fdinfo images (fdinfo_per_id false) are not supported")
	}
	entries, _, err := readEntries[pstree.PstreeEntry](src, "pstree.img")
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, errors.New("pstree.img: no processes")
	}
	byPid := map[int]*procPlan{}
	for i, e := range entries {
		p := &procPlan{pid: int(e.GetPid()), ppid: int(e.GetPpid()), pgid: int(e.GetPgid()), sid: int(e.GetSid())}
		for _, t := range e.Threads {
			p.tids = append(p.tids, int(t))
		}
		if p.pid <= 0 {
			return nil, fmt.Errorf("pstree.img: entry %d: pid %d", i, p.pid)
		}
		if byPid[p.pid] != nil {
			return nil, fmt.Errorf("pstree.img: pid %d appears twice", p.pid)
		}
		byPid[p.pid] = p
		if i == 0 {
			if p.ppid != 0 && byPid[p.ppid] != nil {
				return nil, fmt.Errorf("pstree.img: the root %d has a parent in the tree", p.pid)
			}
		} else {
			par := byPid[p.ppid]
			if par == nil {
				return nil, fmt.Errorf("pstree.img: pid %d: parent %d is not listed before it", p.pid, p.ppid)
			}
			p.parent = par
			par.children = append(par.children, p)
		}
		pl.all = append(pl.all, p)
	}
	// Each process's images are read and decoded on every core at once (a tree of
	// hundreds of processes, a process of thousands of threads has thousands of small
	// images); errors are taken in tree order.
	if err := par.EachUntil(len(pl.all), func(i int) error {
		p := pl.all[i]
		if err := loadTask(src, p); err != nil {
			return err
		}
		if i == 0 && p.dead {
			return fmt.Errorf("pstree.img: the root %d is a zombie: nothing to restore", p.pid)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for _, p := range pl.all {
		if p.dead {
			pl.zombies = append(pl.zombies, p)
			continue
		}
		pl.procs = append(pl.procs, p)
		pl.pagesTotal += p.pagemap.PagesSize()
	}
	for _, z := range pl.zombies {
		if len(z.children) > 0 {
			return nil, fmt.Errorf("pstree.img: zombie %d has children (%d)", z.pid, z.children[0].pid)
		}
	}
	if pl.seccomp, err = loadSeccomp(src); err != nil {
		return nil, err
	}
	for _, p := range pl.procs {
		if err := checkSeccomp(pl, p); err != nil {
			return nil, err
		}
	}
	files, _, err := readEntries[fdinfo.FileEntry](src, "files.img")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if pl.files[f.GetId()] != nil {
			return nil, fmt.Errorf("files.img: file id %d appears twice", f.GetId())
		}
		pl.files[f.GetId()] = f
	}
	for _, k := range fdKinds {
		if l, ok := k.(legacyLoader); ok {
			if err := l.loadLegacy(pl); err != nil {
				return nil, err
			}
		}
	}
	if err := loadGhosts(pl); err != nil {
		return nil, err
	}
	if err := loadPipeData(src, "pipes-data.img", pl.pipeData, pl.pipeSize); err != nil {
		return nil, err
	}
	if err := loadPipeData(src, "fifo-data.img", pl.fifoData, pl.pipeSize); err != nil {
		return nil, err
	}
	if src.has("memfd.img") {
		ms, _, err := readEntries[memfd.MemfdInodeEntry](src, "memfd.img")
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			pl.memfds[m.GetInodeId()] = m
		}
	}
	return pl, nil
}

// loadTask reads the images of one process of pstree.img: a zombie's core (zombie.go),
// or every image of a live one (loadProc). It writes only into p.
func loadTask(src source, p *procPlan) error {
	leader, err := readOne[criu_core.CoreEntry](src, fmt.Sprintf("core-%d.img", p.pid))
	if err != nil {
		return err
	}
	if loadZombie(leader, p) {
		// CRIU 4.2 writes whatever its thread table holds as a zombie's threads
		// (garbage): a zombie has its leader only.
		p.tids = []int{p.pid}
		return nil
	}
	if len(p.tids) == 0 || p.tids[0] != p.pid {
		return fmt.Errorf("pstree.img: pid %d with threads %v", p.pid, p.tids)
	}
	return loadProc(src, p, leader)
}

// loadProc reads the per-task images of one process whose leader's core is leader.
func loadProc(src source, p *procPlan, leader *criu_core.CoreEntry) error {
	p.cores = make([]*criu_core.CoreEntry, len(p.tids))
	p.cores[0] = leader
	if err := par.EachUntil(len(p.tids), func(i int) error {
		if i > 0 {
			c, err := readOne[criu_core.CoreEntry](src, fmt.Sprintf("core-%d.img", p.tids[i]))
			if err != nil {
				return err
			}
			p.cores[i] = c
		}
		if c := p.cores[i]; c.GetMtype() != criu_core.CoreEntry_X86_64 || c.ThreadInfo == nil || c.ThreadInfo.Gpregs == nil {
			return fmt.Errorf("core-%d.img: not an x86_64 task (%v)", p.tids[i], c.GetMtype())
		}
		return nil
	}); err != nil {
		return err
	}
	if p.cores[0].Tc == nil {
		return fmt.Errorf("core-%d.img: no task core", p.pid)
	}
	var err error
	if p.ids, err = readOne[criu_core.TaskKobjIdsEntry](src, fmt.Sprintf("ids-%d.img", p.pid)); err != nil {
		return err
	}
	if p.mm, err = readOne[mm.MmEntry](src, fmt.Sprintf("mm-%d.img", p.pid)); err != nil {
		return err
	}
	if p.fs, err = readOne[fsimg.FsEntry](src, fmt.Sprintf("fs-%d.img", p.pid)); err != nil {
		return err
	}
	img, err := readImage(src, fmt.Sprintf("pagemap-%d.img", p.pid))
	if err != nil {
		return err
	}
	if p.pagemap, err = image.NewPageMap(img); err != nil {
		return fmt.Errorf("pagemap-%d.img: %w", p.pid, err)
	}
	if p.forkPages, err = loadForkPages(src, p.pid); err != nil {
		return err
	}
	name := fmt.Sprintf("fdinfo-%d.img", p.ids.GetFilesId())
	if src.has(name) {
		if p.fds, _, err = readEntries[fdinfo.FdinfoEntry](src, name); err != nil {
			return err
		}
	}
	sort.Slice(p.fds, func(i, j int) bool { return p.fds[i].GetFd() < p.fds[j].GetFd() })
	for i := 1; i < len(p.fds); i++ {
		if p.fds[i].GetFd() == p.fds[i-1].GetFd() {
			return fmt.Errorf("%s: fd %d appears twice", name, p.fds[i].GetFd())
		}
	}
	return nil
}

// loadPipeData reads pipes-data.img or fifo-data.img, when the set has one.
func loadPipeData(src source, name string, into map[uint32][]byte, sizes map[uint32]uint32) error {
	if !src.has(name) {
		return nil
	}
	img, err := readImage(src, name)
	if err != nil {
		return err
	}
	for i, e := range img.Entries {
		pd, ok := e.Msg.(*pipe_data.PipeDataEntry)
		if !ok {
			return fmt.Errorf("%s: entry %d has type %T", name, i, e.Msg)
		}
		if uint32(len(e.Payload)) != pd.GetBytes() {
			return fmt.Errorf("%s: pipe %d: %d bytes of data, entry says %d", name, pd.GetPipeId(), len(e.Payload), pd.GetBytes())
		}
		into[pd.GetPipeId()] = append(into[pd.GetPipeId()], e.Payload...)
		if pd.Size != nil {
			sizes[pd.GetPipeId()] = pd.GetSize()
		}
	}
	return nil
}

// shmemPageMap returns the page map of a shared memory object (pagemap-shmem-<shmid>.img),
// or nil when the set saved no pages for it.
func (pl *plan) shmemPageMap(shmid uint64) (*image.PageMap, error) {
	if pm, ok := pl.shmem[shmid]; ok {
		return pm, nil
	}
	name := fmt.Sprintf("pagemap-shmem-%d.img", shmid)
	if !pl.src.has(name) {
		pl.shmem[shmid] = nil
		return nil, nil
	}
	img, err := readImage(pl.src, name)
	if err != nil {
		return nil, err
	}
	pm, err := image.NewPageMap(img)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	pl.shmem[shmid] = pm
	return pm, nil
}

// isNotExist tells whether err says a file is missing.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
