package imgtool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
)

// Input and output of the commands that work on one file (decode, encode, info,
// show), with crit's conventions: no file name, or "-", is stdin or stdout.

// fileOpener holds what opening one input file needs. decode, encode, info and show
// open their input through open only, so that reading a file of an encrypted set (a
// --tls-key flag, via package imgset) is added here, in fileOpenFlags and
// fileOpenerFrom, and nowhere else.
type fileOpener struct {
	stdin io.Reader
	keys  keyOptions // --tls-key, --require-encrypted (keys.go)
}

// fileOpenFlags are the flags of the commands that read one file: --tls-key and
// --require-encrypted, for a file of an encrypted set (keys.go).
func fileOpenFlags() []cli.Flag { return keyFlags() }

// fileOpenerFrom reads the file-opening flags of a command line.
func fileOpenerFrom(c *cli.Context) fileOpener {
	return fileOpener{stdin: c.App.Reader, keys: keyOptionsFrom(c)}
}

// open opens path ("" or "-": stdin) for reading. Errors read from it name the file.
func (o fileOpener) open(path string) (io.ReadCloser, error) {
	if path == "" || path == "-" {
		if o.keys.RequireEncrypted {
			// A stream has no set and no sealed header to check: honouring the flag
			// is impossible, and ignoring it would hand out plaintext silently.
			return nil, usageError(errors.New("--require-encrypted needs the image as a file of its set, not standard input"))
		}
		if o.stdin == nil {
			return nil, errors.New("no standard input")
		}
		return namedReader{Reader: o.stdin, name: "stdin"}, nil
	}
	if rc, handled, err := openArchiveMember(path, o.keys); handled {
		return rc, err
	}
	if rc, handled, err := openSetFile(path, o.keys); handled {
		return rc, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// namedReader gives a stream a name for the image package's errors (see
// image.NewReader), as *os.File has one.
type namedReader struct {
	io.Reader
	name string
}

func (n namedReader) Name() string { return n.name }
func (n namedReader) Close() error { return nil }

// output is where a command writes: stdout, or a file written atomically (a
// temporary file beside it, renamed into place by commit), so that a failed command
// never leaves a partial file behind.
type output struct {
	io.Writer
	file   *os.File  // nil for stdout
	path   string    // "" for a spool of stdout
	stdout io.Writer // where a spool goes on commit
}

// createSpooledOutput is createOutput for output that must reach stdout whole or not at
// all (encode's binary image): it goes to an unlinked temporary file first, copied to
// stdout by commit.
func createSpooledOutput(out outputPath, stdout io.Writer) (*output, error) {
	if out.path != "" && out.path != "-" {
		return createOutput(out, stdout)
	}
	f, err := os.CreateTemp("", "imgtool-spool-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name()) // unlinked: nothing is left behind whatever happens
	return &output{Writer: f, file: f, stdout: stdout}, nil
}

// outputPath is an output file named on the command line, and where the note goes
// that the temporary files of killed runs writing it were removed (nil: no note).
type outputPath struct {
	path string
	err  io.Writer
}

// outputTo is the outputPath of path, noting on errw.
func outputTo(path string, errw io.Writer) outputPath { return outputPath{path, errw} }

// createOutput returns stdout for "" or "-", else a temporary file for the path, once
// the temporary files dead runs left beside it are removed (tempfile.go).
func createOutput(out outputPath, stdout io.Writer) (*output, error) {
	path := out.path
	if path == "" || path == "-" {
		return &output{Writer: stdout}, nil
	}
	// Said now, or the rename in commit fails naming the temporary file.
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("creating %s: is a directory", path)
	}
	if err := refuseEncryptedSet(path); err != nil {
		return nil, err
	}
	var cleaned func([]string)
	if out.err != nil {
		cleaned = noteCleaned(out.err, path)
	}
	removeDeadTemps(path, cleaned)
	f, err := createTempBeside(path) // locked while this process lives (tempfile.go)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	return &output{Writer: f, file: f, path: path}, nil
}

// refuseEncryptedSet refuses an output file in the folder of an encrypted set (one
// holding the sealed header, as imgset recognises it): the file would be plaintext
// beside the set's ciphertext, and a file the sealed manifest does not list, so the
// set would no longer verify.
func refuseEncryptedSet(path string) error {
	dir := filepath.Dir(path)
	if _, err := os.Lstat(filepath.Join(dir, imgset.HeaderName)); err != nil {
		return nil
	}
	return fmt.Errorf("refusing to write %s: %s holds an encrypted image set (%s), and the file would be plaintext in it; write it elsewhere, or decrypt the set first",
		path, dir, imgset.HeaderName)
}

// toStdout tells whether the output goes to stdout.
func (o *output) toStdout() bool { return o.file == nil || o.path == "" }

// commit puts the finished file in place.
func (o *output) commit() error {
	if o.file == nil {
		return nil
	}
	if o.path == "" {
		defer o.file.Close()
		if _, err := o.file.Seek(0, io.SeekStart); err != nil {
			return err
		}
		_, err := io.Copy(o.stdout, o.file)
		return err
	}
	err := o.file.Chmod(0o644)
	if err == nil {
		err = o.file.Sync()
	}
	if err == nil {
		// Renamed while open: its lock holds until it is in place.
		err = os.Rename(o.file.Name(), o.path)
	}
	if err != nil {
		o.file.Close()
		os.Remove(o.file.Name())
		return fmt.Errorf("writing %s: %w", o.path, err)
	}
	o.file.Close() // synced and in place: closing only drops the lock
	return nil
}

// abort removes the unfinished file; it is a no-op after commit.
func (o *output) abort() {
	if o.file == nil {
		return
	}
	o.file.Close()
	if o.path != "" {
		os.Remove(o.file.Name())
	}
}

// rawImageError explains why a file named like a raw image (pages-*.img, ...) has no
// entries, where the image package can only say that its magic is unknown.
func rawImageError(path string, err error) error {
	if k := image.KindByFileName(path); k != nil && k.Raw {
		return fmt.Errorf("%s is a raw %s image: it holds bytes, not protobuf entries", path, k.Name)
	}
	return err
}
