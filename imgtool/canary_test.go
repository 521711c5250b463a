package imgtool

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/imgtool/imgtool/internal/testset"
)

// Canaries the fixture programs leave in their sets (fixtures/README.md).
var knownCanaries = []string{
	"IMGTOOL-SECRET-CANARY-b35dc972c25939a5", // counter's heap
	"GHOST-SMALL", "GHOST-BIG",               // ghost's unlinked files
	"IMGTOOL-FIFO-CANARY", "IMGTOOL-PIPE-CANARY", // fifo's queued data
	"data-sitting-in-pipe",                           // files' pipe
	"queued-in-unix-socket", "IMGTOOL-MEMFD-CONTENT", // misc
	"IMGTOOL-TCP-CANARY", "IMGTOOL-TCP-PATTERN", // tcp's queues
}

// pagePattern is the header counter writes at the start of each page.
var pagePattern = regexp.MustCompile(`PAGE[0-9a-f]{8}`)

// sourceLiterals returns the string literals of fixtures/src/*.c without format
// directives, at least 8 bytes long: what the programs may keep in memory.
func sourceLiterals(t *testing.T) []string {
	t.Helper()
	srcs, err := filepath.Glob("../fixtures/src/*.c")
	if err != nil || len(srcs) == 0 {
		t.Fatalf("no fixture sources: %v", err)
	}
	lit := regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
	var out []string
	for _, src := range srcs {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range lit.FindAllStringSubmatch(string(data), -1) {
			s, err := strconv.Unquote(`"` + m[1] + `"`)
			if err != nil || len(s) < 8 || bytes.ContainsAny([]byte(s), "%") {
				continue
			}
			out = append(out, s)
		}
	}
	return out
}

// samples returns 16-byte windows of data at up to 64 places, skipping windows of
// few distinct bytes (zero pages, padding) that could occur by chance.
func samples(data []byte) [][]byte {
	const width, count = 16, 64
	var out [][]byte
	if len(data) < width {
		return nil
	}
	step := max(1, (len(data)-width)/count)
	for off := 0; off+width <= len(data); off += step {
		w := data[off : off+width]
		distinct := map[byte]bool{}
		for _, b := range w {
			distinct[b] = true
		}
		if len(distinct) >= 10 {
			out = append(out, w)
		}
	}
	return out
}

// TestNoPlaintextInEncryptedSets encrypts every bundled set and looks for its
// secrets in every encrypted file: the known canaries, the page headers, the
// string literals of the fixture programs, and windows sampled from each
// plaintext file. Each needle is first found in the plaintext, so the test checks
// something real; none may appear in the ciphertext.
func TestNoPlaintextInEncryptedSets(t *testing.T) {
	literals := sourceLiterals(t)
	foundCanary := map[string]bool{}
	foundPages := false
	for _, name := range fixtureSetNames(t) {
		plainDir := filepath.Join(fixtureDir, name)
		plain := testset.ReadAll(t, plainDir)
		var needles [][]byte
		all := bytes.Join(values(plain), nil)
		for _, c := range append(append([]string{}, knownCanaries...), literals...) {
			if bytes.Contains(all, []byte(c)) {
				foundCanary[c] = true
				needles = append(needles, []byte(c))
			}
		}
		for _, data := range plain {
			needles = append(needles, samples(data)...)
		}
		hasPages := pagePattern.Match(all)
		foundPages = foundPages || hasPages
		if len(needles) == 0 {
			t.Fatalf("%s: nothing to look for", name)
		}

		for _, cert := range []string{"alice-rsa2048.crt", "bob-p256.crt"} {
			enc := encryptedFixture(t, name, cert)
			for file, data := range testset.ReadAll(t, enc) {
				for _, n := range needles {
					if bytes.Contains(data, n) {
						t.Errorf("%s (%s): %s holds plaintext %q", name, cert, file, n)
					}
				}
				if hasPages && pagePattern.Match(data) {
					t.Errorf("%s (%s): %s holds a page header %q", name, cert, file, pagePattern.Find(data))
				}
			}
		}
		t.Logf("%s: %d needles absent from the encrypted files", name, len(needles))
	}
	for _, c := range knownCanaries {
		if !foundCanary[c] {
			t.Errorf("canary %q is in no plaintext set: the fixtures changed", c)
		}
	}
	if !foundPages {
		t.Error("no page header PAGE%08x in any plaintext set: the fixtures changed")
	}
}

func values(m map[string][]byte) [][]byte {
	var out [][]byte
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
