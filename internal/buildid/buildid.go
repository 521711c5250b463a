// Package buildid reads the GNU build id of ELF files and compares it with the form CRIU's
// images record it in (reg_file_entry.build_id), for both engines: dump records it, restore
// checks that a file is still the one dumped.
package buildid

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
)

const (
	ntGNUBuildID = 3       // NT_GNU_BUILD_ID
	maxNotes     = 1 << 20 // the largest PT_NOTE segment read
	maxID        = 512     // the longest build id CRIU takes (files-reg.c)
)

// Read returns the GNU build id of the ELF file at path (the descriptor of its
// NT_GNU_BUILD_ID note), or nil when it is not an ELF file or has none.
func Read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil || string(magic[:]) != elf.ELFMAG {
		return nil, nil
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, nil
	}
	for _, p := range ef.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > maxNotes {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return nil, fmt.Errorf("%s: reading its notes: %w", path, err)
		}
		for len(b) >= 12 {
			nsz, dsz, typ := ef.ByteOrder.Uint32(b), ef.ByteOrder.Uint32(b[4:]), ef.ByteOrder.Uint32(b[8:])
			nameEnd := 12 + (uint64(nsz)+3)&^3
			descEnd := nameEnd + (uint64(dsz)+3)&^3
			if descEnd > uint64(len(b)) {
				break
			}
			if typ == ntGNUBuildID && nsz == 4 && string(b[12:15]) == "GNU" {
				if dsz == 0 || dsz > maxID {
					return nil, nil
				}
				return b[nameEnd : nameEnd+uint64(dsz)], nil
			}
			b = b[descEnd:]
		}
	}
	return nil, nil
}

// Words is a build id as CRIU records it: 32-bit little-endian words, the last padded with
// zeros.
func Words(id []byte) []uint32 {
	if len(id) == 0 {
		return nil
	}
	padded := make([]byte, (len(id)+3)&^3)
	copy(padded, id)
	out := make([]uint32, len(padded)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(padded[i*4:])
	}
	return out
}

// Matches reports whether id, as Read returns it, is the build id words records.
func Matches(id []byte, words []uint32) bool {
	w := Words(id)
	if len(w) != len(words) {
		return false
	}
	for i := range w {
		if w[i] != words[i] {
			return false
		}
	}
	return true
}
