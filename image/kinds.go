package image

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/apparmor"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/autofs"
	binfmt_misc "github.com/checkpoint-restore/go-criu/v8/crit/images/binfmt-misc"
	bpfmap_data "github.com/checkpoint-restore/go-criu/v8/crit/images/bpfmap-data"
	bpfmap_file "github.com/checkpoint-restore/go-criu/v8/crit/images/bpfmap-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/cgroup"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/cpuinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	criu_sa "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-sa"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	ext_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ext-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fh"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fifo"
	file_lock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	ipc_var "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-var"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/netdev"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/ns"
	packet_sock "github.com/checkpoint-restore/go-criu/v8/crit/images/packet-sock"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rlimit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/signalfd"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	sk_netlink "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-netlink"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timens"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tun"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/userns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/utsns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
)

// Head magics: the first u32 of every v1.1 image but inventory.img.
const (
	MagicImgCommon  uint32 = 0x54564319 // ordinary images
	MagicImgService uint32 = 0x55105940 // stats-* and irmap-cache
)

// Magics this project adds to those go-criu knows.
const (
	MagicPidfd uint32 = 0x54435556 // CRIU 4.2's pidfd images
	// MagicSeal is imgtool's own: the sealed header of an encrypted image set. Its body
	// is defined by package cipher (docs/format.md); the image package only frames it.
	MagicSeal uint32 = 0x5345A1ED
	// MagicSign is imgtool's own too: the signature of an image set ("SIGN"). Its
	// body is defined by package cipher (docs/format.md, Signatures).
	MagicSign uint32 = 0x5349474E
	// MagicForkPages is imgtool's own: the pages a restore puts in a process's parent
	// before forking it, so that siblings share pages their parent has since written over
	// ("FKPG"; ForkPagesFileName). CRIU does not know it and restores without it.
	MagicForkPages uint32 = 0x464B5047
)

// ForkPagesParentOwn marks an entry of imgtool-fork-pages-PID.img (a pagemap_entry: vaddr
// and nr_pages) whose pages are the parent's own, saved in the parent's pages; without
// it they are the process's own pages, saved in its pages.
const ForkPagesParentOwn = 1

// SealFileName is the file name of an encrypted set's sealed header (kind SEAL).
const SealFileName = "imgtool-seal.img"

// SignFileName is the file name of a set's signature (kind SIGN).
const SignFileName = "imgtool-sign.img"

// Kind describes one type of image file: one row of the table that maps magics to
// names, message types, file names and payload codecs.
type Kind struct {
	Name  string // crit's name for the magic: "PSTREE", "CORE", "PAGEMAP", ...
	Magic uint32 // the image's own magic; 0 for raw images
	Head  uint32 // MagicImgCommon, MagicImgService, or 0 (inventory.img, raw images)
	File  string // file name pattern, for fmt: "core-%d.img", "pstree.img"
	Raw   bool   // raw image: no magic and no entries, only bytes (pages-*.img, ...)

	// New returns a new, empty message of the type of the image's entries; nil for
	// raw images and for images whose body is not protobuf entries (SEAL).
	New func() proto.Message

	first   func() proto.Message // type of the first entry, when it differs (PAGEMAP, GHOST_FILE)
	payload payloadCodec         // bytes that follow each entry; nil when none
	sub     subRecords           // records announced by an entry (IPCNS_MSG); nil when none

	// sharedMagic marks a legacy row whose magic belongs to another row (PAGES_OLD and
	// SHM_PAGES_OLD carry PAGEMAP's): KindByMagic never returns it, and such a file is
	// opened with NewReaderKind.
	sharedMagic bool
}

// FileName returns the name of a file of this kind: File formatted with args.
func (k *Kind) FileName(args ...any) string {
	if len(args) == 0 {
		return k.File
	}
	return fmt.Sprintf(k.File, args...)
}

// Opaque tells whether the image's body after its magic is not a sequence of protobuf
// entries but bytes read and written whole with Reader.Read and Writer.Write (SEAL,
// KDAT and the legacy pages formats).
func (k *Kind) Opaque() bool { return !k.Raw && k.New == nil }

// HasPayload tells whether entries of this kind are followed by payload bytes.
func (k *Kind) HasPayload() bool { return k.payload != nil || k.sub != nil }

// newEntry returns the message for entry number index of an image of this kind.
func (k *Kind) newEntry(index int) proto.Message {
	if index == 0 && k.first != nil {
		return k.first()
	}
	if k.New == nil {
		return nil
	}
	return k.New()
}

func newOf[T any, P interface {
	*T
	proto.Message
}]() func() proto.Message {
	return func() proto.Message { return P(new(T)) }
}

// kinds is THE table. Names and magics follow CRIU 4.2's magic.h, file names its
// image-desc.c, and payload rules its image readers (see docs/format.md).
var kinds = []*Kind{
	{Name: "INVENTORY", Magic: 0x58313116, File: "inventory.img", New: newOf[inventory.InventoryEntry]()},
	{Name: "PSTREE", Magic: 0x50273030, File: "pstree.img", New: newOf[pstree.PstreeEntry]()},
	{Name: "FDINFO", Magic: 0x56213732, File: "fdinfo-%d.img", New: newOf[fdinfo.FdinfoEntry]()},
	{Name: "PAGEMAP", Magic: 0x56084025, File: "pagemap-%d.img", New: newOf[pagemap.PagemapEntry](), first: newOf[pagemap.PagemapHead]()},
	{Name: "CORE", Magic: 0x55053847, File: "core-%d.img", New: newOf[criu_core.CoreEntry]()},
	{Name: "IDS", Magic: 0x54432030, File: "ids-%d.img", New: newOf[criu_core.TaskKobjIdsEntry]()},
	{Name: "VMAS", Magic: 0x54123737, File: "vmas-%d.img", New: newOf[vma.VmaEntry]()},
	{Name: "PIPES", Magic: 0x56513555, File: "pipes.img", New: newOf[pipe.PipeEntry]()},
	{Name: "PIPES_DATA", Magic: 0x56453709, File: "pipes-data.img", New: newOf[pipe_data.PipeDataEntry](), payload: pipeDataPayload{}},
	{Name: "FIFO", Magic: 0x58364939, File: "fifo.img", New: newOf[fifo.FifoEntry]()},
	{Name: "FIFO_DATA", Magic: 0x59333054, File: "fifo-data.img", New: newOf[pipe_data.PipeDataEntry](), payload: pipeDataPayload{}},
	{Name: "SIGACT", Magic: 0x55344201, File: "sigacts-%d.img", New: newOf[criu_sa.SaEntry]()},
	{Name: "UNIXSK", Magic: 0x54373943, File: "unixsk.img", New: newOf[sk_unix.UnixSkEntry]()},
	{Name: "INETSK", Magic: 0x56443851, File: "inetsk.img", New: newOf[sk_inet.InetSkEntry]()},
	{Name: "PACKETSK", Magic: 0x60454618, File: "packetsk.img", New: newOf[packet_sock.PacketSockEntry]()},
	{Name: "NETLINK_SK", Magic: 0x58005614, File: "netlinksk.img", New: newOf[sk_netlink.NetlinkSkEntry]()},
	{Name: "SK_QUEUES", Magic: 0x56264026, File: "sk-queues.img", New: newOf[sk_packet.SkPacketEntry](), payload: skQueuePayload{}},
	{Name: "ITIMERS", Magic: 0x57464056, File: "itimers-%d.img", New: newOf[timer.ItimerEntry]()},
	{Name: "POSIX_TIMERS", Magic: 0x52603957, File: "posix-timers-%d.img", New: newOf[timer.PosixTimerEntry]()},
	{Name: "UTSNS", Magic: 0x54473203, File: "utsns-%d.img", New: newOf[utsns.UtsnsEntry]()},
	{Name: "CREDS", Magic: 0x54023547, File: "creds-%d.img", New: newOf[creds.CredsEntry]()},
	{Name: "IPC_VAR", Magic: 0x53115007, File: "ipcns-var-%d.img", New: newOf[ipc_var.IpcVarEntry]()},
	{Name: "IPCNS_SHM", Magic: 0x46283044, File: "ipcns-shm-%d.img", New: newOf[ipc_shm.IpcShmEntry](), payload: shmPayload{}},
	{Name: "IPCNS_MSG", Magic: 0x55453737, File: "ipcns-msg-%d.img", New: newOf[ipc_msg.IpcMsgEntry](), sub: msgQueueRecords{}},
	{Name: "IPCNS_SEM", Magic: 0x59573019, File: "ipcns-sem-%d.img", New: newOf[ipc_sem.IpcSemEntry](), payload: semPayload{}},
	{Name: "REG_FILES", Magic: 0x50363636, File: "reg-files.img", New: newOf[regfile.RegFileEntry]()},
	{Name: "EXT_FILES", Magic: 0x59255641, File: "ext-files.img", New: newOf[ext_file.ExtFileEntry]()},
	{Name: "FS", Magic: 0x51403912, File: "fs-%d.img", New: newOf[fs.FsEntry]()},
	{Name: "MM", Magic: 0x57492820, File: "mm-%d.img", New: newOf[mm.MmEntry]()},
	{Name: "REMAP_FPATH", Magic: 0x59133954, File: "remap-fpath.img", New: newOf[remap_file_path.RemapFilePathEntry]()},
	{Name: "GHOST_FILE", Magic: 0x52583605, File: "ghost-file-%x.img", New: newOf[ghost_file.GhostChunkEntry](), first: newOf[ghost_file.GhostFileEntry](), payload: ghostPayload{}},
	{Name: "TCP_STREAM", Magic: 0x51465506, File: "tcp-stream-%x.img", New: newOf[tcp_stream.TcpStreamEntry](), payload: tcpStreamPayload{}},
	{Name: "EVENTFD_FILE", Magic: 0x44523722, File: "eventfd.img", New: newOf[eventfd.EventfdFileEntry]()},
	{Name: "EVENTPOLL_FILE", Magic: 0x45023858, File: "eventpoll.img", New: newOf[eventpoll.EventpollFileEntry]()},
	{Name: "EVENTPOLL_TFD", Magic: 0x44433746, File: "eventpoll-tfd.img", New: newOf[eventpoll.EventpollTfdEntry]()},
	{Name: "SIGNALFD", Magic: 0x57323820, File: "signalfd.img", New: newOf[signalfd.SignalfdEntry]()},
	{Name: "INOTIFY_FILE", Magic: 0x48424431, File: "inotify.img", New: newOf[fsnotify.InotifyFileEntry]()},
	{Name: "INOTIFY_WD", Magic: 0x54562009, File: "inotify-wd.img", New: newOf[fsnotify.InotifyWdEntry]()},
	{Name: "MNTS", Magic: 0x55563928, File: "mountpoints-%d.img", New: newOf[mnt.MntEntry]()},
	{Name: "NETDEV", Magic: 0x57373951, File: "netdev-%d.img", New: newOf[netdev.NetDeviceEntry]()},
	{Name: "NETNS", Magic: 0x55933752, File: "netns-%d.img", New: newOf[netdev.NetnsEntry]()},
	{Name: "TTY_FILES", Magic: 0x59433025, File: "tty.img", New: newOf[tty.TtyFileEntry]()},
	{Name: "TTY_INFO", Magic: 0x59453036, File: "tty-info.img", New: newOf[tty.TtyInfoEntry]()},
	{Name: "TTY_DATA", Magic: 0x59413026, File: "tty-data.img", New: newOf[tty.TtyDataEntry]()},
	{Name: "FILE_LOCKS", Magic: 0x54323616, File: "filelocks.img", New: newOf[file_lock.FileLockEntry]()},
	{Name: "RLIMIT", Magic: 0x57113925, File: "rlimit-%d.img", New: newOf[rlimit.RlimitEntry]()},
	{Name: "FANOTIFY_FILE", Magic: 0x55096122, File: "fanotify.img", New: newOf[fsnotify.FanotifyFileEntry]()},
	{Name: "FANOTIFY_MARK", Magic: 0x56506035, File: "fanotify-mark.img", New: newOf[fsnotify.FanotifyMarkEntry]()},
	{Name: "SIGNAL", Magic: 0x59255647, File: "signal-s-%d.img", New: newOf[siginfo.SignalQueueEntry]()},
	{Name: "NS_FILES", Magic: 0x61394011, File: "ns-files.img", New: newOf[ns.NsFileEntry]()},
	{Name: "TUNFILE", Magic: 0x57143751, File: "tunfile.img", New: newOf[tun.TunfileEntry]()},
	{Name: "CGROUP", Magic: 0x59383330, File: "cgroup.img", New: newOf[cgroup.CgroupEntry]()},
	{Name: "TIMERFD", Magic: 0x50493712, File: "timerfd.img", New: newOf[timerfd.TimerfdEntry]()},
	{Name: "CPUINFO", Magic: 0x61404013, File: "cpuinfo.img", New: newOf[cpuinfo.CpuinfoEntry]()},
	{Name: "USERNS", Magic: 0x55474906, File: "userns-%d.img", New: newOf[userns.UsernsEntry]()},
	{Name: "SECCOMP", Magic: 0x64413049, File: "seccomp.img", New: newOf[seccomp.SeccompEntry]()},
	{Name: "BINFMT_MISC", Magic: 0x67343323, File: "binfmt-misc.img", New: newOf[binfmt_misc.BinfmtMiscEntry]()},
	{Name: "AUTOFS", Magic: 0x49353943, File: "autofs-%d.img", New: newOf[autofs.AutofsEntry]()},
	{Name: "FILES", Magic: 0x56303138, File: "files.img", New: newOf[fdinfo.FileEntry]()},
	{Name: "MEMFD_INODE", Magic: 0x48453499, File: "memfd.img", New: newOf[memfd.MemfdInodeEntry]()},
	{Name: "TIMENS", Magic: 0x43114433, File: "timens-%d.img", New: newOf[timens.TimensEntry]()},
	{Name: "PIDNS", Magic: 0x61157326, File: "pidns-%d.img", New: newOf[pidns.PidnsEntry]()},
	{Name: "BPFMAP_FILE", Magic: 0x57506142, File: "bpfmap-file.img", New: newOf[bpfmap_file.BpfmapFileEntry]()},
	{Name: "BPFMAP_DATA", Magic: 0x64324033, File: "bpfmap-data.img", New: newOf[bpfmap_data.BpfmapDataEntry](), payload: bpfmapPayload{}},
	{Name: "APPARMOR", Magic: 0x59423047, File: "apparmor.img", New: newOf[apparmor.ApparmorEntry]()},
	{Name: "PIDFD", Magic: MagicPidfd, File: "pidfd.img", New: newOf[pidfd.PidfdEntry]()},
	{Name: "STATS", Magic: 0x57093306, Head: MagicImgService, File: "stats-%s", New: newOf[stats.StatsEntry]()},
	{Name: "IRMAP_CACHE", Magic: 0x57004059, Head: MagicImgService, File: "irmap-cache", New: newOf[fh.IrmapCacheEntry]()},
	{Name: "SEAL", Magic: MagicSeal, File: SealFileName},
	{Name: "SIGN", Magic: MagicSign, File: SignFileName},
	{Name: "FORK_PAGES", Magic: MagicForkPages, File: "imgtool-fork-pages-%d.img", New: newOf[pagemap.PagemapEntry]()},
	// CRIU's kernel-feature cache (/run/criu.kdat): the magic, then a C struct kerndat_s
	// whose layout depends on the CRIU build. Not part of an image set; kept opaque.
	{Name: "KDAT", Magic: 0x57023458, File: "criu.kdat"},

	// Raw images: no magic, no entries. Known by name only.
	{Name: "PAGES", Raw: true, File: "pages-%d.img"},
	{Name: "IFADDR", Raw: true, File: "ifaddr-%d.img"},
	{Name: "ROUTE", Raw: true, File: "route-%d.img"},
	{Name: "ROUTE6", Raw: true, File: "route6-%d.img"},
	{Name: "RULE", Raw: true, File: "rule-%d.img"},
	{Name: "IPTABLES", Raw: true, File: "iptables-%d.img"},
	{Name: "IP6TABLES", Raw: true, File: "ip6tables-%d.img"},
	{Name: "NFTABLES", Raw: true, File: "nftables-%d.img"},
	{Name: "TMPFS_IMG", Raw: true, File: "tmpfs-%d.tar.gz.img"},
	{Name: "TMPFS_DEV", Raw: true, File: "tmpfs-dev-%d.tar.gz.img"},
	{Name: "NETNF_CT", Raw: true, File: "netns-ct-%d.img"},
	{Name: "NETNF_EXP", Raw: true, File: "netns-exp-%d.img"},

	// Pages images of CRIU before 1.x pagemaps: PAGEMAP's magic, then records of a u64
	// address and one page. CRIU 4.2 still names them (image-desc.c) but never reads or
	// writes them; the body is kept opaque. PAGES_OLD's name is also PAGES', which wins in
	// KindByFileName: such a file is opened with NewReaderKind.
	{Name: "PAGES_OLD", Magic: 0x56084025, File: "pages-%d.img", sharedMagic: true},
	{Name: "SHM_PAGES_OLD", Magic: 0x56084025, File: "pages-shmem-%d.img", sharedMagic: true},
}

// Image types that share a magic with a row above, known apart by file name.
var aliasKinds = []*Kind{
	{Name: "PAGEMAP", Magic: 0x56084025, File: "pagemap-shmem-%d.img", New: newOf[pagemap.PagemapEntry](), first: newOf[pagemap.PagemapHead]()},
	{Name: "SIGNAL", Magic: 0x59255647, File: "signal-p-%d.img", New: newOf[siginfo.SignalQueueEntry]()},
	{Name: "BINFMT_MISC", Magic: 0x67343323, File: "binfmt-misc-%d.img", New: newOf[binfmt_misc.BinfmtMiscEntry]()},
}

var (
	kindByName  = map[string]*Kind{}
	kindByMagic = map[uint32]*Kind{}
)

func init() {
	for _, k := range kinds {
		if k.Magic != 0 && k.Head == 0 && k.Name != "INVENTORY" && k.Name != "KDAT" {
			k.Head = MagicImgCommon
		}
		if _, dup := kindByName[k.Name]; dup {
			panic("image: duplicate kind " + k.Name)
		}
		kindByName[k.Name] = k
		if k.Magic != 0 && !k.sharedMagic {
			if _, dup := kindByMagic[k.Magic]; dup {
				panic(fmt.Sprintf("image: duplicate magic %#x", k.Magic))
			}
			kindByMagic[k.Magic] = k
		}
	}
	for _, k := range aliasKinds {
		k.Head = MagicImgCommon
	}
}

// Kinds returns every image type the codec knows, sorted by name.
func Kinds() []*Kind {
	out := append([]*Kind(nil), kinds...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// KindByName returns the image type crit calls name, or nil.
func KindByName(name string) *Kind { return kindByName[name] }

// KindByMagic returns the image type with the given (second) magic, or nil.
func KindByMagic(magic uint32) *Kind { return kindByMagic[magic] }

// KindByFileName returns the image type a file of that name holds, judged by the name
// alone (the way raw images must be recognised), or nil.
func KindByFileName(name string) *Kind {
	base := path.Base(name)
	for _, list := range [][]*Kind{aliasKinds, kinds} {
		for _, k := range list {
			if matchPattern(k.File, base) {
				return k
			}
		}
	}
	return nil
}

// matchPattern reports whether name fits a file name pattern with at most one verb
// (%d, %x or %s). The verb's text must be non-empty and, for %d and %x, of digits.
func matchPattern(pattern, name string) bool {
	i := strings.IndexByte(pattern, '%')
	if i < 0 {
		return pattern == name
	}
	prefix, verb, suffix := pattern[:i], pattern[i+1], pattern[i+2:]
	if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) || len(name) <= len(prefix)+len(suffix) {
		return false
	}
	mid := name[len(prefix) : len(name)-len(suffix)]
	for _, c := range mid {
		switch verb {
		case 'd':
			if c < '0' || c > '9' {
				return false
			}
		case 'x':
			if !strings.ContainsRune("0123456789abcdef", c) {
				return false
			}
		}
	}
	return true
}
