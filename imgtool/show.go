package imgtool

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/image"
)

// showOptions are the options of imgtool show.
type showOptions struct {
	NoPayload bool       // crit's --nopl: payloads summarised as "... <SIZE>"
	Files     fileOpener // how to open the image
	Stdout    io.Writer
}

func showCommand() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "print a CRIU image as indented JSON, as crit show does",
		UsageText: "imgtool show IMAGE [--nopl]",
		Description: `Prints the image as decode --pretty does, to stdout. --nopl replaces each payload
("extra": queued pipe and socket data, ghost file contents, ...) with its size, as
"... <21B>", like crit show --nopl; ghost file contents are left out altogether.
IMAGE may be a member of a container checkpoint archive, given as ARCHIVE:MEMBER, as
for decode -i.

Examples:
   imgtool show fixtures/criu-4.2/misc/sk-queues.img
   imgtool show fixtures/criu-4.2/ghost/ghost-file-2.img --nopl
   imgtool show fixtures/podman/ctr1b.tar:checkpoint/inventory.img

Exit codes: 0 success, 1 the image cannot be read, 2 wrong command line.`,
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "nopl", Usage: "do not show entry payloads, only their sizes"},
		}, fileOpenFlags()...),
		Action: func(c *cli.Context) error {
			opts := showOptions{NoPayload: c.Bool("nopl"), Files: fileOpenerFrom(c), Stdout: c.App.Writer}
			return runShow(c.Context, opts, c.Args().Slice())
		},
	}
}

// runShow prints the image named by the one argument.
func runShow(ctx context.Context, opts showOptions, args []string) error {
	if len(args) != 1 {
		return usageError(fmt.Errorf("show: need exactly one IMAGE, got %d arguments", len(args)))
	}
	jopts := image.JSONOptions{Pretty: true, NoPayload: opts.NoPayload}
	if err := decodeImage(ctx, opts.Files, args[0], outputPath{}, opts.Stdout, jopts); err != nil {
		return fmt.Errorf("show: %w", err)
	}
	return nil
}
