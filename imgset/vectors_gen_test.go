package imgset

import (
	"bytes"
	"crypto/aes"
	stdcipher "crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/imgtool/imgtool/cipher"
)

// headerLayout locates the fields of a header, for vectors that damage one.
type headerLayout struct {
	stanzas    []stanzaLayout
	fileCount  int
	files      map[string][2]int // name -> offset of the name length, of the size
	mac        int
	stanzaEnd  int
	stanzaBase int
}

type stanzaLayout struct{ start, typ, fp, bodyLen, body, end int }

func layoutOf(t *testing.T, b []byte) headerLayout {
	l := headerLayout{stanzaBase: 34, files: map[string][2]int{}}
	off := 34
	for range binary.LittleEndian.Uint16(b[32:]) {
		s := stanzaLayout{start: off, typ: off + 1}
		s.fp = s.typ + int(b[off])
		s.bodyLen = s.fp + cipher.FingerprintSize
		s.body = s.bodyLen + 2
		s.end = s.body + int(binary.LittleEndian.Uint16(b[s.bodyLen:]))
		l.stanzas = append(l.stanzas, s)
		off = s.end
	}
	l.stanzaEnd, l.fileCount = off, off
	n := binary.LittleEndian.Uint32(b[off:])
	off += 4
	entry := 8 // the size; v2 adds the nonce after it
	if binary.LittleEndian.Uint16(b[8:]) >= 2 {
		entry += cipher.FileNonceSize
	}
	for range n {
		nl := int(b[off])
		l.files[string(b[off+1:off+1+nl])] = [2]int{off, off + 1 + nl}
		off += 1 + nl + entry
	}
	l.mac = off
	if off+cipher.MACSize != len(b) {
		t.Fatalf("header layout: MAC at %d, header is %d bytes", off, len(b))
	}
	return l
}

// TestGenerateVectors rewrites testdata/vectors-v2: the base sets and every case.
// The v1 vectors (testdata/vectors) are frozen: nothing writes v1 any more.
func TestGenerateVectors(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate the vectors")
	}
	cryptotest.SetGlobalRandom(t, 20260127)
	vectorDir := vectorDirV2
	os.RemoveAll(vectorDir)
	sets := filepath.Join(vectorDir, "sets")
	makeBase := func(name, fixture string, alg cipher.Algorithm, recipients ...string) {
		var rs []cipher.Recipient
		for _, r := range recipients {
			rs = append(rs, recipient(t, r))
		}
		if err := os.MkdirAll(sets, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := Encrypt(filepath.Join(fixtures, fixture), EncryptOptions{Recipients: rs, Algorithm: alg, Output: filepath.Join(sets, name)}); err != nil {
			t.Fatal(err)
		}
	}
	makeBase("files-aes", "files", cipher.AES256GCM, "alice-rsa2048", "bob-p256")
	makeBase("files-aes-again", "files", cipher.AES256GCM, "alice-rsa2048", "bob-p256")
	makeBase("tree-aes", "tree", cipher.AES256GCM, "bob-p256")
	makeBase("misc-chacha", "misc", cipher.ChaCha20Poly1305, "carol-p384")

	hdrBytes, err := os.ReadFile(filepath.Join(sets, "files-aes", HeaderName))
	if err != nil {
		t.Fatal(err)
	}
	hl := layoutOf(t, hdrBytes)
	hdr, _ := cipher.ParseHeader(hdrBytes, HeaderFraming)
	var allFiles []string
	for _, f := range hdr.Files {
		allFiles = append(allFiles, f.Name)
	}
	const H = HeaderName
	alice, bob := hl.stanzas[0], hl.stanzas[1]
	itoa := strconv.Itoa
	var vecs []*vector
	add := func(name, comment, base string, ids []string, ops [][]string, open string, expect ...[2]string) {
		vecs = append(vecs, &vector{name: name, dir: vectorDir, comment: []string{comment}, base: base, identities: ids, ops: ops, open: open, expect: expect})
	}
	op := func(f ...string) []string { return f }
	ex := func(kind, file string) [2]string { return [2]string{kind, file} }
	each := func(kind string) (out [][2]string) {
		for _, f := range allFiles {
			out = append(out, ex(kind, f))
		}
		return out
	}
	bobID, aliceID := []string{"bob-p256"}, []string{"alice-rsa2048"}

	// Good sets: every recipient opens them, and the plaintext is the fixture's.
	add("good_rsa2048_recipient", "an RSA-OAEP recipient opens the set", "files-aes", aliceID, nil, "ok")
	add("good_p256_recipient", "an HPKE P-256 recipient opens the set", "files-aes", bobID, nil, "ok")
	add("good_p384_chacha20poly1305", "an HPKE P-384 recipient opens a ChaCha20-Poly1305 set", "misc-chacha", []string{"carol-p384"}, nil, "ok")
	add("good_second_key_is_recipient", "of several keys given, the one that is a recipient is used", "files-aes", []string{"mallory-p256", "bob-p256"}, nil, "ok")
	add("good_tree_set", "a set of three processes", "tree-aes", bobID, nil, "ok")
	add("good_without_key", "without a key, verify finds nothing wrong but open needs a key", "files-aes", nil, nil, "key-required")

	// Keys.
	add("wrong_key_not_a_recipient", "a good key that is no recipient of the set", "files-aes", []string{"mallory-p256"}, nil, "no-recipient", ex("no-recipient", H))

	// Every field of the header.
	hflip := func(name, comment string, off int, mask byte, ids []string, open string, expect ...[2]string) {
		add("header_"+name, comment, "files-aes", ids, [][]string{op("flip", H, itoa(off), fmt.Sprintf("0x%02x", mask))}, open, expect...)
	}
	hflip("flip_img_common_magic", "a bit of the IMG_COMMON framing magic", 0, 0x01, bobID, "malformed", ex("malformed", H))
	hflip("flip_seal_magic", "a bit of the seal image magic", 4, 0x80, bobID, "malformed", ex("malformed", H))
	hflip("flip_version", "a bit of the version", 8, 0x02, bobID, "malformed", ex("malformed", H))
	hflip("flip_aead_unknown", "the AEAD id made unknown", 10, 0x04, bobID, "malformed", ex("malformed", H))
	hflip("aead_switched_to_chacha", "the AEAD id switched to the other valid AEAD: caught by the MAC", 10, 0x03, bobID, "header-auth", ex("header-auth", H))
	hflip("flip_chunk_size", "a bit of the chunk size", 13, 0x01, bobID, "malformed", ex("malformed", H))
	// A header that fails its MAC is the only problem reported: its manifest and set
	// id cannot be trusted to judge the files, which are intact.
	// From v2 on a stanza is bound to its set's id: with the id changed, the key's
	// stanza no longer opens. The intact files are not blamed.
	hflip("flip_set_id", "a bit of the set id: the key's stanza, bound to the set id, does not open; the intact files are not blamed", 20, 0x10, bobID, "wrong-key", ex("wrong-key", H))
	hflip("flip_stanza_count", "the stanza count made 3 (there are 2)", 32, 0x01, bobID, "malformed", ex("malformed", H))
	add("header_stanza_type_length_zero", "a stanza type length of 0", "files-aes", bobID, [][]string{op("write", H, itoa(alice.start), "00")}, "malformed", ex("malformed", H))
	hflip("flip_other_stanza_type", "a bit of another recipient's stanza type: caught by the MAC", alice.typ+2, 0x01, bobID, "header-auth", ex("header-auth", H))
	hflip("flip_own_stanza_type", "a bit of the key's own stanza type", bob.typ+2, 0x01, bobID, "wrong-key", ex("wrong-key", H))
	hflip("flip_own_fingerprint", "a bit of the key's own fingerprint: the key is no longer named", bob.fp+5, 0x20, bobID, "no-recipient", ex("no-recipient", H))
	hflip("flip_rsa_fingerprint", "a bit of the RSA recipient's fingerprint", alice.fp+31, 0x01, aliceID, "no-recipient", ex("no-recipient", H))
	add("header_stanza_body_length_zero", "a stanza body length of 0", "files-aes", bobID, [][]string{op("write", H, itoa(bob.bodyLen), "0000")}, "malformed", ex("malformed", H))
	hflip("flip_p256_stanza_body", "a bit of the HPKE body of the key's stanza", bob.body+70, 0x08, bobID, "wrong-key", ex("wrong-key", H))
	hflip("flip_rsa_stanza_body", "a bit of the RSA-OAEP body of the key's stanza", alice.body+100, 0x08, aliceID, "wrong-key", ex("wrong-key", H))
	hflip("flip_other_stanza_body", "a bit of another recipient's stanza body: caught by the MAC", alice.body+100, 0x08, bobID, "header-auth", ex("header-auth", H))
	add("header_file_count_zero", "the manifest's file count set to 0", "files-aes", bobID, [][]string{op("write", H, itoa(hl.fileCount), "00000000")}, "malformed", ex("malformed", H))
	hflip("flip_file_count", "the manifest's file count made odd (15 of 14)", hl.fileCount, 0x01, bobID, "malformed", ex("malformed", H))
	add("header_name_length_zero", "a manifest name length of 0", "files-aes", bobID, [][]string{op("write", H, itoa(hl.files["pstree.img"][0]), "00")}, "malformed", ex("malformed", H))
	tn := hl.files["timens-0.img"]
	hflip("flip_file_name", "a bit of a manifest name (timens-0.img becomes timens-0.imf)", tn[1]-1, 0x01, bobID, "header-auth", ex("header-auth", H))
	hflip("flip_file_size", "a bit of a manifest size (pages-1.img one byte longer)", hl.files["pages-1.img"][1], 0x01, bobID, "header-auth", ex("header-auth", H))
	hflip("flip_file_nonce", "a bit of a file's nonce in the manifest (pages-1.img's): caught by the MAC", hl.files["pages-1.img"][1]+8+3, 0x10, bobID, "header-auth", ex("header-auth", H))
	hflip("flip_mac_first_byte", "a bit of the MAC", hl.mac, 0x01, bobID, "header-auth", ex("header-auth", H))
	hflip("flip_mac_last_byte", "a bit of the MAC", len(hdrBytes)-1, 0x80, bobID, "header-auth", ex("header-auth", H))
	add("header_truncated", "the header's last byte cut", "files-aes", bobID, [][]string{op("truncate", H, itoa(len(hdrBytes)-1))}, "malformed", ex("malformed", H))
	add("header_extended", "a byte appended to the header", "files-aes", bobID, [][]string{op("append", H, "00")}, "malformed", ex("malformed", H))
	add("header_from_another_set", "the header of another set with the same recipients", "files-aes", bobID,
		[][]string{op("copy-from", "files-aes-again", H, H)}, "foreign-file", each("foreign-file")...)
	add("header_recipient_removed", "a recipient's stanza cut out and the count fixed", "files-aes", bobID,
		[][]string{op("cut", H, itoa(alice.start), itoa(alice.end-alice.start)), op("write", H, "32", "0100")}, "header-auth", ex("header-auth", H))
	add("header_recipients_reordered", "the two stanzas swapped", "files-aes", bobID,
		[][]string{op("cut", H, itoa(alice.start), itoa(alice.end-alice.start)),
			op("insert", H, itoa(alice.start+bob.end-bob.start), hex.EncodeToString(hdrBytes[alice.start:alice.end]))}, "header-auth", ex("header-auth", H))
	// The attacker's stanza, wrapping a key of his own for himself, bound to this
	// set's id (which he reads in the header) as a v2 stanza must be.
	evil, _ := cipher.NewSetKey(cipher.AES256GCM)
	evilStanza, err := recipient(t, "mallory-p256").Wrap(make([]byte, cipher.FileKeySize), cipher.WrapContext{Version: cipher.HeaderVersion, SetID: hdr.SetID})
	if err != nil {
		t.Fatal(err)
	}
	// And one made for another set: in this set it does not open.
	elsewhere, err := evil.Wrap(recipient(t, "mallory-p256"))
	if err != nil {
		t.Fatal(err)
	}
	evilHdr, _ := cipher.SealHeader(HeaderFraming, evil, []*cipher.Stanza{evilStanza}, nil)
	el := layoutOf(t, evilHdr)
	mallory := hex.EncodeToString(evilHdr[el.stanzas[0].start:el.stanzas[0].end])
	otherHdr, _ := cipher.SealHeader(HeaderFraming, evil, elsewhere, nil)
	ol := layoutOf(t, otherHdr)
	add("header_stanza_of_another_set", "a stanza made for another set (its set id) added for the attacker: it does not open in this one", "files-aes", []string{"mallory-p256"},
		[][]string{op("insert", H, itoa(hl.stanzaEnd), hex.EncodeToString(otherHdr[ol.stanzas[0].start:ol.stanzas[0].end])), op("write", H, "32", "0300")},
		"wrong-key", ex("wrong-key", H))
	for _, who := range []string{"mallory-p256", "bob-p256"} {
		add("header_recipient_added_by_attacker_"+who, "an attacker adds a stanza wrapping a key of his own for himself; opened by "+who, "files-aes", []string{who},
			[][]string{op("insert", H, itoa(hl.stanzaEnd), mallory), op("write", H, "32", "0300")}, "header-auth", ex("header-auth", H))
	}
	vecs = append(vecs,
		&vector{name: "header_deleted_require_encrypted", dir: vectorDir, comment: []string{"the header deleted, and encryption required: no downgrade"},
			base: "files-aes", identities: bobID, require: true, ops: [][]string{op("delete", H)}, open: "not-encrypted",
			expect: append([][2]string{ex("not-encrypted", H)}, each("header-missing")...)},
		&vector{name: "header_deleted", dir: vectorDir, comment: []string{"the header deleted: the files are still recognized as encrypted"},
			base: "files-aes", identities: bobID, ops: [][]string{op("delete", H)}, open: "header-missing",
			expect: append([][2]string{ex("not-encrypted", H)}, each("header-missing")...)})

	// Every part of every kind of file: a protobuf image, inventory.img (no head
	// magic), an image with a payload, a file CRIU names without .img, and pages.
	sizeOf := func(f string) int { fi, _ := hdr.File(f); return int(fi.Size) }
	for _, f := range []string{"core-15869.img", "inventory.img", "pipes-data.img", "stats-dump", "pages-1.img"} {
		firstTag := cipher.PrefixSize + min(sizeOf(f), cipher.ChunkSize)
		flip := func(part string, off int, kind string) {
			add("file_flip_"+part+"_"+f, "a bit of the "+part+" of "+f, "files-aes", bobID,
				[][]string{op("flip", f, itoa(off), "0x04")}, kind, ex(kind, f))
		}
		flip("magic", 1, "malformed")
		flip("set_id", 8+15, "foreign-file")
		flip("first_chunk_body", cipher.PrefixSize, "chunk-auth")
		flip("first_chunk_tag", firstTag, "chunk-auth")
		flip("first_chunk_tag_end", firstTag+cipher.TagSize-1, "chunk-auth")
	}
	pages := "pages-1.img"
	pagesCT := int(cipher.CiphertextSize(int64(sizeOf(pages))))
	chunkCT := cipher.ChunkSize + cipher.TagSize
	add("file_flip_last_chunk_body_pages-1.img", "a bit of the last chunk of pages-1.img", "files-aes", bobID,
		[][]string{op("flip", pages, itoa(cipher.PrefixSize+chunkCT+100), "0x01")}, "chunk-auth", ex("chunk-auth", pages))
	add("file_flip_last_chunk_tag_pages-1.img", "a bit of the last tag of pages-1.img", "files-aes", bobID,
		[][]string{op("flip", pages, itoa(pagesCT-1), "0x01")}, "chunk-auth", ex("chunk-auth", pages))
	for _, tr := range []struct {
		name string
		size int
	}{
		{"at_chunk_boundary", cipher.PrefixSize + chunkCT},
		{"inside_first_chunk", cipher.PrefixSize + 1000},
		{"inside_last_chunk", pagesCT - 100},
		{"by_one_byte", pagesCT - 1},
		{"by_a_tag", pagesCT - cipher.TagSize},
		{"to_the_prefix", cipher.PrefixSize},
		{"to_empty", 0},
	} {
		add("truncated_"+tr.name, "pages-1.img truncated "+tr.name, "files-aes", bobID,
			[][]string{op("truncate", pages, itoa(tr.size))}, "size-mismatch", ex("size-mismatch", pages))
	}
	add("extended_by_one_byte", "a byte appended to pages-1.img", "files-aes", bobID,
		[][]string{op("append", pages, "00")}, "size-mismatch", ex("size-mismatch", pages))
	add("extended_by_a_chunk", "the last chunk of pages-1.img appended again", "files-aes", bobID,
		[][]string{op("append-copy", pages, itoa(cipher.PrefixSize+chunkCT), itoa(pagesCT-cipher.PrefixSize-chunkCT))}, "size-mismatch", ex("size-mismatch", pages))

	// Chunks moved within a file (misc's pages-1.img: 16 full chunks).
	cc := func(i int) string { return itoa(cipher.PrefixSize + i*chunkCT) }
	carol := []string{"carol-p384"}
	for _, c := range []struct {
		name string
		op   []string
	}{
		{"chunks_swapped_first_two", op("swap-range", pages, cc(0), cc(1), itoa(chunkCT))},
		{"chunks_swapped_middle", op("swap-range", pages, cc(7), cc(8), itoa(chunkCT))},
		{"chunks_swapped_with_last", op("swap-range", pages, cc(14), cc(15), itoa(chunkCT))},
		{"chunk_duplicated", op("copy-range", pages, cc(3), cc(4), itoa(chunkCT))},
		{"chunk_duplicated_over_last", op("copy-range", pages, cc(0), cc(15), itoa(chunkCT))},
	} {
		add(c.name, "chunks of pages-1.img moved: "+c.name, "misc-chacha", carol, [][]string{c.op}, "chunk-auth", ex("chunk-auth", pages))
	}

	// Files moved within and between sets.
	add("file_renamed", "pages-3.img renamed to pages-9.img", "tree-aes", bobID,
		[][]string{op("rename", "pages-3.img", "pages-9.img")}, "missing-file", ex("missing-file", "pages-3.img"), ex("unexpected-file", "pages-9.img"))
	add("file_renamed_over_another", "pages-2.img deleted and pages-3.img renamed to it", "tree-aes", bobID,
		[][]string{op("delete", "pages-2.img"), op("rename", "pages-3.img", "pages-2.img")}, "missing-file",
		ex("chunk-auth", "pages-2.img"), ex("missing-file", "pages-3.img"))
	add("files_swapped_pages", "pages-2.img and pages-3.img (same size) swapped", "tree-aes", bobID,
		[][]string{op("swap", "pages-2.img", "pages-3.img")}, "chunk-auth", ex("chunk-auth", "pages-2.img"), ex("chunk-auth", "pages-3.img"))
	add("files_swapped_core", "core-16199.img and core-16200.img (same size) swapped", "tree-aes", bobID,
		[][]string{op("swap", "core-16199.img", "core-16200.img")}, "chunk-auth", ex("chunk-auth", "core-16199.img"), ex("chunk-auth", "core-16200.img"))
	add("file_deleted", "pstree.img deleted", "files-aes", bobID, [][]string{op("delete", "pstree.img")}, "missing-file", ex("missing-file", "pstree.img"))
	add("file_added_plaintext", "a plaintext file added", "files-aes", bobID, [][]string{op("add", "pages-2.img", "00112233")}, "unexpected-file", ex("unexpected-file", "pages-2.img"))
	add("file_added_from_another_set", "an encrypted file of another set added under a new name", "files-aes", bobID,
		[][]string{op("copy-from", "files-aes-again", pages, "pages-2.img")}, "unexpected-file", ex("unexpected-file", "pages-2.img"))
	for _, f := range []string{pages, "inventory.img"} {
		add("file_from_another_set_"+f, f+" replaced by the same file of another set", "files-aes", bobID,
			[][]string{op("copy-from", "files-aes-again", f, f)}, "foreign-file", ex("foreign-file", f))
		add("file_from_another_set_relabelled_"+f, f+" replaced by the same file of another set, its set id patched to this set's", "files-aes", bobID,
			[][]string{op("copy-from", "files-aes-again", f, f), op("write", f, "8", hex.EncodeToString(hdr.SetID[:]))}, "chunk-auth", ex("chunk-auth", f))
	}
	add("file_plaintext_restored", "an encrypted file replaced by its plaintext of the same size is not possible; the plaintext fixture file is caught", "files-aes", bobID,
		[][]string{op("add", "seccomp.img", hex.EncodeToString(mustRead(t, "../fixtures", "criu-4.2/files", "seccomp.img")))}, "size-mismatch", ex("size-mismatch", "seccomp.img"))

	vecs = append(vecs, signatureVectors(t, vectorDir, makeBase)...)

	for _, v := range vecs {
		slices.SortFunc(v.expect, func(a, b [2]string) int {
			return compareStrings(a[1]+a[0], b[1]+b[0])
		})
		if err := os.WriteFile(filepath.Join(vectorDir, v.name+".vec"), []byte(v.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %d vectors", len(vecs))
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func mustRead(t *testing.T, parts ...string) []byte {
	b, err := os.ReadFile(filepath.Join(parts...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signedAt is the creation time of the signed vectors: just after the signer
// certificates' NotBefore, so that they verify from then on.
var signedAt = time.Date(2026, 12, 2, 3, 44, 50, 0, time.UTC)

// signatureVectors makes the signed base sets and the vectors of part 5: a
// signed set, forged ones (made by a recipient: re-encrypted and unsigned, or
// signed by an untrusted key, or written under the signed set's own keys), a
// rolled-back one (an older signed set against the expected set id), and the
// signature block damaged every way.
func signatureVectors(t *testing.T, vectorDir string, makeBase func(name, fixture string, alg cipher.Algorithm, recipients ...string)) []*vector {
	sets := filepath.Join(vectorDir, "sets")
	sign := func(set, who string) {
		s, err := cipher.ReadSigner(keyFile(who+".key"), keyFile(who+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := SignAt(filepath.Join(sets, set), s, signedAt); err != nil {
			t.Fatal(err)
		}
	}
	// An older signed set, then the current one: same fixture, recipients and
	// signer, another set id.
	makeBase("files-aes-signed-older", "files", cipher.AES256GCM, "alice-rsa2048", "bob-p256")
	sign("files-aes-signed-older", "signer-p256")
	makeBase("files-aes-signed", "files", cipher.AES256GCM, "alice-rsa2048", "bob-p256")
	sign("files-aes-signed", "signer-p256")
	allFiles, _ := os.ReadDir(filepath.Join(fixtures, "files"))
	eachFile := func(kind string) (out [][2]string) {
		for _, f := range allFiles {
			out = append(out, [2]string{kind, f.Name()})
		}
		return out
	}
	plain := filepath.Join(sets, "files-plain-signed")
	if err := os.CopyFS(plain, os.DirFS(filepath.Join(fixtures, "files"))); err != nil {
		t.Fatal(err)
	}
	sign("files-plain-signed", "ed25519")

	// Bob, a recipient, decrypts the signed set, puts his own bytes in the
	// process's pages, and encrypts the result for the same recipients: without
	// a signature, or signed with his own key (mallory's certificate here).
	forgedPlain := filepath.Join(t.TempDir(), "forged")
	if err := Decrypt(filepath.Join(sets, "files-aes-signed"), DecryptOptions{Identities: []cipher.Identity{identity(t, "bob-p256")}, Output: forgedPlain}); err != nil {
		t.Fatal(err)
	}
	pages := filepath.Join(forgedPlain, "pages-1.img")
	if err := os.WriteFile(pages, forge(mustRead(t, pages)), 0o600); err != nil {
		t.Fatal(err)
	}
	rs := []cipher.Recipient{recipient(t, "alice-rsa2048"), recipient(t, "bob-p256")}
	if err := Encrypt(forgedPlain, EncryptOptions{Recipients: rs, Output: filepath.Join(sets, "files-aes-forged-unsigned")}); err != nil {
		t.Fatal(err)
	}
	if err := Encrypt(forgedPlain, EncryptOptions{Recipients: rs, Output: filepath.Join(sets, "files-aes-forged-signed-mallory")}); err != nil {
		t.Fatal(err)
	}
	sign("files-aes-forged-signed-mallory", "mallory-p256")
	// And his pages written under the signed set's own file key and pages-1.img's
	// nonce: a file that authenticates in the signed set.
	forgery := filepath.Join(sets, "files-aes-signed-forgery")
	if err := os.MkdirAll(forgery, 0o755); err != nil {
		t.Fatal(err)
	}
	forgeUnderSetKey(t, filepath.Join(sets, "files-aes-signed"), "bob-p256", "pages-1.img", filepath.Join(forgery, "pages-1.img"))

	signedHdr, err := ReadHeader(filepath.Join(sets, "files-aes-signed"))
	if err != nil {
		t.Fatal(err)
	}
	signedID := signedHdr.SetID.String()
	sigBytes := mustRead(t, sets, "files-aes-signed", SignName)
	sig, err := cipher.ParseSignature(sigBytes, SignFraming)
	if err != nil {
		t.Fatal(err)
	}
	firstHash := bytes.Index(sigBytes, sig.Files[0].Chunks)
	const S = SignName
	itoa := strconv.Itoa
	op := func(f ...string) []string { return f }
	ex := func(kind, file string) [2]string { return [2]string{kind, file} }
	bob, alice, signer := []string{"bob-p256"}, []string{"alice-rsa2048"}, []string{"signer-p256"}
	var vecs []*vector
	add := func(name, comment, base string, ids, trust []string, expectID string, ops [][]string, signature, open string, expect ...[2]string) {
		vecs = append(vecs, &vector{name: name, dir: vectorDir, comment: []string{comment}, base: base, identities: ids, trust: trust,
			expectSetID: expectID, ops: ops, signature: signature, open: open, expect: expect})
	}
	addPlain := func(name, comment, base string, ids []string, ops [][]string, open string, expect ...[2]string) {
		vecs = append(vecs, &vector{name: name, dir: vectorDir, comment: []string{comment}, base: base, identities: ids, ops: ops, open: open, expect: expect})
	}

	// A signed set.
	add("signed_by_trusted_signer", "a set signed by the trusted signer, opened by a P-256 recipient", "files-aes-signed", bob, signer, "", nil, "ok", "ok")
	add("signed_by_trusted_signer_rsa_recipient", "a set signed by the trusted signer, opened by an RSA recipient", "files-aes-signed", alice, signer, "", nil, "ok", "ok")
	add("signed_checked_without_key", "without a key, every stored chunk is still checked against the signature", "files-aes-signed", nil, signer, "", nil, "ok", "key-required")
	add("signed_expected_set_id", "the set expected (--expect-set-id) and signed", "files-aes-signed", bob, signer, signedID, nil, "ok", "ok")
	add("signed_by_signer_not_trusted", "the trust anchor is another key: the signer is not trusted", "files-aes-signed", bob, []string{"mallory-p256"}, "", nil, "untrusted-signer", "ok")

	// Forged by a recipient.
	add("forged_by_recipient_unsigned", "a recipient re-encrypted the set with his own pages, for the same recipients: no signature", "files-aes-forged-unsigned", bob, signer, "", nil, "no-signature", "ok")
	addPlain("forged_by_recipient_unsigned_opens_without_trust", "the same forgery is a valid encrypted set: only a signature check tells", "files-aes-forged-unsigned", bob, nil, "ok")
	add("forged_by_recipient_signed_by_untrusted_key", "a recipient re-encrypted the set with his own pages and signed it with his own key", "files-aes-forged-signed-mallory", bob, signer, "", nil, "untrusted-signer", "ok")
	add("forged_by_recipient_under_the_set_key", "a recipient wrote his own pages under the signed set's file key and nonce, keeping header and signature: every chunk authenticates, none is the signed one",
		"files-aes-signed", bob, signer, "", [][]string{op("copy-from", "files-aes-signed-forgery", "pages-1.img", "pages-1.img")}, "ok", "signed-chunk", ex("signed-chunk", "pages-1.img"))
	add("forged_by_recipient_under_the_set_key_without_key", "the same forgery, checked without a key: the chunk hashes alone catch it",
		"files-aes-signed", nil, signer, "", [][]string{op("copy-from", "files-aes-signed-forgery", "pages-1.img", "pages-1.img")}, "ok", "key-required", ex("signed-chunk", "pages-1.img"))
	addPlain("forged_by_recipient_under_the_set_key_authenticates_without_trust", "the same forgery without a signature check: it authenticates, and other pages are read",
		"files-aes-signed", bob, [][]string{op("copy-from", "files-aes-signed-forgery", "pages-1.img", "pages-1.img")}, "forged-content")

	// Rolled back.
	add("rolled_back_to_older_signed_set", "an older set of the same signer put back whole, against the expected set id", "files-aes-signed-older", bob, signer, signedID, nil, "ok", "other-set-id")
	add("rolled_back_to_older_signed_set_without_expected_id", "the older set, without --expect-set-id: validly signed, so accepted", "files-aes-signed-older", bob, signer, "", nil, "ok", "ok")
	add("file_from_older_signed_set", "inventory.img replaced by the same file of the older signed set: its prefix has the other set id",
		"files-aes-signed", bob, signer, "", [][]string{op("copy-from", "files-aes-signed-older", "inventory.img", "inventory.img")}, "signed-file", "foreign-file", ex("foreign-file", "inventory.img"))
	add("file_from_older_signed_set_relabelled", "pages-1.img replaced by the older signed set's, its prefix patched to this set id: not the signed chunks",
		"files-aes-signed", bob, signer, "", [][]string{op("copy-from", "files-aes-signed-older", "pages-1.img", "pages-1.img"), op("write", "pages-1.img", "8", signedID)},
		"ok", "signed-chunk", ex("signed-chunk", "pages-1.img"))
	add("header_and_signature_of_older_set", "the older set's header and signature put in place of this set's: its files are not the signed ones",
		"files-aes-signed", bob, signer, "", [][]string{op("copy-from", "files-aes-signed-older", HeaderName, HeaderName), op("copy-from", "files-aes-signed-older", S, S)},
		"signed-file", "foreign-file", eachFile("foreign-file")...)
	add("signature_of_older_set", "the older set's signature put in place of this set's: it signed another header",
		"files-aes-signed", bob, signer, "", [][]string{op("copy-from", "files-aes-signed-older", S, S)}, "signed-file", "ok")

	// The signed set changed after signing.
	hdrLen := len(mustRead(t, sets, "files-aes-signed", HeaderName))
	add("signed_header_changed", "a bit of the header's MAC: not the header signed", "files-aes-signed", bob, signer, "",
		[][]string{op("flip", HeaderName, itoa(hdrLen-1), "0x01")}, "signed-file", "header-auth", ex("header-auth", HeaderName))
	add("signed_header_deleted", "the header of a signed encrypted set deleted", "files-aes-signed", bob, signer, "", [][]string{op("delete", HeaderName)},
		"signed-file", "header-missing", append([][2]string{ex("not-encrypted", HeaderName)}, eachFile("header-missing")...)...)
	add("signed_file_added", "a file added to a signed set", "files-aes-signed", bob, signer, "", [][]string{op("copy-from", "files-aes-signed", "pages-1.img", "pages-2.img")},
		"signed-file", "unexpected-file", ex("unexpected-file", "pages-2.img"))
	add("signed_file_deleted", "a file of a signed set deleted", "files-aes-signed", bob, signer, "", [][]string{op("delete", "pstree.img")},
		"signed-file", "missing-file", ex("missing-file", "pstree.img"))
	add("signed_file_truncated", "a file of a signed set cut by a chunk", "files-aes-signed", bob, signer, "",
		[][]string{op("truncate", "pages-1.img", itoa(cipher.PrefixSize+cipher.ChunkSize+cipher.TagSize))}, "signed-file", "size-mismatch", ex("size-mismatch", "pages-1.img"))
	add("signed_chunk_flipped", "a bit of a signed file's ciphertext: not the signed chunk (found before the tag)", "files-aes-signed", bob, signer, "",
		[][]string{op("flip", "pages-1.img", "100", "0x01")}, "ok", "signed-chunk", ex("signed-chunk", "pages-1.img"))
	coreLen := len(mustRead(t, sets, "files-aes-signed", "core-15869.img"))
	add("signed_tag_flipped", "a bit of a signed file's last tag", "files-aes-signed", bob, signer, "",
		[][]string{op("flip", "core-15869.img", itoa(coreLen-1), "0x80")}, "ok", "signed-chunk", ex("signed-chunk", "core-15869.img"))

	// The signature itself.
	sflip := func(name, comment string, off int, outcome string) {
		add("signature_flip_"+name, comment, "files-aes-signed", bob, signer, "", [][]string{op("flip", S, itoa(off), "0x01")}, outcome, "ok")
	}
	sflip("framing", "a bit of the IMG_COMMON framing", 0, "malformed")
	sflip("version", "a bit of the version (2 becomes 3)", 8, "malformed")
	add("signature_algorithm_p384", "the algorithm made ECDSA P-384: not the signer key's", "files-aes-signed", bob, signer, "", [][]string{op("write", S, "10", "0200")}, "bad-signature", "ok")
	sflip("set_id", "a bit of the signed set id", 12, "bad-signature")
	sflip("created", "a bit of the creation time", 28, "bad-signature")
	sflip("certificate", "a bit of the signer certificate's signature", 37+4+len(sig.Chain[0].Raw)-1, "untrusted-signer")
	sflip("header_hash", "a bit of the signed header hash", 37+4+len(sig.Chain[0].Raw), "bad-signature")
	sflip("chunk_hash", "a bit of a chunk hash of the file list", firstHash, "bad-signature")
	sflip("signature_last_byte", "a bit of the signature", len(sigBytes)-1, "bad-signature")
	add("signature_version_1", "a version 1 signature: no longer read", "files-aes-signed", bob, signer, "", [][]string{op("write", S, "8", "0100")}, "malformed", "ok")
	add("signature_truncated", "the signature's last byte cut", "files-aes-signed", bob, signer, "", [][]string{op("truncate", S, itoa(len(sigBytes)-1))}, "malformed", "ok")
	add("signature_extended", "a byte after the signature", "files-aes-signed", bob, signer, "", [][]string{op("append", S, "00")}, "malformed", "ok")
	add("signature_deleted", "the signature of a signed set deleted", "files-aes-signed", bob, signer, "", [][]string{op("delete", S)}, "no-signature", "ok")

	// A signed plain set (integrity without confidentiality), Ed25519.
	notEnc := ex("not-encrypted", HeaderName)
	ed := []string{"ed25519"}
	add("plain_signed_by_trusted_signer", "a plain set signed with Ed25519: every block is the signed one", "files-plain-signed", nil, ed, "", nil, "ok", "ok", notEnc)
	add("plain_signed_block_changed", "a bit of a plain signed file: its block is not the signed one", "files-plain-signed", nil, ed, "", [][]string{op("flip", "pages-1.img", "5000", "0x04")}, "ok", "signed-chunk", notEnc, ex("signed-chunk", "pages-1.img"))
	addPlain("plain_signed_block_changed_without_trust", "the same change without a signature check: read as it is", "files-plain-signed", nil, [][]string{op("flip", "pages-1.img", "5000", "0x04")}, "forged-content", notEnc)
	add("plain_signed_file_added", "a file added to a signed plain set", "files-plain-signed", nil, ed, "", [][]string{op("add", "pages-2.img", "00")},
		"signed-file", "forged-content", notEnc)
	add("plain_signed_header_added", "the header of an encrypted set put into a signed plain set: the signed set was plain", "files-plain-signed", bob, ed, "",
		[][]string{op("copy-from", "files-aes-signed", HeaderName, HeaderName)}, "signed-file", "size-mismatch", eachFile("size-mismatch")...)
	add("plain_signed_other_set_id", "a signed plain set whose signed id is not the expected one", "files-plain-signed", nil, ed, signedID, nil, "ok", "other-set-id", notEnc)
	add("plain_signed_by_signer_not_trusted", "a signed plain set against another anchor", "files-plain-signed", nil, signer, "", nil, "untrusted-signer", "ok", notEnc)
	return vecs
}

// forge is a recipient's change to the process's pages: his own bytes in the
// middle of them.
func forge(pages []byte) []byte {
	out := bytes.Clone(pages)
	copy(out[len(out)/2:], "\xcc\xcc\xcc FORGED BY A RECIPIENT: his code runs here")
	return out
}

// forgeUnderSetKey writes to out what a recipient can make of the file name of
// the signed set dir: the file key unwrapped with his key, the plaintext changed
// by forge, sealed under the file's own payload key and nonce, as docs/format.md
// (part 2) defines them (written here from the spec, as the forger would).
func forgeUnderSetKey(t *testing.T, dir, who, name, out string) {
	h, err := ReadHeader(dir)
	if err != nil {
		t.Fatal(err)
	}
	fileKey, err := identity(t, who).Unwrap(h.Stanzas, cipher.WrapContext{Version: h.Version, SetID: h.SetID})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, OpenOptions{Identities: []cipher.Identity{identity(t, who)}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	plain = forge(plain)
	fi, _ := h.File(name)
	info := append([]byte("imgtool-seal/v2 payload\x00"), binary.LittleEndian.AppendUint16(nil, uint16(h.Algorithm))...)
	info = binary.LittleEndian.AppendUint32(info, cipher.ChunkSize)
	info = append(append(info, fi.Nonce[:]...), name...)
	key, err := hkdf.Key(sha256.New, fileKey, h.SetID[:], string(info), 32)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	gcm, _ := stdcipher.NewGCM(block)
	ct := append([]byte(cipher.FileMagic), h.SetID[:]...)
	for i := 0; i == 0 || i*cipher.ChunkSize < len(plain); i++ {
		var nonce [12]byte
		binary.BigEndian.PutUint64(nonce[3:11], uint64(i))
		if (i+1)*cipher.ChunkSize >= len(plain) {
			nonce[11] = 1
		}
		ct = gcm.Seal(ct, nonce[:], plain[i*cipher.ChunkSize:min(len(plain), (i+1)*cipher.ChunkSize)], nil)
	}
	if err := os.WriteFile(out, ct, 0o644); err != nil {
		t.Fatal(err)
	}
}
