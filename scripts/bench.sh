#!/usr/bin/env bash
# make bench: imgtool's speed and memory as ratios against the peers run in the same
# command, on the same data: crit (codec), cp/age/gpg/openssl (encryption), and the
# page rates CRIU 4.2 was measured at (dump/restore). Nothing here asserts a time;
# it prints what it measured. Work happens in tmpfs (/dev/shm) to measure CPU, not disk.
set -euo pipefail
# Be a child subreaper (PR_SET_CHILD_SUBREAPER, 36; kept across exec), so that the
# processes restore -d leaves behind are reparented to this shell, which reaps them
# when they are killed: their PIDs are then free for the next restore.
if [ -z "${IMGTOOL_BENCH_REAPER:-}" ] && command -v python3 >/dev/null; then
	export IMGTOOL_BENCH_REAPER=1
	exec python3 -c 'import ctypes, os, sys; ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); os.execvp("bash", ["bash"] + sys.argv[1:])' "$0" "$@"
fi
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
# tm CMD...: runs CMD, prints "SECONDS MAXRSS_KIB": wall time to the millisecond, peak
# memory from GNU time.
tm() {
	local t0 t1
	t0=$(date +%s%N)
	/usr/bin/time -f '%M' -o "$W/.t" "$@" >/dev/null 2>"$W/.err" || { cat "$W/.err" >&2; return 1; }
	t1=$(date +%s%N)
	echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1e9}') $(cat "$W/.t")"
}
# best5 OUT CMD...: the fastest of five runs, "SECONDS MAXRSS_KIB". OUT (a path the
# command creates, or -) is removed before each run, outside the timing.
best5() {
	local out=$1 b="" r; shift
	for _ in 1 2 3 4 5; do
		[ "$out" = - ] || rm -rf "$out"
		r=$(tm "$@")
		if [ -z "$b" ] || awk -v a="${r% *}" -v b="${b% *}" 'BEGIN{exit !(a<b)}'; then b=$r; fi
	done
	echo "$b"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b<=0) b=0.0005; printf "%.2f", a/b }'; }
row() { printf '%-34s %10s %10s %s\n' "$@"; }
secs() { echo "${1% *}"; }
mib() { awk -v k="${1#* }" 'BEGIN{printf "%.1f", k/1024}'; }

echo "# imgtool bench ($(date -u +%F), $(nproc) cores, $(uname -r))"

##############################################################################
echo
echo "## 0. Start-up: a command that does almost nothing, against cat of a small file"
# us CMD...: wall microseconds of one run of CMD, output discarded. $EPOCHREALTIME
# is read by bash itself: no date process is timed with the command.
us() {
	local t0=$EPOCHREALTIME t1
	"$@" >/dev/null 2>&1 || true
	t1=$EPOCHREALTIME
	echo $(( ${t1/./} - ${t0/./} ))
}
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# startup N A B: runs A and B N times each, alternating (A B A B ...) so that both
# see the same machine load; prints "median_A median_B" in microseconds.
startup() {
	local n=$1 a=$2 b=$3 i
	: >"$W/a.us"; : >"$W/b.us"
	for ((i = 0; i < n; i++)); do
		us $a >>"$W/a.us"
		us $b >>"$W/b.us"
	done
	echo "$(median <"$W/a.us") $(median <"$W/b.us")"
}
small=fixtures/criu-4.2/counter/inventory.img
row "command (median of 201, paired)" "imgtool ms" "cat ms" "ratio"
for cmd in "--help" "info $small"; do
	read -r ti tc < <(startup 201 "$IMGTOOL $cmd" "cat $small")
	row "imgtool ${cmd%% *}" "$(awk -v u="$ti" 'BEGIN{printf "%.2f", u/1000}')" \
		"$(awk -v u="$tc" 'BEGIN{printf "%.2f", u/1000}')" "$(ratio "$ti" "$tc")x cat (target: under 5 ms)"
done

##############################################################################
echo
echo "## 1. Codec: decode (--pretty) every image of every fixture set, imgtool vs crit"
echo "crit has no whole-set mode: its set time is one crit per image. imgtool is timed both"
echo "ways: one process per image, and the whole set in one run (decode -D)."
need crit criu || echo "(crit unavailable: codec ratios skipped)"
command -v dpkg-query >/dev/null && echo "crit: Debian's criu $(dpkg-query -W -f='${Version}' criu 2>/dev/null || echo '?') (the crit this machine can install)"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.4f", b-a}'; }
row "set" "crit s" "imgtool s" "ratio per image | imgtool -D s  ratio per set"
for set in fixtures/criu-4.2/*/; do
	set=${set%/}; name=$(basename "$set")
	case $name in *.crit) continue ;; esac
	imgs=()
	for f in "$set"/*; do
		case $(basename "$f") in pages-*) continue ;; esac
		imgs+=("$f")
	done
	t0=$(now); for f in "${imgs[@]}"; do "$IMGTOOL" decode -i "$f" --pretty >/dev/null; done; ti=$(since "$t0")
	best=""
	for _ in 1 2 3; do
		rm -rf "$W/json"; t0=$(now); "$IMGTOOL" decode -D "$set" -o "$W/json" --pretty; t=$(since "$t0")
		if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$t; fi
	done
	if command -v crit >/dev/null; then
		t0=$(now); for f in "${imgs[@]}"; do crit decode -i "$f" --pretty >/dev/null 2>&1 || true; done; tc=$(since "$t0")
		row "$name (${#imgs[@]} images)" "$tc" "$ti" "$(ratio "$tc" "$ti")x            | $best  $(ratio "$tc" "$best")x (target >= 20)"
	else
		row "$name (${#imgs[@]} images)" "-" "$ti" "- | $best"
	fi
done

##############################################################################
echo
echo "## 2. A 256 MiB image set (fixtures/src/big.c, dumped by imgtool)"
gcc -O1 -o "$W/big" fixtures/src/big.c
# big runs as this shell's own child (not in a $(...) subshell), so that wait reaps it:
# an orphan would stay a zombie holding its PID, and the restores below need that PID.
# Each gets its own log: a restore checks that the files a process holds are unchanged.
start_big() {
	setsid "$W/big" >"$W/big-$1.log" 2>&1 </dev/null &
	echo $! >"$W/big.pid"
	for _ in $(seq 100); do grep -q alive "$W/big-$1.log" 2>/dev/null && break; sleep 0.05; done
}
"$IMGTOOL" keygen --type p256 --cert "$W/cert.pem" --key "$W/key.pem" >/dev/null
# Two processes, one per dump: each restore below then gets its own free PID (after a
# restore -d the restored process is no longer ours to reap).
# dump_best N SET [FLAGS]: dumps the running big three times with --leave-running, then
# once more for good into SET (which kills it); prints the fastest of the four.
dump_best() {
	local n=$1 set=$2 b r pid
	shift 2
	start_big "$n"
	pid=$(cat "$W/big.pid")
	b=$(best5 "$W/scratch" "$IMGTOOL" dump -t "$pid" -D "$W/scratch" --leave-running --quiet "$@")
	rm -rf "$W/scratch"
	r=$(tm "$IMGTOOL" dump -t "$pid" -D "$set" --quiet "$@")
	wait "$pid" 2>/dev/null || true
	stat -c %s "$W/big-$n.log" >"$W/big-$n.log.size"
	if awk -v a="${r% *}" -v b="${b% *}" 'BEGIN{exit !(a<b)}'; then b=$r; fi
	echo "$b"
}
# Two processes, one per set: each restore below then has its own PID and log.
dump_plain=$(dump_best 1 "$W/set")
dump_enc=$(dump_best 2 "$W/set-e" -e --cert "$W/cert.pem")
pages=$(du -cb "$W"/set/pages-*.img | tail -1 | cut -f1)
echo "set: $(du -sh "$W/set" | cut -f1), pages $((pages >> 20)) MiB in $(ls "$W/set" | wc -l) files"

##############################################################################
echo
echo "## 3. Encryption of the set, against cp -r, age, gpg and openssl (tmpfs, best of 5)"
need age age || true
cp_t=$(best5 "$W/cp.out" cp -r "$W/set" "$W/cp.out"); rm -rf "$W/cp.out"
enc_t=$(best5 "$W/enc" "$IMGTOOL" encrypt -D "$W/set" --cert "$W/cert.pem" -o "$W/enc" --quiet)
dec_t=$(best5 "$W/dec" "$IMGTOOL" decrypt -D "$W/enc" --tls-key "$W/key.pem" -o "$W/dec" --quiet)
ver_t=$(best5 - "$IMGTOOL" verify -D "$W/enc" --tls-key "$W/key.pem" --quiet)
"$IMGTOOL" keygen --type rsa2048 --cert "$W/cert2.pem" --key "$W/key2.pem" >/dev/null
rekey_t=$(tm "$IMGTOOL" rekey -D "$W/enc" --tls-key "$W/key.pem" --cert "$W/cert.pem" --cert "$W/cert2.pem" --quiet)
peer_each() { # peer_each OUTDIR CMD-TEMPLATE: run a per-file tool over the set, as a peer must
	local out=$1; shift; mkdir -p "$out"
	for f in "$W"/set/*; do "$@" "$f" "$out/$(basename "$f")"; done
}
export -f peer_each; export W
age_t="-"; gpg_t="-"; ossl_t="-"
if command -v age >/dev/null; then
	age-keygen -o "$W/age.key" 2>/dev/null
	export AGE_R=$(age-keygen -y "$W/age.key")
	age_one() { age -r "$AGE_R" -o "$2" "$1"; }; export -f age_one
	age_t=$(best5 "$W/age.out" bash -c 'peer_each "$W/age.out" age_one')
fi
if command -v gpg >/dev/null; then
	export GNUPGHOME="$W/gnupg"; mkdir -m 700 -p "$GNUPGHOME"
	gpg --batch --quiet --passphrase '' --quick-gen-key bench@imgtool.invalid default default never 2>/dev/null
	gpg_one() { gpg --batch --quiet --yes --trust-model always -r bench@imgtool.invalid -o "$2" -e "$1"; }; export -f gpg_one
	gpg_t=$(best5 "$W/gpg.out" bash -c 'peer_each "$W/gpg.out" gpg_one')
fi
if command -v openssl >/dev/null; then
	ossl_one() { openssl enc -aes-256-ctr -pbkdf2 -pass pass:bench -in "$1" -out "$2"; }; export -f ossl_one
	ossl_t=$(best5 "$W/ossl.out" bash -c 'peer_each "$W/ossl.out" ossl_one')
fi
printf '%-34s %10s %10s %s\n' "operation" "seconds" "peak MiB" "ratio"
row "cp -r" "$(secs "$cp_t")" "$(mib "$cp_t")" "1.00 (the floor)"
row "imgtool encrypt" "$(secs "$enc_t")" "$(mib "$enc_t")" "$(ratio "$(secs "$enc_t")" "$(secs "$cp_t")")x cp (target <= 1.25)"
row "imgtool decrypt" "$(secs "$dec_t")" "$(mib "$dec_t")" "$(ratio "$(secs "$dec_t")" "$(secs "$cp_t")")x cp (target <= 1.25)"
row "imgtool verify" "$(secs "$ver_t")" "$(mib "$ver_t")" "cp is $(ratio "$(secs "$cp_t")" "$(secs "$ver_t")")x slower (target >= 1.5)"
row "imgtool rekey (add a recipient)" "$(secs "$rekey_t")" "$(mib "$rekey_t")" "(target < 0.050 s)"
[ "$age_t" != "-" ] && row "age -r (per file)" "$(secs "$age_t")" "$(mib "$age_t")" "imgtool encrypt is $(ratio "$(secs "$age_t")" "$(secs "$enc_t")")x faster (target >= 2)"
[ "$gpg_t" != "-" ] && row "gpg -e (per file)" "$(secs "$gpg_t")" "$(mib "$gpg_t")" "imgtool encrypt is $(ratio "$(secs "$gpg_t")" "$(secs "$enc_t")")x faster (target >= 4)"
[ "$ossl_t" != "-" ] && row "openssl enc -aes-256-ctr (per file)" "$(secs "$ossl_t")" "$(mib "$ossl_t")" "imgtool encrypt is $(ratio "$(secs "$ossl_t")" "$(secs "$enc_t")")x faster (no integrity)"

##############################################################################
echo
echo "## 4. Dump and restore of the 256 MiB process (CRIU 4.2 here: dump 0.21 s, restore 0.18 s)"
rate() { awk -v b="$pages" -v s="$1" 'BEGIN{ if (s<=0) s=0.0005; printf "%.2f GiB/s", b/s/1073741824 }'; }
# restore_best SET LOG [KEY]: best of five restores -d of SET. Between runs the restored
# process is killed (and reaped, see the top) and its log cut back to the size the set
# recorded, as a restore checks.
restore_best() {
	local set=$1 log=$2 size b="" r root
	shift 2
	size=$(cat "$log.size")
	for _ in 1 2 3 4 5; do
		truncate -s "$size" "$log"
		r=$(tm "$IMGTOOL" restore -D "$set" -d --pidfile "$W/r.pid" "$@")
		root=$(cat "$W/r.pid"); kill -9 "$root" 2>/dev/null || true
		for _ in $(seq 100); do [ -e "/proc/$root" ] || break; sleep 0.02; done
		if [ -z "$b" ] || awk -v a="${r% *}" -v b="${b% *}" 'BEGIN{exit !(a<b)}'; then b=$r; fi
	done
	echo "$b"
}
rest_t=$(restore_best "$W/set" "$W/big-1.log")
rest_e=$(restore_best "$W/set-e" "$W/big-2.log" --tls-key "$W/key.pem")
row "operation" "seconds" "peak MiB" "rate"
row "imgtool dump (best of 6)" "$(secs "$dump_plain")" "$(mib "$dump_plain")" "$(rate "$(secs "$dump_plain")") (CRIU: 1.2 GiB/s)"
row "imgtool dump -e (best of 6)" "$(secs "$dump_enc")" "$(mib "$dump_enc")" "$(rate "$(secs "$dump_enc")"), $(ratio "$(secs "$dump_enc")" "$(secs "$dump_plain")")x plain (target <= 1.15)"
row "imgtool restore (best of 5)" "$(secs "$rest_t")" "$(mib "$rest_t")" "$(rate "$(secs "$rest_t")") (CRIU: 1.4 GiB/s)"
row "imgtool restore, encrypted (best of 5)" "$(secs "$rest_e")" "$(mib "$rest_e")" "$(rate "$(secs "$rest_e")"), $(ratio "$(secs "$rest_e")" "$(secs "$rest_t")")x plain (target <= 1.15)"

##############################################################################
echo
echo "## 5. Constant memory on pages: peak RSS reading an 8 MiB and a 256 MiB set"
small=fixtures/criu-4.2/counter
for cmd in "x %s rss" "inspect %s"; do
	a=$(tm "$IMGTOOL" $(printf "$cmd" "$small")); b=$(tm "$IMGTOOL" $(printf "$cmd" "$W/set"))
	row "imgtool $(printf "$cmd" SET)" "$(mib "$a")" "$(mib "$b")" "MiB (8 MiB set, 256 MiB set)"
done
a=$(tm "$IMGTOOL" verify -D "$W/enc" --tls-key "$W/key.pem" --quiet)
row "imgtool verify (256 MiB)" "$(mib "$a")" "" "MiB peak (target < 64)"
