// Package dump checkpoints a live process tree into a CRIU 4.2 image set, natively: ptrace,
// /proc and a few system calls, no CRIU binary and no cgo.
//
// # How
//
// The tree is first inspected through /proc without being touched; what cannot be dumped
// (sockets other than UNIX, TCP and UDP ones, the UNIX sockets sk_unix.go refuses and the
// TCP and UDP sockets sk_inet.go refuses, the terminals tty.go refuses (see Terminals),
// namespaces other than the dumper's, io_uring, seccomp filters that notify a listener
// (seccomp.go), processes
// already traced, a process whose leader exited while other threads run, device nodes that
// were removed, files unlinked by the name they were opened by while another name remains
// unless Options.LinkRemap (CRIU's link-remap, see Link remaps), deleted files whose
// content passes the ghost file limit (see Ghost files), open files of /proc and a working
// directory in the /proc directory of a process that has exited (CRIU's PROCFS remap),
// files with locks held (POSIX, OFD, flock, leases) unless Options.FileLocks (see file_lock.go;
// dropping them would let another writer in), processes sharing memory,
// fs context or signal handlers, or an fd table other than with their parent (a child
// cloned with its parent's, CLONE_FILES, gets its files id and is restored sharing it),
// pages shared
// copy-on-write in a way a restore cannot share again (with a grandparent or a cousin but
// not the parent, or between siblings forked in an order that would need their parent to
// hold a page twice: a restore would give each a copy; Options.COWCopies, --cow-copies,
// accepts that; pages a child shares with its parent since fork are restored shared, and
// pages siblings share that their parent has since written over too, through
// imgtool-fork-pages-PID.img: see cow.go), files whose
// owner (F_SETOWN) is outside the tree (a restore sets it by number), device and
// hugetlb mappings, memory locked on fault (MLOCK_ONFAULT: vma_entry has no place for
// it), SysV shared memory, an inotify with events not read yet or watching a file gone or
// deleted while the tree keeps it open (inotify.go), anonymous-inode files other than eventfd, timerfd, signalfd, inotify,
// epoll and pidfd, a pidfd of a process outside the tree, of a zombie or of a thread (pidfd.go), an epoll watching a file that is refused or that is registered under an fd
// number the process no longer has open, or has reused for another file) is refused then:
// all of it at once (Refusals,
// one *RefusedError each, naming the process, the fd or mapping and the resource). Every
// thread is then seized (PTRACE_SEIZE + PTRACE_INTERRUPT, all the threads of a listing
// asked before any is waited for; threads and children are re-listed until stable) from
// one locked OS thread. State the tracer can read directly comes from ptrace (registers, XSAVE, signal
// mask, TLS slots, rseq, pending signals) and /proc (resource limits too); state only the process can report
// (brk, sigactions, itimers, POSIX timers, the alternate stack, clear_child_tid, pdeath
// signal, secure bits, dumpable, THP, child subreaper, membarrier registrations) comes from system calls injected through an existing
// `syscall` instruction of the vDSO, with every signal blocked, into a scratch mapping that
// is removed again before memory is read. Where it may, each thread makes all of them in
// one live batch (internal/ptrace/livebatch.go, inject.go): code in the executable scratch
// mapping runs the calls, then sends its own thread a signal it ignores (SIGURG, SIGWINCH
// or SIGCHLD, one the process neither catches nor has pending), which the tracer sees as a
// stop; untraced, the code puts the thread's mask and registers back by itself. Every
// thread's batch is written at once and launched before any is waited for, so that they
// run on every core. A thread
// in a job-control stop or with a seccomp filter, a process catching all three signals (a
// Go program) or refused an executable mapping, makes its calls one at a time. What
// /proc tells is read for every process of a level of the tree (precheck) or for every
// process and thread of the stopped tree (readTree) at once, on every core; precheck reads
// maps, the stopped tree smaps (precheckMappings says when precheck needs smaps). Each
// process's fds, threads and stat are read once per look at the tree (liveProc in
// precheck, procState.fds once stopped) and the checks of the whole tree take them from
// there, on every core at once; a mapped file is stat'ed once per look (mappedFiles).
// Pages are
// selected from /proc/PID/pagemap (read a window across close mappings at a time) and
// copied with batched process_vm_readv (/proc/PID/mem for unreadable areas) by every
// core, a 1 MiB unit each, straight into the file (imgset's ReadFromAt; sealed on the way
// in an encrypted set), several processes' files at once; small images are written on
// every core too; shared memory objects are read through the objects
// themselves (SEEK_DATA/SEEK_HOLE; the bytes of the last page past the end of the object
// through a mapping, as CRIU reads them). Locked memory ("lo" in smaps) is recorded as
// MAP_LOCKED in vma_entry.flags, the access mode of a mapped file (the mode of its
// map_files link) in fdflags, the scheduling policy with SCHED_RESET_ON_FORK, file owners
// and their signals in fown_entry (a FIFO's in its reg entry), all as CRIU does; a
// mlockall(MCL_FUTURE) (every later mapping locked) has no image field: it is seen on the
// dump's own scratch mapping, which the kernel then locks, and refused, as are membarrier
// registrations (MEMBARRIER_CMD_GET_REGISTRATIONS, the last call of the leader's batch: none recorded). Pipe and FIFO
// contents are copied with tee(2), never consumed. Registers are stored restart-fixed
// like CRIU's; when the tree is resumed its threads get their exact original registers
// back and pass one more interrupt stop, so the kernel restarts interrupted system calls
// itself.
//
// # File kinds
//
// Open files are dumped as CRIU 4.2 writes them, one file_entry in files.img per open file
// description: regular files, directories and devices, pipes and FIFOs (with their queued
// bytes), memfds, and anonymous inodes: eventfd (its counter, from fdinfo), timerfd (clock,
// settime flags, the time left and the interval, the expiries not yet read; an expired
// periodic timer is first moved on to its next expiry with timerfd_gettime on the
// description, which is what the process's next read would do, so that the saved timer
// keeps its phase), signalfd (its mask), pidfd (the PID of its process, pidfd.go) and epoll (every registered target with its fd
// number, events and data, in eventpoll_file_entry.tfd; targets may be other epolls, and an
// epoll may be shared across processes: each fd of the tree sharing it gets its id), and
// UNIX sockets (unix_sk_entry: stream, dgram and seqpacket; socketpairs, listening sockets
// bound to a path or an abstract name, connections whose both ends are in the tree; shutdown
// state and the options of sk_opts_entry; the bytes queued in each socket in sk-queues.img,
// peeked from a copy of the socket (pidfd_getfd) at an advancing SO_PEEK_OFF, as CRIU's
// parasite does, never consumed; state from sock_diag, internal/sockdiag). A peer no process
// of the tree holds is refused unless Options.ExtUnixSk (CRIU's --ext-unix-sk): a datagram
// socket connected to a named, unconnected socket outside the tree (a logger's to /dev/log)
// is then saved as CRIU 4.2 saves it, its own entry and queue as any other's (peer: the
// outside inode) and, once per outside peer, an entry of that peer with USK_EXTERN, its
// inode and name, type dgram, state listen and nothing else, which a restore connects to
// by name; what the socket sent is in the peer's queue, outside, and stays there. Refused
// even then: a stream or seqpacket connection and a peer without a name (CRIU dumps those
// only when --ext-unix-sk=INO names the socket, for a restore handed it with --inherit-fd,
// which imgtool has not), and, although CRIU dumps them, a peer a restore could not
// connect to again: itself connected (it refuses any other socket's connect, EPERM), bound
// to a relative name, or whose socket file is gone or another socket's. files.img holds
// each UNIX socket after its peer, unless the two are connected to each other, as CRIU
// writes it: CRIU's restore looks a peer up only among the entries before (orderUnixPeers).
// Descriptors in flight (SCM_RIGHTS), a datagram queued in a dgram socket by a socket with
// a name (sk_packet_entry has no place for the sender: a restore queues it from a socket
// without one, and recvfrom would tell no address; CRIU's restore does the same), a
// connection not accepted yet, a socket filter, a deleted socket file, one renamed or
// moved since the bind (the restore would bind at the old name: Java's attach listener
// renames NAME.tmp to NAME; a relative name moved to another directory is bound again
// there), an absolute name bound in a chroot (the restore binds in imgtool's root) and
// other families (netlink, packet, raw: named in the refusal) are refused in precheck. TCP and UDP sockets over IPv4 and IPv6 are
// inet_sk_entry as CRIU 4.2 writes them (sk_inet.go): family, type, protocol, state, bound
// and connected address and port, a listener's backlog (a connection's: its send queue's
// length, as sock_diag reports it), IPV6_V6ONLY, sk_opts_entry, ip_opts_entry and
// tcp_opts_entry, read from a copy of the socket (getsockname, getpeername, getsockopt; TCP
// state and backlog from TCP_INFO): TCP listeners and closed (unconnected) TCP sockets, UDP
// sockets bound or connected, and TCP connections. A connection (ESTABLISHED and the
// closing states) needs Options.TCPEstablished (CRIU's --tcp-established: sk_tcp.go locks it
// with a socket filter, puts it in repair mode, and saves its sequence numbers, options,
// window and both queues into tcp-stream-INO.img as CRIU 4.2's sk-tcp.c and libsoccr do;
// half-closed ones too; a peer outside the tree needs Options.NetworkLock nftables, a
// lock that outlives the dump as CRIU's does; urgent data, SO_PEEK_OFF and TCP_ULP
// refused) or Options.TCPClose
// (--tcp-close: saved without its stream, to come back closed); without either it is
// refused in precheck (checkTCPConns), named with both addresses. A TCP socket in another
// state (SYN_SENT, named), a listener with connections not accepted yet, a UDP socket with
// datagrams queued (CRIU drops them; imgtool refuses) or corked, a link-local IPv6 address
// are refused in precheck; a UDP socket's shutdown state is not read.
//
// The rule for a kind: each lives whole in one file named after it (eventfd.go, timerfd.go,
// signalfd.go, eventpoll.go, sk_unix.go, sk_inet.go with its TCP connections in sk_tcp.go,
// as CRIU's sk-tcp.c, tty.go; the first four kinds in files.go), and restore/ has the file
// of the same name (as ghost.go, in both, holds deleted files, and remap.go files saved
// through a link: not kinds of their own, but the remaps of the reg entries of regular
// files, FIFOs and directories). Each is a fileKind (typ, check, entry) listed in fdKinds, the one table
// from kind to handler: inspectFd classifies an fd (check.go; an anonymous inode by its
// /proc link, anonKinds; a socket by its family and protocol, sockKind) and runs its kind's check, which refuses what cannot be saved
// while touching nothing; numberFds asks the kind for the file_entry once the tree is
// stopped. A new kind adds a constant, its file and one row of fdKinds here, and its file
// and one row of restore's fdKinds there; nothing else switches on the kind.
//
// # Terminals
//
// The ends of Unix98 pseudo-terminals (tty.go) are dumped as CRIU 4.2 dumps them: each open
// file description a tty_file_entry in files.img (flags, owner, tty_info_id: the pty index
// times two, plus one for the master) with a reg_file_entry for the path it was opened by
// (/dev/ptmx, /dev/pts/N: mode and owner), each end once a tty_info_entry in tty-info.img:
// termios (TCGETS2, speeds kept; c_cc packed four characters to a word, as CRIU writes it),
// locked termios, window size, the session and foreground process group (TIOCGSID and
// TIOCGPGRP through the master, which the kernel answers for the slave; for a slave, those
// of its holder when it is that holder's controlling terminal, as CRIU's parasite sees
// them), packet mode and lock state (TIOCGPKT, TIOCGPTLCK, the master's), exclusive mode
// (TIOCGEXCL), rdev, dev, uid, gid. /dev/tty open on a pty that is still its holder's
// controlling terminal (TIOCGDEV tells which) is CRIU's CTTY entry (tty_info id 2012, no
// index). A process's controlling terminal itself is not in the images: a restore gives a
// session's leader the pty whose master records that session, and every process of the
// session inherits it; so the dump checks (checkTTYs, before the freeze and again once
// the tree is stopped) that every process of a session led in the tree has its leader's
// controlling terminal, that it is a pty whose master is in the tree, and that the
// terminal's foreground group has a process in the tree. Refused, naming the process or
// fd: a master whose slave is neither open nor a controlling terminal in the tree (what
// its slave holds cannot be seen), a controlling terminal no fd holds whose slave was
// never opened (its master reports no hang-up; a restore, like CRIU's, opens and closes
// the slave of such a terminal, which the master then reports), a hung-up end, /dev/console, virtual consoles, serial ports, a pty of another devpts than
// /dev/pts or of an index above CRIU's 1000, /dev/tty on a terminal that is not its
// holder's any more or on two terminals, and bytes queued in either end of a pair (CRIU
// saves them in tty-data.img and replays them through the line discipline, which echoes
// and translates them again; imgtool does not save terminal data). A busy terminal has
// bytes in flight: like a changing tree, it is put back and looked at again (up to 20
// times, about a second). A partial line typed into a canonical-mode slave (no newline
// yet) is invisible from outside the line discipline (FIONREAD counts whole lines): it is
// not refused, and it is lost, as with CRIU.
//
// A tree whose controlling terminal belongs to a session led outside it (a shell's job) is
// refused unless Options.ShellJob (--shell-job, as CRIU's): the one terminal it then takes
// from outside (its slave fds, whose master is not in the tree, and /dev/tty on it) is
// saved as a slave without its master, which a restore replaces with its caller's terminal.
// A pty whose master is in the tree but whose session leader is not is refused. So is,
// without Options.ShellJob, a root that does not lead its session, terminal or not (CRIU
// refuses it too): a restore cannot make the session of a leader outside the tree, and
// leaves the root in its own (checkGroupLeaders).
//
// A thread stopped in poll() without a timeout is saved to run the call again (rewound,
// as for the other restartable calls): the kernel would have restarted it, and a program
// that watches its signals through a signalfd (script(1), holding a pty's master) takes
// EINTR for an error. Other restart_syscall-style calls return EINTR, as with CRIU.
//
// # File locks
//
// With Options.FileLocks (--file-locks, as CRIU's) the locks the tree holds are dumped into
// filelocks.img as CRIU 4.2 writes it (file_lock.go): each POSIX lock (for the process that
// owns it), OFD lock, flock and lease (for the open file description that owns it, through
// the fd of the process that took it if it still has one, else the first fd of the tree
// that has the description) once, with its kind, type, pid, fd, start and length, found
// through the "lock:" lines of /proc/PID/fdinfo/FD as CRIU finds them. Without the option a
// held lock is refused, naming the process, fd and lock. Refused with it: a lease being
// broken, a write lease on a memfd or on a file the tree maps (the dump would open the file,
// which breaks the lease; the build id of a write-leased file is not read, for the same
// reason), a mandatory flock, a lock of an unknown class, and a lock that /proc/locks lists
// for a process of the tree (or as an OFD lock) on a file the tree maps but that no fd of
// the tree lists: it may be held through the mapping. A request waiting for a lock is no
// lock: the freeze interrupts the wait, and the restored call asks again (as with CRIU).
// The locks are read in precheck and again once the tree is stopped, before any file of
// the tree is opened.
//
// # Ghost files
//
// A file the tree still uses after its last name was removed (link count 0) is saved as
// CRIU 4.2's ghost files (ghost.go, after CRIU's files-reg.c): an open regular file,
// directory or FIFO, a mapping of a deleted file (private or shared: the /dev/shm/sem.*
// files of POSIX named semaphores, as Python's multiprocessing has them), a removed working
// directory, a deleted executable, and files made with O_TMPFILE. Its reg_file_entry keeps
// the name it had, without the " (deleted)" of /proc, and its size, mode and build id as
// for any file; remap-fpath.img gets a remap_file_path_entry (orig_id the reg entry,
// remap_type GHOST, remap_id the ghost), and ghost-file-ID.img (ID in hex, numbered from
// 1) the ghost_file_entry: uid, gid, mode, dev (the kernel's encoding, major << 20 |
// minor) and ino, atime and mtime (microseconds) and, for a regular file, the content:
// read through the stopped process's own fd or map_files link, whole after the entry
// below 12 KiB, from 12 KiB on in chunks (chunks and size set; one ghost_chunk_entry per
// run of data SEEK_DATA and SEEK_HOLE find, followed by its bytes; the holes are not
// saved), exactly as CRIU writes them. Each inode is one ghost, however many fds,
// descriptions, mappings and processes use it (each reg entry has its remap). A FIFO's
// queued bytes are saved as for any FIFO (fifo-data.img). The content of each ghost must
// stay within Options.GhostLimit (CRIU's --ghost-limit, 1 MiB by default; imgtool counts
// the bytes saved, CRIU the blocks allocated): a larger one is refused in the pre-check,
// naming the process, the fd or mapping, the file and its size, and again, should it
// have grown, once the tree is stopped. Shared memory is not a ghost although it has no
// name either: memfds, and an fd of MAP_SHARED anonymous memory ("/dev/zero (deleted)",
// opened through /proc/PID/map_files: zdtm's shmemfd), are saved with the memory they
// are, in memfd.img. Removed device nodes and other deleted files of the kernel's internal
// mounts are refused. A file whose name was removed while it keeps another is no ghost:
// see Link remaps.
//
// # Link remaps
//
// A file the tree uses (an open fd, a mapping, the executable) whose name it was opened by
// was removed while another name of it remains (a hard link: link count above 0, "NAME
// (deleted)" in /proc and no file of that name) is refused, naming each fd, mapping or
// executable, unless Options.LinkRemap (--link-remap, as CRIU's: "Use link-remap option").
// With it the dump does what CRIU 4.2's files-reg.c does (remap.go): once the tree is
// stopped it gives the file one more name, a hard link link_remap.ID in the directory of
// the name it had (the nearest parent that exists if that directory is gone), made from
// the tree's own file (linkat through /proc/self/fd), ID a new reg entry id, the one after
// the file's; files.img gets, just before the file's own entry (its old name, mode, size,
// build id), the link's: id, flags 0, pos 0, an empty owner and the link's name; and
// remap-fpath.img a remap_file_path_entry (orig_id the file's entry, remap_id ID,
// remap_type LINKED). Each reg entry gets its own link: an fd and a mapping of one file,
// two. Regular files and FIFOs only (a FIFO's queued bytes are saved as for any FIFO);
// another type is refused, as is a file whose directory the dump cannot write in (the
// pre-check looks). The link is a visible name in the target's directory, and part of the
// set: after a successful dump it stays until a restore opens the file through it and
// removes it. A dump that fails or is interrupted removes every link it made before the
// tree runs again; one with LeaveRunning removes them once the set is complete, as CRIU's
// delete_link_remaps (the tree goes on with its file; the set restores only where the link
// exists again); a SIGKILL of imgtool once links are made leaves them, as a killed CRIU
// does. A link name already taken (link_remap.ID of an earlier dump not restored) fails
// the dump, naming it.
//
// # Zombies, POSIX timers, stopped processes
//
// A child that exited and was not reaped (zombie.go) is first given a moment: the tree is
// put back and looked at again (zombieRetries times, 5, 10 and 15 ms), as its parent may
// reap it. After that it is dumped as CRIU's dump_one_zombie does: a pstree entry (threads:
// its pid) and a core holding only task_core_entry with task_state TASK_DEAD (2), its name
// and exit_code, the wait status of /proc/PID/stat (exit status << 8, or the signal, with
// 0x80 for a core dump); no ids, mm, pagemap, fs or fdinfo image. A zombie is never seized
// and takes no part in the other checks. The root cannot be a zombie.
//
// POSIX timers (posix_timer.go) are read from /proc/PID/timers (id, signal and sigev_value,
// notification: signal, none or to a thread, and clock) and from timer_gettime and
// timer_getoverrun injected into the process, into task_core_entry.timers.posix
// (posix_timer_entry: interval, time left, overrun, notify_thread_id for SIGEV_THREAD_ID),
// in /proc's order, as CRIU writes them.
//
// A process stopped by job control (stopped.go) is seized in its group stop; the stop
// signal (PTRACE_GETSIGINFO) goes to stop_signo and task_state is TASK_STOPPED (3), as CRIU
// writes them. Each thread is resumed once into the interrupt trap the seize left pending
// (compel's skip_sigstop) so that calls can be injected; the group stop stays in force, and
// a tree left running is stopped again as it is detached.
//
// Refusals come from the checks, before any thread is seized (tests count the seizes).
// The one exception is a process that appears between the check and the freeze: it is
// checked again once the tree is stopped and, if refused, the tree is put back first. A
// tree that changes while it is being checked or stopped (a child exits, or dies and
// waits for its parent to reap it) is put back, left to run a few milliseconds, and
// checked and stopped again, up to 20 times, as CRIU does; a child that is gone is simply
// not part of the tree.
//
// On any failure, cancellation included, every thread is put back as it was and detached,
// and a Committer sink is aborted. With a Committer sink the set is committed before the
// tree is killed, never after.
//
// # Interruptions
//
// The command line cancels the dump's context on SIGINT, SIGTERM and SIGHUP; the dump
// stops at its next check (between processes, and between page batches), puts every
// thread back and removes the partial set. SIGKILL of imgtool cannot be caught: the kernel
// then detaches every thread and lets it run from its current state. A thread is in a
// borrowed state only while its process's injected calls run (a single call, the
// scratch mapping's mmap, then a live batch a thread, two more for each POSIX timer, and
// the munmap: well under a millisecond a process); as soon as
// they are done it gets its own registers and signal mask back, while the tree stays
// stopped, so a kill at any later moment (reading memory, writing the set) leaves the tree
// running unharmed and only a staging folder behind (removed by the next command that
// writes the same set). A kill during a live batch costs the process only the scratch
// mapping, left in place (the thread runs the batch to its end and resumes itself,
// restarting the system call it was in, as the kernel would: TestLiveBatchSurvivesTheTracer
// lets it go at each point); a kill inside a single injected call can leave a thread with
// every signal blocked, a scratch mapping, or resumed from the middle of the call (it then
// crashes). A kill once TCP
// connections are locked (Options.TCPEstablished) leaves them locked and in repair mode
// (and, with Options.NetworkLock nftables, its nftables table in place), as a killed CRIU
// leaves its firewall lock: see sk_tcp.go. Measured by
// TestDumpRandomSIGKILL (make test-long) on the 3-thread, 128 MiB steady program: with
// live batches, 0 of 60 SIGKILLs at random moments of a 0.48 s dump (the machine loaded)
// harmed the target or left a scratch mapping; with one call at a time, 1 of 60; before
// this design, 7 of 7.
//
// # What CRIU writes that imgtool cannot know, and what it writes instead
//
//   - Namespace ids (ids-PID.img, inventory root_ids): CRIU numbers the namespaces it meets;
//     imgtool only dumps trees in the host's namespaces and writes the numbers CRIU 4.2
//     gives them (pid 1, net 2, ipc 3, uts 4, time 5, mnt 6, user 7, cgroup 8).
//   - cg_set and root_cg_set: CRIU writes 1 although it writes no cgroup.img for tasks in
//     the root set; imgtool writes the same (CRIU restores such sets).
//   - dump_criu_run_id: a random UUID; stats-dump: imgtool's own timings and page counts
//     (page_pipes and page_pipe_bufs, CRIU internals, are 0).
//   - network_lock_method: CRIU writes the method it locked connections with (iptables,
//     0, by default). imgtool writes nftables (1) with Options.NetworkLock nftables, whose
//     table is named after dump_criu_run_id as CRIU's; "skip" (2) when it saved
//     connections under its socket lock alone, which ends with the dump (CRIU's restore
//     then has nothing to unlock); else 0, as CRIU.
//   - Pagemap entries: CRIU splits runs at its page-pipe buffers (256 pages); imgtool writes
//     each run of contiguous pages with the same flags as one entry. Flags match CRIU's:
//     PE_LAZY|PE_PRESENT for anonymous private memory, PE_PRESENT for the vDSO and for pages
//     of private file mappings.
//   - CRIU's parasite writes its code into the target, so CRIU dumps one copied-on-write page
//     of the executable's text that imgtool (which writes nothing) has no reason to dump.
//   - The cet entry of XSAVE: written, as CRIU does, only when CPUID reports shadow stacks
//     (the fixture sets come from such a CPU; on others both tools leave it out). The other
//     XSAVE components follow the features the kernel enabled (XCR0) at this CPU's CPUID
//     0xD offsets.
//   - fown uid/euid are only filled when an owner is set (F_GETOWNER_UIDS); CRIU's are the
//     dumping task's ids, 0 for root.
//   - Pipe data is taken from a read end in the tree, as CRIU does. A pipe one end of
//     which is open outside the tree is refused (checkPipeEnds: CRIU dumps it, and its
//     restore leaves the tree's end unconnected), one whose other end is closed
//     everywhere is not.
//   - EFD_SEMAPHORE: CRIU 4.2 does not record an eventfd's semaphore mode (its dumps lose
//     it). imgtool keeps it in bit 0 of eventfd_file_entry.flags, a bit an eventfd's open
//     flags never have (it is always O_RDWR); CRIU's restore sets the flags with F_SETFL,
//     which ignores it, and so gives back a plain counter.
//   - timens-0.img records CLOCK_MONOTONIC and CLOCK_BOOTTIME at dump time, as CRIU does.
//   - Registers of a thread stopped in a restart_syscall-style call (nanosleep) are stored
//     with -EINTR as CRIU does; a process restored from the set sees the call interrupted.
//
// Not supported (refused): see the first paragraph; also a thread whose I/O priority
// (ionice) is not imgtool's (no image has a place for it: a restore's processes inherit
// the restorer's), 32-bit tasks, shadow stacks, and
// a thread whose XSAVE state holds components a core image has no field for (AMX tiles
// in use: refused once the thread is stopped, the only way to see it, before anything is
// injected). A
// process in a chroot is dumped with its root directory (fs.img root_id) and every path as
// imgtool sees it (the host's), as CRIU does in one mount namespace: restore opens them all
// itself and chroots the process into its root.
package dump
