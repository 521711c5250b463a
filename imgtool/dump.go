package imgtool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/dump"
	"github.com/imgtool/imgtool/imgset"
)

// dumpOptions are the options of "imgtool dump".
type dumpOptions struct {
	Pid          int              // -t: root of the tree
	Dir          string           // -D: the new image set
	LeaveRunning bool             // --leave-running
	COWCopies    bool             // --cow-copies
	FileLocks    bool             // --file-locks
	ShellJob     bool             // --shell-job
	ExtUnixSk    bool             // --ext-unix-sk[=INO,...]
	TCP          tcpFlags         // --tcp-established, --tcp-close
	NetworkLock  string           // --network-lock: socket or nftables
	GhostLimit   string           // --ghost-limit: SIZE, K, M or G suffixed; "" for the default
	LinkRemap    bool             // --link-remap
	Encrypt      bool             // -e: encrypt as written
	Certs        []string         // --cert: the recipients (with -e)
	Cipher       string           // --cipher
	Load         recipientOptions // --allow-expired, and where --cert warnings go
	Sign         signOptions      // --sign-key, --sign-cert: sign the set written
	Quiet        bool
	Out          io.Writer // the summary
	Err          io.Writer // progress
}

const (
	flagTree         = "tree"
	flagLeaveRunning = "leave-running"
	flagCOWCopies    = "cow-copies"
	flagFileLocks    = "file-locks"
	flagTCPEstab     = "tcp-established"
	flagTCPClose     = "tcp-close"
	flagNetworkLock  = "network-lock"
	flagGhostLimit   = "ghost-limit"
	flagShellJob     = "shell-job"
	flagLinkRemap    = "link-remap"
	flagEncrypt      = "encrypt"
	flagExtUnixSk    = "ext-unix-sk"
)

func dumpCommand() *cli.Command {
	return &cli.Command{
		Name:      "dump",
		Usage:     "checkpoint a running process tree into a CRIU 4.2 image set",
		ArgsUsage: " ",
		Description: `Checkpoints the process with PID and its descendants (threads, memory, registers,
signal state, credentials, open files, pipes and FIFOs with their queued data) into
DIR, a new or empty folder, as an image set CRIU 4.2 and imgtool restore accept.
No CRIU binary is needed.

The tree is inspected before it is touched: the sockets and terminals it cannot
save, namespaces other than the host's, io_uring and processes already traced are
refused then, and the tree keeps running unharmed. If anything fails later (or the dump is interrupted),
every thread is put back as it was and no set is left in DIR.

Terminals: pseudo-terminal pairs whose both ends are in the tree (script, tmux,
screen with their shells) are saved as CRIU 4.2 saves them (tty-info.img: termios,
window size, packet mode, lock state, index, session and foreground group), with
the sessions they are the controlling terminal of, and /dev/tty open on them. A
tree run from a shell has the shell's terminal as its controlling terminal, in a
session led outside the tree: it is refused unless --shell-job is given (as with
criu dump), which saves that terminal as one from outside; restore --shell-job then
puts the tree on its own caller's terminal. Refused: consoles, virtual consoles and
serial ports, a master whose slave is not in the tree, and bytes queued in a
terminal (terminal data is not saved; a busy terminal is looked at again for about
a second).

File locks held by the tree (POSIX fcntl locks, OFD locks, flocks, leases) refuse
the dump, naming the process, fd and lock, unless --file-locks is given, as with
criu dump: the locks are then saved (filelocks.img, CRIU's format) and restore takes
them back when it is given --file-locks too. Refused even then: a lease being
broken, a write lease on a file the tree maps, and a lock the tree holds through a
mapping rather than an fd. A process waiting for a lock is fine: it asks again
once restored.

An established TCP connection refuses the dump, naming it, unless --tcp-established
is given, as with criu dump: each connection is then locked (a socket filter drops
what its peer sends; by default no firewall is touched), put in TCP repair mode and saved with
its sequence numbers, options, window and both queues (tcp-stream-INO.img, CRIU's
format); restore needs --tcp-established too. After the dump the tree is killed and
its connections vanish without a FIN or a reset; with --leave-running, or if the
dump fails, they are unlocked and carry on. The socket filter goes with the tree, so
a connection whose peer is outside the tree (the peer would get a reset if it sent
anything before the restore) is refused unless --network-lock nftables is given:
the dump then also leaves CRIU's nftables lock (a table "inet CRIU-<run id>" dropping
the connections' packets, made over netlink), which imgtool's and CRIU's restores
remove; CRIU's restore of a loopback connection needs it too. Half-closed
connections (FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING) are saved too. Refused even
then: urgent data not read, SO_PEEK_OFF, kernel TLS. --tcp-close saves connections
without their state, to be restored closed.

A UNIX socket whose peer no process of the tree holds refuses the dump unless
--ext-unix-sk is given, as with criu dump: a datagram socket connected to a named
socket outside the tree (a logger's to /dev/log) is then saved with that peer's name
(CRIU's USK_EXTERN entry) and restore --ext-unix-sk connects it to the name again;
what it sent stays queued in the peer, what was queued in it comes back. Refused even
then: a stream or seqpacket connection and a peer without a name (criu dumps those
only for a restore handed the socket with --inherit-fd, which imgtool has not), a
peer that is itself connected, bound to a relative name, or whose file is gone.

A file the tree holds open, maps or runs whose name was removed while another
name of it remains (a hard link) refuses the dump, naming it, unless --link-remap
is given, as with criu dump: the dump then gives the file one more name, a hard
link link_remap.N in the directory of the name it had (CRIU's), and the set
refers to it; restore opens the file through it and removes it (restore needs no
option). That link is a visible name in the tree's directory until a restore
removes it; a dump that fails, is interrupted, or runs with --leave-running
removes its links again (as CRIU's), so such a set needs the link made again to
be restored.

Without --leave-running the tree is killed once the set is complete and
committed. With -e every file is encrypted as it is written, for the certificates
given with --cert (default ` + defaultCertPath + ` if it exists): no plaintext
ever reaches the disk. With --sign-key and --sign-cert the set is signed before it
is committed (restore refuses an encrypted set without a trusted signature).

Examples:
   imgtool dump -t 1234 -D /tmp/ckpt
   imgtool dump -t 1234 -D /tmp/ckpt --leave-running
   imgtool dump -t 1234 -D /tmp/ckpt --file-locks
   imgtool dump -t 1234 -D /tmp/ckpt --shell-job
   imgtool dump -t 1234 -D /tmp/ckpt --tcp-established
   imgtool dump -t 1234 -D /tmp/ckpt --ext-unix-sk
   imgtool dump -t 1234 -D /tmp/ckpt --link-remap
   imgtool dump -t 1234 -D /tmp/ckpt -e --cert ops.pem
   imgtool dump -t 1234 -D /tmp/ckpt -e --cert ops.pem --sign-key host.key --sign-cert host.pem

Exit codes: 0 success, 1 failure or refusal (the tree keeps running), 2 wrong command line.`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: flagTree, Aliases: []string{"t"}, Usage: "`PID` of the root of the tree to dump (required)"},
			imagesDirFlag(),
			&cli.BoolFlag{Name: flagLeaveRunning, Aliases: []string{"R"}, Usage: "let the tree continue after the dump"},
			&cli.BoolFlag{Name: flagCOWCopies, Usage: "accept pages shared copy-on-write in a way a restore cannot share again (cousins sharing pages their parents " +
				"have since written): the restore gives each its own copy (same content, more memory); without it such a tree is refused"},
			&cli.BoolFlag{Name: flagFileLocks, Aliases: []string{"l"}, Usage: "dump the file locks the tree holds " +
				"(CRIU's --file-locks; restore needs it too); without it a held lock refuses the dump"},
			&cli.BoolFlag{Name: flagShellJob, Aliases: []string{"j"}, Usage: "accept a tree whose controlling terminal is its caller's " +
				"(a shell's job, as criu dump --shell-job): the terminal is saved as one from outside, which restore --shell-job replaces " +
				"with its own; without it such a tree is refused"},
			extUnixSkFlag("dump a UNIX datagram socket connected to a named socket outside the tree (/dev/log, say) by " +
				"that name, as criu dump --ext-unix-sk; restore needs it too, and connects to the name again. Without it such a " +
				"socket refuses the dump; a stream connection or a peer without a name is refused even with it. " +
				"=INO,... is taken as CRIU takes it, and changes nothing here (CRIU then also dumps the sockets it names for " +
				"a restore with --inherit-fd, which imgtool has not)"),
			&cli.BoolFlag{Name: flagTCPEstab, Usage: "dump established TCP connections with their state and queues " +
				"(CRIU's --tcp-established; restore needs it too); without it a connection refuses the dump"},
			&cli.BoolFlag{Name: flagTCPClose, Usage: "dump TCP connections without their state, to be restored closed (CRIU's --tcp-close)"},
			&cli.StringFlag{Name: flagNetworkLock, Value: dump.NetworkLockSocket, Usage: "how --tcp-established keeps connections " +
				"silent: `METHOD` socket (a socket filter, for the time of the dump) or nftables (also CRIU's nftables lock, left " +
				"until a restore removes it, as criu dump --network-lock nftables)"},
			&cli.StringFlag{Name: flagGhostLimit, Usage: "the largest content of a deleted file still open, mapped or used as " +
				"working directory that is saved in the set (a ghost file, as CRIU's): `SIZE` in bytes, or with a K, M or G " +
				"suffix; a larger one is refused, named (default 1M, CRIU's)"},
			&cli.BoolFlag{Name: flagLinkRemap, Usage: "save a file whose name was removed while another name of it remains " +
				"(unlinked by the name it was opened by, a hard link left) through a hard link link_remap.N made in its directory, " +
				"as CRIU's --link-remap: a visible name there until a restore removes it (removed again if the dump fails or " +
				"with --leave-running); without it such a file refuses the dump"},
			&cli.BoolFlag{Name: flagEncrypt, Aliases: []string{"e"}, Usage: "encrypt the set as it is written"},
			certFlag("recipient certificate `CERT.pem` for -e; repeatable (default " + defaultCertPath + " if it exists)"),
			cipherFlag("the AEAD for -e", cipher.AES256GCM.String()),
			allowExpiredFlag(),
			quietFlag(),
			signFlags()[0], signFlags()[1],
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError(err) },
		Action: func(c *cli.Context) error {
			return runDump(c.Context, dumpOptions{
				Pid:          c.Int(flagTree),
				Dir:          c.String(flagImagesDir),
				LeaveRunning: c.Bool(flagLeaveRunning),
				COWCopies:    c.Bool(flagCOWCopies),
				FileLocks:    c.Bool(flagFileLocks),
				ShellJob:     c.Bool(flagShellJob),
				ExtUnixSk:    extUnixSkFrom(c),
				TCP:          tcpFlagsFrom(c),
				NetworkLock:  c.String(flagNetworkLock),
				GhostLimit:   c.String(flagGhostLimit),
				LinkRemap:    c.Bool(flagLinkRemap),
				Encrypt:      c.Bool(flagEncrypt),
				Certs:        c.StringSlice(flagCert),
				Cipher:       c.String(flagCipher),
				Load:         recipientOptionsFrom(c),
				Sign:         signOptionsFrom(c),
				Quiet:        c.Bool(flagQuiet),
				Out:          outWriter(c),
				Err:          errWriter(c),
			}, c.Args().Slice())
		},
	}
}

// runDump checkpoints opts.Pid into a new set at opts.Dir.
func runDump(ctx context.Context, opts dumpOptions, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Errorf("dump takes no arguments, got %q", args[0]))
	}
	if opts.Pid <= 0 {
		return usageError(errors.New("dump needs the process: -t PID"))
	}
	if opts.Dir == "" {
		return usageError(errors.New("dump needs the image set folder: -D DIR"))
	}
	if l := opts.NetworkLock; l != "" && l != dump.NetworkLockSocket && l != dump.NetworkLockNftables {
		return usageError(fmt.Errorf("dump: --%s is socket or nftables, not %q", flagNetworkLock, l))
	}
	ghostLimit, err := parseGhostLimit(opts.GhostLimit)
	if err != nil {
		return err
	}
	var create imgset.CreateOptions
	if opts.Encrypt {
		alg, err := parseCipher("dump", opts.Cipher)
		if err != nil {
			return err
		}
		recipients, err := recipientsOrDefault("dump -e", opts.Certs, opts.Load)
		if err != nil {
			return err
		}
		create = imgset.CreateOptions{Recipients: recipients, Algorithm: alg}
	} else if len(opts.Certs) > 0 {
		return usageError(fmt.Errorf("dump: --%s only makes sense with -e", flagCert))
	}
	signer, err := loadSigner("dump", opts.Sign)
	if err != nil {
		return err
	}
	create.Signer = signer
	create.Cleaned = noteCleaned(opts.Err, opts.Dir)
	w, err := imgset.Create(opts.Dir, create)
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	progress, done := newProgress(opts.Err, opts.Quiet, "dumping")
	// dump.Dump commits w once the set is complete (before killing the tree) and aborts
	// it on failure: *imgset.Writer is a dump.Committer.
	err = dump.Dump(ctx, dump.Options{Pid: opts.Pid, LeaveRunning: opts.LeaveRunning, COWCopies: opts.COWCopies,
		FileLocks: opts.FileLocks, ShellJob: opts.ShellJob, GhostLimit: ghostLimit, LinkRemap: opts.LinkRemap, Progress: progress,
		TCPEstablished: opts.TCP.Established, TCPClose: opts.TCP.Close, NetworkLock: opts.NetworkLock, ExtUnixSk: opts.ExtUnixSk}, w)
	done()
	if err != nil {
		_ = w.Abort() // a no-op when Dump already aborted it
		if ie := interruptCause(ctx); ie != nil && errors.Is(err, context.Canceled) {
			return fmt.Errorf("dump %v: the tree was put back and resumed; no set was written", ie)
		}
		return fmt.Errorf("dump: %w", err)
	}
	if opts.Quiet {
		return nil
	}
	files, size := dirBytes(opts.Dir)
	state := "killed"
	if opts.LeaveRunning {
		state = "left running"
	}
	enc := "plaintext"
	if opts.Encrypt {
		enc = "encrypted"
	}
	_, err = fmt.Fprintf(opts.Out, "dumped process tree %d to %s (%s): %d files, %s; the tree was %s\n",
		opts.Pid, opts.Dir, enc, files, humanBytes(size), state)
	return err
}

// tcpFlags are --tcp-established and --tcp-close, of dump and restore.
type tcpFlags struct{ Established, Close bool }

func tcpFlagsFrom(c *cli.Context) tcpFlags {
	return tcpFlags{Established: c.Bool(flagTCPEstab), Close: c.Bool(flagTCPClose)}
}

// extUnixSk is the value of --ext-unix-sk, of dump and restore: CRIU's option, with its
// optional value (criu's getopt optional_argument: --ext-unix-sk alone, or
// --ext-unix-sk=INO,... with the inodes of sockets CRIU then dumps even with a stream or
// nameless peer, for a restore handed them with --inherit-fd; unix_sk_ids_parse,
// sk-unix.c). imgtool has no --inherit-fd: the inodes are checked as CRIU checks them and
// change nothing else.
type extUnixSk struct {
	on   bool
	inos []uint32
}

// IsBoolFlag lets the flag package take --ext-unix-sk without a value (as "true").
func (e *extUnixSk) IsBoolFlag() bool { return true }

func (e *extUnixSk) String() string {
	if e == nil || !e.on {
		return ""
	}
	s := make([]string, len(e.inos))
	for i, ino := range e.inos {
		s[i] = strconv.FormatUint(uint64(ino), 10)
	}
	return strings.Join(s, ",")
}

// Set reads "true" (the flag alone), "false", or a comma-separated list of socket inodes,
// each a decimal number above 0 (empty items are skipped, as CRIU skips them).
func (e *extUnixSk) Set(v string) error {
	switch v {
	case "true":
		e.on = true
		return nil
	case "false":
		e.on = false
		return nil
	}
	for _, item := range strings.Split(v, ",") {
		if item == "" {
			continue
		}
		ino, err := strconv.ParseUint(item, 10, 32)
		if err != nil || ino == 0 {
			return fmt.Errorf("%q is not a socket inode (a decimal number above 0)", item)
		}
		if !slices.Contains(e.inos, uint32(ino)) { // the command may be parsed twice (flagsFirst)
			e.inos = append(e.inos, uint32(ino))
		}
	}
	e.on = true
	return nil
}

// optionalValueFlag is a flag whose value is optional and, when given, joined to it with
// "=" (--ext-unix-sk, --ext-unix-sk=1,2): it takes no separate argument, so the word after
// it stays an argument (normalizeArgs asks TakesValue).
type optionalValueFlag struct{ *cli.GenericFlag }

func (f *optionalValueFlag) TakesValue() bool { return false }
func (f *optionalValueFlag) String() string   { return cli.FlagStringer(f) }

// extUnixSkFlag is --ext-unix-sk (-x, as criu's), with usage.
func extUnixSkFlag(usage string) cli.Flag {
	return &optionalValueFlag{&cli.GenericFlag{Name: flagExtUnixSk, Aliases: []string{"x"}, Value: &extUnixSk{}, Usage: usage}}
}

// extUnixSkFrom tells whether --ext-unix-sk was given (with or without inodes).
func extUnixSkFrom(c *cli.Context) bool {
	e, ok := c.Generic(flagExtUnixSk).(*extUnixSk)
	return ok && e.on
}

// parseGhostLimit reads --ghost-limit as CRIU does: a number of bytes, or of KiB, MiB or
// GiB with a K, M or G suffix. It returns dump.Options.GhostLimit: 0 for the default (no
// flag), -1 for a limit of 0 bytes.
func parseGhostLimit(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	num, shift := s, 0
	switch s[len(s)-1] {
	case 'K', 'k':
		num, shift = s[:len(s)-1], 10
	case 'M', 'm':
		num, shift = s[:len(s)-1], 20
	case 'G', 'g':
		num, shift = s[:len(s)-1], 30
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64>>shift {
		return 0, usageError(fmt.Errorf("--%s %q: want a size in bytes, or with a K, M or G suffix", flagGhostLimit, s))
	}
	if n == 0 {
		return -1, nil
	}
	return n << shift, nil
}

var _ dump.Committer = (*imgset.Writer)(nil)
