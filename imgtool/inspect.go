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
		ArgsUsage: "DIR   (or -D DIR)",
		Description: `Prints a summary of the image set in DIR: its processes and threads, the memory
its pagemaps describe (pages and bytes, and how much of it the set's pages files
hold), its files and their size by image type, and whether it is encrypted and
for whom. Every image's magic is checked against its file name; pages files are
sized, never read. --json prints the same as JSON, for scripts.

Examples:
   imgtool inspect fixtures/criu-4.2/misc
   imgtool inspect --json fixtures/criu-4.2/tree | jq .memory.bytes

A damaged set (inventory.img missing, a pages file missing or shorter than its
pagemaps say) is summarized, each problem on a last line "DAMAGED: FILE: ...",
and inspect exits 1.

Exit codes: 0 success, 1 the set cannot be read (a missing or foreign file is named)
or is damaged, 2 wrong command line.`,
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of tables"},
			imagesDirFlag(), // -D DIR is the same as DIR (app.go)
		}, setOpenFlags()...),
		Action: func(c *cli.Context) error {
			opts := inspectOptions{JSON: c.Bool("json"), Set: setOpenerFrom(c), Out: c.App.Writer}
			return runInspect(c.Context, opts, c.Args().Slice())
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
		err = writeJSON(opts.Out, sum)
	} else {
		var recipients []string
		if h := set.Header(); h != nil {
			recipients = stanzaRecipientLines(h.Stanzas, nil)
		}
		err = printSummary(opts.Out, args[0], sum, recipients)
	}
	if err != nil {
		return err
	}
	return damagedError(args[0], sum.Problems)
}

// damagedError fails inspect of a damaged set, after its summary is printed: a
// script must not take it for a usable one. The error names the first problem.
func damagedError(dir string, problems []string) error {
	switch len(problems) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("inspect %s: the set is damaged: %s", dir, problems[0])
	}
	return fmt.Errorf("inspect %s: the set is damaged: %s, and %d more problem(s) listed above", dir, problems[0], len(problems)-1)
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

// printSummary prints the summary as a table; recipients are the set's, as every
// command prints them (recipientLine).
func printSummary(w io.Writer, dir string, s *explore.Summary, recipients []string) error {
	enc := "no"
	if s.Encrypted {
		enc = "yes"
		if len(recipients) > 0 {
			enc += ", for " + strings.Join(recipients, "; ")
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
	if err := writeTable(w, []string{"KIND", "FILES", "BYTES"}, kinds); err != nil {
		return err
	}
	for _, p := range s.Problems {
		if _, err := fmt.Fprintf(w, "DAMAGED: %s\n", p); err != nil {
			return err
		}
	}
	return nil
}
