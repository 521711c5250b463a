// Package imgtool is the imgtool command line: one file per command, each with an options
// struct and a runX function that returns its error instead of exiting.
package imgtool

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// Exit codes shared by every command.
const (
	ExitOK     = 0 // success
	ExitError  = 1 // the operation failed: bad input, I/O error, refused operation
	ExitUsage  = 2 // the command line was wrong
	ExitVerify = 3 // verify found files that failed authentication
	// ExitUnchecked: verify found nothing wrong but could not authenticate the set
	// (an encrypted set checked without a key).
	ExitUnchecked = 4
)

// exitError carries an exit code other than ExitError up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withExitCode wraps err so that ExitCode reports code for it.
func withExitCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// usageError reports a wrong command line.
func usageError(err error) error { return withExitCode(ExitUsage, err) }

// ExitCode maps an error returned by the app to the process exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if signedFileError(err) {
		// A stored chunk found, as it was read, not to be the one signed: the
		// signature check failed, whichever command read it.
		return ExitVerify
	}
	return ExitError
}

// NewApp builds the imgtool command line application.
func NewApp() *cli.App {
	app := &cli.App{
		Name:                 "imgtool",
		Usage:                "inspect, encrypt, dump and restore CRIU image sets",
		Version:              version(debug.ReadBuildInfo()),
		HideHelpCommand:      true,
		EnableBashCompletion: false,
		// Errors are printed once, by main; urfave/cli must not exit or print them itself.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError(flagError(err, nil))
		},
		// urfave/cli's help action takes "imgtool CMD --help ARG" for help on a command
		// named ARG, and ends here when there is none: it is CMD's help that was asked.
		CommandNotFound: func(c *cli.Context, _ string) { _ = cli.ShowSubcommandHelp(c) },
		// Without a command: the help, "help [CMD]", or a usage error naming what was
		// not a command.
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			switch {
			case len(args) == 0:
				return cli.ShowAppHelp(c)
			case args[0] == "help":
				return showHelp(c, args[1:])
			}
			return usageError(fmt.Errorf("unknown command %q (see imgtool --help)", args[0]))
		},
		Commands: []*cli.Command{
			// The codec, as crit.
			decodeCommand(),
			encodeCommand(),
			infoCommand(),
			showCommand(),
			// Exploring a set.
			xCommand(),
			inspectCommand(),
			// Encryption.
			keygenCommand(),
			encryptCommand(),
			decryptCommand(),
			rekeyCommand(),
			verifyCommand(),
			signCommand(),
			// Checkpoint and restore.
			dumpCommand(),
			restoreCommand(),
			streamCommand(),
		},
	}
	for _, cmd := range app.Commands {
		// urfave/cli would give every command a "help" (alias "h") subcommand, so that a
		// set or image named h or help would print the help instead of being read.
		// --help stays, and "imgtool help CMD" is the app's (showHelp).
		cmd.HideHelpCommand = true
		cmd.OnUsageError = commandUsageError
		if cmd.Action != nil {
			cmd.Action = flagsFirst(cmd.Action)
		}
	}
	return app
}

// version names the build: its module version when built from a module
// ("go install ...@v1.2.3"), else the VCS revision it was built from (marked
// "-dirty" when the tree had changes), else "devel".
func version(info *debug.BuildInfo, ok bool) string {
	if !ok || info == nil {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "devel"
	}
	return rev + dirty
}

// showHelp is "imgtool help [CMD]": the app's help, or CMD's, the very text of
// "imgtool CMD --help".
func showHelp(c *cli.Context, args []string) error {
	if len(args) == 0 {
		return cli.ShowAppHelp(c)
	}
	if len(args) > 1 {
		return usageError(fmt.Errorf("help: one command at a time, got %d", len(args)))
	}
	cmd := c.App.Command(args[0])
	if cmd == nil {
		return usageError(fmt.Errorf("help: unknown command %q (see imgtool --help)", args[0]))
	}
	nc := cli.NewContext(c.App, nil, c)
	nc.Command = cmd
	return cmd.Run(nc, cmd.Name, "--help")
}

// Commands that read an existing set name it as -D DIR or as their first argument,
// whichever the user prefers. Each command's run function reads it one way; the
// other way is rewritten into it before the command's flags are parsed (setArgs).
var (
	// setFromArgument: the set is the first positional argument of the run function.
	setFromArgument = map[string]bool{"x": true, "inspect": true}
	// setFromFlag: the run function reads the set from -D (dump's -D is a new set,
	// not one to read: it takes no argument).
	setFromFlag = map[string]bool{
		"decode": true, "encrypt": true, "decrypt": true, "verify": true, "rekey": true, "restore": true,
	}
)

// normalizedKey marks the context of a command run on its normalized arguments.
type normalizedKey struct{}

// flagsFirst wraps a command's action so that flags may follow its arguments.
// urfave/cli stops parsing flags at the first argument ("imgtool verify SET
// --tls-key k" would leave --tls-key k as arguments), so when the arguments are not
// in normal form (normalizeArgs) the command is run again, once, on the normal form
// of the command line as typed: every flag and its value ahead of the arguments,
// and the set where the command reads it.
func flagsFirst(action cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		lineage := c.Lineage()
		if c.Context.Value(normalizedKey{}) != nil || len(lineage) < 2 {
			return action(c)
		}
		parent := lineage[1]
		typed := parent.Args().Tail() // the command's arguments, before any parsing
		args := normalizeArgs(c.Command, typed)
		if slices.Equal(args, typed) {
			return action(c)
		}
		nc := cli.NewContext(c.App, nil, parent)
		nc.Context = context.WithValue(c.Context, normalizedKey{}, true)
		nc.Command = c.Command
		return c.Command.Run(nc, append([]string{c.Command.Name}, args...)...)
	}
}

// normalizeArgs puts a command line in the form urfave/cli parses fully: flags
// (with the values of those that take one) first, then "--" if the arguments
// need it, then the arguments. A "--" ends the flags, as usual. With --help
// anywhere among the flags, only --help is kept: the help is all that is printed.
// Flags the command does not define stay among the flags, for urfave/cli to
// refuse by name.
func normalizeArgs(cmd *cli.Command, typed []string) []string {
	flags, args, dashdash := splitArgs(cmd.Flags, typed)
	if hasHelpFlag(flags) {
		return []string{"--help"}
	}
	flags, args = setArgs(cmd.Name, flags, args)
	out := append([]string{}, flags...)
	if dashdash || slices.ContainsFunc(args, looksLikeFlag) {
		out = append(out, "--")
	}
	return append(out, args...)
}

// splitArgs separates typed into flags (each with its value when it takes one and
// has no "=VALUE") and positional arguments. dashdash reports a "--".
func splitArgs(defined []cli.Flag, typed []string) (flags, args []string, dashdash bool) {
	for i := 0; i < len(typed); i++ {
		a := typed[i]
		if a == "--" {
			return flags, append(args, typed[i+1:]...), true
		}
		if !looksLikeFlag(a) {
			args = append(args, a)
			continue
		}
		flags = append(flags, a)
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if f := lookupFlag(defined, name); f != nil && takesValue(f) && !hasValue && i+1 < len(typed) {
			i++
			flags = append(flags, typed[i])
		}
	}
	return flags, args, false
}

// looksLikeFlag tells whether a command line word is a flag ("-" alone is stdin).
func looksLikeFlag(a string) bool { return len(a) > 1 && a[0] == '-' }

// takesValue tells whether a flag takes a value (all but the boolean ones do).
func takesValue(f cli.Flag) bool {
	if v, ok := f.(interface{ TakesValue() bool }); ok {
		return v.TakesValue()
	}
	_, isBool := f.(*cli.BoolFlag)
	return !isBool
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

// hasHelpFlag tells whether flags (as splitArgs returns them) ask for the help.
func hasHelpFlag(flags []string) bool {
	for _, a := range flags {
		name, value, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if (name == "help" || name == "h") && value != "false" {
			return true
		}
	}
	return false
}

// setArgs moves the set to where cmd's run function reads it: a -D DIR to the
// front of the arguments (setFromArgument), or the first argument to -D when no
// -D is given (setFromFlag).
func setArgs(cmd string, flags, args []string) ([]string, []string) {
	switch {
	case setFromArgument[cmd]:
		var sets, rest []string
		for i := 0; i < len(flags); i++ {
			name, value, hasValue := strings.Cut(strings.TrimLeft(flags[i], "-"), "=")
			if name != flagImagesDir && name != "D" {
				rest = append(rest, flags[i])
				continue
			}
			if !hasValue && i+1 < len(flags) {
				i++
				value = flags[i]
			}
			sets = append(sets, value)
		}
		return rest, append(sets, args...)
	case setFromFlag[cmd] && len(args) > 0 && !hasSetFlag(flags):
		// One word, so that a set named "-x" (given after "--") stays a value; first,
		// so that a flag missing its value at the end is still said to be.
		return append([]string{"--" + flagImagesDir + "=" + args[0]}, flags...), args[1:]
	}
	return flags, args
}

// hasSetFlag tells whether flags hold a -D.
func hasSetFlag(flags []string) bool {
	for _, a := range flags {
		if name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); name == flagImagesDir || name == "D" {
			return true
		}
	}
	return false
}

// commandUsageError is every command's answer to a command line urfave/cli could not
// parse: a usage error naming the command, and the flag as it was typed.
func commandUsageError(c *cli.Context, err error, _ bool) error {
	var typed []string
	if lineage := c.Lineage(); len(lineage) > 1 {
		typed = lineage[1].Args().Tail()
	}
	return usageError(fmt.Errorf("%s: %w", c.Command.Name, flagError(err, typed)))
}

// flagError rewords the errors of Go's flag package, which print a flag with one
// dash whatever was typed ("-nopl" for --nopl), naming the flag as typed instead.
func flagError(err error, typed []string) error {
	forms := []struct{ prefix, format string }{
		{"flag provided but not defined: -", "unknown flag %s"},
		{"flag needs an argument: -", "flag %s needs a value"},
	}
	msg := err.Error()
	for _, f := range forms {
		if name, ok := strings.CutPrefix(msg, f.prefix); ok {
			return fmt.Errorf(f.format, typedFlag(name, typed))
		}
	}
	// invalid value "x" for flag -name: reason
	if before, rest, ok := strings.Cut(msg, " for flag -"); ok && strings.HasPrefix(before, "invalid value ") {
		name, reason, _ := strings.Cut(rest, ": ")
		return fmt.Errorf("%s for flag %s: %s", before, typedFlag(name, typed), reason)
	}
	return err
}

// typedFlag returns how the flag name was typed (-D, --images-dir, ---x), or its
// usual form when it cannot be found.
func typedFlag(name string, typed []string) string {
	for _, a := range typed {
		if a == "--" {
			break
		}
		word, _, _ := strings.Cut(a, "=")
		if looksLikeFlag(word) && strings.TrimLeft(word, "-") == name {
			return word
		}
	}
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}
