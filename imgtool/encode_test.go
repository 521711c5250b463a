package imgtool

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every golden, plain and pretty, encodes back to its image, byte for byte, through
// -i/-o and through stdin/stdout.
func TestEncodeGoldens(t *testing.T) {
	dir := t.TempDir()
	for i, img := range critImages(t) {
		orig, err := os.ReadFile(img.path)
		if err != nil {
			t.Fatal(err)
		}
		for _, suffix := range []string{".json", ".pretty.json"} {
			js, err := os.ReadFile(img.golden + suffix)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(dir, filepath.Base(img.path))
			if _, _, err := runWithStdin(t, nil, "encode", "-i", img.golden+suffix, "-o", dst); err != nil {
				t.Errorf("encode %s: %v", img.golden+suffix, err)
				continue
			}
			if got, _ := os.ReadFile(dst); !bytes.Equal(got, orig) {
				t.Errorf("encode -i %s -o: not the original image", img.golden+suffix)
			}
			if i%10 == 0 { // stdin/stdout for a sample, -i/-o for all
				out, _, err := runWithStdin(t, js, "encode")
				if err != nil || out != string(orig) {
					t.Errorf("encode < %s: %v", img.golden+suffix, err)
				}
			}
		}
	}
}

func TestEncodeErrorLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "pstree.img")
	in := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(in, []byte(`{"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1}, {"pid": "x"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := runWithStdin(t, nil, "encode", "-i", in, "-o", dst)
	if ExitCode(err) != ExitError || !strings.Contains(err.Error(), "entry 1") {
		t.Errorf("exit %d, %v", ExitCode(err), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("files left behind: %v", entries)
	}
	// The output of show --nopl has lost its payloads.
	nopl := filepath.Join(fixtureDir, "misc.crit", "sk-queues.img.nopl.json")
	if _, _, err := runWithStdin(t, nil, "encode", "-i", nopl, "-o", dst); err == nil || !strings.Contains(err.Error(), "nopl") {
		t.Errorf("encode of show --nopl output: %v", err)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Errorf("%s written", dst)
	}
}

// TestEncodeFailureWritesNothingToStdout: JSON that fails at its second entry must
// not leave the first on stdout, where it would pass for a whole image.
func TestEncodeFailureWritesNothingToStdout(t *testing.T) {
	in := `{"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1}, {"pid": "x"}]}`
	out, _, err := runWithStdin(t, []byte(in), "encode")
	if err == nil || out != "" {
		t.Errorf("encode of bad JSON: err %v, %d bytes on stdout; want an error and nothing", err, len(out))
	}
	good := `{"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1}]}`
	if out, _, err := runWithStdin(t, []byte(good), "encode"); err != nil || len(out) == 0 {
		t.Errorf("encode of good JSON to stdout: %v, %d bytes", err, len(out))
	}
}

// TestEncodeRefusesEncryptedSetFolder: encode -o into the folder of an encrypted set
// would put a plaintext image among its ciphertext (and a file its manifest does not
// list): refused, nothing written. decode -o is refused there too.
func TestEncodeRefusesEncryptedSetFolder(t *testing.T) {
	dir := copySet(t, filepath.Join(fixtureDir, "tree"))
	if _, _, err := runApp(t, "encrypt", "-q", "-D", dir, "--cert", keyPath("bob-p256.crt")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir(dir)
	golden := filepath.Join(fixtureDir, "tree.crit", "pstree.img.json")
	for _, args := range [][]string{
		{"encode", "-i", golden, "-o", filepath.Join(dir, "pstree.img")},
		{"encode", "-i", golden, "-o", filepath.Join(dir, "new.img")},
		{"decode", "-i", filepath.Join(fixtureDir, "tree", "pstree.img"), "-o", filepath.Join(dir, "pstree.json")},
	} {
		_, _, err := runWithStdin(t, nil, args...)
		if ExitCode(err) != ExitError || !strings.Contains(err.Error(), "encrypted image set") {
			t.Errorf("%s: exit %d, %v; want a refusal", strings.Join(args, " "), ExitCode(err), err)
		}
	}
	if after, _ := os.ReadDir(dir); len(after) != len(before) {
		t.Errorf("the encrypted set changed: %d files, then %d", len(before), len(after))
	}
	if _, _, err := runApp(t, "verify", "-q", dir, "--tls-key", keyPath("bob-p256.key")); err != nil {
		t.Errorf("the set no longer verifies: %v", err)
	}
}
