package imgtool

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// drained reads what is waiting on the master side of a pty: until nothing comes for
// 200 ms, and for 3 s at most (a bar that keeps redrawing must not hang the test).
func drained(t *testing.T, master *os.File) string {
	t.Helper()
	var out bytes.Buffer
	buf := make([]byte, 4096)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		master.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := master.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.String()
		}
	}
	return out.String()
}

// TestProgressOnlyOnATerminal: a bar is drawn on a terminal only, never with -q,
// and never on a file, a pipe or a buffer (where it would be noise in a log).
func TestProgressOnlyOnATerminal(t *testing.T) {
	file, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for name, w := range map[string]any{"a file": file, "a buffer": &bytes.Buffer{}} {
		if p, done := newProgress(w.(interface{ Write([]byte) (int, error) }), false, "testing"); p != nil {
			t.Errorf("%s gets a progress bar", name)
		} else {
			done()
		}
	}
	if st, _ := file.Stat(); st.Size() != 0 {
		t.Errorf("%d bytes written to a file", st.Size())
	}
	master, tty := openPTY(t)
	if p, _ := newProgress(tty, true, "testing"); p != nil {
		t.Error("quiet: a progress bar")
	}
	p, done := newProgress(tty, false, "testing")
	if p == nil {
		t.Fatal("a terminal gets no progress bar")
	}
	// The first sample comes a moment after the start, with a chunk done: no rate
	// may be shown for it.
	p(64<<10, 256<<20)
	first := drained(t, master)
	if !strings.Contains(first, "testing 64.0 KiB of 256.0 MiB") || strings.Contains(first, "/s") {
		t.Errorf("first sample drawn as %q", first)
	}
	done()
}

// TestProgressRate: the rate is shown only past both minimums, and is then the
// plain average.
func TestProgressRate(t *testing.T) {
	for _, tc := range []struct {
		n       int64
		elapsed time.Duration
		want    string
	}{
		{64 << 10, 2 * time.Millisecond, ""},    // 32 GiB/s from one chunk: noise
		{300 << 20, 100 * time.Millisecond, ""}, // too soon
		{512 << 10, 2 * time.Second, ""},        // too little
		{1 << 30, time.Second, ", 1.0 GiB/s"},
		{3 << 20, 2 * time.Second, ", 1.5 MiB/s"},
	} {
		got := strings.TrimPrefix(progressText("x", tc.n, 1<<40, tc.elapsed), "x "+humanBytes(tc.n)+" of 1.0 TiB")
		if got != tc.want {
			t.Errorf("%d bytes in %v: %q, want %q", tc.n, tc.elapsed, got, tc.want)
		}
	}
}

// TestBarWidth: a sane width whatever the terminal says.
func TestBarWidth(t *testing.T) {
	for _, tc := range []struct {
		cols  int
		known bool
		want  int
	}{
		{0, false, 30}, {0, true, 30}, {-1, true, 30}, {20, true, 10}, {80, true, 16}, {100, true, 36}, {400, true, 50},
	} {
		if got := barWidth(tc.cols, tc.known); got != tc.want {
			t.Errorf("barWidth(%d, %v) = %d, want %d", tc.cols, tc.known, got, tc.want)
		}
	}
}
