package imgtool

import (
	"context"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/restore"
)

// restoreOptions are the options of "imgtool restore".
type restoreOptions struct {
	dir              string
	tlsKeys          []string // private keys tried on an encrypted set's header
	requireEncrypted bool
	detach           bool
	pidFile          string
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "recreate the processes of an image set, with their PIDs, and let them continue",
		ArgsUsage: " ",
		Description: "Restores the process tree of an image set written by imgtool dump or CRIU 4.2.\n" +
			"Without -d, imgtool waits for the restored root process and exits with its status.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "images-dir", Aliases: []string{"D"}, Usage: "the image set `DIR` (required)"},
			&cli.StringSliceFlag{Name: "tls-key", Usage: "private key `key.pem` to decrypt an encrypted set (repeatable)"},
			&cli.BoolFlag{Name: "require-encrypted", Usage: "refuse a set that is not encrypted"},
			&cli.BoolFlag{Name: "restore-detached", Aliases: []string{"d"}, Usage: "leave the restored tree running and exit"},
			&cli.StringFlag{Name: "pidfile", Usage: "write the restored root's PID to `FILE`"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return usageError(fmt.Errorf("restore takes no arguments, got %q", c.Args().First()))
			}
			if c.String("images-dir") == "" {
				return usageError(errors.New("restore needs the image set: -D DIR"))
			}
			return runRestore(c.Context, restoreOptions{
				dir:              c.String("images-dir"),
				tlsKeys:          c.StringSlice("tls-key"),
				requireEncrypted: c.Bool("require-encrypted"),
				detach:           c.Bool("restore-detached"),
				pidFile:          c.String("pidfile"),
			}, c.Args().Slice())
		},
	}
}

// runRestore opens the set (decrypting it in memory when encrypted) and restores it.
func runRestore(ctx context.Context, opts restoreOptions, _ []string) error {
	var ids []cipher.Identity
	for _, k := range opts.tlsKeys {
		id, err := cipher.ReadIdentity(k)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		ids = append(ids, id)
	}
	set, err := imgset.Open(opts.dir, imgset.OpenOptions{Identities: ids, RequireEncrypted: opts.requireEncrypted})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	err = restore.Restore(ctx, restore.Options{Detach: opts.detach, PidFile: opts.pidFile}, set)
	var exit *restore.ExitError
	if errors.As(err, &exit) {
		// The restored program's own status, as a shell would report it.
		return withExitCode(exit.ExitCode(), err)
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}
