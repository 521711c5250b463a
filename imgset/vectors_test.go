package imgset

// Test vectors that attack the format, one file per case, in the manner of age's
// testkit. testdata/vectors/sets holds real fixture sets encrypted once (the bases);
// each testdata/vectors/*.vec names a base, the keys to use, the damage to do (ops,
// at byte level), and the outcome: the exact problems Verify must report and what
// Open-and-read-everything must do. Regenerate with
//
//	go test ./imgset -run TestGenerateVectors -update
//
// which is deterministic (testing/cryptotest) for a given Go version.

import (
	"bufio"
	"bytes"
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

var update = flag.Bool("update", false, "regenerate the test vectors in testdata/vectors")

const vectorDir = "testdata/vectors"

// outcomes maps the outcome names used in vectors to the errors they stand for.
var outcomes = map[string]error{
	"no-recipient":    cipher.ErrNoRecipient,
	"wrong-key":       cipher.ErrWrongKey,
	"header-auth":     cipher.ErrHeaderAuth,
	"malformed":       cipher.ErrMalformed,
	"chunk-auth":      cipher.ErrChunkAuth,
	"size-mismatch":   cipher.ErrSizeMismatch,
	"foreign-file":    cipher.ErrForeignFile,
	"missing-file":    ErrMissingFile,
	"unexpected-file": ErrUnexpectedFile,
	"not-encrypted":   ErrNotEncrypted,
	"header-missing":  ErrHeaderMissing,
	"key-required":    ErrKeyRequired,
}

// vector is one parsed .vec file.
type vector struct {
	name       string
	comment    []string
	base       string
	identities []string
	require    bool
	ops        [][]string
	expect     [][2]string // outcome, file; empty for "ok"
	open       string      // "ok" or an outcome
}

func (v *vector) String() string {
	var b strings.Builder
	b.WriteString("# imgtool-seal test vector (see docs/format.md (part 2))\n")
	for _, c := range v.comment {
		fmt.Fprintf(&b, "# %s\n", c)
	}
	fmt.Fprintf(&b, "base: %s\n", v.base)
	for _, id := range v.identities {
		fmt.Fprintf(&b, "identity: %s\n", id)
	}
	fmt.Fprintf(&b, "require-encrypted: %v\n", v.require)
	for _, op := range v.ops {
		fmt.Fprintf(&b, "op: %s\n", strings.Join(op, " "))
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

func parseVector(name string, data []byte) (*vector, error) {
	v := &vector{name: name}
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
		case "require-encrypted":
			v.require = val == "true"
		case "op":
			v.ops = append(v.ops, f)
		case "expect":
			if val != "ok" {
				if len(f) != 2 || outcomes[f[0]] == nil {
					return nil, fmt.Errorf("bad expect %q", val)
				}
				v.expect = append(v.expect, [2]string{f[0], f[1]})
			}
		case "open":
			if val != "ok" && outcomes[val] == nil {
				return nil, fmt.Errorf("bad open outcome %q", val)
			}
			v.open = val
		default:
			return nil, fmt.Errorf("unknown key %q", key)
		}
	}
	if v.base == "" || v.open == "" {
		return nil, errors.New("base and open are required")
	}
	return v, nil
}

// applyOp does one op of a vector to the set in dir.
func applyOp(dir string, op []string) error {
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
		b, err := os.ReadFile(filepath.Join(vectorDir, "sets", op[1], op[2]))
		if err != nil {
			return err
		}
		return os.WriteFile(path(op[3]), b, 0o600)
	}
	return fmt.Errorf("unknown op %q", op[0])
}

// baseFixture is the plaintext fixture each base set was made from.
var baseFixture = map[string]string{"files-aes": "files", "files-aes-again": "files", "tree-aes": "tree", "misc-chacha": "misc"}

func TestVectors(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join(vectorDir, "*.vec"))
	if len(paths) < 60 {
		t.Fatalf("found %d vectors, want at least 60 (go test -run TestGenerateVectors -update)", len(paths))
	}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".vec")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			v, err := parseVector(name, data)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			checkVector(t, v)
		})
	}
}

func checkVector(t *testing.T, v *vector) {
	dir := filepath.Join(t.TempDir(), "set")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(vectorDir, "sets", v.base))); err != nil {
		t.Fatal(err)
	}
	for _, op := range v.ops {
		if err := applyOp(dir, op); err != nil {
			t.Fatalf("op %v: %v", op, err)
		}
	}
	var ids []cipher.Identity
	for _, n := range v.identities {
		ids = append(ids, identity(t, n))
	}
	// Verify must report exactly the expected problems.
	rep, err := Verify(dir, VerifyOptions{Identities: ids})
	if err != nil {
		t.Fatal(err)
	}
	var got [][2]string
	for _, p := range rep.Problems {
		kind := "unclassified"
		for k, e := range outcomes {
			if errors.Is(p.Err, e) {
				kind = k
				break
			}
		}
		got = append(got, [2]string{kind, p.File})
		if !errors.Is(p.Err, outcomes[kind]) || (kind != "unclassified" && !hasExpect(v.expect, kind, p.File)) {
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
	err = openAndReadAll(dir, ids, v.require, baseFixture[v.base])
	switch {
	case v.open == "ok" && err != nil:
		t.Errorf("open: %v, want success", err)
	case v.open != "ok" && !errors.Is(err, outcomes[v.open]):
		t.Errorf("open: %v, want %s", err, v.open)
	}
}

func hasExpect(list [][2]string, kind, file string) bool {
	return slices.Contains(list, [2]string{kind, file})
}

// openAndReadAll opens the set and reads every file, comparing it with the fixture
// the set was made from.
func openAndReadAll(dir string, ids []cipher.Identity, require bool, fixture string) error {
	s, err := Open(dir, OpenOptions{Identities: ids, RequireEncrypted: require})
	if err != nil {
		return err
	}
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
		want, err := os.ReadFile(filepath.Join(fixtures, fixture, n))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s: authenticated plaintext differs from the fixture", n)
		}
	}
	return nil
}
