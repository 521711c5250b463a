package imgtool

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/explore"
	"github.com/imgtool/imgtool/imgset"
)

const fixtureDir = "../fixtures/criu-4.2"

// runApp runs imgtool with args in-process and returns its stdout, stderr and error.
func runApp(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := NewApp()
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.RunContext(context.Background(), append([]string{"imgtool"}, args...))
	return out.String(), errOut.String(), err
}

func fixtureSetNames(t *testing.T) []string {
	t.Helper()
	crits, err := filepath.Glob(filepath.Join(fixtureDir, "*.crit"))
	if err != nil || len(crits) == 0 {
		t.Fatalf("no fixture sets: %v", err)
	}
	var out []string
	for _, c := range crits {
		out = append(out, strings.TrimSuffix(filepath.Base(c), ".crit"))
	}
	return out
}

func openFixtureSet(t *testing.T, name string) *imgset.Set {
	t.Helper()
	s, err := imgset.Open(filepath.Join(fixtureDir, name), imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tableRows splits a table into rows of cells (columns are two or more spaces apart).
func tableRows(out string) [][]string {
	var rows [][]string
	for _, ln := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		var cells []string
		for _, c := range strings.Split(ln, "  ") {
			if c = strings.TrimSpace(c); c != "" {
				cells = append(cells, c)
			}
		}
		rows = append(rows, cells)
	}
	return rows
}

// jsonEqual checks that the command's JSON decodes to what the explore model gives.
func jsonEqual[T any](t *testing.T, out string, want T) {
	t.Helper()
	var got T
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out)
	}
	// Compare through JSON again: unexported fields of the model do not travel.
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(want)
	if !bytes.Equal(a, b) {
		t.Errorf("JSON differs from the model:\n%s\n---\n%s", a, b)
	}
}

func TestXPS(t *testing.T) {
	for _, name := range fixtureSetNames(t) {
		dir := filepath.Join(fixtureDir, name)
		procs, err := explore.PS(openFixtureSet(t, name))
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := runApp(t, "x", dir, "ps")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rows := tableRows(out)
		if strings.Join(rows[0], " ") != "PID PPID PGID SID THREADS COMM" || len(rows) != len(procs)+1 {
			t.Fatalf("%s: table\n%s", name, out)
		}
		for i, p := range procs {
			want := []string{itoa(p.PID), itoa(p.PPID), itoa(p.PGID), itoa(p.SID), itoa(len(p.Threads)), p.Comm}
			if !reflect.DeepEqual(rows[i+1], want) {
				t.Errorf("%s row %d: %q, want %q", name, i, rows[i+1], want)
			}
			if p.Depth > 0 && !strings.Contains(out, "    "+p.Comm) {
				t.Errorf("%s: child %d not indented", name, p.PID)
			}
		}
		out, _, err = runApp(t, "x", "--json", dir, "ps")
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, out, struct {
			Processes []explore.Process `json:"processes"`
		}{procs})
	}
}

func TestXFDs(t *testing.T) {
	for _, name := range fixtureSetNames(t) {
		dir := filepath.Join(fixtureDir, name)
		procs, err := explore.FDs(openFixtureSet(t, name))
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := runApp(t, "x", dir, "fds")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rows := tableRows(out)
		n := 1
		for _, p := range procs {
			for _, fd := range p.FDs {
				r := rows[n]
				if r[0] != itoa(p.PID) || r[1] != itoa(fd.FD) || r[2] != fd.Type || !strings.HasPrefix(r[3], fd.Name) {
					t.Errorf("%s: row %q for fd %+v", name, r, fd)
				}
				n++
			}
			if rows[n][3] != p.Cwd || rows[n+1][3] != p.Root {
				t.Errorf("%s: cwd/root rows %q %q", name, rows[n], rows[n+1])
			}
			n += 2
		}
		if n != len(rows) {
			t.Errorf("%s: %d rows, expected %d", name, len(rows), n)
		}
		out, _, err = runApp(t, "x", "--json", dir, "fds")
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, out, struct {
			Processes []explore.ProcessFDs `json:"processes"`
		}{procs})
	}
}

func TestXMems(t *testing.T) {
	for _, name := range fixtureSetNames(t) {
		dir := filepath.Join(fixtureDir, name)
		procs, err := explore.Mems(openFixtureSet(t, name))
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := runApp(t, "x", dir, "mems")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rows := tableRows(out)
		n := 1
		for _, p := range procs {
			if rows[n][1] != "exe" || rows[n][2] != p.Exe {
				t.Errorf("%s: exe row %q", name, rows[n])
			}
			n++
			for _, v := range p.VMAs {
				want := []string{itoa(p.PID), v.Start.String(), v.End.String(), v.PermString(), itoa(v.Pages), backing(v)}
				if !reflect.DeepEqual(rows[n], want) {
					t.Errorf("%s: row %q, want %q", name, rows[n], want)
				}
				n++
			}
		}
		out, _, err = runApp(t, "x", "--json", dir, "mems")
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, out, struct {
			Processes []explore.ProcessVMAs `json:"processes"`
		}{procs})
	}
}

func TestXRSS(t *testing.T) {
	for _, name := range fixtureSetNames(t) {
		dir := filepath.Join(fixtureDir, name)
		procs, err := explore.RSS(openFixtureSet(t, name))
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := runApp(t, "x", dir, "rss")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rows := tableRows(out)
		n := 1
		for _, p := range procs {
			for _, v := range p.VMAs {
				r := rows[n]
				if r[1] != v.Start.String() || r[4] != itoa(v.Resident) || r[len(r)-1] != ranges(v.Ranges) {
					t.Errorf("%s: row %q for %s resident %d", name, r, v.Start, v.Resident)
				}
				n++
			}
			if r := rows[n]; r[1] != "total" || r[2] != itoa(p.Resident) {
				t.Errorf("%s: total row %q, want %d", name, r, p.Resident)
			}
			n++
		}
		out, _, err = runApp(t, "x", "--json", dir, "rss")
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, out, struct {
			Processes []explore.ProcessRSS `json:"processes"`
		}{procs})
	}
}

func TestXSockets(t *testing.T) {
	for _, name := range fixtureSetNames(t) {
		dir := filepath.Join(fixtureDir, name)
		socks, err := explore.Sockets(openFixtureSet(t, name))
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := runApp(t, "x", dir, "sk")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(socks) == 0 {
			if out != "no sockets\n" {
				t.Errorf("%s: %q", name, out)
			}
		} else {
			rows := tableRows(out)
			if len(rows) != len(socks)+1 {
				t.Fatalf("%s: table\n%s", name, out)
			}
			for i, s := range socks {
				r := rows[i+1]
				if r[0] != itoa(s.ID) || r[1] != itoa(s.Ino) || r[4] != dash(s.State) || r[5] != dash(s.Local) {
					t.Errorf("%s: row %q for %+v", name, r, s)
				}
			}
		}
		out, _, err = runApp(t, "x", dir, "sk", "--json")
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, out, struct {
			Sockets []explore.Socket `json:"sockets"`
		}{socks})
	}
}

// brokenSet copies the tree set, then lets edit spoil it.
func brokenSet(t *testing.T, edit func(dir string)) string {
	t.Helper()
	src := filepath.Join(fixtureDir, "tree")
	dir := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	edit(dir)
	return dir
}

func TestXErrors(t *testing.T) {
	noPstree := brokenSet(t, func(dir string) {
		if err := os.Remove(filepath.Join(dir, "pstree.img")); err != nil {
			t.Fatal(err)
		}
	})
	foreign := brokenSet(t, func(dir string) {
		if err := os.Rename(filepath.Join(dir, "fdinfo-2.img"), filepath.Join(dir, "core-16199.img")); err != nil {
			t.Fatal(err)
		}
	})
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"x", filepath.Join(t.TempDir(), "nope"), "ps"}, ExitError, "no such file or directory"},
		{[]string{"x", noPstree, "ps"}, ExitError, "pstree.img: missing"},
		{[]string{"x", noPstree, "fds", "--json"}, ExitError, "pstree.img: missing"},
		{[]string{"x", foreign, "ps"}, ExitError, "core-16199.img: not a CORE image (magic FDINFO)"},
		{[]string{"x", foreign, "fds"}, ExitError, "fdinfo-2.img: missing"},
		{[]string{"inspect", filepath.Join(t.TempDir(), "nope")}, ExitError, "no such file or directory"},
		{[]string{"inspect", noPstree}, ExitError, "pstree.img: missing"},
		{[]string{"inspect", foreign}, ExitError, "core-16199.img: not a CORE image (magic FDINFO)"},
		{[]string{"x", fixtureDir + "/tree"}, ExitUsage, "need DIR and one of"},
		{[]string{"x", fixtureDir + "/tree", "pstree"}, ExitUsage, `unknown view "pstree"`},
		{[]string{"x", "--bogus", fixtureDir + "/tree", "ps"}, ExitUsage, "bogus"},
		{[]string{"inspect"}, ExitUsage, "need exactly one image set folder"},
	}
	for _, c := range cases {
		out, _, err := runApp(t, c.args...)
		if err == nil || ExitCode(err) != c.code || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v: error %v (exit %d), want exit %d and %q", c.args, err, ExitCode(err), c.code, c.msg)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error spans lines: %q", c.args, err)
		}
		if c.code == ExitError && out != "" {
			t.Errorf("%v: printed %q before failing", c.args, out)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"x", "inspect"} {
		out, _, err := runApp(t, cmd, "--help")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Examples:", "Exit codes:", "imgtool " + cmd + " ", "--json"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s --help lacks %q:\n%s", cmd, want, out)
			}
		}
	}
}
