package dump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/imgtool/imgtool/internal/phase"
	"github.com/imgtool/imgtool/internal/ptrace"
)

// Sink receives the files of the image set. *imgset.Writer satisfies it; tests use a plain
// directory writer. Create is called from several goroutines at once, each writing and
// closing its own file.
type Sink interface {
	Create(name string) (io.WriteCloser, error)
}

// Committer is implemented by sinks that publish a set atomically (*imgset.Writer). When the
// sink passed to Dump implements it, Dump commits the set once every file is complete, before
// the target is killed, and aborts it when the dump fails, so no half-written set survives and
// no process is killed without a committed checkpoint.
type Committer interface {
	Commit() error
	Abort() error
}

// Options controls one dump.
type Options struct {
	// Pid is the root of the process tree to checkpoint.
	Pid int
	// LeaveRunning lets the tree continue after the dump; otherwise it is killed once the set is
	// complete (and committed, when the sink is a Committer).
	LeaveRunning bool
	// Progress, when set, is called with the bytes of memory written so far and the total.
	Progress func(done, total int64)
	// COWCopies accepts a tree whose processes share pages copy-on-write in a way a
	// restore cannot share again (cow.go: cousins sharing pages their parents have since
	// written, ...): a restore gives each process its own copy. Without it such a tree is
	// refused. Pages a child shares with its parent since fork need nothing: a restore
	// shares them again.
	COWCopies bool
	// FileLocks dumps the file locks the tree holds (POSIX, OFD, flock, leases) into
	// filelocks.img, as CRIU's --file-locks; without it a held lock refuses the dump
	// (file_lock.go).
	FileLocks bool
	// GhostLimit is the largest content, in bytes, of a deleted file the dump saves as a
	// ghost file (ghost.go; CRIU's --ghost-limit): 0 means DefaultGhostLimit (1 MiB), a
	// negative value allows only ghosts without content (directories, FIFOs, empty
	// files). A deleted file with more is refused, named.
	GhostLimit int64
	// LinkRemap saves a file the tree uses whose name it was opened by was removed while
	// another name of it remains through a hard link the dump makes next to it,
	// link_remap.ID (CRIU's --link-remap; remap.go): a visible name in the target's
	// directory, left for the restore, which opens the file through it and removes it.
	// A dump that fails, or leaves the tree running, removes its links again. Without
	// it such a file refuses the dump, named.
	LinkRemap bool
	// ShellJob accepts a tree whose controlling terminal belongs to a session led outside
	// it (a shell's job), as CRIU's --shell-job: the terminal is saved as a pty slave
	// whose master is not in the set, which a restore replaces with its caller's
	// terminal. Without it such a tree is refused (tty.go).
	ShellJob bool
	// TCPEstablished saves established TCP connections with their queues (CRIU's
	// --tcp-established; sk_tcp.go): each is locked and put in repair mode for the dump.
	// TCPClose saves connections to be restored closed (CRIU's --tcp-close). Without
	// either a connection refuses the dump.
	TCPEstablished, TCPClose bool
	// NetworkLock says how connections saved with TCPEstablished are kept silent:
	// NetworkLockSocket ("" too), a socket filter for the time of the dump only;
	// NetworkLockNftables, also CRIU's nftables lock, left in place for the restore to
	// remove, as criu dump --network-lock nftables does (sk_tcp.go).
	NetworkLock string
	// ExtUnixSk dumps a UNIX datagram socket connected to a named socket that no process
	// of the tree holds (a logger's to /dev/log, say), as CRIU's --ext-unix-sk: the peer
	// is saved by its name only (a unix_sk_entry with USK_EXTERN), for a restore to
	// connect to again (it needs ExtUnixSk too). Without it such a socket is refused; with
	// it, a stream connection, a peer without a name and a peer a restore could not
	// connect to again still are (sk_unix.go, outsidePeer).
	ExtUnixSk bool
}

// The values of Options.NetworkLock.
const (
	NetworkLockSocket   = "socket"
	NetworkLockNftables = "nftables"
)

// RefusedError reports something in the tree that the dump cannot checkpoint. It is returned
// before the tree is changed, or after the tree was put back exactly as it was.
type RefusedError struct {
	Pid      int    // the process holding it
	Fd       int    // the file descriptor, or -1
	Resource string // what it is ("socket:[1234]", "controlling terminal /dev/pts/3", ...)
	Reason   string // why it cannot be dumped
}

func (e *RefusedError) Error() string { return "cannot dump " + e.what() }

// what says what is refused and why, without the "cannot dump" of the message.
func (e *RefusedError) what() string {
	if e.Fd >= 0 {
		return fmt.Sprintf("process %d: fd %d is %s: %s", e.Pid, e.Fd, e.Resource, e.Reason)
	}
	return fmt.Sprintf("process %d: %s: %s", e.Pid, e.Resource, e.Reason)
}

func refuse(pid, fd int, resource, reason string) error {
	return &RefusedError{Pid: pid, Fd: fd, Resource: resource, Reason: reason}
}

// Dump checkpoints the process tree rooted at opts.Pid into sink as a CRIU 4.2 image set.
//
// The tree is inspected first without being touched; anything that cannot be checkpointed is
// refused then. The tree is then stopped with PTRACE_SEIZE and PTRACE_INTERRUPT, inspected,
// and its memory copied. On any failure (ctx cancelled included) every thread is put back as
// it was and resumed, and the sink is aborted when it is a Committer.
func Dump(ctx context.Context, opts Options, sink Sink) (err error) {
	if opts.Pid <= 0 {
		return fmt.Errorf("dump: invalid pid %d", opts.Pid)
	}
	if sink == nil {
		return errors.New("dump: no sink")
	}
	if l := opts.NetworkLock; l != "" && l != NetworkLockSocket && l != NetworkLockNftables {
		return fmt.Errorf("dump: unknown network lock %q (socket or nftables)", l)
	}
	// The kernel ties tracees to the thread that seized them: every ptrace call of this dump
	// happens on one goroutine, locked to its OS thread.
	return ptrace.OnTracerThread(newDumper(ctx, opts, sink).run)
}

// run is Dump on the tracer thread.
func (d *dumper) run() (err error) {
	opts, sink := d.opts, d.sink
	defer func() {
		if err != nil {
			_ = d.removeLinks() // fail removed them; this covers any other way out
			d.sinkAbort()
		}
	}()
	// checkAndFreeze puts the tree back itself when it fails.
	phase.Mark("dump: started")
	if err := d.checkAndFreeze(); err != nil {
		return err
	}
	phase.Mark("dump: check the stopped tree")
	d.stats.frozenAt = time.Now()
	if err := d.collect(); err != nil {
		return d.fail(err)
	}
	if err := d.write(); err != nil {
		return d.fail(err)
	}
	phase.Mark("dump: write images and pages")
	if c, ok := sink.(Committer); ok {
		if err := c.Commit(); err != nil {
			return d.fail(fmt.Errorf("commit the image set: %w", err))
		}
		d.committed = true
	}
	phase.Mark("dump: commit")
	defer phase.Mark("dump: resume or kill")
	if opts.LeaveRunning {
		// The tree goes on with its files: the links made for the set go before it runs
		// again, as CRIU's delete_link_remaps (remap.go).
		return errors.Join(d.removeLinks(), d.resumeTCP(), d.thaw())
	}
	err = d.kill()
	d.dropTCP() // after the tree is dead: its connections go silently (sk_tcp.go)
	return err
}

// fail removes the links the dump made (remap.go), puts the tree back as it was and
// returns err (with any error of those attached).
func (d *dumper) fail(err error) error {
	d.closeOpen()
	lerr := d.removeLinks()
	if terr := errors.Join(d.resumeTCP(), d.thaw()); terr != nil {
		err = fmt.Errorf("%w (and resuming the target failed: %v)", err, terr)
	}
	if lerr != nil {
		err = fmt.Errorf("%w (and %v)", err, lerr)
	}
	return err
}

func (d *dumper) sinkAbort() {
	d.closeOpen()
	if c, ok := d.sink.(Committer); ok && !d.committed {
		_ = c.Abort()
	}
}

// checkCtx returns the context's error once it is cancelled, naming its cause (an
// interrupting signal, for the command line).
func (d *dumper) checkCtx() error {
	if err := d.ctx.Err(); err != nil {
		if cause := context.Cause(d.ctx); cause != nil && cause != err {
			return &causeError{cause: cause, err: err}
		}
		return fmt.Errorf("interrupted: %w", err)
	}
	return nil
}

// causeError is a context error told by its cause ("interrupted by SIGINT"); it matches
// both.
type causeError struct{ cause, err error }

func (e *causeError) Error() string   { return e.cause.Error() }
func (e *causeError) Unwrap() []error { return []error{e.cause, e.err} }
