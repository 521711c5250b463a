package imgtool

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/explore"
)

// inspectOptions are the options of imgtool inspect.
type inspectOptions struct {
	JSON bool      // print JSON instead of tables
	Set  setOpener // how to open the set
	Out  io.Writer
}

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "summarize an image set: processes, threads, memory, files, encryption",
		ArgsUsage: "DIR",
		Description: `Prints a summary of the image set in DIR: its processes and threads, the memory
its pagemaps describe (pages and bytes, and how much of it the set's pages files
hold), its files and their size by image type, and whether it is encrypted and
for whom. Every image's magic is checked against its file name; pages files are
sized, never read. --json prints the same as JSON, for scripts.

Examples:
   imgtool inspect fixtures/criu-4.2/misc
   imgtool inspect --json fixtures/criu-4.2/tree | jq .memory.bytes

Exit codes: 0 success, 1 the set cannot be read (a missing or foreign file is named),
2 wrong command line.`,
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of tables"},
		}, setOpenFlags()...),
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError(err) },
		Action: func(c *cli.Context) error {
			args, err := interspersedArgs(c)
			if err != nil {
				return err
			}
			opts := inspectOptions{JSON: c.Bool("json"), Set: setOpenerFrom(c), Out: c.App.Writer}
			return runInspect(c.Context, opts, args)
		},
	}
}

// runInspect prints the summary of the set named by args[0].
func runInspect(ctx context.Context, opts inspectOptions, args []string) error {
	if len(args) != 1 {
		return usageError(fmt.Errorf("inspect: need exactly one image set folder, got %d arguments", len(args)))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	set, err := opts.Set.open(args[0])
	if err != nil {
		return err
	}
	sum, err := explore.Inspect(set)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", args[0], err)
	}
	if opts.JSON {
		return writeJSON(opts.Out, sum)
	}
	return printSummary(opts.Out, args[0], sum)
}

// storedPages describes the saved pages and the pages files that hold them, and says
// so when the files are shorter than the pagemaps need: such a set cannot be restored.
func storedPages(m explore.Memory) string {
	text := fmt.Sprintf("%d pages, %s in pages files of %s", m.StoredPages, size(m.StoredBytes), size(uint64(m.PagesFiles)))
	if uint64(m.PagesFiles) < m.StoredBytes {
		text += " (DAMAGED: the pages files are shorter than the pagemaps say)"
	}
	return text
}

// size renders a byte count exactly and, when large, in binary units.
func size(n uint64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB"}
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < len(units)-1 {
		v, u = v/1024, u+1
	}
	return fmt.Sprintf("%d B (%.1f %s)", n, v, units[u])
}

func printSummary(w io.Writer, dir string, s *explore.Summary) error {
	enc := "no"
	if s.Encrypted {
		enc = "yes"
		if len(s.Recipients) > 0 {
			enc += ", for " + strings.Join(s.Recipients, ", ")
		}
	}
	m := s.Memory
	rows := [][]string{
		{"set", dir},
		{"processes", fmt.Sprintf("%d (root %d %s)", s.Processes, s.Root, s.Comm)},
		{"threads", itoa(s.Threads)},
		{"memory", fmt.Sprintf("%d pages, %s", m.Pages, size(m.Bytes))},
		{"stored pages", storedPages(m)},
		{"shared pages", itoa(m.SharedPages)},
		{"parent pages", itoa(m.ParentPages)},
		{"files", fmt.Sprintf("%d, %s", s.Files, size(uint64(s.Bytes)))},
		{"encrypted", enc},
	}
	if s.ImgVersion != 0 {
		rows = append(rows, []string{"image version", itoa(s.ImgVersion)})
	}
	if err := writeTable(w, nil, rows); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	var kinds [][]string
	for _, k := range s.Kinds {
		kinds = append(kinds, []string{k.Name, itoa(k.Files), itoa(k.Bytes)})
	}
	return writeTable(w, []string{"KIND", "FILES", "BYTES"}, kinds)
}
