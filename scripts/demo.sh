#!/usr/bin/env bash
# One command on a fresh Debian machine: install what is missing, build in
# release mode, and run the demultiplexer on the built-in sample capture.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product fastdemux
exec .build/release/fastdemux demo "$@"
