package image

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSmokeRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("../fixtures/criu-4.2/*/*")
	for _, f := range files {
		if strings.Contains(f, ".crit/") {
			continue
		}
		k := KindByFileName(f)
		if k == nil {
			t.Errorf("%s: unknown kind", f)
			continue
		}
		if k.Raw {
			continue
		}
		data, _ := os.ReadFile(f)
		img, err := ReadImage(bytes.NewReader(data))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		var out bytes.Buffer
		if _, err := img.WriteTo(&out); err != nil {
			t.Errorf("%s: write: %v", f, err)
			continue
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Errorf("%s: round trip differs (%d vs %d bytes)", f, out.Len(), len(data))
		}
	}
}
