#!/bin/sh
# Makes the test keys and certificates with OpenSSL (not with imgtool, so that the
# tests check interoperability), in every private key encoding imgtool reads, and
# records each certificate's fingerprint as OpenSSL computes it in FINGERPRINTS.
# Run it in this directory; the outputs are committed.
set -eu
cert() { # NAME: self-signed certificate for NAME.key
	openssl req -new -x509 -key "$1.key" -subj "/CN=imgtool test $1" -days 36500 -out "$1.crt" 2>/dev/null
}
# alice: RSA-2048, PKCS#8 key, plus its PKCS#1 form
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out alice-rsa2048.key 2>/dev/null
cert alice-rsa2048
openssl rsa -in alice-rsa2048.key -traditional -out alice-rsa2048.pkcs1.key 2>/dev/null
# bob: ECDSA P-256, SEC1 key (as `openssl ecparam -genkey` writes it, with EC PARAMETERS)
openssl ecparam -name prime256v1 -genkey -out bob-p256.sec1.key
openssl pkcs8 -topk8 -nocrypt -in bob-p256.sec1.key -out bob-p256.key
cert bob-p256
# carol: ECDSA P-384, PKCS#8
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out carol-p384.key
cert carol-p384
# mallory: ECDSA P-256, a recipient of no set
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out mallory-p256.key
cert mallory-p256
# signer: ECDSA P-256, a signing identity (KeyUsage digitalSignature, not a CA), the
# trusted signer of the signed test vectors (mallory signs the untrusted ones)
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out signer-p256.key
openssl req -new -x509 -key signer-p256.key -subj "/CN=imgtool test signer-p256" -days 36500 \
	-addext "keyUsage=critical,digitalSignature" -addext "basicConstraints=critical,CA:FALSE" -out signer-p256.crt 2>/dev/null
# unsupported keys: RSA-1024, P-521, Ed25519 (for encryption; Ed25519 signs); a password-protected key
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out weak-rsa1024.key 2>/dev/null
cert weak-rsa1024
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out p521.key
cert p521
openssl genpkey -algorithm ED25519 -out ed25519.key
cert ed25519
openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:secret -in bob-p256.key -out bob-p256.encrypted.key
: > FINGERPRINTS
for c in alice-rsa2048 bob-p256 carol-p384 mallory-p256; do
	fp=$(openssl x509 -in "$c.crt" -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)
	echo "$fp $c" >> FINGERPRINTS
done
