package image

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

func TestScratchPy(t *testing.T) {
	var ref struct {
		QP [][]any `json:"qp"`
		IP [][]string `json:"ip"`
	}
	b, _ := os.ReadFile("/tmp/pyref.json")
	json.Unmarshal(b, &ref)
	bad := 0
	for _, c := range ref.QP {
		in, _ := hex.DecodeString(c[0].(string))
		want, _ := hex.DecodeString(c[1].(string))
		lossless := c[2].(bool)
		got := qpEncode(in, true)
		if string(got) != string(want) {
			bad++
			if bad < 5 { t.Errorf("%q: got %q want %q", in, got, want) }
		}
		if lossless && quopriEncode(in) != string(want) { t.Errorf("lossless mismatch %q", in) }
		if string(quopriDecode(quopriEncode(in))) != string(in) { t.Errorf("not lossless %q", in) }
	}
	for _, c := range ref.IP {
		a, _ := hex.DecodeString(c[0])
		if got := ipv6String([16]byte(a)); got != c[1] { t.Errorf("ip %s: %s want %s", c[0], got, c[1]) }
	}
	t.Logf("%d qp, %d ip", len(ref.QP), len(ref.IP))
}
