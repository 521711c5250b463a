package cipher

// Limits on what a header or an encrypted file may claim. Every length read from
// input is checked against one of these and against the bytes actually left before
// anything is allocated, so a hostile file fails cleanly instead of exhausting memory.
const (
	// MaxHeaderSize bounds a whole header file: framing, parameters, stanzas,
	// manifest and MAC. A set with MaxStanzas RSA-8192 recipients and MaxFiles
	// files of the longest name stays below it.
	MaxHeaderSize = 32 << 20
	// MaxStanzas bounds the recipients of one set.
	MaxStanzas = 256
	// MaxStanzaType bounds the length of a stanza's type string.
	MaxStanzaType = 64
	// MaxStanzaBody bounds a stanza's body: an RSA-8192 OAEP block is 1024 bytes,
	// an HPKE P-384 one 145.
	MaxStanzaBody = 2048
	// MaxFiles bounds the files listed in a manifest. CRIU writes about ten files
	// per task; this allows sets of several thousand tasks.
	MaxFiles = 1 << 16
	// MaxNameLen bounds a file name in the manifest (NAME_MAX on Linux).
	MaxNameLen = 255
	// MaxFileSize bounds the plaintext size of one file (256 TiB).
	MaxFileSize = 1 << 48
	// MinRSABits and MaxRSABits bound the RSA moduli accepted for recipients and
	// identities: smaller keys are too weak, larger ones only slow things down.
	MinRSABits = 2048
	MaxRSABits = 8192
)

// Limits on a signature file (sign.go). Every length read from one is checked
// against these and against the bytes left before anything is allocated.
const (
	// MaxSignChain bounds the certificates of a signature: the signer and the
	// intermediate CAs up to (not necessarily including) a trust anchor.
	MaxSignChain = 8
	// MaxSignCertSize bounds one DER certificate of the chain.
	MaxSignCertSize = 16 << 10
	// MaxSignatureSize bounds the signature itself: an RSA-8192 PSS signature is
	// 1024 bytes, an ECDSA P-384 one at most 104.
	MaxSignatureSize = 1024
	// MaxSignFileSize bounds a whole signature file: framing, MaxSignChain
	// certificates of the largest size, MaxFiles entries of the longest name, and
	// a 32-byte hash per 64 KiB chunk of the stored set (0.05% of it): sets of up
	// to about 2 TiB. It is read whole, as the set's own size requires.
	MaxSignFileSize = 1 << 30
	// MaxClockSkew is how far in the future a signature's creation time may be
	// before it is refused: clocks of the signing and the verifying machines differ.
	MaxClockSkew = 5 * 60 // seconds
)
