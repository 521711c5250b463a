// Package restore recreates the processes of a CRIU 4.2 image set (written by imgtool dump
// or by CRIU itself) natively, with ptrace and injected system calls: no CRIU binary, no
// cgo, and no code of ours in the targets once they run (a 51-byte loop that makes a batch
// of calls sits in the scratch area while they are built, and goes with it).
//
// # How it works
//
// Restore reads the small images (pstree, core, ids, mm, pagemap, fs, fdinfo, files, pipe
// and FIFO data, memfd, remap-fpath) through the image codec (an encrypted set's are authenticated as
// they are read), then checks everything it can before any process exists: every PID and
// TID free (one a zombie holds, the set's own process killed by its dump and not reaped
// yet, is waited for up to 3 s) and below pid_max, every file the set names present with the recorded mode,
// size and GNU build id, the FPU state loadable on this CPU (xstate_bv within XCR0), the
// vDSO and vvar sizes those of this kernel (read from imgtool's own, which every process
// of this kernel shares), the set's fd numbers within the hard RLIMIT_NOFILE, nothing it
// does not support, every ghost file makeable (see Ghost files), the link of every file
// saved through one there and the file saved (see Link remaps). Tests count the helper
// processes started to prove a refusal comes first. Only the pages files are read (and, when encrypted, authenticated) later, as the
// processes are filled.
//
// Resource limits are set best-effort, as CRIU's restorer does: a saved hard limit above
// the one imgtool runs under cannot be restored without CAP_SYS_RESOURCE, so it is clamped
// to the current one (the soft limit with it) and reported once through Options.Warn.
//
// All ptrace calls then run on one goroutine locked to its OS thread (the tracer):
//
//  1. A helper is executed under ptrace: a 132-byte static ELF built in a memfd, caught at
//     its exec stop before its first instruction. Syscalls are injected by pointing RIP at
//     a syscall instruction inside the vDSO, with orig_rax = -1, and stepping to the
//     syscall exit stop. The helper is shaped into a blank template: a scratch area and the
//     vvar, vvar_vclock and vDSO mappings parked together in a hole that no restored
//     process uses, everything else unmapped, no fds, a pidfd of imgtool above every fd
//     number of the set, all signals blocked (PTRACE_SETSIGMASK).
//  2. clone3 with set_tid, injected into the helper, creates the root with its PID (EEXIST
//     is retried briefly: a PID can stay referenced for a moment). The helper is then
//     killed; imgtool is a child subreaper, so the root becomes imgtool's child. Every open
//     file description of the set is created once, in imgtool (files opened at their
//     offsets and flags, pipes and FIFOs with their queued bytes, memfds filled from their
//     shmem pages: pagemap-shmem-<shmid>.img, the bytes of the last page past the end of the
//     memfd written through a mapping, eventfds with their counter and semaphore mode,
//     signalfds with their mask, timerfds and epolls empty, pidfds opened on the restored
//     process once every process exists (pidfd.go), UNIX sockets as sk_unix.go
//     describes: socketpairs for connected ends, bound and listening sockets, queues refilled
//     from the peer, datagram sockets whose peer was outside the tree (its entry has
//     USK_EXTERN: dump --ext-unix-sk, criu dump --ext-unix-sk) connected to that peer's
//     name again with Options.ExtUnixSk (the peer itself is never made, nor its file
//     touched), then options and shutdown; TCP and UDP sockets as sk_inet.go
//     describes: bound to their saved address and port, TCP listeners listening with their
//     backlog, UDP sockets connected to their peer, TCP connections as sk_tcp.go describes
//     (with Options.TCPEstablished: locked by a socket filter and rebuilt in repair mode
//     from tcp-stream-INO.img, sequence numbers, options, queues, window and the FINs of a
//     half-closed one, as libsoccr does; with Options.TCPClose: closed), then IP, socket
//     and TCP options; pseudo-terminal pairs as tty.go describes, see Terminals; F_SETSIG
//     signals set), and
//     handed to the root with pidfd_getfd at a slot above every fd number. The root's memory is then
//     rebuilt (step 3's mappings and pages) and locked, and each other process is cloned,
//     with its PID, from its parent once the parent's memory is rebuilt (siblings in one
//     batch of clone3 calls, up to cloneChunk, unless one is a zombie, needs a group
//     leader made first or has its parent hold pages for its fork; spawnSiblings), and
//     inherits the slots and a copy of the parent's memory, every page shared
//     copy-on-write. It keeps
//     the parts of its mappings that are still copies of its parent's (image.InheritedVMA,
//     the rule dump checks against: same kind, file and offsets, flags fork copies; the
//     ranges may differ) and unmaps the rest; in what it keeps a saved page equal to the
//     parent's is not written, so it stays shared as it was when dumped, and a page the
//     parent has and it did not is dropped (MADV_DONTNEED) (cow.go; pages are compared by
//     reading /proc/PID/mem, since process_vm_readv pins pages and pinning unshares them).
//     setsid/setpgid give sessions and groups as each process is born, and a session leader
//     takes its controlling terminal right after its setsid (TIOCSCTTY), before it forks,
//     then opens /dev/tty fds of its session if any. Each kind of file
//     is one fileKind in the file named after it (eventfd.go, timerfd.go, ...), listed in
//     fdKinds, the one table both the pre-check (checkFd) and the creation of
//     descriptions go through (see dump/doc.go for the rule). The per-kind images older
//     CRIU versions wrote instead of files.img entries (eventfd.img, eventpoll.img with
//     eventpoll-tfd.img, signalfd.img, timerfd.img; CRIU 4.2 still reads them) are read too.
//  3. Each process's memory (in step 2, before its children are cloned): vvar,
//     vvar_vclock and vDSO are mremapped to the saved addresses (CRIU 4.2 saves vvar and
//     vvar_vclock as one entry; it is split at this kernel's sizes; a child finds them
//     where its parent's were saved, and they are parked first if its own differ), every
//     VMA it does not keep from its parent is mapped at its address with MAP_FIXED_NOREPLACE
//     (files and memfds handed over with pidfd_getfd; the mmap and madvise calls run in
//     batches of a few hundred by a 51-byte loop written into the scratch area, which is
//     executable for it, ending in an int3 whose SIGTRAP the tracer discards: one ptrace
//     stop a batch, where one call at a time took two a call; internal/ptrace/batch.go),
//     then the saved pages are written with
//     process_vm_writev by every core, each reading a 1 MiB unit of the pages file into a
//     buffer of its own and writing it from there (one remote iovec per run; pages.go);
//     an encrypted pages file is read the same way through imgset's parallel decryption,
//     so its plaintext exists only in those buffers and in the restored memory. Pages of
//     mappings without PROT_WRITE (read-only and PROT_NONE) go through /proc/PID/mem, the
//     rest of a run that crosses them through process_vm_writev. A process with 1 MiB of
//     pages or more makes a userfaultfd (UFFD_USER_MODE_ONLY) that imgtool takes a copy of
//     and registers its fresh private anonymous mappings that get 64 KiB or more with:
//     their pages are placed with UFFDIO_COPY, which neither zeroes a page first nor minds
//     the protections, and closing the fd ends the registration (userfault.go; without a
//     userfaultfd, the writes above). The dumped vDSO pages are skipped
//     (this kernel's vDSO is used), and the areas saved locked are locked (see lockMemory).
//     Then each process rebuilds the rest of itself (the first batches of all processes
//     started before any is waited for, but for those sharing an fd table): its login
//     uid, then in one batch
//     PR_SET_MM_MAP (the mm fields and exe), personality, root, cwd and umask, the
//     executable and directories handed over inside the batch (handover, files.go), and
//     in the same batch its fds (dup3 from the slots, close-on-exec as saved; after the
//     batch, O_ASYNC turned on by the process on its own fd number, which the kernel
//     reports as si_fd; then every target of an epoll registered,
//     EPOLL_CTL_ADD with its events and data, by the first process of the tree that has
//     the epoll, under the fd number it was registered with: epoll keys a registration by
//     file and number, and polls a signalfd for the signals of the process that adds it),
//     the slots closed (in the batch of the mm fields and the fds when no epoll or
//     O_ASYNC needs them after), file locks taken back (file_lock.go: with
//     Options.FileLocks, as criu restore --file-locks; each POSIX lock, OFD lock, flock
//     and lease of filelocks.img by the process and on the fd that held it, with F_SETLK,
//     F_OFD_SETLK, flock or F_SETLEASE, never waiting: a lock held meanwhile by another
//     process fails the restore, naming it; a set holding locks is refused without the
//     option), threads (clone3 with CLONE_THREAD and
//     set_tid, up to 383 in one batch of the leader; threads.go), per-thread name,
//     altstack, robust list, clear_child_tid and rseq (the leader's in its process's first
//     batch, one batch each other thread, a hundred threads' batches started before any
//     is waited for), nice and policy
//     (SCHED_RESET_ON_FORK included), interval timers, POSIX timers created with
//     their saved ids (posix_timer.go: PR_TIMER_CREATE_RESTORE_IDS, or, on kernels without
//     it, created in id order and the ones in between deleted, as CRIU does) and disarmed,
//     resource limits (those that
//     differ from what the process inherited, set from imgtool with prlimit(2) while the
//     process still has imgtool's credentials: on another uid's process it needs
//     CAP_SYS_RESOURCE), oom_score_adj, seccomp (seccomp.go: strict mode, or the thread's
//     filters installed oldest first; imgtool's later calls pass with
//     PTRACE_O_SUSPEND_SECCOMP), credentials (only when they differ from imgtool's, which
//     every process and thread inherited: read once, from the root's status),
//     parent death signals (a credential change clears them), dumpable, child subreaper
//     and signal actions (one batch, the process's last: its trap resets a blocked or ignored
//     SIGTRAP's action, so SIGTRAP's comes after it, and every call from here on is one
//     step at a time; every call before runs as a batch, single ones as batches of one,
//     one ptrace stop instead of two; every process's last batch is started before any
//     is waited for), pending signals queued (still blocked), the POSIX timers armed (time left and
//     interval; their signals stay pending until the tree runs), the scratch area unmapped.
//     Once every process
//     and thread exists, file owners (F_SETOWN_EX) are set from imgtool's tracer thread
//     under the saved uid and euid (the kernel keeps them with the owner and checks them
//     before each signal; without CAP_SETUID only imgtool's own can be set). Timerfds are
//     armed last, from imgtool, so that the restore does not count as time elapsed: the
//     time left and the interval, the unread expiries (TFD_IOC_SET_TICKS); an absolute
//     timer at the clock's time plus the time left (nanoseconds carried: CRIU 4.2 adds
//     the seconds only), a periodic timer saved expired and unread with no time left (as
//     CRIU's dump leaves it) one interval from now. Then the TCP connections restored in
//     repair mode are let go (sk_tcp.go): every socket filter detached, the network lock
//     CRIU's dump left removed (its nftables table, or its iptables rules), and each
//     connection out of repair mode with its saved SO_REUSEADDR and SO_REUSEPORT.
//  4. Finally every thread gets its signal mask, its XSAVE area (rebuilt at this CPU's
//     CPUID leaf 0xD offsets) and its registers (orig_rax = -1: they are stored
//     restart-fixed); a process saved stopped by job control (TASK_STOPPED) is sent its
//     stop_signo (SIGSTOP when the set has none or another signal) while still traced, so
//     that it stops on its way out of the ptrace stop, before running an instruction; then
//     all threads are detached one after another, and Restore returns once every such
//     process is seen stopped (state T; a second at most).
//
// Zombies (task_state TASK_DEAD: a pstree entry and a core with exit_code and comm, nothing
// else; CRIU 4.2 writes garbage as a zombie's thread ids, which are ignored) are kept out
// of the live processes (plan.zombies) and made in step 2 like the others, cloned from
// their parent with their PID, session and group, in pstree order (a group may be led by a
// zombie). Once the whole tree exists, and before any of it runs, each zombie takes its
// name (PR_SET_NAME) and ends with its status, as CRIU's restore_one_zombie does:
// exit_group with exit_code >> 8, or, for a signal, with the signal's default action and
// dumpable 0 (no core file, so the status loses its core-dump bit), the signal sent to
// itself (one that does not kill is replaced by SIGABRT, as CRIU does). imgtool, its
// tracer, collects the death; the kernel then gives the zombie to its parent, whose wait
// gets the status. A set whose root is a zombie, or whose zombie has children, is refused.
//
// If anything fails after the helper starts, every process created is killed and reaped
// (non-leader threads before their leader). The image set is only read. An encrypted set is
// decrypted in memory as it is read; a chunk failing authentication fails the restore and
// kills what was created.
//
// Without Options.Detach, Restore waits for the root and returns an *ExitError when it
// ends with a non-zero status or a signal; a cancelled context then kills the restored tree.
//
// # What it does not restore
//
// Sockets other than UNIX, TCP and UDP ones (and the UNIX sockets sk_unix.go refuses:
// external peers without Options.ExtUnixSk, and with it a stream connection, a peer
// without a name or with a relative one, a name at which no unconnected datagram socket
// is bound now; connections not accepted yet, descriptors in flight; and the TCP
// sockets sk_inet.go and sk_tcp.go refuse: connections without Options.TCPEstablished or
// TCPClose, one this host has already, SYN_SENT, and states other than LISTEN and CLOSE
// without a peer), fanotify, terminals other than pseudo-terminals (see Terminals), remaps
// other than ghost files and links (a dead process's /proc directory), ghost files
// other than regular files, directories and FIFOs (device nodes, symlinks) and other file types are refused
// (every such fd of the tree named at once), as is an epoll whose targets are not all fds,
// of kinds restore supports, of the first process that has it (the one that dumped it, for
// CRIU and imgtool alike); so are file locks without Options.FileLocks, a lease being
// broken (CRIU restores the break) and the other locks file_lock.go lists, AIO rings, SysV IPC
// mappings, incremental (parent) sets, processes sharing memory (CLONE_VM), an fd table
// shared other than by a parent and its children (those are cloned sharing it,
// CLONE_FILES: the parent places the fds, and the table's slots are closed once all of
// them are restored), and 32-bit tasks. Not restored at all: namespaces (the
// tree is restored into imgtool's namespaces; time namespaces are ignored, so
// CLOCK_MONOTONIC does not jump back), cgroups, LDT and GDT TLS entries,
// membarrier registrations and mlockall(MCL_FUTURE) (no image field records them:
// imgtool's dump refuses them, CRIU's drops them), the shadow stack. The audit login uid is restored
// (written by the process itself, before its credentials, when it differs from imgtool's). Which fd of a description shared by several fds turned
// O_ASYNC on is not saved: the first one restored does. An eventfd of a CRIU set comes back
// a plain counter even if it was a semaphore (CRIU 4.2 does not record EFD_SEMAPHORE;
// imgtool's dump does, see dump/doc.go). Each epoll target is polled as it is added: what
// is ready then is reported again, to an edge-triggered registration too. The root's session and process group,
// when their leader is not in the tree, are left as inherited from imgtool, like CRIU's
// shell jobs; another group whose leader is gone is led by a helper while its members are
// born (group.go); another session whose leader is gone is refused.
// Children sharing pages their parent has since written over share them again when the
// set says so (imgtool-fork-pages-PID.img, written by imgtool's dump: the parent holds
// their content while it forks them, cow.go); in CRIU's sets, which do not say, they come
// back as copies, as from CRIU's restore. Other sharing imgtool's dump refuses (unless
// --cow-copies).
//
// # Terminals
//
// Pseudo-terminal pairs (tty.go; CRIU 4.2's tty-info.img and tty_file_entry, see
// dump/doc.go) are made in imgtool when their first description is needed: /dev/ptmx is
// opened by the master's saved path (O_NOCTTY) until the kernel hands out the saved index
// (it gives the lowest free one and has no call to choose one: the lower ones are held
// meanwhile and then closed, as CRIU does), unlocked, given its locked termios (only if
// they differ: setting them takes CAP_SYS_ADMIN), termios (TCSETS2), window size and
// packet mode; then every slave description of the set is opened by its path, with its
// saved flags, mode, owner and termios (a pair with no slave description, a controlling
// terminal no fd holds, has its slave opened and closed, as CRIU does: its master then
// reports the hang-up it reported); then the exclusive mode of each end (the master is
// locked, if it was, once the tree exists). Each session whose pty the master records
// (TIOCGSID at the dump) gets it as controlling terminal in its leader, right after the
// leader's setsid and before it forks (TIOCSCTTY on a description of the pair, which
// every process inherits), so that the processes of the session inherit it as they had
// it; /dev/tty fds (CRIU's CTTY entries, which name no terminal: the holder's) are opened
// there too, by the leader, injected, and inherited by the processes it forks. Once the
// tree exists each leader sets its terminal's foreground process group (TIOCSPGRP). The
// pre-check refuses, before any process exists: a master alone (no slave description, no
// session), an index in use (/dev/pts/N exists; a pair being released is waited for, as
// PIDs are), queued data (tty-data.img: CRIU replays it through the line discipline,
// which echoes and translates it again), a hung-up end, a session whose leader or
// foreground group is not in the set, a /dev/tty of processes outside their session
// leader's descendants, other terminal types (console, virtual consoles, serial ports,
// external ttys).
//
// A slave whose master is not in the set is a shell's terminal (dump --shell-job, criu
// dump --shell-job): with Options.ShellJob (--shell-job) its descriptions are new fds of
// imgtool's standard input, which must be imgtool's controlling terminal (status flags
// set as saved, on that shared description, as CRIU does), the saved termios and window
// size are set on it (as CRIU does), the tree runs in imgtool's session (its root's
// session and group, when led outside the tree, are imgtool's), and a root that leads its
// process group gets the terminal's foreground (as CRIU's restore gives it). /dev/tty of
// such a job is imgtool's own /dev/tty. Without the option such a set is refused.
//
// # Ghost files
//
// A reg entry remap-fpath.img remaps to a ghost (REMAP_TYPE GHOST; images older than
// remap_type mark it in remap_id's top bit) is a file that was deleted (dump/doc.go):
// ghost-file-ID.img holds it. The pre-check reads each ghost's entry (an encrypted set's
// authenticated as it is read) and refuses, before any process exists, a ghost of
// another type than a regular file, directory or FIFO, one whose mode or size disagrees
// with its reg entries, a chunked one without a size, one whose temporary name is taken
// or whose directory cannot be written. The first time the restore needs a ghost (an fd's
// description, a mapping, a working directory, an executable), ghost.go makes it as
// CRIU's files-reg.c does: under NAME.cr.ID.ghost next to its old NAME, a regular file
// with its content (streamed from the image: the whole file, or each chunk written at its
// offset in a file truncated to the saved size, so the holes stay holes; a chunk past that
// size fails), then its owner, mode (after the owner: chown clears set-id bits), atime and
// mtime. For each name its reg entries give it, it is linked there (a directory: renamed
// there), opened O_PATH, checked to be the same inode, and that name removed again;
// directories missing on the way are made for the moment and removed too; then the
// temporary name is removed. Nothing of it is left on disk, even if the restore fails
// later: the inode lives on in imgtool's handles, each on a dentry of the old name, and
// every description, mapping, working directory or executable reopens one through
// /proc/self/fd with its own flags (O_TMPFILE dropped, as CRIU does; with O_NOFOLLOW, which
// the kernel will not follow that link with, by its file handle: open_by_handle_at) and
// offset, so the restored process sees a file with no name, "NAME (deleted)" in /proc as before, the
// same inode wherever it used one (two descriptions, a mapping and an fd, several
// processes: shared mappings stay shared). A name that exists again is left alone: the
// file is then named after its temporary name in /proc, and Options.Warn says so. The
// ctime, and the atime once the process reads, are this restore's. An encrypted set's
// ghost content is authenticated chunk by chunk as it is read; a chunk that fails kills
// the tree, and the ghost, partly made, is removed.
//
// # Link remaps
//
// A reg entry remap-fpath.img remaps to another reg entry (REMAP_TYPE LINKED; images
// older than remap_type: a remap_id without the ghost bit) is a file whose name was
// removed while another remained, saved through a hard link the dump made (dump --link-remap
// or criu dump --link-remap, CRIU's link_remap.N; dump/doc.go): the other entry names the
// link. Restore needs no option for it, as CRIU's. The pre-check refuses, before any
// process exists, a link that is gone (a dump with --leave-running removes its links, as
// CRIU's), a link that is not the file saved (the mode, size and build id of the file's
// own entry, read through the link), an old name whose directory (or nearest existing
// parent) cannot be written. The first time the restore needs the file (an fd's
// description, a mapping, an executable), remap.go does what CRIU's open_path does: the
// link is linked to the old name (missing directories made for the moment), the name
// opened O_PATH and checked to be the link's inode, and removed again; every description,
// mapping or executable reopens that handle through /proc/self/fd with its own flags, so
// the restored process has the inode the remaining name has, "NAME (deleted)" in /proc as
// before. A name that exists again is left alone: the file is reached through the link's
// own name instead (then "link_remap.N (deleted)" in /proc; CRIU names it NAME.cr_link),
// and Options.Warn says so. Once the whole tree is restored, before any of it runs, every
// link of the set is removed, as CRIU's try_clean_remaps (a link already gone is no
// error). A restore that fails leaves the links in place, as CRIU's does (it removes only
// ghosts then), so that the set can be restored again; the old names it made for a moment
// are gone by then.
//
// Shared memory: CRIU 4.2 and imgtool dump save MAP_SHARED|MAP_ANONYMOUS memory as a memfd
// named "/dev/zero" (VMA_FILE_SHARED|VMA_AREA_MEMFD, shmid a MEMFD file id). Each memfd
// inode of memfd.img is created once, in imgtool, and every mapping and fd of it in any
// process of the tree opens that one object, so writes stay shared. /proc/PID/maps then
// names restored anonymous shared memory "/memfd:/dev/zero (deleted)", as after a CRIU
// restore. A shared anonymous mapping of an older
// image (VMA_ANON_SHARED) is restored as a memfd mapping, which /proc/PID/maps names
// differently. The vDSO must be this kernel's: its size and place next to vvar are checked,
// its symbols are not.
package restore
