package cipher

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// katNonce is the nonce of the file of the v2 known answers.
var katNonce = FileNonce{0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf}

// TestKnownAnswers checks the Go implementation against testdata/kat.txt, made by
// testdata/kat.py: a second implementation of the format written from the spec
// with pyca/cryptography (its v1 MAC key also matches `openssl kdf ... HKDF`).
// Lines without v= are v1's, as they were when v1 was the format: v1 sets are
// still read, so their key schedule must not change.
func TestKnownAnswers(t *testing.T) {
	f, err := os.Open("testdata/kat.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fileKey := bytes.Repeat([]byte{7}, FileKeySize)
	id := SetID{1, 2, 3}
	stanzas := []*Stanza{
		{Type: "test-type", Fingerprint: Fingerprint(bytes.Repeat([]byte{0x11}, 32)), Body: bytes.Repeat([]byte{0x22}, 10)},
		{Type: "x509-hpke-p256", Fingerprint: Fingerprint(bytes.Repeat([]byte{0x33}, 32)), Body: bytes.Repeat([]byte{0x44}, 113)},
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	checked := map[int]int{}
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		kv := map[string]string{"v": "1"}
		for _, fl := range fields[1:] {
			k, v, _ := strings.Cut(fl, "=")
			kv[k] = v
		}
		alg, _ := strconv.Atoi(kv["alg"])
		version, _ := strconv.Atoi(kv["v"])
		key := newSetKeyFrom(fileKey, id, Algorithm(alg), version)
		file := FileInfo{Name: "pages-1.img", Size: -1}
		files := []FileInfo{{Name: "pages-1.img", Size: 70000}, {Name: "inventory.img", Size: 86}, {Name: "core-1.img", Size: 0}}
		if version >= 2 {
			file.Nonce = katNonce
			for i := range files {
				files[i].Nonce = FileNonce{byte(0xb0 + i), 1}
				fixedFile(key, files[i])
			}
		}
		var got string
		switch fields[0] {
		case "file":
			size, _ := strconv.Atoi(kv["size"])
			plain := make([]byte, size)
			for i := range plain {
				plain[i] = byte(i * 7 / 5)
			}
			var ct bytes.Buffer
			w, _ := key.newWriter(&ct, file)
			w.Write(plain)
			w.Close()
			sum := sha256.Sum256(ct.Bytes())
			got = "sha256=" + hex.EncodeToString(sum[:]) + " head=" + hex.EncodeToString(ct.Bytes()[:min(48, ct.Len())])
			if want := "sha256=" + kv["sha256"] + " head=" + kv["head"]; got != want {
				t.Errorf("%s: got %s", sc.Text(), got)
			}
			back, err := key.Decrypt(ct.Bytes(), file)
			if err != nil || !bytes.Equal(back, plain) {
				t.Errorf("%s: does not decrypt: %v", sc.Text(), err)
			}
		case "header":
			hdr, err := SealHeader(Framing{0x19, 0x43, 0x56, 0x54, 0xed, 0xa1, 0x45, 0x53}, key, stanzas, files)
			if err != nil {
				t.Fatal(err)
			}
			if got = hex.EncodeToString(hdr); got != kv["hex"] {
				t.Errorf("%s: got %s", sc.Text(), got)
			}
		case "payload_key":
			file.Name = kv["name"]
			if got = hex.EncodeToString(key.payloadKey(file)); got != kv["hex"] {
				t.Errorf("%s: got %s", sc.Text(), got)
			}
		case "mac_key":
			if got = hex.EncodeToString(key.macKey()); got != kv["hex"] {
				t.Errorf("%s: got %s", sc.Text(), got)
			}
		case "oaep_label":
			if got = hex.EncodeToString(key.context().rsaLabel()); got != kv["hex"] {
				t.Errorf("%s: got %s", sc.Text(), got)
			}
		case "hpke_info":
			fp, _ := hex.DecodeString(kv["fp"])
			if got = hex.EncodeToString(key.context().hpkeInfo(Fingerprint(fp))); got != kv["hex"] {
				t.Errorf("%s: got %s", sc.Text(), got)
			}
		default:
			t.Fatalf("unknown line %q", sc.Text())
		}
		checked[version]++
	}
	if checked[1] != 16 || checked[2] != 16 {
		t.Fatalf("checked %d v1 and %d v2 answers, want 16 and 16", checked[1], checked[2])
	}
}

// TestKnownAnswersFromPython runs the independent implementation itself
// (testdata/kat.py, pyca/cryptography) and checks that it still gives
// testdata/kat.txt, the answers TestKnownAnswers holds the Go code to. It skips,
// saying why, without python3 or its cryptography module.
func TestKnownAnswersFromPython(t *testing.T) {
	out := runPython(t, "testdata/kat.py")
	want, err := os.ReadFile("testdata/kat.txt")
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Fatalf("kat.py gives other answers than testdata/kat.txt:\n%s", out)
	}
}

// runPython runs python3 with args and returns its output; it skips the test
// when python3 or the cryptography module is missing (the script exits 77).
func runPython(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not found: the independent Python check is skipped")
	}
	out, err := exec.Command("python3", args...).Output()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 77 {
		t.Skipf("the independent Python check is skipped: %s", strings.TrimSpace(string(out)))
	}
	if err != nil {
		t.Fatalf("python3 %v: %v\n%s", args, err, out)
	}
	return string(out)
}
