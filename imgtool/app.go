// Package imgtool is the imgtool command line: one file per command, each with an options
// struct and a runX function that returns its error instead of exiting.
package imgtool

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"
)

// Exit codes shared by every command.
const (
	ExitOK     = 0 // success
	ExitError  = 1 // the operation failed: bad input, I/O error, refused operation
	ExitUsage  = 2 // the command line was wrong
	ExitVerify = 3 // verify found files that failed authentication
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
	return ExitError
}

// NewApp builds the imgtool command line application.
func NewApp() *cli.App {
	app := &cli.App{
		Name:                 "imgtool",
		Usage:                "inspect, encrypt, dump and restore CRIU image sets",
		HideHelpCommand:      true,
		EnableBashCompletion: false,
		// Errors are printed once, by main; urfave/cli must not exit or print them itself.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError(err)
		},
		// Without a command: the help, or a usage error naming what was not a command.
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageError(fmt.Errorf("unknown command %q (see imgtool --help)", c.Args().First()))
			}
			return cli.ShowAppHelp(c)
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
			// Checkpoint and restore.
			dumpCommand(),
			restoreCommand(),
		},
	}
	for _, cmd := range app.Commands {
		// urfave/cli would give every command a "help" (alias "h") subcommand, so that a
		// set or image named h or help would print the help instead of being read.
		// --help stays.
		cmd.HideHelpCommand = true
	}
	return app
}
