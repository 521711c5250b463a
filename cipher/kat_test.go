package cipher

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestKnownAnswers checks the Go implementation against testdata/kat.txt, made by
// testdata/kat.py: a second implementation of the format written from the spec
// with pyca/cryptography (its MAC key also matches `openssl kdf ... HKDF`).
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
	files := []FileInfo{{"pages-1.img", 70000}, {"inventory.img", 86}, {"core-1.img", 0}}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	checked := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		kv := map[string]string{}
		for _, fl := range fields[1:] {
			k, v, _ := strings.Cut(fl, "=")
			kv[k] = v
		}
		alg, _ := strconv.Atoi(kv["alg"])
		key := newSetKeyFrom(fileKey, id, Algorithm(alg))
		var got string
		switch fields[0] {
		case "file":
			size, _ := strconv.Atoi(kv["size"])
			plain := make([]byte, size)
			for i := range plain {
				plain[i] = byte(i * 7 / 5)
			}
			var ct bytes.Buffer
			w, _ := key.NewWriter(&ct, "pages-1.img")
			w.Write(plain)
			w.Close()
			sum := sha256.Sum256(ct.Bytes())
			got = "sha256=" + hex.EncodeToString(sum[:]) + " head=" + hex.EncodeToString(ct.Bytes()[:min(48, ct.Len())])
			if want := "sha256=" + kv["sha256"] + " head=" + kv["head"]; got != want {
				t.Errorf("%s: got %s", sc.Text(), got)
			}
			back, err := key.Decrypt(ct.Bytes(), "pages-1.img")
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
			if got = hex.EncodeToString(key.payloadKey(kv["name"])); got != kv["hex"] {
				t.Errorf("%s: got %s", sc.Text(), got)
			}
		case "mac_key":
			if got = hex.EncodeToString(key.macKey()); got != kv["hex"] {
				t.Errorf("%s: got %s", sc.Text(), got)
			}
		default:
			t.Fatalf("unknown line %q", sc.Text())
		}
		checked++
	}
	if checked != 14 {
		t.Fatalf("checked %d answers, want 14", checked)
	}
}
