package imgtool

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
)

// TestNormalizeArgs: flags (with their values) move ahead of the arguments, "--" ends
// the flags, and the set moves to where each command reads it.
func TestNormalizeArgs(t *testing.T) {
	cmds := map[string]bool{}
	for _, cmd := range NewApp().Commands {
		cmds[cmd.Name] = true
	}
	for name := range setFromArgument {
		if !cmds[name] {
			t.Errorf("setFromArgument names %q, not a command", name)
		}
	}
	for name := range setFromFlag {
		if !cmds[name] {
			t.Errorf("setFromFlag names %q, not a command", name)
		}
	}
	cases := []struct {
		cmd  string
		in   string
		want string
	}{
		{"verify", "SET --tls-key k", "--images-dir=SET --tls-key k"},
		{"verify", "--tls-key k SET", "--images-dir=SET --tls-key k"},
		{"verify", "-D SET --tls-key=k", "-D SET --tls-key=k"},
		{"verify", "SET --tls-key", "--images-dir=SET --tls-key"},
		{"restore", "SET -d --pidfile p", "--images-dir=SET -d --pidfile p"},
		{"rekey", "SET --rotate --cert c", "--images-dir=SET --rotate --cert c"},
		{"decode", "SET -o OUT --pretty", "--images-dir=SET -o OUT --pretty"},
		{"decode", "-i IMG --pretty", "-i IMG --pretty"},
		{"decode", "-o - -i -", "-o - -i -"},
		{"x", "SET ps --json", "--json SET ps"},
		{"x", "-D SET ps --json", "--json SET ps"},
		{"x", "ps -D=SET", "SET ps"},
		{"x", "--images-dir SET ps", "SET ps"},
		{"x", "-- SET ps", "-- SET ps"},
		{"x", "SET -- -ps --json", "-- SET -ps --json"},
		{"x", "-D -weird ps", "-- -weird ps"},
		{"inspect", "SET --json --tls-key k", "--json --tls-key k SET"},
		{"inspect", "SET --bogus", "--bogus SET"},
		{"show", "IMG --nopl", "--nopl IMG"},
		{"info", "-", "-"},
		{"x", "SET ps --help", "--help"},
		{"verify", "SET -h", "--help"},
		{"dump", "-D NEW -t 1 -e", "-D NEW -t 1 -e"},
	}
	app := NewApp()
	for _, c := range cases {
		got := normalizeArgs(app.Command(c.cmd), strings.Fields(c.in))
		if strings.Join(got, " ") != c.want {
			t.Errorf("%s %s: %q, want %q", c.cmd, c.in, got, c.want)
		}
		if again := normalizeArgs(app.Command(c.cmd), got); !slices.Equal(again, got) {
			t.Errorf("%s %s: normalized twice %q, once %q", c.cmd, c.in, again, got)
		}
	}
}

// TestSetByFlagOrArgument: each command that reads an existing set takes it as -D DIR
// or as DIR, with its flags before or after it.
func TestSetByFlagOrArgument(t *testing.T) {
	tree := filepath.Join(fixtureDir, "tree")
	for _, args := range [][]string{
		{"x", tree, "ps", "--json"}, {"x", "-D", tree, "ps"}, {"x", "ps", "-D", tree, "--json"},
		{"x", "--json", "--", tree, "ps"},
		{"inspect", tree}, {"inspect", "-D", tree, "--json"}, {"inspect", tree, "--json"},
	} {
		out, _, err := runApp(t, args...)
		if err != nil || !strings.Contains(out, "16197") {
			t.Errorf("%q: %v\n%s", args, err, out)
		}
	}
	for _, args := range [][]string{{"decode", tree, "-o"}, {"decode", "-o", "", "-D", tree}} {
		out := filepath.Join(t.TempDir(), "json")
		args = append(slices.Clone(args), out)
		if args[2] == "" { // -o's value goes last
			args = append([]string{"decode", "-D", tree, "-o", out}, "--pretty")
		}
		if _, _, err := runApp(t, args...); err != nil {
			t.Errorf("%q: %v", args, err)
		}
		if _, err := os.Stat(filepath.Join(out, "pstree.img.json")); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}

	set := copySet(t, tree)
	cert, key := keyPath("bob-p256.crt"), keyPath("bob-p256.key")
	steps := [][]string{
		{"encrypt", set, "-q", "--cert", cert},
		{"verify", set, "--tls-key", key},
		{"verify", "-q", "-D", set, "--tls-key", key},
		{"x", set, "ps", "--tls-key", key},
		{"inspect", set, "--tls-key", key, "--require-encrypted"},
		{"rekey", set, "--tls-key", key, "--cert", keyPath("alice-rsa2048.crt"), "-q"},
		{"decrypt", set, "--tls-key", key, "-q"},
		{"encrypt", "-D", set, "-q", "--cert", cert},
		{"decrypt", "--tls-key", key, "-q", "--", set},
	}
	for _, args := range steps {
		if _, _, err := runApp(t, args...); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
	}
	// restore needs root to go further; the set given either way is the one it opens.
	missing := filepath.Join(t.TempDir(), "no-such-set")
	for _, args := range [][]string{{"restore", missing}, {"restore", missing, "-d", "--tls-key", key}, {"restore", "-D", missing}} {
		_, _, err := runApp(t, args...)
		if ExitCode(err) != ExitError || !strings.Contains(err.Error(), "no-such-set") {
			t.Errorf("%q: exit %d, %v; want the set opened and not found", args, ExitCode(err), err)
		}
	}
}

// TestUnknownFlagAsTyped: a flag a command lacks is named with the command and as
// typed, before or after the arguments; so is a flag without its value.
func TestUnknownFlagAsTyped(t *testing.T) {
	img := filepath.Join(fixtureDir, "fifo", "fifo-data.img")
	tree := filepath.Join(fixtureDir, "tree")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"decode", "--nopl"}, "decode: unknown flag --nopl"},
		{[]string{"decode", "-nopl"}, "decode: unknown flag -nopl"},
		{[]string{"show", img, "--nopll=1"}, "show: unknown flag --nopll"},
		{[]string{"x", tree, "ps", "-Z"}, "x: unknown flag -Z"},
		{[]string{"verify", tree, "--tls-key"}, "verify: flag --tls-key needs a value"},
		{[]string{"dump", "-t", "x"}, `dump: invalid value "x" for flag -t: `},
		{[]string{"--bogus"}, "unknown flag --bogus"},
	}
	for _, c := range cases {
		out, _, err := runApp(t, c.args...)
		if ExitCode(err) != ExitUsage || !strings.HasPrefix(err.Error(), c.want) || out != "" {
			t.Errorf("%q: exit %d, %v, stdout %q; want exit %d and %q", c.args, ExitCode(err), err, out, ExitUsage, c.want)
		}
	}
}

// TestHelpEverywhere: "imgtool help CMD", "imgtool CMD --help" and -h print the same
// help, with or without arguments around the flag, and exit 0.
func TestHelpEverywhere(t *testing.T) {
	for _, cmd := range NewApp().Commands {
		want, _, err := runApp(t, cmd.Name, "--help")
		if err != nil || !strings.Contains(want, "imgtool "+cmd.Name+" - ") {
			t.Fatalf("%s --help: %v\n%s", cmd.Name, err, want)
		}
		for _, args := range [][]string{
			{"help", cmd.Name}, {cmd.Name, "-h"}, {cmd.Name, "SET", "--help"}, {cmd.Name, "--help", "SET"},
			{cmd.Name, "ARG", "-h", "--", "y"},
		} {
			out, _, err := runApp(t, args...)
			if err != nil || out != want {
				t.Errorf("%q: %v; want the output of %s --help\n%s", args, err, cmd.Name, out)
			}
		}
	}
	out, _, err := runApp(t, "help")
	if err != nil || !strings.Contains(out, "COMMANDS:") {
		t.Errorf("imgtool help: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"help", "bogus"}, {"help", "x", "ps"}} {
		if _, _, err := runApp(t, args...); ExitCode(err) != ExitUsage {
			t.Errorf("%q: exit %d, %v; want %d", args, ExitCode(err), err, ExitUsage)
		}
	}
}

func TestVersion(t *testing.T) {
	out, _, err := runApp(t, "--version")
	if err != nil || out != "imgtool version "+version(debug.ReadBuildInfo())+"\n" {
		t.Errorf("--version: %v, %q", err, out)
	}
	bi := func(v string, settings ...string) *debug.BuildInfo {
		b := &debug.BuildInfo{Main: debug.Module{Version: v}}
		for i := 0; i+1 < len(settings); i += 2 {
			b.Settings = append(b.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return b
	}
	cases := []struct {
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{nil, false, "devel"},
		{bi("v1.2.3"), true, "v1.2.3"},
		{bi("(devel)"), true, "devel"},
		{bi("", "vcs.revision", "abc123", "vcs.modified", "false"), true, "abc123"},
		{bi("(devel)", "vcs.revision", "abc123", "vcs.modified", "true"), true, "abc123-dirty"},
	}
	for _, c := range cases {
		if got := version(c.info, c.ok); got != c.want {
			t.Errorf("version(%+v): %q, want %q", c.info, got, c.want)
		}
	}
}
