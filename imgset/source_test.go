package imgset

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/imgtool/imgtool/cipher"
)

type testSource struct {
	names []string
	data  map[string][]byte
}

func (s testSource) Names() []string { return s.names }

func (s testSource) Open(name string) (io.ReaderAt, int64, error) {
	b, ok := s.data[name]
	if !ok {
		return nil, 0, os.ErrNotExist
	}
	return bytes.NewReader(b), int64(len(b)), nil
}

func TestOpenSource(t *testing.T) {
	src := testSource{names: []string{"a.img", "b.img"}, data: map[string][]byte{"a.img": []byte("hello"), "b.img": {}}}
	s, err := OpenSource("mem", src, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Dir() != "mem" || s.Encrypted() || !s.Has("a.img") || s.Has("c.img") {
		t.Errorf("set %+v", s)
	}
	if n, err := s.Size("a.img"); n != 5 || err != nil {
		t.Errorf("Size: %d %v", n, err)
	}
	if _, err := s.Size("c.img"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Size of a missing file: %v", err)
	}
	f, err := s.Open("a.img")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	if string(got) != "hello" || err != nil || f.Close() != nil {
		t.Errorf("read %q %v", got, err)
	}
	if _, err := s.Open("../x"); err == nil {
		t.Error("bad name opened")
	}
	if _, err := s.Open("c.img"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a missing file: %v", err)
	}
	for name, bad := range map[string]testSource{
		"unsorted":  {names: []string{"b", "a"}},
		"bad name":  {names: []string{"x/y"}},
		"header":    {names: []string{HeaderName}},
		"encrypted": {names: []string{"a.img"}, data: map[string][]byte{"a.img": []byte(cipher.FileMagic + "rest")}},
		"missing":   {names: []string{"a.img"}, data: map[string][]byte{}},
	} {
		if _, err := OpenSource("mem", bad, OpenOptions{}); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
	if _, err := OpenSource("mem", src, OpenOptions{RequireEncrypted: true}); !errors.Is(err, ErrNotEncrypted) {
		t.Errorf("RequireEncrypted: %v", err)
	}
}
