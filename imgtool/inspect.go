package imgtool

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/explore"
	"github.com/imgtool/imgtool/imgset"
)

// inspectOptions are the options of imgtool inspect.
type inspectOptions struct {
	JSON bool      // print JSON instead of tables
	Env  bool      // show each process's environment (from its pages)
	Set  setOpener // how to open the set
	Out  io.Writer
}

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "summarize an image set: processes, threads, memory, files, encryption",
		ArgsUsage: "DIR|ARCHIVE   (or -D DIR)",
		Description: `Prints a summary of the image set in DIR: its processes and threads, the memory
its pagemaps describe (pages and bytes, and how much of it the set's pages files
hold), its files and their size by image type, and whether it is encrypted and
for whom. Every image's magic is checked against its file name; pages files are
sized, never read. --json prints the same as JSON, for scripts.

A container checkpoint archive (podman container checkpoint --export, CRI-O's,
the kubelet's: a tar, plain, gzip or zstd, told by content) is shown as
checkpointctl show and inspect show it: the container (name, id, image, runtime,
engine, creation and checkpoint times), the sizes of the checkpoint and of the
rootfs diff, CRIU's dump statistics, the summary of its image set, the process
tree with each process's command line (read from its saved pages), its files,
sockets and mounts. Nothing is unpacked to disk.

--env adds each process's environment, read from its saved pages (the
environment area of its stack), also for an image set. It shows secrets passed
as environment variables: mind where the output goes.

Examples:
   imgtool inspect fixtures/criu-4.2/misc
   imgtool inspect --json fixtures/criu-4.2/tree | jq .memory.bytes
   imgtool inspect fixtures/podman/ctr1b.tar
   imgtool inspect --env --json fixtures/podman/ctr1b.tar | jq '.processes[0].env'

A damaged set (inventory.img missing, a pages file missing or shorter than its
pagemaps say) is summarized, each problem on a last line "DAMAGED: FILE: ...",
and inspect exits 1.

Exit codes: 0 success, 1 the set cannot be read (a missing or foreign file is named)
or is damaged, 2 wrong command line.`,
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of tables"},
			&cli.BoolFlag{Name: "env", Usage: "show each process's environment, read from its saved pages"},
			imagesDirFlag(), // -D DIR is the same as DIR (app.go)
		}, setOpenFlags()...),
		Action: func(c *cli.Context) error {
			opts := inspectOptions{JSON: c.Bool("json"), Env: c.Bool("env"), Set: setOpenerFrom(c), Out: c.App.Writer}
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
	set, ar, err := opts.Set.open(args[0])
	if err != nil {
		return err
	}
	defer closeArchive(ar)
	if ar != nil {
		return inspectArchive(opts, args[0], ar, set)
	}
	sum, err := explore.Inspect(set)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", args[0], err)
	}
	if opts.Env {
		return inspectWithEnv(opts, args[0], set, sum)
	}
	if opts.JSON {
		err = writeJSON(opts.Out, sum)
	} else {
		var recipients []string
		if h := set.Header(); h != nil {
			recipients = stanzaRecipientLines(h.Stanzas, nil)
		}
		err = printSummary(opts.Out, args[0], sum, recipients)
		if err == nil && ar == nil {
			err = printSigner(opts.Out, args[0], opts.Set.keys)
		}
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

// archiveReport is what inspect prints of a container checkpoint archive.
type archiveReport struct {
	Archive   string `json:"archive"`
	Encrypted bool   `json:"encrypted"`
	// Recipients are an encrypted archive's, as every command prints them.
	Recipients  []string             `json:"recipients,omitempty"`
	Compression archive.Compression  `json:"compression"`
	Container   *archive.Info        `json:"container"`
	Set         *explore.Summary     `json:"set"`
	Processes   []explore.Args       `json:"processes"`
	Files       []explore.ProcessFDs `json:"files"`
	Sockets     []explore.Socket     `json:"sockets"`
	Mounts      []explore.Mount      `json:"mounts"`
}

// inspectArchive prints a container checkpoint archive: the container, then its
// image set.
func inspectArchive(opts inspectOptions, name string, ar *archive.Archive, set *imgset.Set) error {
	fail := func(err error) error { return fmt.Errorf("inspect %s: %w", name, err) }
	r := archiveReport{Archive: name, Compression: ar.Compression()}
	if h := ar.Header(); h != nil {
		r.Encrypted, r.Recipients = true, stanzaRecipientLines(h.Stanzas, nil)
	}
	var err error
	if r.Container, err = ar.Info(); err != nil {
		return err
	}
	if r.Set, err = explore.Inspect(set); err != nil {
		return fail(err)
	}
	if r.Processes, err = explore.ProcessArgs(set, opts.Env); err != nil {
		return fail(err)
	}
	if r.Files, err = explore.FDs(set); err != nil {
		return fail(err)
	}
	if r.Sockets, err = explore.Sockets(set); err != nil {
		return fail(err)
	}
	if r.Mounts, err = explore.Mounts(set); err != nil {
		return fail(err)
	}
	if opts.JSON {
		err = writeJSON(opts.Out, r)
	} else {
		err = printArchive(opts.Out, r)
	}
	if err != nil {
		return err
	}
	return damagedError(name, r.Set.Problems)
}

// inspectWithEnv prints a set's summary and its processes with their command
// lines and environments.
func inspectWithEnv(opts inspectOptions, name string, set *imgset.Set, sum *explore.Summary) error {
	procs, err := explore.ProcessArgs(set, true)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", name, err)
	}
	if opts.JSON {
		err = writeJSON(opts.Out, struct {
			*explore.Summary
			Processes []explore.Args `json:"process_list"`
		}{sum, procs})
	} else {
		var recipients []string
		if h := set.Header(); h != nil {
			recipients = stanzaRecipientLines(h.Stanzas, nil)
		}
		if err = printSummary(opts.Out, name, sum, recipients); err == nil {
			err = printProcesses(opts.Out, procs)
		}
	}
	if err != nil {
		return err
	}
	return damagedError(name, sum.Problems)
}

// when prints a time, or "-" when it is unknown.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func printArchive(w io.Writer, r archiveReport) error {
	c := r.Container
	id := c.ID
	if len(id) > 12 {
		id = id[:12]
	}
	checkpointed := when(c.Checkpointed)
	if c.CheckpointedFrom != "" && c.CheckpointedFrom != archive.ConfigDump {
		checkpointed += " (" + c.CheckpointedFrom + ")"
	}
	enc := "no"
	if len(r.Recipients) > 0 {
		enc = "yes, for " + strings.Join(r.Recipients, "; ")
	}
	rows := [][]string{
		{"archive", r.Archive + " (" + string(r.Compression) + ")"},
		{"encrypted", enc},
		{"container", dash(c.Name)},
		{"id", dash(id)},
		{"image", dash(c.Image)},
		{"runtime", dash(c.Runtime)},
		{"engine", dash(c.Engine)},
	}
	if c.Namespace != "" || c.Pod != "" {
		rows = append(rows, []string{"pod", c.Namespace + "/" + c.Pod})
	}
	if c.IP != "" {
		rows = append(rows, []string{"ip", c.IP})
	}
	rows = append(rows,
		[]string{"created", when(c.Created)},
		[]string{"checkpointed", checkpointed},
		[]string{"checkpoint size", size(uint64(c.CheckpointSize)) + ", pages " + size(uint64(c.PagesSize))},
		[]string{"rootfs diff size", size(uint64(c.RootfsDiffSize))},
		[]string{"command", dash(strings.Join(c.Command, " "))})
	if s := c.Stats; s != nil {
		rows = append(rows, []string{"dump statistics", fmt.Sprintf("freezing %s, frozen %s, memdump %s, memwrite %s, pages scanned %d, written %d",
			micro(s.FreezingTime), micro(s.FrozenTime), micro(s.MemdumpTime), micro(s.MemwriteTime), s.PagesScanned, s.PagesWritten)})
	}
	for _, p := range c.Problems {
		rows = append(rows, []string{"unreadable", p})
	}
	if err := writeTable(w, nil, rows); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if err := printSummary(w, r.Archive+":"+archive.CheckpointDir, r.Set, nil); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if err := printProcesses(w, r.Processes); err != nil {
		return err
	}
	fmt.Fprintln(w)
	var frows [][]string
	for _, p := range r.Files {
		pid := itoa(p.PID)
		for _, fd := range p.FDs {
			name := fd.Name
			if fd.Path != "" && fd.Path != fd.Name {
				name += " (" + fd.Path + ")"
			}
			frows = append(frows, []string{pid, itoa(fd.FD), fd.Type, name})
		}
		frows = append(frows, []string{pid, "cwd", "DIR", p.Cwd}, []string{pid, "root", "DIR", p.Root})
	}
	if err := writeTable(w, []string{"PID", "FD", "TYPE", "FILE"}, frows); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(r.Sockets) == 0 {
		fmt.Fprintln(w, "no sockets")
	} else {
		var srows [][]string
		for _, s := range r.Sockets {
			var owners []string
			for _, o := range s.Owners {
				owners = append(owners, fmt.Sprintf("%d:%d", o.PID, o.FD))
			}
			srows = append(srows, []string{dash(strings.Join(owners, " ")), s.Family, dash(s.Type), dash(s.State), dash(s.Local), dash(s.Remote)})
		}
		if err := writeTable(w, []string{"PID:FD", "FAMILY", "TYPE", "STATE", "LOCAL", "REMOTE"}, srows); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	var mrows [][]string
	for _, m := range r.Mounts {
		mrows = append(mrows, []string{itoa(m.ID), itoa(m.Parent), m.FSType, dash(m.Source), m.Mountpoint, dash(m.Root)})
	}
	return writeTable(w, []string{"MNT_ID", "PARENT", "FSTYPE", "SOURCE", "MOUNTPOINT", "ROOT"}, mrows)
}

// micro renders microseconds.
func micro(us uint32) string {
	return (time.Duration(us) * time.Microsecond).String()
}

// printProcesses prints the process tree with command lines, and each process's
// environment under it when it was read.
func printProcesses(w io.Writer, procs []explore.Args) error {
	var rows [][]string
	for _, p := range procs {
		cmd := strings.Join(p.Cmdline, " ")
		if p.Problem != "" {
			cmd += " (" + p.Problem + ")"
		}
		rows = append(rows, []string{itoa(p.PID), itoa(p.PPID), strings.Repeat("    ", p.Depth) + p.Comm, dash(cmd)})
		for _, e := range p.Env {
			rows = append(rows, []string{"", "", "", "    " + e})
		}
	}
	return writeTable(w, []string{"PID", "PPID", "COMM", "COMMAND"}, rows)
}
