package imgtool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
)

// decodeOptions are the options of imgtool decode.
type decodeOptions struct {
	In     string     // image to read; "" or "-": stdin
	Dir    string     // -D: decode every protobuf image of this set instead (Out is a folder)
	Out    string     // where the JSON goes; "" or "-": stdout
	Pretty bool       // crit's --pretty
	Files  fileOpener // how to open In
	Stdout io.Writer
	Err    io.Writer // where a note on leftovers of killed runs goes
}

func decodeCommand() *cli.Command {
	return &cli.Command{
		Name:      "decode",
		Usage:     "convert a CRIU image to JSON, as crit decode does",
		UsageText: "imgtool decode [-i IMAGE] [-o JSON] [--pretty]\n   imgtool decode -D SET -o FOLDER [--pretty]   (or: imgtool decode SET -o FOLDER)\n   imgtool decode -i ARCHIVE:checkpoint/NAME.img | -D ARCHIVE -o FOLDER",
		Description: `Prints a CRIU image as crit 4.2's JSON, byte for byte: {"magic": ..., "entries": [...]},
each entry's set fields in field-number order, enums by name, bytes in base64, and the
payload that follows an entry (pipe and socket queues, ghost file contents, ...) as
"extra". --pretty indents and prints numbers as the image's field options say: hex,
"MAJOR:MINOR" devices, flag names, socket families and states, IP addresses.
Like crit, the JSON on stdout ends with a newline and a file written with -o does not.
imgtool encode turns either form back into the identical image.

With -D SET (or SET alone), every protobuf image of the set SET (plain, or encrypted
with --tls-key) is decoded in one run into FOLDER, a new or empty folder: the JSON of
SET/NAME.img goes to FOLDER/NAME.img.json (core-1.img.json, pstree.img.json, ...;
stats-dump.json for stats-dump), as decode -i SET/NAME.img -o FOLDER/NAME.img.json
would write it. Pages and other raw images are skipped; a SET without protobuf
images is an error.

A container checkpoint archive (podman container checkpoint --export, CRI-O's,
the kubelet's: tar, tar.gz or tar.zst, told by content) is read wherever a set is,
without unpacking it: -D ARCHIVE decodes every protobuf image of its checkpoint/
folder, and one of its members is given to -i as ARCHIVE:MEMBER, MEMBER being the
member's name in the archive (ARCHIVE:checkpoint/core-1.img, ARCHIVE:stats-dump).
An encrypted archive (imgtool encrypt ARCHIVE) is decrypted in memory with
--tls-key. A path that exists is always that file; a MEMBER the archive lacks is
an error that says where its images are. The JSON is that of the same image
decoded from the unpacked set, byte for byte.

Examples:
   imgtool decode -i fixtures/criu-4.2/counter/pstree.img
   imgtool decode -i core-1.img --pretty -o core-1.json
   imgtool decode --pretty < inventory.img | jq '.entries[0]'
   imgtool decode -D fixtures/criu-4.2/tree -o /tmp/tree-json --pretty
   imgtool decode -i fixtures/podman/ctr1b.tar:checkpoint/core-1.img --pretty
   imgtool decode -D ctr.tar.zst -o /tmp/ctr-json --tls-key me.key   (an encrypted archive)

Exit codes: 0 success, 1 the image cannot be read or the output written (no partial
output file is left), 2 wrong command line.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "in", Aliases: []string{"i"}, Usage: "image to decode (stdin by default)"},
			&cli.StringFlag{Name: flagImagesDir, Aliases: []string{"D"}, Usage: "decode every image of the set `SET` into the folder given with -o"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "where to write the JSON (stdout by default)"},
			&cli.BoolFlag{Name: "pretty", Usage: "indent, and print fields in their human-readable forms"},
		}, fileOpenFlags()...),
		Action: func(c *cli.Context) error {
			opts := decodeOptions{
				In: c.String("in"), Dir: c.String(flagImagesDir), Out: c.String("out"), Pretty: c.Bool("pretty"),
				Files: fileOpenerFrom(c), Stdout: c.App.Writer, Err: errWriter(c),
			}
			return runDecode(c.Context, opts, c.Args().Slice())
		},
	}
}

// runDecode converts one image to JSON. It takes no arguments.
func runDecode(ctx context.Context, opts decodeOptions, args []string) error {
	if len(args) != 0 {
		return usageError(fmt.Errorf("decode: unexpected argument %q (the image is given with -i)", args[0]))
	}
	if opts.Dir != "" {
		if opts.In != "" {
			return usageError(errors.New("decode: give an image with -i, or a set with -D SET (or SET), not both"))
		}
		if fi, err := os.Stat(opts.Dir); err != nil {
			return fmt.Errorf("decode: %w", err) // said first: a mistyped set is the likelier mistake
		} else if !fi.IsDir() && !archive.IsArchive(opts.Dir) {
			return usageError(fmt.Errorf("decode: %s is a file, not an image set folder nor a container checkpoint archive (an image is given with -i)", opts.Dir))
		}
		if opts.Out == "" || opts.Out == "-" {
			return usageError(errors.New("decode: -D SET takes an output folder with -o"))
		}
		if err := decodeSet(ctx, opts.Dir, opts.Out, opts.Files.keys, image.JSONOptions{Pretty: opts.Pretty}); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		return nil
	}
	if err := decodeImage(ctx, opts.Files, opts.In, outputTo(opts.Out, opts.Err), opts.Stdout, image.JSONOptions{Pretty: opts.Pretty}); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

// decodeSet writes every protobuf image of the set in dir (a folder, or the
// checkpoint/ folder of the container checkpoint archive dir) as outDir/NAME.json, as
// decode -i NAME -o NAME.json would, in one run. Files that are not protobuf images
// (pages and other raw images, the sealed header) are skipped. outDir must not exist or
// be empty; it is filled in a temporary folder beside it and renamed into place, so a
// failure leaves nothing.
func decodeSet(ctx context.Context, dir, outDir string, keys keyOptions, jopts image.JSONOptions) error {
	set, ar, err := setOpener{keys: keys}.open(dir) // a folder, or an archive's checkpoint/
	if err != nil {
		return err
	}
	defer closeArchive(ar)
	if ents, err := os.ReadDir(outDir); err == nil && len(ents) > 0 {
		return fmt.Errorf("%s: folder exists and is not empty", outDir)
	}
	tmp, err := imgset.CreateFolder(outDir, noteCleaned(os.Stderr, outDir))
	if err != nil {
		return err
	}
	defer tmp.Abort() // nothing left once renamed
	decoded := 0
	for _, name := range set.Names() {
		if k := image.KindByFileName(name); k == nil || k.Raw || k.Opaque() {
			continue
		}
		if err := tmp.Check(ctx); err != nil {
			return err
		}
		if err := decodeSetFile(set, name, filepath.Join(tmp.Path, name+".json"), jopts); err != nil {
			return err
		}
		decoded++
	}
	if decoded == 0 {
		// An empty output folder would pass for the decoded set of a mistyped path.
		return fmt.Errorf("%s: no protobuf images to decode (not an image set?)", dir)
	}
	return tmp.Commit(0o755)
}

// decodeSetFile decodes one file of set to the file out, atomically.
func decodeSetFile(set *imgset.Set, name, out string, jopts image.JSONOptions) error {
	f, err := set.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	o, err := createOutput(outputTo(out, nil), nil)
	if err != nil {
		return err
	}
	defer o.abort()
	if err := image.DecodeJSON(f, o, jopts); err != nil {
		return err
	}
	return o.commit()
}

// decodeImage writes the image at in as JSON to out (decode and show).
func decodeImage(ctx context.Context, files fileOpener, in string, out outputPath, stdout io.Writer, jopts image.JSONOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r, err := files.open(in)
	if err != nil {
		return err
	}
	defer r.Close()
	o, err := createOutput(out, stdout)
	if err != nil {
		return err
	}
	defer o.abort()
	if err := image.DecodeJSON(r, o, jopts); err != nil {
		return rawImageError(in, err)
	}
	// crit ends the JSON with a newline on stdout only (json.dump, then "\n" if the
	// file is sys.stdout).
	if o.toStdout() {
		if _, err := io.WriteString(o, "\n"); err != nil {
			return err
		}
	}
	return o.commit()
}
