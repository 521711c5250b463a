package imgtool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/stream"
)

const (
	flagInput   = "input"
	flagReadyFD = "ready-fd"
	// readyLine is what --ready-fd receives once the socket listens.
	readyLine = "ready\n"
)

// streamExamples is the part of both commands' help that shows both directions.
const streamExamples = `Examples (as root; CRIU 4.2 with --stream):
   # Dump: capture's socket must listen before CRIU starts. With --ready-fd the
   # script waits for "ready" on a pipe; without it, for the "ready" line on stderr.
   mkdir -p /run/ckpt
   mkfifo /run/ready
   imgtool stream capture -D /run/ckpt -o /srv/set -e --cert ops.pem --ready-fd 3 3>/run/ready &
   read -r _ </run/ready
   criu dump --stream -D /run/ckpt -t 1234 --shell-job
   wait $!          # 0: the set is in /srv/set; 1: CRIU's dump failed, no set

   # Restore, decrypting on the fly:
   imgtool stream serve -D /run/ckpt -i /srv/set --tls-key ops.key --ready-fd 3 3>/run/ready &
   read -r _ </run/ready
   criu restore --stream -D /run/ckpt -d --shell-job
   wait $!

   # Migration through ssh, the set never on disk (encrypted in the stream):
   imgtool stream capture -D /run/ckpt -o - -e --cert ops.pem | ssh host imgtool stream serve -D /run/ckpt -i - --tls-key ops.key
`

func streamCommand() *cli.Command {
	cmd := &cli.Command{
		Name:  "stream",
		Usage: "be CRIU's image streamer (criu dump/restore --stream): capture a set, serve one",
		Description: `CRIU 4.2 with --stream sends its images through a UNIX socket in its -D folder
instead of writing files: "stream capture" receives them into an image set,
encrypted as it arrives with -e, and "stream serve" gives a set back to
criu restore --stream, decrypting and authenticating it chunk by chunk.

` + streamExamples,
		Subcommands: []*cli.Command{streamCaptureCommand(), streamServeCommand()},
	}
	for _, sub := range cmd.Subcommands {
		sub.HideHelpCommand = true
		sub.OnUsageError = commandUsageError
		sub.Action = flagsFirst(sub.Action)
	}
	return cmd
}

// readyFDFlag is --ready-fd: where to say that the socket listens.
func readyFDFlag() cli.Flag {
	return &cli.IntFlag{Name: flagReadyFD, Value: -1,
		Usage: "once the socket listens, write \"ready\" and a newline to file descriptor `FD` (3 or more) and close it"}
}

// captureOptions are the options of "imgtool stream capture".
type captureOptions struct {
	Dir     string           // -D: CRIU's images folder, where the socket is
	Output  string           // -o: the set; "" is Dir, "-" the stream format on Out
	Encrypt bool             // -e
	Certs   []string         // --cert
	Cipher  string           // --cipher
	Load    recipientOptions // --allow-expired
	Sign    signOptions      // --sign-key, --sign-cert: sign the set written
	ReadyFD int              // --ready-fd; -1: none
	Quiet   bool
	Out     io.Writer // the stream with -o -, else the summary
	Err     io.Writer // the ready line, notes
}

func streamCaptureCommand() *cli.Command {
	return &cli.Command{
		Name:      "capture",
		Usage:     "receive the images of criu dump --stream into an image set (encrypted with -e)",
		ArgsUsage: " ",
		Description: `Listens on DIR/` + stream.CaptureSocket + `, receives every image that
"criu dump --stream -D DIR" sends, and writes them as the image set SET (-o,
default DIR), a new or empty folder, committed atomically once CRIU is done. With
-e each file is encrypted in memory as it arrives, for the certificates of
--cert: no plaintext reaches any file. With -o - the set goes to stdout in
imgtool's stream format (docs/format.md), encrypted files staying encrypted, for
"stream serve -i -" on the same or another machine. With --sign-key and
--sign-cert the set is signed before it is committed, as by dump (not with -o -):
restore then knows who made it.

Readiness: the socket exists and listens before "ready" is written to --ready-fd
(then closed), or, without it, before the line "imgtool: stream capture: ready on
SOCKET" is printed on stderr (not with -q). Start CRIU after that: CRIU fails at
once when the socket is missing.

CRIU does not tell the streamer how its dump ended. It writes inventory.img last,
only when every process is dumped: a connection that closes without it is a
failed dump (CRIU resumes the processes), and no set is left (exit 1). A failure
here (a full disk) cuts CRIU off, which makes its dump fail too. CRIU's own exit
status stays the final word (a post-dump script may still fail it).

With SET = DIR, CRIU's log and stats must go elsewhere (criu -W WORKDIR): a set's
folder holds the set only. capture refuses CRIU's connection (CRIU fails, the
processes keep running) when DIR holds anything else.

SIGINT, SIGTERM or SIGHUP cut CRIU off (its dump fails and the processes resume)
and remove what was written: no set is left (exit 1).

` + streamExamples + `
Exit codes: 0 the set is complete, 1 CRIU's dump failed, a failure or an interruption
(no set is left), 2 wrong command line.`,
		Flags: []cli.Flag{
			imagesDirFlag(),
			&cli.StringFlag{Name: flagOutput, Aliases: []string{"o"}, Usage: "write the set to `SET` (new or empty; default DIR), or - for the stream format on stdout"},
			&cli.BoolFlag{Name: flagEncrypt, Aliases: []string{"e"}, Usage: "encrypt the set as it arrives"},
			certFlag("recipient certificate `CERT.pem` for -e; repeatable (default " + defaultCertPath + " if it exists)"),
			cipherFlag("the AEAD for -e", cipher.AES256GCM.String()),
			allowExpiredFlag(),
			signFlags()[0], signFlags()[1],
			readyFDFlag(),
			quietFlag(),
		},
		Action: func(c *cli.Context) error {
			return runStreamCapture(c.Context, captureOptions{
				Dir:     c.String(flagImagesDir),
				Output:  c.String(flagOutput),
				Encrypt: c.Bool(flagEncrypt),
				Certs:   c.StringSlice(flagCert),
				Cipher:  c.String(flagCipher),
				Load:    recipientOptionsFrom(c),
				Sign:    signOptionsFrom(c),
				ReadyFD: c.Int(flagReadyFD),
				Quiet:   c.Bool(flagQuiet),
				Out:     outWriter(c),
				Err:     errWriter(c),
			}, c.Args().Slice())
		},
	}
}

// captureSink is where capture writes: an imgset.Writer, or the stream format.
type captureSink interface {
	stream.Sink
	Commit() error
	Abort() error
}

// runStreamCapture receives one dump of CRIU into a new set.
func runStreamCapture(ctx context.Context, opts captureOptions, args []string) error {
	if err := checkStreamArgs("capture", opts.Dir, opts.ReadyFD, args); err != nil {
		return err
	}
	set := cmp.Or(opts.Output, opts.Dir)
	create, err := captureCreateOptions(opts)
	if err != nil {
		return err
	}
	if create.Signer, err = loadSigner("stream capture", opts.Sign); err != nil {
		return err
	}
	if create.Signer != nil && set == "-" {
		return usageError(errors.New("stream capture: --sign-key with -o -: a stream is not signed; capture into a set, or sign it once written (imgtool sign)"))
	}
	if set == "-" {
		if f, ok := opts.Out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return usageError(errors.New("stream capture: -o - writes a binary stream: redirect stdout"))
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return fmt.Errorf("stream capture: %w", err)
	}
	sink, err := newCaptureSink(set, opts.Out, create)
	if err != nil {
		return fmt.Errorf("stream capture: %w", err)
	}
	sum, err := captureInto(ctx, opts, set, sink)
	if err != nil {
		_ = sink.Abort()
		return captureError(ctx, err)
	}
	if err := sink.Commit(); err != nil {
		return fmt.Errorf("stream capture: %w", err)
	}
	if opts.Quiet {
		return nil
	}
	out, where := opts.Out, set
	if set == "-" {
		out, where = opts.Err, "stdout"
	}
	enc := "plaintext"
	if opts.Encrypt {
		enc = "encrypted"
	}
	_, err = fmt.Fprintf(out, "captured CRIU's dump to %s (%s): %d files, %s%s\n", where, enc, sum.Files, humanBytes(sum.Bytes), largestRate(sum.Largest))
	return err
}

// largestRate says how fast the largest file (the pages, in a dump) came, when
// it is large enough for the rate to mean something.
func largestRate(f stream.FileTime) string {
	if f.Bytes < 16<<20 || f.Rate() == 0 {
		return ""
	}
	return fmt.Sprintf("; %s at %.2f GiB/s", f.Name, f.Rate()/(1<<30))
}

// captureCreateOptions reads -e, --cert and --cipher.
func captureCreateOptions(opts captureOptions) (imgset.CreateOptions, error) {
	if !opts.Encrypt {
		if len(opts.Certs) > 0 {
			return imgset.CreateOptions{}, usageError(fmt.Errorf("stream capture: --%s only makes sense with -e", flagCert))
		}
		return imgset.CreateOptions{Cleaned: noteCleaned(opts.Err, cmp.Or(opts.Output, opts.Dir))}, nil
	}
	alg, err := parseCipher("stream capture", opts.Cipher)
	if err != nil {
		return imgset.CreateOptions{}, err
	}
	recipients, err := recipientsOrDefault("stream capture -e", opts.Certs, opts.Load)
	if err != nil {
		return imgset.CreateOptions{}, err
	}
	return imgset.CreateOptions{Recipients: recipients, Algorithm: alg, Cleaned: noteCleaned(opts.Err, cmp.Or(opts.Output, opts.Dir))}, nil
}

// checkStreamArgs checks what both commands need.
func checkStreamArgs(cmd, dir string, readyFD int, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Errorf("stream %s takes no arguments, got %q", cmd, args[0]))
	}
	if dir == "" {
		return usageError(fmt.Errorf("stream %s needs CRIU's images folder: -D DIR", cmd))
	}
	if readyFD != -1 && readyFD < 3 {
		return usageError(fmt.Errorf("stream %s: --%s %d: give a descriptor of 3 or more", cmd, flagReadyFD, readyFD))
	}
	return nil
}

// newCaptureSink creates the set: a folder, or the stream format on out.
func newCaptureSink(set string, out io.Writer, create imgset.CreateOptions) (captureSink, error) {
	if set != "-" {
		w, err := imgset.Create(set, create)
		if err != nil {
			return nil, err
		}
		return readingSet{w}, nil
	}
	enc, err := stream.NewEncoder(out)
	if err != nil {
		return nil, err
	}
	if len(create.Recipients) == 0 {
		return plainStream{enc}, nil
	}
	return newSealedStream(enc, create)
}

// captureInto listens, signals readiness, and receives CRIU's dump into sink.
func captureInto(ctx context.Context, opts captureOptions, set string, sink captureSink) (stream.Summary, error) {
	conn, err := listenAndAccept(ctx, "capture", opts.Dir, stream.CaptureSocket, opts.ReadyFD, opts.Quiet, opts.Err)
	if err != nil {
		return stream.Summary{}, err
	}
	defer conn.Close()
	if sameFolder(set, opts.Dir) {
		if other := folderEntries(opts.Dir); len(other) > 0 {
			return stream.Summary{}, fmt.Errorf("%s also holds %s (CRIU's log?): a set's folder holds the set only; run criu with -W WORKDIR elsewhere, or give -o SET; CRIU was refused, the processes keep running",
				opts.Dir, strings.Join(other, ", "))
		}
	}
	return stream.Capture(ctx, conn, sink)
}

// listenAndAccept creates the socket, says it is ready, and waits for CRIU.
func listenAndAccept(ctx context.Context, cmd, dir, socket string, readyFD int, quiet bool, errw io.Writer) (*stream.Conn, error) {
	l, err := stream.Listen(dir, socket)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	if err := signalReady(l.Path(), cmd, readyFD, quiet, errw); err != nil {
		return nil, err
	}
	return l.Accept(ctx)
}

// signalReady writes the ready line to --ready-fd, or to stderr.
func signalReady(path, cmd string, readyFD int, quiet bool, errw io.Writer) error {
	if readyFD >= 0 {
		f := os.NewFile(uintptr(readyFD), "ready-fd")
		if f == nil {
			return fmt.Errorf("--%s %d: not an open descriptor", flagReadyFD, readyFD)
		}
		_, err := io.WriteString(f, readyLine)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("--%s %d: %w", flagReadyFD, readyFD, err)
		}
		return nil
	}
	if !quiet {
		fmt.Fprintf(errw, "imgtool: stream %s: ready on %s\n", cmd, path)
	}
	return nil
}

// sameFolder tells whether a and b name the same folder.
func sameFolder(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	if errA != nil || errB != nil {
		return filepath.Clean(a) == filepath.Clean(b)
	}
	return os.SameFile(sa, sb)
}

// folderEntries lists the names in dir, sorted.
func folderEntries(dir string) []string {
	ents, _ := os.ReadDir(dir)
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// captureError says how a capture ended without a set.
func captureError(ctx context.Context, err error) error {
	if ie := interruptCause(ctx); ie != nil {
		return fmt.Errorf("stream capture %v: CRIU was cut off (its dump fails, the processes resume); no set was left", ie)
	}
	if errors.Is(err, stream.ErrIncomplete) {
		return fmt.Errorf("stream capture: %w; no set was left", err)
	}
	return fmt.Errorf("stream capture: %w; CRIU was cut off and no set was left", err)
}

// readingSet is a set being written whose files read CRIU's pipes themselves
// (stream.ReadFromSink): an encrypted file straight into the units it seals, a
// plain one by splice.
type readingSet struct{ *imgset.Writer }

func (readingSet) ReadsFromPipes() {}

// plainStream is a plaintext set in the stream format.
type plainStream struct{ *stream.Encoder }

func (p plainStream) Commit() error { return p.Encoder.Close() }

// Abort leaves the stream without its end record: its reader refuses it.
func (p plainStream) Abort() error { return nil }

// sealedStream is an encrypted set in the stream format: each file is
// encrypted as it arrives, exactly as imgset's writer does it on disk, and the
// sealed header with the manifest of every file ends the stream.
type sealedStream struct {
	enc     *stream.Encoder
	key     *cipher.SetKey
	stanzas []*cipher.Stanza

	mu    sync.Mutex
	files []cipher.FileInfo
}

func newSealedStream(enc *stream.Encoder, create imgset.CreateOptions) (*sealedStream, error) {
	if len(create.Recipients) > cipher.MaxStanzas {
		return nil, fmt.Errorf("%d recipients, the limit is %d", len(create.Recipients), cipher.MaxStanzas)
	}
	key, err := cipher.NewSetKey(cmp.Or(create.Algorithm, cipher.AES256GCM))
	if err != nil {
		return nil, err
	}
	stanzas, err := key.Wrap(create.Recipients...)
	if err != nil {
		return nil, err
	}
	return &sealedStream{enc: enc, key: key, stanzas: stanzas}, nil
}

// Create starts one encrypted file of the stream.
func (s *sealedStream) Create(name string) (io.WriteCloser, error) {
	if name == imgset.HeaderName {
		return nil, fmt.Errorf("bad file name %q", name)
	}
	fw, err := s.enc.Create(name)
	if err != nil {
		return nil, err
	}
	cw, err := s.key.NewWriter(fw, name)
	if err != nil {
		fw.Close()
		return nil, err
	}
	return &sealedFile{s: s, name: name, fw: fw, cw: cw}, nil
}

// Commit ends the stream with the sealed header.
func (s *sealedStream) Commit() error {
	s.mu.Lock()
	files := append([]cipher.FileInfo(nil), s.files...)
	s.mu.Unlock()
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	hdr, err := cipher.SealHeader(imgset.HeaderFraming, s.key, s.stanzas, files)
	if err != nil {
		return err
	}
	hw, err := s.enc.Create(imgset.HeaderName)
	if err != nil {
		return err
	}
	if _, err := hw.Write(hdr); err != nil {
		return err
	}
	if err := hw.Close(); err != nil {
		return err
	}
	return s.enc.Close()
}

// Abort leaves the stream without its header and end record.
func (s *sealedStream) Abort() error { return nil }

// sealedFile is one file of a sealedStream.
type sealedFile struct {
	s    *sealedStream
	name string
	fw   io.WriteCloser
	cw   *cipher.Writer
}

func (f *sealedFile) Write(p []byte) (int, error) { return f.cw.Write(p) }

// Close writes the file's last chunk and records its size for the manifest.
func (f *sealedFile) Close() error {
	err := f.cw.Close()
	if cerr := f.fw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	f.s.mu.Lock()
	f.s.files = append(f.s.files, f.cw.Info())
	f.s.mu.Unlock()
	return nil
}

// serveOptions are the options of "imgtool stream serve".
type serveOptions struct {
	Dir     string     // -D: CRIU's images folder, where the socket is
	Input   string     // -i: the set; "" is Dir, "-" the stream format on In
	Keys    keyOptions // --tls-key and the other key flags
	ReadyFD int        // --ready-fd; -1: none
	Quiet   bool
	In      io.Reader // the stream with -i -
	Out     io.Writer // the summary
	Err     io.Writer // the ready line, notes
}

func streamServeCommand() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "give an image set to criu restore --stream, decrypting it on the fly",
		ArgsUsage: " ",
		Description: `Listens on DIR/` + stream.ServeSocket + ` and answers "criu restore --stream -D DIR":
each image CRIU asks for is read from SET (-i, default DIR; - for a stream of
"stream capture -o -" on stdin) and written into the pipe CRIU gives. An encrypted
set is decrypted in memory, and every chunk is authenticated before a byte of it
reaches CRIU. A chunk that fails cuts CRIU off (the socket, then the pipe): its
restore fails and it removes what it restored; serve names the file (exit 3).

With -i - the whole stream is received first (CRIU reads the images in another
order than it writes them), into a temporary folder in DIR that is removed at the
end: ciphertext for an encrypted stream, plaintext for a plaintext one.

Readiness is signalled as by capture: "ready" on --ready-fd, or the line
"imgtool: stream serve: ready on SOCKET" on stderr (not with -q). serve ends when
CRIU closes the connection.

` + streamExamples + `
Exit codes: 0 CRIU got every file it asked for, 1 a failure or an interruption,
2 wrong command line, 3 a file failed authentication (CRIU's restore fails).`,
		Flags: append([]cli.Flag{
			imagesDirFlag(),
			&cli.StringFlag{Name: flagInput, Aliases: []string{"i"}, Usage: "serve the set `SET` (default DIR), or - for a stream on stdin"},
			readyFDFlag(),
			quietFlag(),
		}, keyFlags()...),
		Action: func(c *cli.Context) error {
			in := c.App.Reader
			if in == nil {
				in = os.Stdin
			}
			return runStreamServe(c.Context, serveOptions{
				Dir:     c.String(flagImagesDir),
				Input:   c.String(flagInput),
				Keys:    keyOptionsFrom(c),
				ReadyFD: c.Int(flagReadyFD),
				Quiet:   c.Bool(flagQuiet),
				In:      in,
				Out:     outWriter(c),
				Err:     errWriter(c),
			}, c.Args().Slice())
		},
	}
}

// runStreamServe serves one set to one CRIU restore.
func runStreamServe(ctx context.Context, opts serveOptions, args []string) error {
	if err := checkStreamArgs("serve", opts.Dir, opts.ReadyFD, args); err != nil {
		return err
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return fmt.Errorf("stream serve: %w", err)
	}
	input := cmp.Or(opts.Input, opts.Dir)
	if input == "-" {
		spool, err := os.MkdirTemp(opts.Dir, ".imgtool-serve-")
		if err != nil {
			return fmt.Errorf("stream serve: %w", err)
		}
		defer os.RemoveAll(spool)
		if err := receiveStream(ctx, opts.In, spool); err != nil {
			return fmt.Errorf("stream serve: stdin: %w", err)
		}
		input = spool
	}
	// The set is listed before the socket exists: with SET = DIR the socket and
	// CRIU's log are no files of the set.
	set, err := openSet(input, opts.Keys)
	if err != nil {
		return fmt.Errorf("stream serve: %w", err)
	}
	conn, err := listenAndAccept(ctx, "serve", opts.Dir, stream.ServeSocket, opts.ReadyFD, opts.Quiet, opts.Err)
	if err != nil {
		return fmt.Errorf("stream serve: %w", err)
	}
	defer conn.Close()
	sum, err := stream.Serve(ctx, conn, setSource{set})
	if err != nil {
		return serveError(ctx, err)
	}
	if opts.Quiet {
		return nil
	}
	if len(sum.Short) > 0 {
		fmt.Fprintf(opts.Err, "imgtool: stream serve: CRIU stopped reading before the end of %s\n", strings.Join(sum.Short, ", "))
	}
	_, err = fmt.Fprintf(opts.Out, "served %s to CRIU: %d files, %s\n", set.Dir(), sum.Files, humanBytes(sum.Bytes))
	return err
}

// serveError says how serving ended: an authentication failure is exit 3.
func serveError(ctx context.Context, err error) error {
	if ie := interruptCause(ctx); ie != nil {
		return fmt.Errorf("stream serve %v: CRIU was cut off, its restore fails", ie)
	}
	var ce *cipher.Error
	if errors.As(err, &ce) {
		return withExitCode(ExitVerify, fmt.Errorf("stream serve: %w; CRIU was cut off, its restore fails", err))
	}
	return fmt.Errorf("stream serve: %w; CRIU was cut off", err)
}

// receiveStream unpacks a stream into the new folder spool, as the set's files
// (an encrypted set's stay encrypted).
func receiveStream(ctx context.Context, in io.Reader, spool string) error {
	r := ctxReader{ctx: ctx, r: in}
	_, err := stream.Unpack(r, func(name string) (io.WriteCloser, error) {
		return os.OpenFile(filepath.Join(spool, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	})
	return err
}

// ctxReader stops reading once ctx is done (checked between reads).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if c.ctx.Err() != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.r.Read(p)
}

// setSource serves the files of an opened set.
type setSource struct{ set *imgset.Set }

// Open opens name: an encrypted file as *imgset.File, whose WriteTo decrypts in
// parallel and writes only authenticated batches; a plain one as a bare reader,
// which Serve copies in large reads.
func (s setSource) Open(name string) (io.ReadCloser, error) {
	if !s.set.Has(name) {
		return nil, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	f, err := s.set.Open(name)
	if err != nil {
		return nil, err
	}
	if s.set.Encrypted() {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{f, f}, nil
}
