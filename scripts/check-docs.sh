#!/usr/bin/env bash
# Builds the DocC documentation of every library module and fails on any
# documentation warning (an unresolved symbol link, a parameter that is
# documented but does not exist or exists but is not documented, a broken
# catalog page, ...).
#
#   scripts/check-docs.sh                  # SMPPrimitives, FastDemux, NetStack, PacketIO
#   scripts/check-docs.sh FastDemux        # only the modules named
#
# SMP_DOCS_SCRATCH=DIR builds in that scratch path instead of .build
# (scripts/test.sh passes its debug build's, .build-debug).
#
# Uses the swift-docc-plugin dependency declared in Package.swift
# (`swift package generate-documentation --target M`), which builds each
# module in debug mode first; the first run takes a few minutes. Each
# module's catalog is Sources/M/M.docc. The output is searched for
# "warning:" and "error:" rather than passing DocC --warnings-as-errors:
# with that option a warning makes docc fail, and the plugin then adds
# errors of its own (a missing archive) that hide the count. Prints every
# diagnostic, then one line per module; exits 1 if any module warned or
# failed.
set -uo pipefail
cd "$(dirname "$0")/.."

modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(SMPPrimitives FastDemux NetStack PacketIO)

log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=()
for m in "${modules[@]}"; do
    echo "check-docs: $m ..." >&2
    swift package ${SMP_DOCS_SCRATCH:+--scratch-path "$SMP_DOCS_SCRATCH"} \
        generate-documentation --target "$m" >"$log" 2>&1
    status=$?
    # Diagnostics with their source excerpt (the build's progress lines are
    # noise here).
    grep -E '(warning|error):' -A4 "$log" >&2
    count=$(grep -cE '(warning|error):' "$log")
    if [ $status -ne 0 ] || [ "$count" -gt 0 ]; then
        [ "$count" -gt 0 ] || tail -20 "$log" >&2   # a failure without a diagnostic line
        echo "check-docs: $m: $count diagnostics (exit status $status)" >&2
        failed+=("$m")
    else
        echo "check-docs: $m: no warnings" >&2
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "check-docs: documentation warnings in: ${failed[*]}" >&2
    exit 1
fi
echo "check-docs: all clean: ${modules[*]}" >&2
