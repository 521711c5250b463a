#!/usr/bin/env bash
# make demo: imgtool's main job on a bundled real CRIU 4.2 image set. On a copy of
# fixtures/criu-4.2/counter in a temporary folder: make a key, encrypt the set in
# place, look for its secret in the ciphertext, verify it, inspect and explore it
# with and without the key, decrypt it, and check it is byte for byte the original
# (crit's SHA256SUMS). Any failure stops the demo with a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
IMGTOOL=$(realpath "${1:-bin/imgtool}")
ROOT=$(pwd)
SET=counter
CANARY=IMGTOOL-SECRET-CANARY-b35dc972c25939a5
W=$(mktemp -d "${TMPDIR:-/tmp}/imgtool-demo.XXXXXX")
trap 'rm -rf "$W"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '%s\n' "$*"; }
# show ARGS...: prints the imgtool command line, then runs it.
show() {
	printf '$ imgtool'
	printf ' %q' "$@"
	printf '\n'
	"$IMGTOOL" "$@"
}
fail() { printf 'demo FAILED: %s\n' "$*" >&2; exit 1; }

[ -x "$IMGTOOL" ] || fail "no imgtool binary at $IMGTOOL (run make build)"
cp -r "$ROOT/fixtures/criu-4.2/$SET" "$W/$SET"
cd "$W"

step "A real CRIU 4.2 checkpoint of a process with a secret in its memory"
say "fixtures/criu-4.2/$SET: $(ls $SET | wc -l) files, $(du -sh $SET | cut -f1); the secret is in plain sight:"
grep -c -a "$CANARY" "$SET/pages-1.img" >/dev/null || fail "the canary is not in the plaintext set"
grep -o -a "$CANARY" "$SET/pages-1.img" | head -1 | sed 's/^/  pages-1.img: /'

step "1. Make a key pair (ECDSA P-256, self-signed certificate)"
show keygen --cert me.pem --key me.key --cn "imgtool demo"
FP=$("$IMGTOOL" keygen --cert me.pem --key me.key 2>&1 || true)
case "$FP" in *"refusing to overwrite"*) say "(keygen refuses to overwrite an existing key: good)" ;; *) fail "keygen overwrote a key" ;; esac

step "2. Encrypt the set in place, atomically"
show encrypt -D "$SET" --cert me.pem
say "The set keeps its file names and gains the sealed header imgtool-seal.img:"
ls "$SET" | paste -sd' ' | fold -s -w 100 | sed 's/^/  /'
if grep -r -l -a "$CANARY" "$SET"; then fail "the secret is still readable in the encrypted set"; fi
if grep -r -l -a -E 'PAGE[0-9a-f]{8}' "$SET"; then fail "page headers are still readable in the encrypted set"; fi
say "grep finds neither the secret nor the PAGE%08x page headers in any file."

step "3. Verify: authenticate every chunk of every file, writing no plaintext"
show verify -D "$SET" --tls-key me.key
say "Without the key, verify checks what it can, says what it could not, and exits 4:"
rc=0; show verify -D "$SET" || rc=$?
[ "$rc" -eq 4 ] || fail "verify without a key exited $rc, want 4 (unchecked)"

step "4. Inspect the encrypted set"
say "Without a key, imgtool says the set is encrypted and for whom:"
if out=$("$IMGTOOL" inspect "$SET" 2>&1); then fail "inspect read an encrypted set without a key"; fi
printf '$ imgtool inspect %s\n%s\n' "$SET" "$out"
say "With the key, the set is decrypted in memory only:"
show inspect "$SET" --tls-key me.key

step "5. Explore it: the process tree, from the encrypted set"
show x "$SET" ps --tls-key me.key

step "6. Tampering is caught: flip one bit of a copy, verify fails and names the file"
cp -r "$SET" tampered
printf '\x01' | dd of=tampered/pages-1.img bs=1 seek=100000 conv=notrunc status=none
set +e
"$IMGTOOL" verify -D tampered --tls-key me.key >tampered.out 2>&1
rc=$?
set -e
cat tampered.out
[ "$rc" -eq 3 ] || fail "verify of a tampered set exited $rc, want 3"
grep -q '^FAIL pages-1.img' tampered.out || fail "verify did not name pages-1.img"
say "(exit code $rc: verification failed)"

step "7. Decrypt in place, and compare with the original (crit's SHA256SUMS)"
show decrypt -D "$SET" --tls-key me.key
(cd "$SET" && sha256sum -c --quiet "$ROOT/fixtures/criu-4.2/$SET.crit/SHA256SUMS") || fail "the decrypted set differs from the original"
[ "$(ls "$SET" | wc -l)" -eq "$(wc -l <"$ROOT/fixtures/criu-4.2/$SET.crit/SHA256SUMS")" ] || fail "the decrypted set has extra files"
say "sha256sum -c: all $(wc -l <"$ROOT/fixtures/criu-4.2/$SET.crit/SHA256SUMS") files identical to the original, and nothing else."

printf '\n\033[1mdemo OK\033[0m\n'
