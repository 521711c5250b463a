package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/imgtool/imgtool/explore"
	"github.com/imgtool/imgtool/imgset"
)

const (
	fixture = "../fixtures/podman/ctr1b.tar"
	canary  = "PODMAN-CANARY-5d1e"
)

func readFixture(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func gzipped(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstded(t testing.TB, data []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(data, nil)
}

// variants writes the fixture plain, gzip and zstd; the zstd one under a .tar.gz
// name, as Podman 4.3 does.
func variants(t *testing.T) map[Compression]string {
	t.Helper()
	dir := t.TempDir()
	plain := readFixture(t)
	out := map[Compression]string{}
	for c, data := range map[Compression][]byte{None: plain, Gzip: gzipped(t, plain), Zstd: zstded(t, plain)} {
		name := filepath.Join(dir, "ckpt-"+string(c)+".tar.gz")
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out[c] = name
	}
	return out
}

func TestOpenVariants(t *testing.T) {
	for comp, path := range variants(t) {
		t.Run(string(comp), func(t *testing.T) {
			if !IsArchive(path) {
				t.Fatal("IsArchive false")
			}
			a, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			checkArchive(t, a, comp)
		})
	}
}

func TestReadStream(t *testing.T) {
	a, err := Read("stdin", bytes.NewReader(zstded(t, readFixture(t))), Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkArchive(t, a, Zstd)
	a, err = Read("stdin", bytes.NewReader(readFixture(t)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkArchive(t, a, None)
}

func checkArchive(t *testing.T, a *Archive, comp Compression) {
	t.Helper()
	if a.Compression() != comp {
		t.Errorf("compression %s, want %s", a.Compression(), comp)
	}
	info, err := a.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "ctr1b" || info.Engine != "Podman" || info.Runtime != "runc" || info.Image != "localhost/mini:latest" ||
		!strings.HasPrefix(info.ID, "5a49fac6fc42") || info.Created.IsZero() || info.Checkpointed.IsZero() {
		t.Errorf("info %+v", info)
	}
	if info.CheckpointSize != 177424 || info.PagesSize != 77824+65536 || info.RootfsDiffSize != 2048 || info.DevShmSize != 1536 {
		t.Errorf("sizes %d %d %d %d", info.CheckpointSize, info.PagesSize, info.RootfsDiffSize, info.DevShmSize)
	}
	if info.Stats == nil || info.Stats.PagesWritten != 35 || len(info.Problems) != 0 {
		t.Errorf("stats %+v problems %v", info.Stats, info.Problems)
	}
	spec, err := a.ReadFile(SpecDump)
	if err != nil || !bytes.Contains(spec, []byte(canary)) {
		t.Errorf("spec.dump: %v", err)
	}
	if _, err := a.ReadFile("nope"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing member: %v", err)
	}
	set, err := a.Set(imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	procs, err := explore.PS(set)
	if err != nil {
		t.Fatal(err)
	}
	if len(procs) != 2 || procs[0].Comm != "sh" || procs[1].Comm != "sleep" {
		t.Errorf("ps %+v", procs)
	}
	args, err := explore.ProcessArgs(set, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != 2 || strings.Join(args[0].Cmdline, " ") != strings.Join(info.Command, " ") ||
		!contains(args[0].Env, "SECRET="+canary) || strings.Join(args[1].Cmdline, " ") != "sleep 0.2" {
		t.Errorf("args %+v", args)
	}
	res, err := explore.SearchMemory(set, explore.SearchOptions{Literal: []byte(canary), Context: 16})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Matches) == 0 {
		t.Fatal("canary not found in the pages")
	}
	for _, m := range res.Matches {
		// In the environment area at the top of the stack, in user space.
		if m.Mapping != "stack" || m.Addr < 0x7f0000000000 || m.Addr >= 0x800000000000 || string(m.Match) != canary ||
			!bytes.HasSuffix(m.Before, []byte("SECRET=")) {
			t.Errorf("match %+v", m)
		}
	}
	if _, err := a.Set(imgset.OpenOptions{RequireEncrypted: true}); !errors.Is(err, imgset.ErrNotEncrypted) {
		t.Errorf("RequireEncrypted: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestDetectByContent(t *testing.T) {
	plain := readFixture(t)
	for _, tc := range []struct {
		head []byte
		want Compression
		err  string
	}{
		{plain[:512], None, ""},
		{gzipped(t, plain)[:16], Gzip, ""},
		{zstded(t, plain)[:16], Zstd, ""},
		{[]byte{0xfd, '7', 'z', 'X', 'Z', 0}, "", "xz"},
		{[]byte("BZh91AY"), "", "bzip2"},
		{[]byte("hello"), "", "not a container checkpoint archive"},
		{nil, "", "not a container checkpoint archive"},
	} {
		got, err := Detect(tc.head)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Detect(%q...) = %s, %v", tc.head[:min(8, len(tc.head))], got, err)
		}
	}
	if IsArchive("../fixtures/criu-4.2/tree") {
		t.Error("a folder is an archive")
	}
}

// TestMemoryLimit: a compressed archive whose needed members exceed MaxMemory is
// refused, saying why; an uncompressed file is read in place within any limit.
func TestMemoryLimit(t *testing.T) {
	v := variants(t)
	_, err := Open(v[Gzip], Options{MaxMemory: 64 << 10})
	if err == nil || !strings.Contains(err.Error(), "in memory") || strings.Contains(err.Error(), "\n") {
		t.Errorf("gzip over the limit: %v", err)
	}
	a, err := Open(v[None], Options{MaxMemory: 1})
	if err != nil {
		t.Fatalf("plain file, in place: %v", err)
	}
	a.Close()
}

// tarOf builds a tar from headers and contents.
func tarOf(t *testing.T, entries ...any) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i < len(entries); i += 2 {
		h := entries[i].(*tar.Header)
		data := []byte(entries[i+1].(string))
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Size == 0 {
			h.Size = int64(len(data))
		}
		if h.Mode == 0 {
			h.Mode = 0o600
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.Close()
	return buf.Bytes()
}

func TestHostile(t *testing.T) {
	plain := readFixture(t)
	cases := map[string][]byte{
		"empty":       {},
		"garbage":     bytes.Repeat([]byte{0x5a}, 4096),
		"gzip header": gzipped(t, plain)[:20],
		"zstd header": zstded(t, plain)[:20],
		"dotdot":      tarOf(t, &tar.Header{Name: "../etc/passwd"}, "x"),
		"absolute":    tarOf(t, &tar.Header{Name: "/etc/passwd"}, "x"),
		"duplicate":   tarOf(t, &tar.Header{Name: "checkpoint/a.img"}, "x", &tar.Header{Name: "./checkpoint/a.img"}, "y"),
		"only eof":    make([]byte, 1024),
	}
	for _, n := range []int{100, 600, 1024, 20000, len(plain) / 2, len(plain) - 1024 - 100} {
		cases["truncated at "+itoa(n)] = plain[:n]
	}
	cases["gzip truncated"] = gzipped(t, plain)[:5000]
	cases["zstd truncated"] = zstded(t, plain)[:5000]
	dir := t.TempDir()
	for name, data := range cases {
		path := filepath.Join(dir, "x.tar")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := Open(path, Options{})
		if err == nil {
			a.Close()
			t.Errorf("%s: opened", name)
			continue
		}
		if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q: not one line naming the archive", name, err)
		}
	}
	// An archive without an image set, or without metadata, is refused when used.
	a, err := Read("x", bytes.NewReader(tarOf(t, &tar.Header{Name: "config.dump"}, "{}")), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Set(imgset.OpenOptions{}); err == nil || !strings.Contains(err.Error(), "no CRIU image set") {
		t.Errorf("no set: %v", err)
	}
	a, err = Read("x", bytes.NewReader(tarOf(t, &tar.Header{Name: "checkpoint/pstree.img"}, "x")), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Info(); err == nil || !strings.Contains(err.Error(), "not a container checkpoint") {
		t.Errorf("no metadata: %v", err)
	}
	// Bad JSON metadata is a problem listed, not a failure.
	a, err = Read("x", bytes.NewReader(tarOf(t, &tar.Header{Name: "config.dump"}, "{", &tar.Header{Name: "stats-dump"}, "zz")), Options{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := a.Info()
	if err != nil || len(info.Problems) != 3 {
		t.Errorf("bad metadata: %v %q", err, info.Problems)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// FuzzRead: whatever the bytes, reading an archive and everything imgtool shows of
// it ends in a result or an error, never a panic, within the memory limit.
func FuzzRead(f *testing.F) {
	plain := readFixture(f)
	f.Add(plain)
	f.Add(gzipped(f, plain))
	f.Add(zstded(f, plain))
	// The fixture's small members only: the fuzzer mutates small inputs far faster.
	small := smallSeed(f, plain)
	f.Add(small)
	f.Add(gzipped(f, small))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Read("fuzz", bytes.NewReader(data), Options{MaxMemory: 4 << 20})
		if err != nil {
			return
		}
		a.Info()
		for _, m := range a.Members() {
			a.ReadFile(m.Name)
		}
		set, err := a.Set(imgset.OpenOptions{})
		if err != nil {
			return
		}
		explore.Inspect(set)
		explore.ProcessArgs(set, true)
		explore.FDs(set)
		explore.Sockets(set)
		explore.Mounts(set)
		explore.SearchMemory(set, explore.SearchOptions{Literal: []byte("SECRET"), Context: 64})
	})
}

// smallSeed is the fixture without its large members (pages, seccomp, the JSON
// dumps, the log), for the fuzzer.
func smallSeed(t testing.TB, plain []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(plain))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Size > 4096 {
			continue
		}
		tw.WriteHeader(h)
		io.Copy(tw, tr)
	}
	tw.Close()
	return buf.Bytes()
}
