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
[ -d node_modules/playwright-core ] && [ -d node_modules/typescript ] || npm install --no-audit --no-fund >/dev/null
. ./venv.sh

(cd "$root" && cargo build --release --locked -q)
BOX=$root/target/release/boxapi
status=0

# The tools' client library (clients/js): its unit tests, and the real box and authority
# verifying what it minted (node --test; the daemons are the release build just made).
echo "== boxapi-client (node --test)"
(cd "$root/clients/js" && BOXAPI_TARGET=$root/target/release node --test --test-concurrency=1 --test-reporter=spec test/*.test.js) \
    >"$OUT/client-js.txt" 2>&1 || status=1
grep -E '^(ℹ|✖)' "$OUT/client-js.txt" || tail -20 "$OUT/client-js.txt"
# Its TypeScript declarations, compiled strictly against the uses of the guide and the example.
node_modules/.bin/tsc -p "$root/clients/js/test/types" && echo "tsc: the declarations compile" || status=1
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# The box: a test CA and certificate for localhost, tools with their own keys ("lapsed": a
# habilitation that expired), and the key the operator's authority signs tokens with.
"$root/certs/make-dev-certs.sh" "$work" >/dev/null
for t in demo other lapsed; do "$BOX" keygen --alg ES256 --kid "$t" --out "$work/keys" >/dev/null; done
"$BOX" keygen --alg EdDSA --kid signer --out "$work/keys" >/dev/null
printf '{"keys":[%s]}' "$(cat "$work/keys/signer.jwk")" > "$work/keys/signer.jwks"
# The daemons' ports are chosen free now (a fixed port collides with whatever else runs); the tool
# backends' 8000-8004 are part of the origins the pages and configs name.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BOX_PORT=$(free_port)
AUTH_PORT=$(free_port)
while [ "$AUTH_PORT" = "$BOX_PORT" ]; do AUTH_PORT=$(free_port); done
AUTHORITY=https://localhost:$AUTH_PORT
cat > "$work/boxapi.toml" <<CONF
[server]
listen = ["127.0.0.1:$BOX_PORT"]
server_names = ["localhost"]
cert = "server.pem"
key = "server.key"
state_dir = "state"
control_socket = "control.sock"
rate_limit_per_second = 0
max_connections = 512
[auth]
audience = "https://boxapi.demo"
issuers = ["https://boxapi.demo/issuer", "$AUTHORITY"]
issuer_keys = "keys/signer.jwks"
central_token_endpoint = "$AUTHORITY/v1/token"
[[tool]]
id = "demo"
origins = ["http://localhost:8000", "http://localhost:8004"]
scopes = ["access", "counters"]
keys = ["keys/demo.jwk"]
[[tool]]
id = "other"
origins = ["https://other.example"]
scopes = ["access", "counters"]
keys = ["keys/other.jwk"]
[[tool]]
id = "lapsed"
origins = ["http://localhost:8003"]
scopes = ["access", "counters"]
keys = ["keys/lapsed.jwk"]
expires = "2020-01-01T00:00:00Z"
[metrics]
wan_interface = "lo"
[metrics.static]
box = { model = "E2E Box", firmware_version = "1.0" }
subscription = { down_kbps = 1000000, up_kbps = 500000 }
access = { technology = "ftth", down_kbps = 1244000, up_kbps = 1244000 }
wifi = { enabled = true, radios = [{ band = "5GHz", enabled = true, standard = "ax" }] }
CONF
"$BOX" serve --config "$work/boxapi.toml" 2>"$OUT/boxapi.log" & pids+=($!)
# A second box that issues tokens itself (discovery: "box" mode), for the page on :8002.
"$BOX" keygen --alg EdDSA --kid box-signer --out "$work/keys" >/dev/null
BOX2_PORT=$(free_port)
while [ "$BOX2_PORT" = "$BOX_PORT" ]; do BOX2_PORT=$(free_port); done
sed -e "s/127.0.0.1:$BOX_PORT/127.0.0.1:$BOX2_PORT/" -e 's#http://localhost:8000#http://localhost:8002#' \
    -e 's#^state_dir = "state"#state_dir = "state2"#' -e 's#^control_socket = "control.sock"#control_socket = "control2.sock"#' \
    -e "s#^\[metrics\]#[token_endpoint]\nenabled = true\nissuer = \"https://localhost:$BOX2_PORT\"\nsigning_key = \"keys/box-signer.private.jwk\"\n\n[metrics]#" \
    "$work/boxapi.toml" > "$work/boxapi-box-mode.toml"
"$BOX" serve --config "$work/boxapi-box-mode.toml" 2>"$OUT/boxapi-box-mode.log" & pids+=($!)
# The operator's authority (central mode): the same tools, all valid here (the boxes' registry is
# what refuses "lapsed"), and a locator that maps this machine's address to the first box.
printf '{"127.0.0.1": "https://localhost:%s"}' "$BOX_PORT" > "$work/locate.json"
sed -n '/^\[\[tool\]\]/,$p' "$work/boxapi.toml" | sed -e '/^expires/d' -e '/^\[metrics/,$d' > "$work/tools.toml"
cat > "$work/authority.toml" <<CONF
[server]
cert = "server.pem"
key = "server.key"
state_dir = "authority-state"
control_socket = "authority.sock"
rate_limit_per_second = 0
[auth]
audience = "https://boxapi.demo"
issuers = ["$AUTHORITY"]
[token_endpoint]
enabled = true
issuer = "$AUTHORITY"
signing_key = "keys/signer.private.jwk"
[authority]
listen = ["127.0.0.1:$AUTH_PORT"]
[authority.locator]
file = "locate.json"
$(cat "$work/tools.toml")
CONF
"$root/target/release/boxapi-authority" serve --config "$work/authority.toml" 2>"$OUT/authority.log" & pids+=($!)
# The example tool's backend (examples/speedtest, on boxapi-client): :8000 finds its box through
# the authority's locator (central mode), :8001 is an origin no box knows, :8002 is on the box
# that issues tokens, :8003 is the lapsed tool's. Node trusts the test CA to reach the authority.
for port in 8000 8001 8002 8003; do
    where="BOX_URL=https://localhost:$BOX_PORT" tool=demo
    case $port in 8000) where="LOCATOR=$AUTHORITY" ;; 8002) where="BOX_URL=https://localhost:$BOX2_PORT" ;; 8003) tool=lapsed ;; esac
    env "$where" TOOL_ID=$tool TOOL_KEY="$work/keys/$tool.private.jwk" AUTHORITIES="$AUTHORITY" NODE_EXTRA_CA_CERTS="$work/ca.pem" \
        PORT=$port node "$root/examples/speedtest/server.mjs" >"$OUT/tool-$port.log" 2>&1 & pids+=($!)
done
for port in $BOX_PORT $BOX2_PORT $AUTH_PORT 8000 8001 8002 8003; do
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
token=$("$BOX" token --key "$work/keys/demo.private.jwk" --tool demo --scope "access counters" --aud https://boxapi.demo --iss https://boxapi.demo/issuer)

echo "== Playwright + Chromium"
# A browser profile (HOME) whose NSS database trusts the test CA.
export HOME=$work/home
mkdir -p "$HOME/.pki/nssdb"
certutil -d sql:"$HOME/.pki/nssdb" -N --empty-password
certutil -d sql:"$HOME/.pki/nssdb" -A -t "C,," -n boxapi-test-ca -i "$work/ca.pem"
BOX_PORT=$BOX_PORT BOX2_PORT=$BOX2_PORT AUTH_PORT=$AUTH_PORT WORK=$work BOX=$BOX OUT=$OUT node browser.mjs || status=1

echo "== responses against docs/openapi.yaml"
"$venv/bin/python" validate.py "$root/docs/openapi.yaml" "https://localhost:$BOX_PORT" "$work/ca.pem" "$token" || status=1

# The stream is left out of schemathesis (each valid call lasts up to 120 s); validate.py reads
# a few of its lines and checks them against the schema instead.
echo "== schemathesis"
"$venv/bin/schemathesis" run "$root/docs/openapi.yaml" --url "https://localhost:$BOX_PORT" \
    -H "Authorization: Bearer $token" --tls-verify "$work/ca.pem" --checks all --exclude-checks missing_required_header --exclude-path /v1/token --exclude-path /v1/counters/stream --max-examples 50 \
    >"$OUT/schemathesis.txt" 2>&1 || status=1
tail -15 "$OUT/schemathesis.txt"

echo "== testssl.sh"
rm -f "$OUT/testssl.json"
testssl --quiet --color 0 --warnings off --add-ca "$work/ca.pem" --jsonfile "$OUT/testssl.json" \
    "localhost:$BOX_PORT" >"$OUT/testssl.txt" 2>&1 || true
"$venv/bin/python" testssl_check.py "$OUT/testssl.json" || status=1
exit $status
