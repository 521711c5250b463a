package cipher

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Signatures: who wrote a set. Encryption says who can read a set, never who
// wrote it: anyone with a recipient's certificate can make a set for it. A
// signature block names the writer (an X.509 chain, signer first) and binds the
// exact bytes of every file of the set to it: the SHA-256 of each stored chunk
// (chunks.go), so that readers check each chunk where they already read it. This
// file knows the block's layout and the cryptography; which files a set has and
// how they are framed is the caller's (package imgset). See docs/format.md,
// part 5.

// SignVersion is the version of the signature layout this package writes and
// reads. Version 1 (one SHA-256 per file) is no longer read.
const SignVersion = 2

// signContext starts every signed message, so that a signature of a set can never
// be taken for a signature of anything else made with the same key.
const signContext = "imgtool-sign/v2\x00"

// SignAlgorithm is a signature algorithm of the block.
type SignAlgorithm uint16

// Signature algorithms. Each signs a hash of the message: SHA-384 for P-384,
// SHA-256 for the others. Ed25519 signs the 32-byte SHA-256 hash (pure Ed25519
// over the hash); RSA-PSS uses a salt as long as the hash.
const (
	SignECDSAP256 SignAlgorithm = 1 // ECDSA P-256, SHA-256, ASN.1 DER signature
	SignECDSAP384 SignAlgorithm = 2 // ECDSA P-384, SHA-384, ASN.1 DER signature
	SignEd25519   SignAlgorithm = 3 // Ed25519 over the SHA-256 hash
	SignRSAPSS    SignAlgorithm = 4 // RSA-PSS, SHA-256, RSA of MinRSABits..MaxRSABits
)

func (a SignAlgorithm) String() string {
	switch a {
	case SignECDSAP256:
		return "ECDSA P-256 SHA-256"
	case SignECDSAP384:
		return "ECDSA P-384 SHA-384"
	case SignEd25519:
		return "Ed25519"
	case SignRSAPSS:
		return "RSA-PSS SHA-256"
	}
	return fmt.Sprintf("signature algorithm %d", uint16(a))
}

func (a SignAlgorithm) valid() bool { return a >= SignECDSAP256 && a <= SignRSAPSS }

// digest is the hash of the signed message for a.
func (a SignAlgorithm) digest(signed []byte) []byte {
	if a == SignECDSAP384 {
		h := sha512.New384()
		h.Write([]byte(signContext))
		h.Write(signed)
		return h.Sum(nil)
	}
	h := sha256.New()
	h.Write([]byte(signContext))
	h.Write(signed)
	return h.Sum(nil)
}

// Errors of signatures, for errors.Is.
var (
	// ErrBadSignature: the signature does not verify with the signer's key: the
	// block or what it lists was changed after signing, or it was forged.
	ErrBadSignature = errors.New("bad signature")
	// ErrUntrustedSigner: the signature is sound but its signer does not chain to
	// a trust anchor (or its certificate may not sign, or was not valid then).
	ErrUntrustedSigner = errors.New("untrusted signer")
)

// SignedFile is one entry of a signature's file list: a stored file, its stored
// size, and the SHA-256 of each of its stored chunks (StoredChunks): the sealed
// chunks of an encrypted file, the 64 KiB blocks of a plain one.
type SignedFile struct {
	Name   string
	Size   int64
	Chunks ChunkHashes
}

// Signature is a parsed signature block. Parsing checks only the structure;
// nothing in it is authentic until Verify has returned nil.
type Signature struct {
	Framing   Framing
	Version   int
	Algorithm SignAlgorithm
	SetID     SetID
	Created   time.Time
	Chain     []*x509.Certificate // signer first
	SealHash  [HashSize]byte      // SHA-256 of the header file; zero for a plain set
	Files     []SignedFile        // sorted by name, no duplicates
	Sig       []byte

	signed   []byte // from the version to the end of the file list
	verified bool   // Verify returned nil
}

// Encrypted reports whether the signed set is encrypted (it lists a header).
func (s *Signature) Encrypted() bool { return s.SealHash != [HashSize]byte{} }

// Verified reports whether Verify accepted the signature: only then are its
// hashes to be checked against (ReaderAt.CheckSigned, NewSignedReaderAt).
func (s *Signature) Verified() bool { return s.verified }

// Signer returns the signer's certificate.
func (s *Signature) Signer() *x509.Certificate { return s.Chain[0] }

// File returns the entry for name.
func (s *Signature) File(name string) (SignedFile, bool) {
	i, ok := slices.BinarySearchFunc(s.Files, name, func(f SignedFile, n string) int { return strings.Compare(f.Name, n) })
	if !ok {
		return SignedFile{}, false
	}
	return s.Files[i], true
}

// Signer is a private key and its certificate chain, signer first: what signs sets.
type Signer struct {
	key   crypto.Signer
	chain []*x509.Certificate
	alg   SignAlgorithm
}

// Chain returns the signer's certificate chain, signer first.
func (s *Signer) Chain() []*x509.Certificate { return s.chain }

// Algorithm returns the algorithm the signer signs with.
func (s *Signer) Algorithm() SignAlgorithm { return s.alg }

// NewSigner pairs a private key (ECDSA P-256 or P-384, Ed25519, RSA of
// MinRSABits..MaxRSABits) with its certificate chain, signer first. The key must
// be the first certificate's, and that certificate must allow signing.
func NewSigner(key crypto.PrivateKey, chain []*x509.Certificate) (*Signer, error) {
	if len(chain) == 0 || len(chain) > MaxSignChain {
		return nil, fmt.Errorf("a signature needs 1 to %d certificates, got %d", MaxSignChain, len(chain))
	}
	for _, c := range chain {
		if len(c.Raw) > MaxSignCertSize {
			return nil, fmt.Errorf("certificate %q of %d bytes exceeds the limit of %d", c.Subject, len(c.Raw), MaxSignCertSize)
		}
	}
	cs, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %T cannot sign", ErrUnsupportedKey, key)
	}
	alg, err := signAlgorithmOf(cs.Public())
	if err != nil {
		return nil, err
	}
	pub, ok := cs.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, fmt.Errorf("the signing key is not the key of certificate %q", chain[0].Subject.String())
	}
	if err := checkSignUsage(chain[0]); err != nil {
		return nil, err
	}
	return &Signer{key: cs, chain: chain, alg: alg}, nil
}

// signAlgorithmOf is the algorithm a public key signs with.
func signAlgorithmOf(pub crypto.PublicKey) (SignAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return SignECDSAP256, nil
		case elliptic.P384():
			return SignECDSAP384, nil
		}
		return 0, fmt.Errorf("%w: ECDSA curve %s (P-256 or P-384 sign)", ErrUnsupportedKey, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return SignEd25519, nil
	case *rsa.PublicKey:
		if err := checkRSASize(k.N.BitLen()); err != nil {
			return 0, err
		}
		return SignRSAPSS, nil
	}
	return 0, fmt.Errorf("%w: a %T key cannot sign sets", ErrUnsupportedKey, pub)
}

// checkSignUsage refuses a signer certificate whose KeyUsage, when present, does
// not include DigitalSignature (an encryption-only certificate).
func checkSignUsage(c *x509.Certificate) error {
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("%w: certificate %q does not allow digital signatures (KeyUsage)", ErrUntrustedSigner, c.Subject.String())
	}
	return nil
}

// Sign encodes and signs a signature block for the set setID, made at created,
// whose header file has the SHA-256 sealHash (zero for a plain set) and whose
// files are files (in any order), each with the hash of every stored chunk.
func (s *Signer) Sign(framing Framing, setID SetID, created time.Time, sealHash [HashSize]byte, files []SignedFile) ([]byte, error) {
	if len(files) > MaxFiles {
		return nil, fmt.Errorf("too many files: %d (limit %d)", len(files), MaxFiles)
	}
	if created.UnixNano() <= 0 {
		return nil, fmt.Errorf("creation time %s out of range", created)
	}
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b SignedFile) int { return strings.Compare(a.Name, b.Name) })
	b := make([]byte, 0, 256+len(files)*80)
	b = append(b, framing[:]...)
	b = binary.LittleEndian.AppendUint16(b, SignVersion)
	b = binary.LittleEndian.AppendUint16(b, uint16(s.alg))
	b = append(b, setID[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(created.UnixNano()))
	b = append(b, byte(len(s.chain)))
	for _, c := range s.chain {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(c.Raw)))
		b = append(b, c.Raw...)
	}
	b = append(b, sealHash[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(files)))
	for i, f := range files {
		if err := checkName(f.Name); err != nil {
			return nil, err
		}
		if i > 0 && files[i-1].Name == f.Name {
			return nil, fmt.Errorf("file %q listed twice", f.Name)
		}
		n, err := StoredChunks(f.Size, sealHash != [HashSize]byte{})
		if err != nil {
			return nil, fmt.Errorf("file %q: %w", f.Name, err)
		}
		if len(f.Chunks) != int(n)*HashSize {
			return nil, fmt.Errorf("file %q: %d bytes of chunk hashes for %d chunks", f.Name, len(f.Chunks), n)
		}
		b = append(b, byte(len(f.Name)))
		b = append(b, f.Name...)
		b = binary.LittleEndian.AppendUint64(b, uint64(f.Size))
		b = append(b, f.Chunks...)
	}
	sig, err := s.sign(s.alg.digest(b[len(framing):]))
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	if len(sig) == 0 || len(sig) > MaxSignatureSize {
		return nil, fmt.Errorf("signature of %d bytes (limit %d)", len(sig), MaxSignatureSize)
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(sig)))
	b = append(b, sig...)
	if len(b) > MaxSignFileSize {
		return nil, fmt.Errorf("signature file of %d bytes exceeds the limit of %d", len(b), MaxSignFileSize)
	}
	return b, nil
}

func (s *Signer) sign(digest []byte) ([]byte, error) {
	switch s.alg {
	case SignEd25519:
		return s.key.Sign(rand.Reader, digest, crypto.Hash(0))
	case SignRSAPSS:
		return s.key.Sign(rand.Reader, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	case SignECDSAP384:
		return s.key.Sign(rand.Reader, digest, crypto.SHA384)
	}
	return s.key.Sign(rand.Reader, digest, crypto.SHA256)
}

// ReadSignature reads a whole signature file from r (at most MaxSignFileSize
// bytes) and parses it.
func ReadSignature(r io.Reader, framing Framing) (*Signature, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSignFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSignFileSize {
		return nil, errorf(ErrMalformed, "", MaxSignFileSize, "signature longer than the limit of %d bytes", MaxSignFileSize)
	}
	return ParseSignature(data, framing)
}

// minSignedEntry is the smallest encoded file entry: name length, 1-byte name,
// size (an empty plain file has no chunk).
const minSignedEntry = 1 + 1 + 8

// ParseSignature parses the structure of a signature block: the framing, every
// length against its limit and the bytes left, the certificates, and that nothing
// follows the signature. It does not verify anything (see Verify). The Signature
// refers to data, which must not change afterwards.
func ParseSignature(data []byte, framing Framing) (*Signature, error) {
	p := &parser{data: data}
	s := &Signature{}
	copy(s.Framing[:], p.bytes(8, "framing"))
	if p.err == nil && s.Framing != framing {
		return nil, errorf(ErrMalformed, "", 0, "framing % x, want % x: not a signature", s.Framing[:], framing[:])
	}
	start := p.off
	s.Version = int(p.u16("version"))
	if p.err == nil && s.Version == 1 {
		return nil, errorf(ErrMalformed, "", p.last, "signature version 1 is no longer read (version %d hashes each chunk): sign the set again with imgtool sign", SignVersion)
	}
	if p.err == nil && s.Version != SignVersion {
		return nil, errorf(ErrMalformed, "", p.last, "signature version %d, this build reads %d", s.Version, SignVersion)
	}
	s.Algorithm = SignAlgorithm(p.u16("algorithm"))
	if p.err == nil && !s.Algorithm.valid() {
		return nil, errorf(ErrMalformed, "", p.last, "unknown signature algorithm %d", uint16(s.Algorithm))
	}
	copy(s.SetID[:], p.bytes(SetIDSize, "set id"))
	created := p.u64("creation time")
	if p.err == nil && (created == 0 || created > math.MaxInt64) {
		p.fail("creation time %d out of range", created)
	}
	s.Created = time.Unix(0, int64(created))
	n := int(p.u8("chain length"))
	if p.err == nil && (n == 0 || n > MaxSignChain) {
		p.fail("chain length %d out of range (1 to %d)", n, MaxSignChain)
	}
	for i := 0; i < n && p.err == nil; i++ {
		clen := int(p.u32("certificate length"))
		if p.err == nil && (clen == 0 || clen > MaxSignCertSize) {
			p.fail("certificate %d: length %d out of range (1 to %d)", i+1, clen, MaxSignCertSize)
		}
		der := p.bytes(clen, "certificate")
		if p.err != nil {
			break
		}
		c, err := x509.ParseCertificate(bytes.Clone(der))
		if err != nil {
			p.fail("certificate %d: %v", i+1, err)
			break
		}
		s.Chain = append(s.Chain, c)
	}
	copy(s.SealHash[:], p.bytes(HashSize, "header hash"))
	s.Files = p.signedFiles(s.Encrypted())
	end := p.off
	slen := int(p.u16("signature length"))
	if p.err == nil && (slen == 0 || slen > MaxSignatureSize) {
		p.fail("signature length %d out of range (1 to %d)", slen, MaxSignatureSize)
	}
	s.Sig = bytes.Clone(p.bytes(slen, "signature"))
	if p.err != nil {
		return nil, p.err
	}
	if p.off != len(data) {
		return nil, errorf(ErrMalformed, "", int64(p.off), "%d bytes after the signature", len(data)-p.off)
	}
	s.signed = data[start:end]
	return s, nil
}

func (p *parser) signedFiles(encrypted bool) []SignedFile {
	n := int(p.u32("file count"))
	if p.err != nil {
		return nil
	}
	if n > MaxFiles || n*minSignedEntry > len(p.data)-p.off {
		p.fail("file count %d out of range (0 to %d, and the bytes left)", n, MaxFiles)
		return nil
	}
	out := make([]SignedFile, 0, n)
	for i := 0; i < n && p.err == nil; i++ {
		prev := ""
		if i > 0 {
			prev = out[i-1].Name
		}
		name := p.listedName(i, prev, "the list")
		size := p.u64("file size")
		if p.err == nil && size > math.MaxInt64 {
			p.fail("file %q: size %d out of range", name, size)
		}
		var chunks int64
		if p.err == nil {
			var err error
			if chunks, err = StoredChunks(int64(size), encrypted); err != nil {
				p.fail("file %q: %v", name, err)
			} else if chunks > int64(len(p.data)-p.off)/HashSize {
				p.fail("file %q: %d chunk hashes, more than the bytes left", name, chunks)
			}
		}
		f := SignedFile{Name: name, Size: int64(size)}
		if p.err == nil {
			f.Chunks = ChunkHashes(p.bytes(int(chunks)*HashSize, "chunk hashes"))
		}
		out = append(out, f)
	}
	return out
}

// Verify checks the signature: the signer's certificate chains to one of anchors
// (or is one of them), may sign (KeyUsage DigitalSignature when KeyUsage is
// present), and every certificate of the chain was valid at the signature's
// creation time; that time is not later than now plus MaxClockSkew; and the
// signature verifies with the signer's key. Expiry is judged at the creation
// time, not now: a set signed while the certificate was valid stays valid (see
// docs/format.md). Errors wrap ErrUntrustedSigner or ErrBadSignature.
func (s *Signature) Verify(anchors []*x509.Certificate, now time.Time) error {
	signer := s.Signer()
	if err := checkSignUsage(signer); err != nil {
		return err
	}
	if s.Created.After(now.Add(MaxClockSkew * time.Second)) {
		return fmt.Errorf("%w: signed in the future (%s)", ErrUntrustedSigner, s.Created.UTC().Format(time.RFC3339))
	}
	if err := verifyChain(s.Chain, anchors, s.Created); err != nil {
		return err
	}
	alg, err := signAlgorithmOf(signer.PublicKey)
	if err != nil || alg != s.Algorithm {
		return fmt.Errorf("%w: algorithm %s does not match the signer's key", ErrBadSignature, s.Algorithm)
	}
	digest := s.Algorithm.digest(s.signed)
	ok := false
	switch k := signer.PublicKey.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, digest, s.Sig)
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, digest, s.Sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPSS(k, crypto.SHA256, digest, s.Sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	}
	if !ok {
		return fmt.Errorf("%w: the signature of %q does not match the signed data: changed after signing, or forged", ErrBadSignature, signer.Subject.String())
	}
	s.verified = true
	return nil
}

// verifyChain checks that chain[0] is one of anchors, or chains to one through
// chain[1:], with every certificate valid at t.
func verifyChain(chain, anchors []*x509.Certificate, t time.Time) error {
	signer := chain[0]
	if len(anchors) == 0 {
		return fmt.Errorf("%w: %q: no trust anchor given", ErrUntrustedSigner, signer.Subject.String())
	}
	for _, a := range anchors {
		if a.Equal(signer) {
			if err := CheckValidity(signer, t); err != nil {
				return fmt.Errorf("%w: at signing time: %w", ErrUntrustedSigner, err)
			}
			return nil
		}
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := signer.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: t,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrUntrustedSigner, signer.Subject.String(), err)
	}
	return nil
}

// ParseTrust returns the certificates of PEM or DER data, all of them trust
// anchors: signer certificates, or CAs that issue them.
func ParseTrust(data []byte) ([]*x509.Certificate, error) { return parseCertificates(data) }

// ReadTrust reads a trust file (see ParseTrust). Its errors are *FileError.
func ReadTrust(path string) ([]*x509.Certificate, error) {
	data, err := readKeyFile(path)
	if err == nil {
		var certs []*x509.Certificate
		if certs, err = ParseTrust(data); err == nil {
			return certs, nil
		}
	}
	return nil, &FileError{Path: path, Err: err}
}

// ReadSigner reads a signing key (PEM or DER: PKCS#8, PKCS#1 or SEC1; ECDSA,
// Ed25519 or RSA) and its certificate chain, signer first (PEM or DER). Its
// errors name the file at fault.
func ReadSigner(keyPath, certPath string) (*Signer, error) {
	data, err := readKeyFile(keyPath)
	var key any
	if err == nil {
		key, err = parseSigningKey(data)
	}
	if err != nil {
		return nil, &FileError{Path: keyPath, Err: err}
	}
	data, err = readKeyFile(certPath)
	var chain []*x509.Certificate
	if err == nil {
		chain, err = parseCertificates(data)
	}
	if err == nil {
		var s *Signer
		if s, err = NewSigner(key, chain); err == nil {
			return s, nil
		}
	}
	return nil, &FileError{Path: certPath, Err: err}
}

// parseSigningKey reads the first private key of PEM or DER data.
func parseSigningKey(data []byte) (any, error) {
	if !isPEM(data) {
		k, err := parseDERKey(data)
		if err != nil {
			return nil, fmt.Errorf("%w: neither PEM nor a DER private key", ErrUnreadableKey)
		}
		return k, nil
	}
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		var key any
		var err error
		switch block.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("%w: password-protected PKCS#8 key; decrypt it first", ErrUnreadableKey)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrUnreadableKey, block.Type, err)
		}
		return key, nil
	}
	return nil, fmt.Errorf("%w: no PEM private key block", ErrUnreadableKey)
}
