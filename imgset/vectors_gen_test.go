package imgset

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"testing/cryptotest"

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
	for range n {
		nl := int(b[off])
		l.files[string(b[off+1:off+1+nl])] = [2]int{off, off + 1 + nl}
		off += 1 + nl + 8
	}
	l.mac = off
	if off+cipher.MACSize != len(b) {
		t.Fatalf("header layout: MAC at %d, header is %d bytes", off, len(b))
	}
	return l
}

// TestGenerateVectors rewrites testdata/vectors: the base sets and every case.
func TestGenerateVectors(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate the vectors")
	}
	cryptotest.SetGlobalRandom(t, 20260127)
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
		vecs = append(vecs, &vector{name: name, comment: []string{comment}, base: base, identities: ids, ops: ops, open: open, expect: expect})
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
	hflip("flip_set_id", "a bit of the set id: the MAC fails; the intact files are not blamed", 20, 0x10, bobID, "header-auth", ex("header-auth", H))
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
	evil, _ := cipher.NewSetKey(cipher.AES256GCM)
	evilStanzas, err := evil.Wrap(recipient(t, "mallory-p256"))
	if err != nil {
		t.Fatal(err)
	}
	evilHdr, _ := cipher.SealHeader(HeaderFraming, evil, evilStanzas, nil)
	el := layoutOf(t, evilHdr)
	mallory := hex.EncodeToString(evilHdr[el.stanzas[0].start:el.stanzas[0].end])
	for _, who := range []string{"mallory-p256", "bob-p256"} {
		add("header_recipient_added_by_attacker_"+who, "an attacker adds a stanza wrapping a key of his own for himself; opened by "+who, "files-aes", []string{who},
			[][]string{op("insert", H, itoa(hl.stanzaEnd), mallory), op("write", H, "32", "0300")}, "header-auth", ex("header-auth", H))
	}
	vecs = append(vecs,
		&vector{name: "header_deleted_require_encrypted", comment: []string{"the header deleted, and encryption required: no downgrade"},
			base: "files-aes", identities: bobID, require: true, ops: [][]string{op("delete", H)}, open: "not-encrypted",
			expect: append([][2]string{ex("not-encrypted", H)}, each("header-missing")...)},
		&vector{name: "header_deleted", comment: []string{"the header deleted: the files are still recognized as encrypted"},
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
