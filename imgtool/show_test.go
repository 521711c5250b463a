package imgtool

import (
	"os"
	"path/filepath"
	"testing"
)

func TestShowGoldens(t *testing.T) {
	n := 0
	for _, img := range critImages(t) {
		for _, c := range []struct {
			suffix string
			args   []string
		}{
			{".pretty.json", []string{"show", img.path}},
			{".nopl.json", []string{"show", img.path, "--nopl"}},
			{".nopl.json", []string{"show", "--nopl", img.path}},
		} {
			want, err := os.ReadFile(img.golden + c.suffix)
			if os.IsNotExist(err) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := runWithStdin(t, nil, c.args...)
			if err != nil || out != string(want) {
				t.Errorf("%v: %v, differs from crit", c.args, err)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no show goldens")
	}
}

func TestShowUsage(t *testing.T) {
	for _, args := range [][]string{{"show"}, {"show", "a", "b"}, {"show", "--nopl"}} {
		if _, _, err := runWithStdin(t, nil, args...); ExitCode(err) != ExitUsage {
			t.Errorf("%v: exit %d (%v), want %d", args, ExitCode(err), err, ExitUsage)
		}
	}
	if _, _, err := runWithStdin(t, nil, "show", filepath.Join(fixtureDir, "missing.img")); ExitCode(err) != ExitError {
		t.Errorf("missing file: exit %d", ExitCode(err))
	}
}
