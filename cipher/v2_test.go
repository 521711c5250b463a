package cipher

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// TestUnwrappedKeyOnlyOpens checks that what Header.Unwrap returns cannot
// encrypt: no method of *OpenKey writes a file. An encrypting method added to
// it would let a reader write a file again under a file key that already sealed
// one (before v2, with the very same nonces).
func TestUnwrappedKeyOnlyOpens(t *testing.T) {
	var unwrap func(*Header, ...Identity) (*OpenKey, error) = (*Header).Unwrap
	_ = unwrap
	open := reflect.TypeFor[*OpenKey]()
	for _, m := range []string{"NewWriter", "NewWriterFor", "NewFile", "EncryptAt"} {
		if _, ok := open.MethodByName(m); ok {
			t.Errorf("*OpenKey has %s: an unwrapped key can encrypt", m)
		}
		if _, ok := reflect.TypeFor[*SetKey]().MethodByName(m); !ok {
			t.Errorf("*SetKey lacks %s", m)
		}
	}
	for i := range open.NumMethod() {
		if m := open.Method(i); m.Type.NumOut() > 0 && m.Type.Out(0) == reflect.TypeFor[*Writer]() {
			t.Errorf("*OpenKey.%s returns a *Writer", m.Name)
		}
	}
}

// TestFileNonces checks that every file of a set gets a nonce of its own, used
// once: a second writer for the same file, or one for a file the key did not
// make, is refused, and so is a header listing a file the key did not make.
func TestFileNonces(t *testing.T) {
	key, _ := NewSetKey(AES256GCM)
	a, _ := key.NewFile("pages-1.img")
	b, _ := key.NewFile("pages-1.img")
	if a.Nonce == b.Nonce || a.Nonce == (FileNonce{}) {
		t.Fatalf("nonces %x and %x", a.Nonce, b.Nonce)
	}
	var out bytes.Buffer
	if _, err := key.NewWriterFor(&out, a); err != nil {
		t.Fatal(err)
	}
	if _, err := key.NewWriterFor(&out, a); err == nil {
		t.Error("a second writer for the same file (the same key and nonce) was made")
	}
	renamed := b
	renamed.Name = "pages-2.img"
	if _, err := key.NewWriterFor(&out, renamed); err == nil {
		t.Error("a writer for a nonce drawn for another name was made")
	}
	made := FileInfo{Name: "x", Nonce: FileNonce{1}}
	if _, err := key.NewWriterFor(&out, made); err == nil {
		t.Error("a writer for a nonce the key did not draw was made")
	}
	stanzas, _ := key.Wrap(mustRecipient(t, "bob-p256"))
	if _, err := SealHeader(testFraming, key, stanzas, []FileInfo{a, made}); err == nil {
		t.Error("a header listing a file the key did not make was sealed")
	}
	if _, err := SealHeader(testFraming, key, stanzas, []FileInfo{a, b}); err == nil {
		t.Error("a header listing a name twice was sealed")
	}
}

// TestStanzaBinding checks that from v2 on a stanza opens only in its own set:
// the set id is in the RSA-OAEP label and the HPKE info. v1 stanzas, which bind
// no set, still open as v1.
func TestStanzaBinding(t *testing.T) {
	idA, idB := SetID{0xa}, SetID{0xb}
	fileKey := bytes.Repeat([]byte{9}, FileKeySize)
	for _, name := range []string{"alice-rsa2048", "bob-p256", "carol-p384"} {
		r, id := mustRecipient(t, name), mustIdentity(t, name+".key")
		for _, v := range []int{1, 2} {
			s, err := r.Wrap(fileKey, WrapContext{Version: v, SetID: idA})
			if err != nil {
				t.Fatal(err)
			}
			got, err := id.Unwrap([]*Stanza{s}, WrapContext{Version: v, SetID: idA})
			if err != nil || !bytes.Equal(got, fileKey) {
				t.Fatalf("%s v%d: %v", name, v, err)
			}
			_, err = id.Unwrap([]*Stanza{s}, WrapContext{Version: v, SetID: idB})
			if v >= 2 && !errors.Is(err, ErrWrongKey) {
				t.Errorf("%s v%d: a stanza moved to another set: %v, want ErrWrongKey", name, v, err)
			}
			if v == 1 && err != nil {
				t.Errorf("%s v1: %v (v1 binds no set)", name, err)
			}
			other := 3 - v
			if _, err := id.Unwrap([]*Stanza{s}, WrapContext{Version: other, SetID: idA}); !errors.Is(err, ErrWrongKey) {
				t.Errorf("%s: a v%d stanza opened as v%d: %v", name, v, other, err)
			}
		}
	}
}

// TestReseal checks rekey's way of writing a header: the same version, set id
// and manifest with new stanzas, under the key that opens it, and no other key.
func TestReseal(t *testing.T) {
	key, _ := NewSetKey(ChaCha20Poly1305)
	files := testManifest(t, key, map[string]int64{"a": 1, "pages-1.img": 3 * ChunkSize})
	stanzas, _ := key.Wrap(mustRecipient(t, "bob-p256"))
	hdr, err := SealHeader(testFraming, key, stanzas, files)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := ParseHeader(hdr, testFraming)
	open, err := h.Unwrap(mustIdentity(t, "bob-p256.key"))
	if err != nil {
		t.Fatal(err)
	}
	more, err := open.Wrap(mustRecipient(t, "alice-rsa2048"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := h.Reseal(open, append(h.Stanzas, more...))
	if err != nil {
		t.Fatal(err)
	}
	h2, err := ParseHeader(again, testFraming)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := h2.Unwrap(mustIdentity(t, "alice-rsa2048.key"))
	if err != nil {
		t.Fatal(err)
	}
	if k2.fileKey != key.fileKey || h2.SetID != h.SetID || h2.Version != HeaderVersion || !reflectEqualFiles(h2.Files, h.Files) {
		t.Fatal("resealed header differs in more than its stanzas")
	}
	other, _ := NewSetKey(ChaCha20Poly1305)
	if _, err := h.Reseal(&other.OpenKey, stanzas); !errors.Is(err, ErrHeaderAuth) {
		t.Errorf("resealed with another key: %v", err)
	}
}

func reflectEqualFiles(a, b []FileInfo) bool { return reflect.DeepEqual(a, b) }
