package imgset

// Test vectors that attack the format, one file per case, in the manner of age's
// testkit. Each vector directory holds real fixture sets encrypted once (the
// bases, in sets/) and one *.vec file per case: a base, the keys to use, the
// trust anchors and the set id expected (signed vectors), the damage to do (ops,
// at byte level), and the outcome: what the signature check must say, the exact
// problems Verify must report, and what Open-and-read-everything must do.
//
// testdata/vectors holds v1 sets (imgtool-seal v1, unsigned), frozen: the v1
// writer is gone, and they prove that v1 sets are still read as they were.
// testdata/vectors-v2 holds v2 sets, signed and not. Regenerate it with
//
//	go test ./imgset -run TestGenerateVectors -update
//
// which is deterministic (testing/cryptotest) for a given Go version.

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/cipher"
)

var update = flag.Bool("update", false, "regenerate the test vectors in testdata/vectors-v2")

// The vector directories: v1's (frozen) and v2's (TestGenerateVectors).
const (
	vectorDirV1 = "testdata/vectors"
	vectorDirV2 = "testdata/vectors-v2"
)

// Outcomes of vectors that are not errors of a package.
var (
	// errForgedContent: every chunk authenticated, but the plaintext is not the
	// fixture's: a forgery that only a signature catches.
	errForgedContent = errors.New("authenticated plaintext differs from the fixture")
	// errOtherSetID: the set is whole and verified, but not the one expected
	// (--expect-set-id): an older set put back.
	errOtherSetID = errors.New("the set id is not the expected one")
)

// outcomes maps the outcome names used in vectors to the errors they stand for,
// most specific first: an error is named after the first it matches.
var outcomes = []struct {
	name string
	err  error
}{
	{"no-recipient", cipher.ErrNoRecipient},
	{"wrong-key", cipher.ErrWrongKey},
	{"header-auth", cipher.ErrHeaderAuth},
	{"signed-chunk", cipher.ErrSignedChunk},
	{"signed-file", ErrSignedFile},
	{"untrusted-signer", cipher.ErrUntrustedSigner},
	{"bad-signature", cipher.ErrBadSignature},
	{"malformed", cipher.ErrMalformed},
	{"chunk-auth", cipher.ErrChunkAuth},
	{"size-mismatch", cipher.ErrSizeMismatch},
	{"foreign-file", cipher.ErrForeignFile},
	{"no-signature", ErrNoSignature},
	{"missing-file", ErrMissingFile},
	{"unexpected-file", ErrUnexpectedFile},
	{"not-encrypted", ErrNotEncrypted},
	{"header-missing", ErrHeaderMissing},
	{"key-required", ErrKeyRequired},
	{"forged-content", errForgedContent},
	{"other-set-id", errOtherSetID},
}

// outcomeOf names err; "unclassified" when it is none of the outcomes.
func outcomeOf(err error) string {
	for _, o := range outcomes {
		if errors.Is(err, o.err) {
			return o.name
		}
	}
	return "unclassified"
}

func knownOutcome(name string) bool {
	return slices.ContainsFunc(outcomes, func(o struct {
		name string
		err  error
	}) bool {
		return o.name == name
	})
}

// vector is one parsed .vec file.
type vector struct {
	name        string
	dir         string // the vector directory: its bases are in dir/sets
	comment     []string
	base        string
	identities  []string
	trust       []string // trust anchors (key names); none: no signature check
	expectSetID string   // the set id expected; "": none
	require     bool
	ops         [][]string
	signature   string      // the signature check's outcome, with trust: "ok" or an outcome
	expect      [][2]string // outcome, file; empty for "ok"
	open        string      // "ok" or an outcome
}

func (v *vector) String() string {
	var b strings.Builder
	b.WriteString("# imgtool-seal test vector (see docs/format.md, parts 2 and 5)\n")
	for _, c := range v.comment {
		fmt.Fprintf(&b, "# %s\n", c)
	}
	fmt.Fprintf(&b, "base: %s\n", v.base)
	for _, id := range v.identities {
		fmt.Fprintf(&b, "identity: %s\n", id)
	}
	for _, c := range v.trust {
		fmt.Fprintf(&b, "trust: %s\n", c)
	}
	if v.expectSetID != "" {
		fmt.Fprintf(&b, "expect-set-id: %s\n", v.expectSetID)
	}
	fmt.Fprintf(&b, "require-encrypted: %v\n", v.require)
	for _, op := range v.ops {
		fmt.Fprintf(&b, "op: %s\n", strings.Join(op, " "))
	}
	if len(v.trust) > 0 {
		fmt.Fprintf(&b, "signature: %s\n", v.signature)
	}
	if len(v.expect) == 0 {
		b.WriteString("expect: ok\n")
	}
	for _, e := range v.expect {
		fmt.Fprintf(&b, "expect: %s %s\n", e[0], e[1])
	}
	fmt.Fprintf(&b, "open: %s\n", v.open)
	return b.String()
}

func parseVector(dir, name string, data []byte) (*vector, error) {
	v := &vector{name: name, dir: dir}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		key, val, ok := strings.Cut(line, ": ")
		if !ok {
			return nil, fmt.Errorf("bad line %q", line)
		}
		f := strings.Fields(val)
		switch key {
		case "base":
			v.base = val
		case "identity":
			v.identities = append(v.identities, val)
		case "trust":
			v.trust = append(v.trust, val)
		case "expect-set-id":
			v.expectSetID = val
		case "require-encrypted":
			v.require = val == "true"
		case "op":
			v.ops = append(v.ops, f)
		case "signature":
			if val != "ok" && !knownOutcome(val) {
				return nil, fmt.Errorf("bad signature outcome %q", val)
			}
			v.signature = val
		case "expect":
			if val != "ok" {
				if len(f) != 2 || !knownOutcome(f[0]) {
					return nil, fmt.Errorf("bad expect %q", val)
				}
				v.expect = append(v.expect, [2]string{f[0], f[1]})
			}
		case "open":
			if val != "ok" && !knownOutcome(val) {
				return nil, fmt.Errorf("bad open outcome %q", val)
			}
			v.open = val
		default:
			return nil, fmt.Errorf("unknown key %q", key)
		}
	}
	if v.base == "" || v.open == "" || (len(v.trust) > 0) != (v.signature != "") {
		return nil, errors.New("base and open are required, and signature exactly with trust")
	}
	return v, nil
}

// applyOp does one op of a vector of the vector directory vecDir to the set in dir.
func applyOp(dir, vecDir string, op []string) error {
	path := func(n string) string { return filepath.Join(dir, n) }
	num := func(s string) int64 { n, _ := strconv.ParseInt(s, 0, 64); return n }
	edit := func(name string, f func([]byte) []byte) error {
		b, err := os.ReadFile(path(name))
		if err != nil {
			return err
		}
		return os.WriteFile(path(name), f(b), 0o600)
	}
	switch op[0] {
	case "flip": // FILE OFFSET MASK
		return edit(op[1], func(b []byte) []byte { b[num(op[2])] ^= byte(num(op[3])); return b })
	case "truncate": // FILE SIZE
		return os.Truncate(path(op[1]), num(op[2]))
	case "append": // FILE HEX
		h, _ := hex.DecodeString(op[2])
		return edit(op[1], func(b []byte) []byte { return append(b, h...) })
	case "append-copy": // FILE OFFSET LEN: append a copy of bytes of the file itself
		return edit(op[1], func(b []byte) []byte { o := num(op[2]); return append(b, b[o:o+num(op[3])]...) })
	case "write": // FILE OFFSET HEX
		h, _ := hex.DecodeString(op[3])
		return edit(op[1], func(b []byte) []byte { copy(b[num(op[2]):], h); return b })
	case "cut": // FILE OFFSET LEN
		return edit(op[1], func(b []byte) []byte { o := num(op[2]); return slices.Delete(b, int(o), int(o+num(op[3]))) })
	case "insert": // FILE OFFSET HEX
		h, _ := hex.DecodeString(op[3])
		return edit(op[1], func(b []byte) []byte { return slices.Insert(b, int(num(op[2])), h...) })
	case "swap-range": // FILE OFF1 OFF2 LEN
		return edit(op[1], func(b []byte) []byte {
			a, c, n := num(op[2]), num(op[3]), num(op[4])
			t := bytes.Clone(b[a : a+n])
			copy(b[a:a+n], b[c:c+n])
			copy(b[c:c+n], t)
			return b
		})
	case "copy-range": // FILE FROM TO LEN
		return edit(op[1], func(b []byte) []byte { copy(b[num(op[3]):num(op[3])+num(op[4])], b[num(op[2]):]); return b })
	case "delete": // FILE
		return os.Remove(path(op[1]))
	case "rename": // FROM TO
		return os.Rename(path(op[1]), path(op[2]))
	case "swap": // A B
		tmp := path(op[1]) + ".swap"
		if err := os.Rename(path(op[1]), tmp); err != nil {
			return err
		}
		if err := os.Rename(path(op[2]), path(op[1])); err != nil {
			return err
		}
		return os.Rename(tmp, path(op[2]))
	case "add": // FILE HEX
		h, _ := hex.DecodeString(op[2])
		return os.WriteFile(path(op[1]), h, 0o600)
	case "copy-from": // BASE FILE TO
		b, err := os.ReadFile(filepath.Join(vecDir, "sets", op[1], op[2]))
		if err != nil {
			return err
		}
		return os.WriteFile(path(op[3]), b, 0o600)
	}
	return fmt.Errorf("unknown op %q", op[0])
}

// baseFixture is the plaintext fixture each base set was made from; "" for a
// forgery, whose plaintext is its forger's.
var baseFixture = map[string]string{"files-aes": "files", "files-aes-again": "files", "tree-aes": "tree", "misc-chacha": "misc",
	"files-aes-signed": "files", "files-aes-signed-older": "files", "files-plain-signed": "files",
	"files-aes-forged-unsigned": "", "files-aes-forged-signed-mallory": ""}

func TestVectors(t *testing.T) {
	for _, dir := range []struct {
		path string
		min  int
	}{{vectorDirV1, 60}, {vectorDirV2, 90}} {
		paths, _ := filepath.Glob(filepath.Join(dir.path, "*.vec"))
		if len(paths) < dir.min {
			t.Fatalf("%s: found %d vectors, want at least %d (go test -run TestGenerateVectors -update)", dir.path, len(paths), dir.min)
		}
		for _, p := range paths {
			name := strings.TrimSuffix(filepath.Base(p), ".vec")
			t.Run(filepath.Base(dir.path)+"/"+name, func(t *testing.T) {
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				v, err := parseVector(dir.path, name, data)
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				checkVector(t, v)
			})
		}
	}
}

func checkVector(t *testing.T, v *vector) {
	dir := filepath.Join(t.TempDir(), "set")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(v.dir, "sets", v.base))); err != nil {
		t.Fatal(err)
	}
	for _, op := range v.ops {
		if err := applyOp(dir, v.dir, op); err != nil {
			t.Fatalf("op %v: %v", op, err)
		}
	}
	var ids []cipher.Identity
	for _, n := range v.identities {
		ids = append(ids, identity(t, n))
	}
	// The signature first, as readers check it: when it fails, a reader that
	// trusts a signer refuses the set; what follows (expect, open) is then what
	// a reader without a trust anchor would find, the set read unsigned.
	var sig *cipher.Signature
	if len(v.trust) > 0 {
		var anchors []*x509.Certificate
		for _, n := range v.trust {
			certs, err := cipher.ReadTrust(keyFile(n + ".crt"))
			if err != nil {
				t.Fatal(err)
			}
			anchors = append(anchors, certs...)
		}
		var err error
		sig, err = CheckSignature(dir, SignatureOptions{Trust: anchors})
		switch got := outcomeOf(err); {
		case v.signature == "ok" && err != nil:
			t.Fatalf("signature: %v, want ok", err)
		case v.signature != "ok" && got != v.signature:
			t.Fatalf("signature: %v (%s), want %s", err, got, v.signature)
		case err != nil:
			sig = nil
		}
	}
	// Verify must report exactly the expected problems.
	rep, err := Verify(dir, VerifyOptions{Identities: ids, Signature: sig})
	if err != nil {
		t.Fatal(err)
	}
	var got [][2]string
	for _, p := range rep.Problems {
		kind := outcomeOf(p.Err)
		got = append(got, [2]string{kind, p.File})
		if kind == "unclassified" || !hasExpect(v.expect, kind, p.File) {
			t.Errorf("unexpected problem: %s %s: %v", kind, p.File, p.Err)
		}
	}
	for _, e := range v.expect {
		if !hasExpect(got, e[0], e[1]) {
			t.Errorf("problem not reported: %s %s", e[0], e[1])
		}
	}
	if len(v.expect) == 0 && len(ids) > 0 && !rep.Authenticated {
		t.Errorf("a good set with a key was not authenticated")
	}
	// Open and read every file: the path restore takes.
	err = openAndReadAll(dir, ids, v.require, sig, baseFixture[v.base], v.expectSetID)
	switch {
	case v.open == "ok" && err != nil:
		t.Errorf("open: %v, want success", err)
	case v.open != "ok" && outcomeOf(err) != v.open:
		t.Errorf("open: %v, want %s", err, v.open)
	}
}

func hasExpect(list [][2]string, kind, file string) bool {
	return slices.Contains(list, [2]string{kind, file})
}

// openAndReadAll opens the set (with its signature, if any) and reads every file,
// comparing it with the fixture the set was made from, and the set id with the
// expected one (the header's, or a plain set's signed one).
func openAndReadAll(dir string, ids []cipher.Identity, require bool, sig *cipher.Signature, fixture, expectSetID string) error {
	s, err := Open(dir, OpenOptions{Identities: ids, RequireEncrypted: require, Signature: sig})
	if err != nil {
		return err
	}
	forged := false
	for _, n := range s.Names() {
		f, err := s.Open(n)
		if err != nil {
			return err
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return err
		}
		if fixture == "" {
			continue
		}
		want, err := os.ReadFile(filepath.Join(fixtures, fixture, n))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		forged = forged || err != nil || !bytes.Equal(got, want) // a file the fixture lacks is forged too
	}
	if forged {
		return fmt.Errorf("%w (every chunk authenticated)", errForgedContent)
	}
	if expectSetID != "" {
		var id cipher.SetID
		switch {
		case s.Header() != nil:
			id = s.Header().SetID
		case sig != nil:
			id = sig.SetID
		}
		if id.String() != expectSetID {
			return fmt.Errorf("%w: %s, expected %s", errOtherSetID, id, expectSetID)
		}
	}
	return nil
}

// TestRekeyKeepsV1 checks what happens to a v1 set (a frozen vector's base):
// a header-only rekey keeps it v1 (it wraps the same file key, with v1 stanzas,
// and writes no file), and every recipient reads it; a rotation makes it v2.
func TestRekeyKeepsV1(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "set")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(vectorDirV1, "sets", "files-aes"))); err != nil {
		t.Fatal(err)
	}
	version := func() int {
		h, err := ReadHeader(dir)
		if err != nil {
			t.Fatal(err)
		}
		return h.Version
	}
	if version() != 1 {
		t.Fatal("the v1 base is not v1")
	}
	bob := []cipher.Identity{identity(t, "bob-p256")}
	if err := Rekey(dir, RekeyOptions{Identities: bob, Add: []cipher.Recipient{recipient(t, "carol-p384")}}); err != nil {
		t.Fatal(err)
	}
	if version() != 1 {
		t.Fatal("a header-only rekey changed the version")
	}
	for _, who := range []string{"carol-p384", "alice-rsa2048", "bob-p256"} {
		if err := openAndReadAll(dir, []cipher.Identity{identity(t, who)}, true, nil, "files", ""); err != nil {
			t.Errorf("%s after rekey: %v", who, err)
		}
	}
	if err := Rekey(dir, RekeyOptions{Identities: bob, Add: []cipher.Recipient{recipient(t, "bob-p256")}, Rotate: true}); err != nil {
		t.Fatal(err)
	}
	if version() != cipher.HeaderVersion {
		t.Fatalf("rotated to version %d", version())
	}
	if err := openAndReadAll(dir, bob, true, nil, "files", ""); err != nil {
		t.Errorf("after rotation: %v", err)
	}
}
