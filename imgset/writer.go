package imgset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/internal/par"
)

// CreateOptions says how to write a new set.
type CreateOptions struct {
	// Recipients make the set encrypted: each file is encrypted as it is written
	// and the file key is wrapped for each of them. None: a plaintext set.
	Recipients []cipher.Recipient
	// Algorithm is the AEAD of an encrypted set; zero means cipher.AES256GCM.
	Algorithm cipher.Algorithm
	// Cleaned, if not nil, is told the leftovers of earlier runs that died while
	// writing the same target (see ListLeftovers), which Create removed.
	Cleaned func(removed []string)
	// Signer, if not nil, signs the set: Commit writes SignName into the new set
	// before it is put in place, so the set appears signed or not at all.
	Signer *cipher.Signer
}

// Writer writes a new image set. Files go to a temporary folder beside the target,
// which Commit renames into place; until then the target does not change.
type Writer struct {
	dir, tmp string
	tmpLock  *setLock // held on tmp while it exists, so no cleaner removes it
	replace  *setLock // the locked set at dir that Commit exchanges with the new one; nil: a new set
	dirMode  os.FileMode
	ctx      context.Context // nil: never stopped; else the copy and Commit stop once it is done
	key      *cipher.SetKey
	stanzas  []*cipher.Stanza
	signer   *cipher.Signer
	files    map[string]*setFile
	filesMu  sync.Mutex // files, while they are being created
	done     bool

	syncMu   sync.Mutex
	unsynced []*setFile // closed files whose data is not yet synced
}

// Durability is batched. The set becomes visible only at Commit, so a file needs
// to be on disk only by then, not when it is closed: closed files are kept open
// and fsynced syncBatch at a time, by syncWorkers goroutines, so that one slow
// fsync (a journal commit) covers many files instead of each file paying its own
// in turn. Then the header, the folder and (after the rename) its parent are
// synced, in that order, which is what the atomicity guarantee needs. syncfs(2)
// would be one call, but it also flushes whatever else is dirty on the
// filesystem, at a cost that has nothing to do with this set.
const (
	syncBatch   = 64
	syncWorkers = 8
)

// Create starts writing a new set that Commit will place at dir. dir must not exist,
// or be an empty folder. What earlier writers of dir that died (SIGKILL, a crash)
// left beside it is removed first (see opts.Cleaned).
func Create(dir string, opts CreateOptions) (*Writer, error) {
	if err := checkTarget(dir); err != nil {
		return nil, err
	}
	return createBeside(dir, opts, nil, 0o700)
}

// createBeside makes the Writer and its temporary folder next to dir; the new set's
// folder will have dirMode. With replace (the lock of the set at dir), Commit swaps
// the new set with that one (an in-place rewrite).
func createBeside(dir string, opts CreateOptions, replace *setLock, dirMode os.FileMode) (*Writer, error) {
	w := &Writer{dir: dir, replace: replace, dirMode: dirMode.Perm(), files: map[string]*setFile{}, signer: opts.Signer}
	if len(opts.Recipients) > 0 {
		alg := opts.Algorithm
		if alg == 0 {
			alg = cipher.AES256GCM
		}
		key, err := cipher.NewSetKey(alg)
		if err != nil {
			return nil, err
		}
		if len(opts.Recipients) > cipher.MaxStanzas {
			return nil, fmt.Errorf("image set %s: %d recipients, the limit is %d", dir, len(opts.Recipients), cipher.MaxStanzas)
		}
		if w.stanzas, err = key.Wrap(opts.Recipients...); err != nil {
			return nil, fmt.Errorf("image set %s: %w", dir, err)
		}
		w.key = key
	}
	var replaces uint64
	if replace != nil {
		replaces = replace.Ino()
	} else if removed := removeStaleOutput(dir); len(removed) > 0 && opts.Cleaned != nil {
		opts.Cleaned(removed)
	}
	tmp, lock, err := makeTempDir(dir, newPrefix(dir, replaces))
	if err != nil {
		return nil, fmt.Errorf("image set %s: %w", dir, err)
	}
	w.tmp, w.tmpLock = tmp, lock
	return w, nil
}

func checkTarget(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("image set %s: %w", dir, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("image set %s: folder exists and is not empty", dir)
	}
	return nil
}

// Encrypted reports whether the set being written is encrypted.
func (w *Writer) Encrypted() bool { return w.key != nil }

// Create creates one file of the set, with mode 0600. For an encrypted set the
// returned writer encrypts as it goes: only ciphertext reaches the disk. Close it
// when done (Commit closes any file left open). Files may be created, written and
// closed from several goroutines at once, each its own; Commit comes after.
func (w *Writer) Create(name string) (io.WriteCloser, error) {
	sf, err := w.createFile(name, 0o600, true)
	if err != nil {
		return nil, err
	}
	if sf.enc != nil {
		return encFile{sf}, nil
	}
	return sf, nil
}

// createFile is Create with the file's permission bits (applied as given, without
// the umask, as a rewrite keeps each file's mode). With stream false the file of
// an encrypted set gets no encrypting writer: it is to be filled by copyAt.
func (w *Writer) createFile(name string, perm os.FileMode, stream bool) (*setFile, error) {
	if err := w.reserve(name); err != nil {
		return nil, err
	}
	// The file is made outside the lock: a dump creates its thousands of small files from
	// every core at once, and the lock held across the open made them one at a time.
	sf, err := w.openFile(name, perm, stream)
	w.filesMu.Lock()
	defer w.filesMu.Unlock()
	if err != nil {
		delete(w.files, name)
		return nil, err
	}
	w.files[name] = sf
	return sf, nil
}

// reserve claims name for a file being created (a nil entry of files until it is open).
func (w *Writer) reserve(name string) error {
	w.filesMu.Lock()
	defer w.filesMu.Unlock()
	if w.done {
		return errors.New("image set: writer already committed or aborted")
	}
	if !validName(name) || name == HeaderName {
		return fmt.Errorf("image set %s: bad file name %q", w.dir, name)
	}
	if _, dup := w.files[name]; dup {
		return fmt.Errorf("image set %s: file %s written twice", w.dir, name)
	}
	w.files[name] = nil
	return nil
}

// openFile creates the file name of the set, with its encryptor if the set is encrypted
// and stream.
func (w *Writer) openFile(name string, perm os.FileMode, stream bool) (*setFile, error) {
	f, err := os.OpenFile(filepath.Join(w.tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if perm = perm.Perm(); perm != 0o600 {
		if err := f.Chmod(perm); err != nil {
			f.Close()
			return nil, err
		}
	}
	sf := &setFile{name: name, f: f, w: w}
	if w.key != nil && stream {
		if sf.enc, err = w.key.NewWriter(streamFile{File: f, at: w.positional(f)}, name); err == nil && w.signer != nil {
			err = sf.enc.HashChunks() // for the signature, as each chunk is sealed
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("image set %s: %s: %w", w.dir, name, err)
		}
	}
	return sf, nil
}

// setFile is one file being written: plain, or encrypted through enc.
type setFile struct {
	name   string
	w      *Writer
	f      *os.File
	enc    *cipher.Writer
	size   int64              // plaintext bytes written
	info   cipher.FileInfo    // an encrypted file's manifest entry, once closed
	hashes cipher.ChunkHashes // an encrypted file's sealed chunk hashes, when signing
	closed bool
	err    error // first error, sticky
}

func (s *setFile) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	var n int
	if s.enc != nil {
		n, s.err = s.enc.Write(p)
	} else {
		n, s.err = s.f.Write(p)
	}
	s.size += int64(n)
	return n, s.err
}

// copyUnit is the part of src one goroutine of ReadFromAt reads and writes at a time:
// large enough that the per-call costs vanish, small enough to stay in its core's cache.
const copyUnit = 1 << 20

// copyBufs keeps ReadFromAt's buffers from one file to the next: a dump of a tree writes
// a pages file a process.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyUnit); return &b }}

// ReadFromAt copies the size bytes of src into the plain file, on every core: each
// goroutine reads a unit of copyUnit bytes into a buffer of its own and writes it at its
// place in the file, so that reading src (a process's memory, for a dump) and writing
// the file overlap without a buffer passed between cores. src must be safe for
// concurrent use. progress, if not nil, is told the bytes done, from the caller's
// goroutine. (encFile's ReadFromAt encrypts instead.)
func (s *setFile) ReadFromAt(src io.ReaderAt, size int64, progress func(n int64)) error {
	if s.err != nil {
		return s.err
	}
	base := s.size
	done := make(chan int64, 64)
	var err error
	go func() {
		defer close(done)
		err = par.EachUntil(int((size+copyUnit-1)/copyUnit), func(u int) error {
			bp := copyBufs.Get().(*[]byte)
			defer copyBufs.Put(bp)
			off := int64(u) * copyUnit
			b := (*bp)[:min(copyUnit, size-off)]
			// A ReaderAt may say io.EOF with the last bytes: only a short read fails.
			if n, err := src.ReadAt(b, off); n < len(b) {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			if _, err := s.f.WriteAt(b, base+off); err != nil {
				return err
			}
			done <- int64(len(b))
			return nil
		})
	}()
	for n := range done {
		if progress != nil {
			progress(n)
		}
	}
	if err != nil {
		s.err = err
		return err
	}
	s.size += size
	// Written in place, not through the file's offset: a Write after goes on from the end.
	if _, err := s.f.Seek(s.size, io.SeekStart); err != nil {
		s.err = err
		return err
	}
	return nil
}

// ReadFrom lets io.Copy fill the encryption batches directly. A plain file is
// given to a reader that writes itself (io.WriterTo: a pipe that splices into
// it, say), else filled by the file's own ReadFrom.
func (s *setFile) ReadFrom(r io.Reader) (int64, error) {
	if s.err != nil {
		return 0, s.err
	}
	var n int64
	if s.enc != nil {
		n, s.err = s.enc.ReadFrom(r)
	} else if wt, ok := r.(io.WriterTo); ok {
		n, s.err = wt.WriteTo(s.f)
	} else {
		n, s.err = s.f.ReadFrom(r)
	}
	s.size += n
	return n, s.err
}

// copyAt fills the file, created without a stream, with the whole plaintext of
// in, through the positional parallel path of cipher: encrypted from a plaintext
// file, or decrypted from an encrypted one into a plaintext set. Copying between
// two encrypted sets (a rotation) goes through the stream instead.
func (s *setFile) copyAt(in *File, progress func(int64)) error {
	switch {
	case s.w.key != nil && in.dec == nil:
		s.info, s.hashes, s.err = s.w.key.EncryptAt(s.w.positional(s.f), in.ra, in.size, s.name, progress, s.w.signer != nil)
	case s.w.key == nil && in.dec != nil:
		s.err = in.dec.DecryptAt(s.w.positional(s.f), progress)
	default:
		s.err = fmt.Errorf("%s: a positional copy needs exactly one of the two sets encrypted", s.name)
	}
	if s.err == nil {
		s.size = in.size
	}
	return s.err
}

// Close finishes the file (the last chunk of an encrypted one). Its sync is
// batched with other files' (see syncBatch); a sync error is reported by Commit.
func (s *setFile) Close() error {
	if s.closed {
		return s.err
	}
	s.closed = true
	if s.enc != nil {
		if s.err != nil {
			s.enc.Abort()
		} else if s.err = s.enc.Close(); s.err == nil {
			s.info, s.hashes = s.enc.Info(), s.enc.ChunkHashes()
		}
	}
	if s.err != nil {
		s.f.Close()
		return s.err
	}
	s.w.syncLater(s)
	return nil
}

// syncLater keeps a closed file open until it is synced with a batch.
func (w *Writer) syncLater(s *setFile) {
	w.syncMu.Lock()
	w.unsynced = append(w.unsynced, s)
	full := len(w.unsynced) >= syncBatch
	w.syncMu.Unlock()
	if full {
		w.syncClosed(true)
	}
}

// syncClosed syncs (or, without sync, only closes) every closed file not yet
// synced, in parallel, recording each failure in its file.
func (w *Writer) syncClosed(durable bool) {
	w.syncMu.Lock()
	files := w.unsynced
	w.unsynced = nil
	w.syncMu.Unlock()
	work := make(chan *setFile)
	var wg sync.WaitGroup
	for range min(len(files), syncWorkers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				var err error
				if durable {
					err = s.f.Sync()
				}
				if cerr := s.f.Close(); err == nil {
					err = cerr
				}
				s.err = err
			}
		}()
	}
	for _, s := range files {
		work <- s
	}
	close(work)
	wg.Wait()
}

// Commit makes the set durable and puts it in place at dir: the files are closed
// and synced, an encrypted set gets its sealed header with the manifest of every
// file written, and the temporary folder is renamed to dir (or, for an in-place
// rewrite, exchanged with it atomically). On error nothing is left behind.
func (w *Writer) Commit() error {
	if w.done {
		return errors.New("image set: writer already committed or aborted")
	}
	w.done = true
	defer w.tmpLock.Unlock()
	if err := w.finish(); err != nil {
		os.RemoveAll(w.tmp)
		return err
	}
	// The last moment to stop: once the set is in place, the operation is done.
	if w.ctx != nil && w.ctx.Err() != nil {
		return stopped(w.ctx, w.dir, w.tmp, os.RemoveAll(w.tmp), w.replace != nil)
	}
	if w.replace != nil {
		return exchangeInto(w.tmp, w.dir, w.replace)
	}
	if err := checkTarget(w.dir); err != nil {
		os.RemoveAll(w.tmp)
		return err
	}
	os.Remove(w.dir) // an empty target folder, if any
	if err := os.Rename(w.tmp, w.dir); err != nil {
		os.RemoveAll(w.tmp)
		return fmt.Errorf("image set %s: %w", w.dir, err)
	}
	return syncDir(parentDir(w.dir))
}

// finish closes every file, writes the header of an encrypted set, and syncs the
// temporary folder.
func (w *Writer) finish() error {
	names := make([]string, 0, len(w.files))
	for name := range w.files {
		names = append(names, name)
	}
	sort.Strings(names)
	manifest := make([]cipher.FileInfo, 0, len(names))
	for _, name := range names {
		sf := w.files[name]
		if err := sf.Close(); err != nil {
			w.abortFiles() // the files after it are still open, their encryptors running
			w.syncClosed(false)
			return fmt.Errorf("image set %s: %s: %w", w.dir, name, err)
		}
		fi := sf.info
		if fi.Name != name || fi.Size != sf.size {
			fi = cipher.FileInfo{Name: name, Size: sf.size} // a plain set's file
		}
		manifest = append(manifest, fi)
	}
	w.syncClosed(true)
	for _, name := range names {
		if err := w.files[name].err; err != nil {
			return fmt.Errorf("image set %s: %s: %w", w.dir, name, err)
		}
	}
	if w.key != nil {
		hdr, err := cipher.SealHeader(HeaderFraming, w.key, w.stanzas, manifest)
		if err != nil {
			return fmt.Errorf("image set %s: %w", w.dir, err)
		}
		// Readable by whoever may list the folder: it holds no secret, and
		// readers need it.
		if err := writeFileSync(filepath.Join(w.tmp, HeaderName), hdr, w.dirMode&^0o111); err != nil {
			return fmt.Errorf("image set %s: %w", w.dir, err)
		}
	}
	if w.signer != nil {
		// An encrypted file's chunks were hashed as they were sealed; a plain
		// set's files are read and hashed now.
		known := map[string]cipher.ChunkHashes{}
		for name, sf := range w.files {
			if sf.hashes != nil {
				known[name] = sf.hashes
			}
		}
		sig, err := signatureOf(w.tmp, w.signer, time.Now(), known)
		if err != nil {
			return fmt.Errorf("image set %s: signing: %w", w.dir, err)
		}
		if err := writeFileSync(filepath.Join(w.tmp, SignName), sig, w.dirMode&^0o111); err != nil {
			return fmt.Errorf("image set %s: %w", w.dir, err)
		}
	}
	if err := os.Chmod(w.tmp, w.dirMode); err != nil {
		return err
	}
	return syncDir(w.tmp)
}

// Abort removes everything written. It is safe to call after Commit (it does nothing).
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.abortFiles()
	w.syncClosed(false)
	err := os.RemoveAll(w.tmp)
	w.tmpLock.Unlock()
	return err
}

// stop aborts the writer because its context is done, and says so.
func (w *Writer) stop() error {
	return stopped(w.ctx, w.dir, w.tmp, w.Abort(), w.replace != nil)
}

// positional is positional(f) for a file of this set: once the writer's context
// is done, its writes fail, which stops a long copy at its next batch.
func (w *Writer) positional(f *os.File) fileAt {
	if w.ctx == nil {
		return positional(f)
	}
	return ctxAt{fileAt: positional(f), ctx: w.ctx}
}

// abortFiles closes every file not closed yet without finishing it.
func (w *Writer) abortFiles() {
	for _, sf := range w.files {
		if sf.closed {
			continue
		}
		if sf.err == nil {
			sf.err = errors.New("aborted")
		}
		sf.Close()
	}
}

// writeFileSync writes a new file with mode perm (not masked by the umask) and
// syncs it.
func writeFileSync(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if perm != 0o600 {
		if err := f.Chmod(perm); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// encFile is a file of an encrypted set being written: a setFile that can also
// take its plaintext from an io.ReaderAt.
type encFile struct{ *setFile }

// ReadFromAt encrypts the size bytes of src into the file, reading each chunk
// straight into the buffer it is sealed in (see cipher.Writer.ReadFromAt): src
// is read at several offsets at once and must be safe for concurrent use.
// progress, if not nil, is told the bytes done, from the caller's goroutine.
func (e encFile) ReadFromAt(src io.ReaderAt, size int64, progress func(n int64)) error {
	s := e.setFile
	if s.err != nil {
		return s.err
	}
	if s.err = s.enc.ReadFromAt(src, size, progress); s.err == nil {
		s.size += size
	}
	return s.err
}

// Folder is a folder of files that is not a set (decode -D's JSON files), written
// beside its target and renamed into place once whole, with a new set's naming,
// locking and removal of dead runs' leftovers: a killed run leaves a folder that
// ListLeftovers lists and the next run writing the same target removes.
type Folder struct {
	Path   string // the temporary folder to fill
	target string
	lock   *setLock
	done   bool
}

// CreateFolder starts a Folder that Commit puts at target (missing, or an empty
// folder). It first removes what dead earlier runs writing target left beside
// it, and tells cleaned, if not nil.
func CreateFolder(target string, cleaned func(removed []string)) (*Folder, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	if removed := removeStaleOutput(target); len(removed) > 0 && cleaned != nil {
		cleaned(removed)
	}
	tmp, lock, err := makeTempDir(target, newPrefix(target, 0))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", target, err)
	}
	return &Folder{Path: tmp, target: target, lock: lock}, nil
}

// Check returns nil while ctx is not done. Once it is, it removes the folder and
// returns a *StoppedError that says so.
func (f *Folder) Check(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	return stopped(ctx, f.target, f.Path, f.Abort(), false)
}

// Commit gives the folder the permission bits perm and renames it to its target.
// On error the folder is removed.
func (f *Folder) Commit(perm os.FileMode) error {
	if f.done {
		return errors.New("folder already committed or aborted")
	}
	f.done = true
	defer f.lock.Unlock()
	err := os.Chmod(f.Path, perm)
	if err == nil {
		err = checkTarget(f.target)
	}
	if err == nil {
		os.Remove(f.target) // an empty target folder, if any
		err = os.Rename(f.Path, f.target)
	}
	if err != nil {
		os.RemoveAll(f.Path)
	}
	return err
}

// Abort removes the folder. It is safe to call after Commit (it does nothing).
func (f *Folder) Abort() error {
	if f.done {
		return nil
	}
	f.done = true
	err := os.RemoveAll(f.Path)
	f.lock.Unlock()
	return err
}
