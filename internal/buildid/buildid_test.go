package buildid

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestOddLengthRoundTrip: a build id whose length is not a multiple of 4 (here 5 bytes)
// is recorded padded, as CRIU does, and still matches the file it was read from (dump
// and restore once disagreed on it, so imgtool refused its own dump of such a binary).
func TestOddLengthRoundTrip(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler")
	}
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "m.c"), filepath.Join(dir, "m")
	if err := os.WriteFile(src, []byte("int main(void){return 0;}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-Wl,--build-id=0x0102030405", "-o", bin, src).CombinedOutput(); err != nil {
		t.Skipf("cannot link with a chosen build id: %v %s", err, out)
	}
	id, err := Read(bin)
	if err != nil {
		t.Fatal(err)
	}
	if string(id) != "\x01\x02\x03\x04\x05" {
		t.Fatalf("build id %x, want 0102030405", id)
	}
	w := Words(id)
	if len(w) != 2 || w[0] != 0x04030201 || w[1] != 0x05 {
		t.Fatalf("words %#x, want [0x4030201 0x5]", w)
	}
	if !Matches(id, w) || Matches(id, w[:1]) || Matches([]byte{1, 2, 3, 4, 6}, w) {
		t.Fatal("Matches disagrees")
	}
	if id, err := Read(src); err != nil || id != nil {
		t.Fatalf("a text file: %x, %v; want none", id, err)
	}
}
