#!/usr/bin/env bash
# Where a keep-alive request's time goes: boxapi (release build with symbols, `--profile
# profiling`) under valgrind's callgrind, N requests on one keep-alive connection (curl), then the
# inclusive instruction counts per function. Instruction counts do not depend on the machine's load.
# Usage: bench/profile.sh [PATH] [N]   (PATH defaults to /v1/access, N to 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
path=${1:-/v1/access}; n=${2:-2000}
BOX=${BOXAPI_BIN:-target/profiling/boxapi}
work=$(mktemp -d)
box_pid=
trap 'kill $box_pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
. bench/setup.sh
bench_setup "$port"
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$BOX" serve --config "$work/boxapi.toml" 2>"$work/log" &
box_pid=$!
# Valgrind starts slowly; 60 s at most, and not at all once the daemon has exited.
for try in $(seq 300); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
    kill -0 $box_pid 2>/dev/null || { cat "$work/log" >&2; exit 1; }
    [ "$try" -lt 300 ] || { echo "profile: boxapi not listening after 60 s" >&2; exit 1; }
    sleep 0.2
done
for _ in $(seq "$n"); do echo "url = \"https://localhost:$port$path\""; echo 'output = "/dev/null"'; done > "$work/urls"
# CLOSE=1: one request per connection (TLS sessions resumed, as browsers and wrk do).
curl -sf --cacert "$work/ca.pem" -H "Authorization: Bearer $token" ${CLOSE:+-H "Connection: close"} -K "$work/urls"
kill -TERM $box_pid; wait $box_pid 2>/dev/null || true
cp "$work/cg.out" "${CG_OUT:-/dev/null}"; callgrind_annotate --inclusive=yes "$work/cg.out" 2>/dev/null | head -${TOP:-60}
