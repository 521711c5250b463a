package imgtool

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/explore"
	"github.com/imgtool/imgtool/imgset"
)

// xOptions are the options of imgtool x.
type xOptions struct {
	JSON bool      // print JSON instead of a table
	Set  setOpener // how to open the set
	Out  io.Writer
}

// xViews maps each view of imgtool x to the function that prints it.
var xViews = map[string]func(set *imgset.Set, opts xOptions) error{
	"ps":   printPS,
	"fds":  printFDs,
	"mems": printMems,
	"rss":  printRSS,
	"sk":   printSockets,
}

func xCommand() *cli.Command {
	return &cli.Command{
		Name:      "x",
		Usage:     "explore an image set: process tree, files, memory, resident pages, sockets",
		ArgsUsage: "DIR ps|fds|mems|rss|sk   (or -D DIR ps|...)",
		Description: `Shows what crit x shows, as tables, plus the set's sockets:
   ps    the process tree: PID, PPID, PGID, SID, threads, COMM indented by depth
   fds   each process's file descriptors (crit's names: paths, pipe[ID], unix[INO (PEER)],
         TYPE.ID), with socket addresses and deleted files noted, and its cwd and root
   mems  each memory area: range, protection (rwx, p(rivate) or s(hared)), pages,
         and what backs it (file and offset, memfd, anon, heap, stack, vdso, vvar, ...)
   rss   the pages saved for each area (from the pagemaps; page data is never read)
   sk    sockets: unix, inet, packet, netlink; type, state, addresses, peer, queued
         bytes, and the fds that hold them
--json prints the same as JSON, for scripts (addresses as "0x..." strings).

Examples:
   imgtool x fixtures/criu-4.2/tree ps
   imgtool x fixtures/criu-4.2/misc fds
   imgtool x fixtures/criu-4.2/counter rss --json | jq '.processes[0].resident'

Exit codes: 0 success, 1 the set cannot be read (a missing or foreign file is named),
2 wrong command line.`,
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"},
			imagesDirFlag(), // -D DIR is the same as DIR first (app.go)
		}, setOpenFlags()...),
		Action: func(c *cli.Context) error {
			opts := xOptions{JSON: c.Bool("json"), Set: setOpenerFrom(c), Out: c.App.Writer}
			return runX(c.Context, opts, c.Args().Slice())
		},
	}
}

// runX prints one view of the set: args are DIR and the view's name.
func runX(ctx context.Context, opts xOptions, args []string) error {
	if len(args) != 2 {
		return usageError(fmt.Errorf("x: need DIR and one of %s", xViewNames()))
	}
	view, ok := xViews[args[1]]
	if !ok {
		return usageError(fmt.Errorf("x: unknown view %q (want one of %s)", args[1], xViewNames()))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	set, err := opts.Set.open(args[0])
	if err != nil {
		return err
	}
	if err := view(set, opts); err != nil {
		return fmt.Errorf("x %s %s: %w", args[1], args[0], err)
	}
	return nil
}

func xViewNames() string { return "ps, fds, mems, rss, sk" }

// setOpener holds what opening a set for reading needs. Every command that reads a
// set (x, inspect) opens it through open, so that keys for encrypted sets (a
// --tls-key flag) are added here, in setOpenFlags and setOpenerFrom, and nowhere else.
type setOpener struct{ keys keyOptions }

// setOpenFlags are the flags of the commands that read a set: --tls-key and
// --require-encrypted (keys.go).
func setOpenFlags() []cli.Flag { return keyFlags() }

// setOpenerFrom reads the set-opening flags of a command line.
func setOpenerFrom(c *cli.Context) setOpener { return setOpener{keys: keyOptionsFrom(c)} }

// open opens the image set in dir for reading, decrypting it in memory when it is
// encrypted (openSet in keys.go).
func (o setOpener) open(dir string) (*imgset.Set, error) {
	return openSet(dir, o.keys)
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeTable prints rows under header (none when nil) as a plain, borderless table,
// columns two spaces apart. Cells are not trimmed (ps indents COMM) nor wrapped
// (paths stay whole).
func writeTable(w io.Writer, header []string, rows [][]string) error {
	// text/tabwriter, not a table library: imgtool starts in a few milliseconds (a crit
	// user runs one process per image), and the table libraries' package initialisation
	// alone costs more than that.
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	row := func(cells []string) {
		for i, c := range cells {
			if i > 0 {
				tw.Write([]byte{'\t'})
			}
			tw.Write([]byte(strings.ReplaceAll(c, "\t", " ")))
		}
		tw.Write([]byte{'\n'})
	}
	if header != nil {
		row(header)
	}
	for _, r := range rows {
		row(r)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The last column is padded to its width; drop the trailing blanks.
	var out bytes.Buffer
	for line := range strings.Lines(buf.String()) {
		out.WriteString(strings.TrimRight(line, " \n"))
		out.WriteByte('\n')
	}
	_, err := w.Write(out.Bytes())
	return err
}

func itoa[T ~int | ~uint32 | ~uint64 | ~int64](v T) string {
	return strconv.FormatInt(int64(v), 10)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printPS(set *imgset.Set, opts xOptions) error {
	procs, err := explore.PS(set)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.Out, struct {
			Processes []explore.Process `json:"processes"`
		}{procs})
	}
	var rows [][]string
	for _, p := range procs {
		rows = append(rows, []string{itoa(p.PID), itoa(p.PPID), itoa(p.PGID), itoa(p.SID),
			itoa(len(p.Threads)), strings.Repeat("    ", p.Depth) + p.Comm})
	}
	return writeTable(opts.Out, []string{"PID", "PPID", "PGID", "SID", "THREADS", "COMM"}, rows)
}

func printFDs(set *imgset.Set, opts xOptions) error {
	procs, err := explore.FDs(set)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.Out, struct {
			Processes []explore.ProcessFDs `json:"processes"`
		}{procs})
	}
	var rows [][]string
	for _, p := range procs {
		pid := itoa(p.PID)
		for _, fd := range p.FDs {
			name := fd.Name
			if fd.Path != "" && fd.Path != fd.Name {
				name += " (" + fd.Path + ")"
			}
			rows = append(rows, []string{pid, itoa(fd.FD), fd.Type, name, dash(fd.Detail)})
		}
		rows = append(rows,
			[]string{pid, "cwd", "DIR", p.Cwd, "-"},
			[]string{pid, "root", "DIR", p.Root, "-"})
	}
	return writeTable(opts.Out, []string{"PID", "FD", "TYPE", "NAME", "DETAIL"}, rows)
}

// backing describes what an area maps, in one cell.
func backing(v explore.VMA) string {
	s := v.Backing
	if v.Path != "" {
		s += " " + v.Path
	}
	if v.Offset != 0 {
		s += fmt.Sprintf(" +%#x", v.Offset)
	}
	if !v.Dumped {
		s += " (not dumped)"
	}
	return s
}

func printMems(set *imgset.Set, opts xOptions) error {
	procs, err := explore.Mems(set)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.Out, struct {
			Processes []explore.ProcessVMAs `json:"processes"`
		}{procs})
	}
	var rows [][]string
	for _, p := range procs {
		pid := itoa(p.PID)
		rows = append(rows, []string{pid, "exe", "", "", "", p.Exe})
		for _, v := range p.VMAs {
			rows = append(rows, []string{pid, v.Start.String(), v.End.String(), v.PermString(), itoa(v.Pages), backing(v)})
		}
	}
	return writeTable(opts.Out, []string{"PID", "START", "END", "PERM", "PAGES", "BACKING"}, rows)
}

// ranges lists an area's resident ranges as ADDR+PAGES.
func ranges(rs []explore.Range) string {
	if len(rs) == 0 {
		return "-"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%s+%d", r.Start, r.Pages)
	}
	return strings.Join(parts, " ")
}

func printRSS(set *imgset.Set, opts xOptions) error {
	procs, err := explore.RSS(set)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.Out, struct {
			Processes []explore.ProcessRSS `json:"processes"`
		}{procs})
	}
	var rows [][]string
	for _, p := range procs {
		pid := itoa(p.PID)
		for _, v := range p.VMAs {
			rows = append(rows, []string{pid, v.Start.String(), v.End.String(), itoa(v.Pages),
				itoa(v.Resident), backing(v.VMA), ranges(v.Ranges)})
		}
		rows = append(rows, []string{pid, "total", "", "", itoa(p.Resident), "", ""})
	}
	return writeTable(opts.Out, []string{"PID", "START", "END", "PAGES", "RESIDENT", "BACKING", "RANGES (ADDR+PAGES)"}, rows)
}

func printSockets(set *imgset.Set, opts xOptions) error {
	socks, err := explore.Sockets(set)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.Out, struct {
			Sockets []explore.Socket `json:"sockets"`
		}{socks})
	}
	var rows [][]string
	for _, s := range socks {
		proto := s.Family
		if s.Proto != "" {
			proto = s.Proto
		}
		remote := s.Remote
		if s.Family == "unix" && s.Peer != 0 {
			remote = fmt.Sprintf("ino %d", s.Peer)
		}
		queued := itoa(s.Queued)
		if s.InQ != 0 || s.OutQ != 0 {
			queued = fmt.Sprintf("in %d out %d", s.InQ, s.OutQ)
		}
		var owners []string
		for _, o := range s.Owners {
			owners = append(owners, fmt.Sprintf("%d:%d", o.PID, o.FD))
		}
		rows = append(rows, []string{itoa(s.ID), itoa(s.Ino), proto, dash(s.Type), dash(s.State),
			dash(s.Local), dash(remote), queued, dash(strings.Join(owners, " "))})
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(opts.Out, "no sockets")
		return err
	}
	return writeTable(opts.Out, []string{"ID", "INO", "PROTO", "TYPE", "STATE", "LOCAL", "REMOTE", "QUEUED", "PID:FD"}, rows)
}
