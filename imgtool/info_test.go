package imgtool

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgtool/imgtool/image"
)

// info matches crit's output except where crit is wrong: images with payloads, which
// crit miscounts (or, for ghost files, fails on). For those the right count is the
// number of entries in crit's own decode output.
func TestInfoGoldens(t *testing.T) {
	for _, img := range critImages(t) {
		out, _, err := runWithStdin(t, nil, "info", img.path)
		if err != nil {
			t.Errorf("info %s: %v", img.path, err)
			continue
		}
		if !image.KindByFileName(img.path).HasPayload() {
			if want, err := os.ReadFile(img.golden + ".info"); err != nil || out != string(want) {
				t.Errorf("info %s: %v\n%s", img.path, err, out)
			}
			continue
		}
		js, err := os.ReadFile(img.golden + ".json")
		if err != nil {
			t.Fatal(err)
		}
		var decoded struct {
			Magic   string            `json:"magic"`
			Entries []json.RawMessage `json:"entries"`
		}
		if err := json.Unmarshal(js, &decoded); err != nil {
			t.Fatal(err)
		}
		magic, entries := decoded.Magic, len(decoded.Entries)
		want := "{\n    \"magic\": \"" + magic + "\",\n    \"count\": " + itoa(entries) + "\n}\n"
		if out != want {
			t.Errorf("info %s:\n%s\nwant\n%s", img.path, out, want)
		}
	}
}

func TestInfoErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"info"}, ExitUsage},
		{[]string{"info", "a", "b"}, ExitUsage},
		{[]string{"info", filepath.Join(fixtureDir, "tree", "pages-1.img")}, ExitError},
		{[]string{"info", filepath.Join(t.TempDir(), "nope.img")}, ExitError},
	} {
		if _, _, err := runWithStdin(t, nil, c.args...); ExitCode(err) != c.code {
			t.Errorf("%v: exit %d (%v), want %d", c.args, ExitCode(err), err, c.code)
		}
	}
}
