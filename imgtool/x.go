package imgtool

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/explore"
	"github.com/imgtool/imgtool/imgset"
)

// xOptions are the options of imgtool x.
type xOptions struct {
	JSON bool      // print JSON instead of a table
	Set  setOpener // how to open the set
	Out  io.Writer
	Mem  memOptions // the mem view's
}

// memOptions are the options of the mem view.
type memOptions struct {
	PID         int
	Search      string // a literal, or
	SearchRegex string // a regular expression (RE2 syntax)
	Context     int    // bytes shown around a match
	Max         int    // matches shown at most
}

// xViews maps each view of imgtool x to the function that prints it.
var xViews = map[string]func(set *imgset.Set, opts xOptions) error{
	"ps":   printPS,
	"fds":  printFDs,
	"mems": printMems,
	"rss":  printRSS,
	"sk":   printSockets,
	"mem":  printMem,
}

func xCommand() *cli.Command {
	return &cli.Command{
		Name:      "x",
		Usage:     "explore an image set: process tree, files, memory, resident pages, sockets",
		ArgsUsage: "DIR|ARCHIVE ps|fds|mems|rss|sk|mem   (or -D DIR ps|...)",
		Description: `Shows what crit x shows, as tables, plus the set's sockets:
   ps    the process tree: PID, PPID, PGID, SID, threads, COMM indented by depth
   fds   each process's file descriptors (crit's names: paths, pipe[ID], unix[INO (PEER)],
         TYPE.ID), with socket addresses and deleted files noted, and its cwd and root
   mems  each memory area: range, protection (rwx, p(rivate) or s(hared)), pages,
         and what backs it (file and offset, memfd, anon, heap, stack, vdso, vvar, ...)
   rss   the pages saved for each area (from the pagemaps; page data is never read)
   sk    sockets: unix, inet, packet, netlink; type, state, addresses, peer, queued
         bytes, and the fds that hold them
   mem   search the saved memory (pages) for --search TEXT or --search-regex RE
         (RE2 syntax, a match at most 4096 bytes): each match's PID, address, the
         area it is in, and --context N bytes (default 64) around it as hex and ASCII;
         --pid P searches one process. An encrypted set is decrypted in memory.
--json prints the same as JSON, for scripts (addresses as "0x..." strings).

The set may also be a container checkpoint archive (Podman's checkpoint --export,
CRI-O's, the kubelet's: a tar, plain, gzip or zstd, told by content): its
checkpoint/ folder is read in place, nothing is unpacked to disk.

Examples:
   imgtool x fixtures/criu-4.2/tree ps
   imgtool x fixtures/criu-4.2/misc fds
   imgtool x fixtures/criu-4.2/counter rss --json | jq '.processes[0].resident'
   imgtool x fixtures/podman/ctr1b.tar ps
   imgtool x fixtures/podman/ctr1b.tar mem --search SECRET= --context 32

Exit codes: 0 success, 1 the set cannot be read (a missing or foreign file is named),
2 wrong command line.`,
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"},
			imagesDirFlag(), // -D DIR is the same as DIR first (app.go)
			&cli.IntFlag{Name: "pid", Usage: "mem: search only process `PID`"},
			&cli.StringFlag{Name: "search", Usage: "mem: find the bytes of `TEXT`"},
			&cli.StringFlag{Name: "search-regex", Usage: "mem: find matches of the regular expression `RE`"},
			&cli.IntFlag{Name: "context", Value: 64, Usage: "mem: show `N` bytes before and after each match (at most 4096)"},
			&cli.IntFlag{Name: "max-matches", Value: explore.DefaultMaxMatches, Usage: "mem: stop after `N` matches"},
		}, setOpenFlags()...),
		Action: func(c *cli.Context) error {
			opts := xOptions{JSON: c.Bool("json"), Set: setOpenerFrom(c), Out: c.App.Writer,
				Mem: memOptions{PID: c.Int("pid"), Search: c.String("search"), SearchRegex: c.String("search-regex"),
					Context: c.Int("context"), Max: c.Int("max-matches")}}
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
	if err := opts.Mem.check(args[1]); err != nil {
		return usageError(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	set, ar, err := opts.Set.open(args[0])
	if err != nil {
		return err
	}
	defer closeArchive(ar)
	if err := view(set, opts); err != nil {
		return fmt.Errorf("x %s %s: %w", args[1], args[0], err)
	}
	return nil
}

func xViewNames() string { return "ps, fds, mems, rss, sk, mem" }

// setOpener holds what opening a set for reading needs. Every command that reads a
// set (x, inspect) opens it through open, so that keys for encrypted sets (a
// --tls-key flag) are added here, in setOpenFlags and setOpenerFrom, and nowhere else.
type setOpener struct{ keys keyOptions }

// setOpenFlags are the flags of the commands that read a set: --tls-key and
// --require-encrypted (keys.go).
func setOpenFlags() []cli.Flag { return keyFlags() }

// setOpenerFrom reads the set-opening flags of a command line.
func setOpenerFrom(c *cli.Context) setOpener { return setOpener{keys: keyOptionsFrom(c)} }

// open opens the image set at path for reading: a folder, decrypted in memory when
// it is encrypted (openSet in keys.go), or the set inside a container checkpoint
// archive (a regular file that is a tar, plain or compressed), which is returned
// too, to be closed with closeArchive.
func (o setOpener) open(path string) (*imgset.Set, *archive.Archive, error) {
	if !archive.IsArchive(path) {
		set, err := openSet(path, o.keys)
		return set, nil, err
	}
	ar, err := openArchive(path, o.keys)
	if err != nil {
		return nil, nil, err
	}
	// The set inside is plaintext; an encrypted archive is what encryption means.
	set, err := ar.Set(imgset.OpenOptions{RequireEncrypted: o.keys.RequireEncrypted && !ar.Encrypted()})
	if err != nil {
		ar.Close()
		return nil, nil, err
	}
	return set, ar, nil
}

// openArchive opens the container checkpoint archive at path for reading: an
// encrypted one with the keys given (or the default key), decrypted in memory; a
// plain one is refused when a key implies that encryption is expected, as a
// plain set is, and with --expect-set-id.
func openArchive(path string, keys keyOptions) (*archive.Archive, error) {
	var opts archive.Options
	if archive.IsSealed(path) { // an encrypted archive: decrypted in memory
		ids, err := identitiesOrDefault(keys.KeyFiles)
		if err != nil {
			return nil, err
		}
		opts.Identities = ids
	}
	ar, err := archive.Open(path, opts)
	if err != nil {
		return nil, explainOpenError(path, opts.Identities, err)
	}
	switch {
	case !ar.Encrypted() && keys.RequireEncrypted:
		err = fmt.Errorf("archive %s: %w (--%s)", path, imgset.ErrNotEncrypted, flagRequireEncrypted)
	case !ar.Encrypted() && keys.requireEncrypted():
		err = fmt.Errorf("archive %s: %w: a key was given (--%s, or %s), so an encrypted archive is expected; --%s to read it anyway",
			path, imgset.ErrNotEncrypted, flagTLSKey, defaultKeyPath, flagAllowPlaintext)
	default:
		err = keys.checkSetID(path, ar.Header())
	}
	if err != nil {
		ar.Close()
		return nil, err
	}
	return ar, nil
}

// closeArchive closes the archive a set was opened from, if any.
func closeArchive(ar *archive.Archive) {
	if ar != nil {
		ar.Close()
	}
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

// check refuses mem options given to another view, and a mem view without a pattern.
func (m memOptions) check(view string) error {
	given := m.PID != 0 || m.Search != "" || m.SearchRegex != ""
	if view != "mem" {
		if given {
			return fmt.Errorf("x %s: --pid, --search and --search-regex are options of the mem view", view)
		}
		return nil
	}
	switch {
	case (m.Search == "") == (m.SearchRegex == ""):
		return errors.New("x mem: need one of --search TEXT or --search-regex RE")
	case m.Context < 0 || m.Context > explore.MaxSearchContext:
		return fmt.Errorf("x mem: --context %d: want 0 to %d", m.Context, explore.MaxSearchContext)
	case len(m.Search) > explore.MaxPattern:
		return fmt.Errorf("x mem: --search of %d bytes, more than %d", len(m.Search), explore.MaxPattern)
	case m.Max <= 0:
		return fmt.Errorf("x mem: --max-matches %d: want at least 1", m.Max)
	case m.PID < 0:
		return fmt.Errorf("x mem: --pid %d: want a PID", m.PID)
	}
	if m.SearchRegex != "" {
		if _, err := regexp.Compile(m.SearchRegex); err != nil {
			return fmt.Errorf("x mem: --search-regex: %w", err)
		}
	}
	return nil
}

// memMatch is a match as x mem --json prints it: the bytes as hex and as text.
type memMatch struct {
	PID         int          `json:"pid"`
	Addr        explore.Addr `json:"addr"`
	Length      int          `json:"length"`
	Mapping     string       `json:"mapping"`
	Perm        string       `json:"perm"`
	ContextAddr explore.Addr `json:"context_addr"`
	Before      string       `json:"before_hex"`
	Match       string       `json:"match_hex"`
	After       string       `json:"after_hex"`
	Text        string       `json:"text"` // before, match and after, non-printable bytes as "."
}

func printMem(set *imgset.Set, opts xOptions) error {
	so := explore.SearchOptions{PID: opts.Mem.PID, Literal: []byte(opts.Mem.Search), Context: opts.Mem.Context, Max: opts.Mem.Max}
	if opts.Mem.SearchRegex != "" {
		so.Literal = nil
		so.Regexp = regexp.MustCompile(opts.Mem.SearchRegex) // checked by memOptions.check
	}
	res, err := explore.SearchMemory(set, so)
	if err != nil {
		return err
	}
	if opts.JSON {
		out := struct {
			Matches   []memMatch `json:"matches"`
			Truncated bool       `json:"truncated"`
			Searched  uint64     `json:"searched_bytes"`
		}{Matches: []memMatch{}, Truncated: res.Truncated, Searched: res.Searched}
		for _, m := range res.Matches {
			all := slices.Concat(m.Before, m.Match, m.After)
			out.Matches = append(out.Matches, memMatch{PID: m.PID, Addr: m.Addr, Length: m.Length, Mapping: m.Mapping,
				Perm: m.Perm, ContextAddr: m.ContextAddr, Before: hex.EncodeToString(m.Before),
				Match: hex.EncodeToString(m.Match), After: hex.EncodeToString(m.After), Text: printable(all)})
		}
		return writeJSON(opts.Out, out)
	}
	var b strings.Builder
	for _, m := range res.Matches {
		fmt.Fprintf(&b, "pid %d  %s  %s %s  %d bytes\n", m.PID, m.Addr, m.Perm, m.Mapping, m.Length)
		hexDump(&b, uint64(m.ContextAddr), slices.Concat(m.Before, m.Match, m.After))
	}
	fmt.Fprintf(&b, "%d match(es) in %s of saved memory", len(res.Matches), size(res.Searched))
	if res.Truncated {
		fmt.Fprintf(&b, " (stopped at %d: --max-matches)", len(res.Matches))
	}
	b.WriteByte('\n')
	_, err = io.WriteString(opts.Out, b.String())
	return err
}

// hexDump writes data, which starts at addr, 16 bytes a line: address, hex, text.
func hexDump(b *strings.Builder, addr uint64, data []byte) {
	for len(data) > 0 {
		n := min(16, len(data))
		fmt.Fprintf(b, "  %016x  ", addr)
		for i := range 16 {
			if i < n {
				fmt.Fprintf(b, "%02x ", data[i])
			} else {
				b.WriteString("   ")
			}
			if i == 7 {
				b.WriteByte(' ')
			}
		}
		fmt.Fprintf(b, " |%s|\n", printable(data[:n]))
		addr += uint64(n)
		data = data[n:]
	}
}

// printable shows bytes as ASCII, others as ".".
func printable(data []byte) string {
	out := make([]byte, len(data))
	for i, c := range data {
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		out[i] = c
	}
	return string(out)
}
