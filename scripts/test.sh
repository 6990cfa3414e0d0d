#!/usr/bin/env bash
# One command on a fresh Debian machine: install what is missing, then
#   1. release build, which must print no warnings;
#   2. the whole test suite (debug), then the executor, continuation and
#      mailbox suites again with the doorbells' hardware-fence fallback
#      (SMP_DOORBELL_FENCE=hardware);
#   3. the whole test suite under ThreadSanitizer (judged by exit code:
#      the TSan runtime reports races by failing the process), then the
#      mailbox doorbell's 1,000,000 park/unpark cycles under TSan on their own.
# SMP_TEST_ASAN=1 adds an AddressSanitizer pass; SMP_TEST_BENCH=1 adds the
# Benchmarks/ malloc gate (every hot-path microbenchmark: 0 mallocs);
# SMP_TEST_DOCS=1 builds every library's DocC documentation and fails on a
# warning; SMP_TEST_STANDALONE=1 builds a throwaway package that depends on
# SMPPrimitives alone; SMP_TEST_FUZZ=1 runs every libFuzzer target
# (scripts/fuzz.sh) for SMP_FUZZ_SECONDS (default 30) each, after replaying
# its committed regression inputs; SMP_TEST_SOAK=1 runs `fastdemux soak`
# (release) for 60 s: traffic with socket churn, conservation at every
# report, resident memory levelling off. CI (.ci/run) sets all six.
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

# Prints a step's title and, from the second step on, how long the previous
# one took (where CI time goes).
step_started=$SECONDS
step() {
    if [ -n "${step_title:-}" ]; then
        echo "test.sh: '$step_title' took $((SECONDS - step_started)) s"
    fi
    step_title=$1
    step_started=$SECONDS
    echo "== $1"
}

step "release build (no warnings allowed)"
log=$(mktemp)
watchdog 1800 swift build -c release 2>&1 | tee "$log"
if grep -q "warning:" "$log"; then
    echo "test.sh: the release build printed warnings" >&2
    exit 1
fi

step "swift test"
watchdog 1200 swift test

step "executor, continuation and mailbox suites again with the doorbells' hardware-fence fallback"
SMP_DOORBELL_FENCE=hardware watchdog 600 swift test --skip-build \
    --filter "ExecutorLifecycleTests|CoreExecutorTests|ContinuationTests|MailboxTests"

step "swift test --sanitize=thread"
TSAN_OPTIONS="history_size=7 halt_on_error=1" \
    watchdog 2400 swift test --sanitize=thread --scratch-path .build-tsan

# Alone: in parallel with the rest of the suite the test runs a shorter
# default. Both doorbell fences (the test is parameterized).
step "1,000,000 park/unpark cycles per doorbell fence under ThreadSanitizer"
TSAN_OPTIONS="history_size=7 halt_on_error=1" SMP_PARK_CYCLES=1000000 \
    watchdog 600 swift test --sanitize=thread --scratch-path .build-tsan --filter parkUnparkCyclesNoLostWakeup

if [ "${SMP_TEST_ASAN:-0}" = 1 ]; then
    step "swift test --sanitize=address"
    # --disable-xctest: XCTest's own runner leaks 144 bytes, which LeakSanitizer
    # would report; every test here is a Swift Testing test.
    watchdog 2400 swift test --sanitize=address --scratch-path .build-asan --disable-xctest
fi
if [ "${SMP_TEST_BENCH:-0}" = 1 ]; then
    step "Benchmarks: hot paths allocate nothing (mallocCountTotal thresholds of 0)"
    (cd Benchmarks && watchdog 1800 swift package benchmark thresholds check --no-progress)
fi
if [ "${SMP_TEST_STANDALONE:-0}" = 1 ]; then
    step "SMPPrimitives alone: a throwaway package that depends on it by path"
    watchdog 900 scripts/check-standalone-primitives.sh
fi
if [ "${SMP_TEST_DOCS:-0}" = 1 ]; then
    step "DocC documentation of every library module, no warnings"
    watchdog 1200 scripts/check-docs.sh
fi
if [ "${SMP_TEST_FUZZ:-0}" = 1 ]; then
    step "fuzzing: every target for ${SMP_FUZZ_SECONDS:-30} s (scripts/fuzz.sh; a finding fails)"
    for target in parser pcap pcapng; do
        watchdog 900 scripts/fuzz.sh "$target" "${SMP_FUZZ_SECONDS:-30}"
    done
fi
if [ "${SMP_TEST_SOAK:-0}" = 1 ]; then
    step "soak: 60 s of traffic with bind/close churn (a report every 10 s)"
    watchdog 300 .build/release/fastdemux soak --duration 60 --report-interval 10
fi
step "done"
echo "test.sh: all passes succeeded in $SECONDS s"
