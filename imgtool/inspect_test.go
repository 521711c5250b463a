package imgtool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgtool/imgtool/explore"
)

func TestInspect(t *testing.T) {
	for _, name := range fixtureSetNames(t) {
		dir := filepath.Join(fixtureDir, name)
		sum, err := explore.Inspect(openFixtureSet(t, name))
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := runApp(t, "inspect", dir)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		fields := map[string]string{}
		kinds := map[string][]string{}
		inKinds := false
		for _, r := range tableRows(out) {
			switch {
			case len(r) == 0:
			case r[0] == "KIND":
				inKinds = true
			case inKinds:
				kinds[r[0]] = r[1:]
			default:
				fields[r[0]] = strings.Join(r[1:], " ")
			}
		}
		if !strings.HasPrefix(fields["processes"], itoa(sum.Processes)+" ") || fields["threads"] != itoa(sum.Threads) {
			t.Errorf("%s: processes %q threads %q, want %d %d", name, fields["processes"], fields["threads"], sum.Processes, sum.Threads)
		}
		if !strings.HasPrefix(fields["memory"], itoa(sum.Memory.Pages)+" pages, "+itoa(sum.Memory.Bytes)+" B") {
			t.Errorf("%s: memory %q, want %+v", name, fields["memory"], sum.Memory)
		}
		if !strings.HasPrefix(fields["files"], itoa(sum.Files)+", "+itoa(sum.Bytes)+" B") || fields["encrypted"] != "no" {
			t.Errorf("%s: files %q encrypted %q", name, fields["files"], fields["encrypted"])
		}
		if len(kinds) != len(sum.Kinds) {
			t.Errorf("%s: kinds %v, want %v", name, kinds, sum.Kinds)
		}
		for _, k := range sum.Kinds {
			if got := kinds[k.Name]; len(got) != 2 || got[0] != itoa(k.Files) || got[1] != itoa(k.Bytes) {
				t.Errorf("%s: kind %s row %q, want %+v", name, k.Name, got, k)
			}
		}
		out, _, err = runApp(t, "inspect", "--json", dir)
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, out, *sum)
	}
}

// TestInspectSaysPagesAreShort: a pages file shorter than its pagemap is a damaged set:
// the summary says so, its last line names the file, and inspect exits 1 (plain and
// --json), so that a script does not take the set for a usable one.
func TestInspectSaysPagesAreShort(t *testing.T) {
	dir := copySet(t, filepath.Join(fixtureDir, "counter"))
	if err := os.Truncate(filepath.Join(dir, "pages-1.img"), 4096); err != nil {
		t.Fatal(err)
	}
	out, _, err := runWithStdin(t, nil, "inspect", dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if ExitCode(err) != ExitError || !strings.Contains(out, "(DAMAGED") ||
		!strings.HasPrefix(lines[len(lines)-1], "DAMAGED: pages-1.img: 4096 B, shorter than the ") ||
		!strings.Contains(err.Error(), "damaged: pages-1.img: ") {
		t.Errorf("inspect of a set with a short pages file: exit %d, %v\n%s", ExitCode(err), err, out)
	}
	out, _, err = runWithStdin(t, nil, "inspect", "--json", dir)
	if ExitCode(err) != ExitError || !strings.Contains(out, `"problems": [`) {
		t.Errorf("inspect --json of a set with a short pages file: exit %d, %v\n%s", ExitCode(err), err, out)
	}
	out, _, err = runWithStdin(t, nil, "inspect", filepath.Join(fixtureDir, "counter"))
	if err != nil || strings.Contains(out, "DAMAGED") {
		t.Errorf("inspect of a whole set: %v\n%s", err, out)
	}
}

// TestInspectMissingInventory: without inventory.img nothing can restore the set:
// inspect still summarizes it, and exits 1 naming the file.
func TestInspectMissingInventory(t *testing.T) {
	dir := copySet(t, filepath.Join(fixtureDir, "tree"))
	if err := os.Remove(filepath.Join(dir, "inventory.img")); err != nil {
		t.Fatal(err)
	}
	out, _, err := runWithStdin(t, nil, "inspect", dir)
	if ExitCode(err) != ExitError || !strings.Contains(out, "processes") ||
		!strings.HasSuffix(out, "DAMAGED: inventory.img: missing (restore needs it)\n") {
		t.Errorf("inspect without inventory.img: exit %d, %v\n%s", ExitCode(err), err, out)
	}
}
