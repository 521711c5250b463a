package imgtool

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/imgtool/imgtool/archive"
	"github.com/imgtool/imgtool/imgset"
)

const (
	podmanArchive = "../fixtures/podman/ctr1b.tar"
	podmanCanary  = "PODMAN-CANARY-5d1e"
)

// podmanVariants writes the fixture archive gzip- and zstd-compressed, the zstd
// one under a .tar.gz name as Podman 4.3 does.
func podmanVariants(t *testing.T) map[string]string {
	t.Helper()
	plain, err := os.ReadFile(podmanArchive)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain)
	zw.Close()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	zs := enc.EncodeAll(plain, nil)
	enc.Close()
	out := map[string]string{"none": podmanArchive}
	for name, data := range map[string][]byte{"gzip": gz.Bytes(), "zstd": zs} {
		p := filepath.Join(dir, name+".tar.gz")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out[name] = p
	}
	return out
}

func TestInspectArchive(t *testing.T) {
	for comp, path := range podmanVariants(t) {
		out, _, err := runApp(t, "inspect", path)
		if err != nil {
			t.Fatalf("%s: %v", comp, err)
		}
		for _, want := range []string{"container         ctr1b", "id                5a49fac6fc42", "image             localhost/mini:latest",
			"runtime           runc", "engine            Podman", "(" + comp + ")", "created           2026-12-01T23:47:50Z",
			"checkpoint size   177424 B", "rootfs diff size  2048 B", "processes      2 (root 1 sh)",
			"1    0     sh         /bin/sh -c i=0;", "122  1         sleep  sleep 0.2", "1    2     PIPE  pipe[288977]",
			"no sockets", "104     100     overlayfs    overlay   /", "dump statistics   freezing"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: no %q in\n%s", comp, want, out)
			}
		}
		if strings.Contains(out, podmanCanary) {
			t.Errorf("%s: the environment is shown without --env", comp)
		}
	}
	out, _, err := runApp(t, "inspect", "--env", podmanArchive)
	if err != nil || !strings.Contains(out, "SECRET="+podmanCanary) {
		t.Errorf("--env: %v\n%s", err, out)
	}
	out, _, err = runApp(t, "inspect", "--json", "--env", "-D", podmanArchive)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Compression string
		Container   archive.Info
		Set         struct{ Processes int }
		Processes   []struct {
			PID     int
			Cmdline []string
			Env     []string
		}
		Files  []struct{ PID int }
		Mounts []struct{ Mountpoint string }
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Compression != "none" || r.Container.Name != "ctr1b" || r.Set.Processes != 2 || len(r.Processes) != 2 ||
		r.Processes[1].PID != 122 || strings.Join(r.Processes[1].Cmdline, " ") != "sleep 0.2" ||
		!slicesContains(r.Processes[0].Env, "SECRET="+podmanCanary) || len(r.Files) != 2 || len(r.Mounts) < 10 {
		t.Errorf("json: %+v", r)
	}
}

func slicesContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestXArchive: every view reads an archive as it reads the set inside it.
func TestXArchive(t *testing.T) {
	set := extractSet(t)
	for comp, path := range podmanVariants(t) {
		for _, view := range []string{"ps", "fds", "mems", "rss", "sk"} {
			got, _, err := runApp(t, "x", path, view)
			if err != nil {
				t.Fatalf("%s %s: %v", comp, view, err)
			}
			want, _, err := runApp(t, "x", set, view)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s %s: archive\n%s\nset\n%s", comp, view, got, want)
			}
		}
	}
}

// extractSet copies the archive's image set into a folder, through the package.
func extractSet(t *testing.T) string {
	t.Helper()
	a, err := archive.Open(podmanArchive, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	set, err := a.Set(imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "set")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range set.Names() {
		f, err := set.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type memJSON struct {
	Matches []struct {
		PID     int
		Addr    string
		Mapping string
		Text    string
	}
	Truncated bool
}

func TestXMemSearch(t *testing.T) {
	// Archives, every compression.
	for comp, path := range podmanVariants(t) {
		out, _, err := runApp(t, "x", path, "mem", "--search", podmanCanary, "--context", "16")
		if err != nil {
			t.Fatalf("%s: %v", comp, err)
		}
		if !strings.Contains(out, "pid 1  0x7ffc34389fc0  rw-p stack  18 bytes") ||
			!strings.Contains(out, "|r=podman.SECRET=|") || !strings.Contains(out, "2 match(es)") {
			t.Errorf("%s:\n%s", comp, out)
		}
	}
	// A regular expression, one process, JSON.
	out, _, err := runApp(t, "x", podmanArchive, "mem", "--search-regex", `SECRET=[A-Z]+-[A-Z]+-[0-9a-f]{4}`, "--pid", "122", "--json", "--context", "0")
	if err != nil {
		t.Fatal(err)
	}
	var r memJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Matches) != 1 || r.Matches[0].PID != 122 || r.Matches[0].Mapping != "stack" || r.Matches[0].Text != "SECRET="+podmanCanary ||
		!strings.HasPrefix(r.Matches[0].Addr, "0x7fff") {
		t.Errorf("regex: %+v", r)
	}
	// --max-matches stops the search.
	out, _, err = runApp(t, "x", podmanArchive, "mem", "--search", "/", "--max-matches", "3", "--json")
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || len(r.Matches) != 3 || !r.Truncated {
		t.Errorf("max-matches: %v %+v", err, r)
	}

	// The same set as a plain folder, and encrypted: decrypted in memory.
	set := extractSet(t)
	plain, _, err := runApp(t, "x", set, "mem", "--search", podmanCanary)
	if err != nil || !strings.Contains(plain, "2 match(es)") {
		t.Fatalf("plain set: %v\n%s", err, plain)
	}
	keys := t.TempDir()
	cert, key := filepath.Join(keys, "me.pem"), filepath.Join(keys, "me.key")
	if _, _, err := runApp(t, "keygen", "--cert", cert, "--key", key, "--type", "p256"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runApp(t, "encrypt", "-D", set, "--cert", cert); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(set, "pages-1.img")); err != nil || bytes.Contains(data, []byte(podmanCanary)) {
		t.Fatalf("pages-1.img not encrypted: %v", err)
	}
	enc, _, err := runApp(t, "x", set, "mem", "--search", podmanCanary, "--tls-key", key)
	if err != nil || enc != plain {
		t.Errorf("encrypted set: %v\n%s\nwant\n%s", err, enc, plain)
	}
	if _, _, err := runApp(t, "x", set, "mem", "--search", podmanCanary); err == nil {
		t.Error("encrypted set searched without a key")
	}
	// An archive's set is plaintext: a key given expects encryption, as for a folder.
	if _, _, err := runApp(t, "x", podmanArchive, "ps", "--tls-key", key); err == nil || !strings.Contains(err.Error(), "not encrypted") {
		t.Errorf("archive with a key: %v", err)
	}
	if _, _, err := runApp(t, "x", podmanArchive, "ps", "--tls-key", key, "--allow-plaintext"); err != nil {
		t.Errorf("archive with a key, --allow-plaintext: %v", err)
	}
}

func TestXMemErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.tar")
	data, err := os.ReadFile(podmanArchive)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, data[:30000], 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"x", podmanArchive, "mem"}, ExitUsage, "need one of --search TEXT or --search-regex RE"},
		{[]string{"x", podmanArchive, "mem", "--search", "a", "--search-regex", "b"}, ExitUsage, "need one of"},
		{[]string{"x", podmanArchive, "mem", "--search-regex", "("}, ExitUsage, "--search-regex"},
		{[]string{"x", podmanArchive, "mem", "--search", "a", "--context", "5000"}, ExitUsage, "--context 5000"},
		{[]string{"x", podmanArchive, "ps", "--search", "a"}, ExitUsage, "options of the mem view"},
		{[]string{"x", podmanArchive, "mem", "--search", "a", "--pid", "7"}, ExitError, "no process 7"},
		{[]string{"x", bad, "ps"}, ExitError, "archive " + bad},
		{[]string{"inspect", bad}, ExitError, "archive " + bad},
	}
	for _, c := range cases {
		out, _, err := runApp(t, c.args...)
		if err == nil || ExitCode(err) != c.code || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v: error %v (exit %d), want exit %d and %q", c.args, err, ExitCode(err), c.code, c.msg)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error spans lines: %q", c.args, err)
		}
		if c.code == ExitError && out != "" {
			t.Errorf("%v: printed %q before failing", c.args, out)
		}
	}
}

// TestInspectSetEnv: --env on a folder adds the processes with their environment.
func TestInspectSetEnv(t *testing.T) {
	out, _, err := runApp(t, "inspect", "--env", extractSet(t))
	if err != nil || !strings.Contains(out, "processes      2 (root 1 sh)") || !strings.Contains(out, "    SECRET="+podmanCanary) {
		t.Errorf("%v\n%s", err, out)
	}
}

// TestEncryptArchive: encrypt writes an archive in which no plaintext of the
// original is readable, inspect and x read it with a key, and decrypt gives back
// the original byte for byte, for every compression.
func TestEncryptArchive(t *testing.T) {
	keys := t.TempDir()
	cert, key := filepath.Join(keys, "me.pem"), filepath.Join(keys, "me.key")
	if _, _, err := runApp(t, "keygen", "--cert", cert, "--key", key); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for comp, path := range podmanVariants(t) {
		sealed := filepath.Join(dir, comp+".sealed.tar")
		if _, _, err := runApp(t, "encrypt", path, "-o", sealed, "--cert", cert); err != nil {
			t.Fatalf("%s: %v", comp, err)
		}
		data, err := os.ReadFile(sealed)
		if err != nil {
			t.Fatal(err)
		}
		for _, leak := range []string{podmanCanary, "config.dump", "spec.dump", "checkpoint/", "ctr1b"} {
			if bytes.Contains(data, []byte(leak)) {
				t.Errorf("%s: %q readable in the encrypted archive", comp, leak)
			}
		}
		out, _, err := runApp(t, "inspect", sealed, "--tls-key", key)
		if err != nil || !strings.Contains(out, "encrypted         yes, for ECDSA-P-256") || !strings.Contains(out, "container         ctr1b") ||
			!strings.Contains(out, "("+comp+")") {
			t.Errorf("%s: inspect: %v\n%s", comp, err, out)
		}
		if _, _, err := runApp(t, "inspect", sealed); err == nil || !strings.Contains(err.Error(), "--tls-key") {
			t.Errorf("%s: inspect without a key: %v", comp, err)
		}
		out, _, err = runApp(t, "x", sealed, "mem", "--search", podmanCanary, "--tls-key", key)
		if err != nil || !strings.Contains(out, "2 match(es)") {
			t.Errorf("%s: x mem: %v\n%s", comp, err, out)
		}
		back := filepath.Join(dir, comp+".back")
		if _, _, err := runApp(t, "decrypt", sealed, "-o", back, "--tls-key", key); err != nil {
			t.Fatalf("%s: decrypt: %v", comp, err)
		}
		orig, _ := os.ReadFile(path)
		got, err := os.ReadFile(back)
		if err != nil || !bytes.Equal(got, orig) {
			t.Errorf("%s: decrypt did not give back the original: %v", comp, err)
		}
		if st, err := os.Stat(back); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: decrypted archive mode %v", comp, st.Mode())
		}
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"encrypt", podmanArchive, "--cert", cert}, ExitUsage, "-o OUT"},
		{[]string{"encrypt", filepath.Join(dir, "none.sealed.tar"), "-o", filepath.Join(dir, "again"), "--cert", cert}, ExitError, "already an encrypted archive"},
		{[]string{"decrypt", filepath.Join(dir, "none.sealed.tar"), "--tls-key", key}, ExitUsage, "-o OUT"},
	} {
		_, _, err := runApp(t, c.args...)
		if err == nil || ExitCode(err) != c.code || !strings.Contains(err.Error(), c.msg) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v (exit %d)", c.args, err, ExitCode(err))
		}
	}
}
