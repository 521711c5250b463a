package dump

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/imgtool/imgtool/image"
)

func TestDebugShow(t *testing.T) {
	prog := os.Getenv("DBG_PROG")
	if prog == "" {
		t.Skip()
	}
	tg := launch(t, prog)
	s := dumpTarget(t, tg.pid, true)
	names, _ := filepath.Glob(filepath.Join(s.dir, "*"))
	for _, n := range names {
		k := image.KindByFileName(n)
		st, _ := os.Stat(n)
		t.Logf("== %s (%d bytes)", filepath.Base(n), st.Size())
		if k == nil || k.Raw {
			continue
		}
		f, _ := os.Open(n)
		out, _ := os.Create("/tmp/dbg-" + filepath.Base(n) + ".json")
		if err := image.DecodeJSON(f, out, image.JSONOptions{Pretty: true}); err != nil {
			t.Error(err)
		}
		f.Close()
		out.Close()
	}
	t.Log(tg.readLog(t))
}
