package cipher

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

var testSignFraming = Framing{0x19, 0x43, 0x56, 0x54, 'N', 'G', 'I', 'S'}

// testCert makes a certificate for key, issued by parent (self-signed when nil).
func testCert(t testing.TB, cn string, key crypto.Signer, parent *x509.Certificate, parentKey crypto.Signer, ca bool, usage x509.KeyUsage, from, to time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: from, NotAfter: to, KeyUsage: usage, BasicConstraintsValid: true, IsCA: ca}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testFiles is a file list of an encrypted or plain set, with made-up hashes of
// the right count.
func testFiles(encrypted bool) []SignedFile {
	sizes := map[string]int64{"pages-1.img": 70000, "core-1.img": 10, "empty.img": 0}
	var files []SignedFile
	for name, size := range sizes {
		if encrypted {
			size = CiphertextSize(size)
		}
		n, _ := StoredChunks(size, encrypted)
		files = append(files, SignedFile{Name: name, Size: size, Chunks: bytes.Repeat([]byte{byte(len(name))}, int(n)*HashSize)})
	}
	return files
}

func TestSignRoundTrip(t *testing.T) {
	now := time.Now()
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tc := range []struct {
		key crypto.Signer
		alg SignAlgorithm
	}{{p256, SignECDSAP256}, {p384, SignECDSAP384}, {ed, SignEd25519}, {rk, SignRSAPSS}} {
		cert := testCert(t, "signer", tc.key, nil, nil, false, x509.KeyUsageDigitalSignature, now.Add(-time.Hour), now.Add(time.Hour))
		s, err := NewSigner(tc.key, []*x509.Certificate{cert})
		if err != nil {
			t.Fatal(err)
		}
		if s.Algorithm() != tc.alg {
			t.Errorf("%s: algorithm %s", tc.alg, s.Algorithm())
		}
		data, err := s.Sign(testSignFraming, SetID{9}, now, [32]byte{7}, testFiles(true))
		if err != nil {
			t.Fatal(err)
		}
		sig, err := ParseSignature(data, testSignFraming)
		if err != nil {
			t.Fatal(err)
		}
		if sig.Verified() {
			t.Errorf("%s: verified before Verify", tc.alg)
		}
		if err := sig.Verify([]*x509.Certificate{cert}, now); err != nil || !sig.Verified() {
			t.Errorf("%s: %v", tc.alg, err)
		}
		if sig.Files[0].Name != "core-1.img" || sig.SetID != (SetID{9}) || sig.SealHash != ([32]byte{7}) || !sig.Created.Equal(now) ||
			!sig.Encrypted() || sig.Files[2].Chunks.Len() != 2 || sig.Files[2].Chunks.At(1)[0] != byte(len("pages-1.img")) {
			t.Errorf("%s: parsed %+v", tc.alg, sig)
		}
		// Any bit of the signed part changed: a bad signature (or a parse error).
		for _, off := range []int{12, 30, len(data) - len(sig.Sig) - 5} {
			bad := append([]byte(nil), data...)
			bad[off] ^= 1
			if s2, err := ParseSignature(bad, testSignFraming); err == nil {
				if err := s2.Verify([]*x509.Certificate{cert}, now); !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrUntrustedSigner) {
					t.Errorf("%s: bit flipped at %d: %v", tc.alg, off, err)
				}
			}
		}
	}
}

func TestSignTrust(t *testing.T) {
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := testCert(t, "ca", caKey, nil, nil, true, x509.KeyUsageCertSign, now.Add(-time.Hour), now.Add(time.Hour))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := testCert(t, "leaf", key, ca, caKey, false, x509.KeyUsageDigitalSignature, now.Add(-time.Hour), now.Add(time.Hour))
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other := testCert(t, "other", otherKey, nil, nil, false, x509.KeyUsageDigitalSignature, now.Add(-time.Hour), now.Add(time.Hour))
	s, err := NewSigner(key, []*x509.Certificate{leaf, ca})
	if err != nil {
		t.Fatal(err)
	}
	data, err := s.Sign(testSignFraming, SetID{}, now, [32]byte{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := ParseSignature(data, testSignFraming)
	if err != nil {
		t.Fatal(err)
	}
	if err := sig.Verify([]*x509.Certificate{ca}, now); err != nil {
		t.Errorf("CA anchor: %v", err)
	}
	if err := sig.Verify([]*x509.Certificate{leaf}, now); err != nil {
		t.Errorf("signer as anchor: %v", err)
	}
	for name, anchors := range map[string][]*x509.Certificate{"other": {other}, "none": nil} {
		if err := sig.Verify(anchors, now); !errors.Is(err, ErrUntrustedSigner) {
			t.Errorf("%s: %v, want untrusted", name, err)
		}
	}
	// Expiry is judged at the creation time: a set signed while the certificate
	// was valid stays valid later; one claiming a time in the future is refused.
	if err := sig.Verify([]*x509.Certificate{ca}, now.Add(48*time.Hour)); err != nil {
		t.Errorf("later: %v", err)
	}
	if err := sig.Verify([]*x509.Certificate{ca}, now.Add(-time.Hour)); !errors.Is(err, ErrUntrustedSigner) {
		t.Errorf("created in the future: %v", err)
	}
	// An encryption-only certificate does not sign.
	enc := testCert(t, "enc", otherKey, nil, nil, false, x509.KeyUsageKeyAgreement, now.Add(-time.Hour), now.Add(time.Hour))
	if _, err := NewSigner(otherKey, []*x509.Certificate{enc}); err == nil {
		t.Error("an encryption-only certificate signs")
	}
	if _, err := NewSigner(key, []*x509.Certificate{other}); err == nil {
		t.Error("a key signs for another's certificate")
	}
}

func TestKeygenSign(t *testing.T) {
	for _, typ := range []KeyType{"", KeyEd25519} {
		certPEM, keyPEM, err := Keygen(KeygenOptions{Type: typ, Sign: true})
		if err != nil {
			t.Fatal(err)
		}
		key, err := parseSigningKey(keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		chain, err := parseCertificates(certPEM)
		if err != nil {
			t.Fatal(err)
		}
		if chain[0].KeyUsage != x509.KeyUsageDigitalSignature || chain[0].IsCA {
			t.Errorf("%q: usage %v CA %v", typ, chain[0].KeyUsage, chain[0].IsCA)
		}
		if _, err := NewSigner(key, chain); err != nil {
			t.Errorf("%q: %v", typ, err)
		}
	}
	if _, _, err := Keygen(KeygenOptions{Type: KeyEd25519}); err == nil {
		t.Error("an Ed25519 recipient was made")
	}
}

func FuzzParseSignature(f *testing.F) {
	now := time.Now()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := testCert(f, "signer", key, nil, nil, false, x509.KeyUsageDigitalSignature, now.Add(-time.Hour), now.Add(time.Hour))
	s, err := NewSigner(key, []*x509.Certificate{cert})
	if err != nil {
		f.Fatal(err)
	}
	data, err := s.Sign(testSignFraming, SetID{1}, now, [32]byte{}, testFiles(false))
	if err != nil {
		f.Fatal(err)
	}
	enc, err := s.Sign(testSignFraming, SetID{1}, now, [32]byte{1}, testFiles(true))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add(enc)
	f.Add(data[:len(data)/2])
	f.Add(testSignFraming[:])
	f.Fuzz(func(t *testing.T, b []byte) {
		sig, err := ParseSignature(b, testSignFraming)
		if err != nil {
			return
		}
		if len(sig.Chain) == 0 || len(sig.Sig) == 0 || len(sig.Chain) > MaxSignChain {
			t.Fatalf("parsed a signature without chain or signature")
		}
		for _, sf := range sig.Files {
			if n, err := StoredChunks(sf.Size, sig.Encrypted()); err != nil || int64(sf.Chunks.Len()) != n || len(sf.Chunks)%HashSize != 0 {
				t.Fatalf("%s: %d bytes of hashes for a stored size of %d", sf.Name, len(sf.Chunks), sf.Size)
			}
		}
		_ = sig.Verify([]*x509.Certificate{cert}, now)
	})
}

// TestSignFileList checks what Sign and ParseSignature demand of the file list:
// as many hashes as the stored size has chunks, a stored size an encrypted file
// can have, and no signature of the old version.
func TestSignFileList(t *testing.T) {
	now := time.Now()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := testCert(t, "signer", key, nil, nil, false, x509.KeyUsageDigitalSignature, now.Add(-time.Hour), now.Add(time.Hour))
	s, err := NewSigner(key, []*x509.Certificate{cert})
	if err != nil {
		t.Fatal(err)
	}
	short := testFiles(true)
	short[0].Chunks = short[0].Chunks[:len(short[0].Chunks)-HashSize]
	if _, err := s.Sign(testSignFraming, SetID{}, now, [32]byte{1}, short); err == nil {
		t.Error("a list missing a chunk hash was signed")
	}
	bad := []SignedFile{{Name: "x", Size: PrefixSize + 3}}
	if _, err := s.Sign(testSignFraming, SetID{}, now, [32]byte{1}, bad); err == nil {
		t.Error("an encrypted file of an impossible size was signed")
	}
	data, err := s.Sign(testSignFraming, SetID{}, now, [32]byte{}, testFiles(false))
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Clone(data)
	old[8] = 1
	if _, err := ParseSignature(old, testSignFraming); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "sign the set again") {
		t.Errorf("version 1: %v", err)
	}
	// The plain list read as an encrypted one (the header hash set): the sizes
	// are no encrypted files' sizes, or the hashes do not add up.
	enc := bytes.Clone(data)
	at := bytes.Index(enc, cert.Raw) + len(cert.Raw)
	enc[at] = 1
	if _, err := ParseSignature(enc, testSignFraming); !errors.Is(err, ErrMalformed) {
		t.Errorf("a plain list as an encrypted one: %v", err)
	}
	// Cut anywhere: malformed, never a panic or an allocation beyond the data.
	for n := 0; n < len(data); n++ {
		if _, err := ParseSignature(data[:n], testSignFraming); !errors.Is(err, ErrMalformed) {
			t.Fatalf("cut to %d bytes: %v", n, err)
		}
	}
}
