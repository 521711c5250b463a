package imgtool

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readmeRunnable names the README sections whose sh examples must run as they are,
// from the top of a clone.
var readmeRunnable = []string{"The codec, as crit", "Exploring a set"}

// readmeBlocks returns the ```sh code blocks of each "### SECTION" of the README.
func readmeBlocks(t *testing.T, readme string) map[string][]string {
	t.Helper()
	blocks := map[string][]string{}
	section, block, inBlock := "", "", false
	for line := range strings.Lines(readme) {
		trimmed := strings.TrimSpace(line)
		switch {
		case inBlock && trimmed == "```":
			blocks[section] = append(blocks[section], block)
			block, inBlock = "", false
		case inBlock:
			block += line
		case trimmed == "```sh":
			inBlock = true
		case strings.HasPrefix(line, "#"):
			section = strings.TrimSpace(strings.TrimLeft(line, "#"))
		}
	}
	if inBlock {
		t.Fatalf("README: code block of %q not closed", section)
	}
	return blocks
}

// TestReadmeExamplesRun runs the README's codec and exploring examples, verbatim, with
// the built binary as imgtool on the PATH, in an empty folder that holds only the
// fixtures (as a clone has them): each block must succeed as a whole (sh -e), so an
// example that needs a file no earlier one made fails here.
func TestReadmeExamplesRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, string(readme))
	bin := buildImgtool(t)
	fixtures, err := filepath.Abs("../fixtures")
	if err != nil {
		t.Fatal(err)
	}
	for _, section := range readmeRunnable {
		if len(blocks[section]) == 0 {
			t.Errorf("README: no sh examples under %q", section)
		}
		for i, script := range blocks[section] {
			if strings.Count(script, "imgtool ") < 3 {
				t.Errorf("README %q block %d: too few examples to be the real ones:\n%s", section, i, script)
			}
			dir := t.TempDir()
			if err := os.Symlink(fixtures, filepath.Join(dir, "fixtures")); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sh, "-e", "-x", "-c", script)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("README %q block %d: %v\n%s", section, i, err, out)
			}
		}
	}
}
