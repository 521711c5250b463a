#!/usr/bin/env bash
# make bench: imgtool's speed and memory as ratios against the peers run in the same
# command, on the same data: crit (codec), cp/age/gpg/openssl (encryption), and CRIU
# itself (dump/restore) when IMGTOOL_CRIU names a CRIU binary; without one the CRIU
# columns say they were not measured. Every comparison is paired (A B A B ...) so that
# drift hits both sides, and reported as the median with min-max. Nothing here asserts a
# time; it prints what it measured. Work happens in tmpfs (/dev/shm): CPU, not disk.
set -euo pipefail
# Be a child subreaper (PR_SET_CHILD_SUBREAPER, 36; kept across exec), so that the
# processes restore -d leaves behind are reparented to this shell, which reaps them
# when they are killed: their PIDs are then free for the next restore.
if [ -z "${IMGTOOL_BENCH_REAPER:-}" ] && command -v python3 >/dev/null; then
	export IMGTOOL_BENCH_REAPER=1
	exec python3 -c 'import ctypes, os, sys; ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); os.execvp("bash", ["bash"] + sys.argv[1:])' "$0" "$@"
fi
# What this shell inherited beyond 0, 1 and 2 (a terminal multiplexer's or make's pipes)
# is closed: the targets would inherit it, and a dump refuses a pipe held outside its tree.
for fd in $(ls /proc/$$/fd); do
	if [ "$fd" -gt 2 ] && [ "$fd" != 255 ]; then { eval "exec $fd>&-"; } 2>/dev/null || true; fi
done
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
# run1 OUT FILE CMD...: one timed run of CMD appended to FILE ("SECONDS MAXRSS_KIB");
# OUT (a path the command creates, or -) is removed first, outside the timing.
run1() {
	local out=$1 f=$2; shift 2
	[ "$out" = - ] || rm -rf "$out"
	tm "$@" >>"$f"
}
# med FILE: "MEDIAN MAXRSS_KIB" of the runs in FILE; span FILE: "min-max" seconds.
med() { sort -n "$1" | awk '{t[NR]=$1; if ($2>m) m=$2} END{printf "%.3f %d", t[int((NR+1)/2)], m}'; }
span() { sort -n "$1" | awk '{t[NR]=$1} END{printf "%.3f-%.3f", t[1], t[NR]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b<=0) b=0.0005; printf "%.2f", a/b }'; }
row() { printf '%-34s %10s %10s %s\n' "$@"; }
secs() { echo "${1% *}"; }
mib() { awk -v k="${1#* }" 'BEGIN{printf "%.1f", k/1024}'; }


##############################################################################
# 7. Scaling: where a dump's and a restore's cost grows with the number of threads,
# processes and mappings (issue 13). scripts/bench/scale.c makes each target; one running
# copy is dumped by every tool in turn (--leave-running), then the copy is killed and the
# sets are restored in turn (restore -d), each restored tree killed and its PIDs waited
# free before the next. IMGTOOL_BENCH_BASE may name a second imgtool binary (e.g. the
# merge base), timed in the same alternation, so that a change is measured as old/new in
# one command. BENCH_ONLY=scaling runs only this section; BENCH_SCALE_ROUNDS (5) rounds.
# Each kind is measured at a quarter, a half and all of its size (memory at 256 MiB, 1 GiB
# and 4 GiB), and the section ends with a table of time against size for each kind: each
# tool's medians, their ratio at every size, and imgtool's cost per unit of size, which
# stays flat where the cost grows linearly (a smaller target pays the same fixed costs,
# start-up and the helper, over fewer units).
#
# Where the time goes (IMGTOOL_PHASES=1, ms, two runs each, 2 cores, 2026-12-02 12:00):
#   1,000 threads, dump (~200-230): the running tree checked 44-52 (every thread's status
#     and children, 2,000 mappings), seized 23-26 (all asked to stop, then waited for),
#     the stopped tree's /proc 30-40 (each thread's status lines, name, robust list,
#     scheduling, on both cores), registers and injected calls 47-54 (a dozen ptrace
#     requests a thread, ~2.5 µs each on this VM; the live batches all launched, then
#     waited for), 1,000 core images written 52-68 (protobuf and a file each, on both
#     cores), resumed or killed 22-24. The bound is those ~20 system calls a thread;
#     CRIU's parasite makes as many.
#   1,000 threads, restore (~125-130): 1,000 core images read 30-36 (protobuf decoding,
#     ~25 µs a thread's core: its FPU state is 360 unpacked words, which a hand decoder
#     did not beat), 2,000 mappings 11, the threads 49-51 (cloned 383 a batch, then their
#     own calls 106 threads at a time), registers set 12 (4 ptrace requests each, the
#     XSAVE state built in one buffer). The credentials every thread inherited are read
#     once, not from each thread's status (that was a fifth of the restore).
#   200 processes, dump (~400): the running tree checked 77-89 (each process's /proc once:
#     stat, status, fds, threads, maps; then kcmp, terminals, copy-on-write pages, fd
#     owners, sockets, locks and deleted files across the tree from what was read, those
#     checks on both cores at once: the price of refusing before anything is touched,
#     which CRIU does not pay), seized 13, the stopped tree's /proc 69-72 (its fds and
#     /proc/locks too, once: the locks held, the terminal check and the file numbering
#     take them from there), checked again 8-9 (kcmp), injected calls 89-95 (six ptrace
#     stops a process: the scratch mapping made and removed, one batch), files 7-11,
#     pages scanned and copy-on-write planned 19-21, images and pages written 67-69
#     (several processes' pages files at once; imgset makes files outside its lock).
#   200 processes, restore (~160-200 at 12:00; ~180-210 in the noisier hours after, with
#     the changes below): images read 37-45 (1,400 files; a leader's core decodes in
#     ~135 µs: its 64 signal actions and 16 limits are a message each, every field a
#     pointer, and the heap that keeps them is marked again at each collection: GOGC 200
#     took a tenth off the CPU), processes made 60-70 (siblings cloned by their parent in
#     one batch, where each clone3 was a batch of its own; their inherited mappings read
#     once, 15 -> 7 ms; the pages compared with the parent's to keep them shared ~25: 14
#     reads of /proc/PID/mem a child, 6 ms, and the few pages a child changed, written),
#     their state 41-50 (three batches a process where there were six: the fds, the slots
#     closed and the leader's own calls joined the batch of its mm fields; every
#     process's first and last batch started before any is waited for, 55 -> 46 and
#     54 -> 47 ms; the scratch area's unmap is still two stops a process, its code being
#     in it).
#   20,000 mappings, dump (~210-240): the running tree checked 36-39 (maps; a mapping is
#     named only when refused), the stopped tree's smaps 57-61 (the kernel walking every
#     mapping: the bound, which CRIU pays once too), pagemap 7-9, images and the 80 MB of
#     pages 47-50.
#   20,000 mappings, restore (~130-145): images read 21-24 (protobuf), the mmap batches
#     ~40 (the kernel's own cost, ~2 µs a mapping), pages ~50: half of them in read-only
#     mappings, written a page at a time through /proc/PID/mem (the rest of their run
#     through process_vm_writev); mapping those writable and mprotecting them after, as
#     CRIU does, merged the neighbours and cost as much in splits (~5 µs a mprotect).
#     Decoding the 20,000 vma entries on both cores (each with proto.Unmarshal) was
#     slower than one proto.Unmarshal of the whole entry (15 ms against 13): protobuf
#     decoding here is bound by allocation, which two cores share. Placing these pages
#     with UFFDIO_COPY (no /proc/PID/mem for the read-only ones) was slower, 180 ms
#     against 156: registering 20,000 mappings with the userfaultfd and unregistering
#     them is serial, ~10 ms, and one ioctl a page costs what the writes did; a mapping
#     part is registered only when it receives 64 KiB of pages or more. Writing the
#     pages while the mmap batches still run (each 1 MiB unit once its mappings were
#     made, 2026-12-02 15:50) was slower, 140 -> 250 ms (medians of 9 paired runs): every
#     process_vm_writev and /proc/PID/mem write takes the process's mmap lock to read,
#     every mmap to write, and the two sides wait on each other a call at a time. Measured
#     apart (C, 10,000 one-page mappings): a page written by process_vm_writev costs
#     2.8-4 us (the fault, the zeroing, the copy), one through /proc/PID/mem 4.5-5.8 us,
#     an mmap ~2.2 us; the restore spends ~0.12 CPU-s on them, on two cores ~60 ms, and
#     the images and the helper ~20 ms more: ~0.5x CRIU's ~0.17 s is the bound on this VM.
#   4 GiB: the pages, as for 256 MiB (dump ~2.1 GiB/s, restore through UFFDIO_COPY).
scaling() {
	local rounds=${BENCH_SCALE_ROUNDS:-5} CRIU=${IMGTOOL_CRIU:-} BASE=${IMGTOOL_BENCH_BASE:-}
	echo
	echo "## 7. Scaling: 250-1,000 threads, 50-200 processes, 5,000-20,000 mappings, 256 MiB-4 GiB; imgtool against"
	echo "##    CRIU when IMGTOOL_CRIU names it ($rounds rounds, the tools alternating; median and min-max)"
	if [ -n "$CRIU" ] && ! "$CRIU" --version >/dev/null 2>&1; then
		echo "IMGTOOL_CRIU=$CRIU does not run: CRIU not measured"; CRIU=""
	fi
	[ -n "$CRIU" ] && echo "CRIU: $("$CRIU" --version | head -1) ($CRIU)"
	[ -z "$CRIU" ] && echo "CRIU: not measured (set IMGTOOL_CRIU to a CRIU 4.2 binary to compare)"
	[ -n "$BASE" ] && echo "base imgtool: $BASE ($("$BASE" --version 2>/dev/null | head -1))"
	gcc -O1 -pthread -o "$W/scale" scripts/bench/scale.c
	local tools=(imgtool) t
	[ -n "$BASE" ] && tools+=(base)
	[ -n "$CRIU" ] && tools+=(criu)
	# sdump TOOL PID SET RUNS / srestore TOOL SET RUNS: one timed dump or restore -d.
	sdump() {
		rm -rf "$3"; mkdir -p "$3"
		case $1 in
		criu) run1 - "$4" "$CRIU" dump -t "$2" -D "$3" --leave-running -o dump.log ||
			{ grep -E "Error" "$3/dump.log" >&2; return 1; } ;;
		base) run1 - "$4" "$BASE" dump -t "$2" -D "$3" --leave-running --quiet ;;
		*) run1 - "$4" "$IMGTOOL" dump -t "$2" -D "$3" --leave-running --quiet ;;
		esac
	}
	srestore() {
		rm -f "$W/r.pid"
		case $1 in
		criu) run1 - "$3" "$CRIU" restore -D "$2" -d --pidfile "$W/r.pid" -o restore.log ||
			{ grep -E "Error" "$2/restore.log" >&2; return 1; } ;;
		base) run1 - "$3" "$BASE" restore -D "$2" -d --pidfile "$W/r.pid" ;;
		*) run1 - "$3" "$IMGTOOL" restore -D "$2" -d --pidfile "$W/r.pid" ;;
		esac
		local root; root=$(cat "$W/r.pid")
		kill -9 -- "-$root" 2>/dev/null || kill -9 "$root" 2>/dev/null || true
		sgone
	}
	# sgone: waits until every PID of the target's tree (scale.pids) is free again.
	sgone() {
		local p
		for _ in $(seq 500); do
			for p in $(cat "$W/scale.pids"); do [ -e "/proc/$p" ] && break; p=; done
			[ -z "$p" ] && return 0
			sleep 0.01
		done
		echo "scaling: PID $p still in use" >&2; return 1
	}
	# sstart KIND N: starts the target as a session leader, waits for it to be ready,
	# records the PIDs of its tree.
	sstart() {
		rm -f "$W/scale.ready"
		setsid "$W/scale" "$1" "$2" "$W/scale.ready" </dev/null >/dev/null 2>&1 &
		echo $! >"$W/scale.pid"
		for _ in $(seq 600); do [ -e "$W/scale.ready" ] && break; sleep 0.05; done
		[ -e "$W/scale.ready" ] || { echo "scaling: $1 $2 did not start" >&2; return 1; }
		pgrep -s "$(cat "$W/scale.pid")" >"$W/scale.pids"
	}
	# scase LABEL KIND N: the whole comparison for one target.
	scase() {
		local label=$1 round pid imed
		rm -f "$W"/sc-*.runs
		sstart "$2" "$3"; pid=$(cat "$W/scale.pid")
		for ((round = 0; round < rounds; round++)); do
			for t in "${tools[@]}"; do sdump "$t" "$pid" "$W/sc-$t" "$W/sc-d-$t.runs"; done
		done
		kill -9 -- "-$pid"; wait "$pid" 2>/dev/null || true; sgone
		for ((round = 0; round < rounds; round++)); do
			for t in "${tools[@]}"; do srestore "$t" "$W/sc-$t" "$W/sc-r-$t.runs"; done
		done
		echo "### $label"
		row "operation" "median s" "peak MiB" "min-max s  ratio"
		for op in d r; do
			local name=dump; [ $op = r ] && name=restore
			imed=$(secs "$(med "$W/sc-$op-imgtool.runs")")
			show "imgtool $name" "$W/sc-$op-imgtool.runs" ""
			[ -n "$BASE" ] && show "base imgtool $name" "$W/sc-$op-base.runs" \
				"imgtool takes $(ratio "$imed" "$(secs "$(med "$W/sc-$op-base.runs")")")x base's time"
			if [ -n "$CRIU" ]; then
				local goal="<= 0.8"; [ $op = r ] && goal="<= 0.5"
				show "CRIU $name" "$W/sc-$op-criu.runs" \
					"imgtool takes $(ratio "$imed" "$(secs "$(med "$W/sc-$op-criu.runs")")")x CRIU's time (goal $goal)${BASE:+, base $(ratio "$(secs "$(med "$W/sc-$op-base.runs")")" "$(secs "$(med "$W/sc-$op-criu.runs")")")x}"
			else
				row "CRIU $name" "-" "-" "not measured"
			fi
		done
		# The medians, for the table of time against size (ssizes).
		echo "$3 $(secs "$(med "$W/sc-d-imgtool.runs")") $(secs "$(med "$W/sc-r-imgtool.runs")")" \
			"${CRIU:+$(secs "$(med "$W/sc-d-criu.runs")") $(secs "$(med "$W/sc-r-criu.runs")")}" >>"$W/sizes-$2"
		rm -rf "$W"/sc-*/
	}
	# ssizes KIND UNIT PER: time against size, from every scase of KIND: each tool's median
	# dump and restore, imgtool's over CRIU's, and imgtool's cost per PER units of size,
	# which stays flat (or falls) where the cost grows linearly.
	ssizes() {
		echo "### $1: time against size (the medians above)"
		printf '%-8s %9s %9s %6s %9s %9s %6s  %s\n' "$2" "dump s" "CRIU s" "ratio" "restore s" "CRIU s" "ratio" "imgtool ms per $3 $2 (dump, restore)"
		sort -n "$W/sizes-$1" | while read -r n id ir cd cr; do
			printf '%-8s %9s %9s %6s %9s %9s %6s  %s\n' "$n" "$id" "${cd:--}" "$([ -n "$cd" ] && ratio "$id" "$cd" || echo -)" \
				"$ir" "${cr:--}" "$([ -n "$cr" ] && ratio "$ir" "$cr" || echo -)" \
				"$(awk -v n="$n" -v d="$id" -v r="$ir" -v p="$3" 'BEGIN{printf "%.1f, %.1f", d*1000*p/n, r*1000*p/n}')"
		done
	}
	rm -f "$W"/sizes-*
	# Each target at a quarter, a half and the whole of its size, so that the cost is
	# seen to grow linearly with it, for both tools.
	scase "250 sleeping threads (one process)" threads 250
	scase "500 sleeping threads (one process)" threads 500
	scase "1,000 sleeping threads (one process)" threads 1000
	scase "a 50-process tree (a parent and 49 sleeping children)" tree 50
	scase "a 100-process tree (a parent and 99 sleeping children)" tree 100
	scase "a 200-process tree (a parent and 199 sleeping children)" tree 200
	scase "5,000 private anonymous mappings, each touched" maps 5000
	scase "10,000 private anonymous mappings, each touched" maps 10000
	scase "20,000 private anonymous mappings, each touched" maps 20000
	scase "a 256 MiB process (every page different)" big 256
	scase "a 1 GiB process (every page different)" big 1024
	# 4 GiB: each set is 4 GiB of tmpfs, and the process 4 GiB more; only with room to
	# spare for the machine's other users (three sets and the process: 16 GiB available).
	local avail; avail=$(awk '/MemAvailable/{print int($2/1048576)}' /proc/meminfo)
	if [ "${BENCH_SCALE_4G:-1}" = 0 ]; then
		echo "### 4 GiB process: skipped (BENCH_SCALE_4G=0)"
	elif [ "$avail" -lt $((4 * (${#tools[@]} + 1) + 4)) ]; then
		echo "### 4 GiB process: skipped (${avail} GiB available, $((4 * (${#tools[@]} + 1) + 4)) needed)"
	else
		scase "a 4 GiB process (every page different)" big 4096
	fi
	ssizes threads threads 1000
	ssizes tree processes 100
	ssizes maps mappings 10000
	ssizes big MiB 1024
}

# big runs as this shell's own child (not in a $(...) subshell), so that wait reaps it:
# an orphan would stay a zombie holding its PID, and the restores below need that PID.
# Each gets its own log: a restore checks that the files a process holds are unchanged.
start_big() {
	setsid "$W/big" >"$W/big-$1.log" 2>&1 </dev/null &
	echo $! >"$W/big.pid"
	for _ in $(seq 100); do grep -q alive "$W/big-$1.log" 2>/dev/null && break; sleep 0.05; done
}

##############################################################################
# 6. CRIU's image streamer (issue: criu dump --stream + stream capture -e within 1.3x of a
# plain criu dump to tmpfs; capture at 1 GiB/s or more on big's 256 MiB). One running big
# is dumped in turn by a plain criu dump and by criu dump --stream into four streamers:
#   null (splice)  scripts/bench/nullstreamer.c, which splices every pipe into /dev/null:
#                  CRIU's stream mode itself, with a streamer that costs nothing;
#   null (read)    the same, reading every pipe into memory: the one copy out of the
#                  pipe that any streamer which looks at the bytes (to encrypt) makes;
#   capture        imgtool stream capture, a plaintext set (the pipes spliced into it);
#   capture -e     the same, encrypted as it arrives.
# Each is timed from the streamer's start to its exit (it listens, says "ready" on a
# FIFO, CRIU dumps into it, it commits); the "rate" is the largest file's (the pages),
# from its pipe to its end, as the streamer itself measured it. IMGTOOL_BENCH_BASE adds
# a base imgtool's capture -e to the alternation; BENCH_ONLY=stream runs this section
# alone, BENCH_STREAM_ROUNDS (5) rounds.
#
# Where the time goes (one run, 2 cores, tmpfs, 11 rounds; medians):
#   criu dump (tmpfs)              0.221 s  CRIU copies the 256 MiB into tmpfs itself, in
#                                           its own thread, after the parasite gave them
#   null streamer (splice)         0.091 s  0.41x: CRIU's stream mode is cheaper than its
#                                           plain dump, not dearer: it splices the pages
#                                           into the streamer's pipe, pipe to pipe, which
#                                           moves page references (9.6 GiB/s); nothing of
#                                           CRIU's own bounds the 1.3x goal
#   null streamer (read)           0.145 s  0.66x: one copy out of the pipe (3.2 GiB/s)
#   capture (plaintext)            0.225 s  1.02x: spliced into tmpfs (1.6 GiB/s), the
#                                           copy CRIU's own dump makes, on the other core
#   capture -e                     0.274 s  1.24x, 1.22 GiB/s (the previous capture, as
#                                           IMGTOOL_BENCH_BASE in the same run: 0.345 s, 1.56x)
# capture -e spends about 0.37 CPU-s per 256 MiB (perf): 40% writing tmpfs (half of it
# allocating pages, then the copy; one writer per file, since the kernel serialises writes
# to an inode), 26% AES-256-GCM (Go's AES-NI code, ~2.7 GB/s a core; no VAES), 22% the
# copy out of the pipe (and releasing its pages), the rest wake-ups and scheduling; CRIU
# and its parasite another ~0.06 s. That is ~0.43 CPU-s on two cores: the pages take ~0.21
# s, which is what the rate shows, so both cores are full and CPU is the bound, not
# waiting: what is left is the tmpfs write, the AES and the one copy. The previous capture
# read and sealed in turns (a 4 MiB block read, then sealed on both cores): one core idle
# half the time, the pipe standing full, CRIU waiting on it (cipher/readfrom.go).
streaming() {
	local rounds=${BENCH_STREAM_ROUNDS:-5} kind round BASE=${IMGTOOL_BENCH_BASE:-}
	local kinds=(null-splice null-read capture capture-e)
	[ -n "$BASE" ] && kinds+=(base-capture-e)
	echo
	echo "## 6. CRIU's image streamer: criu dump --stream into imgtool stream capture, against a plain"
	echo "##    criu dump to tmpfs and a null streamer ($rounds rounds, paired; median and min-max)"
	gcc -O2 -pthread -o "$W/nullstreamer" scripts/bench/nullstreamer.c
	start_big 6
	local pid; pid=$(cat "$W/big.pid")
	# fresh KIND: an empty folder for CRIU, no set, and the FIFO the streamer says ready on
	# (outside the timing: removing the last round's 256 MiB set takes tens of ms).
	fresh() { rm -rf "$W/s-$1" "$W/s-$1.set" "$W/s-$1.ready"; mkdir -p "$W/s-$1"; mkfifo "$W/s-$1.ready"; }
	# streamed KIND: one streamed dump into the streamer KIND, which appends its rate line
	# to $W/rate-KIND; CRIU starts once the streamer said ready (no polling in the timing).
	# plain: the plain dump, through bash -c too, so that every row pays the same start.
	streamed() {
		local kind=$1 dir=$W/s-$1 set=$W/s-$1.set s
		case $kind in
		plain) exec "$CRIU" dump -t "$pid" -D "$dir" --leave-running -o dump.log ;;
		null-splice) "$W/nullstreamer" "$dir" splice 3>"$dir.ready" >>"$W/rate-$kind" & ;;
		null-read) "$W/nullstreamer" "$dir" read 3>"$dir.ready" >>"$W/rate-$kind" & ;;
		capture) "$IMGTOOL" stream capture -D "$dir" -o "$set" --ready-fd 3 3>"$dir.ready" >>"$W/rate-$kind" & ;;
		capture-e) "$IMGTOOL" stream capture -D "$dir" -o "$set" -e --cert "$W/cert.pem" --ready-fd 3 \
			3>"$dir.ready" >>"$W/rate-$kind" & ;;
		base-capture-e) "$BASE" stream capture -D "$dir" -o "$set" -e --cert "$W/cert.pem" --ready-fd 3 \
			3>"$dir.ready" >>"$W/rate-$kind" & ;;
		esac
		s=$!
		read -r -t 20 _ <"$dir.ready" || { kill "$s"; return 1; }
		"$CRIU" dump --stream -t "$pid" -D "$dir" --leave-running -o dump.log || { kill "$s"; wait "$s"; return 1; }
		wait "$s"
	}
	export -f streamed; export IMGTOOL CRIU W pid BASE
	rm -f "$W"/s-*.runs "$W"/rate-*
	for ((round = 0; round < rounds; round++)); do
		for kind in plain "${kinds[@]}"; do
			fresh "$kind"
			run1 - "$W/s-$kind.runs" bash -c 'streamed "$0"' "$kind"
		done
	done
	kill -9 "$pid"; wait "$pid" 2>/dev/null || true
	local plain; plain=$(secs "$(med "$W/s-plain.runs")")
	# rate KIND: the median of the streamer's rates on the largest file.
	rate_of() { grep -o '[0-9.]* GiB/s' "$W/rate-$1" | sort -n | awk '{a[NR]=$1} END{printf "%.2f GiB/s", a[int((NR+1)/2)]}'; }
	rel() { echo "$(ratio "$(secs "$(med "$W/s-$1.runs")")" "$plain")x plain criu dump, rate $(rate_of "$1")"; }
	row "operation" "median s" "peak MiB" "min-max s  ratio, rate of the pages"
	show "criu dump (tmpfs)" "$W/s-plain.runs" "1.00"
	show "--stream, null streamer (splice)" "$W/s-null-splice.runs" "$(rel null-splice): CRIU's stream mode, the floor"
	show "--stream, null streamer (read)" "$W/s-null-read.runs" "$(rel null-read): + one copy out of the pipe"
	show "--stream + capture (plaintext)" "$W/s-capture.runs" "$(rel capture)"
	show "--stream + capture -e" "$W/s-capture-e.runs" "$(rel capture-e) (target <= 1.3x, >= 1 GiB/s)"
	if [ -n "$BASE" ]; then # (an if: a false && as the last command would end the bench under set -e)
		show "--stream + base capture -e" "$W/s-base-capture-e.runs" \
			"$(ratio "$(secs "$(med "$W/s-base-capture-e.runs")")" "$plain")x plain criu dump (IMGTOOL_BENCH_BASE)"
	fi
}

echo "# imgtool bench ($(date -u +%F), $(nproc) cores, $(uname -r))"
show() { # show LABEL RUNS COMMENT
	row "$1" "$(secs "$(med "$2")")" "$(mib "$(med "$2")")" "$(span "$2")  $3"
}
if [ "${BENCH_ONLY:-}" = scaling ]; then
	scaling
	exit 0
fi
if [ "${BENCH_ONLY:-}" = stream ]; then
	# Section 6 alone: it needs big, a recipient's certificate and CRIU.
	CRIU=${IMGTOOL_CRIU:-}
	[ -n "$CRIU" ] && "$CRIU" --version >/dev/null 2>&1 || { echo "BENCH_ONLY=stream needs IMGTOOL_CRIU (a CRIU 4.2 binary)" >&2; exit 1; }
	gcc -O1 -o "$W/big" fixtures/src/big.c
	"$IMGTOOL" keygen --type p256 --cert "$W/cert.pem" --key "$W/key.pem" >/dev/null
	streaming
	exit 0
fi

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
echo "3 rounds per set, the three ways alternating; medians."
row "set" "crit s" "imgtool s" "ratio per image | imgtool -D s  ratio per set"
for set in fixtures/criu-4.2/*/; do
	set=${set%/}; name=$(basename "$set")
	case $name in *.crit) continue ;; esac
	imgs=()
	for f in "$set"/*; do
		case $(basename "$f") in pages-*) continue ;; esac
		imgs+=("$f")
	done
	rm -f "$W"/codec-*.runs
	for round in 1 2 3; do
		run1 - "$W/codec-each.runs" bash -c 'for f in "${@:2}"; do "$1" decode -i "$f" --pretty >/dev/null; done' _ "$IMGTOOL" "${imgs[@]}"
		run1 "$W/json" "$W/codec-set.runs" "$IMGTOOL" decode -D "$set" -o "$W/json" --pretty
		command -v crit >/dev/null &&
			run1 - "$W/codec-crit.runs" bash -c 'for f in "$@"; do crit decode -i "$f" --pretty >/dev/null 2>&1 || true; done' _ "${imgs[@]}"
	done
	ti=$(secs "$(med "$W/codec-each.runs")"); ts=$(secs "$(med "$W/codec-set.runs")")
	if [ -s "$W/codec-crit.runs" ]; then
		tc=$(secs "$(med "$W/codec-crit.runs")")
		row "$name (${#imgs[@]} images)" "$tc" "$ti" "$(ratio "$tc" "$ti")x            | $ts  $(ratio "$tc" "$ts")x"
	else
		row "$name (${#imgs[@]} images)" "-" "$ti" "- | $ts"
	fi
done

##############################################################################
echo
echo "## 2. A 256 MiB image set (fixtures/src/big.c, dumped by imgtool)"
gcc -O1 -o "$W/big" fixtures/src/big.c
"$IMGTOOL" keygen --type p256 --cert "$W/cert.pem" --key "$W/key.pem" >/dev/null
start_big 1
pid=$(cat "$W/big.pid")
"$IMGTOOL" dump -t "$pid" -D "$W/set" --quiet
wait "$pid" 2>/dev/null || true
pages=$(du -cb "$W"/set/pages-*.img | tail -1 | cut -f1)
echo "set: $(du -sh "$W/set" | cut -f1), pages $((pages >> 20)) MiB in $(ls "$W/set" | wc -l) files"

##############################################################################
# 3. Encryption. Where the time goes (perf stat's task-clock over every thread, 3 runs,
# 2 cores, tmpfs, 2026-12-02): cp -r of the 257 MiB set spends 0.13-0.16 CPU-s on one
# core (read from the page cache, tmpfs allocating its pages, the copy in), and its wall
# time is that. imgtool encrypt spends 0.29-0.30 CPU-s: the same reading and writing plus
# AES-256-GCM of every byte (Go's AES-NI code, 2.7-3.1 GB/s a core: Go does not use this
# Xeon's VAES) and the chunks' framing; on two cores that is 0.145-0.15 s at best, and it
# takes 0.17-0.18 s, within 15% of that bound. The ratio to cp is bounded by cp's own
# floor plus the AES spread over both cores (~0.043 s for 256 MiB): 1.15x when cp takes
# 0.156 s, 1.37x when it takes 0.117 s, as it did in a calm hour (13:43 UTC: encrypt 0.152
# s, 1.30x; decrypt 0.161 s, 1.38x). decrypt is the same work backwards
# (0.31 CPU-s, 0.18 s); verify reads and authenticates, writing nothing (0.10 CPU-s,
# 0.075 s, 0.5x cp); rekey rewrites the header only.
echo
echo "## 3. Encryption of the set, against cp -r, age, gpg and openssl (tmpfs; 5 rounds,"
echo "##    each round runs every tool once in turn; median and min-max of the 5)"
need age age || true
"$IMGTOOL" keygen --type rsa2048 --cert "$W/cert2.pem" --key "$W/key2.pem" >/dev/null
fp2=$(openssl x509 -in "$W/cert2.pem" -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)
peer_each() { # peer_each OUTDIR CMD-TEMPLATE: run a per-file tool over the set, as a peer must
	local out=$1; shift; mkdir -p "$out"
	for f in "$W"/set/*; do "$@" "$f" "$out/$(basename "$f")"; done
}
export -f peer_each; export W
if command -v age >/dev/null; then
	age-keygen -o "$W/age.key" 2>/dev/null
	export AGE_R=$(age-keygen -y "$W/age.key")
	age_one() { age -r "$AGE_R" -o "$2" "$1"; }; export -f age_one
fi
if command -v gpg >/dev/null; then
	export GNUPGHOME="$W/gnupg"; mkdir -m 700 -p "$GNUPGHOME"
	gpg --batch --quiet --passphrase '' --quick-gen-key bench@imgtool.invalid default default never 2>/dev/null
	gpg_one() { gpg --batch --quiet --yes --trust-model always -r bench@imgtool.invalid -o "$2" -e "$1"; }; export -f gpg_one
fi
ossl_one() { openssl enc -aes-256-ctr -pbkdf2 -pass pass:bench -in "$1" -out "$2"; }; export -f ossl_one
rm -f "$W"/*.runs
"$IMGTOOL" encrypt -D "$W/set" --cert "$W/cert.pem" -o "$W/enc" --quiet
# A signing identity, and a signed copy of the set for the signature's rows.
"$IMGTOOL" keygen --usage sign --cert "$W/sign.pem" --key "$W/sign.key" >/dev/null
SIGN=(--sign-key "$W/sign.key" --sign-cert "$W/sign.pem")
"$IMGTOOL" encrypt -D "$W/set" --cert "$W/cert.pem" -o "$W/encsig" --quiet "${SIGN[@]}"
for round in 1 2 3 4 5; do
	run1 "$W/cp.out" "$W/cp.runs" cp -r "$W/set" "$W/cp.out"
	run1 "$W/enc.out" "$W/enc.runs" "$IMGTOOL" encrypt -D "$W/set" --cert "$W/cert.pem" -o "$W/enc.out" --quiet
	run1 "$W/enc.out" "$W/encs.runs" "$IMGTOOL" encrypt -D "$W/set" --cert "$W/cert.pem" -o "$W/enc.out" --quiet "${SIGN[@]}"
	run1 "$W/dec.out" "$W/dec.runs" "$IMGTOOL" decrypt -D "$W/enc" --tls-key "$W/key.pem" -o "$W/dec.out" --quiet
	run1 - "$W/ver.runs" "$IMGTOOL" verify -D "$W/encsig" --tls-key "$W/key.pem" --quiet
	run1 - "$W/vers.runs" "$IMGTOOL" verify -D "$W/encsig" --tls-key "$W/key.pem" --trust "$W/sign.pem" --quiet
	# rekey: add a second recipient, then remove it (both header-only), timed each.
	run1 - "$W/rekey.runs" "$IMGTOOL" rekey -D "$W/enc" --tls-key "$W/key.pem" --cert "$W/cert2.pem" --quiet
	run1 - "$W/rekey.runs" "$IMGTOOL" rekey -D "$W/enc" --tls-key "$W/key.pem" --remove "$fp2" --quiet
	command -v age >/dev/null && run1 "$W/age.out" "$W/age.runs" bash -c 'peer_each "$W/age.out" age_one'
	command -v gpg >/dev/null && run1 "$W/gpg.out" "$W/gpg.runs" bash -c 'peer_each "$W/gpg.out" gpg_one'
	command -v openssl >/dev/null && run1 "$W/ossl.out" "$W/ossl.runs" bash -c 'peer_each "$W/ossl.out" ossl_one'
done
cp_m=$(med "$W/cp.runs")
printf '%-34s %10s %10s %s\n' "operation" "median s" "peak MiB" "min-max s  ratio"
show "cp -r" "$W/cp.runs" "1.00 (the floor)"
show "imgtool encrypt" "$W/enc.runs" "$(ratio "$(secs "$(med "$W/enc.runs")")" "$(secs "$cp_m")")x cp (target <= 1.15)"
show "imgtool decrypt" "$W/dec.runs" "$(ratio "$(secs "$(med "$W/dec.runs")")" "$(secs "$cp_m")")x cp (target <= 1.15)"
show "imgtool verify" "$W/ver.runs" "$(ratio "$(secs "$(med "$W/ver.runs")")" "$(secs "$cp_m")")x cp (target <= 0.6)"
# signed: what a signature adds to the same command (goal: < 5%; its floor is one
# SHA-256 of every stored byte, docs/format.md part 5, Cost)
show "imgtool encrypt --sign-key" "$W/encs.runs" "$(ratio "$(secs "$(med "$W/encs.runs")")" "$(secs "$(med "$W/enc.runs")")")x encrypt (goal < 1.05)"
show "imgtool verify --trust" "$W/vers.runs" "$(ratio "$(secs "$(med "$W/vers.runs")")" "$(secs "$(med "$W/ver.runs")")")x verify (goal < 1.05)"
show "imgtool rekey (add or remove one)" "$W/rekey.runs" "(target < 0.020 s)"
for peer in age gpg ossl; do
	[ -s "$W/$peer.runs" ] || continue
	show "$peer (per file)" "$W/$peer.runs" "imgtool encrypt is $(ratio "$(secs "$(med "$W/$peer.runs")")" "$(secs "$(med "$W/enc.runs")")")x faster"
done

##############################################################################
# 4. Dump and restore of the 256 MiB process. Where the time goes (IMGTOOL_PHASES=1 for
# the phases, perf stat's task-clock for the CPU; 2 cores, tmpfs, 2026-12-02):
#   dump     0.15-0.19 s, 0.21-0.28 CPU-s. 5-15 ms are the first read of /proc/locks,
#            which waits for an RCU grace period (the kernel takes its lock list's percpu
#            rwsem for writing; a second read within ~20 ms is free): CRIU 4.2 does not
#            read it where fdinfo lists locks, imgtool reads it before any fdinfo to
#            refuse, before touching the tree, a lock held only through a mapping. Some
#            20 ms are /proc (the stopped process's
#            smaps walks every page table: ~8 ms for 256 MiB), 5 ms its pagemap, and
#            110-140 ms the pages: each core reads a 1 MiB unit with process_vm_readv and
#            writes it into tmpfs (two copies a byte, and tmpfs allocating its pages),
#            2 GiB/s together. CRIU's dump spends less CPU (0.12-0.16 CPU-s: its parasite
#            vmsplices the pages, so one copy, into tmpfs) but on one core. perf: a
#            seventh of the CPU spins on the pages file's lock (tmpfs writes take the
#            inode lock; both cores write the same file). Measured apart (C, 256 MiB in
#            1 MiB units, 2026-12-02 14:40): process_vm_readv alone 80 ms on one core,
#            35-46 on two; pwrite into one tmpfs file alone 116-123 ms on one core,
#            102-125 on two (the lock: no gain); both, on two cores, 106-113 ms: the
#            pages of a dump are bound by tmpfs taking one file's writes one at a time,
#            and imgtool's ~110 ms for them are at that bound. Writing through a shared
#            mapping of the file instead (one copy, no lock) took 177-283 ms: every page
#            faulted in and zeroed; fallocate first was slower too, 150 -> 200 ms
#            (it zeroes every page, on one core).
#   dump -e  the AES-256-GCM of the 256 MiB on top (0.07-0.09 CPU-s more): 1.1-1.3x a
#            plain dump in runs of the same day, now that the plain dump's pages take both
#            cores (it was 0.96x while the plain dump copied on one); its bound is the
#            plain dump's plus the AES on two cores, ~0.04 s more.
#   restore  0.10-0.11 s (was 0.13 with process_vm_writev: 130 -> 97 ms, medians of 11
#            paired runs), most of it the pages: each core places a unit with UFFDIO_COPY
#            into the process's fresh anonymous memory, through a userfaultfd the process
#            makes and imgtool takes a copy of (restore/userfault.go): the kernel
#            allocates each page and copies into it, where process_vm_writev took a fault
#            on every page and zeroed it before the copy (on one core, 256 MiB: 77-93 ms
#            against 115-134). The bound is now the copy and the page allocation (CRIU's
#            restorer preads the same pages into place on one core: 0.18 CPU-s, 0.21 s).
#            A plain pages file is read a 1 MiB unit at a time into a buffer each core
#            keeps, and copied from there while in its cache: mapping each unit instead
#            (imgset File.MapAt, which process_vm_writev still uses) and unmapping it cost
#            more than the copy it saved, 117 -> 88 ms (medians of 11 paired runs, system
#            CPU 0.20 -> 0.16 s, 2026-12-02 15:45).
#            Encrypted: + decryption and authentication. GNU time, 2026-12-02 15:50: a
#            plain restore 0.11-0.16 CPU-s (all of it the kernel's), an encrypted one
#            0.05-0.07 user (AES-256-GCM: Go's runs at 4.1-4.9 GB/s a core here, as fast
#            as `openssl speed -evp aes-256-gcm`, 4.4 GB/s) and 0.11-0.14 system. Both
#            use both cores alike, so the encrypted restore's bound is the ratio of
#            their CPU, ~1.4x the plain one; 1.1x would need an AEAD twice as fast.
echo
echo "## 4. Dump and restore of the 256 MiB process: imgtool, and CRIU when IMGTOOL_CRIU"
echo "##    names a CRIU binary (5 rounds, the tools alternating; median and min-max)"
CRIU=${IMGTOOL_CRIU:-}
if [ -n "$CRIU" ] && ! "$CRIU" --version >/dev/null 2>&1; then
	echo "IMGTOOL_CRIU=$CRIU does not run: CRIU not measured"; CRIU=""
fi
[ -n "$CRIU" ] && echo "CRIU: $("$CRIU" --version | head -1) ($CRIU)"
[ -z "$CRIU" ] && echo "CRIU: not measured (set IMGTOOL_CRIU to a CRIU 4.2 binary to compare)"
rate() { awk -v b="$pages" -v s="$1" 'BEGIN{ if (s<=0) s=0.0005; printf "%.2f GiB/s", b/s/1073741824 }'; }
# One running big is dumped by every tool in turn, leaving it running; the last round's
# sets are kept for the restores.
start_big 3
pid=$(cat "$W/big.pid")
for round in 1 2 3 4 5; do
	run1 "$W/d-img" "$W/d-img.runs" "$IMGTOOL" dump -t "$pid" -D "$W/d-img" --leave-running --quiet
	run1 "$W/d-enc" "$W/d-enc.runs" "$IMGTOOL" dump -t "$pid" -D "$W/d-enc" --leave-running --quiet -e --cert "$W/cert.pem"
	run1 "$W/d-encs" "$W/d-encs.runs" "$IMGTOOL" dump -t "$pid" -D "$W/d-encs" --leave-running --quiet -e --cert "$W/cert.pem" "${SIGN[@]}"
	if [ -n "$CRIU" ]; then
		rm -rf "$W/d-criu"; mkdir "$W/d-criu"
		run1 - "$W/d-criu.runs" "$CRIU" dump -t "$pid" -D "$W/d-criu" --leave-running -o dump.log
	fi
done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
cp "$W/big-3.log" "$W/big-3.log.orig"
# restore1 TOOL SET RUNS: one timed restore -d of SET (its log cut back to the size the set
# recorded, as restores check), then the restored process is killed and its PID waited free.
restore1() {
	local tool=$1 set=$2 runs=$3 root
	cp "$W/big-3.log.orig" "$W/big-3.log"
	truncate -s "$(cat "$set.logsize")" "$W/big-3.log"
	rm -f "$W/r.pid" # CRIU will not overwrite a pid file
	if [ "$tool" = criu ]; then
		run1 - "$runs" "$CRIU" restore -D "$set" -d --pidfile "$W/r.pid" -o restore.log ||
			{ grep -E "Error" "$set/restore.log" >&2; return 1; }
	else
		run1 - "$runs" "$IMGTOOL" restore -D "$set" -d --pidfile "$W/r.pid" "${@:4}"
	fi
	root=$(cat "$W/r.pid"); kill -9 "$root" 2>/dev/null || true
	for _ in $(seq 200); do [ -e "/proc/$root" ] || break; sleep 0.01; done
}
logsize() { # the size of big's log as SET recorded it (files.img)
	"$IMGTOOL" decode -i "$1/files.img" ${2:+--tls-key "$2"} | python3 -c 'import json, sys
print(next(e["reg"]["size"] for e in json.load(sys.stdin)["entries"] if e.get("reg", {}).get("name", "").endswith("big-3.log")))'
}
logsize "$W/d-img" >"$W/d-img.logsize"; logsize "$W/d-enc" "$W/key.pem" >"$W/d-enc.logsize"
logsize "$W/d-encs" "$W/key.pem" >"$W/d-encs.logsize"
[ -n "$CRIU" ] && logsize "$W/d-criu" >"$W/d-criu.logsize"
for round in 1 2 3 4 5; do
	restore1 imgtool "$W/d-img" "$W/r-img.runs"
	restore1 imgtool "$W/d-enc" "$W/r-enc.runs" --tls-key "$W/key.pem" --allow-unsigned
	restore1 imgtool "$W/d-encs" "$W/r-encs.runs" --tls-key "$W/key.pem" --trust "$W/sign.pem"
	[ -n "$CRIU" ] && restore1 criu "$W/d-criu" "$W/r-criu.runs"
done
dmed=$(secs "$(med "$W/d-img.runs")"); rmed=$(secs "$(med "$W/r-img.runs")")
row "operation" "median s" "peak MiB" "min-max s  rate, ratio"
show "imgtool dump" "$W/d-img.runs" "$(rate "$dmed")"
show "imgtool dump -e" "$W/d-enc.runs" "$(ratio "$(secs "$(med "$W/d-enc.runs")")" "$dmed")x plain dump (target <= 1.1)"
show "imgtool dump -e --sign-key" "$W/d-encs.runs" "$(ratio "$(secs "$(med "$W/d-encs.runs")")" "$(secs "$(med "$W/d-enc.runs")")")x dump -e"
if [ -n "$CRIU" ]; then
	show "CRIU dump" "$W/d-criu.runs" "imgtool takes $(ratio "$dmed" "$(secs "$(med "$W/d-criu.runs")")")x CRIU's time (target <= 0.8)"
else
	row "CRIU dump" "-" "-" "not measured"
fi
show "imgtool restore" "$W/r-img.runs" "$(rate "$rmed")"
show "imgtool restore, encrypted" "$W/r-enc.runs" "$(ratio "$(secs "$(med "$W/r-enc.runs")")" "$rmed")x plain restore (target <= 1.1)"
show "imgtool restore, signed (--trust)" "$W/r-encs.runs" "$(ratio "$(secs "$(med "$W/r-encs.runs")")" "$(secs "$(med "$W/r-enc.runs")")")x encrypted restore"
if [ -n "$CRIU" ]; then
	show "CRIU restore" "$W/r-criu.runs" "imgtool takes $(ratio "$rmed" "$(secs "$(med "$W/r-criu.runs")")")x CRIU's time (target <= 0.5)"
else
	row "CRIU restore" "-" "-" "not measured"
fi

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

##############################################################################
if [ -n "$CRIU" ]; then
	streaming
fi

scaling
