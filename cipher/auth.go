package cipher

import (
	"crypto/aes"
	stdcipher "crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
)

// tagAuth checks the tag of a sealed chunk without decrypting it, where the AEAD
// allows: verify needs only the verdict, and skipping the keystream halves its work.
//
// For AES-256-GCM the tag of ciphertext C (no associated data) is
//
//	T = GHASH_H(blocks of C, zero-padded; then [0 || 8|C|]) XOR AES_K(J0).
//
// Sealing an empty plaintext with C as the associated data gives, under the same
// key and nonce, T' = GHASH_H(the same blocks; then [8|C| || 0]) XOR AES_K(J0): the
// two differ only in the last (length) block, and GHASH is linear, so
//
//	T = T' XOR ([8|C| || 8|C|] · H)
//
// in GF(2^128). The standard library computes T' with its assembly GHASH, and the
// correction is one multiplication, cached for full chunks. The check is exactly
// GCM's own; it is tested against crypto/cipher's Open in auth_test.go.
type tagAuth struct {
	aead    stdcipher.AEAD
	h       gf128 // the GHASH key AES_K(0^128)
	fullFix [16]byte
}

// newTagAuth returns the tag checker for the payload key, or nil when the
// algorithm has no shortcut (chunks are then opened to be checked).
func newTagAuth(alg Algorithm, key []byte, aead stdcipher.AEAD) *tagAuth {
	if alg != AES256GCM {
		return nil
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil
	}
	var h [16]byte
	block.Encrypt(h[:], h[:])
	a := &tagAuth{aead: aead, h: gf128FromBytes(h[:])}
	a.fullFix = a.fix(ChunkSize)
	return a
}

// fix returns [8n || 8n] · H, the difference between the two tags for n bytes.
func (a *tagAuth) fix(n int) [16]byte {
	bits := uint64(n) * 8
	return gfMul(gf128{bits, bits}, a.h).bytes()
}

// check reports whether sealed (ciphertext || tag) authenticates under nonce.
func (a *tagAuth) check(nonce, sealed []byte) bool {
	if len(sealed) < TagSize {
		return false
	}
	ct, tag := sealed[:len(sealed)-TagSize], sealed[len(sealed)-TagSize:]
	var buf [TagSize]byte
	t := a.aead.Seal(buf[:0], nonce, nil, ct)
	fix := a.fullFix
	if len(ct) != ChunkSize {
		fix = a.fix(len(ct))
	}
	subtle.XORBytes(t, t, fix[:])
	return subtle.ConstantTimeCompare(t, tag) == 1
}

// gf128 is an element of GCM's field, as the two big-endian halves of its block:
// bit 0 of the block (the top bit of hi) is the coefficient of x^0.
type gf128 struct{ hi, lo uint64 }

func gf128FromBytes(b []byte) gf128 {
	return gf128{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}
}

func (x gf128) bytes() [16]byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
	return b
}

// gfMul multiplies in GF(2^128) as NIST SP 800-38D, algorithm 1, defines it: for
// each bit of x from bit 0, add v if the bit is set, then multiply v by the
// polynomial x (a right shift here), reducing by R = 0xE1 || 0^120. It is not
// constant time in x, which is public here (a length).
func gfMul(x, y gf128) gf128 {
	var z gf128
	v := y
	for i := 0; i < 128; i++ {
		var bit uint64
		if i < 64 {
			bit = x.hi >> (63 - i) & 1
		} else {
			bit = x.lo >> (127 - i) & 1
		}
		// Branch-free on v, which depends on the key.
		mask := -bit
		z.hi ^= v.hi & mask
		z.lo ^= v.lo & mask
		carry := -(v.lo & 1)
		v.lo = v.lo>>1 | v.hi<<63
		v.hi = v.hi>>1 ^ (0xE1<<56)&carry
	}
	return z
}
