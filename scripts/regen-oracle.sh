#!/bin/bash
# Regenerates the tshark oracle outputs that OracleAgreementTests compares
# the parser against (Tests/Fixtures/oracle/*.tsv), one file per capture
# directory:
#   tcpdump-tests.tsv  <- $SHARED/captures/tcpdump-tests/* (the tcpdump
#                         project's 830 regression-test captures)
#   fixtures.tsv       <- Tests/Fixtures/captures/* (link types the tcpdump
#                         corpus lacks: SLL2, LOOP, raw 228/229, multi-link pcapng)
# Format: for every capture, in C-locale name order, a line
#   #file<TAB>NAME<TAB>ROWS
# followed by ROWS lines of the oracle's output for it
# ($SHARED/oracle/oracle.py: tshark's outer 5-tuple and tier per packet).
#
# usage: scripts/regen-oracle.sh [--check]
#   --check  regenerate into a temporary directory and diff against the
#            committed fixtures (exit 1 on any difference) instead of writing.
# Needs tshark (Debian: apt-get install tshark) and python3. SHARED, the
# directory holding the corpus and the oracle (not part of this
# repository), is SMPNET_SHARED_DIR, by default `shared` beside the
# repository's directory, as for the tests. Takes a few minutes (two
# tshark processes in parallel).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SMPNET_SHARED_DIR:-$ROOT/../shared}
ORACLE=$SHARED/oracle/oracle.py
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1
command -v tshark >/dev/null || { echo "regen-oracle: tshark is not installed" >&2; exit 2; }
[ -f "$ORACLE" ] || { echo "regen-oracle: $ORACLE not found" >&2; exit 2; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export LC_ALL=C

generate() {  # generate CAPTURE_DIR NAME
    local dir=$1 name=$2
    mkdir -p "$TMP/$name"
    (cd "$dir" && ls) | xargs -P 2 -I{} sh -c 'python3 "$0" "$1/$3" > "$2/$3.tsv" 2>/dev/null' \
        "$ORACLE" "$dir" "$TMP/$name" {}
    {
        printf '#oracle\t%s\n' "$(tshark --version 2>/dev/null | head -1)"
        for f in $(cd "$dir" && ls); do
            printf '#file\t%s\t%d\n' "$f" "$(wc -l < "$TMP/$name/$f.tsv")"
            cat "$TMP/$name/$f.tsv"
        done
    } > "$TMP/$name.tsv"
}

generate "$SHARED/captures/tcpdump-tests" tcpdump-tests
generate "$ROOT/Tests/Fixtures/captures" fixtures

status=0
for name in tcpdump-tests fixtures; do
    target=$ROOT/Tests/Fixtures/oracle/$name.tsv
    if [ $CHECK = 1 ]; then
        if diff -q "$target" "$TMP/$name.tsv" >/dev/null; then
            echo "regen-oracle: $name.tsv is up to date"
        else
            echo "regen-oracle: $name.tsv differs from a fresh tshark run:" >&2
            diff "$target" "$TMP/$name.tsv" | head -40 >&2 || true
            status=1
        fi
    else
        cp "$TMP/$name.tsv" "$target"
        echo "regen-oracle: wrote $target ($(grep -c '^#file' "$target") captures)"
    fi
done
exit $status
