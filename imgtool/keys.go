package imgtool

// Keys, certificates and progress, shared by every command that reads, writes or
// changes an encrypted image set. Commands add the flags with keyFlags,
// tlsKeyFlag, requireEncryptedFlag, certFlag and quietFlag, read them into a
// keyOptions (keyOptionsFrom) or a []string (c.StringSlice("cert")), and go
// through loadIdentities, loadRecipients, openSet and newProgress: every key
// error is worded here, once.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/imgset"
)

// CRIUsec's default paths (criu --tls-cert and --tls-key). imgtool falls back to
// them only when no certificate or key was given and the file exists, so that a
// machine set up for CRIUsec works the same way.
const (
	defaultCertPath = "/etc/pki/criu/cert.pem"
	defaultKeyPath  = "/etc/pki/criu/private/key.pem"
)

// Flag names, shared so that help texts and error messages agree.
const (
	flagTLSKey           = "tls-key"
	flagCert             = "cert"
	flagRequireEncrypted = "require-encrypted"
	flagAllowPlaintext   = "allow-plaintext"
	flagExpectSetID      = "expect-set-id"
	flagQuiet            = "quiet"
	flagImagesDir        = "images-dir"
	flagOutput           = "output"
	flagCipher           = "cipher"
)

// tlsKeyFlag is --tls-key: private keys to open an encrypted set, tried in order.
func tlsKeyFlag() cli.Flag {
	return &cli.StringSliceFlag{
		Name: flagTLSKey,
		Usage: "private key `key.pem` (PKCS#8, PKCS#1 or SEC1; PEM or DER) to open an encrypted set; repeatable. " +
			"Default: " + defaultKeyPath + " if it exists",
	}
}

// requireEncryptedFlag is --require-encrypted: refuse a set without a valid sealed
// header, so that deleting the header cannot downgrade a set to plaintext.
func requireEncryptedFlag() cli.Flag {
	return &cli.BoolFlag{Name: flagRequireEncrypted, Usage: "refuse a set that is not encrypted (no silent downgrade)"}
}

// allowPlaintextFlag is --allow-plaintext: read a plaintext set although a key was given.
func allowPlaintextFlag() cli.Flag {
	return &cli.BoolFlag{Name: flagAllowPlaintext, Usage: "read a plaintext set although a key was given " +
		"(by default a key means an encrypted set is expected: a plaintext one may have replaced it)"}
}

// expectSetIDFlag is --expect-set-id: refuse any set but the one with this id (rollback).
func expectSetIDFlag() cli.Flag {
	return &cli.StringFlag{Name: flagExpectSetID, Usage: "refuse an encrypted set whose set id (`HEX`, as verify and " +
		"inspect print it) is another: an older copy put back in its place"}
}

// keyFlags are the flags of commands that read a set that may be encrypted.
func keyFlags() []cli.Flag {
	return []cli.Flag{tlsKeyFlag(), requireEncryptedFlag(), allowPlaintextFlag(), expectSetIDFlag(), trustFlag(), requireSignedFlag()}
}

// certFlag is --cert (alias --tls-cert, CRIUsec's name): the recipients' X.509
// certificates.
func certFlag(usage string) cli.Flag {
	return &cli.StringSliceFlag{Name: flagCert, Aliases: []string{"tls-cert"}, Usage: usage}
}

// cipherFlag is --cipher: the AEAD of the files of a new or rotated set. def is
// its default ("" for none).
func cipherFlag(usage, def string) cli.Flag {
	return &cli.StringFlag{Name: flagCipher, Value: def,
		Usage: usage + ": " + cipher.AES256GCM.String() + " or " + cipher.ChaCha20Poly1305.String()}
}

// parseCipher reads the value of --cipher for cmd, as a usage error when wrong.
func parseCipher(cmd, value string) (cipher.Algorithm, error) {
	alg, err := cipher.ParseAlgorithm(value)
	if err != nil {
		return 0, usageError(fmt.Errorf("%s: --%s: %w", cmd, flagCipher, err))
	}
	return alg, nil
}

// quietFlag is --quiet: no progress bar and no summary.
func quietFlag() cli.Flag {
	return &cli.BoolFlag{Name: flagQuiet, Aliases: []string{"q"}, Usage: "print nothing but errors (no progress bar, no summary)"}
}

// imagesDirFlag is -D: the image set folder, as CRIU names it.
func imagesDirFlag() cli.Flag {
	return &cli.StringFlag{Name: flagImagesDir, Aliases: []string{"D"}, Usage: "the image set `DIR`"}
}

// keyOptions are the key flags of a command that reads a set.
type keyOptions struct {
	KeyFiles         []string // --tls-key, tried in order
	RequireEncrypted bool     // --require-encrypted
	AllowPlaintext   bool     // --allow-plaintext
	ExpectSetID      string   // --expect-set-id
	Trust            []string // --trust: trust anchors for signatures
	RequireSigned    bool     // --require-signed
	// SignedEncrypted requires a valid signature of an encrypted set (restore's
	// default); AllowUnsigned (--allow-unsigned) lifts both requirements.
	SignedEncrypted bool
	AllowUnsigned   bool
	Warn            io.Writer // warnings; nil: none
}

// keyOptionsFrom reads keyFlags from a command line.
func keyOptionsFrom(c *cli.Context) keyOptions {
	return keyOptions{KeyFiles: c.StringSlice(flagTLSKey), RequireEncrypted: c.Bool(flagRequireEncrypted),
		AllowPlaintext: c.Bool(flagAllowPlaintext), ExpectSetID: c.String(flagExpectSetID),
		Trust: c.StringSlice(flagTrust), RequireSigned: c.Bool(flagRequireSigned), Warn: errWriter(c)}
}

// signature checks the signature of the set in dir as k asks (checkSignature),
// before anything of it is decrypted.
func (k keyOptions) signature(dir string) (*cipher.Signature, error) {
	encrypted := fileExists(filepath.Join(dir, imgset.HeaderName))
	return checkSignature(dir, signaturePolicy{Trust: k.Trust, Require: k.RequireSigned || (k.SignedEncrypted && encrypted),
		AllowUnsigned: k.AllowUnsigned}, k.Warn)
}

// checksSignature tells whether k has the signature of the set in dir checked:
// it is required, or the set has one and a trust anchor is given.
func (k keyOptions) checksSignature(dir string) bool {
	return k.RequireSigned || (imgset.HasSignature(dir) && (len(k.Trust) > 0 || fileExists(defaultTrustPath)))
}

// requireEncrypted tells whether a plaintext set must be refused: asked for, or implied by
// a key (given, or configured at the default path). Someone who can write the storage can
// replace an encrypted set with a plaintext one of his making; a reader that holds a key
// expects the encrypted one, so it is not silently downgraded.
func (k keyOptions) requireEncrypted() bool {
	if k.AllowPlaintext {
		return false
	}
	return k.RequireEncrypted || len(k.KeyFiles) > 0 || fileExists(defaultKeyPath)
}

// checkSetID refuses a set whose id is not the expected one (--expect-set-id).
func (k keyOptions) checkSetID(dir string, h *cipher.Header) error {
	return checkSetID(dir, k.ExpectSetID, h)
}

// checkSetID refuses h unless its set id is want ("" expects nothing).
func checkSetID(dir, want string, h *cipher.Header) error {
	if want == "" {
		return nil
	}
	if h == nil {
		return fmt.Errorf("image set %s is not encrypted: it has no set id, --%s %s expects one", dir, flagExpectSetID, want)
	}
	if got := h.SetID.String(); !strings.EqualFold(got, strings.TrimSpace(want)) {
		return withExitCode(ExitVerify, fmt.Errorf("image set %s has set id %s, not the expected %s: an older or another set is in its place", dir, got, want))
	}
	return nil
}

// loadIdentities reads the private keys of paths (PEM or DER). The errors name
// the file once and tell an unreadable file (missing, not a key, damaged,
// password-protected) from one that holds the wrong kind of key (a certificate,
// an Ed25519 key, a weak RSA key).
func loadIdentities(paths []string) ([]cipher.Identity, error) {
	ids := make([]cipher.Identity, 0, len(paths))
	for _, p := range paths {
		id, err := cipher.ReadIdentity(p)
		if err != nil {
			return nil, keyFileError(flagTLSKey, p, "key", err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// keyFileError words an error reading the key or certificate file p given with
// --flag: "--flag p: cannot read the what: why", naming p once (cipher's
// *FileError names it too, and is unwrapped here).
func keyFileError(flag, p, what string, err error) error {
	var fe *cipher.FileError
	if errors.As(err, &fe) {
		err = fe.Err
	}
	switch {
	case errors.Is(err, cipher.ErrUnsupportedKey):
		if what == "key" {
			return fmt.Errorf("--%s %s: wrong kind of key: %w", flag, p, err)
		}
		return fmt.Errorf("--%s %s: not a usable certificate: %w", flag, p, err)
	case errors.Is(err, cipher.ErrCertificateValidity):
		return fmt.Errorf("--%s %s: %w (--%s to use it anyway)", flag, p, err, flagAllowExpired)
	}
	return fmt.Errorf("--%s %s: cannot read the %s: %w", flag, p, what, err)
}

// identitiesOrDefault is loadIdentities, falling back to CRIUsec's default key
// when paths is empty and that file exists. It returns no identity (and no
// error) when there is nothing to load.
func identitiesOrDefault(paths []string) ([]cipher.Identity, error) {
	if len(paths) == 0 && fileExists(defaultKeyPath) {
		paths = []string{defaultKeyPath}
	}
	return loadIdentities(paths)
}

// flagAllowExpired is --allow-expired.
const flagAllowExpired = "allow-expired"

// allowExpiredFlag is --allow-expired, for the commands that encrypt for
// certificates (encrypt, rekey, dump -e): without it an expired or not yet valid
// certificate is refused, since its holder may no longer have (or not yet have)
// the key, or the key may have been retired for a reason.
func allowExpiredFlag() cli.Flag {
	return &cli.BoolFlag{Name: flagAllowExpired, Usage: "encrypt for expired or not yet valid certificates too"}
}

// recipientOptions are how a command that writes a set loads its --cert files.
type recipientOptions struct {
	AllowExpired bool      // --allow-expired
	Warn         io.Writer // where certificates that name no recipient are listed; nil is os.Stderr
	Now          time.Time // the time validity is checked at; zero is now
}

// recipientOptionsFrom reads --allow-expired from a command line, with warnings
// going to the app's stderr.
func recipientOptionsFrom(c *cli.Context) recipientOptions {
	return recipientOptions{AllowExpired: c.Bool(flagAllowExpired), Warn: errWriter(c)}
}

// loadRecipients reads the certificates of paths (PEM or DER; each file may hold
// several), dropping repeated public keys: a key is wrapped once per set. A
// certificate of a file that names no recipient (a CA beside leaves, an
// unsupported key beside usable ones) is named in a warning; an expired or not
// yet valid one is an error unless opts.AllowExpired.
func loadRecipients(paths []string, opts recipientOptions) ([]cipher.Recipient, error) {
	now, warn := opts.Now, opts.Warn
	if now.IsZero() {
		now = time.Now()
	}
	if warn == nil {
		warn = os.Stderr
	}
	var out []cipher.Recipient
	seen := map[cipher.Fingerprint]bool{}
	for _, p := range paths {
		b, err := cipher.ReadBundle(p)
		if err != nil {
			return nil, keyFileError(flagCert, p, "certificate", err)
		}
		for _, sk := range b.Skipped {
			fmt.Fprintf(warn, "imgtool: warning: --%s %s: %s\n", flagCert, p, sk)
		}
		for _, r := range b.Recipients {
			if err := cipher.CheckValidity(r.Certificate(), now); err != nil && !opts.AllowExpired {
				return nil, keyFileError(flagCert, p, "certificate", err)
			}
			if !seen[r.Fingerprint()] {
				seen[r.Fingerprint()] = true
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// recipientsOrDefault is loadRecipients for the command cmd, falling back to
// CRIUsec's default certificate when paths is empty and that file exists. No
// certificate at all is a usage error. Errors start with cmd, once. opts is
// optional (at most one): without it, warnings go to os.Stderr and expired
// certificates are refused.
func recipientsOrDefault(cmd string, paths []string, opts ...recipientOptions) ([]cipher.Recipient, error) {
	if len(paths) == 0 && fileExists(defaultCertPath) {
		paths = []string{defaultCertPath}
	}
	if len(paths) == 0 {
		return nil, usageError(fmt.Errorf("%s: need at least one --%s CERT.pem (the recipients' certificates)", cmd, flagCert))
	}
	var o recipientOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	rs, err := loadRecipients(paths, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return rs, nil
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// openSet opens the set in dir for reading, plain or encrypted, with the keys of
// k (or CRIUsec's default key when none is given and the set needs one). The
// plaintext of an encrypted set is only ever decrypted in memory.
func openSet(dir string, k keyOptions) (*imgset.Set, error) {
	ids, err := loadIdentities(k.KeyFiles)
	if err != nil {
		return nil, err
	}
	// Who wrote the set is checked before its header is opened or anything of it
	// decrypted (docs/format.md, Signatures).
	sig, err := k.signature(dir)
	if err != nil {
		return nil, err
	}
	// Every stored chunk is checked against the signature as it is read.
	opts := imgset.OpenOptions{Identities: ids, RequireEncrypted: k.RequireEncrypted, Signature: sig}
	set, err := imgset.Open(dir, opts)
	var kre *imgset.KeyRequiredError
	if errors.As(err, &kre) && len(k.KeyFiles) == 0 && fileExists(defaultKeyPath) {
		if opts.Identities, err = loadIdentities([]string{defaultKeyPath}); err != nil {
			return nil, err
		}
		set, err = imgset.Open(dir, opts)
	}
	if err != nil {
		return nil, explainOpenError(dir, ids, err)
	}
	if !set.Encrypted() && k.requireEncrypted() {
		return nil, fmt.Errorf("image set %s: %w: a key was given (--%s, or %s), so an encrypted set is expected; --%s to read it anyway",
			dir, imgset.ErrNotEncrypted, flagTLSKey, defaultKeyPath, flagAllowPlaintext)
	}
	if h := set.Header(); h == nil && sig != nil {
		// A plain set's id is its signature's, verified.
		if err := checkSetID(dir, k.ExpectSetID, &cipher.Header{SetID: sig.SetID}); err != nil {
			return nil, err
		}
	} else if err := k.checkSetID(dir, h); err != nil {
		return nil, err
	}
	return set, nil
}

// openSetFile opens the file at path through its image set when that set is
// encrypted (its folder holds the sealed header) or k requires encryption: the
// plaintext is decrypted in memory and authenticated chunk by chunk. handled is
// false for a file of a plain set, which the caller opens as it likes. An
// encrypted file whose header is not beside it is refused with a clear error.
func openSetFile(path string, k keyOptions) (rc io.ReadCloser, handled bool, err error) {
	dir := filepath.Dir(path)
	if !k.RequireEncrypted && !fileExists(filepath.Join(dir, imgset.HeaderName)) {
		if hasEncryptedMagic(path) {
			return nil, true, fmt.Errorf("%s is a file of an encrypted image set, but the set's header %s is not beside it: %w",
				path, imgset.HeaderName, imgset.ErrHeaderMissing)
		}
		if !k.requireEncrypted() && k.ExpectSetID == "" && !k.checksSignature(dir) {
			return nil, false, nil // a plaintext file, read as it is
		}
	}
	set, err := openSet(dir, k)
	if err != nil {
		return nil, true, err
	}
	f, err := set.Open(filepath.Base(path))
	if err != nil {
		return nil, true, err
	}
	return setFileReader{File: f, path: path}, true, nil
}

// setFileReader is a file of a set named by the path it was opened with, as an
// *os.File would be, for the codec's error messages.
type setFileReader struct {
	*imgset.File
	path string
}

func (r setFileReader) Name() string { return r.path }

// hasEncryptedMagic reports whether the file at path starts like an encrypted file
// of a set.
func hasEncryptedMagic(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	magic := make([]byte, len(cipher.FileMagic))
	_, err = io.ReadFull(f, magic)
	return err == nil && string(magic) == cipher.FileMagic
}

// explainOpenError rewords the errors of opening an encrypted set that are about
// the keys given, so that "no key", "not a recipient" and "damaged stanza" each say
// what to do. Other errors (a damaged set) pass through, naming the file.
func explainOpenError(dir string, ids []cipher.Identity, err error) error {
	var kre *imgset.KeyRequiredError
	switch {
	case errors.As(err, &kre):
		return reworded(err, "image set %s is encrypted, for %s: give the private key of one of them with --%s",
			dir, describeRecipients(kre.Recipients), flagTLSKey)
	case errors.Is(err, cipher.ErrNoRecipient):
		var fps []cipher.Fingerprint
		if h, herr := imgset.ReadHeader(dir); herr == nil {
			fps = h.Recipients()
		} else if h, herr := archive.SealedHeader(dir); herr == nil {
			fps = h.Recipients()
		}
		return reworded(err, "image set %s: the key given is not a recipient of this set (key %s; the set is encrypted for %s)",
			dir, describeIdentities(ids), describeRecipients(fps))
	case errors.Is(err, cipher.ErrWrongKey):
		return fmt.Errorf("image set %s: the header has a stanza for the key given, but it does not open with it: "+
			"the header was damaged or forged: %w", dir, err)
	}
	return err
}

// rewordedError is an error with a better message than the one it wraps: errors.Is
// and errors.As still see the original.
type rewordedError struct {
	msg string
	err error
}

func (e *rewordedError) Error() string { return e.msg }
func (e *rewordedError) Unwrap() error { return e.err }

func reworded(err error, format string, args ...any) error {
	return &rewordedError{msg: fmt.Sprintf(format, args...), err: err}
}

// recipientLine is how every command (keygen, encrypt, rekey, verify, inspect)
// shows a recipient: key type, quoted subject, fingerprint. A set's header keeps
// only the key's type and fingerprint, so a subject is "(subject unknown)" unless
// the certificate was given on the command line.
func recipientLine(keyType, subject string, fp cipher.Fingerprint) string {
	if subject == "" {
		return fmt.Sprintf("%s (subject unknown) %s", keyType, fp)
	}
	return fmt.Sprintf("%s %q %s", keyType, subject, fp)
}

// certRecipientLine is recipientLine for a recipient read from a certificate.
func certRecipientLine(r cipher.Recipient) string {
	if xr, ok := r.(*cipher.X509Recipient); ok {
		return recipientLine(xr.KeyType(), xr.Certificate().Subject.String(), xr.Fingerprint())
	}
	return fmt.Sprint(r)
}

// stanzaRecipientLine is recipientLine for a recipient of a set's header, with
// the subject of the certificate among known that has its fingerprint, if any.
func stanzaRecipientLine(s *cipher.Stanza, known []cipher.Recipient) string {
	for _, r := range known {
		if xr, ok := r.(*cipher.X509Recipient); ok && xr.Fingerprint() == s.Fingerprint {
			return certRecipientLine(xr)
		}
	}
	return recipientLine(cipher.StanzaKeyType(s), "", s.Fingerprint)
}

// stanzaRecipientLines is stanzaRecipientLine for each stanza.
func stanzaRecipientLines(stanzas []*cipher.Stanza, known []cipher.Recipient) []string {
	lines := make([]string, len(stanzas))
	for i, s := range stanzas {
		lines[i] = stanzaRecipientLine(s, known)
	}
	return lines
}

// writeRecipients prints "recipients (N):" and one indented recipientLine each.
func writeRecipients(w io.Writer, lines []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "recipients (%d):\n", len(lines))
	for _, l := range lines {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// describeRecipients lists fingerprints for a message.
func describeRecipients(fps []cipher.Fingerprint) string {
	if len(fps) == 0 {
		return "no readable recipient"
	}
	s := make([]string, len(fps))
	for i, fp := range fps {
		s[i] = fp.String()
	}
	return fmt.Sprintf("%d recipient(s) %s", len(fps), strings.Join(s, ", "))
}

// describeIdentities lists the fingerprints of keys for a message.
func describeIdentities(ids []cipher.Identity) string {
	var s []string
	for _, id := range ids {
		if f, ok := id.(interface{ Fingerprint() cipher.Fingerprint }); ok {
			s = append(s, f.Fingerprint().String())
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// errWriter is the app's stderr.
func errWriter(c *cli.Context) io.Writer {
	if c.App.ErrWriter != nil {
		return c.App.ErrWriter
	}
	return os.Stderr
}

// outWriter is the app's stdout.
func outWriter(c *cli.Context) io.Writer {
	if c.App.Writer != nil {
		return c.App.Writer
	}
	return os.Stdout
}

// setDirArg returns the set folder: -D, or the single positional argument.
func setDirArg(cmd string, dir string, args []string) (string, error) {
	switch {
	case dir != "" && len(args) > 0:
		return "", usageError(fmt.Errorf("%s: unexpected argument %q (the set is given with -D)", cmd, args[0]))
	case dir == "" && len(args) == 1:
		dir = args[0]
	case dir == "" && len(args) == 0:
		return "", usageError(fmt.Errorf("%s: need the image set folder: -D DIR", cmd))
	case dir == "":
		return "", usageError(fmt.Errorf("%s: need one image set folder, got %d arguments", cmd, len(args)))
	}
	return dir, checkCwd(cmd, dir)
}

// warnLeftovers tells the user about what interrupted runs left beside the set
// (an operation with -o does not touch them; an in-place one removes those of
// dead processes itself): the set itself is whole while its folder exists.
func warnLeftovers(w io.Writer, dir string) {
	left, err := imgset.ListLeftovers(dir)
	if err != nil || len(left) == 0 {
		return
	}
	s := make([]string, len(left))
	for i, l := range left {
		s[i] = fmt.Sprintf("%s (%s)", l.Path, l.Kind)
	}
	fmt.Fprintf(w, "imgtool: note: an interrupted run left %s beside %s; the set itself is whole. "+
		"The next in-place encrypt, decrypt or rekey of the set removes them.\n", strings.Join(s, ", "), dir)
}

// humanBytes renders a byte count in binary units.
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, units := float64(n)/1024, []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	u := 0
	for v >= 1024 && u < len(units)-1 {
		v, u = v/1024, u+1
	}
	return fmt.Sprintf("%.1f %s", v, units[u])
}

// dirBytes sums the sizes of the regular files of dir.
func dirBytes(dir string) (files int, bytes int64) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			files++
			bytes += info.Size()
		}
	}
	return files, bytes
}
