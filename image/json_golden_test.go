package image

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// jsonFixtureImages lists the protobuf images of the real CRIU 4.2 sets, with the
// directory of crit's goldens for each.
func jsonFixtureImages(t testing.TB) (images []string, goldens map[string]string) {
	t.Helper()
	sets, err := filepath.Glob("../fixtures/criu-4.2/*")
	if err != nil {
		t.Fatal(err)
	}
	goldens = map[string]string{}
	for _, set := range sets {
		if strings.HasSuffix(set, ".crit") {
			continue
		}
		if fi, err := os.Stat(set); err != nil || !fi.IsDir() {
			continue
		}
		files, err := os.ReadDir(set)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			k := KindByFileName(f.Name())
			if k == nil || k.Raw {
				continue
			}
			p := filepath.Join(set, f.Name())
			images = append(images, p)
			goldens[p] = filepath.Join(set+".crit", f.Name())
		}
	}
	if len(images) == 0 {
		t.Fatal("no fixture images found")
	}
	return images, goldens
}

// jsonCritStdout is what crit prints for a document: the JSON and a newline.
func jsonCritStdout(doc []byte) []byte { return append(doc, '\n') }

func jsonDecodeFile(t *testing.T, path string, opts JSONOptions) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	if err := DecodeJSON(f, &out, opts); err != nil {
		t.Fatalf("%s: decode: %v", path, err)
	}
	return out.Bytes()
}

// TestGoldenDecode compares decode, decode --pretty and show --nopl with crit 4.2's
// output for every fixture image, byte for byte.
func TestGoldenDecode(t *testing.T) {
	images, goldens := jsonFixtureImages(t)
	checked := 0
	for _, img := range images {
		for _, c := range []struct {
			suffix string
			opts   JSONOptions
		}{
			{".json", JSONOptions{}},
			{".pretty.json", JSONOptions{Pretty: true}},
			{".nopl.json", JSONOptions{Pretty: true, NoPayload: true}},
		} {
			want, err := os.ReadFile(goldens[img] + c.suffix)
			if os.IsNotExist(err) && c.suffix == ".nopl.json" {
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", img, err)
				continue
			}
			got := jsonCritStdout(jsonDecodeFile(t, img, c.opts))
			checked++
			if !bytes.Equal(got, want) {
				t.Errorf("%s%s differs from crit: %s", img, c.suffix, jsonFirstDiff(got, want))
			}
		}
	}
	t.Logf("%d goldens match", checked)
}

// TestGoldenEncode encodes crit's plain and pretty JSON of every fixture image and
// checks that the result is the original image, byte for byte.
func TestGoldenEncode(t *testing.T) {
	images, goldens := jsonFixtureImages(t)
	for _, img := range images {
		orig, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		for _, suffix := range []string{".json", ".pretty.json"} {
			in, err := os.ReadFile(goldens[img] + suffix)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := EncodeJSON(bytes.NewReader(in), &out); err != nil {
				t.Errorf("%s%s: encode: %v", img, suffix, err)
				continue
			}
			if !bytes.Equal(out.Bytes(), orig) {
				t.Errorf("%s%s: encoded image differs from the original: %s", img, suffix, jsonFirstDiff(out.Bytes(), orig))
			}
		}
	}
}

// jsonFirstDiff describes where two outputs part.
func jsonFirstDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	ctx := func(b []byte) string {
		lo, hi := max(0, i-40), min(len(b), i+40)
		return string(b[lo:hi])
	}
	return fmt.Sprintf("at byte %d", i) + ": got …" + ctx(got) + "… want …" + ctx(want) + "…"
}

// TestGoldenInfo compares info with crit 4.2's. crit miscounts images with payloads
// (it reads payload bytes as entry sizes) and fails on ghost files; for those the test
// checks the right count instead: the entries of crit's own decode output (without the
// pagemap head, as crit counts PAGEMAP).
func TestGoldenInfo(t *testing.T) {
	images, goldens := jsonFixtureImages(t)
	matched, corrected := 0, 0
	for _, img := range images {
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Info(f)
		f.Close()
		if err != nil {
			t.Errorf("%s: info: %v", img, err)
			continue
		}
		var got bytes.Buffer
		if err := res.WriteJSON(&got); err != nil {
			t.Fatal(err)
		}
		got.WriteByte('\n')

		want, err := jsonCritEntryCount(goldens[img] + ".json")
		if err != nil {
			t.Fatal(err)
		}
		if res.Count != want {
			t.Errorf("%s: count %d, crit's decode has %d entries", img, res.Count, want)
		}
		golden, err := os.ReadFile(goldens[img] + ".info")
		k := KindByFileName(img)
		switch {
		case k.HasPayload():
			// crit is wrong here: its info output is either an error or a wrong count.
			if err == nil && bytes.Equal(golden, got.Bytes()) {
				t.Errorf("%s: matches crit's payload-image count, which is wrong", img)
			}
			corrected++
		case err != nil:
			t.Errorf("%s: %v", img, err)
		case !bytes.Equal(got.Bytes(), golden):
			t.Errorf("%s: info differs from crit: %s", img, jsonFirstDiff(got.Bytes(), golden))
		default:
			matched++
		}
	}
	t.Logf("%d info goldens match, %d crit faults corrected", matched, corrected)
}

// jsonCritEntryCount counts the entries of crit's plain decode output, as info should.
func jsonCritEntryCount(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := parseJSON(data)
	if err != nil {
		return 0, err
	}
	top := v.(jsonObject)
	entries, _ := top.get("entries")
	magic, _ := top.get("magic")
	n := int64(len(entries.(jsonArray)))
	if magic == jsonString("PAGEMAP") {
		n--
	}
	return n, nil
}
