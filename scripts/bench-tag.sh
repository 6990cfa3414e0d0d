# Sourced by scripts/bench-vs-peers.sh and scripts/bench-scaling.sh.
#
# tag BUILD ROUND COMMAND...: runs COMMAND and adds "build" and "round" to
# every JSON line of its output; anything else (a stray diagnostic) goes to
# stderr.
tag() {
  local build=$1 round=$2; shift 2
  "$@" | python3 -c '
import json, sys
build, rnd = sys.argv[1], int(sys.argv[2])
for line in sys.stdin:
    line = line.strip()
    try:
        d = json.loads(line)
    except ValueError:
        print(line, file=sys.stderr)
        continue
    d["build"], d["round"] = build, rnd
    print(json.dumps(d, separators=(",", ":")), flush=True)
' "$build" "$round"
}
