#!/usr/bin/env bash
# stop-field.sh DIR — stop the daemons started by start-field.sh DIR (by pid,
# from DIR/env) and wait until they are gone (bounded: TERM, then KILL after 5 s).
set -uo pipefail
dir=${1:?usage: stop-field.sh DIR}
[ -f "$dir/env" ] || { echo "stop-field: no $dir/env (nothing started?)" >&2; exit 0; }
pids=$(sed -n 's/^PIDS="\(.*\)"$/\1/p' "$dir/env")
for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
for _ in $(seq 1 50); do
    alive=""
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && exit 0
    sleep 0.1
done
for p in $alive; do
    # the recorded pid is `timeout`; kill its child too
    pkill -KILL -P "$p" 2>/dev/null || true
    kill -KILL "$p" 2>/dev/null || true
done
exit 0
