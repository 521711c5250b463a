package cipher

import (
	"bytes"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Framing is the first 8 bytes of a header file, chosen by the caller: this package
// knows nothing of what they mean. imgset writes CRIU's IMG_COMMON magic and its
// own image magic there, so that CRIU tools see a CRIU image of an unknown type.
type Framing [8]byte

// MACSize is the size of the header MAC (HMAC-SHA-256).
const MACSize = 32

// FileInfo is one manifest entry: a file of the set, its plaintext size and (v2)
// its random nonce.
type FileInfo struct {
	Name  string
	Size  int64
	Nonce FileNonce // zero in v1
}

// Header is a parsed header: the set's parameters, its recipient stanzas and its
// manifest. Parsing checks only the structure; nothing in a Header is authentic
// until Unwrap has checked the MAC.
type Header struct {
	Framing   Framing
	Version   int // MinHeaderVersion..HeaderVersion
	Algorithm Algorithm
	ChunkSize int
	SetID     SetID
	Stanzas   []*Stanza
	Files     []FileInfo // sorted by name, no duplicates
	MAC       [MACSize]byte

	signed []byte // the bytes the MAC covers
}

// Recipients returns the fingerprints of the header's stanzas, in order.
func (h *Header) Recipients() []Fingerprint {
	fps := make([]Fingerprint, len(h.Stanzas))
	for i, s := range h.Stanzas {
		fps[i] = s.Fingerprint
	}
	return fps
}

// File returns the manifest entry for name.
func (h *Header) File(name string) (FileInfo, bool) {
	i, ok := slices.BinarySearchFunc(h.Files, name, func(f FileInfo, n string) int { return strings.Compare(f.Name, n) })
	if !ok {
		return FileInfo{}, false
	}
	return h.Files[i], true
}

// Unwrap recovers the set's key with the identities, tried in order, and checks
// the header MAC with it: the first identity whose stanza opens to a key that
// authenticates the header wins. The key only opens files (see OpenKey). When none does, the error is the most serious
// failure met, in this order: ErrHeaderAuth (a key was recovered but the MAC
// does not match: the header was changed), ErrWrongKey (a stanza names a key but
// does not open with it: damaged or forged), any other error, and last
// ErrNoRecipient (no stanza names any key), as a *NoRecipientError that names
// every key tried.
func (h *Header) Unwrap(ids ...Identity) (*OpenKey, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: no key given", ErrNoRecipient)
	}
	var worst error
	worstRank := -1
	notFor := &NoRecipientError{Recipients: h.Recipients()}
	for _, id := range ids {
		key, err := h.unwrapOne(id)
		if err == nil {
			return key, nil
		}
		if nre := (*NoRecipientError)(nil); errors.As(err, &nre) {
			notFor.Keys = append(notFor.Keys, nre.Keys...)
			continue
		}
		if r := unwrapRank(err); r > worstRank {
			worst, worstRank = err, r
		}
	}
	if worst != nil {
		return nil, worst
	}
	return nil, notFor
}

// unwrapOne tries one identity: the set key if its stanza opens and the MAC
// matches. A failure to find a stanza is always a *NoRecipientError.
func (h *Header) unwrapOne(id Identity) (*OpenKey, error) {
	fileKey, err := id.Unwrap(h.Stanzas, WrapContext{Version: h.Version, SetID: h.SetID})
	if err != nil {
		if errors.Is(err, ErrNoRecipient) {
			var nre *NoRecipientError
			if !errors.As(err, &nre) {
				// An Identity of another package: name it as best we can.
				nre = &NoRecipientError{}
				if f, ok := id.(interface{ Fingerprint() Fingerprint }); ok {
					nre.Keys = []Fingerprint{f.Fingerprint()}
				}
			}
			return nil, nre
		}
		return nil, err
	}
	key := newOpenKey(fileKey, h.SetID, h.Algorithm, h.Version)
	if !hmac.Equal(key.headerMAC(h.signed), h.MAC[:]) {
		return nil, errorf(ErrHeaderAuth, "", -1,
			"the MAC does not match: parameters, recipients or manifest were changed after sealing")
	}
	return key, nil
}

// unwrapRank orders the failures of Unwrap, most serious highest.
func unwrapRank(err error) int {
	switch {
	case errors.Is(err, ErrHeaderAuth):
		return 3
	case errors.Is(err, ErrWrongKey):
		return 2
	}
	return 1
}

// SealHeader encodes the header of a new set for key with the given stanzas and
// manifest, and seals it with a MAC under key. files need not be sorted; in a v2
// set each must have been made by key (NewFile, or a Writer's Info).
func SealHeader(framing Framing, key *SetKey, stanzas []*Stanza, files []FileInfo) ([]byte, error) {
	if key.version >= 2 {
		for _, f := range files {
			if !key.drew(f) {
				return nil, fmt.Errorf("file %q: its nonce was not drawn by this key", f.Name)
			}
		}
	}
	return sealHeader(framing, &key.OpenKey, stanzas, files)
}

// Reseal encodes h again with other stanzas, sealed under key, which must be the
// key h opens with (Unwrap's): the version, the parameters, the set id and the
// manifest stay as they are. This is how rekey changes the recipients of a set
// without touching its files.
func (h *Header) Reseal(key *OpenKey, stanzas []*Stanza) ([]byte, error) {
	if key.id != h.SetID || key.algorithm != h.Algorithm || key.version != h.Version || !hmac.Equal(key.headerMAC(h.signed), h.MAC[:]) {
		return nil, errorf(ErrHeaderAuth, "", -1, "the key does not open this header")
	}
	return sealHeader(h.Framing, key, stanzas, h.Files)
}

// sealHeader encodes and seals a header of key's version.
func sealHeader(framing Framing, key *OpenKey, stanzas []*Stanza, files []FileInfo) ([]byte, error) {
	if len(stanzas) == 0 || len(stanzas) > MaxStanzas {
		return nil, fmt.Errorf("a set needs 1 to %d recipients, got %d", MaxStanzas, len(stanzas))
	}
	if len(files) > MaxFiles {
		return nil, fmt.Errorf("too many files: %d (limit %d)", len(files), MaxFiles)
	}
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b FileInfo) int { return strings.Compare(a.Name, b.Name) })
	seen := make(map[Fingerprint]bool)
	b := make([]byte, 0, 64+len(stanzas)*300+len(files)*48)
	b = append(b, framing[:]...)
	b = binary.LittleEndian.AppendUint16(b, uint16(key.version))
	b = binary.LittleEndian.AppendUint16(b, uint16(key.algorithm))
	b = binary.LittleEndian.AppendUint32(b, ChunkSize)
	b = append(b, key.id[:]...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(stanzas)))
	for _, s := range stanzas {
		if len(s.Type) == 0 || len(s.Type) > MaxStanzaType || !printable(s.Type) {
			return nil, fmt.Errorf("bad stanza type %q", s.Type)
		}
		if len(s.Body) == 0 || len(s.Body) > MaxStanzaBody {
			return nil, fmt.Errorf("stanza body of %d bytes (limit %d)", len(s.Body), MaxStanzaBody)
		}
		if seen[s.Fingerprint] {
			return nil, fmt.Errorf("recipient %s listed twice", s.Fingerprint)
		}
		seen[s.Fingerprint] = true
		b = append(b, byte(len(s.Type)))
		b = append(b, s.Type...)
		b = append(b, s.Fingerprint[:]...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(s.Body)))
		b = append(b, s.Body...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(files)))
	for i, f := range files {
		if err := checkName(f.Name); err != nil {
			return nil, err
		}
		if i > 0 && files[i-1].Name == f.Name {
			return nil, fmt.Errorf("file %q listed twice", f.Name)
		}
		if f.Size < 0 || f.Size > MaxFileSize {
			return nil, fmt.Errorf("file %q: size %d out of range", f.Name, f.Size)
		}
		b = append(b, byte(len(f.Name)))
		b = append(b, f.Name...)
		b = binary.LittleEndian.AppendUint64(b, uint64(f.Size))
		if key.version >= 2 {
			if f.Nonce == (FileNonce{}) {
				return nil, fmt.Errorf("file %q has no nonce", f.Name)
			}
			b = append(b, f.Nonce[:]...)
		}
	}
	b = append(b, key.headerMAC(b)...)
	if len(b) > MaxHeaderSize {
		return nil, fmt.Errorf("header of %d bytes exceeds the limit of %d", len(b), MaxHeaderSize)
	}
	return b, nil
}

// ReadHeader reads a whole header from r (at most MaxHeaderSize bytes) and parses it.
func ReadHeader(r io.Reader, framing Framing) (*Header, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxHeaderSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxHeaderSize {
		return nil, errorf(ErrMalformed, "", MaxHeaderSize, "header longer than the limit of %d bytes", MaxHeaderSize)
	}
	return ParseHeader(data, framing)
}

// ParseHeader parses the structure of a header. It checks the framing, every
// length against its limit and the bytes left, and that nothing follows the MAC;
// it cannot check the MAC (see Header.Unwrap).
func ParseHeader(data []byte, framing Framing) (*Header, error) {
	p := &parser{data: data}
	h := &Header{}
	copy(h.Framing[:], p.bytes(8, "framing"))
	if p.err == nil && h.Framing != framing {
		return nil, errorf(ErrMalformed, "", 0, "framing % x, want % x: not a header", h.Framing[:], framing[:])
	}
	h.Version = int(p.u16("version"))
	if p.err == nil && (h.Version < MinHeaderVersion || h.Version > HeaderVersion) {
		return nil, errorf(ErrMalformed, "", p.last, "header version %d, this build reads %d to %d", h.Version, MinHeaderVersion, HeaderVersion)
	}
	h.Algorithm = Algorithm(p.u16("AEAD"))
	if p.err == nil && !h.Algorithm.valid() {
		return nil, errorf(ErrMalformed, "", p.last, "unknown AEAD %d", uint16(h.Algorithm))
	}
	h.ChunkSize = int(p.u32("chunk size"))
	if p.err == nil && h.ChunkSize != ChunkSize {
		return nil, errorf(ErrMalformed, "", p.last, "chunk size %d, want %d", h.ChunkSize, ChunkSize)
	}
	copy(h.SetID[:], p.bytes(SetIDSize, "set id"))
	h.Stanzas = p.stanzas()
	h.Files = p.manifest(h.Version)
	macAt := p.off
	copy(h.MAC[:], p.bytes(MACSize, "MAC"))
	if p.err != nil {
		return nil, p.err
	}
	if p.off != len(data) {
		return nil, errorf(ErrMalformed, "", int64(p.off), "%d bytes after the MAC", len(data)-p.off)
	}
	h.signed = data[:macAt]
	return h, nil
}

// parser reads little-endian fields from a byte slice, remembering the first error.
type parser struct {
	data []byte
	off  int
	last int64 // offset of the last field read, for errors
	err  error
}

func (p *parser) bytes(n int, what string) []byte {
	if p.err != nil {
		return nil
	}
	p.last = int64(p.off)
	if n < 0 || n > len(p.data)-p.off {
		p.err = errorf(ErrMalformed, "", int64(p.off), "truncated header: %s needs %d bytes, %d left", what, n, len(p.data)-p.off)
		return nil
	}
	b := p.data[p.off : p.off+n]
	p.off += n
	return b
}

func (p *parser) u8(what string) uint8 {
	if b := p.bytes(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (p *parser) u16(what string) uint16 {
	if b := p.bytes(2, what); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (p *parser) u32(what string) uint32 {
	if b := p.bytes(4, what); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (p *parser) u64(what string) uint64 {
	if b := p.bytes(8, what); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// fail records a malformed-field error at the last field read.
func (p *parser) fail(format string, args ...any) {
	if p.err == nil {
		p.err = errorf(ErrMalformed, "", p.last, format, args...)
	}
}

// minStanza is the smallest encoded stanza: type length, 1-byte type, fingerprint,
// body length, 1-byte body.
const minStanza = 1 + 1 + FingerprintSize + 2 + 1

func (p *parser) stanzas() []*Stanza {
	n := int(p.u16("stanza count"))
	if p.err != nil {
		return nil
	}
	if n == 0 || n > MaxStanzas || n*minStanza > len(p.data)-p.off {
		p.fail("stanza count %d out of range (1 to %d, and the bytes left)", n, MaxStanzas)
		return nil
	}
	out := make([]*Stanza, 0, n)
	seen := make(map[Fingerprint]bool, n)
	for i := 0; i < n && p.err == nil; i++ {
		s := &Stanza{}
		tlen := int(p.u8("stanza type length"))
		if p.err == nil && (tlen == 0 || tlen > MaxStanzaType) {
			p.fail("stanza %d: type length %d out of range (1 to %d)", i, tlen, MaxStanzaType)
		}
		s.Type = string(p.bytes(tlen, "stanza type"))
		if p.err == nil && !printable(s.Type) {
			p.fail("stanza %d: type is not printable ASCII", i)
		}
		copy(s.Fingerprint[:], p.bytes(FingerprintSize, "stanza fingerprint"))
		if p.err == nil && seen[s.Fingerprint] {
			p.fail("stanza %d: recipient %s listed twice", i, s.Fingerprint)
		}
		seen[s.Fingerprint] = true
		blen := int(p.u16("stanza body length"))
		if p.err == nil && (blen == 0 || blen > MaxStanzaBody) {
			p.fail("stanza %d: body length %d out of range (1 to %d)", i, blen, MaxStanzaBody)
		}
		s.Body = bytes.Clone(p.bytes(blen, "stanza body"))
		out = append(out, s)
	}
	return out
}

// listedName reads the name of entry i of a sorted file list (the manifest, a signature's
// list): a length byte and the name, one path element, after prev.
func (p *parser) listedName(i int, prev, list string) string {
	nlen := int(p.u8("name length"))
	name := string(p.bytes(nlen, "file name"))
	if p.err == nil {
		if err := checkName(name); err != nil {
			p.fail("file %d: %v", i, err)
		} else if i > 0 && prev >= name {
			p.fail("file %d: %q is not after %q: %s must be sorted, without duplicates", i, name, prev, list)
		}
	}
	return name
}

// minFileEntry is the smallest encoded manifest entry: name length, 1-byte name,
// size, and from v2 on the nonce.
func minFileEntry(version int) int {
	if version >= 2 {
		return 1 + 1 + 8 + FileNonceSize
	}
	return 1 + 1 + 8
}

func (p *parser) manifest(version int) []FileInfo {
	n := int(p.u32("file count"))
	if p.err != nil {
		return nil
	}
	if n > MaxFiles || n*minFileEntry(version) > len(p.data)-p.off {
		p.fail("file count %d out of range (0 to %d, and the bytes left)", n, MaxFiles)
		return nil
	}
	out := make([]FileInfo, 0, n)
	for i := 0; i < n && p.err == nil; i++ {
		prev := ""
		if i > 0 {
			prev = out[i-1].Name
		}
		name := p.listedName(i, prev, "the manifest")
		size := p.u64("file size")
		if p.err == nil && size > MaxFileSize {
			p.fail("file %q: size %d out of range (limit %d)", name, size, int64(MaxFileSize))
		}
		f := FileInfo{Name: name, Size: int64(size)}
		if version >= 2 {
			copy(f.Nonce[:], p.bytes(FileNonceSize, "file nonce"))
			if p.err == nil && f.Nonce == (FileNonce{}) {
				p.fail("file %q: zero nonce", name)
			}
		}
		out = append(out, f)
	}
	return out
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// checkName accepts the names a file of a set may have: a single path element of
// 1 to MaxNameLen bytes, without NUL, "/", or the names "." and "..".
func checkName(name string) error {
	switch {
	case name == "" || len(name) > MaxNameLen:
		return fmt.Errorf("file name of %d bytes (want 1 to %d)", len(name), MaxNameLen)
	case name == "." || name == "..", strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("bad file name %q", name)
	}
	return nil
}
