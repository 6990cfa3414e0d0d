#!/usr/bin/env bash
# One command on a fresh Debian machine: install what is missing, then
#   1. release build, which must print no warnings;
#   2. the whole test suite (debug);
#   3. the whole test suite under ThreadSanitizer (judged by exit code:
#      the TSan runtime reports races by failing the process), then the
#      mailbox doorbell's 1,000,000 park/unpark cycles under TSan on their own.
# SMP_TEST_ASAN=1 adds an AddressSanitizer pass; SMP_TEST_BENCH=1 adds the
# Benchmarks/ malloc gate (every hot-path microbenchmark: 0 mallocs);
# SMP_TEST_DOCS=1 builds every library's DocC documentation and fails on a
# warning; SMP_TEST_STANDALONE=1 builds a throwaway package that depends on
# SMPPrimitives alone; SMP_TEST_SOAK=1 runs `fastdemux soak` (release) for
# 60 s: traffic with socket churn, conservation at every report, resident
# memory levelling off. CI (.ci/run) sets all five.
#
# Every step runs under a watchdog (`timeout`): a hang fails the run instead
# of stalling it. The tests have watchdogs of their own; this is the backstop.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

# Runs "$@" with a time limit of $1 seconds; a timeout is a failure.
watchdog() {
    local limit=$1; shift
    local status=0
    timeout --kill-after=30 "$limit" "$@" || status=$?
    if [ $status -eq 124 ] || [ $status -eq 137 ]; then
        echo "test.sh: '$*' did not finish within $limit s (watchdog)" >&2
    fi
    return $status
}

echo "== release build (no warnings allowed)"
log=$(mktemp)
watchdog 1800 swift build -c release 2>&1 | tee "$log"
if grep -q "warning:" "$log"; then
    echo "test.sh: the release build printed warnings" >&2
    exit 1
fi

echo "== swift test"
watchdog 1200 swift test

echo "== swift test --sanitize=thread"
TSAN_OPTIONS="history_size=7 halt_on_error=1" \
    watchdog 2400 swift test --sanitize=thread --scratch-path .build-tsan

echo "== 1,000,000 park/unpark cycles under ThreadSanitizer (alone: in parallel with"
echo "   the rest of the suite the test runs a shorter default)"
TSAN_OPTIONS="history_size=7 halt_on_error=1" SMP_PARK_CYCLES=1000000 \
    watchdog 600 swift test --sanitize=thread --scratch-path .build-tsan --filter parkUnparkCyclesNoLostWakeup

if [ "${SMP_TEST_ASAN:-0}" = 1 ]; then
    echo "== swift test --sanitize=address"
    # --disable-xctest: XCTest's own runner leaks 144 bytes, which LeakSanitizer
    # would report; every test here is a Swift Testing test.
    watchdog 2400 swift test --sanitize=address --scratch-path .build-asan --disable-xctest
fi
if [ "${SMP_TEST_BENCH:-0}" = 1 ]; then
    echo "== Benchmarks: hot paths allocate nothing (mallocCountTotal thresholds of 0)"
    (cd Benchmarks && watchdog 1800 swift package benchmark thresholds check --no-progress)
fi
if [ "${SMP_TEST_STANDALONE:-0}" = 1 ]; then
    echo "== SMPPrimitives alone: a throwaway package that depends on it by path"
    watchdog 900 scripts/check-standalone-primitives.sh
fi
if [ "${SMP_TEST_DOCS:-0}" = 1 ]; then
    echo "== DocC documentation of every library module, no warnings"
    watchdog 1200 scripts/check-docs.sh
fi
if [ "${SMP_TEST_SOAK:-0}" = 1 ]; then
    echo "== soak: 60 s of traffic with bind/close churn (a report every 10 s)"
    watchdog 300 .build/release/fastdemux soak --duration 60 --report-interval 10
fi
echo "test.sh: all passes succeeded"
