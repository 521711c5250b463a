package image

import (
	"bytes"
	"os"
	"testing"
)

// addJSONSeeds adds every fixture image (or, with suffix, crit's golden for it).
func addJSONSeeds(f *testing.F, suffix string) {
	images, goldens := jsonFixtureImages(f)
	for _, img := range images {
		path := img
		if suffix != "" {
			path = goldens[img] + suffix
		}
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
}

// FuzzJSONDecode feeds images to the JSON decoder. Whatever decodes must encode, and
// the image encoded must decode to the same JSON, plain and pretty alike.
func FuzzJSONDecode(f *testing.F) {
	addJSONSeeds(f, "")
	f.Fuzz(func(t *testing.T, img []byte) {
		var plain bytes.Buffer
		if err := DecodeJSON(bytes.NewReader(img), &plain, JSONOptions{}); err != nil {
			return
		}
		var pretty, nopl bytes.Buffer
		if err := DecodeJSON(bytes.NewReader(img), &pretty, JSONOptions{Pretty: true}); err != nil {
			t.Fatalf("plain decode works, pretty fails: %v", err)
		}
		if err := DecodeJSON(bytes.NewReader(img), &nopl, JSONOptions{Pretty: true, NoPayload: true}); err != nil {
			t.Fatalf("decode works, show --nopl fails: %v", err)
		}
		for _, js := range [][]byte{plain.Bytes(), pretty.Bytes()} {
			var back bytes.Buffer
			if err := EncodeJSON(bytes.NewReader(js), &back); err != nil {
				t.Fatalf("decoded JSON does not encode: %v\n%s", err, js)
			}
			var again bytes.Buffer
			if err := DecodeJSON(bytes.NewReader(back.Bytes()), &again, JSONOptions{}); err != nil {
				t.Fatalf("encoded image does not decode: %v", err)
			}
			if !bytes.Equal(again.Bytes(), plain.Bytes()) {
				t.Fatalf("JSON changed in a round trip:\n%s\n%s", plain.Bytes(), again.Bytes())
			}
		}
	})
}

// FuzzJSONEncode feeds JSON to the encoder. It must fail cleanly or write an image
// that decodes, and whose JSON encodes to the same image again.
func FuzzJSONEncode(f *testing.F) {
	addJSONSeeds(f, ".json")
	addJSONSeeds(f, ".pretty.json")
	f.Fuzz(func(t *testing.T, js []byte) {
		var img bytes.Buffer
		if err := EncodeJSON(bytes.NewReader(js), &img); err != nil {
			return
		}
		var plain bytes.Buffer
		if err := DecodeJSON(bytes.NewReader(img.Bytes()), &plain, JSONOptions{}); err != nil {
			t.Fatalf("encoded image does not decode: %v", err)
		}
		var back bytes.Buffer
		if err := EncodeJSON(bytes.NewReader(plain.Bytes()), &back); err != nil {
			t.Fatalf("decoded JSON does not encode: %v", err)
		}
		if !bytes.Equal(back.Bytes(), img.Bytes()) {
			t.Fatalf("image changed in a round trip")
		}
	})
}
