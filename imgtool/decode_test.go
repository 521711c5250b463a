package imgtool

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/image"
)

// runWithStdin runs imgtool in-process with stdin and returns stdout, stderr and the
// error (whose ExitCode is the exit status).
func runWithStdin(t *testing.T, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := NewApp()
	app.Reader = bytes.NewReader(stdin)
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.RunContext(context.Background(), append([]string{"imgtool"}, args...))
	return out.String(), errOut.String(), err
}

// critImage is one protobuf image of the fixture sets and the stem of its goldens.
type critImage struct{ path, golden string }

func critImages(t *testing.T) []critImage {
	t.Helper()
	var out []critImage
	for _, set := range fixtureSetNames(t) {
		files, err := os.ReadDir(filepath.Join(fixtureDir, set))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if k := image.KindByFileName(f.Name()); k == nil || k.Raw {
				continue
			}
			out = append(out, critImage{
				path:   filepath.Join(fixtureDir, set, f.Name()),
				golden: filepath.Join(fixtureDir, set+".crit", f.Name()),
			})
		}
	}
	if len(out) == 0 {
		t.Fatal("no fixture images")
	}
	return out
}

func TestDecodeGoldens(t *testing.T) {
	for _, img := range critImages(t) {
		for _, c := range []struct {
			suffix string
			flags  []string
		}{{".json", nil}, {".pretty.json", []string{"--pretty"}}} {
			want, err := os.ReadFile(img.golden + c.suffix)
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := runWithStdin(t, nil, append([]string{"decode", "-i", img.path}, c.flags...)...)
			if err != nil {
				t.Errorf("decode %s: %v", img.path, err)
				continue
			}
			if out != string(want) {
				t.Errorf("decode %s %v differs from crit", img.path, c.flags)
			}
		}
	}
}

func TestDecodeStdinAndFile(t *testing.T) {
	img := critImages(t)[0]
	data, err := os.ReadFile(img.path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(img.golden + ".pretty.json")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := runWithStdin(t, data, "decode", "--pretty")
	if err != nil || out != string(want) {
		t.Errorf("decode from stdin: %v\n%s", err, out)
	}
	// As crit: a file written with -o has no newline after the JSON.
	dst := filepath.Join(t.TempDir(), "out.json")
	if _, _, err := runWithStdin(t, nil, "decode", "-i", img.path, "-o", dst, "--pretty"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if string(got)+"\n" != string(want) {
		t.Errorf("decode -o wrote\n%s", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.img")
	pstree, err := os.ReadFile(filepath.Join(fixtureDir, "tree", "pstree.img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, pstree[:len(pstree)-3], 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "out.json")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"decode", "-i", bad, "-o", dst}, ExitError, "bad.img: offset"},
		{[]string{"decode", "-i", filepath.Join(fixtureDir, "counter", "pages-1.img"), "-o", dst}, ExitError, "raw PAGES image"},
		{[]string{"decode", "-i", filepath.Join(dir, "missing.img")}, ExitError, "no such file"},
		{[]string{"decode", filepath.Join(dir, "no-set")}, ExitError, "no-set: no such file"}, // an argument is the set (-D)
		{[]string{"decode", fixtureDir + "/tree", "extra-arg", "-o", dst}, ExitUsage, "unexpected argument"},
		{[]string{"decode", "--bogus"}, ExitUsage, "bogus"},
	} {
		_, _, err := runWithStdin(t, nil, c.args...)
		if ExitCode(err) != c.code || err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v: exit %d, %v; want exit %d and %q", c.args, ExitCode(err), err, c.code, c.msg)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error is not one line: %q", c.args, err)
		}
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Errorf("a failed decode left %s behind", dst)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestCommandsHelp(t *testing.T) {
	for _, cmd := range []string{"decode", "encode", "info", "show"} {
		out, _, err := runWithStdin(t, nil, cmd, "--help")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Examples:", "Exit codes:", "imgtool " + cmd + " "} {
			if !strings.Contains(out, want) {
				t.Errorf("%s --help lacks %q:\n%s", cmd, want, out)
			}
		}
	}
}

// TestDecodeWholeSet decodes each fixture set in one run (-D) and checks every file
// against crit's golden, which crit printed to stdout (so with the final newline
// that a file written with -o leaves out).
func TestDecodeWholeSet(t *testing.T) {
	for _, set := range fixtureSetNames(t) {
		out := filepath.Join(t.TempDir(), set)
		if _, _, err := runWithStdin(t, nil, "decode", "-D", filepath.Join(fixtureDir, set), "-o", out, "--pretty"); err != nil {
			t.Fatalf("decode -D %s: %v", set, err)
		}
		n := 0
		for _, img := range critImages(t) {
			if filepath.Base(filepath.Dir(img.path)) != set {
				continue
			}
			n++
			got, err := os.ReadFile(filepath.Join(out, filepath.Base(img.path)+".json"))
			if err != nil {
				t.Errorf("decode -D %s: %v", set, err)
				continue
			}
			want, err := os.ReadFile(img.golden + ".pretty.json")
			if err != nil {
				t.Fatal(err)
			}
			if string(got)+"\n" != string(want) {
				t.Errorf("decode -D %s: %s differs from crit", set, filepath.Base(img.path))
			}
		}
		if files, _ := os.ReadDir(out); len(files) != n {
			t.Errorf("decode -D %s wrote %d files for %d images", set, len(files), n)
		}
	}
	if _, _, err := runWithStdin(t, nil, "decode", "-D", filepath.Join(fixtureDir, "counter")); ExitCode(err) != ExitUsage {
		t.Errorf("decode -D without -o: exit %d (%v), want %d", ExitCode(err), err, ExitUsage)
	}
}

func TestUnknownCommand(t *testing.T) {
	_, _, err := runWithStdin(t, nil, "bogus")
	if ExitCode(err) != ExitUsage || err == nil || !strings.Contains(err.Error(), `unknown command "bogus"`) {
		t.Errorf("imgtool bogus: exit %d, %v; want a usage error naming the command", ExitCode(err), err)
	}
	out, _, err := runWithStdin(t, nil)
	if err != nil || !strings.Contains(out, "COMMANDS:") {
		t.Errorf("imgtool without a command: %v, %q; want the help", err, out)
	}
}

// TestUndefinedFlagIsUsageError: every command answers a flag it does not define with
// exit 2 and a one-line error, not urfave/cli's "Incorrect Usage" and its help on
// stdout (restore once exited 1 that way).
func TestUndefinedFlagIsUsageError(t *testing.T) {
	for _, cmd := range NewApp().Commands {
		out, _, err := runWithStdin(t, nil, cmd.Name, "--no-such-flag")
		if ExitCode(err) != ExitUsage || out != "" {
			t.Errorf("%s --no-such-flag: exit %d (%v), stdout %q; want exit %d and nothing on stdout",
				cmd.Name, ExitCode(err), err, out, ExitUsage)
		}
	}
}

// TestHelpExamplesRun runs every example of the commands' --help that reads only the
// bundled fixtures and writes nothing (no -o): each must succeed.
func TestHelpExamplesRun(t *testing.T) {
	readOnly := map[string]bool{"decode": true, "info": true, "show": true, "x": true, "inspect": true}
	ran := 0
	for _, cmd := range NewApp().Commands {
		_, examples, _ := strings.Cut(cmd.Description, "Examples:")
		examples, _, _ = strings.Cut(examples, "Exit codes:")
		for line := range strings.Lines(examples) {
			line, _, _ = strings.Cut(strings.TrimSpace(line), "|") // the imgtool part of a pipeline
			fields := strings.Fields(line)
			if len(fields) < 2 || fields[0] != "imgtool" || fields[1] != cmd.Name || !readOnly[cmd.Name] ||
				!strings.Contains(line, "fixtures/") || slices.Contains(fields, "-o") {
				continue
			}
			args := fields[1:]
			for i, a := range args {
				if rest, ok := strings.CutPrefix(a, "fixtures/"); ok {
					args[i] = "../fixtures/" + rest
				}
			}
			ran++
			if _, _, err := runWithStdin(t, nil, args...); err != nil {
				t.Errorf("%s --help example %q: %v", cmd.Name, line, err)
			}
		}
	}
	if ran == 0 {
		t.Fatal("no example ran")
	}
}

// TestRequireEncryptedRefusesStdin: --require-encrypted cannot be honoured for an image
// read from stdin (no set, no sealed header), so it must refuse, not read plaintext.
func TestRequireEncryptedRefusesStdin(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(fixtureDir, "counter", "pstree.img"))
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"decode", "--require-encrypted"},
		{"decode", "-i", "-", "--require-encrypted"},
		{"show", "-", "--require-encrypted"},
		{"info", "-", "--require-encrypted"},
	} {
		out, _, err := runWithStdin(t, data, args...)
		if err == nil || out != "" {
			t.Errorf("%v with a plain image on stdin: %v, stdout %q; want a refusal", args, err, out)
		}
	}
}

// TestArgumentNamedHelp: a set or image whose path is "h" or "help" is an argument
// like any other, not urfave/cli's per-command help subcommand (which printed the
// help and exited 0 for "imgtool info help", and failed "imgtool x h ps").
func TestArgumentNamedHelp(t *testing.T) {
	src := filepath.Join(fixtureDirAbs(t), "counter")
	t.Chdir(t.TempDir())
	for _, name := range []string{"h", "help"} {
		if err := os.CopyFS(name, os.DirFS(src)); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"x", "h", "ps"}, {"x", "help", "ps"}, {"inspect", "h"}, {"inspect", "help"},
	} {
		out, _, err := runWithStdin(t, nil, args...)
		if err != nil || !strings.Contains(out, "15654") {
			t.Errorf("%v: %v, %q; want the set's contents", args, err, out)
		}
	}
	pstree, err := os.ReadFile(filepath.Join(src, "pstree.img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("h.img", pstree, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename("h.img", filepath.Join("help", "h")); err != nil {
		t.Fatal(err)
	}
	t.Chdir("help")
	for _, args := range [][]string{{"info", "h"}, {"show", "h"}} {
		out, _, err := runWithStdin(t, nil, args...)
		if err != nil || !strings.Contains(out, `"PSTREE"`) {
			t.Errorf("%v: %v, %q; want the image", args, err, out)
		}
	}
}

// fixtureDirAbs is fixtureDir as an absolute path, for tests that change directory.
func fixtureDirAbs(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// TestOutputIsDirectory: -o naming a folder is refused before anything is read or
// written, with an error that names the folder, not the temporary file.
func TestOutputIsDirectory(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(fixtureDir, "counter", "pstree.img")
	_, _, err := runWithStdin(t, nil, "decode", "-i", img, "-o", dir)
	if err == nil || strings.Contains(err.Error(), ".tmp") || !strings.Contains(err.Error(), dir+": is a directory") {
		t.Errorf("decode -o FOLDER: %v; want an error naming the folder", err)
	}
	if left, _ := os.ReadDir(filepath.Dir(dir)); len(left) != 1 {
		t.Errorf("decode -o FOLDER left files beside it: %v", left)
	}
}

// TestDecodeWholeSetFailureLeavesNothing: a set with a damaged image fails as a whole,
// without a half-filled output folder.
func TestDecodeWholeSetFailureLeavesNothing(t *testing.T) {
	set := filepath.Join(t.TempDir(), "set")
	if err := os.Mkdir(set, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(fixtureDir, "counter")
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "pstree.img" {
			b = b[:len(b)-3] // truncated: the last image decoded fails
		}
		if err := os.WriteFile(filepath.Join(set, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	parent := t.TempDir()
	out := filepath.Join(parent, "json")
	if _, _, err := runWithStdin(t, nil, "decode", "-D", set, "-o", out); err == nil {
		t.Fatal("decode -D of a damaged set succeeded")
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("decode -D left %d entries behind after failing", len(left))
	}
}

// TestDecodeSetWithoutImages: decode -D of a folder without protobuf images (empty,
// or pages only) is an error that leaves no output, not an empty success; a file
// given as the set is a usage error.
func TestDecodeSetWithoutImages(t *testing.T) {
	empty := t.TempDir()
	pagesOnly := t.TempDir()
	pages, err := os.ReadFile(filepath.Join(fixtureDir, "counter", "pages-1.img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pagesOnly, "pages-1.img"), pages, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, set := range []string{empty, pagesOnly} {
		out := filepath.Join(t.TempDir(), "json")
		_, _, err := runWithStdin(t, nil, "decode", "-D", set, "-o", out)
		if ExitCode(err) != ExitError {
			t.Errorf("decode -D %s: exit %d, %v; want %d", set, ExitCode(err), err, ExitError)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("decode -D %s left %s: %v", set, out, err)
		}
	}
	file := filepath.Join(fixtureDir, "counter", "pstree.img")
	_, _, err = runWithStdin(t, nil, "decode", file, "-o", filepath.Join(t.TempDir(), "json"))
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "-i") {
		t.Errorf("decode FILE -o OUT: exit %d, %v; want a usage error pointing to -i", ExitCode(err), err)
	}
}

// TestDecodeSetHelpNamesItsFiles: the files decode -D writes are the ones its help
// names, NAME.img.json.
func TestDecodeSetHelpNamesItsFiles(t *testing.T) {
	help, _, err := runWithStdin(t, nil, "decode", "--help")
	if err != nil || !strings.Contains(help, "FOLDER/NAME.img.json") {
		t.Fatalf("decode --help does not name NAME.img.json: %v\n%s", err, help)
	}
	out := filepath.Join(t.TempDir(), "json")
	if _, _, err := runWithStdin(t, nil, "decode", filepath.Join(fixtureDir, "counter"), "-o", out); err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir(out)
	if err != nil || len(files) == 0 {
		t.Fatalf("decode SET -o OUT: %v, %d files", err, len(files))
	}
	for _, f := range files {
		if !strings.HasSuffix(f.Name(), ".img.json") && f.Name() != "stats-dump.json" {
			t.Errorf("decode -D wrote %s, which its help does not describe", f.Name())
		}
	}
}

// TestDecodeEncodeRemoveDeadTemps: decode -o FILE and encode -o FILE remove the
// temporary files that killed runs left beside FILE (unlocked: their writer is gone),
// saying so in one line, and leave a live run's (locked) alone.
func TestDecodeEncodeRemoveDeadTemps(t *testing.T) {
	img := critImages(t)[0]
	dir := t.TempDir()
	for _, c := range []struct {
		out  string
		args []string
	}{
		{"out.json", []string{"decode", "-i", img.path}},
		{"out.img", []string{"encode", "-i", img.golden + ".json"}},
	} {
		t.Run(c.args[0], func(t *testing.T) {
			dst := filepath.Join(dir, c.out)
			dead := filepath.Join(dir, "."+c.out+".123.tmp")
			if err := os.WriteFile(dead, []byte("partial"), 0o600); err != nil {
				t.Fatal(err)
			}
			live, err := createTempBeside(dst) // locked, as a running imgtool's
			if err != nil {
				t.Fatal(err)
			}
			defer os.Remove(live.Name())
			defer live.Close()
			_, errOut, err := runApp(t, append(c.args, "-o", dst)...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the dead run's %s is still there (%v)", dead, err)
			}
			if _, err := os.Stat(live.Name()); err != nil {
				t.Errorf("the live run's %s was removed: %v", live.Name(), err)
			}
			if want := "removed what interrupted earlier runs left beside " + dst + ": " + dead + "\n"; !strings.Contains(errOut, want) || strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr %q, want the one line %q", errOut, want)
			}
		})
	}
}
