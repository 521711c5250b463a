package imgtool

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/image"
)

// infoOptions are the options of imgtool info.
type infoOptions struct {
	Files  fileOpener // how to open the image
	Stdout io.Writer
}

func infoCommand() *cli.Command {
	return &cli.Command{
		Name:      "info",
		Usage:     "print an image's type and number of entries, as crit info does",
		UsageText: "imgtool info IMAGE",
		Description: `Prints {"magic": TYPE, "count": ENTRIES} as crit info does. The count is the number
of entries imgtool decode lists (payloads and ipcns-msg messages are part of their
entry), without the pagemap_head of PAGEMAP images, as crit counts them. crit 4.2
miscounts images with payloads and fails on ghost files; imgtool counts them right.
IMAGE may be a member of a container checkpoint archive (plain, gzip or zstd, or
encrypted with --tls-key), given as ARCHIVE:MEMBER, as for decode -i.

Examples:
   imgtool info fixtures/criu-4.2/tree/pstree.img
   imgtool info fixtures/criu-4.2/counter/pagemap-15654.img
   imgtool info fixtures/podman/ctr1b.tar:checkpoint/inventory.img

Exit codes: 0 success, 1 the image cannot be read, 2 wrong command line.`,
		Flags: fileOpenFlags(),
		Action: func(c *cli.Context) error {
			return runInfo(c.Context, infoOptions{Files: fileOpenerFrom(c), Stdout: c.App.Writer}, c.Args().Slice())
		},
	}
}

// runInfo prints the type and entry count of the image named by the one argument.
func runInfo(ctx context.Context, opts infoOptions, args []string) error {
	if len(args) != 1 {
		return usageError(fmt.Errorf("info: need exactly one IMAGE, got %d arguments", len(args)))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r, err := opts.Files.open(args[0])
	if err != nil {
		return fmt.Errorf("info: %w", err)
	}
	defer r.Close()
	res, err := image.Info(r)
	if err != nil {
		return fmt.Errorf("info: %w", rawImageError(args[0], err))
	}
	if err := res.WriteJSON(opts.Stdout); err != nil {
		return err
	}
	_, err = io.WriteString(opts.Stdout, "\n")
	return err
}
