package imgtool

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/image"
)

// encodeOptions are the options of imgtool encode.
type encodeOptions struct {
	In     string     // JSON to read; "" or "-": stdin
	Out    string     // where the image goes; "" or "-": stdout
	Files  fileOpener // how to open In
	Stdout io.Writer
	Err    io.Writer // where a note on leftovers of killed runs goes
}

func encodeCommand() *cli.Command {
	return &cli.Command{
		Name:      "encode",
		Usage:     "convert crit's JSON back to a CRIU image, as crit encode does",
		UsageText: "imgtool encode [-i JSON] [-o IMAGE]",
		Description: `Reads the JSON of one image, as imgtool decode or crit decode print it (plain or
--pretty), and writes the image. The JSON of an unchanged image gives back the original
bytes. Integers may be numbers or strings in the forms --pretty prints ("0x1f",
"254:0", "PROT_READ | PROT_WRITE", "ESTABLISHED", "127.0.0.1"). Output of show --nopl
cannot be encoded: its payloads are gone.

Examples:
   imgtool encode -i pstree.json -o pstree.img
   imgtool decode -i core-1.img | jq '.entries[0].tc.comm = "renamed"' | imgtool encode -o core-1.img

Exit codes: 0 success, 1 the JSON is not a valid image (nothing is written to -o),
2 wrong command line.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "in", Aliases: []string{"i"}, Usage: "JSON to encode (stdin by default)"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "where to write the image (stdout by default)"},
		}, fileOpenFlags()...),
		Action: func(c *cli.Context) error {
			opts := encodeOptions{In: c.String("in"), Out: c.String("out"), Files: fileOpenerFrom(c), Stdout: c.App.Writer, Err: errWriter(c)}
			return runEncode(c.Context, opts, c.Args().Slice())
		},
	}
}

// runEncode converts JSON to one image. It takes no arguments.
func runEncode(ctx context.Context, opts encodeOptions, args []string) error {
	if len(args) != 0 {
		return usageError(fmt.Errorf("encode: unexpected argument %q (the JSON is given with -i)", args[0]))
	}
	if err := encodeImage(ctx, opts); err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	return nil
}

func encodeImage(ctx context.Context, opts encodeOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r, err := opts.Files.open(opts.In)
	if err != nil {
		return err
	}
	defer r.Close()
	// A binary image half written to stdout would look like a whole one to whatever
	// reads it: it is spooled, and reaches stdout only once complete.
	o, err := createSpooledOutput(outputTo(opts.Out, opts.Err), opts.Stdout)
	if err != nil {
		return err
	}
	defer o.abort()
	if err := image.EncodeJSON(r, o); err != nil {
		if opts.In != "" && opts.In != "-" {
			return fmt.Errorf("%s: %w", opts.In, err)
		}
		return err
	}
	return o.commit()
}
