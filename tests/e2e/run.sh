#!/usr/bin/env bash
# make test-e2e: real clients nobody on this project wrote, against the real daemon:
# Chromium (driven by Playwright) with the example tool page, schemathesis with docs/openapi.yaml,
# and testssl.sh; and the tools' client library (clients/js): node --test, tsc on its declarations.
# Installs what it needs (Debian packages, npm, PyPI), idempotently.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
OUT=${OUT:-$root/tests/out}
mkdir -p "$OUT"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
missing=""
for p in chromium libnss3-tools testssl.sh nodejs python3-venv curl openssl; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
command -v npm >/dev/null || missing="$missing npm"
if [ -n "$missing" ]; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# Node 20 or later (node --test's options, playwright-core): Debian 12's nodejs is 18, so then
# Node comes from the npm registry (the `node` package installs its binary from there too).
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 20 ]; then
    nodedir=${BOXAPI_E2E_NODE:-$HOME/.cache/boxapi-e2e-node}
    [ -x "$nodedir/node_modules/.bin/node" ] || npm install --prefix "$nodedir" --no-audit --no-fund node@20 >/dev/null
    export PATH="$nodedir/node_modules/.bin:$PATH"
    [ "$(node_major)" -ge 20 ] || {
        echo "run.sh: Node.js 20 or later is needed, found $(node --version 2>&1); install it (npm install -g node@20, or a nodejs 20 package) and rerun" >&2
        exit 1
    }
fi
[ -d node_modules/playwright-core ] && [ -d node_modules/typescript ] || npm ci --no-audit --no-fund >/dev/null
. ./venv.sh

(cd "$root" && cargo build --release --locked -q)
BOX=$root/target/release/boxapi
status=0

# The tools' client library (clients/js): its unit tests, and the real box and authority
# verifying what it minted (node --test; the daemons are the release build just made).
echo "== boxapi-client (node --test)"
(cd "$root/clients/js" && BOXAPI_TARGET=$root/target/release node --test --test-concurrency=1 --test-timeout=120000 --test-reporter=spec test/*.test.js) \
    >"$OUT/client-js.txt" 2>&1 || status=1
grep -E '^(ℹ|✖)' "$OUT/client-js.txt" || tail -20 "$OUT/client-js.txt"
# Its TypeScript declarations, compiled strictly against the uses of the guide and the example.
node_modules/.bin/tsc -p "$root/clients/js/test/types" && echo "tsc: the declarations compile" || status=1
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# The field (daemons.mjs, through the developers' clients/js/dev.mjs and dev/field.js): a box in central mode with the operator's
# authority and its locator, a box that issues tokens itself, a development CA for localhost, and
# the example tool's backends (examples/speedtest, on boxapi-client) on :8000-8003.
BOXAPI_TARGET=$root/target/release OUT=$OUT node daemons.mjs >"$work/field.env" 2>"$OUT/field.log" & pids+=($!)
for _ in $(seq 600); do [ -s "$work/field.env" ] && break; sleep 0.1; done
[ -s "$work/field.env" ] || { echo "run.sh: the field did not start:" >&2; cat "$OUT/field.log" >&2; exit 1; }
read -r BOX_PORT BOX2_PORT AUTH_PORT WORK TOKEN < <(sed 's/[A-Z_0-9]*=//g' "$work/field.env")
for port in 8000 8001 8002 8003; do
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

echo "== Playwright + Chromium"
# A browser profile (HOME) whose NSS database trusts the test CA.
export HOME=$work/home
mkdir -p "$HOME/.pki/nssdb"
certutil -d sql:"$HOME/.pki/nssdb" -N --empty-password
certutil -d sql:"$HOME/.pki/nssdb" -A -t "C,," -n boxapi-test-ca -i "$WORK/ca.pem"
BOX_PORT=$BOX_PORT BOX2_PORT=$BOX2_PORT AUTH_PORT=$AUTH_PORT WORK=$WORK TOKEN=$TOKEN BOX=$BOX OUT=$OUT node browser.mjs || status=1

echo "== responses against docs/openapi.yaml"
"$venv/bin/python" validate.py "$root/docs/openapi.yaml" "https://localhost:$BOX_PORT" "$WORK/ca.pem" "$TOKEN" || status=1

# The stream is left out of schemathesis (each valid call lasts up to 120 s); validate.py reads
# a few of its lines and checks them against the schema instead.
echo "== schemathesis"
"$venv/bin/schemathesis" run "$root/docs/openapi.yaml" --url "https://localhost:$BOX_PORT" \
    -H "Authorization: Bearer $TOKEN" --tls-verify "$WORK/ca.pem" --checks all --exclude-checks missing_required_header --exclude-path /v1/token --exclude-path /v1/counters/stream --max-examples 50 \
    >"$OUT/schemathesis.txt" 2>&1 || status=1
tail -15 "$OUT/schemathesis.txt"

echo "== testssl.sh"
rm -f "$OUT/testssl.json"
testssl --quiet --color 0 --warnings off --add-ca "$WORK/ca.pem" --jsonfile "$OUT/testssl.json" \
    "localhost:$BOX_PORT" >"$OUT/testssl.txt" 2>&1 || true
"$venv/bin/python" testssl_check.py "$OUT/testssl.json" || status=1
exit $status
