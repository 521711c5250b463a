package imgtool

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/restore"
)

// restoreOptions are the options of "imgtool restore".
type restoreOptions struct {
	Dir     string     // -D: the image set
	Keys    keyOptions // --tls-key, --require-encrypted
	Detach  bool       // -d: leave the restored tree running and exit
	PidFile string     // --pidfile: where to write the restored root's PID
	Locks   bool       // --file-locks: take back the set's file locks
	Shell   bool       // --shell-job: the set's outside terminal is ours
	TCP     tcpFlags   // --tcp-established, --tcp-close: restore TCP connections
	ExtUnix bool       // --ext-unix-sk[=INO,...]: connect sockets to their peers outside the set
	Quiet   bool
	Err     io.Writer // progress
}

const (
	flagDetach  = "restore-detached"
	flagPidFile = "pidfile"
)

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "recreate the processes of an image set, with their PIDs, and let them continue",
		ArgsUsage: " ",
		Description: `Recreates the process tree of an image set written by imgtool dump or by CRIU 4.2:
every process and thread with its old PID and TID, memory, registers, signal state,
credentials, working directory, and open files, pipes and FIFOs with their queued
data. Each process continues exactly where it stopped. No CRIU binary is needed.

Who wrote the set is checked first, before anything of it is decrypted: an
encrypted set must carry a valid signature (` + imgset.SignName + `) from a signer
that --trust (default ` + defaultTrustPath + `) names or that a CA it names issued,
its header and files must be the signed ones (names, sizes, and the set id in each
file); otherwise restore refuses it (exit 3), naming what is missing: no signature,
an untrusted signer, a bad signature, a file that differs. Every stored chunk must
then have its signed SHA-256, checked as it is read, before it is decrypted: every
image but the pages files before any process is created, pages chunk by chunk. Anyone with a recipient's certificate can make an
encrypted set: encryption says who can read a set, never who wrote it.
--allow-unsigned lifts this (a failing signature is then a warning);
--require-signed demands the same of a plain set.

Then, before any process is created: PIDs in use or beyond pid_max, files that are missing
or changed since the dump, XSAVE features this CPU lacks, a vDSO of another kernel,
fd numbers above the fd limit, and (for an encrypted set) the header, the manifest and
every image but the pages files. Pages are decrypted in memory only, chunk by chunk, each
chunk authenticated before its pages are written; a chunk that fails, or any other
failure midway, kills every process the restore created. The image set is never
modified. A resource limit this machine does not allow (a hard limit above the current
one, without CAP_SYS_RESOURCE) is clamped to what is allowed, with one warning line.

File locks saved by dump --file-locks or criu dump --file-locks (filelocks.img) are
taken back, each by the process and on the fd that held it, before the tree runs,
only with --file-locks, as criu restore needs it too; where CRIU would then drop
them without a word, imgtool refuses such a set without the flag. A lock another
process holds now fails the restore, naming it (CRIU would wait for it).

Terminals: pseudo-terminal pairs of the set are made again with their index, termios,
window size, packet mode and lock state, and each session gets its controlling terminal
and foreground process group before the tree runs. A set dumped with --shell-job (by
imgtool or criu) needs --shell-job here too: the terminal it took from outside is
replaced with imgtool's standard input, which must be imgtool's controlling terminal,
and the tree runs in imgtool's session, its root's group in the foreground, as with
criu restore --shell-job.

TCP connections saved by dump --tcp-established or criu dump --tcp-established
(tcp-stream-INO.img) come back with their state and queues with --tcp-established,
both ends of a connection within the tree as well: each is rebuilt in TCP repair
mode, locked until the tree runs, and carries on. With --tcp-close they come back
closed instead (reads see the end, writes fail), as with criu restore --tcp-close.
A set holding a connection is refused without either flag, and with
--tcp-established if another socket of this host has the same connection.

UNIX datagram sockets whose peer was outside the tree (dump --ext-unix-sk, criu dump
--ext-unix-sk) are connected to that peer's name again with --ext-unix-sk, as with
criu restore --ext-unix-sk; the peer is never made nor its file touched. Such a set
is refused without the flag, and when no unconnected datagram socket is bound at
the name now.

Without -d, imgtool waits for the restored root process and exits with its status
(128+N when a signal N ended it).

Examples:
   imgtool restore -D /tmp/ckpt
   imgtool restore -D /tmp/ckpt -d --pidfile /run/app.pid
   imgtool restore -D /tmp/ckpt --file-locks
   imgtool restore -D /tmp/ckpt --shell-job
   imgtool restore -D /tmp/ckpt --tcp-established
   imgtool restore -D /tmp/ckpt --ext-unix-sk
   imgtool restore -D /tmp/ckpt --tls-key key.pem --trust signer.pem --require-encrypted -d

Exit codes: the restored root's status without -d; with -d, 0 success; 1 failure
(nothing is left running); 2 wrong command line; 3 the signature check failed
(nothing is left running).`,
		Flags: append([]cli.Flag{
			imagesDirFlag(),
			&cli.BoolFlag{Name: flagDetach, Aliases: []string{"d"}, Usage: "leave the restored tree running and exit"},
			&cli.StringFlag{Name: flagPidFile, Usage: "write the restored root's PID to `FILE`"},
			&cli.BoolFlag{Name: flagFileLocks, Aliases: []string{"l"}, Usage: "take back the file locks the set holds " +
				"(as criu restore --file-locks); a set holding locks is refused without it"},
			&cli.BoolFlag{Name: flagShellJob, Aliases: []string{"j"}, Usage: "restore a shell's job (dump --shell-job) onto this " +
				"terminal: the set's outside terminal becomes imgtool's standard input, in imgtool's session (as criu restore --shell-job)"},
			&cli.BoolFlag{Name: flagTCPEstab, Usage: "restore TCP connections with their state and queues (as criu restore " +
				"--tcp-established); a set holding connections is refused without it or --tcp-close"},
			&cli.BoolFlag{Name: flagTCPClose, Usage: "restore TCP connections closed (as criu restore --tcp-close)"},
			extUnixSkFlag("connect the UNIX datagram sockets whose peer was outside the tree (dump --ext-unix-sk, criu dump " +
				"--ext-unix-sk) to that peer's name again, as criu restore --ext-unix-sk; a set holding one is refused without it. " +
				"=INO,... is taken as CRIU takes it, and changes nothing"),
			quietFlag(),
			allowUnsignedFlag(),
		}, keyFlags()...),
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError(err) },
		Action: func(c *cli.Context) error {
			keys := keyOptionsFrom(c)
			keys.SignedEncrypted, keys.AllowUnsigned = true, c.Bool(flagAllowUnsigned)
			return runRestore(c.Context, restoreOptions{
				Dir:     c.String(flagImagesDir),
				Keys:    keys,
				Detach:  c.Bool(flagDetach),
				PidFile: c.String(flagPidFile),
				Locks:   c.Bool(flagFileLocks),
				Shell:   c.Bool(flagShellJob),
				TCP:     tcpFlagsFrom(c),
				ExtUnix: extUnixSkFrom(c),
				Quiet:   c.Bool(flagQuiet),
				Err:     errWriter(c),
			}, c.Args().Slice())
		},
	}
}

// runRestore opens the set (decrypting it in memory when encrypted) and restores it.
func runRestore(ctx context.Context, opts restoreOptions, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Errorf("restore takes no arguments, got %q", args[0]))
	}
	if opts.Dir == "" {
		return usageError(errors.New("restore needs the image set: -D DIR"))
	}
	set, err := openSet(opts.Dir, opts.Keys)
	if err != nil {
		return fmt.Errorf("restore: %w", explainSigned(err))
	}
	progress, done := newProgress(opts.Err, opts.Quiet, "restoring")
	warn := func(msg string) { fmt.Fprintf(opts.Err, "imgtool: warning: restore: %s\n", msg) }
	err = restore.Restore(ctx, restore.Options{Detach: opts.Detach, PidFile: opts.PidFile, FileLocks: opts.Locks, ShellJob: opts.Shell, Progress: progress, Warn: warn,
		TCPEstablished: opts.TCP.Established, TCPClose: opts.TCP.Close, ExtUnixSk: opts.ExtUnix}, set)
	done()
	var exit *restore.ExitError
	if errors.As(err, &exit) {
		// The restored program's own status, as a shell would report it.
		return withExitCode(exit.ExitCode(), err)
	}
	if err != nil {
		return fmt.Errorf("restore: %w", explainSigned(err))
	}
	return nil
}
