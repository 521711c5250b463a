package fhandle

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRoundTrip: a real file's handle, as fdinfo would show it, goes through CRIU's
// fh_entry words and back, and opens the same file again, found through the mounts.
func TestRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("open_by_handle_at needs CAP_DAC_READ_SEARCH")
	}
	path := filepath.Join(t.TempDir(), "watched")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fh, _, err := unix.NameToHandleAt(unix.AT_FDCWD, path, 0)
	if err != nil {
		t.Skipf("no file handles here: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	h, err := Parse(hexOf(len(fh.Bytes())), hexOf(int(fh.Type())), hex.EncodeToString(fh.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	w := h.Words()
	if len(w) != 16 {
		t.Fatalf("%d words, want 16", len(w))
	}
	back, err := FromWords(uint32(len(fh.Bytes())), uint32(fh.Type()), w)
	if err != nil || string(back.Data) != string(fh.Bytes()) || back.Type != fh.Type() {
		t.Fatalf("FromWords: %v %x, want %x", err, back.Data, fh.Bytes())
	}
	sdev := uint32(unix.Major(st.Dev))<<20 | uint32(unix.Minor(st.Dev))
	f, err := Open(sdev, back)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := Path(f); err != nil || got != path {
		t.Fatalf("opened %q (%v), want %q", got, err, path)
	}
	if _, err := Parse("200", "1", "00"); err == nil {
		t.Error("a handle larger than MAX_HANDLE_SZ was taken")
	}
}

func hexOf(n int) string { return hex.EncodeToString([]byte{byte(n)}) }

func TestUnescape(t *testing.T) {
	if got := unescape(`/mnt/a\040b\134c`); got != `/mnt/a b\c` {
		t.Errorf("unescape = %q", got)
	}
}
