#!/usr/bin/env bash
# make bench: imgtool's speed and memory as ratios against the peers run in the same
# command, on the same data: crit (codec), cp/age/gpg/openssl (encryption), and the
# page rates CRIU 4.2 was measured at (dump/restore). Nothing here asserts a time;
# it prints what it measured. Work happens in tmpfs (/dev/shm) to measure CPU, not disk.
set -euo pipefail
cd "$(dirname "$0")/.."
IMGTOOL=$(realpath "${1:-bin/imgtool}")
ROOT=$(pwd)
W=$(mktemp -d /dev/shm/imgtool-bench.XXXXXX)
trap 'kill $(cat "$W"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$W"' EXIT

need() { # need CMD PACKAGE: install a peer from Debian when missing
	command -v "$1" >/dev/null 2>&1 && return 0
	echo "installing $2 for $1" >&2
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2") >/dev/null 2>&1 || true
	command -v "$1" >/dev/null 2>&1
}
# tm CMD...: runs CMD, prints "SECONDS MAXRSS_KIB" (GNU time).
tm() { /usr/bin/time -f '%e %M' -o "$W/.t" "$@" >/dev/null 2>"$W/.err" || { cat "$W/.err" >&2; return 1; }; cat "$W/.t"; }
# best3 CMD...: the fastest of three runs, "SECONDS MAXRSS_KIB".
best3() { local b="" r; for _ in 1 2 3; do r=$(tm "$@"); if [ -z "$b" ] || awk -v a="${r% *}" -v b="${b% *}" 'BEGIN{exit !(a<b)}'; then b=$r; fi; done; echo "$b"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b<=0) b=0.0005; printf "%.2f", a/b }'; }
row() { printf '%-34s %10s %10s %s\n' "$@"; }
secs() { echo "${1% *}"; }
mib() { awk -v k="${1#* }" 'BEGIN{printf "%.1f", k/1024}'; }

echo "# imgtool bench ($(date -u +%F), $(nproc) cores, $(uname -r))"
