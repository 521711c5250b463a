package image

import (
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	fh "github.com/checkpoint-restore/go-criu/v8/crit/images/fh"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	ipc_desc "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-desc"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
)

func mustDecodeJSON(t *testing.T, img []byte, opts JSONOptions) string {
	t.Helper()
	var out bytes.Buffer
	if err := DecodeJSON(bytes.NewReader(img), &out, opts); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return out.String()
}

func mustEncodeJSON(t *testing.T, js string) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := EncodeJSON(strings.NewReader(js), &out); err != nil {
		t.Fatalf("encode: %v\n%s", err, js)
	}
	return out.Bytes()
}

// writeTestImage writes entries (message, payload) as an image of kind name.
func writeTestImage(t *testing.T, name string, entries ...any) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, KindByName(name))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e := e.(type) {
		case proto.Message:
			if err := w.WriteEntry(e); err != nil {
				t.Fatal(err)
			}
		case []byte:
			if _, err := w.Write(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// crit 4.2 ignores in_pagemaps and reads a two-segment ipcns-shm image wrongly. A
// segment in the pagemap images has no payload and so no "extra".
func TestShmTwoSegments(t *testing.T) {
	desc := func(id uint32) *ipc_desc.IpcDescEntry {
		return &ipc_desc.IpcDescEntry{Key: proto.Uint32(id), Uid: proto.Uint32(0), Gid: proto.Uint32(0),
			Cuid: proto.Uint32(0), Cgid: proto.Uint32(0), Mode: proto.Uint32(0o600), Id: proto.Uint32(id)}
	}
	img := writeTestImage(t, "IPCNS_SHM",
		&ipc_shm.IpcShmEntry{Desc: desc(1), Size: proto.Uint64(8192), InPagemaps: proto.Bool(true)},
		&ipc_shm.IpcShmEntry{Desc: desc(2), Size: proto.Uint64(5)},
		[]byte("hello"),
	)
	got := mustDecodeJSON(t, img, JSONOptions{})
	want := `{"magic": "IPCNS_SHM", "entries": [` +
		`{"desc": {"key": 1, "uid": 0, "gid": 0, "cuid": 0, "cgid": 0, "mode": 384, "id": 1}, "size": 8192, "in_pagemaps": true}, ` +
		`{"desc": {"key": 2, "uid": 0, "gid": 0, "cuid": 0, "cgid": 0, "mode": 384, "id": 2}, "size": 5, "extra": "aGVsbG8=\n"}]}`
	if got != want {
		t.Errorf("decode:\n got %s\nwant %s", got, want)
	}
	if back := mustEncodeJSON(t, got); !bytes.Equal(back, img) {
		t.Errorf("encode does not give back the image")
	}
	nopl := mustDecodeJSON(t, img, JSONOptions{Pretty: true, NoPayload: true})
	if strings.Count(nopl, `"extra"`) != 1 || !strings.Contains(nopl, `"extra": "... <5B>"`) {
		t.Errorf("show --nopl:\n%s", nopl)
	}
	res, err := Info(bytes.NewReader(img))
	if err != nil || res.Count != 2 {
		t.Errorf("info: %+v, %v; want 2 entries", res, err)
	}
}

// TestShmCritEmptyExtra: crit 4.2 decodes the last (here only) segment kept in the
// pagemaps with "extra": "" (it reads its size in bytes at the end of the file and
// gets none). encode takes crit's JSON, writing no payload, as for no "extra".
func TestShmCritEmptyExtra(t *testing.T) {
	img := writeTestImage(t, "IPCNS_SHM", &ipc_shm.IpcShmEntry{
		Desc: &ipc_desc.IpcDescEntry{Key: proto.Uint32(1), Uid: proto.Uint32(0), Gid: proto.Uint32(0),
			Cuid: proto.Uint32(0), Cgid: proto.Uint32(0), Mode: proto.Uint32(0o600), Id: proto.Uint32(1)},
		Size: proto.Uint64(8192), InPagemaps: proto.Bool(true)})
	crit := `{"magic": "IPCNS_SHM", "entries": [{"desc": {"key": 1, "uid": 0, "gid": 0, "cuid": 0, "cgid": 0, ` +
		`"mode": 384, "id": 1}, "size": 8192, "in_pagemaps": true, "extra": ""}]}`
	if back := mustEncodeJSON(t, crit); !bytes.Equal(back, img) {
		t.Errorf("crit's JSON encodes to\n%x\nwant\n%x", back, img)
	}
	pretty := strings.ReplaceAll(crit, `"mode": 384`, `"mode": "0x180"`)
	if back := mustEncodeJSON(t, pretty); !bytes.Equal(back, img) {
		t.Errorf("crit's pretty JSON encodes to\n%x\nwant\n%x", back, img)
	}
}

// Plain decode prints every integer as a number, device numbers included (as crit
// does); --pretty prints "MAJ:MIN". encode takes either and gives back the same value.
func TestDevPlainAndPretty(t *testing.T) {
	dev := uint32(254<<20 | 3)
	rdev := uint32(0x1234_5678) // old (glibc) packing: major 0x456, minor 0x12378
	img := writeTestImage(t, "GHOST_FILE",
		&ghost_file.GhostFileEntry{Uid: proto.Uint32(0), Gid: proto.Uint32(0), Mode: proto.Uint32(0o100600),
			Dev: proto.Uint32(dev), Rdev: proto.Uint32(rdev)},
		[]byte("x"))
	plain := mustDecodeJSON(t, img, JSONOptions{})
	if !strings.Contains(plain, `"dev": 266338307`) || !strings.Contains(plain, `"rdev": 305419896`) {
		t.Errorf("plain: %s", plain)
	}
	pretty := mustDecodeJSON(t, img, JSONOptions{Pretty: true})
	if !strings.Contains(pretty, `"dev": "254:3"`) || !strings.Contains(pretty, `"rdev": "1110:74616"`) {
		t.Errorf("pretty: %s", pretty)
	}
	for _, js := range []string{plain, pretty} {
		if back := mustEncodeJSON(t, js); !bytes.Equal(back, img) {
			t.Errorf("encode of %s differs", js)
		}
	}
}

func TestPrettyOptions(t *testing.T) {
	m := &vma.VmaEntry{
		Start: proto.Uint64(0x7f0000000000), End: proto.Uint64(0x7f0000001000), Pgoff: proto.Uint64(0),
		Shmid: proto.Uint64(0), Prot: proto.Uint32(5), Flags: proto.Uint32(0x22 | 0x4000),
		Status: proto.Uint32(1 | 1<<9), Fd: proto.Int64(-1),
	}
	got, err := MarshalMessageJSON(m, JSONOptions{Pretty: true})
	if err != nil {
		t.Fatal(err)
	}
	want := `{
    "start": "0x7f0000000000",
    "end": "0x7f0000001000",
    "pgoff": 0,
    "shmid": 0,
    "prot": "PROT_READ | PROT_EXEC",
    "flags": "MAP_PRIVATE | MAP_ANON | 0x4000",
    "status": "VMA_AREA_REGULAR | VMA_ANON_PRIVATE",
    "fd": -1
}`
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	back := new(vma.VmaEntry)
	if err := UnmarshalMessageJSON(got, back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, m) {
		t.Errorf("round trip: %v", back)
	}
}

func TestIPAddresses(t *testing.T) {
	ip6 := []uint32{0, 0, 0, 0x01000000} // ::1
	m := &sk_inet.InetSkEntry{SrcAddr: []uint32{0x0100007f}, DstAddr: ip6}
	got, err := MarshalMessageJSON(m, JSONOptions{Pretty: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), `"src_addr": [
        "127.0.0.1"
    ]`) || !strings.Contains(string(got), `"::1"`) {
		t.Errorf("got %s", got)
	}
	// Python 3.11's IPv6Address.compressed, which crit uses, has no dotted form.
	mapped := [16]byte{10: 0xff, 11: 0xff, 12: 1, 13: 2, 14: 3, 15: 4}
	for a, want := range map[[16]byte]string{
		mapped:                    "::ffff:102:304",
		{0: 0x20, 1: 0x01, 15: 1}: "2001::1",
		{1: 1, 7: 2, 15: 3}:       "1:0:0:2::3",
		{}:                        "::",
	} {
		if got := ipv6String(a); got != want {
			t.Errorf("ipv6String(%x) = %s, want %s", a, got, want)
		}
	}
}

func TestUnixNameQuotedPrintable(t *testing.T) {
	for name, want := range map[string]string{
		"":                      "",
		"\x00/tmp/sock":         "=00/tmp/sock",
		"a=b ":                  "a=3Db=20",
		"line \nnext":           "line=20\nnext",
		".":                     "=2E",
		strings.Repeat("x", 80): strings.Repeat("x", 75) + "=\n" + "xxxxx",
	} {
		if got := quopriEncode([]byte(name)); got != want {
			t.Errorf("quopriEncode(%q) = %q, want %q", name, got, want)
		}
		if back := quopriDecode(want); string(back) != name {
			t.Errorf("quopriDecode(%q) = %q", want, back)
		}
	}
	// Mixed line ends would not survive crit's text mode; they are quoted instead.
	for _, name := range []string{"a\r\nb\nc", "a\nb\r\n", "\r\n\r\n"} {
		if back := quopriDecode(quopriEncode([]byte(name))); string(back) != name {
			t.Errorf("%q does not round trip: %q", name, back)
		}
	}
	m := &sk_unix.UnixSkEntry{Name: []byte("\x00abstract")}
	got, _ := MarshalMessageJSON(m, JSONOptions{})
	if string(got) != `{"name": "=00abstract"}` {
		t.Errorf("got %s", got)
	}
}

func TestStringEscapes(t *testing.T) {
	m := &fh.IrmapCacheEntry{Dev: proto.Uint32(1), Inode: proto.Uint64(2), Path: proto.String("é\"\\\n\x01\x7f😀\xff")}
	got, err := MarshalMessageJSON(m, JSONOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"dev": 1, "inode": 2, "path": "\u00e9\"\\\n\u0001\u007f\ud83d\ude00\udcff"}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	back := new(fh.IrmapCacheEntry)
	if err := UnmarshalMessageJSON(got, back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, m) {
		t.Errorf("round trip: %q", back.GetPath())
	}
}

func TestBase64Lines(t *testing.T) {
	for n, want := range map[int]string{0: "", 1: "AA==\n", 57: strings.Repeat("A", 76) + "\n", 58: strings.Repeat("A", 76) + "\nAA==\n"} {
		if got := encodeBytes(make([]byte, n)); got != want {
			t.Errorf("encodeBytes(%d zeros) = %q, want %q", n, got, want)
		}
		back, err := decodeBytes(want)
		if err != nil || len(back) != n {
			t.Errorf("decodeBytes(%q) = %d bytes, %v", want, len(back), err)
		}
	}
	for _, bad := range []string{"A", "AAA", "AA=A"} {
		if _, err := decodeBytes(bad); err == nil {
			t.Errorf("decodeBytes(%q) succeeded", bad)
		}
	}
}

func TestNoplSummary(t *testing.T) {
	for n, want := range map[int64]string{0: "... <0B>", 21: "... <21B>", 1024: "... <1KB>", 1536: "... <1.5KB>", 40960: "... <40KB>", 1 << 30: "... <1GB>", 1048575: "... <1024.0KB>"} {
		if got := noplSummary(n); string(got) != want {
			t.Errorf("noplSummary(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	sk, err := os.ReadFile("../fixtures/criu-4.2/misc.crit/sk-queues.img.nopl.json")
	if err != nil {
		t.Fatal(err)
	}
	for name, js := range map[string]string{
		"nopl output":          string(sk),
		"unknown magic":        `{"magic": "NOPE", "entries": []}`,
		"no magic":             `{"entries": []}`,
		"no entries":           `{"magic": "PSTREE"}`,
		"unknown field":        `{"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1, "bogus": 1}]}`,
		"missing required":     `{"magic": "PSTREE", "entries": [{"pid": 1}]}`,
		"out of range":         `{"magic": "PSTREE", "entries": [{"pid": 4294967296, "ppid": 0, "pgid": 1, "sid": 1}]}`,
		"bad type":             `{"magic": "PSTREE", "entries": [{"pid": "one", "ppid": 0, "pgid": 1, "sid": 1}]}`,
		"float":                `{"magic": "PSTREE", "entries": [{"pid": 1.5, "ppid": 0, "pgid": 1, "sid": 1}]}`,
		"short payload":        `{"magic": "PIPES_DATA", "entries": [{"pipe_id": 1, "bytes": 4, "extra": "AA==\n"}]}`,
		"missing payload":      `{"magic": "PIPES_DATA", "entries": [{"pipe_id": 1, "bytes": 4}]}`,
		"extra no payload":     `{"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1, "extra": ""}]}`,
		"trailing data":        `{"magic": "PSTREE", "entries": []} x`,
		"truncated":            `{"magic": "PSTREE", "entries": [`,
		"not json":             "\x54\x56\x43\x19",
		"bad flag":             `{"magic": "VMAS", "entries": [{"start": 0, "end": 0, "pgoff": 0, "shmid": 0, "prot": "PROT_NOPE", "flags": 0, "status": 0}]}`,
		"bad address":          `{"magic": "FILES", "entries": [{"id": 1, "type": "INETSK", "isk": {"src_addr": ["1.2.3"]}}]}`,
		"sem count":            `{"magic": "IPCNS_SEM", "entries": [{"desc": {"key": 1, "uid": 0, "gid": 0, "cuid": 0, "cgid": 0, "mode": 0, "id": 1}, "nsems": 2, "extra": [1]}]}`,
		"raw magic":            `{"magic": "PAGES", "entries": []}`,
		"unknown key":          `{"magic": "PSTREE", "entries": [], "comment": "crit drops it"}`,
		"unknown key first":    `{"Magic": "PSTREE", "magic": "PSTREE", "entries": []}`,
		"entries twice":        `{"magic": "PSTREE", "entries": [], "entries": [{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1}]}`,
		"entries twice early":  `{"entries": [], "entries": [], "magic": "PSTREE"}`,
		"magic twice":          `{"magic": "PSTREE", "magic": "PSTREE", "entries": []}`,
		"shm data in pagemaps": `{"magic": "IPCNS_SHM", "entries": [{"desc": {"key": 1, "uid": 0, "gid": 0, "cuid": 0, "cgid": 0, "mode": 384, "id": 1}, "size": 4, "in_pagemaps": true, "extra": "AAAAAA==\n"}]}`,
	} {
		var out bytes.Buffer
		err := EncodeJSON(strings.NewReader(js), &out)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", name, err)
		}
	}
}

func TestEncodeEntriesBeforeMagic(t *testing.T) {
	js := `{"entries": [{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1}], "magic": "PSTREE"}`
	img := mustEncodeJSON(t, js)
	if got := mustDecodeJSON(t, img, JSONOptions{}); got != `{"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1}]}` {
		t.Errorf("got %s", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	pages := make([]byte, 4096)
	if err := DecodeJSON(bytes.NewReader(pages), new(bytes.Buffer), JSONOptions{}); err == nil {
		t.Error("raw pages decoded")
	}
	// A truncated payload fails instead of printing short data.
	img := writeTestImage(t, "PIPES_DATA")
	img = append(img, 8, 0, 0, 0, 8, 1, 16, 10) // pipe_id 1, bytes 10, no data
	img = binary.LittleEndian.AppendUint32(img[:len(img)-8], 4)
	img = append(img, 8, 1, 16, 10, 'a')
	if err := DecodeJSON(bytes.NewReader(img), new(bytes.Buffer), JSONOptions{}); err == nil {
		t.Error("truncated payload decoded")
	}
}

func TestInfoJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := (InfoResult{Magic: "CORE", Count: 1}).WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if want := "{\n    \"magic\": \"CORE\",\n    \"count\": 1\n}"; buf.String() != want {
		t.Errorf("got %q", buf.String())
	}
}
