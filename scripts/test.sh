#!/usr/bin/env bash
# One command on a fresh Debian machine: install what is missing, then run
# two lanes side by side (each step of a lane waits for the one before; the
# lanes share the 2 cores, and one lane's test runs and links fill the other
# lane's idle time):
#
#   tests lane (its output streams here, and goes to a log):
#     1. the whole test suite (debug), then the executor, continuation and
#        mailbox suites again with the doorbells' hardware-fence fallback
#        (SMP_DOORBELL_FENCE=hardware);
#     2. the whole test suite under ThreadSanitizer (judged by exit code:
#        the TSan runtime reports races by failing the process), then the
#        mailbox doorbell's 1,000,000 park/unpark cycles under TSan alone;
#   builds lane (its output goes to a log, printed when it ends):
#     3. release build, which must print no warnings.
#
# Optional steps (CI, .ci/run, sets all six):
#   SMP_TEST_ASAN=1        the whole suite under AddressSanitizer and
#                          LeakSanitizer (tests lane). The ASan build is a
#                          debug build, so it replaces step 1's plain debug
#                          run (one test build fewer), hardware-fence rerun
#                          included.
#   SMP_TEST_DOCS=1        every library's DocC documentation, failing on a
#                          warning (tests lane, from its debug build).
#   SMP_TEST_SOAK=1        `fastdemux soak` (release) for 60 s: traffic with
#                          socket churn, conservation at every report,
#                          resident memory levelling off (builds lane).
#   SMP_TEST_FUZZ=1        every libFuzzer target (scripts/fuzz.sh) for
#                          SMP_FUZZ_SECONDS (default 30) each, after
#                          replaying its committed regression inputs (builds).
#   SMP_TEST_STANDALONE=1  a throwaway package that depends on SMPPrimitives
#                          alone (builds lane).
#   SMP_TEST_BENCH=1       the Benchmarks/ malloc gate: every hot-path
#                          microbenchmark allocates nothing (builds lane).
#
# Scratch paths: the release build is .build (scripts/demo.sh runs
# .build/release/fastdemux), the debug tests .build-debug, the sanitizers
# .build-tsan and .build-asan, the fuzz targets .build-fuzz: two lanes never
# build in one scratch path at once (SwiftPM locks it).
#
# Every step runs under a watchdog (`timeout`): a hang fails the run instead
# of stalling it. The tests have watchdogs of their own; this is the backstop.
# A failing step ends its lane; the other lane is stopped and the run fails.
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
# one took (where CI time goes), on the run's standard output (fd 3) with
# the lane's name, whatever the lane's own output is redirected to.
exec 3>&1
started=$SECONDS
step() {
    if [ -n "${step_title:-}" ]; then
        echo "test.sh [$lane]: '$step_title' took $((SECONDS - step_started)) s (at $((SECONDS - started)) s)" >&3
    fi
    step_title=$1
    step_started=$SECONDS
    [ -z "$1" ] || echo "$1" >"$logs/$lane.step"
    [ -z "$1" ] || echo "== [$lane] $1" >&3
}

tests_lane() {
    lane=tests
    local scratch=.build-debug filter="ExecutorLifecycleTests|CoreExecutorTests|ContinuationTests|MailboxTests"
    if [ "${SMP_TEST_ASAN:-0}" = 1 ]; then
        step "swift test --sanitize=address (the debug suite, with AddressSanitizer and LeakSanitizer)"
        # --disable-xctest: XCTest's own runner leaks 144 bytes, which
        # LeakSanitizer would report; every test here is a Swift Testing test.
        watchdog 2400 swift test --sanitize=address --scratch-path .build-asan --disable-xctest
        step "executor, continuation and mailbox suites again with the doorbells' hardware-fence fallback (ASan build)"
        SMP_DOORBELL_FENCE=hardware watchdog 600 swift test --skip-build --sanitize=address \
            --scratch-path .build-asan --disable-xctest --filter "$filter"
    else
        step "swift test"
        watchdog 1800 swift test --scratch-path "$scratch"
        step "executor, continuation and mailbox suites again with the doorbells' hardware-fence fallback"
        SMP_DOORBELL_FENCE=hardware watchdog 600 swift test --skip-build --scratch-path "$scratch" --filter "$filter"
    fi

    step "swift test --sanitize=thread"
    TSAN_OPTIONS="history_size=7 halt_on_error=1" \
        watchdog 2400 swift test --sanitize=thread --scratch-path .build-tsan

    # Alone: in parallel with the rest of the suite the test runs a shorter
    # default. Both doorbell fences (the test is parameterized).
    step "1,000,000 park/unpark cycles per doorbell fence under ThreadSanitizer"
    TSAN_OPTIONS="history_size=7 halt_on_error=1" SMP_PARK_CYCLES=1000000 \
        watchdog 600 swift test --sanitize=thread --scratch-path .build-tsan --filter parkUnparkCyclesNoLostWakeup

    if [ "${SMP_TEST_DOCS:-0}" = 1 ]; then
        step "DocC documentation of every library module, no warnings"
        SMP_DOCS_SCRATCH=$scratch watchdog 1200 scripts/check-docs.sh
    fi
    step ""
}

builds_lane() {
    lane=builds
    step "release build (no warnings allowed)"
    local log
    log=$(mktemp)
    watchdog 1800 swift build -c release 2>&1 | tee "$log"
    if grep -q "warning:" "$log"; then
        echo "test.sh: the release build printed warnings" >&2
        return 1
    fi
    if [ "${SMP_TEST_SOAK:-0}" = 1 ]; then
        step "soak: 60 s of traffic with bind/close churn (a report every 10 s)"
        watchdog 300 .build/release/fastdemux soak --duration 60 --report-interval 10
    fi
    if [ "${SMP_TEST_FUZZ:-0}" = 1 ]; then
        step "fuzzing: every target for ${SMP_FUZZ_SECONDS:-30} s (scripts/fuzz.sh; a finding fails)"
        for target in parser pcap pcapng; do
            watchdog 900 scripts/fuzz.sh "$target" "${SMP_FUZZ_SECONDS:-30}"
        done
    fi
    if [ "${SMP_TEST_STANDALONE:-0}" = 1 ]; then
        step "SMPPrimitives alone: a throwaway package that depends on it by path"
        watchdog 900 scripts/check-standalone-primitives.sh
    fi
    if [ "${SMP_TEST_BENCH:-0}" = 1 ]; then
        step "Benchmarks: hot paths allocate nothing and retain nothing per item (malloc, retain and release thresholds)"
        (cd Benchmarks && watchdog 1800 swift package benchmark thresholds check --no-progress)
    fi
    step ""
}

# Both lanes write to logs; the tests lane's log streams here as it grows.
# When the run ends, the builds lane's log is printed, then (on a failure)
# a summary of the failing lane: the step that failed, the lines that name
# failing tests or sanitizer reports, and the lane's last lines. CI keeps
# only the tail of the output, so the cause must come last.
logs=$(mktemp -d)
: >"$logs/tests.log"
tail -n +1 -f "$logs/tests.log" &
streamer=$!
# Each lane in its own process group (job control on while they start), so
# that stopping a lane stops every build and test process under it.
set -m
( builds_lane ) >"$logs/builds.log" 2>&1 &
builds_pid=$!
( tests_lane ) >>"$logs/tests.log" 2>&1 &
tests_pid=$!
set +m

# Whichever lane ends first: if it failed, stop the other one.
status=0 failed="" first="" st=0
wait -n -p first "$builds_pid" "$tests_pid" || st=$?
if [ "$first" = "$builds_pid" ]; then
    first_lane=builds other=$tests_pid other_lane=tests
else
    first_lane=tests other=$builds_pid other_lane=builds
fi
if [ $st -ne 0 ]; then
    status=1 failed=$first_lane
    echo "test.sh: the $first_lane lane failed; stopping the $other_lane lane" >&2
    kill -TERM -- "-$other" 2>/dev/null || true
fi
st=0
wait "$other" || st=$?
if [ $status -eq 0 ] && [ $st -ne 0 ]; then status=1 failed=$other_lane; fi
sleep 1
kill "$streamer" 2>/dev/null || true
wait "$streamer" 2>/dev/null || true

echo "== the builds lane's output"
cat "$logs/builds.log"
if [ $status -ne 0 ]; then
    log="$logs/$failed.log"
    echo
    echo "== test.sh: failure summary of the $failed lane"
    echo "-- the step that failed: $(cat "$logs/$failed.step" 2>/dev/null || echo unknown)"
    echo "-- failing tests, sanitizer reports and watchdogs:"
    grep -a -n -E '✘|error:|[Ff]ailed|FAIL|Fatal error|ThreadSanitizer|AddressSanitizer|LeakSanitizer|SUMMARY:|watchdog|Crash|signal [0-9]' \
        "$log" | grep -a -v -E 'Compiling|warning: ' | tail -n 80 || true
    echo "-- the last 60 lines of the $failed lane:"
    tail -n 60 "$log"
    echo "test.sh: the $failed lane failed in '$(cat "$logs/$failed.step" 2>/dev/null || echo unknown)' (after $SECONDS s)" >&2
    exit 1
fi
rm -rf "$logs"
echo "test.sh: all passes succeeded in $SECONDS s"
