package cipher

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// testChain makes a CA and a leaf it signed, as PEM certificates.
func testChain(t *testing.T) (leafPEM, caPEM []byte, leafFP, caFP Fingerprint) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "test leaf"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageKeyAgreement,
		BasicConstraintsValid: true,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	fp := func(pub any) Fingerprint {
		spki, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return fingerprintOf(spki)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		fp(&leafKey.PublicKey), fp(&caKey.PublicKey)
}

func fingerprintsOf(rs []*X509Recipient) []Fingerprint {
	out := make([]Fingerprint, len(rs))
	for i, r := range rs {
		out[i] = r.Fingerprint()
	}
	return out
}

// TestParseRecipientsChain: in a chain file (leaf then CA, or CA then leaf) only
// the leaf is a recipient; a file of CA certificates only gives all of them.
func TestParseRecipientsChain(t *testing.T) {
	leaf, ca, leafFP, caFP := testChain(t)
	selfSigned, err := os.ReadFile(keyPath("bob-p256.crt"))
	if err != nil {
		t.Fatal(err)
	}
	bob := mustRecipient(t, "bob-p256").Fingerprint()
	if !isCA(mustRecipient(t, "bob-p256").Certificate()) {
		t.Fatal("premise: OpenSSL's self-signed test certificates are CA:TRUE")
	}
	for _, tc := range []struct {
		name string
		pem  []byte
		want []Fingerprint
	}{
		{"leaf+ca", append(slices.Clone(leaf), ca...), []Fingerprint{leafFP}},
		{"ca+leaf", append(slices.Clone(ca), leaf...), []Fingerprint{leafFP}},
		{"ca only", ca, []Fingerprint{caFP}},
		{"two self-signed (CA) certificates", append(slices.Clone(ca), selfSigned...), []Fingerprint{caFP, bob}},
	} {
		rs, err := ParseRecipients(tc.pem)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := fingerprintsOf(rs); !slices.Equal(got, tc.want) {
			t.Errorf("%s: recipients %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestUnwrapPrefersTheMostSeriousError: with several keys, a damaged stanza for
// one of them is reported over "not a recipient" for the others, whatever the
// order; when no key is a recipient, the error names every key tried.
func TestUnwrapPrefersTheMostSeriousError(t *testing.T) {
	alice, bob := mustRecipient(t, "alice-rsa2048"), mustRecipient(t, "bob-p256")
	key, _ := NewSetKey(AES256GCM)
	stanzas, err := key.Wrap(alice, bob)
	if err != nil {
		t.Fatal(err)
	}
	stanzas[1].Body[len(stanzas[1].Body)-1] ^= 1 // bob's stanza no longer opens
	hdr, err := SealHeader(testFraming, key, stanzas, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(hdr, testFraming)
	if err != nil {
		t.Fatal(err)
	}
	mallory, carol, bobKey := mustIdentity(t, "mallory-p256.key"), mustIdentity(t, "carol-p384.key"), mustIdentity(t, "bob-p256.key")
	for _, ids := range [][]Identity{{mallory, bobKey}, {bobKey, mallory}, {mallory, bobKey, carol}} {
		if _, err := h.Unwrap(ids...); !errors.Is(err, ErrWrongKey) {
			t.Errorf("%d keys, one with a damaged stanza: %v, want ErrWrongKey", len(ids), err)
		}
	}
	// A good key still wins over a damaged stanza for another.
	if _, err := h.Unwrap(bobKey, mustIdentity(t, "alice-rsa2048.key")); err != nil {
		t.Errorf("a good key after a damaged stanza: %v", err)
	}
	_, err = h.Unwrap(mallory, carol)
	var nre *NoRecipientError
	if !errors.As(err, &nre) || !errors.Is(err, ErrNoRecipient) {
		t.Fatalf("two strangers: %v, want a *NoRecipientError", err)
	}
	for _, fp := range []Fingerprint{mallory.Fingerprint(), carol.Fingerprint(), alice.Fingerprint(), bob.Fingerprint()} {
		if !strings.Contains(err.Error(), fp.String()) {
			t.Errorf("the error does not name %s: %v", fp, err)
		}
	}
	if !slices.Equal(nre.Keys, []Fingerprint{mallory.Fingerprint(), carol.Fingerprint()}) {
		t.Errorf("keys tried %v", nre.Keys)
	}
	// A header MAC failure outranks everything.
	hb, _ := ParseHeader(hdr, testFraming)
	hb.MAC[0] ^= 1
	if _, err := hb.Unwrap(bobKey, mallory, mustIdentity(t, "alice-rsa2048.key")); !errors.Is(err, ErrHeaderAuth) {
		t.Errorf("edited MAC: %v, want ErrHeaderAuth", err)
	}
}

// TestKeygenUsage: keygen's certificates are recipients only: not a CA, no CertSign, and
// the usage their key type needs (key encipherment for RSA, key agreement for ECDSA).
func TestKeygenUsage(t *testing.T) {
	for _, tc := range []struct {
		typ  KeyType
		want x509.KeyUsage
	}{{KeyRSA2048, x509.KeyUsageKeyEncipherment}, {KeyP256, x509.KeyUsageKeyAgreement}} {
		certPEM, _, err := Keygen(KeygenOptions{CommonName: "t", Type: tc.typ})
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(certPEM)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if cert.IsCA || cert.KeyUsage != tc.want {
			t.Errorf("%s: CA %v, key usage %#x, want not a CA and %#x", tc.typ, cert.IsCA, cert.KeyUsage, tc.want)
		}
	}
}
