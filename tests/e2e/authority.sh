#!/usr/bin/env bash
# make test-e2e, the authority's part: docs/authority-openapi.yaml checked live against a real
# boxapi-authority (free ports, a box locator, per-box audiences, a tool registered for both
# scopes and one for `access` only). First named answers, each validated against the document
# (authority_validate.py: a token for a fresh client assertion, its replay, invalid_scope,
# box_not_found and invalid_target from an address without a box, suspension), then schemathesis
# --checks all, whose well-formed token requests each carry a fresh client assertion
# (authority_hooks.py), so the token path's 200 is exercised, not only its refusals.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
OUT=${OUT:-$root/tests/out}
mkdir -p "$OUT"
. ./venv.sh
command -v node >/dev/null || { echo "tests/e2e/authority.sh needs node (tests/e2e/run.sh installs it)" >&2; exit 1; }
# BOXAPI_BIN and AUTHORITY_BIN: other builds of the two (as bench/tokens.sh takes them).
if [ -z "${BOXAPI_BIN:-}${AUTHORITY_BIN:-}" ]; then
    (cd "$root" && cargo build --release --locked -q)   # as tests/e2e/run.sh: the same build, no rebuild
fi
BOX=${BOXAPI_BIN:-$root/target/release/boxapi}
AUTHORITY=${AUTHORITY_BIN:-$root/target/release/boxapi-authority}
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$root/certs/make-dev-certs.sh" "$work" >/dev/null
"$BOX" keygen --alg EdDSA --kid signer --out "$work/keys" >/dev/null
for t in demo narrow; do "$BOX" keygen --alg ES256 --kid "$t" --out "$work/keys" >/dev/null; done
# The issuer is a name (the tokens' `iss`, the assertions' `aud`), not where this test connects.
issuer=https://authority.test
# 127.0.0.1 is a subscriber's line with a box; 127.0.0.2 is an address without one.
echo '{"127.0.0.1": "b1.box.test"}' > "$work/boxes.json"
cat > "$work/authority.toml" <<CONF
[server]
cert = "server.pem"
key = "server.key"
state_dir = "state"
control_socket = "control.sock"
[auth]
audience = "https://box.test"
issuers = ["$issuer"]
[token_endpoint]
enabled = true
issuer = "$issuer"
signing_key = "keys/signer.private.jwk"
tokens_per_hour = 100000
[authority]
listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
per_box_audience = true
[authority.locator]
file = "boxes.json"
[[tool]]
id = "demo"
origins = ["https://demo.example"]
scopes = ["access", "counters"]
keys = ["keys/demo.jwk"]
[[tool]]
id = "narrow"
origins = ["https://narrow.example"]
scopes = ["access"]
keys = ["keys/narrow.jwk"]
CONF
"$AUTHORITY" serve --config "$work/authority.toml" 2>"$OUT/authority.log" & pid=$!
# Ports chosen by the kernel (one picked free beforehand can be taken by then), read from the log.
addr() { sed -n "s/.*\"addr\":\"127.0.0.1:\([0-9]*\)\",.*\"event\":\"$1\".*/\1/p" "$OUT/authority.log"; }
for _ in $(seq 200); do port=$(addr listening); metrics=$(addr metrics_listening); [ -n "$port" ] && [ -n "$metrics" ] && break; sleep 0.1; done
[ -n "$port" ] || { echo "the authority did not start:" >&2; cat "$OUT/authority.log" >&2; exit 1; }
base=https://localhost:$port
# The authority refuses assertions made before it started (its record of used ones begins then).
sleep 1
for t in demo narrow; do
    KEY=$work/keys/$t.private.jwk TOOL=$t AUD=$issuer/v1/token COUNT=2000 OUT=$work/$t.assertions \
        node "$root/tests/interop/bench-assertions.mjs"
done

status=0
echo "== responses against docs/authority-openapi.yaml"
"$venv/bin/python" authority_validate.py "$root/docs/authority-openapi.yaml" "$base" "$work/ca.pem" \
    "$work" "$BOX" "$issuer" || status=1

echo "== schemathesis (authority)"
before=$(curl -s "http://127.0.0.1:$metrics/metrics" | awk '/^boxapi_authority_tokens_issued_total\{tool="demo"\}/ {print $2}')
ASSERTIONS=$work/demo.assertions SKIP=50 PYTHONPATH=. SCHEMATHESIS_HOOKS=authority_hooks timeout 600 \
    "$venv/bin/schemathesis" run "$root/docs/authority-openapi.yaml" --url "$base" --tls-verify "$work/ca.pem" \
    --checks all --max-examples 50 >"$OUT/schemathesis-authority.txt" 2>&1 || status=1
tail -15 "$OUT/schemathesis-authority.txt"
after=$(curl -s "http://127.0.0.1:$metrics/metrics" | awk '/^boxapi_authority_tokens_issued_total\{tool="demo"\}/ {print $2}')
issued=$(( ${after:-0} - ${before:-0} ))
echo "tokens issued to schemathesis' requests: $issued"
[ "$issued" -ge 5 ] || { echo "schemathesis got fewer than 5 tokens: the token path was not exercised" >&2; status=1; }
exit $status
