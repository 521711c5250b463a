#!/usr/bin/env python3
"""Independent reference implementation of the imgtool-seal format, v1 and v2 (docs/format.md,
part 2), written from the spec with pyca/cryptography, to produce known-answer vectors that the
Go implementation must match (TestKnownAnswers). Run: python3 kat.py > kat.txt
(check.py reads whole signed sets with it: TestPythonCheck.)"""
import hashlib, hmac, struct
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

CHUNK = 65536
FILE_MAGIC = b"\x89ISEAL\x01\n"
FRAMING = struct.pack("<II", 0x54564319, 0x5345A1ED)

def hkdf(secret, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)

def label(v, what):
    return b"imgtool-seal/v%d %s" % (v, what)

def payload_key(file_key, set_id, alg, name, v=1, file_nonce=b""):
    """v2 puts the file's 16-byte nonce between the parameters and the name."""
    info = label(v, b"payload") + b"\x00" + struct.pack("<HI", alg, CHUNK) + (file_nonce if v >= 2 else b"") + name.encode()
    return hkdf(file_key, set_id, info)

def mac_key(file_key, set_id, v=1):
    return hkdf(file_key, set_id, label(v, b"header mac"))

def oaep_label(set_id, v=1):
    l = label(v, b"rsa-oaep-sha256")
    return l + b"\x00" + set_id if v >= 2 else l

def hpke_info(fp, set_id, v=1):
    i = label(v, b"hpke") + b"\x00" + fp
    return i + set_id if v >= 2 else i

def nonce(i, last):
    return i.to_bytes(11, "big") + (b"\x01" if last else b"\x00")

def encrypt_file(file_key, set_id, alg, name, plain, v=1, file_nonce=b""):
    aead = (AESGCM if alg == 1 else ChaCha20Poly1305)(payload_key(file_key, set_id, alg, name, v, file_nonce))
    chunks = [plain[i:i + CHUNK] for i in range(0, len(plain), CHUNK)] or [b""]
    out = FILE_MAGIC + set_id
    for i, c in enumerate(chunks):
        out += aead.encrypt(nonce(i, i == len(chunks) - 1), c, None)
    return out

def header(file_key, set_id, alg, stanzas, files, v=1):
    """files: (name, size) in v1, (name, size, nonce) in v2."""
    b = FRAMING + struct.pack("<HHI", v, alg, CHUNK) + set_id + struct.pack("<H", len(stanzas))
    for typ, fp, body in stanzas:
        b += bytes([len(typ)]) + typ.encode() + fp + struct.pack("<H", len(body)) + body
    b += struct.pack("<I", len(files))
    for f in sorted(files):
        b += bytes([len(f[0])]) + f[0].encode() + struct.pack("<Q", f[1]) + (f[2] if v >= 2 else b"")
    return b + hmac.new(mac_key(file_key, set_id, v), b, hashlib.sha256).digest()

def main():
    file_key = bytes([7]) * 32
    set_id = bytes([1, 2, 3]) + bytes(13)
    plain_of = lambda size: bytes((i * 7 // 5) & 0xFF for i in range(size))
    stanzas = [("test-type", bytes([0x11]) * 32, bytes([0x22]) * 10), ("x509-hpke-p256", bytes([0x33]) * 32, bytes([0x44]) * 113)]
    # v1, exactly as when it was the format.
    for alg in (1, 2):
        for size in (0, 5, CHUNK, CHUNK + 1, 3 * CHUNK + 100):
            ct = encrypt_file(file_key, set_id, alg, "pages-1.img", plain_of(size))
            print(f"file alg={alg} size={size} sha256={hashlib.sha256(ct).hexdigest()} head={ct[:48].hex()}")
    files = [("pages-1.img", 70000), ("inventory.img", 86), ("core-1.img", 0)]
    for alg in (1, 2):
        print(f"header alg={alg} hex={header(file_key, set_id, alg, stanzas, files).hex()}")
    print("payload_key alg=1 name=pages-1.img hex=" + payload_key(file_key, set_id, 1, "pages-1.img").hex())
    print("mac_key hex=" + mac_key(file_key, set_id).hex())
    fp = bytes([0x33]) * 32
    print(f"oaep_label v=1 hex={oaep_label(set_id).hex()}")
    print(f"hpke_info v=1 fp={fp.hex()} hex={hpke_info(fp, set_id).hex()}")
    # v2: a nonce per file in the payload key and the manifest; the set id in the
    # stanzas' OAEP label and HPKE info.
    nonce = bytes(range(0xa0, 0xb0))
    for alg in (1, 2):
        for size in (0, 5, CHUNK, CHUNK + 1, 3 * CHUNK + 100):
            ct = encrypt_file(file_key, set_id, alg, "pages-1.img", plain_of(size), 2, nonce)
            print(f"file v=2 alg={alg} size={size} sha256={hashlib.sha256(ct).hexdigest()} head={ct[:48].hex()}")
    files2 = [(n, s, bytes([0xb0 + i, 1]) + bytes(14)) for i, (n, s) in enumerate(files)]
    for alg in (1, 2):
        print(f"header v=2 alg={alg} hex={header(file_key, set_id, alg, stanzas, files2, 2).hex()}")
    print("payload_key v=2 alg=1 name=pages-1.img hex=" + payload_key(file_key, set_id, 1, "pages-1.img", 2, nonce).hex())
    print("mac_key v=2 hex=" + mac_key(file_key, set_id, 2).hex())
    print(f"oaep_label v=2 hex={oaep_label(set_id, 2).hex()}")
    print(f"hpke_info v=2 fp={fp.hex()} hex={hpke_info(fp, set_id, 2).hex()}")

if __name__ == "__main__":
    main()
