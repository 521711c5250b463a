#!/usr/bin/env python3
"""Independent reference implementation of imgtool's formats, written from docs/format.md with
pyca/cryptography, to check the Go implementation against:

  python3 kat.py > kat.txt
      known answers of imgtool-seal v1 and v2 (part 2): key schedule, stanza labels, encrypted
      files, headers (TestKnownAnswers; TestKnownAnswersFromPython runs it and compares).
  python3 kat.py check SET [--trust CERT] [--key KEY] [--fixture DIR]
      reads a whole set as a reader would: with --trust, its signature (imgtool-sign v2, part 5:
      the signer against the anchor, the signature, the header hash, the folder, the SHA-256 of
      every stored chunk); with --key, its header (the stanza unwrapped with RSA-OAEP or HPKE
      written out from RFC 9180, both bound to the set id in v2; the MAC) and every file
      decrypted and compared with --fixture. Prints "OK ..." and exits 0, or prints why and
      exits 1 (TestPythonCheck in package imgset runs it on the test vectors).

Without the cryptography module it prints why and exits 77 (the tests then skip)."""
import hashlib, hmac, os, struct, sys
try:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
except ImportError as e:
    print(f"skip: python3 module cryptography is missing ({e}); on Debian: apt-get install python3-cryptography")
    sys.exit(77)

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

# ---------------------------------------------------------------- reading whole sets (check)

HEADER_NAME, SIGN_NAME = "imgtool-seal.img", "imgtool-sign.img"
SIGN_FRAMING = struct.pack("<II", 0x54564319, 0x5349474E)

class Fail(Exception):
    pass

class Reader:
    def __init__(self, data, what):
        self.data, self.off, self.what = data, 0, what
    def take(self, n, field):
        if n < 0 or n > len(self.data) - self.off:
            raise Fail(f"{self.what}: truncated at {field}")
        b = self.data[self.off:self.off + n]
        self.off += n
        return b
    def u(self, fmt, field):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), field))[0]

def parse_header(data):
    r = Reader(data, HEADER_NAME)
    if r.take(8, "framing") != FRAMING:
        raise Fail("header: bad framing")
    v, alg, chunk = r.u("H", "version"), r.u("H", "AEAD"), r.u("I", "chunk size")
    if v not in (1, 2) or alg not in (1, 2) or chunk != CHUNK:
        raise Fail(f"header: version {v}, AEAD {alg}, chunk size {chunk}")
    set_id = r.take(16, "set id")
    stanzas = []
    for _ in range(r.u("H", "stanza count")):
        typ = r.take(r.u("B", "type length"), "type").decode()
        fp = r.take(32, "fingerprint")
        stanzas.append((typ, fp, r.take(r.u("H", "body length"), "body")))
    files = {}
    for _ in range(r.u("I", "file count")):
        name = r.take(r.u("B", "name length"), "name").decode()
        size = r.u("Q", "size")
        files[name] = (size, r.take(16, "nonce") if v >= 2 else b"")
    signed = data[:r.off]
    mac = r.take(32, "MAC")
    if r.off != len(data):
        raise Fail("header: bytes after the MAC")
    return dict(v=v, alg=alg, set_id=set_id, stanzas=stanzas, files=files, signed=signed, mac=mac)

def ciphertext_size(n):
    return 24 + n + 16 * max(1, -(-n // CHUNK))

def stored_chunks(data, encrypted):
    """The stored chunks of a file: its sealed chunks (after the 24-byte prefix), or 64 KiB blocks."""
    if not encrypted:
        return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    body, out = data[24:], []
    while True:
        out.append(body[:CHUNK + 16])
        body = body[CHUNK + 16:]
        if not body:
            return out

def stored_chunk_count(size, encrypted):
    if not encrypted:
        return -(-size // CHUNK)
    full, rest = divmod(size - 24, CHUNK + 16)
    if size >= 24 and ((rest == 0 and full > 0) or rest > 16 or (rest == 16 and full == 0)):
        return full + (rest > 0)
    raise Fail(f"signature: {size} bytes is the size of no encrypted file")

def parse_signature(data):
    from cryptography import x509
    r = Reader(data, SIGN_NAME)
    if r.take(8, "framing") != SIGN_FRAMING:
        raise Fail("signature: bad framing")
    start = r.off
    v, alg = r.u("H", "version"), r.u("H", "algorithm")
    if v != 2:
        raise Fail(f"signature: version {v}")
    set_id, created = r.take(16, "set id"), r.u("Q", "creation time")
    chain = [x509.load_der_x509_certificate(r.take(r.u("I", "certificate length"), "certificate")) for _ in range(r.u("B", "chain length"))]
    seal_hash = r.take(32, "header hash")
    encrypted = seal_hash != bytes(32)
    files = {}
    for _ in range(r.u("I", "file count")):
        name = r.take(r.u("B", "name length"), "name").decode()
        size = r.u("Q", "size")
        hashes_ = [r.take(32, "chunk hash") for _ in range(stored_chunk_count(size, encrypted))]
        files[name] = (size, hashes_)
    end = r.off
    sig = r.take(r.u("H", "signature length"), "signature")
    if r.off != len(data):
        raise Fail("signature: bytes after the signature")
    return dict(alg=alg, set_id=set_id, created=created, chain=chain, seal_hash=seal_hash,
                encrypted=encrypted, files=files, message=b"imgtool-sign/v2\x00" + data[start:end], sig=sig)

def verify_signature(s, anchor_path):
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, padding, utils
    anchor = x509.load_pem_x509_certificate(open(anchor_path, "rb").read())
    signer = s["chain"][0]
    created = datetime.datetime.fromtimestamp(s["created"] / 1e9, datetime.timezone.utc)
    if signer != anchor:
        try:  # the anchor issued the signer (Debian's cryptography 38 lacks verify_directly_issued_by)
            if signer.issuer != anchor.subject:
                raise ValueError("the issuer is not the anchor")
            ipub, h = anchor.public_key(), signer.signature_hash_algorithm
            if isinstance(ipub, rsa.RSAPublicKey):
                ipub.verify(signer.signature, signer.tbs_certificate_bytes, padding.PKCS1v15(), h)
            elif isinstance(ipub, ec.EllipticCurvePublicKey):
                ipub.verify(signer.signature, signer.tbs_certificate_bytes, ec.ECDSA(h))
            else:
                ipub.verify(signer.signature, signer.tbs_certificate_bytes)
        except Exception as e:
            raise Fail(f"untrusted signer: {signer.subject.rfc4514_string()} is not {anchor.subject.rfc4514_string()} nor issued by it ({e})")
    utc = lambda t: t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)
    for c in (signer, anchor):  # not_valid_before_utc is cryptography >= 42's
        nb, na = (utc(getattr(c, f + "_utc", None) or getattr(c, f)) for f in ("not_valid_before", "not_valid_after"))
        if not (nb <= created <= na):
            raise Fail(f"untrusted signer: {c.subject.rfc4514_string()} not valid at {created}")
    pub = signer.public_key()
    h = hashes.SHA384() if s["alg"] == 2 else hashes.SHA256()
    digest = (hashlib.sha384 if s["alg"] == 2 else hashlib.sha256)(s["message"]).digest()
    try:
        if s["alg"] in (1, 2):
            pub.verify(s["sig"], digest, ec.ECDSA(utils.Prehashed(h)))
        elif s["alg"] == 3:
            pub.verify(s["sig"], digest)  # Ed25519 over the SHA-256 hash
        elif s["alg"] == 4:
            pub.verify(s["sig"], digest, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), utils.Prehashed(h))
        else:
            raise Fail(f"signature algorithm {s['alg']}")
    except Fail:
        raise
    except Exception as e:
        raise Fail(f"bad signature ({type(e).__name__})")

def hkdf_extract(hash_, salt, ikm):
    return hmac.new(salt or bytes(hash_().digest_size), ikm, hash_).digest()

def hkdf_expand(hash_, prk, info, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hash_).digest()
        out, i = out + t, i + 1
    return out[:n]

def hpke_open(priv, enc, ct, info):
    """RFC 9180 base mode, DHKEM(P-256 or P-384), HKDF-SHA256/384, AES-256-GCM, single shot, empty aad."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives import serialization
    p384 = priv.curve.name == "secp384r1"
    kem_id, kdf_id, hash_, nsecret = (0x11, 2, hashlib.sha384, 48) if p384 else (0x10, 1, hashlib.sha256, 32)
    dh = priv.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(priv.curve, enc))
    pkrm = priv.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    def extract(suite, salt, label, ikm):
        return hkdf_extract(hash_, salt, b"HPKE-v1" + suite + label + ikm)
    def expand(suite, prk, label, info_, n):
        return hkdf_expand(hash_, prk, struct.pack(">H", n) + b"HPKE-v1" + suite + label + info_, n)
    kem = b"KEM" + struct.pack(">H", kem_id)
    shared = expand(kem, extract(kem, b"", b"eae_prk", dh), b"shared_secret", enc + pkrm, nsecret)
    suite = b"HPKE" + struct.pack(">HHH", kem_id, kdf_id, 2)
    context = b"\x00" + extract(suite, b"", b"psk_id_hash", b"") + extract(suite, b"", b"info_hash", info)
    secret = extract(suite, shared, b"secret", b"")
    key, nonce = expand(suite, secret, b"key", context, 32), expand(suite, secret, b"base_nonce", context, 12)
    return AESGCM(key).decrypt(nonce, ct, b"")

def unwrap(h, key_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    priv = serialization.load_pem_private_key(open(key_path, "rb").read(), None)
    spki = priv.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    fp = hashlib.sha256(spki).digest()
    for typ, sfp, body in h["stanzas"]:
        if sfp != fp:
            continue
        if isinstance(priv, rsa.RSAPrivateKey):
            oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=oaep_label(h["set_id"], h["v"]))
            return priv.decrypt(body, oaep)
        enc_len = 97 if priv.curve.name == "secp384r1" else 65
        return hpke_open(priv, body[:enc_len], body[enc_len:], hpke_info(fp, h["set_id"], h["v"]))
    raise Fail("the key is not a recipient of the set")

def decrypt_file(file_key, h, name, data):
    size, file_nonce = h["files"][name]
    if len(data) != ciphertext_size(size) or data[:8] != FILE_MAGIC or data[8:24] != h["set_id"]:
        raise Fail(f"{name}: size or prefix")
    aead = (AESGCM if h["alg"] == 1 else ChaCha20Poly1305)(payload_key(file_key, h["set_id"], h["alg"], name, h["v"], file_nonce))
    chunks = stored_chunks(data, True)
    return b"".join(aead.decrypt(nonce(i, i == len(chunks) - 1), c, None) for i, c in enumerate(chunks))

def check(args):
    import argparse
    ap = argparse.ArgumentParser(prog="kat.py check")
    ap.add_argument("set")
    ap.add_argument("--trust")
    ap.add_argument("--key")
    ap.add_argument("--fixture")
    a = ap.parse_args(args)
    names = sorted(n for n in os.listdir(a.set) if n not in (SIGN_NAME, HEADER_NAME))
    read = lambda n: open(os.path.join(a.set, n), "rb").read()
    encrypted = os.path.exists(os.path.join(a.set, HEADER_NAME))
    h = parse_header(read(HEADER_NAME)) if encrypted else None
    said = []
    if a.trust:
        if not os.path.exists(os.path.join(a.set, SIGN_NAME)):
            raise Fail("no signature")
        s = parse_signature(read(SIGN_NAME))
        verify_signature(s, a.trust)
        if s["encrypted"] != encrypted or (encrypted and (hashlib.sha256(read(HEADER_NAME)).digest() != s["seal_hash"] or h["set_id"] != s["set_id"])):
            raise Fail("the header is not the one signed")
        if sorted(s["files"]) != names:
            raise Fail(f"the files are not the signed ones: {names} against {sorted(s['files'])}")
        for n in names:
            data = read(n)
            size, want = s["files"][n]
            if len(data) != size or (encrypted and data[8:24] != s["set_id"]):
                raise Fail(f"{n}: size or set id not the signed ones")
            got = [hashlib.sha256(c).digest() for c in stored_chunks(data, encrypted)]
            bad = [i for i, (x, y) in enumerate(zip(got, want)) if x != y]
            if len(got) != len(want) or bad:
                raise Fail(f"{n}: chunk {bad[0] if bad else len(got)} is not the signed one")
        said.append(f"signed by {s['chain'][0].subject.rfc4514_string()}, every stored chunk the signed one")
    if a.key:
        if not encrypted:
            raise Fail("a key was given, the set is not encrypted")
        file_key = unwrap(h, a.key)
        if not hmac.compare_digest(hmac.new(mac_key(file_key, h["set_id"], h["v"]), h["signed"], hashlib.sha256).digest(), h["mac"]):
            raise Fail("header MAC")
        if sorted(h["files"]) != names:
            raise Fail("the files are not the manifest's")
        for n in names:
            plain = decrypt_file(file_key, h, n, read(n))
            if a.fixture and plain != open(os.path.join(a.fixture, n), "rb").read():
                raise Fail(f"{n}: decrypted, but not the fixture's plaintext")
        said.append(f"v{h['v']} header authentic, {len(names)} files decrypted" + (" and equal to the fixture" if a.fixture else ""))
    elif a.fixture and not encrypted:
        for n in names:
            if read(n) != open(os.path.join(a.fixture, n), "rb").read():
                raise Fail(f"{n}: not the fixture's")
    print(f"OK {a.set}: " + "; ".join(said))

if __name__ == "__main__":
    if sys.argv[1:2] == ["check"]:
        try:
            check(sys.argv[2:])
        except Fail as e:
            print(f"FAIL {e}")
            sys.exit(1)
    else:
        main()
