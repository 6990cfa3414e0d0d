#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time (docs/Fuzzing.md).
#
#   scripts/fuzz.sh TARGET SECONDS [LIBFUZZER-FLAG...]
#
# TARGET: parser (PacketParser + Demux delivery), pcap (PcapReader over
# libpcap), pcapng (PcapReader over PcapngReader). `tcp` (TCP input against a
# socket in every state) arrives with the TCP stack and does not exist yet.
#
# 1. builds the target (incrementally) in .build-fuzz with
#    -sanitize=fuzzer,address (release: the optimizer on, bounds checks and
#    preconditions kept; AddressSanitizer catches what -O no longer checks);
# 2. writes the seed corpus from the committed captures
#    (Tests/Fixtures/captures/, Sources/fastdemux/Resources/loopback.pcap)
#    and, if present, the tcpdump corpus in $SMPNET_SHARED_DIR/captures
#    (default ../shared/captures) with scripts/fuzz-corpus.py;
# 3. runs libFuzzer for SECONDS (-max_total_time) on the working corpus
#    (.build-fuzz/fuzz/corpus/TARGET, kept between runs), the seeds and the
#    committed regression inputs (Tests/Fixtures/fuzz-regressions/TARGET,
#    replayed first), and prints executions and exec/s;
# 4. on a crash, timeout, out-of-memory or leak: copies the input into
#    Tests/Fixtures/fuzz-regressions/TARGET/ (commit it: the
#    FuzzRegressionTests suites replay every file there) and exits 1.
#
# Exit status: 0 no finding; 1 a finding (or a build failure); 2 usage,
# including a target that does not exist yet. Extra arguments go to
# libFuzzer (e.g. -seed=1, -max_len=65536, -only_ascii=1).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: scripts/fuzz.sh TARGET SECONDS [LIBFUZZER-FLAG...]  (TARGET: parser, pcap, pcapng)" >&2
    exit 2
}
[ $# -ge 2 ] || usage
target=$1 seconds=$2
shift 2
# limits: libFuzzer's per-input limits. A single allocation above
# -malloc_limit_mb is reported as out-of-memory. PcapngReader allocates at
# most about the input's size (a block must fit in what is left of the file),
# so 16 MiB catches a declared length being trusted; libpcap grows its buffer
# to a record's declared caplen (up to 128 MiB for LINKTYPE_DBUS, its
# max_snaplen_for_dlt) before reading it, so pcap keeps the default (the
# RSS limit, 2 GiB).
case "$target" in
    parser) product=FuzzParser limits=() ;;
    pcap) product=FuzzPcap limits=() ;;
    pcapng) product=FuzzPcapng limits=(-malloc_limit_mb=16) ;;
    tcp)
        echo "fuzz.sh: target 'tcp' does not exist yet: it needs the TCP input path, which is not" >&2
        echo "         written yet (targets now: parser, pcap, pcapng)" >&2
        exit 2 ;;
    *) echo "fuzz.sh: unknown target '$target'" >&2; usage ;;
esac
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: SECONDS must be a positive integer, not '$seconds'" >&2; usage; }

scratch=.build-fuzz
work=$scratch/fuzz
mkdir -p "$work"

echo "== fuzz.sh: building $product (-sanitize=fuzzer,address, release, $scratch)"
# `--sanitize fuzzer` tells SwiftPM the executable gets libFuzzer's main (so
# it does not rename the module's entry point); the combined
# -sanitize=fuzzer,address after it is what the compiler keeps (the driver
# takes the last -sanitize flag, and SwiftPM passes one per sanitizer).
# SMP_FUZZ=1 makes Package.swift declare the fuzz targets.
log=$work/build-$target.log
build_status=0
SMP_FUZZ=1 swift build -c release --scratch-path "$scratch" --product "$product" \
    --sanitize fuzzer -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld >"$log" 2>&1 || build_status=$?
if [ $build_status -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz.sh: building $product failed (full log: $log)" >&2
    exit 1
fi
grep -E "warning:|Build of product|Compiling|Linking" "$log" | grep -v "^\[.*Write" | tail -n 4 || true
binary=$scratch/release/$product

# Seeds: regenerated when a capture or the script is newer than the last set.
seeds=$work/seeds/$target
shared=${SMPNET_SHARED_DIR:-../shared}/captures
captures=(Tests/Fixtures/captures/* Sources/fastdemux/Resources/loopback.pcap)
if [ -d "$shared" ] && [ "${SMP_FUZZ_SHARED:-1}" = 1 ]; then
    while IFS= read -r -d '' f; do captures+=("$f"); done < <(find "$shared" -type f \( -name '*.pcap' -o -name '*.pcapng' \) -print0 | sort -z)
fi
stamp=$seeds/.stamp
if [ ! -f "$stamp" ] || [ scripts/fuzz-corpus.py -nt "$stamp" ] \
    || [ -n "$(find "${captures[@]}" -newer "$stamp" -print -quit)" ] \
    || [ "$(cat "$stamp")" != "${#captures[@]}" ]; then
    rm -rf "$seeds"
    python3 scripts/fuzz-corpus.py "$target" "$seeds" "${captures[@]}"
    echo "${#captures[@]}" >"$stamp"
fi
corpus=$work/corpus/$target
regressions=Tests/Fixtures/fuzz-regressions/$target
artifacts=$work/artifacts/$target
mkdir -p "$corpus" "$regressions" "$artifacts"
rm -f "$artifacts"/*
echo "== fuzz.sh: $target for $seconds s: $(find "$seeds" -type f ! -name .stamp | wc -l) seeds from ${#captures[@]} captures," \
     "$(find "$corpus" -type f | wc -l) inputs in the working corpus, $(find "$regressions" -type f ! -name '*.md' | wc -l) regression inputs"

# The Swift runtime's backtracer would symbolicate a trap before libFuzzer's
# handler saves the input (and can hang doing so): libFuzzer and ASan report.
run_log=$work/run-$target.log
status=0
started=$SECONDS
SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:handle_abort=1} \
    timeout --kill-after=30 $((seconds + 300)) "$binary" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 ${limits[@]+"${limits[@]}"} -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$@" "$corpus" "$seeds" "$regressions" >"$run_log" 2>&1 || status=$?

# The start and the end of libFuzzer's report (its NEW/REDUCE lines are noise).
grep -E "INITED|DONE|ERROR|SUMMARY|Fatal error|fuzz invariant|Test unit written|stat::" "$run_log" | head -40 || true
fuzzstat() { sed -n "s/^stat::$1: *//p" "$run_log" | tail -1; }
executions=$(fuzzstat number_of_executed_units)
rate=$(fuzzstat average_exec_per_sec)
elapsed=$((SECONDS - started))   # includes loading the corpus; less than SECONDS after a finding
echo "fuzz.sh: $target: ${executions:-?} executions in $elapsed s of a $seconds s run (${rate:-?} exec/s)," \
     "$(fuzzstat new_units_added || true) new corpus inputs; working corpus $(find "$corpus" -type f | wc -l) inputs"

found=0
for f in "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-* "$artifacts"/leak-*; do
    [ -e "$f" ] || continue
    found=1
    cp "$f" "$regressions/"
    echo "fuzz.sh: FOUND $(basename "$f"): saved as $regressions/$(basename "$f")" >&2
    echo "         reproduce: SWIFT_BACKTRACE=enable=no $binary $regressions/$(basename "$f")" >&2
    echo "         commit it with the fix; FuzzRegressionTests replays it" >&2
done
if [ $found = 1 ]; then
    echo "fuzz.sh: $target: libFuzzer found a problem (log: $run_log)" >&2
    exit 1
fi
if [ $status -ne 0 ]; then
    tail -30 "$run_log" >&2
    echo "fuzz.sh: $target: libFuzzer exited with $status without an input to save (log: $run_log)" >&2
    exit 1
fi
