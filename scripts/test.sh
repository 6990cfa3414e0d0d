#!/usr/bin/env bash
# One command on a fresh Debian machine: install what is missing, then
#   1. release build, which must print no warnings;
#   2. the whole test suite (debug);
#   3. the whole test suite under ThreadSanitizer (judged by exit code:
#      the TSan runtime reports races by failing the process), then the
#      mailbox doorbell's 1,000,000 park/unpark cycles under TSan on their own.
# SMP_TEST_ASAN=1 adds an AddressSanitizer pass; SMP_TEST_BENCH=1 adds the
# Benchmarks/ malloc gate (every hot-path microbenchmark: 0 mallocs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "== release build (no warnings allowed)"
log=$(mktemp)
swift build -c release 2>&1 | tee "$log"
if grep -q "warning:" "$log"; then
    echo "test.sh: the release build printed warnings" >&2
    exit 1
fi

echo "== swift test"
swift test

echo "== swift test --sanitize=thread"
TSAN_OPTIONS="history_size=7 halt_on_error=1" \
    swift test --sanitize=thread --scratch-path .build-tsan

echo "== 1,000,000 park/unpark cycles under ThreadSanitizer (alone: in parallel with"
echo "   the rest of the suite the test runs a shorter default)"
TSAN_OPTIONS="history_size=7 halt_on_error=1" SMP_PARK_CYCLES=1000000 \
    swift test --sanitize=thread --scratch-path .build-tsan --filter parkUnparkCyclesNoLostWakeup

if [ "${SMP_TEST_ASAN:-0}" = 1 ]; then
    echo "== swift test --sanitize=address"
    # --disable-xctest: XCTest's own runner leaks 144 bytes, which LeakSanitizer
    # would report; every test here is a Swift Testing test.
    swift test --sanitize=address --scratch-path .build-asan --disable-xctest
fi
if [ "${SMP_TEST_BENCH:-0}" = 1 ]; then
    echo "== Benchmarks: hot paths allocate nothing (mallocCountTotal thresholds of 0)"
    (cd Benchmarks && swift package benchmark thresholds check --no-progress)
fi
echo "test.sh: all passes succeeded"
